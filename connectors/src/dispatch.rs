//! The connector runtime: verified envelopes (from the pull loop or the push receiver) are
//! routed by service and action to handlers; an envelope is acknowledged only after its
//! handler's effect is durable; a redelivery of an envelope already processed is acknowledged
//! without running the handler again; and the envelopes a handler sends are kept in a durable
//! outbox until the hub has receipted them.
//!
//! One envelope, in order: (1) skip it if the processed record holds it; (2) run the handler,
//! which stages its state changes in [`Effects`]; (3) sign what it sends; (4) apply in one
//! atomic, flushed store update: the handler's changes, the processed record and the outbox;
//! (5) tell the hub it is delivered; (6) submit the outbox (each envelope keeps its id, so a
//! resubmission after a crash is a duplicate the hub recognises).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snodo_envelopes::{Envelope, Format};
use tokio::sync::watch;
use uuid::Uuid;

use crate::client::{HubClient, Signed};
use crate::inbound::{BoxFuture, Inbound, Sink, SinkError};
use crate::store::{Store, StoreError, Tree, Update};

/// The tree of envelopes processed, by `sender/id`.
pub const PROCESSED_TREE: &str = "snodo.processed";
/// The tree of signed envelopes waiting for the hub's receipt, by id.
pub const OUTBOX_TREE: &str = "snodo.outbox";
/// The longest pause of the pull loop after batches that could not be processed.
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(30);

/// Why a handler did not process an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A transient failure (the municipal system is down, a disk is full): the envelope stays
    /// with the hub and comes back.
    #[error("try again later: {0}")]
    Retry(String),
    /// The envelope can never be processed (its content makes no sense to this back office):
    /// it is recorded as rejected, with its bytes, and acknowledged so that it does not loop.
    #[error("rejected: {0}")]
    Reject(String),
}

impl HandlerError {
    /// Whether the same envelope may succeed later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retry(_))
    }
}

/// What a handler does, staged: state changes applied atomically with the processed record,
/// and envelopes to send once they are durable.
#[derive(Debug, Default)]
pub struct Effects {
    /// Changes to the store.
    pub update: Update,
    /// Envelopes to send (from this entity).
    pub outgoing: Vec<Envelope>,
}

impl Effects {
    /// Sends `envelope` once the effects are durable.
    pub fn send(&mut self, envelope: Envelope) {
        self.outgoing.push(envelope);
    }
}

/// Processes the envelopes of one service/action (or all of them, as a fallback).
pub trait Handler: Send + Sync + 'static {
    /// Processes `inbound`, staging its effects; an effect outside the store (a file, a call)
    /// must be idempotent by the envelope's id, for a crash can repeat it.
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;

    /// Runs once the envelope's processed record is durable, and again on every redelivery
    /// of a processed envelope, before the hub is told: where a handler finishes what it
    /// prepared (an adapter renames the file it wrote). It must be idempotent.
    fn committed<'a>(&'a self, inbound: &'a Inbound) -> BoxFuture<'a, Result<(), HandlerError>> {
        let _ = inbound;
        Box::pin(async { Ok(()) })
    }
}

/// What the runtime remembers of a processed envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processed {
    /// When, RFC 3339.
    pub at: String,
    /// Its service.
    pub service: String,
    /// Its action.
    pub action: String,
    /// Its conversation, for answers composed later.
    pub conversation: String,
    /// `done` or `rejected`.
    pub outcome: String,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signed bytes of a rejected envelope, for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The ids of the envelopes sent in consequence.
    #[serde(default)]
    pub sent: Vec<Uuid>,
}

/// A signed envelope waiting for the hub's receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// `json` or `xml`.
    pub format: String,
    /// The signed bytes (both encodings are UTF-8 text).
    pub signed: String,
}

impl Outgoing {
    /// The outbox record of `signed`.
    ///
    /// # Errors
    /// A message when the bytes are not UTF-8 (signatures never make such bytes).
    pub fn of(signed: &Signed) -> Result<Outgoing, String> {
        Ok(Outgoing {
            format: match signed.format {
                Format::Json => "json".into(),
                Format::Xml => "xml".into(),
            },
            signed: String::from_utf8(signed.bytes.to_vec())
                .map_err(|_| "a signed envelope that is not UTF-8".to_owned())?,
        })
    }

