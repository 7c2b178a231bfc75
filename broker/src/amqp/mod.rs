//! The amqp transport: accepted envelopes wait for delivery in RabbitMQ (through lapin), one
//! quorum queue per entity, shared by every hub node of the federation. Each node keeps its own
//! journal; RabbitMQ carries the envelopes between nodes.
//!
//! Guarantees: a receipt only after RabbitMQ confirmed the publication (the engine's outbox
//! keeps what is accepted but unconfirmed, and publishes it again until it is confirmed); a
//! delivery is acknowledged to RabbitMQ only after it is journaled; an envelope an entity has
//! taken is never handed to it again, on any node (delivered markers, fanned out to every
//! node's store, are checked before every hand-out).

mod consumers;
mod inbox;
mod message;
mod push;
mod topology;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::{Outbound, Route};
use crate::hub::Hub;
use crate::server::Shutdown;

pub use inbox::{Leases, lease, settle, unavailable, unavailable_because};
pub use topology::{Names, delete_all};

/// How often the supervisor checks the connection.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// The first and the longest wait between connection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long one connection attempt (connect, channels, topology) may take: a broker that
/// accepts the TCP connection while it is still starting can leave the handshake unanswered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often confirmed publications are struck from the outbox. Each strike is a group commit
/// of its own when nothing else waits (a store write and a fsync); one lost in a crash only
/// means a publication made again, which deliveries recognize.
const STRIKE_EVERY: Duration = Duration::from_millis(100);
/// How many outbox entries one pass publishes.
const OUTBOX_BATCH: usize = 256;
/// How long the transport's tasks have to end at shutdown, and then the connection to close:
/// a broker that stopped answering must not hold the hub. Stopping them there loses nothing
/// (what is unconfirmed stays in the outbox, what is unacknowledged is redelivered).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbox entries younger than this belong to requests still publishing them (between a
/// reconnection's first pass and the next).
const OUTBOX_GRACE: time::Duration = time::Duration::seconds(5);

