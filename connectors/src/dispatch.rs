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
//!
//! # Several handlers on one route
//!
//! One entity has one inbox, so the offices of one body (a comune's tax office, its police,
//! its ZTL and building offices, all creditors at the same payment provider) share one
//! dispatcher and register handlers for the same service/action. [`DispatcherBuilder::route`]
//! adds a handler to the route's list, in order; it never replaces one. Step (2) offers the
//! envelope to the route's handlers in that order, and each answers from its own durable
//! state (the positions it created, the requests it waits an answer for), never from a
//! naming convention:
//!
//! - `Ok(())`: the envelope is its own; it is processed and no later handler sees it;
//! - [`HandlerError::Decline`]: not its own; whatever it staged is dropped and the next
//!   handler is offered the envelope;
//! - `Ok(())` after [`Effects::take_part`]: it took its own part of an envelope that lists
//!   the things of several handlers (a settlement flow naming positions of several offices);
//!   the next handlers are offered the rest, each taking only its own part;
//! - [`HandlerError::Reject`] or [`HandlerError::Retry`]: the envelope is rejected, or stays
//!   with the hub, as a whole: nothing any handler staged is applied.
//!
//! An envelope every handler declines is rejected, with a reason naming the route and each
//! handler's answer, as one with no route is; a route's envelopes never go to the fallback.
//! What the handlers that took it staged is applied in the one atomic update of step (4),
//! with one processed record naming them, so a redelivery runs none of them again (their
//! `committed` runs again, as for one handler): no envelope, and no part of one, is processed
//! twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snodo_envelopes::{Envelope, Format};
use tokio::sync::watch;
use uuid::Uuid;

use crate::client::{ClientError, HubClient, Signed, Submitted};
use crate::inbound::{BoxFuture, Inbound, Sink, SinkError};
use crate::store::{Store, StoreError, Tree, Update};

/// The tree of envelopes processed, by `sender/id`.
pub const PROCESSED_TREE: &str = "snodo.processed";
/// The tree of signed envelopes waiting for the hub's receipt, by id.
pub const OUTBOX_TREE: &str = "snodo.outbox";
/// The longest pause of the pull loop after batches that could not be processed.
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(30);
/// How long past its wait a stopping pull loop waits for its last lease's answer.
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    /// The envelope is not this handler's (a receipt for a position another office created):
    /// the dispatcher offers it to the route's next handler. Nothing it staged is applied.
    #[error("declined: {0}")]
    Decline(String),
}

impl HandlerError {
    /// Whether the same envelope may succeed later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retry(_))
    }

    /// Whether the handler left the envelope to the route's other handlers.
    #[must_use]
    pub fn is_declined(&self) -> bool {
        matches!(self, HandlerError::Decline(_))
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
    /// Set by [`Effects::take_part`]: the handler took only its part of the envelope, and
    /// the route's next handlers are offered theirs.
    part: bool,
}

impl Effects {
    /// Says that the handler took only its own part of the envelope (the positions it
    /// created, of a flow that lists several offices'): the route's next handlers are offered
    /// the envelope too, and all the parts are applied at once.
    pub fn take_part(&mut self) {
        self.part = true;
    }

