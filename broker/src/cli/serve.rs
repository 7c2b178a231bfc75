//! `snodo serve`: check the configuration, open the store, start the engine, listen, and run
//! until SIGTERM or SIGINT (SIGHUP reloads the configuration).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::hub::Hub;
use crate::store::SledStore;
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

/// Runs the hub until it is told to stop.
///
/// # Errors
/// A message naming what is wrong: the configuration (before any port is bound), the store,
/// an address that cannot be bound.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let path = match (&args.config, args.dev) {
        (Some(p), _) => p.clone(),
        (None, _) => dev::ensure(&args.data_dir)?,
    };
    // Everything is checked before any port is bound.
    let config = Config::load(&path)?;
    let material = config.load_tls()?;
    let tls_config = Arc::new(tls::server_config(
        &config.tls.ca,
        config.tls.crl.as_deref(),
        &config.tls.cert,
        &config.tls.key,
    )?);
    let store_dir = config.hub.data_dir.join("store");
    std::fs::create_dir_all(&store_dir).with_context(|| format!("creating {}", store_dir.display()))?;
    let store = Arc::new(SledStore::open(&store_dir).with_context(|| format!("opening the store in {}", store_dir.display()))?);
    let engine = Engine::start(
        store,
        material.signer,
        EngineConfig {
            hub_name: config.hub.name.clone(),
            checkpoint_interval: config.journal.checkpoint_interval,
            checkpoint_max_entries: u64::from(config.journal.checkpoint_max_entries),
        },
    )?;
    let listen = config.hub.listen;
    let plain = config.hub.plain_listen;
    let instructions = args.dev.then(|| dev::instructions(&path, &config));
    let hub = Arc::new(Hub::new(config, Some(path.clone()), engine)?);

    let tls_listener = server::bind(listen, "HTTPS").await?;
    let plain_listener = match plain {
        Some(addr) => Some(server::bind(addr, "plain HTTP for health and metrics").await?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tracing::info!(%listen, config = %path.display(), "snodo hub listening.");
    if let Some(text) = instructions {
        println!("{text}");
    }

    let signals = tokio::spawn(signals(hub.clone(), stop_tx));
    let mut tasks = vec![tokio::spawn(server::serve_tls(
        tls_listener,
        tls_config,
        hub.clone(),
        api::app(hub.clone()),
        stop_rx.clone(),
    ))];
    if let Some(l) = plain_listener {
        tasks.push(tokio::spawn(server::serve_plain(l, api::plain_app(hub.clone()), stop_rx.clone())));
    }
    for t in tasks {
        t.await.context("listener task")??;
    }
    signals.abort();
    hub.engine.stop().await;
    tracing::info!("snodo hub stopped; everything accepted is on disk.");
    Ok(())
}

async fn signals(hub: Arc<Hub>, stop: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("Cannot install signal handlers.");
        return;
    };
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