/// Why an envelope could not be handed to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// No connection to RabbitMQ right now.
    #[error("RabbitMQ is unreachable: {0}")]
    Unavailable(String),
    /// RabbitMQ refused the message (nack) or could not route it.
    #[error("RabbitMQ did not take the message: {0}")]
    Refused(String),
    /// The protocol failed mid-way (connection lost before the confirm).
    #[error("RabbitMQ: {0}")]
    Protocol(#[from] lapin::Error),
    /// The engine could not record what happened.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// One live connection and its shared channels.
#[derive(Debug)]
pub struct Link {
    connection: Connection,
    /// Publishes with confirms.
    publisher: Channel,
    /// Serves pull leases (`basic_get`); their deliveries stay unacknowledged on it.
    inbox: Channel,
    /// Increases with every new connection.
    generation: u64,
}

impl Link {
    fn alive(&self) -> bool {
        self.connection.status().connected()
            && self.publisher.status().connected()
            && self.inbox.status().connected()
    }
}

/// The transport's handle, shared by the API, the delivery tasks and the supervisor.
#[derive(Debug)]
pub struct Amqp {
    url: String,
    tls: Option<String>,
    /// This node's `hub.name`.
    pub node: String,
    /// Exchange and queue names.
    pub names: Names,
    /// Unacknowledged push deliveries per consumer.
    pub prefetch: u16,
    link: watch::Sender<Option<Arc<Link>>>,
    /// Why there is no link, for `/readyz` and 503 answers.
    down_reason: Mutex<String>,
    /// Outbox entries being published now (by a request or by the outbox pass).
    in_flight: Mutex<HashSet<u64>>,
    /// Confirmed publications not yet struck from the outbox (they stay in `in_flight`
    /// until they are, so that nobody publishes them again).
    confirmed: Mutex<Vec<u64>>,
    /// Pull leases held by this node.
    pub leases: Leases,
    /// Delivered markers received from RabbitMQ but not yet in the store.
    markers_pending: AtomicUsize,
    /// The registry changed: declare the topology again.
    redeclare: AtomicBool,
}

impl Amqp {
    /// The transport for `config` (`transport.kind = "amqp"`); connects in the background.
    ///
    /// # Errors
    /// A message when the URL is missing or the CA file cannot be read.
    pub fn new(config: &Config) -> anyhow::Result<Arc<Self>> {
        let t = &config.transport;
        let mut url = t
            .amqp_url()
            .ok_or_else(|| anyhow::anyhow!("transport.url: no RabbitMQ URL"))?;
        if let Some(vhost) = &t.vhost {
            let mut uri: lapin::uri::AMQPUri = url
                .parse()
                .map_err(|e| anyhow::anyhow!("transport.url: {e}"))?;
            uri.vhost.clone_from(vhost);
            url = uri_string(&uri);
        }
        let tls = match &t.ca {
            Some(ca) => Some(
                std::fs::read_to_string(ca)
                    .map_err(|e| anyhow::anyhow!("transport.ca ({}): {e}", ca.display()))?,
            ),
            None => None,
        };
        Ok(Arc::new(Amqp {
            url,
            tls,
            node: config.hub.name.clone(),
            names: Names::new(&t.prefix, &config.hub.name),
            prefetch: t.prefetch,
            link: watch::Sender::new(None),
            down_reason: Mutex::new("not connected yet".into()),
            in_flight: Mutex::default(),
            confirmed: Mutex::default(),
            leases: Leases::default(),
            markers_pending: AtomicUsize::new(0),
            redeclare: AtomicBool::new(false),
        }))
    }

    /// The URL without its password, for logs and messages.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The live link, if connected.
    #[must_use]
    pub fn link(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone().filter(|l| l.alive())
    }

    /// Waits until connected (or `shutdown`).
    pub async fn wait_link(&self, shutdown: &mut Shutdown) -> Option<Arc<Link>> {
        let mut rx = self.link.subscribe();
        loop {
            if let Some(l) = self.link() {
                return Some(l);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = shutdown.changed() => return None,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if *shutdown.borrow() {
                return None;
            }
        }
    }

    /// Why RabbitMQ is not usable now, if it is not.
    #[must_use]
    pub fn unavailable(&self) -> Option<String> {
        if self.link().is_some() {
            None
        } else {
            Some(
                self.down_reason
                    .lock()
                    .map(|r| r.clone())
                    .unwrap_or_default(),
            )
        }
    }

    /// Asks the supervisor to declare the topology again (the registry changed).
    pub fn registry_changed(&self) {
        self.redeclare.store(true, Ordering::Relaxed);
    }

    fn set_down(&self, reason: String) {
        if let Ok(mut r) = self.down_reason.lock() {
            *r = reason;
        }
        self.link.send_replace(None);
    }

    /// Publishes an accepted envelope and waits for RabbitMQ's confirms; then the engine
    /// forgets it from the outbox. When another task is publishing the same envelope, waits for
    /// it (`wait_if_busy`) or leaves it to that task.
    ///
    /// # Errors
    /// [`AmqpError`] when not every copy was confirmed: no receipt may be given.
    pub async fn publish(
        &self,
        hub: &Hub,
        out: &Outbound,
        wait_if_busy: bool,
    ) -> Result<(), AmqpError> {
        let seq = out.record.seq;
        let mut waited = Duration::ZERO;
        loop {
            let claimed = self
                .in_flight
                .lock()
                .map(|mut f| f.insert(seq))
                .unwrap_or(false);
            if claimed {
                break;
            }
            if !wait_if_busy {
                return Ok(());
            }
            if waited > Duration::from_secs(10) {
                return Err(AmqpError::Unavailable(
                    "an earlier publication of this envelope is still unconfirmed".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
            // Gone from the outbox durably: it was confirmed.
            if !hub.engine.is_in_outbox(seq)? {
                return Ok(());
            }
        }
        let result = self.publish_copies(out).await;
        if result.is_ok() {
            // The claim holds until the outbox entry is durably gone (see `strike`), so that
            // no other task publishes it again in between.
            if let Ok(mut c) = self.confirmed.lock() {
                c.push(seq);
            }
        } else if let Ok(mut f) = self.in_flight.lock() {
            f.remove(&seq);
        }
        result
    }

    async fn publish_copies(&self, out: &Outbound) -> Result<(), AmqpError> {
        let link = self.link().ok_or_else(|| {
            AmqpError::Unavailable(self.unavailable().unwrap_or_else(|| "not connected".into()))
        })?;
        let props = message::properties(out, &self.node);
        let rec = &out.record;
        let targets: Vec<(String, String)> = match &out.route {
            Route::Direct(recipients) => recipients
                .iter()
                .map(|r| {
                    (
                        self.names.envelopes.clone(),
                        Names::routing_key(r, &rec.service, &rec.action),
                    )
                })
                .collect(),
            Route::Event => vec![(
                self.names.events.clone(),
                Names::topic_key(&rec.service, &rec.action),
            )],
        };
        let mut confirms = Vec::with_capacity(targets.len());
        for (exchange, key) in &targets {
            confirms.push(
                link.publisher
                    .basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &out.raw[..],
                        props.clone(),
                    )
                    .await?,
            );
        }
        for (confirm, (_, key)) in confirms.into_iter().zip(&targets) {
            check_confirm(confirm.await?, key)?;
        }
        Ok(())
    }

    /// Publishes a small message (a delivered marker, a retry, a dead letter) and waits for
    /// its confirm.
    ///
    /// # Errors
    /// [`AmqpError`] when it was not confirmed.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), AmqpError> {
        let link = self.link().ok_or_else(|| {
            AmqpError::Unavailable(self.unavailable().unwrap_or_else(|| "not connected".into()))
        })?;
        let confirm = link
            .publisher
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await?;
        check_confirm(confirm.await?, key)
    }

    /// Waits until every delivered marker already in RabbitMQ for this node is in the store:
    /// called before a redelivered message is handed out, so that one delivered elsewhere is
    /// recognized.
    pub async fn sync_markers(&self) {
        for _ in 0..100 {
            // On a channel of its own: a failed passive declaration closes its channel, and
            // the inbox channel holds the pull leases.
            let queued = match self.link() {
                Some(link) => match link.connection.create_channel().await {
                    Ok(ch) => {
                        let n = topology::ready_count(&ch, &self.names.delivered_queue)
                            .await
                            .unwrap_or(0);
                        let _ = ch.close(200, "done".into()).await;
                        n
                    }
                    Err(_) => 0,
                },
                None => 0,
            };
            if queued == 0 && self.markers_pending.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!("Delivered markers still pending after 2 s; handing out anyway.");
    }
}

fn check_confirm(c: Confirmation, key: &str) -> Result<(), AmqpError> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(AmqpError::Refused(format!(
            "no queue takes routing key `{key}` ({})",
            returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(AmqpError::Refused(format!(
            "RabbitMQ refused the message for `{key}` (nack)"
        ))),
        Confirmation::NotRequested => Err(AmqpError::Refused(
            "publisher confirms are off on this channel".into(),
        )),
    }
}

/// `url` without the password.
#[must_use]
pub fn redact(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(mut uri) => {
            if !uri.authority.userinfo.password.is_empty() {
                uri.authority.userinfo.password = "***".into();
            }
            uri_string(&uri)
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

fn uri_string(uri: &lapin::uri::AMQPUri) -> String {
    let scheme = match uri.scheme {
        lapin::uri::AMQPScheme::AMQP => "amqp",
        lapin::uri::AMQPScheme::AMQPS => "amqps",
    };
    let u = &uri.authority.userinfo;
    let vhost: String = uri
        .vhost
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "{scheme}://{}:{}@{}:{}/{vhost}",
        u.username, u.password, uri.authority.host, uri.authority.port
    )
}

/// Runs the transport until `shutdown`: keeps a connection (reconnecting with backoff and
/// declaring the topology each time), publishes the outbox, consumes delivered markers and
/// expired envelopes, pushes to entities with endpoints and returns expired pull leases.
pub async fn run(hub: Arc<Hub>, amqp: Arc<Amqp>, shutdown: Shutdown) {
    let mut stopping = shutdown.clone();
    let tasks = vec![
        tokio::spawn(supervise(hub.clone(), amqp.clone(), shutdown.clone())),
        tokio::spawn(outbox(hub.clone(), amqp.clone(), shutdown.clone())),
        tokio::spawn(strike(hub.clone(), amqp.clone(), shutdown.clone())),
        tokio::spawn(consumers::markers(
            hub.clone(),
            amqp.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(consumers::expired(
            hub.clone(),
            amqp.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(inbox::expire_leases(amqp.clone(), shutdown.clone())),
        tokio::spawn(push::run(hub.clone(), amqp.clone(), shutdown.clone())),
    ];
    // The tasks run until the shutdown; from then on they have `STOP_TIMEOUT` to end.
    while !*stopping.borrow() {
        if stopping.changed().await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            tracing::warn!("A RabbitMQ task did not end in time at shutdown; stopped.");
            abort.abort();
        }
    }
    if let Some(link) = amqp.link.send_replace(None) {
        let close = link.connection.close(200, "hub stopping".into());
        if tokio::time::timeout(STOP_TIMEOUT, close).await.is_err() {
            tracing::warn!("RabbitMQ did not answer the connection's close in time.");
        }
    }
}

async fn connect(amqp: &Amqp) -> Result<Link, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("snodo hub {}", amqp.node).into());
    let connection = match &amqp.tls {
        Some(ca) => {
            Connection::connect_with_config(
                &amqp.url,
                props,
                OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(ca.clone()),
                },
                lapin::runtime::default_runtime()?,
            )
            .await?
        }
        None => Connection::connect(&amqp.url, props).await?,
    };
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let inbox = connection.create_channel().await?;
    Ok(Link {
        connection,
        publisher,
        inbox,
        generation: 0,
    })
}

async fn supervise(hub: Arc<Hub>, amqp: Arc<Amqp>, mut shutdown: Shutdown) {
    let mut wait = RECONNECT_MIN;
    let mut generation = 0;
    while !*shutdown.borrow() {
        let attempt = async {
            let link = connect(&amqp).await?;
            topology::declare(&link.publisher, &amqp.names, &hub.registry()).await?;
            Ok::<_, lapin::Error>(link)
        };
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, attempt) => match r {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
            },
            _ = shutdown.changed() => return,
        };
        match attempt.map(|mut link| {
            generation += 1;
            link.generation = generation;
            link
        }) {
            Ok(link) => {
                tracing::info!(url = %amqp.redacted_url(), "Connected to RabbitMQ; topology declared.");
                wait = RECONNECT_MIN;
                let link = Arc::new(link);
                amqp.link.send_replace(Some(link.clone()));
                // Watch it until it fails.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(CHECK_EVERY) => {}
                        _ = shutdown.changed() => return,
                    }
                    if !link.alive() {
                        tracing::warn!("Lost the connection to RabbitMQ; reconnecting.");
                        amqp.set_down("the connection to RabbitMQ was lost; reconnecting".into());
                        break;
                    }
                    if amqp.redeclare.swap(false, Ordering::Relaxed)
                        && let Err(e) =
                            topology::declare(&link.publisher, &amqp.names, &hub.registry()).await
                    {
                        tracing::error!(error = %e, "Topology not declared after a reload.");
                    }
                }
            }
            Err(e) => {
                let reason = format!("cannot connect to {}: {e}", amqp.redacted_url());
                tracing::warn!(%reason, retry_in = ?wait, "RabbitMQ unreachable.");
                amqp.set_down(reason);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Strikes confirmed publications from the outbox, many at a time (one engine job for all
/// the envelopes confirmed in the last few milliseconds, not one each).
async fn strike(hub: Arc<Hub>, amqp: Arc<Amqp>, mut shutdown: Shutdown) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(STRIKE_EVERY) => false,
            _ = shutdown.changed() => true,
        };
        let seqs = amqp
            .confirmed
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        if !seqs.is_empty() {
            let recording = crate::engine::Recording {
                published: seqs.clone(),
                ..Default::default()
            };
            if let Err(e) = hub.engine.report(recording).await {
                // Published again after a restart; deliveries recognize the copy.
                tracing::warn!(error = %e, "Confirmed publications not struck from the outbox.");
            }
            if let Ok(mut f) = amqp.in_flight.lock() {
                for s in &seqs {
                    f.remove(s);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Publishes what the engine left in the outbox: envelopes whose request gave up before the
/// confirm, notices, responses whose waiting request went away, and, after a crash,
/// everything accepted but never confirmed.
async fn outbox(hub: Arc<Hub>, amqp: Arc<Amqp>, mut shutdown: Shutdown) {
    let signal = hub.engine.outbox_signal();
    let mut generation = 0;
    loop {
        let Some(link) = amqp.wait_link(&mut shutdown).await else {
            return;
        };
        // After a (re)connection, everything; else only what no request is about to publish
        // (entries of requests still running are left to them).
        let fresh_link = std::mem::replace(&mut generation, link.generation) != link.generation;
        let settled_before = time::OffsetDateTime::now_utc() - OUTBOX_GRACE;
        let mut after = None;
        loop {
            let batch = match hub.engine.outbox(after, OUTBOX_BATCH) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the outbox.");
                    break;
                }
            };
            let Some(last) = batch.last() else { break };
            after = Some(last.record.seq);
            let full = batch.len() == OUTBOX_BATCH;
            let batch: Vec<Outbound> = batch
                .into_iter()
                .filter(|out| {
                    fresh_link
                        || !out.by_request
                        || snodo_envelopes::header::parse_time(
                            "accepted_at",
                            &out.record.accepted_at,
                        )
                        .is_ok_and(|t| t < settled_before)
                })
                .collect();
            let pubs = batch.iter().map(|out| amqp.publish(&hub, out, false));
            for (out, r) in batch.iter().zip(futures_util::future::join_all(pubs).await) {
                if let Err(e) = r {
                    tracing::warn!(envelope_id = %out.record.id, error = %e, "Outbox entry not published; will try again.");
                }
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            () = signal.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