    /// Whether [`Effects::take_part`] was called.
    #[must_use]
    pub fn is_part(&self) -> bool {
        self.part
    }

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
    /// The positions, in the route's list, of the handlers that took it (their `committed`
    /// runs again on a redelivery); empty in records written before routes had several
    /// handlers, which name the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<usize>,
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

/// Submits `signed`, each already in `outbox`, in batches ([`HubClient::submit_all`]), and
/// removes from the outbox each envelope the hub receipted or refused for good (no retry
/// changes a refusal); one not receipted yet (the hub unreachable, say) stays for the next
/// pass. The removals are not flushed: one lost in a crash only means a resubmission, a
/// duplicate the hub recognises by its id. Returns each envelope's result, in order.
pub(crate) async fn submit_outgoing(
    client: &HubClient,
    outbox: &Tree<Outgoing>,
    signed: &[Signed],
) -> Vec<Result<Submitted, ClientError>> {
    let results = client.submit_all(signed).await;
    for (s, result) in signed.iter().zip(&results) {
        match result {
            Ok(r) => {
                tracing::info!(envelope_id = %s.id, index = r.receipt.index, duplicate = r.duplicate, "Outgoing envelope receipted.");
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(envelope_id = %s.id, error = %e, "Outgoing envelope refused by the hub; removed from the outbox.");
            }
            Err(e) => {
                tracing::warn!(envelope_id = %s.id, error = %e, "Outgoing envelope not yet receipted; kept in the outbox.");
                continue;
            }
        }
        if let Err(e) = outbox.remove(&s.id.to_string()) {
            tracing::warn!(envelope_id = %s.id, error = %e, "Settled envelope still in the outbox; it will be submitted again (a duplicate).");
        }
    }
    results
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
    /// The handlers of each service/action, in the order offered.
    routes: HashMap<(String, String), Vec<Arc<dyn Handler>>>,
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
    routes: HashMap<(String, String), Vec<Arc<dyn Handler>>>,
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
    /// Sends `service`/`action` envelopes to `handler`, after the handlers this route has
    /// already (each of which may decline an envelope that is not its own; see the module's
    /// documentation). A route is never replaced.
    #[must_use]
    pub fn route(mut self, service: &str, action: &str, handler: Arc<dyn Handler>) -> Self {
        self.routes
            .entry((service.to_owned(), action.to_owned()))
            .or_default()
            .push(handler);
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
    /// How long to wait when the inbox is empty: the hub holds the lease request that long
    /// and answers as soon as envelopes arrive (a long poll); a hub that answers at once
    /// with nothing makes the loop pause for the rest of it.
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
        let route = self.route_of(&h.service, &h.action);
        if let Some(record) = self.processed.get(&key)? {
            tracing::info!(envelope_id = %id, sender = %inbound.sender(), "Redelivery of an envelope already processed.");
            if record.outcome == "done" {
                let taken: &[usize] = if record.handlers.is_empty() {
                    &[0]
                } else {
                    &record.handlers
                };
                for handler in taken.iter().filter_map(|&i| route.get(i)) {
                    handler
                        .committed(inbound)
                        .await
                        .map_err(DispatchError::Handler)?;
                }
            }
            self.drain_outbox().await;
            return Ok(Disposition::AlreadyProcessed);
        }
        let mut effects = Effects::default();
        let mut taken = Vec::new();
        let outcome = if route.is_empty() {
            Err(HandlerError::Reject(format!(
                "no handler for {}/{}",
                h.service, h.action
            )))
        } else {
            offer(route, inbound, &mut effects, &mut taken).await
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
            handlers: taken.clone(),
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
            Err(HandlerError::Reject(reason) | HandlerError::Decline(reason)) => {
                tracing::error!(envelope_id = %id, sender = %inbound.sender(), service = %h.service, action = %h.action, %reason, "Envelope rejected; kept in the processed records.");
                record.outcome = "rejected".into();
                record.reason = Some(reason.clone());
                record.raw = Some(String::from_utf8_lossy(&inbound.raw).into_owned());
                record.handlers.clear();
                Disposition::Rejected(reason)
            }
            Err(e) => return Err(DispatchError::Handler(e)),
        };
        update.put(&self.processed, &key, &record)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(update))
            .await
            .map_err(|e| StoreError::Sled(sled::Error::Unsupported(e.to_string())))??;
        tracing::info!(envelope_id = %id, sender = %inbound.sender(), service = %h.service, action = %h.action, sent = record.sent.len(), handlers = ?record.handlers, "Envelope processed.");
        if disposition == Disposition::Processed {
            for handler in record.handlers.iter().filter_map(|&i| route.get(i)) {
                handler
                    .committed(inbound)
                    .await
                    .map_err(DispatchError::Handler)?;
            }
        }
        self.drain_outbox().await;
        Ok(disposition)
    }

    /// The handlers of `service`/`action` in the order offered: the route's, or the fallback
    /// for an envelope no route names (none at all: an empty list).
    fn route_of(&self, service: &str, action: &str) -> &[Arc<dyn Handler>] {
        match self.routes.get(&(service.to_owned(), action.to_owned())) {
            Some(handlers) => handlers,
            None => self.fallback.as_slice(),
        }
    }

