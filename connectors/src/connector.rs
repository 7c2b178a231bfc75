//! One connector process: the configuration turned into a hub client, a store, a dispatcher
//! with the configured adapter, and the receiving side (pull loop or push receiver), run
//! until the shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::adapter::dir::DirAdapter;
use crate::adapter::http::HttpAdapter;
use crate::adapter::reference;
use crate::catalog::Catalog;
use crate::client::{HubClient, HubClientConfig, RetryPolicy};
use crate::clock::SystemClock;
use crate::config::{AdapterSection, Config, ReceiveMode};
use crate::dispatch::{Dispatcher, PullConfig};
use crate::push::{PushConfig, PushReceiver};
use crate::shutdown::{Shutdown, stopped};
use crate::store::Store;

/// How often a connector in push mode retries its outbox.
const OUTBOX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Addresses a started connector listens on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listening {
    /// The push receiver, in push mode.
    pub push: Option<SocketAddr>,
    /// The local sending endpoint of the `http` adapter.
    pub http: Option<SocketAddr>,
}

/// Runs the connector `config` describes until `shutdown`; `started` is told what it listens
/// on once everything runs.
///
/// # Errors
/// A message naming what could not start: the key or certificates, the store (another
/// process holding it), a folder, an address.
pub async fn run(
    config: Config,
    shutdown: Shutdown,
    started: Option<tokio::sync::oneshot::Sender<Listening>>,
) -> anyhow::Result<()> {
    let client = HubClient::new(&HubClientConfig {
        hub: config.hub.url.clone(),
        ca: config.tls.ca.clone(),
        crl: config.tls.crl.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        format: config.hub.format.format(),
        retry: RetryPolicy {
            attempts: config.hub.attempts,
            ..RetryPolicy::default()
        },
        timeout: config.hub.timeout,
    })?;
    std::fs::create_dir_all(&config.state.dir)
        .with_context(|| format!("creating {}", config.state.dir.display()))?;
    let store = Store::open(&config.state.dir)?;
    let catalog = Catalog::builtin();
    let mut listening = Listening::default();
    let mut tasks = Vec::new();
    let builder = Dispatcher::builder();
    let (builder, dir) = match &config.adapter {
        AdapterSection::Dir {
            dir,
            poll,
            unknown_messages,
        } => {
            let adapter = Arc::new(DirAdapter::new(
                dir,
                catalog,
                unknown_messages.policy(),
                client.clone(),
                store.clone(),
            )?);
            let finished = adapter.recover()?;
            if finished > 0 {
                tracing::info!(
                    finished,
                    "Inbox files of processed envelopes renamed into place."
                );
            }
            (builder.fallback(adapter.clone()), Some((adapter, *poll)))
        }
        AdapterSection::Http {
            deliver_to,
            listen,
            timeout,
            unknown_messages,
        } => {
            let adapter = Arc::new(HttpAdapter::new(
                deliver_to,
                *timeout,
                catalog,
                unknown_messages.policy(),
                client.clone(),
                store.clone(),
            )?);
            let (addr, task) = adapter.clone().serve(*listen, shutdown.clone()).await?;
            listening.http = Some(addr);
            tasks.push(task);
            (builder.fallback(adapter), None)
        }
        AdapterSection::Reference { back_office, data } => {
            // Several back offices of one entity share its store (their trees are apart by
            // name) and its one dispatcher, where each takes only what is its own.
            let clock: crate::clock::SharedClock = Arc::new(SystemClock);
            let mut builder = builder;
            let several = matches!(back_office, crate::config::BackOffices::Several(_));
            for (name, field, data) in back_office.with_data(data) {
                let found = reference::find(name).map_err(anyhow::Error::msg)?;
                let context = reference::Context {
                    client: client.clone(),
                    store: store.clone(),
                    clock: clock.clone(),
                    data,
                    shutdown: shutdown.clone(),
                };
                let (next, started) = (found.install)(&context, builder).map_err(|e| {
                    if several {
                        anyhow::anyhow!("{field}: {e}")
                    } else {
                        anyhow::Error::msg(e)
                    }
                })?;
                builder = next;
                tasks.extend(started);
                tracing::info!(back_office = name, "Reference back office installed.");
            }
            (builder, None)
        }
    };
    let dispatcher = Arc::new(builder.build(client.clone(), store)?);
    if let Some((adapter, poll)) = dir {
        tasks.push(tokio::spawn(adapter.run_outbox(poll, shutdown.clone())));
    }
    let receiver = match config.receive.mode {
        ReceiveMode::Pull => {
            tasks.push(tokio::spawn(dispatcher.clone().run_pull(
                PullConfig {
                    batch: config.receive.batch,
                    lease: config.receive.lease,
                    idle: config.receive.idle,
                },
                shutdown.clone(),
            )));
            None
        }
        ReceiveMode::Push => {
            let listen = config
                .receive
                .listen
                .context("receive.listen: push needs an address")?;
            let receiver = PushReceiver::start(
                &PushConfig {
                    listen,
                    ca: config.tls.ca.clone(),
                    crl: config.tls.crl.clone(),
                    cert: config.tls.cert.clone(),
                    key: config.tls.key.clone(),
                },
                client.entity().clone(),
                client.verifier().clone(),
                dispatcher.clone(),
                shutdown.clone(),
            )
            .await?;
            listening.push = Some(receiver.addr);
            // Without a pull loop, the outbox (left by a crash, or by a hub that was down when
            // a push was processed) is drained now and then.
            let d = dispatcher.clone();
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    d.drain_outbox().await;
                    tokio::select! {
                        () = tokio::time::sleep(OUTBOX_RETRY) => {}
                        () = stopped(stop.clone()) => break,
                    }
                }
            }));
            Some(receiver)
        }
    };
    tracing::info!(entity = %client.entity(), "snodo connector running.");
    if let Some(tx) = started {
        let _ = tx.send(listening);
    }
    stopped(shutdown).await;
    tracing::info!("Stopping: finishing the envelope in hand.");
    for t in tasks {
        let _ = t.await;
    }
    if let Some(r) = receiver {
        r.stopped().await;
    }
    dispatcher.store().flush()?;
    tracing::info!("snodo connector stopped.");
    Ok(())
}
