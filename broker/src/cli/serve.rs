//! `snodo serve`: check the configuration, open the store, start the engine, listen, and run
//! until SIGTERM or SIGINT (SIGHUP reloads the configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use snodo_envelopes::EntityId;
use snodo_envelopes::verify::HUB_CLASS;
use tokio::net::TcpListener;

use crate::config::{Config, TransportKind};
use crate::engine::{Engine, EngineConfig};
use crate::hub::Hub;
use crate::journal::checkpoint::CheckpointSigner;
use crate::store::FjallStore;
use crate::{api, dev, server, tls};

/// Arguments of `snodo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
    pub config: Option<PathBuf>,
    /// Serve a small dev federation, created in --data-dir if absent.
    #[arg(long)]
    pub dev: bool,
    /// Where the dev federation lives (with --dev).
    #[arg(long, default_value = "snodo-dev", requires = "dev")]
    pub data_dir: PathBuf,
}

/// A hub that is serving.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTPS listener is bound.
    pub addr: SocketAddr,
    /// Where the plain health/metrics listener is bound, if enabled.
    pub plain_addr: Option<SocketAddr>,
    /// The hub's shared state.
    pub hub: Arc<Hub>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    delivery: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, finishes requests in flight, flushes the engine.
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the listeners have stopped (after a shutdown signal), then flushes.
    ///
    /// # Errors
    /// When a listener failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("listener task")??;
        }
        let _ = self.delivery.await;
        self.hub.engine.stop().await;
        Ok(())
    }
}

/// Starts a hub for `config` (already loaded from `path`, if any): checks the trust material,
/// opens the store, starts the engine and binds the listeners (port 0 picks a free port).
///
/// # Errors
/// A message naming what is wrong; nothing is left running.
pub async fn start(config: Config, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let material = config.load_tls()?;
    // Checked before any port is bound; the hub builds the configuration it serves with, and
    // builds it again on reload.
    tls::server_config(
        &config.tls.ca,
        config.tls.crl.as_deref(),
        &config.tls.cert,
        &config.tls.key,
    )?;
    let store_dir = config.hub.data_dir.join("store");
    std::fs::create_dir_all(&store_dir)
        .with_context(|| format!("creating {}", store_dir.display()))?;
    let store = Arc::new(
        FjallStore::open_with(
            &store_dir,
            config.hub.store_cache,
            config.hub.store_memtable,
        )
        .with_context(|| format!("opening the store in {}", store_dir.display()))?,
    );
    if store.memtable_bytes() != Some(config.hub.store_memtable) {
        tracing::warn!(
            configured = config.hub.store_memtable,
            in_force = ?store.memtable_bytes(),
            "hub.store_memtable does not apply to this store: the size is fixed when a store is \
             created (None: created before snodo recorded it, 64 MiB unless set then)."
        );
    }
    let tls_listener = server::bind(config.hub.listen, "HTTPS").await?;
    let plain_listener = match config.hub.plain_listen {
        Some(addr) => Some(server::bind(addr, "plain HTTP for health and metrics").await?),
        None => None,
    };
    let hub_cert = snodo_envelopes::pki::load_cert(&config.tls.cert)?;
    let checkpoints = CheckpointSigner::new(material.signer.clone(), &hub_cert)?;
    let hub_entity: EntityId = format!("{HUB_CLASS}:{}", config.hub.name).parse()?;
    let engine = Engine::start(
        store,
        checkpoints,
        material.signer,
        EngineConfig {
            hub_entity,
            checkpoint_interval: config.journal.checkpoint_interval,
            checkpoint_max_entries: u64::from(config.journal.checkpoint_max_entries),
            retention: config.journal.retention,
            external_queues: config.transport.kind == TransportKind::Amqp,
        },
    )?;
    let transport = match config.transport.kind {
        TransportKind::Amqp => Some(crate::amqp::Amqp::new(&config)?),
        TransportKind::Embedded => None,
    };
    let mut hub = Hub::new(config, path, engine)?;
    if let Some(t) = &transport {
        hub = hub.with_transport(t.clone());
    }
    let hub = Arc::new(hub);
    let addr = tls_listener.local_addr()?;
    let plain_addr = plain_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    // The hub's own shutdown signal, so that requests waiting for a response see it too.
    let (stop, stop_rx) = (hub.stopping.clone(), hub.stopping.subscribe());
    let mut tasks = vec![tokio::spawn(server::serve_tls(
        tls_listener,
        hub.clone(),
        api::app(hub.clone()),
        stop_rx.clone(),
    ))];
    if let Some(l) = plain_listener {
        tasks.push(tokio::spawn(server::serve_plain(
            l,
            api::plain_app(hub.clone()),
            stop_rx.clone(),
        )));
    }
    let delivery = match transport {
        Some(t) => {
            tracing::info!(url = %t.redacted_url(), "Envelopes travel through RabbitMQ.");
            tokio::spawn(crate::amqp::run(hub.clone(), t, stop_rx))
        }
        None => tokio::spawn(crate::delivery::run(hub.clone(), stop_rx)),
    };
    tracing::info!(%addr, "snodo hub listening.");
    Ok(Running {
        addr,
        plain_addr,
        hub,
        stop,
        tasks,
        delivery,
    })
}

/// Runs the hub until SIGTERM or SIGINT.
///
/// # Errors
/// A message naming what is wrong: the configuration (before any port is bound), the store,
/// an address that cannot be bound.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Installed first: a signal during start-up must not take the default action (for SIGHUP,
    // ending the process).
    let signals = Signals::install()?;
    let path = match (&args.config, args.dev) {
        (Some(p), _) => p.clone(),
        (None, _) => dev::ensure(&args.data_dir)?,
    };
    // Everything is checked before any port is bound.
    let config = Config::load(&path)?;
    let instructions = args.dev.then(|| dev::instructions(&path, &config));
    let running = start(config, Some(path)).await?;
    if let Some(text) = instructions {
        // The hub runs on without a reader for its instructions.
        if let Err(e) = super::print_line(text) {
            tracing::warn!("could not print the development instructions: {e}");
        }
    }
    let signals = tokio::spawn(signals.run(running.hub.clone(), running.stop.clone()));
    running.wait().await?;
    signals.abort();
    tracing::info!("snodo hub stopped; everything accepted is on disk.");
    Ok(())
}

/// The signals the hub answers: SIGTERM and SIGINT stop it, SIGHUP reloads the configuration.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn run(self, hub: Arc<Hub>, stop: tokio::sync::watch::Sender<bool>) {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => match hub.reload_from_file() {
                    Ok(summary) => tracing::info!(%summary, "Configuration reloaded."),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "Configuration not reloaded; the old one stays."),
                },
            }
        }
        tracing::info!("Shutting down: no new connections, finishing requests in flight.");
        let _ = stop.send(true);
    }
}
