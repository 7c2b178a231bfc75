//! A RabbitMQ node of the simulation's own (`--transport private`): its own port, data and
//! name, so that the `amqp-restart` fault can stop and start it without disturbing any
//! other user of the machine's RabbitMQ.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Where Debian's package puts the server.
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// How long a node gets to open its AMQP port.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A private RabbitMQ node, stopped when dropped.
#[derive(Debug)]
pub struct PrivateRabbit {
    dir: PathBuf,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    name: String,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateRabbit {
    /// Starts a node keeping its data in `dir` and waits until it takes connections.
    ///
    /// # Errors
    /// When rabbitmq-server is not installed, exits, or does not listen within 90 s.
    pub async fn start_in(dir: &Path) -> anyhow::Result<PrivateRabbit> {
        if !Path::new(SERVER).exists() {
            bail!("{SERVER} is missing: install rabbitmq-server (scripts/test does)");
        }
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )?;
        let mut r = PrivateRabbit {
            dir: dir.to_owned(),
            port,
            dist_port: free_port()?,
            name: format!("snodo-sim-{}@localhost", uuid::Uuid::now_v7().simple()),
            child: None,
        };
        r.start().await?;
        Ok(r)
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node (again) on its data and waits for its AMQP port.
    ///
    /// # Errors
    /// As [`PrivateRabbit::start_in`].
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let p = |n: &str| self.dir.join(n);
        let log = std::fs::File::create(p("server.out"))?;
        let child = Command::new(SERVER)
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", p("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rabbitmq-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                bail!(
                    "RabbitMQ exited at start ({status}): {}",
                    std::fs::read_to_string(p("server.out")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "RabbitMQ did not open port {} within {START_TIMEOUT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node as an operator does (SIGTERM) and waits until it is gone.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