    fn to_signed(&self, id: Uuid) -> Signed {
        Signed {
            id,
            format: if self.format == "xml" {
                Format::Xml
            } else {
                Format::Json
            },
            bytes: bytes::Bytes::from(self.signed.clone().into_bytes()),
        }
    }
}

/// What became of one envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Its handler ran and its effects are durable.
    Processed,
    /// It had been processed before (a redelivery).
    AlreadyProcessed,
    /// It was rejected (by its handler, or because no handler takes it): recorded, not retried.
    Rejected(String),
}

/// Why the runtime could not take an envelope (it stays with the hub).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The handler asked to try again later (or could not finish after the commit).
    #[error("{0}")]
    Handler(HandlerError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// An outgoing envelope could not be signed.
    #[error("signing an outgoing envelope: {0}")]
    Sign(String),
    /// The same envelope is being processed right now (pushed and pulled at once).
    #[error("envelope {0} is being processed")]
    Busy(String),
}

/// Routes and processes incoming envelopes for one entity.
pub struct Dispatcher {
    client: HubClient,
    store: Store,
    processed: Tree<Processed>,
    outbox: Tree<Outgoing>,
    routes: HashMap<(String, String), Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
    /// Keys of the envelopes being processed now.
    busy: Mutex<HashSet<String>>,
    /// Serialises outbox drains, so one envelope is not submitted twice at once.
    draining: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("entity", self.client.entity())
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Dispatcher`].
#[derive(Default)]
pub struct DispatcherBuilder {
    routes: HashMap<(String, String), Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
}

impl std::fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DispatcherBuilder {
    /// Sends `service`/`action` envelopes to `handler`.
    #[must_use]
    pub fn route(mut self, service: &str, action: &str, handler: Arc<dyn Handler>) -> Self {
        self.routes
            .insert((service.to_owned(), action.to_owned()), handler);
        self
    }

    /// Sends every envelope no route takes to `handler` (an adapter to a municipal system).
    #[must_use]
    pub fn fallback(mut self, handler: Arc<dyn Handler>) -> Self {
        self.fallback = Some(handler);
        self
    }

    /// The dispatcher, keeping its records in `store`.
    ///
    /// # Errors
    /// [`StoreError`] when the store's trees cannot be opened.
    pub fn build(self, client: HubClient, store: Store) -> Result<Dispatcher, StoreError> {
        Ok(Dispatcher {
            processed: store.tree(PROCESSED_TREE)?,
            outbox: store.tree(OUTBOX_TREE)?,
            client,
            store,
            routes: self.routes,
            fallback: self.fallback,
            busy: Mutex::new(HashSet::new()),
            draining: tokio::sync::Mutex::new(()),
        })
    }
}

/// Releases a busy key when processing ends, however it ends.
struct BusyGuard<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.key);
        }
    }
}

/// How the pull loop leases.
#[derive(Clone, Copy, Debug)]
pub struct PullConfig {
    /// Envelopes per lease.
    pub batch: usize,
    /// How long each lease lasts: the longest one envelope may take to process.
    pub lease: Duration,
    /// How long to wait when the inbox is empty.
    pub idle: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            batch: 16,
            lease: Duration::from_secs(60),
            idle: Duration::from_millis(500),
        }
    }
}

impl Dispatcher {
    /// A builder.
    #[must_use]
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
    }

    /// The hub client the dispatcher sends with.
    #[must_use]
    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// The store the dispatcher keeps its records in (handlers keep theirs there too).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What was recorded of the envelope `id` from `sender`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn processed(&self, sender: &str, id: Uuid) -> Result<Option<Processed>, StoreError> {
        self.processed.get(&format!("{sender}/{id}"))
    }

    /// The tree of processed records (`sender/id` keys), for adapters that answer later.
    #[must_use]
    pub fn processed_tree(&self) -> &Tree<Processed> {
        &self.processed
    }

    /// Envelopes in the outbox, waiting for the hub.
    #[must_use]
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Processes one verified envelope (steps 1–4 of the module's list) and submits the
    /// outbox; the caller then tells the hub it is delivered.
    ///
    /// # Errors
    /// [`DispatchError`]: the envelope must stay with the hub and come back.
    pub async fn dispatch(&self, inbound: &Inbound) -> Result<Disposition, DispatchError> {
        let key = inbound.key();
        let _guard = {
            let mut busy = self
                .busy
                .lock()
                .map_err(|_| DispatchError::Busy(key.clone()))?;
            if !busy.insert(key.clone()) {
                return Err(DispatchError::Busy(key));
            }
            BusyGuard {
                set: &self.busy,
                key: key.clone(),
            }
        };
        let id = inbound.id();
        let h = &inbound.envelope.header;
        let handler = self
            .routes
            .get(&(h.service.clone(), h.action.clone()))
            .or(self.fallback.as_ref());
        if let Some(record) = self.processed.get(&key)? {
            tracing::info!(envelope_id = %id, sender = %inbound.sender(), "Redelivery of an envelope already processed.");
            if let (Some(handler), "done") = (handler, record.outcome.as_str()) {
                handler
                    .committed(inbound)
                    .await
                    .map_err(DispatchError::Handler)?;
            }
            self.drain_outbox().await;
            return Ok(Disposition::AlreadyProcessed);
        }
        let mut effects = Effects::default();
        let outcome = match handler {
            None => Err(HandlerError::Reject(format!(
                "no handler for {}/{}",
                h.service, h.action
            ))),
            Some(handler) => handler.handle(inbound, &mut effects).await,
        };
        let mut record = Processed {
            at: snodo_envelopes::header::format_time(time::OffsetDateTime::now_utc()),
            service: h.service.clone(),
            action: h.action.clone(),
            conversation: h.conversation.clone(),
            outcome: "done".into(),
            reason: None,
            raw: None,
            sent: Vec::new(),
        };
        let mut update = Update::new();
        let disposition = match outcome {
            Ok(()) => {
                let mut signed = Vec::with_capacity(effects.outgoing.len());
                for envelope in &effects.outgoing {
                    signed.push(
                        self.client
                            .sign(envelope)
                            .map_err(|e| DispatchError::Sign(e.to_string()))?,
                    );
                }
                for s in &signed {
                    let item = Outgoing::of(s).map_err(DispatchError::Sign)?;
                    update.put(&self.outbox, &s.id.to_string(), &item)?;
                    record.sent.push(s.id);
                }
                update.extend(effects.update);
                Disposition::Processed
            }
            Err(HandlerError::Reject(reason)) => {
                tracing::error!(envelope_id = %id, sender = %inbound.sender(), service = %h.service, action = %h.action, %reason, "Envelope rejected; kept in the processed records.");
                record.outcome = "rejected".into();
                record.reason = Some(reason.clone());
                record.raw = Some(String::from_utf8_lossy(&inbound.raw).into_owned());
                Disposition::Rejected(reason)
            }
            Err(e) => return Err(DispatchError::Handler(e)),
        };
        update.put(&self.processed, &key, &record)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(update))
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Unsupported(e.to_string())))??;
        tracing::info!(envelope_id = %id, sender = %inbound.sender(), service = %h.service, action = %h.action, sent = record.sent.len(), "Envelope processed.");
        if let (Some(handler), Disposition::Processed) = (handler, &disposition) {
            handler
                .committed(inbound)
                .await
                .map_err(DispatchError::Handler)?;
        }
        self.drain_outbox().await;
        Ok(disposition)
    }

    /// Submits every envelope of the outbox, removing each once the hub has receipted it;
    /// returns how many are left (the hub unreachable, say). A refused one is logged and
    /// dropped from the outbox, for no retry will change the hub's mind.
    pub async fn drain_outbox(&self) -> usize {
        let _one_at_a_time = self.draining.lock().await;
        let items = match self.outbox.scan("") {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the outbox.");
                return self.outbox.len();
            }
        };
        for (key, item) in items {
            let Ok(id) = Uuid::parse_str(&key) else {
                tracing::error!(%key, "Outbox key is not an envelope id; left alone.");
                continue;
            };
            match self.client.submit_signed(&item.to_signed(id)).await {
                Ok(s) => {
                    tracing::info!(envelope_id = %id, index = s.receipt.index, duplicate = s.duplicate, "Outgoing envelope receipted.");
                    if let Err(e) = self.outbox.remove(&key).and_then(|()| self.store.flush()) {
                        tracing::warn!(envelope_id = %id, error = %e, "Receipted envelope still in the outbox; it will be resubmitted (a duplicate).");
                    }
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(envelope_id = %id, error = %e, "Outgoing envelope refused by the hub; removed from the outbox.");
                    let _ = self.outbox.remove(&key).and_then(|()| self.store.flush());
                }
                Err(e) => {
                    tracing::warn!(envelope_id = %id, error = %e, "Outgoing envelope not yet receipted; kept in the outbox.");
                }
            }
        }
        self.outbox.len()
    }

    /// Leases the inbox until `shutdown`: each verified envelope is dispatched, then
    /// acknowledged (processed, or rejected) or returned (dispatch failed). The outbox is
    /// drained at start and whenever the inbox is idle.
    pub async fn run_pull(self: Arc<Self>, config: PullConfig, shutdown: watch::Receiver<bool>) {
        self.drain_outbox().await;
        // Batches in a row in which some envelope could not be processed (the municipal
        // system down, say): the pause before the next lease grows with them.
        let mut failing = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if failing > 0 {
                let pause =
                    snodo_broker::delivery::backoff(failing, config.idle, MAX_FAILURE_PAUSE);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = crate::shutdown::stopped(shutdown.clone()) => break,
                }
            }
            let batch = tokio::select! {
                r = self.client.lease(config.batch, config.lease) => r,
                () = crate::shutdown::stopped(shutdown.clone()) => break,
            };
            let deliveries = match batch {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot lease the inbox.");
                    tokio::select! {
                        () = tokio::time::sleep(config.idle.max(Duration::from_secs(1))) => {}
                        () = crate::shutdown::stopped(shutdown.clone()) => break,
                    }
                    continue;
                }
            };
            if deliveries.is_empty() {
                if self.outbox_len() > 0 {
                    self.drain_outbox().await;
                }
                tokio::select! {
                    () = tokio::time::sleep(config.idle) => {}
                    () = crate::shutdown::stopped(shutdown.clone()) => break,
                }
                continue;
            }
            let mut failed = false;
            for d in deliveries {
                let id = d.inbound.id();
                match self.dispatch(&d.inbound).await {
                    Ok(_) => {
                        test_pause("SNODO_TEST_PAUSE_BEFORE_ACK_MS", id).await;
                        if let Err(e) = self.client.ack(&d.lease).await {
                            tracing::warn!(envelope_id = %id, error = %e, "Not acknowledged; the hub will deliver it again and it will be recognised.");
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(envelope_id = %id, error = %e, "Not processed; returned to the hub.");
                        if let Err(e) = self.client.nack(&d.lease).await {
                            tracing::warn!(envelope_id = %id, error = %e, "Not returned; its lease will lapse.");
                        }
                    }
                }
            }
            failing = if failed { failing.saturating_add(1) } else { 0 };
        }
        tracing::info!("Pull loop stopped.");
    }
}

impl Sink for Dispatcher {
    fn accept(&self, inbound: Inbound) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.dispatch(&inbound)
                .await
                .map(|_| ())
                .map_err(|e| SinkError(e.to_string()))
        })
    }
}

/// A test hook: when the environment variable `var` holds a number of milliseconds, says so
/// on stderr (naming the envelope) and sleeps that long, so that a test can kill the process
/// inside the window. Unset, it does nothing.
pub async fn test_pause(var: &str, id: Uuid) {
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        eprintln!("test hook {var}: pausing {ms} ms at envelope {id}");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