    /// Submits every envelope of the outbox, in batches and in the order of their ids (which
    /// is the order they were made in), removing each once the hub has receipted it; returns
    /// how many are left (the hub unreachable, say). A refused one is logged and dropped from
    /// the outbox, for no retry will change the hub's mind.
    ///
    /// Removals are not flushed (the store writes them within its flush interval): one lost in
    /// a crash only means the envelope is submitted again, a duplicate the hub recognises by
    /// its id (or the same refusal). So an envelope costs one sync, its processing's, not two.
    pub async fn drain_outbox(&self) -> usize {
        let _one_at_a_time = self.draining.lock().await;
        let items = match self.outbox.scan("") {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the outbox.");
                return self.outbox.len();
            }
        };
        let mut signed = Vec::with_capacity(items.len());
        for (key, item) in items {
            match Uuid::parse_str(&key) {
                Ok(id) => signed.push(item.to_signed(id)),
                Err(_) => tracing::error!(%key, "Outbox key is not an envelope id; left alone."),
            }
        }
        submit_outgoing(&self.client, &self.outbox, &signed).await;
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
            let asked = tokio::time::Instant::now();
            let lease = self
                .client
                .lease_waiting(config.batch, config.lease, config.idle);
            tokio::pin!(lease);
            let batch = tokio::select! {
                r = &mut lease => r,
                () = crate::shutdown::stopped(shutdown.clone()) => {
                    // Dropped, the request could lose an answer on its way and hold its
                    // envelopes until their lease ran out: it ends (within `idle` from a hub
                    // that answers), and what it brings goes back unprocessed.
                    let grace = config.idle + STOP_GRACE;
                    if let Ok(Ok(deliveries)) = tokio::time::timeout(grace, lease).await {
                        for d in deliveries {
                            if let Err(e) = self.client.nack(&d.lease).await {
                                tracing::warn!(envelope_id = %d.inbound.id(), error = %e, "Not returned; its lease will lapse.");
                            }
                        }
                    }
                    break;
                }
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
                    () = tokio::time::sleep_until(asked + config.idle) => {}
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

/// Offers `inbound` to the handlers of its route in order (step 2 of the module's list),
/// gathering in `effects` what those that take it stage and in `taken` their positions in
/// `route`: it stops at the first that takes it whole, or that rejects it or asks to retry
/// (then nothing staged counts); one that declines is passed over, and so is one that
/// takes only its part (after it, the others are offered theirs).
///
/// # Errors
/// The first rejection or retry; or, when no handler took the envelope or a part of it, a
/// rejection naming the route and what each handler answered.
async fn offer(
    route: &[Arc<dyn Handler>],
    inbound: &Inbound,
    effects: &mut Effects,
    taken: &mut Vec<usize>,
) -> Result<(), HandlerError> {
    let h = &inbound.envelope.header;
    let mut declined = Vec::new();
    for (i, handler) in route.iter().enumerate() {
        let mut own = Effects::default();
        match handler.handle(inbound, &mut own).await {
            Ok(()) => {
                taken.push(i);
                effects.update.extend(own.update);
                effects.outgoing.extend(own.outgoing);
                if !own.part {
                    return Ok(());
                }
            }
            Err(HandlerError::Decline(why)) => {
                tracing::debug!(envelope_id = %h.id, service = %h.service, action = %h.action, handler = i, %why, "Declined; offered to the next handler.");
                declined.push(format!("handler {} of {}: {why}", i + 1, route.len()));
            }
            Err(e) => {
                taken.clear();
                return Err(e);
            }
        }
    }
    if taken.is_empty() {
        return Err(HandlerError::Reject(format!(
            "no handler of {}/{} takes it ({})",
            h.service,
            h.action,
            declined.join("; ")
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;
    use snodo_envelopes::EntityId;
    use snodo_envelopes::pki::{self, KeyType};

    use super::*;
    use crate::client::HubClientConfig;

    /// An office that takes the notices naming it (`"office"`), and its part of the flows
    /// listing it (`"offices"`), keeping what it took in its own tree.
    struct Office {
        name: &'static str,
        taken: Tree<String>,
        handled: AtomicUsize,
        committed: AtomicUsize,
    }

    impl Office {
        fn new(store: &Store, name: &'static str) -> Arc<Office> {
            Arc::new(Office {
                name,
                taken: store.tree(&format!("office.{name}")).unwrap(),
                handled: AtomicUsize::new(0),
                committed: AtomicUsize::new(0),
            })
        }
    }

    impl Handler for Office {
        fn handle<'a>(
            &'a self,
            inbound: &'a Inbound,
            effects: &'a mut Effects,
        ) -> BoxFuture<'a, Result<(), HandlerError>> {
            Box::pin(async move {
                self.handled.fetch_add(1, Ordering::SeqCst);
                let snodo_envelopes::Body::Json(body) = &inbound.envelope.body else {
                    return Err(HandlerError::Reject("not JSON".into()));
                };
                let id = inbound.id().to_string();
                // Staged before deciding: a decline must drop it.
                effects
                    .update
                    .put(&self.taken, &format!("staged/{id}"), &"x".to_owned())
                    .map_err(crate::service::retry)?;
                if body["reject"] == self.name {
                    return Err(HandlerError::Reject(format!("{} refuses it", self.name)));
                }
                if let Some(list) = body["offices"].as_array() {
                    if !list.iter().any(|o| o == self.name) {
                        return Err(HandlerError::Decline(format!(
                            "{} is not listed",
                            self.name
                        )));
                    }
                    effects.take_part();
                } else if body["office"] != self.name {
                    return Err(HandlerError::Decline(format!("not {}'s", self.name)));
                }
                effects
                    .update
                    .put(&self.taken, &id, &self.name.to_owned())
                    .map_err(crate::service::retry)?;
                Ok(())
            })
        }

        fn committed<'a>(&'a self, _: &'a Inbound) -> BoxFuture<'a, Result<(), HandlerError>> {
            self.committed.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    struct Fixture {
        _pki: tempfile::TempDir,
        client: HubClient,
        dispatcher: Dispatcher,
        a: Arc<Office>,
        b: Arc<Office>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let me: EntityId = "comune:001272".parse().unwrap();
        let provider: EntityId = "pagopa:nodo".parse().unwrap();
        pki::init(dir.path(), &[me.clone(), provider.clone()], KeyType::P256).unwrap();
        let client_of = |e: &EntityId| {
            let stem = e.file_stem();
            HubClient::new(&HubClientConfig::new(
                "https://127.0.0.1:9",
                dir.path().join("ca.crt"),
                dir.path().join(format!("{stem}.crt")),
                dir.path().join(format!("{stem}.key")),
            ))
            .unwrap()
        };
        // The payment provider, which sends; the comune's dispatcher receives.
        let client = client_of(&provider);
        let comune = client_of(&me);
        let store = Store::temporary().unwrap();
        let (a, b) = (Office::new(&store, "a"), Office::new(&store, "b"));
        let dispatcher = Dispatcher::builder()
            .route("pagamenti", "ricevuta", a.clone())
            .route("pagamenti", "ricevuta", b.clone())
            .build(comune, store)
            .unwrap();
        Fixture {
            _pki: dir,
            client,
            dispatcher,
            a,
            b,
        }
    }

    fn inbound(client: &HubClient, body: serde_json::Value) -> Inbound {
        let envelope = client
            .envelope(
                Recipient::Entity("comune:001272".parse().unwrap()),
                "pagamenti",
                "ricevuta",
            )
            .json(body)
            .build()
            .unwrap();
        let signed = client.sign(&envelope).unwrap();
        Inbound {
            envelope,
            raw: signed.bytes,
            format: signed.format,
        }
    }

    use snodo_envelopes::Recipient;

    #[tokio::test]
    async fn each_handler_takes_only_its_own_and_a_redelivery_runs_none() {
        let f = fixture();
        let for_b = inbound(&f.client, json!({"office": "b"}));
        let d = f.dispatcher.dispatch(&for_b).await.unwrap();
        assert_eq!(d, Disposition::Processed);
        let id = for_b.id().to_string();
        assert_eq!(f.b.taken.get(&id).unwrap().as_deref(), Some("b"));
        assert_eq!(f.a.taken.get(&id).unwrap(), None, "a declined it");
        assert_eq!(
            f.a.taken.get(&format!("staged/{id}")).unwrap(),
            None,
            "what a decliner staged is dropped"
        );
        let record = f
            .dispatcher
            .processed(&for_b.sender().to_string(), for_b.id())
            .unwrap()
            .unwrap();
        assert_eq!(record.handlers, vec![1]);
        assert_eq!(f.b.committed.load(Ordering::SeqCst), 1);

        let for_a = inbound(&f.client, json!({"office": "a"}));
        assert_eq!(
            f.dispatcher.dispatch(&for_a).await.unwrap(),
            Disposition::Processed
        );
        assert_eq!(
            f.b.handled.load(Ordering::SeqCst),
            1,
            "b is never offered a's"
        );

        let handled = (
            f.a.handled.load(Ordering::SeqCst),
            f.b.handled.load(Ordering::SeqCst),
        );
        assert_eq!(
            f.dispatcher.dispatch(&for_b).await.unwrap(),
            Disposition::AlreadyProcessed
        );
        assert_eq!(
            (
                f.a.handled.load(Ordering::SeqCst),
                f.b.handled.load(Ordering::SeqCst)
            ),
            handled,
            "a redelivery is processed once"
        );
        assert_eq!(
            f.b.committed.load(Ordering::SeqCst),
            2,
            "b finishes it again"
        );
        assert_eq!(f.a.committed.load(Ordering::SeqCst), 1, "only for its own");
    }

    #[tokio::test]
    async fn what_every_handler_declines_is_rejected_naming_the_route() {
        let f = fixture();
        let nobody = inbound(&f.client, json!({"office": "c"}));
        let Disposition::Rejected(reason) = f.dispatcher.dispatch(&nobody).await.unwrap() else {
            panic!("rejected");
        };
        assert!(
            reason.contains("no handler of pagamenti/ricevuta takes it"),
            "{reason}"
        );
        assert!(
            reason.contains("not a's") && reason.contains("not b's"),
            "{reason}"
        );
        let record = f
            .dispatcher
            .processed(&nobody.sender().to_string(), nobody.id())
            .unwrap()
            .unwrap();
        assert_eq!(record.outcome, "rejected");
        assert!(record.raw.is_some());
        assert_eq!(
            f.dispatcher.dispatch(&nobody).await.unwrap(),
            Disposition::AlreadyProcessed
        );
        assert_eq!(f.a.handled.load(Ordering::SeqCst), 1);
        assert_eq!(f.b.handled.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_list_of_several_handlers_things_reaches_each_once() {
        let f = fixture();
        let flow = inbound(&f.client, json!({"offices": ["a", "b"]}));
        assert_eq!(
            f.dispatcher.dispatch(&flow).await.unwrap(),
            Disposition::Processed
        );
        let id = flow.id().to_string();
        assert_eq!(f.a.taken.get(&id).unwrap().as_deref(), Some("a"));
        assert_eq!(f.b.taken.get(&id).unwrap().as_deref(), Some("b"));
        let record = f
            .dispatcher
            .processed(&flow.sender().to_string(), flow.id())
            .unwrap()
            .unwrap();
        assert_eq!(record.handlers, vec![0, 1]);
        assert_eq!(
            f.dispatcher.dispatch(&flow).await.unwrap(),
            Disposition::AlreadyProcessed
        );
        assert_eq!(f.a.handled.load(Ordering::SeqCst), 1);
        assert_eq!(f.b.handled.load(Ordering::SeqCst), 1);

        // One that lists only b: a declines, b takes its part.
        let only_b = inbound(&f.client, json!({"offices": ["b"]}));
        assert_eq!(
            f.dispatcher.dispatch(&only_b).await.unwrap(),
            Disposition::Processed
        );
        assert_eq!(f.a.taken.get(&only_b.id().to_string()).unwrap(), None);

        // A rejection after a part: nothing of the envelope is applied.
        let refused = inbound(&f.client, json!({"offices": ["a", "b"], "reject": "b"}));
        let Disposition::Rejected(reason) = f.dispatcher.dispatch(&refused).await.unwrap() else {
            panic!("rejected");
        };
        assert!(reason.contains("b refuses it"), "{reason}");
        assert_eq!(f.a.taken.get(&refused.id().to_string()).unwrap(), None);
    }
}
