//! Where the hub runs for a simulation: in this process (`embedded`), as `snodo serve` child
//! processes (`spawn`, which the `kill-hub` fault can kill and restart), or somewhere already
//! running (a URL); with the embedded store or RabbitMQ shared by several nodes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;

use crate::federation::{Federation, NodeConfig, node_names};

/// Where the hub runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In this process; its store in the run's directory.
    Embedded,
    /// `snodo serve` child processes.
    Spawn,
    /// A hub already serving at this URL, configured with the simulator's federation.
    Url(String),
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(Placement::Embedded),
            "spawn" => Ok(Placement::Spawn),
            u if u.starts_with("https://") => {
                Ok(Placement::Url(u.trim_end_matches('/').to_owned()))
            }
            other => Err(format!(
                "`{other}` is not `embedded`, `spawn` or an https:// URL"
            )),
        }
    }
}

/// One hub node of the run.
#[derive(Debug)]
pub struct Node {
    /// `hub.name`.
    pub name: String,
    /// Its HTTPS API.
    pub url: String,
    /// Its plain-HTTP listener (health, readiness, metrics), when the run started it.
    pub plain: Option<std::net::SocketAddr>,
    /// Its configuration file, when the run wrote it.
    pub config: Option<PathBuf>,
    /// Its data directory, when the run chose it.
    pub data_dir: Option<PathBuf>,
    state: State,
}

#[derive(Debug)]
enum State {
    Embedded(Option<Running>),
    Spawned {
        child: Option<Child>,
        binary: PathBuf,
        log: PathBuf,
    },
    Remote,
}

/// The hub nodes of a run.
#[derive(Debug)]
pub struct Hubs {
    /// The nodes, in order.
    pub nodes: Vec<Node>,
    /// The RabbitMQ URL and queue prefix, for the amqp transport.
    pub amqp: Option<(String, String)>,
}

fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The `snodo` binary: `explicit`, else beside this program (`target/<profile>/snodo`, also
/// from a test binary in `target/<profile>/deps`).
///
/// # Errors
/// When it is not there, saying how to build it.
pub fn snodo_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.exists() {
            return Ok(p.to_owned());
        }
        bail!("{} does not exist", p.display());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("snodo");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent();
    }
    bail!(
        "no `snodo` binary beside {}: build it with `cargo build -p snodo-broker` (with \
         --release for a release build of snodo-sim), or pass --snodo PATH",
        exe.display()
    )
}

