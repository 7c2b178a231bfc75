//! A RabbitMQ node of the test's own (its own port, data and name), for tests that stop and
//! start the broker without disturbing the shared one other tests use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::child::{free_port, send_signal, wait_exit};

/// How long a node gets to open its AMQP port.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A private RabbitMQ node, stopped when dropped.
pub struct PrivateRabbit {
    dir: tempfile::TempDir,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    name: String,
    child: Option<Child>,
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
    }
}

impl PrivateRabbit {
    /// Starts a new node and waits until it takes connections.
    pub async fn start_new() -> PrivateRabbit {
        PrivateRabbit::start_with(None).await
    }

    /// Starts a new node that speaks only TLS (amqps), with the certificate `cert` and key
    /// `key` (PEM) chaining to `ca`.
    pub async fn start_tls(ca: &Path, cert: &Path, key: &Path) -> PrivateRabbit {
        PrivateRabbit::start_with(Some((ca, cert, key))).await
    }

    async fn start_with(tls: Option<(&Path, &Path, &Path)>) -> PrivateRabbit {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        let listeners = match tls {
            None => format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
            Some((ca, cert, key)) => format!(
                "listeners.tcp = none\nlisteners.ssl.local = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        };
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("{listeners}loopback_users = none\n"),
        )
        .unwrap();
        let mut r = PrivateRabbit {
            name: format!(
                "snodo-test-{}@localhost",
                hex::encode(rand::random::<[u8; 4]>())
            ),
            dist_port: free_port(),
            port,
            dir,
            child: None,
        };
        r.start().await;
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the node (again) on its data and waits for its AMQP port.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the node is already running");
        let server = "/usr/lib/rabbitmq/bin/rabbitmq-server";
        assert!(
            std::path::Path::new(server).exists(),
            "{server} is missing: install rabbitmq-server (scripts/test does)"
        );
        let log = std::fs::File::create(self.path("server.out")).unwrap();
        let child = Command::new(server)
            .env("HOME", self.dir.path())
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "RabbitMQ exited at start ({status}):\n{}",
                    std::fs::read_to_string(self.path("server.out")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ did not open port {} within {START_TIMEOUT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the node the way an operator does (SIGTERM: `rabbitmqctl stop`) and waits
    /// until it is gone.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the node is not running");
        send_signal(child.id(), "TERM");
        if wait_exit(&mut child, Duration::from_secs(60))
            .await
            .is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