impl Hubs {
    /// Starts `nodes` hub nodes for `fed` in `run_dir` (ignored for a URL), sharing RabbitMQ
    /// at `amqp` when given, and waits until each is ready.
    ///
    /// # Errors
    /// When a node cannot be configured, started, or does not become ready within 60 s.
    pub async fn start(
        fed: &Federation,
        placement: &Placement,
        amqp: Option<&str>,
        nodes: usize,
        run_dir: &Path,
        snodo: Option<&Path>,
    ) -> anyhow::Result<Hubs> {
        if let Placement::Url(url) = placement {
            if nodes > 1 {
                bail!("--nodes needs a hub the simulator starts (embedded or spawn), not a URL");
            }
            return Ok(Hubs {
                nodes: vec![Node {
                    name: "hub".into(),
                    url: url.clone(),
                    plain: None,
                    config: None,
                    data_dir: None,
                    state: State::Remote,
                }],
                amqp: None,
            });
        }
        if nodes > 1 && amqp.is_none() {
            bail!("--nodes {nodes} needs --transport amqp://…: nodes share RabbitMQ's queues");
        }
        if nodes == 0 || nodes > crate::federation::MAX_NODES {
            bail!("--nodes must be 1 to {}", crate::federation::MAX_NODES);
        }
        let amqp = amqp.map(|url| {
            (
                url.to_owned(),
                format!(
                    "snodo-sim-{}-{}",
                    std::process::id(),
                    uuid::Uuid::now_v7().simple()
                ),
            )
        });
        let names = node_names(nodes);
        let mut addrs = Vec::new();
        for _ in &names {
            addrs.push((free_addr()?, free_addr()?));
        }
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let dir = run_dir.join(format!("node-{name}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let node = NodeConfig {
                name: name.clone(),
                listen: addrs[i].0,
                plain_listen: addrs[i].1,
                data_dir: dir.join("data"),
                amqp: amqp.clone(),
                peers: names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, n)| {
                        (
                            n.clone(),
                            format!("https://127.0.0.1:{}", addrs[j].0.port()),
                        )
                    })
                    .collect(),
            };
            let config = dir.join("snodo.toml");
            std::fs::write(&config, fed.hub_config(&node)?)
                .with_context(|| format!("writing {}", config.display()))?;
            let state = match placement {
                Placement::Embedded => State::Embedded(None),
                _ => State::Spawned {
                    child: None,
                    binary: snodo_binary(snodo)?,
                    log: dir.join("hub.log"),
                },
            };
            out.push(Node {
                name: name.clone(),
                url: format!("https://127.0.0.1:{}", node.listen.port()),
                plain: Some(node.plain_listen),
                config: Some(config),
                data_dir: Some(node.data_dir),
                state,
            });
        }
        let mut hubs = Hubs { nodes: out, amqp };
        for i in 0..hubs.nodes.len() {
            hubs.start_node(i).await?;
        }
        Ok(hubs)
    }

    /// Starts node `i` (again, after [`Hubs::kill`]) and waits until it is ready.
    ///
    /// # Errors
    /// When it cannot start or is not ready within 60 s.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let config = node
            .config
            .clone()
            .context("a remote hub is not started here")?;
        match &mut node.state {
            State::Remote => bail!("a remote hub is not started here"),
            State::Embedded(running) => {
                if running.is_none() {
                    let c = Config::load(&config)?;
                    *running = Some(serve::start(c, Some(config)).await?);
                }
            }
            State::Spawned { child, binary, log } => {
                if child.is_none() {
                    let log_file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&*log)?;
                    *child = Some(
                        Command::new(&*binary)
                            .arg("serve")
                            .arg("--config")
                            .arg(&config)
                            .env("SNODO_LOG", "warn")
                            .env("NO_COLOR", "1")
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(log_file)
                            .spawn()
                            .with_context(|| format!("starting {}", binary.display()))?,
                    );
                }
            }
        }
        self.wait_ready(i).await
    }

    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(plain) = self.nodes[i].plain else {
            return Ok(());
        };
        let name = self.nodes[i].name.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let State::Spawned {
                child: Some(c),
                log,
                ..
            } = &mut self.nodes[i].state
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "hub node {name} exited ({status}): {}",
                    std::fs::read_to_string(&*log).unwrap_or_default()
                );
            }
            if plain_status(plain, "/readyz").await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("hub node {name} not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills node `i` at once (SIGKILL for a child process; an embedded node is dropped
    /// without its orderly shutdown).
    ///
    /// # Errors
    /// When the process cannot be killed, or the node is remote.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        match &mut self.nodes[i].state {
            State::Spawned { child, .. } => {
                if let Some(mut c) = child.take() {
                    c.kill()?;
                    c.wait()?;
                }
                Ok(())
            }
            State::Embedded(_) => bail!("only a spawned hub can be killed (--hub spawn)"),
            State::Remote => bail!("a remote hub is not killed from here"),
        }
    }

    /// The process ids of the nodes this run started as children, and this process for
    /// embedded ones.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.state {
                State::Spawned { child: Some(c), .. } => Some(c.id()),
                State::Embedded(Some(_)) => Some(std::process::id()),
                _ => None,
            })
            .collect()
    }

    /// Whether the nodes run as child processes.
    #[must_use]
    pub fn spawned(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.state, State::Spawned { .. }))
    }

    /// The text of node `i`'s `/metrics`, when it has a plain listener that answers.
    pub async fn metrics(&self, i: usize) -> Option<String> {
        plain_get(self.nodes[i].plain?, "/metrics")
            .await
            .map(|(_, b)| b)
    }

    /// Stops every node in order (SIGTERM and wait for children), then deletes the run's
    /// RabbitMQ queues and exchanges.
    ///
    /// # Errors
    /// When a node fails to stop cleanly.
    pub async fn stop(mut self, entities: &[String]) -> anyhow::Result<()> {
        let mut first_error = None;
        for n in &mut self.nodes {
            let r: anyhow::Result<()> = match &mut n.state {
                State::Embedded(running) => match running.take() {
                    Some(r) => r.shutdown().await,
                    None => Ok(()),
                },
                State::Spawned { child, .. } => match child.take() {
                    Some(mut c) => terminate(&mut c),
                    None => Ok(()),
                },
                State::Remote => Ok(()),
            };
            if let Err(e) = r {
                first_error.get_or_insert(e.context(format!("stopping hub node {}", n.name)));
            }
        }
        if let Some((url, prefix)) = &self.amqp {
            let conn =
                lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
            let nodes: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            let names = snodo_broker::amqp::Names::new(prefix, nodes[0]);
            let entities: Vec<&str> = entities.iter().map(String::as_str).collect();
            snodo_broker::amqp::delete_all(&conn, &names, &entities, &nodes).await?;
            let _ = conn.close(200, "done".into()).await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// SIGTERM, then wait up to 30 s for an orderly exit, then SIGKILL.
fn terminate(c: &mut Child) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status()?
        .success();
    if ok {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    c.kill()?;
    c.wait()?;
    bail!("did not stop within 30 s of SIGTERM and was killed")
}

impl Drop for Hubs {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let State::Spawned { child: Some(c), .. } = &mut n.state {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A plain-HTTP GET on `addr`: the status and the body, or `None` when nothing answers.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn plain_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    plain_get(addr, path).await.map(|(s, _)| s)
}
