//! The engine: the hub's single writer. Every change of state — an envelope accepted or
//! refused, leased, acknowledged, returned, expired — is journaled, applied to the store and
//! flushed here, in groups (one flush and one checkpoint signature for all the requests that
//! arrived together). Nothing is answered before the flush that makes it durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use snodo_envelopes::header::format_time;
use snodo_envelopes::{EntityId, Envelope, Format, Header, Profile, Recipient, Signer};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::journal::checkpoint::{CheckpointSigner, SharedCheckpoint, SignedCheckpoint};
use crate::journal::entry::{Entry, EventKind};
use crate::journal::merkle::{self, Hash};
use crate::journal::nodes::{NodeCache, stored_node};
use crate::journal::query::Postings;
use crate::journal::receipt::Receipt;
use crate::store::{Batch, Store, StoreError, Value, keys};

/// The service and action of the hub's own failure notices.
pub const NOTICE_SERVICE: &str = "snodo.consegna";
/// See [`NOTICE_SERVICE`].
pub const NOTICE_ACTION: &str = "mancata";

/// The `detail` of the `delivered` entry of a response handed to the request waiting for
/// it (`?wait=`): delivered for good in the answer, never leased nor acknowledged.
pub const DELIVERED_TO_WAITER: &str = "in the answer to the waiting request";
/// How many requests one group commit takes at most.
const MAX_GROUP: usize = 1024;
/// How often the engine sweeps expired leases and envelopes.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A group commit that takes longer is logged at debug level, with where its time went.
const SLOW_GROUP: Duration = Duration::from_millis(15);

/// The most keys of one time index a sweep handles.
const SWEEP_BATCH: usize = 4096;
/// An envelope with at least this many recipients has its record kept parsed...
const WIDE_RECIPIENTS: usize = 16;
/// ... among this many such records, the latest.
const WIDE_KEPT: usize = 64;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The journal could not be extended or signed.
    #[error("journal: {0}")]
    Journal(String),
    /// The engine has stopped (the hub is shutting down).
    #[error("the hub is shutting down")]
    Stopped,
    /// The engine's queue is full: the hub is overloaded.
    #[error("the hub is overloaded")]
    Overloaded,
    /// The sender already used this envelope id for different content.
    #[error("envelope id {0} was already used by this sender for a different envelope")]
    IdConflict(Uuid),
    /// No lease with this token belongs to the caller (it may have expired).
    #[error(
        "no lease `{0}` is held by the caller; it may have expired and the envelope returned to the inbox"
    )]
    UnknownLease(String),
}

impl EngineError {
    /// True when the same request may succeed later (the hub's transient fault).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EngineError::Store(_) | EngineError::Stopped | EngineError::Overloaded
        )
    }
}

/// What the engine needs to know of its hub.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The entity under which the hub sends its own notices: `hub:<name>`.
    pub hub_entity: EntityId,
    /// Sign a checkpoint at least this often while entries are unsigned.
    pub checkpoint_interval: Duration,
    /// Sign a checkpoint at least every this many entries.
    pub checkpoint_max_entries: u64,
    /// Prune the exact bytes of envelopes accepted longer ago than this.
    pub retention: Option<Duration>,
    /// Queues live outside the store (the amqp transport): accepted envelopes go to the outbox
    /// (`p/`) for the transport to publish, and deliveries are journaled through
    /// [`Engine::report`].
    pub external_queues: bool,
}

/// Where an accepted envelope is published (amqp transport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// To the queue of each of these recipients.
    Direct(Vec<String>),
    /// Once, to the events exchange, which fans it out to the topic's subscribers.
    Event,
}

/// An accepted envelope that the transport must publish before its receipt is returned.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Its record.
    pub record: EnvelopeRecord,
    /// The record's JSON as stored, which its messages carry as a header.
    pub record_json: Vec<u8>,
    /// The exact signed bytes (shared with the store's batch: no copy).
    pub raw: Value,
    /// Where it goes.
    pub route: Route,
    /// A request publishes it (and gives no receipt until it is confirmed); otherwise (a
    /// notice, a response whose waiter left) only the outbox pass does.
    pub by_request: bool,
}

/// An outbox entry as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    route: Route,
    by_request: bool,
}

/// The outbox entry of `seq` (stored as `value`), with what publishing it needs.
fn load_outbound(store: &dyn Store, seq: u64, value: &[u8]) -> Result<Outbound, EngineError> {
    let okey = keys::outbox(seq);
    let pending: Pending =
        serde_json::from_slice(value).map_err(|e| StoreError::corrupt(&okey, e))?;
    let rkey = keys::envelope(seq);
    let record_json = store
        .get(&rkey)?
        .ok_or_else(|| StoreError::corrupt(&okey, "envelope record missing"))?;
    let record: EnvelopeRecord =
        serde_json::from_slice(&record_json).map_err(|e| StoreError::corrupt(&rkey, e))?;
    let raw = store
        .get(&keys::raw(seq))?
        .ok_or_else(|| StoreError::corrupt(&okey, "envelope bytes missing"))?;
    Ok(Outbound {
        record,
        record_json,
        raw: Value::from(raw),
        route: pending.route,
        by_request: pending.by_request,
    })
}

fn pending_bytes(route: &Route, by_request: bool) -> Vec<u8> {
    serde_json::to_vec(&Pending {
        route: route.clone(),
        by_request,
    })
    .unwrap_or_default()
}

/// A journal entry about an envelope, reported by the transport (a delivery on this node of an
/// envelope that may have been accepted by another).
#[derive(Debug, Clone)]
pub struct Event {
    /// `delivered`, `acknowledged`, `expired`, `dead_lettered`.
    pub kind: EventKind,
    /// The envelope.
    pub record: EnvelopeRecord,
    /// Who it is about (the recipient).
    pub actor: Option<String>,
    /// What happened, in words.
    pub detail: Option<String>,
    /// The envelope was accepted by this node (`record.seq` is in this store).
    pub local: bool,
}

/// What the transport asks the engine to make durable at once.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Journal entries.
    pub events: Vec<Event>,
    /// Failure notices to send the senders: (envelope, reason, detail).
    pub notices: Vec<(EnvelopeRecord, String, String)>,
    /// Delivered markers: (recipient, sender, envelope id, digest hex).
    pub markers: Vec<(String, String, Uuid, String)>,
    /// Outbox entries confirmed by RabbitMQ: no longer to be published.
    pub published: Vec<u64>,
}

/// An envelope that passed every check of the acceptance pipeline.
#[derive(Debug)]
pub struct Submission {
    /// Its verified header.
    pub header: Header,
    /// The exact bytes received.
    pub raw: Value,
    /// SHA-256 of `raw`.
    pub digest: [u8; 32],
    /// The encoding it arrived in.
    pub format: Format,
    /// Whom to deliver it to: the recipient, or every subscriber of an event's topic.
    pub recipients: Vec<EntityId>,
}

/// The engine's answer to a submission.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Accepted now.
    New(Receipt),
    /// Accepted before, under the same sender and id: the original receipt.
    Duplicate(Receipt),
}

/// What a refusal adds to the journal.
#[derive(Debug, Clone, Default)]
pub struct RefusalRecord {
    /// The envelope id, if the header could be read.
    pub envelope_id: Option<Uuid>,
    /// Who submitted it (the transport identity).
    pub caller: Option<String>,
    /// The header's sender, recipient, service, action, conversation, if known.
    pub sender: Option<String>,
    /// See `sender`.
    pub recipient: Option<String>,
    /// See `sender`.
    pub service: Option<String>,
    /// See `sender`.
    pub action: Option<String>,
    /// See `sender`.
    pub conversation: Option<String>,
    /// SHA-256 of the bytes received.
    pub digest: [u8; 32],
    /// The stable refusal code.
    pub code: String,
    /// The refusal's message.
    pub detail: String,
}

/// One envelope handed to its recipient under a lease.
#[derive(Debug, Clone, Serialize)]
pub struct Leased {
    /// Acknowledge (or return) the envelope with this token.
    pub lease: String,
    /// When the lease ends and the envelope returns to the inbox.
    pub lease_expires_at: String,
    /// The envelope's id.
    pub envelope_id: Uuid,
    /// Who sent it.
    pub sender: String,
    /// `application/xml` or `application/jose+json`.
    pub media_type: &'static str,
    /// The exact signed bytes the sender submitted.
    pub envelope: String,
}

/// What the hub keeps of an accepted envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeRecord {
    /// Internal sequence number.
    pub seq: u64,
    /// The envelope id.
    pub id: Uuid,
    /// Its sender.
    pub sender: String,
    /// Its recipient as written (`*` for events).
    pub recipient: String,
    /// Whom it is delivered to.
    pub recipients: Vec<String>,
    /// Service.
    pub service: String,
    /// Action.
    pub action: String,
    /// Conversation.
    pub conversation: String,
    /// Profile.
    pub profile: Profile,
    /// The request it answers.
    pub in_reply_to: Option<Uuid>,
    /// Expiry, RFC 3339.
    pub expires_at: Option<String>,
    /// `xml` or `json`.
    pub format: String,
    /// SHA-256 of the bytes received, hex.
    pub digest: String,
    /// When it was accepted.
    pub accepted_at: String,
    /// The journal index of its `accepted` entry.
    pub accepted_index: u64,
}

impl EnvelopeRecord {
    /// The media type of its encoding: `application/xml` or `application/jose+json`.
    #[must_use]
    pub fn media_type(&self) -> &'static str {
        if self.format == "xml" {
            Format::Xml.media_type()
        } else {
            Format::Json.media_type()
        }
    }
}

/// An envelope's record and its exact bytes (`None` once pruned).
pub type RawEnvelope = (EnvelopeRecord, Option<Vec<u8>>);

/// An envelope taken from a queue: lease token, record, exact bytes, attempts so far.
type Taken = (String, Arc<EnvelopeRecord>, Vec<u8>, u32);

/// A lease as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    recipient: String,
    seq: u64,
    expires_ms: i64,
}

/// The delivery of one envelope to one recipient, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `leased`, `acknowledged`, `returned`, `expired`.
    pub state: String,
    /// How many times it was handed out.
    pub attempts: u32,
    /// When the state last changed.
    pub at: String,
}

/// The engine's durable counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    journal_size: u64,
    next_seq: u64,
    checkpoint_size: u64,
    /// The next envelope the retention sweep looks at.
    #[serde(default)]
    prune_from: u64,
}

enum Job {
    /// Flush and stop.
    Stop(oneshot::Sender<()>),
    /// Answered once every job sent before it is durable.
    Barrier(oneshot::Sender<()>),
    Accept(Submission, AcceptReply),
    Refuse(RefusalRecord),
    /// An auditor's query, journaled: who asked what.
    Queried {
        actor: String,
        query: String,
    },
    Lease {
        recipient: EntityId,
        limit: usize,
        lease_for: Duration,
        reply: oneshot::Sender<Result<Vec<Leased>, EngineError>>,
    },
    Settle {
        caller: EntityId,
        token: String,
        ack: bool,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    PushTake {
        recipient: EntityId,
        limit: usize,
        hold: Duration,
        reply: oneshot::Sender<Result<Vec<Pushed>, EngineError>>,
    },
    PushDone {
        recipient: EntityId,
        token: String,
        outcome: PushOutcome,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Record(Recording, oneshot::Sender<Result<(), EngineError>>),
}

/// An envelope taken from an inbox for a push to its recipient's endpoint.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Report the outcome under this token.
    pub lease: String,
    /// The envelope's id.
    pub envelope_id: Uuid,
    /// Its service (for the delivery deadline).
    pub service: String,
    /// `application/xml` or `application/jose+json`.
    pub media_type: &'static str,
    /// The exact signed bytes.
    pub envelope: Vec<u8>,
    /// When it was accepted (unix ms): the delivery deadline counts from here.
    pub accepted_ms: i64,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// How a push went.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// The endpoint answered 2xx: delivered.
    Delivered {
        /// The HTTP status.
        status: u16,
    },
    /// Failed; try again after a while.
    Retry {
        /// The backoff chosen.
        after: Duration,
        /// What went wrong.
        reason: String,
    },
    /// Failed past the delivery deadline: dead-letter it and tell the sender.
    DeadLetter {
        /// What went wrong last.
        reason: String,
    },
}

/// Requests waiting (`?wait=`) for the response to a request: (requester, request id).
type Waiters = Mutex<HashMap<(String, Uuid), oneshot::Sender<Leased>>>;

/// The handle through which the API talks to the engine thread.
#[derive(Debug, Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    store: Arc<dyn Store>,
    /// Merkle nodes in memory, for the receipts built by requesters' tasks.
    nodes: Arc<NodeCache>,
    waiters: Arc<Waiters>,
    /// Woken when a group commit put something in the outbox that nobody is publishing.
    outbox: Arc<tokio::sync::Notify>,
    /// Woken when a group commit put envelopes in an inbox (for long polls).
    inboxes: Arc<Inboxes>,
}

/// A signal per inbox, woken once a group commit has put envelopes in it: what a lease that
/// found the inbox empty waits on (`GET /v1/inbox?wait=`).
#[derive(Debug, Default)]
pub struct Inboxes {
    signals: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Notify>>>,
}

impl Inboxes {
    /// The signal of `recipient`'s inbox.
    #[must_use]
    pub fn signal(&self, recipient: &str) -> Arc<tokio::sync::Notify> {
        let mut signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        signals
            .entry(keys::queue_prefix(recipient))
            .or_default()
            .clone()
    }

    /// Wakes whoever waits on the inboxes of these queue prefixes.
    fn wake<'a>(&self, prefixes: impl ExactSizeIterator<Item = &'a Vec<u8>>) {
        if prefixes.len() == 0 {
            return;
        }
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        for p in prefixes {
            if let Some(n) = signals.get(p.as_slice()) {
                n.notify_waiters();
            }
        }
    }
}

impl Engine {
    /// Starts the engine thread over `store`, signing checkpoints and notices with `hub`.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the store's state cannot be read.
    pub fn start(
        store: Arc<dyn Store>,
        hub: CheckpointSigner,
        notices: Signer,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let state = match store.get(keys::STATE)? {
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(keys::STATE, e))?
            }
            None => State::default(),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(16 * MAX_GROUP);
        let waiters: Arc<Waiters> = Arc::default();
        let outbox = Arc::new(tokio::sync::Notify::new());
        let inboxes = Arc::new(Inboxes::default());
        let nodes = Arc::new(NodeCache::default());
        let mut writer = Writer {
            nodes: nodes.clone(),
            outbox: outbox.clone(),
            outbox_dirty: false,
            inboxes: inboxes.clone(),
            swept: [i64::MIN; 3],
            heads: HashMap::new(),
            wide: BTreeMap::new(),
            store: store.clone(),
            hub,
            notices,
            config,
            state,
            last_checkpoint: Instant::now(),
            last_sweep: Instant::now(),
            waiters: waiters.clone(),
            requeue: Vec::new(),
            unclaimed: Vec::new(),
        };
        std::thread::Builder::new()
            .name("snodo-engine".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| EngineError::Journal(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine {
            tx,
            store,
            nodes,
            waiters,
            outbox,
            inboxes,
        })
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Overloaded,
            TrySendError::Disconnected(_) => EngineError::Stopped,
        })
    }

    /// Accepts a verified, authorized envelope: journal, store, queue, flush, receipt.
    ///
    /// # Errors
    /// [`EngineError`] when it could not be made durable; then no receipt exists.
    pub async fn accept(&self, submission: Submission) -> Result<Accepted, EngineError> {
        self.admit(submission).await.map(|(a, _)| a)
    }

    /// [`Engine::accept`], with what the transport must still publish before the receipt may
    /// be returned (the amqp transport: a new envelope, or a duplicate whose first publication
    /// was never confirmed).
    ///
    /// # Errors
    /// [`EngineError`] when it could not be made durable; then no receipt exists.
    pub async fn admit(
        &self,
        submission: Submission,
    ) -> Result<(Accepted, Option<Outbound>), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Accept(submission, reply))?;
        match rx.await.map_err(|_| EngineError::Stopped)?? {
            Admitted::New(entry, checkpoint, outbound) => Ok((
                Accepted::New(receipt(
                    self.store.as_ref(),
                    &self.nodes,
                    &entry.0,
                    entry.1,
                    &checkpoint,
                )?),
                outbound,
            )),
            Admitted::Duplicate(r, outbound) => Ok((Accepted::Duplicate(*r), outbound)),
        }
    }

    /// Makes `recording` durable: journal entries, notices, delivered markers, confirmed
    /// publications.
    ///
    /// # Errors
    /// [`EngineError`] when it could not be made durable.
    pub async fn report(&self, recording: Recording) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Record(recording, reply))?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Whether envelope `seq` waits in the outbox (accepted, its publication not yet
    /// confirmed).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn is_in_outbox(&self, seq: u64) -> Result<bool, EngineError> {
        Ok(self.store.get(&keys::outbox(seq))?.is_some())
    }

    /// The outbox: accepted envelopes not yet confirmed by RabbitMQ, oldest first, at most
    /// `limit`, after `after` (a sequence number).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn outbox(&self, after: Option<u64>, limit: usize) -> Result<Vec<Outbound>, EngineError> {
        let from = after.map(keys::outbox);
        let mut out = Vec::new();
        for (key, value) in self.store.scan(b"p/", from.as_deref(), limit)? {
            let Some(seq) = keys::trailing_u64(&key) else {
                continue;
            };
            out.push(load_outbound(self.store.as_ref(), seq, &value)?);
        }
        Ok(out)
    }

    /// The signal of `recipient`'s inbox, woken when a group commit put envelopes in it.
    #[must_use]
    pub fn inbox_signal(&self, recipient: &str) -> Arc<tokio::sync::Notify> {
        self.inboxes.signal(recipient)
    }

    /// Wakes when the engine put envelopes in the outbox that no request is publishing.
    #[must_use]
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// Whether `recipient` already took envelope (`sender`, `id`) on some node.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn was_delivered(
        &self,
        recipient: &str,
        sender: &str,
        id: &Uuid,
    ) -> Result<bool, EngineError> {
        Ok(self
            .store
            .get(&keys::delivered(recipient, sender, id))?
            .is_some())
    }

    /// Journals an auditor's query (who asked what), durably before the answer goes out.
    ///
    /// # Errors
    /// [`EngineError`] when it cannot be journaled: then the query must not be answered.
    pub async fn record_query(&self, actor: String, query: String) -> Result<(), EngineError> {
        self.send(Job::Queried { actor, query })?;
        // Once the barrier is answered, the group holding the query entry has been flushed
        // (a failed group drops the barrier, and the query is not answered).
        let (reply, rx) = oneshot::channel();
        self.send(Job::Barrier(reply))?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// The number of entries in the journal, as last flushed.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn journal_size(&self) -> Result<u64, EngineError> {
        Ok(match self.store.get(keys::STATE)? {
            Some(v) => {
                serde_json::from_slice::<State>(&v)
                    .map_err(|e| StoreError::corrupt(keys::STATE, e))?
                    .journal_size
            }
            None => 0,
        })
    }

    /// Stops the engine after everything sent before is durable.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job::Stop(reply)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Journals a refusal (fire and forget: the caller gets its refusal at once).
    pub fn refuse(&self, refusal: RefusalRecord) {
        if let Err(e) = self.send(Job::Refuse(refusal)) {
            tracing::warn!(error = %e, "Refusal not journaled.");
        }
    }

    /// Leases up to `limit` envelopes of `recipient`'s inbox for `lease_for`. Dropped before
    /// it returns (a request its client gave up on), it leases nothing: what it took goes
    /// back to the inbox at once instead of when the lease runs out.
    ///
    /// # Errors
    /// [`EngineError`] when the store fails.
    pub async fn lease(
        &self,
        recipient: EntityId,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<Leased>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Lease {
            recipient: recipient.clone(),
            limit,
            lease_for,
            reply,
        })?;
        let mut claim = Claim {
            rx,
            jobs: self.tx.clone(),
            holder: recipient,
        };
        (&mut claim.rx).await.map_err(|_| EngineError::Stopped)?
    }

    /// Acknowledges (`ack`) or returns to the inbox (`!ack`) the envelope under `token`.
    ///
    /// # Errors
    /// [`EngineError::UnknownLease`] when the caller holds no such lease.
    pub async fn settle(
        &self,
        caller: EntityId,
        token: String,
        ack: bool,
    ) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Settle {
            caller,
            token,
            ack,
            reply,
        })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Takes up to `limit` envelopes due for a push to `recipient`, held for `hold` (after
    /// which, if no outcome was reported, they return to the queue).
    ///
    /// # Errors
    /// [`EngineError`] when the store fails.
    pub async fn push_take(
        &self,
        recipient: EntityId,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<Pushed>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::PushTake {
            recipient,
            limit,
            hold,
            reply,
        })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Records how a push went.
    ///
    /// # Errors
    /// [`EngineError::UnknownLease`] when the hold expired first (the envelope is back in the
    /// queue and will be pushed again).
    pub async fn push_done(
        &self,
        recipient: EntityId,
        token: String,
        outcome: PushOutcome,
    ) -> Result<(), EngineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::PushDone {
            recipient,
            token,
            outcome,
            reply,
        })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Registers `requester` as waiting for the response to its request `request`, before the
    /// request is submitted (so that a fast answer cannot slip past). While registered, the
    /// response is delivered to the waiter instead of the inbox.
    #[must_use]
    pub fn waiter(&self, requester: &EntityId, request: Uuid) -> Waiter {
        let key = (requester.to_string(), request);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(key.clone(), tx);
        }
        Waiter {
            key,
            rx: Some(rx),
            waiters: self.waiters.clone(),
        }
    }

    /// The record of an envelope by id, if the caller may see it (its sender or a recipient).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn envelope(
        &self,
        id: &Uuid,
        caller: &EntityId,
    ) -> Result<Option<(EnvelopeRecord, Vec<Entry>)>, EngineError> {
        for (key, _) in self.store.scan(&keys::by_id_prefix(id), None, 64)? {
            let Some(seq) = keys::trailing_u64(&key) else {
                continue;
            };
            let Some(record) = self.record(seq)? else {
                continue;
            };
            let caller = caller.as_str();
            if record.sender == caller || record.recipients.iter().any(|r| r == caller) {
                let history = self.history(seq)?;
                return Ok(Some((record, history)));
            }
        }
        Ok(None)
    }

    /// The exact bytes received for envelope `id` (`None` once pruned) — from `sender`, if
    /// given, since ids are unique per sender only — if `caller` is its sender or a recipient
    /// (`None`: an auditor, who may see all).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn raw_envelope(
        &self,
        id: &Uuid,
        sender: Option<&str>,
        caller: Option<&EntityId>,
    ) -> Result<Option<RawEnvelope>, EngineError> {
        for (key, _) in self.store.scan(&keys::by_id_prefix(id), None, 64)? {
            let Some(seq) = keys::trailing_u64(&key) else {
                continue;
            };
            let Some(record) = self.record(seq)? else {
                continue;
            };
            if sender.is_some_and(|s| s != record.sender) {
                continue;
            }
            let allowed = caller.is_none_or(|c| {
                record.sender == c.as_str() || record.recipients.iter().any(|r| r == c.as_str())
            });
            if allowed {
                // `None`: pruned after the retention period.
                let raw = self.store.get(&keys::raw(seq))?;
                return Ok(Some((record, raw)));
            }
        }
        Ok(None)
    }

    fn record(&self, seq: u64) -> Result<Option<EnvelopeRecord>, EngineError> {
        let key = keys::envelope(seq);
        Ok(match self.store.get(&key)? {
            Some(v) => Some(serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&key, e))?),
            None => None,
        })
    }

    fn history(&self, seq: u64) -> Result<Vec<Entry>, EngineError> {
        let mut out = Vec::new();
        for (key, _) in self.store.scan(&keys::history_prefix(seq), None, 1024)? {
            let Some(index) = keys::trailing_u64(&key) else {
                continue;
            };
            if let Some(bytes) = self.store.get(&keys::journal(index))? {
                out.push(Entry::from_bytes(&bytes).map_err(|e| StoreError::corrupt(&key, e))?);
            }
        }
        Ok(out)
    }

    /// The latest signed checkpoint.
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, EngineError> {
        Ok(match self.store.last(b"k/")? {
            Some((k, v)) => {
                Some(serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&k, e))?)
            }
            None => None,
        })
    }

    /// How many envelopes wait in `recipient`'s inbox (bounded count, for metrics).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub fn queue_depth(&self, recipient: &str, cap: usize) -> Result<usize, EngineError> {
        Ok(self.store.count(&keys::queue_prefix(recipient), cap)?)
    }

    /// The store (for readiness checks).
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// A registered wait for a response; dropping it stops waiting.
#[derive(Debug)]
pub struct Waiter {
    key: (String, Uuid),
    rx: Option<oneshot::Receiver<Leased>>,
    waiters: Arc<Waiters>,
}

impl Waiter {
    /// Waits up to `wait` for the response.
    pub async fn wait(mut self, wait: Duration) -> Option<Leased> {
        let mut rx = self.rx.take()?;
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(r) => r.ok(),
            Err(_) => {
                let still_waiting = self
                    .waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&self.key))
                    .is_some();
                if still_waiting {
                    None
                } else {
                    // The engine took the waiter: the response comes right after its flush.
                    rx.await.ok()
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // If the engine took the waiter already, its send fails and it returns the response
        // to the requester's inbox: nothing is lost when a waiting client goes away.
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&self.key);
        }
    }
}

/// Writes within one group commit: a batch plus an overlay, so that later requests of the same
/// group see what earlier ones wrote.
struct Group<'a> {
    store: &'a dyn Store,
    nodes: &'a NodeCache,
    /// The Merkle nodes this group wrote: kept in memory once it is durable.
    new_nodes: Vec<(u32, u64, Hash)>,
    batch: Batch,
    /// For each key the group wrote or deleted, where its last write is in `batch` (the value
    /// is not copied: envelopes are kilobytes).
    overlay: HashMap<Vec<u8>, usize>,
    /// The inboxes (queue prefixes) this group put envelopes in, with the lowest sequence
    /// number put in each.
    arrivals: HashMap<Vec<u8>, u64>,
    /// Where this group's takes leave each inbox's head (see [`Writer::heads`]).
    head_moves: Vec<(Vec<u8>, u64)>,
    /// The journal's secondary index entries of this group's entries.
    postings: Postings,
}

impl<'a> Group<'a> {
    fn new(store: &'a dyn Store, nodes: &'a NodeCache) -> Self {
        Group {
            store,
            nodes,
            new_nodes: Vec::new(),
            batch: Batch::default(),
            overlay: HashMap::new(),
            arrivals: HashMap::new(),
            head_moves: Vec::new(),
            postings: Postings::default(),
        }
    }

    /// What the group last wrote under `key`: `Some(None)` for a deletion, `None` when the
    /// group has not touched it.
    fn written(&self, key: &[u8]) -> Option<Option<&Value>> {
        let at = *self.overlay.get(key)?;
        self.batch.ops.get(at).map(|(_, v)| v.as_ref())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.written(key) {
            Some(v) => Ok(v.map(|v| v.to_vec())),
            None => self.store.get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: impl Into<Value>) {
        if let (Some(inbox), Some(seq)) = (keys::queue_of(&key), keys::trailing_u64(&key)) {
            let lowest = self.arrivals.entry(inbox.to_vec()).or_insert(seq);
            *lowest = (*lowest).min(seq);
        }
        self.overlay.insert(key.clone(), self.batch.len());
        self.batch.put(key, value);
    }

    /// Writes a key that nothing reads back before the group is durable (journal entries,
    /// their indexes, histories): into the batch only, not the group's overlay.
    fn put_unread(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch.put(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key.clone(), self.batch.len());
        self.batch.delete(key);
    }

    fn is_deleted(&self, key: &[u8]) -> bool {
        matches!(self.written(key), Some(None))
    }

    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let key = keys::node(level, index);
        if let Some(v) = self.written(&key) {
            return v?.as_ref().try_into().ok();
        }
        self.nodes
            .get_or_read(level, index, || stored_node(self.store, level, index))
    }
}

/// The answer to a lease on its way. Dropped with the answer arrived but not taken, it hands
/// the leased envelopes back (the writer hands back those it could not deliver at all).
struct Claim {
    rx: oneshot::Receiver<Result<Vec<Leased>, EngineError>>,
    jobs: SyncSender<Job>,
    holder: EntityId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Ok(Ok(leased)) = self.rx.try_recv() else {
            return;
        };
        for l in leased {
            let (reply, _) = oneshot::channel();
            let settle = Job::Settle {
                caller: self.holder.clone(),
                token: l.lease,
                ack: false,
                reply,
            };
            if self.jobs.try_send(settle).is_err() {
                tracing::warn!(entity = %self.holder, "An unclaimed lease was not handed back; it runs out.");
            }
        }
    }
}

/// How the engine answers an acceptance, once its group is durable.
type AcceptReply = oneshot::Sender<Result<Admitted, EngineError>>;

/// An acceptance made durable. A new envelope's receipt (its inclusion proof read from the
/// store) is made by the requester's task, not by the engine thread, the hub's one serial
/// stage.
enum Admitted {
    /// Accepted now, as `entry` (with its bytes in the journal) under `checkpoint`.
    New(Box<(Entry, Vec<u8>)>, SharedCheckpoint, Option<Outbound>),
    /// Accepted before: the original receipt.
    Duplicate(Box<Receipt>, Option<Outbound>),
}

/// A reply to send once the group is durable.
enum Reply {
    Accepted(AcceptReply, Result<AcceptOutcome, EngineError>),
    /// What was leased, and to whom.
    Leased(
        oneshot::Sender<Result<Vec<Leased>, EngineError>>,
        Result<Vec<Leased>, EngineError>,
        EntityId,
    ),
    Settled(
        oneshot::Sender<Result<(), EngineError>>,
        Result<(), EngineError>,
    ),
    Pushed(
        oneshot::Sender<Result<Vec<Pushed>, EngineError>>,
        Result<Vec<Pushed>, EngineError>,
    ),
    /// Everything before is durable.
    Barrier(oneshot::Sender<()>),
    /// A response for a waiting request; if the request is gone, back to the inbox.
    Waiter(oneshot::Sender<Leased>, Leased, String, u64),
    Recorded(oneshot::Sender<Result<(), EngineError>>),
}

enum AcceptOutcome {
    New {
        /// The `accepted` entry and its bytes in the journal.
        entry: Box<(Entry, Vec<u8>)>,
        /// For the transport to publish (external queues).
        outbound: Option<Box<Outbound>>,
    },
    /// Accepted before as envelope `seq`: its receipt is rebuilt once the group is durable.
    Duplicate(u64),
}

struct Writer {
    store: Arc<dyn Store>,
    hub: CheckpointSigner,
    /// Signs the hub's own notices (delivery failures) as `hub:<name>`.
    notices: Signer,
    config: EngineConfig,
    state: State,
    last_checkpoint: Instant,
    last_sweep: Instant,
    waiters: Arc<Waiters>,
    /// Responses whose waiting request went away: back to the requester's inbox next group.
    requeue: Vec<(String, u64)>,
    /// Leases whose requester went away before the group was durable (a long poll its
    /// client gave up on): handed back next group rather than held until they run out.
    unclaimed: Vec<(EntityId, String)>,
    outbox: Arc<tokio::sync::Notify>,
    /// The group put envelopes in the outbox that no request will publish.
    outbox_dirty: bool,
    /// Woken for the inboxes a group put envelopes in.
    inboxes: Arc<Inboxes>,
    /// Where each time index's sweep starts next (see [`Writer::due`]).
    swept: [i64; 3],
    /// Per inbox (queue prefix), a sequence number below which it holds nothing: a take
    /// starts there instead of walking the keys of every envelope taken before (deleted,
    /// until the store compacts them). Known once the inbox was taken from; lowered by any
    /// envelope put back below it.
    heads: HashMap<Vec<u8>, u64>,
    /// Records of envelopes with many recipients (events fanned out to every subscriber)
    /// read lately: parsed once, not once per recipient's take and settle. Emptied when a
    /// group fails (its sequence numbers are given again).
    wide: BTreeMap<u64, Arc<EnvelopeRecord>>,
    /// Merkle nodes in memory (see [`NodeCache`]).
    nodes: Arc<NodeCache>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Job>) {
        loop {
            let first = match rx.recv_timeout(SWEEP_EVERY) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.store.flush() {
                        tracing::error!(error = %e, "Final flush failed.");
                    }
                    return;
                }
            };
            let mut jobs: Vec<Job> = first.into_iter().collect();
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let stop = jobs.iter().position(|j| matches!(j, Job::Stop(_)));
            let stop = stop.map(|i| jobs.remove(i));
            self.group(jobs);
            if let Some(Job::Stop(reply)) = stop {
                if let Err(e) = self.store.flush() {
                    tracing::error!(error = %e, "Final flush failed.");
                }
                let _ = reply.send(());
                return;
            }
        }
    }

    /// One group commit.
    fn group(&mut self, jobs: Vec<Job>) {
        let store = self.store.clone();
        let nodes = self.nodes.clone();
        let mut g = Group::new(store.as_ref(), &nodes);
        let before = self.state.clone();
        let mut replies = Vec::with_capacity(jobs.len());
        let now = OffsetDateTime::now_utc();
        let mut accepted_any = false;
        let started = Instant::now();
        let job_count = jobs.len();
        for (recipient, seq) in std::mem::take(&mut self.requeue) {
            self.enqueue(&mut g, &recipient, seq);
            g.put(
                keys::delivery(&recipient, seq),
                delivery("returned", 1, now),
            );
        }
        for (holder, token) in std::mem::take(&mut self.unclaimed) {
            if let Err(e) = self.settle(&mut g, &holder, &token, false, now) {
                tracing::warn!(entity = %holder, error = %e, "An unclaimed lease was not handed back; it runs out.");
            }
        }
        for job in jobs {
            match job {
                Job::Accept(sub, reply) => {
                    let r = self.accept(&mut g, sub, now, &mut replies);
                    accepted_any |= matches!(r, Ok(AcceptOutcome::New { .. }));
                    replies.push(Reply::Accepted(reply, r));
                }
                Job::Queried { actor, query } => {
                    let mut e = Entry::new(
                        0,
                        EventKind::Queried,
                        now,
                        hex::encode(snodo_envelopes::sha256(query.as_bytes())),
                    );
                    e.actor = Some(actor);
                    e.detail = Some(query);
                    if let Err(e) = self.journal(&mut g, e, None) {
                        tracing::error!(error = %e, "Query not journaled.");
                    }
                }
                Job::Refuse(refusal) => {
                    if let Err(e) = self.refuse(&mut g, refusal, now) {
                        tracing::error!(error = %e, "Refusal not journaled.");
                    }
                }
                Job::Lease {
                    recipient,
                    limit,
                    lease_for,
                    reply,
                } => {
                    // Nobody would receive what a gone requester leases.
                    if !reply.is_closed() {
                        let r = self.lease(&mut g, &recipient, limit, lease_for, now);
                        replies.push(Reply::Leased(reply, r, recipient));
                    }
                }
                Job::Settle {
                    caller,
                    token,
                    ack,
                    reply,
                } => {
                    let r = self.settle(&mut g, &caller, &token, ack, now);
                    replies.push(Reply::Settled(reply, r));
                }
                Job::PushTake {
                    recipient,
                    limit,
                    hold,
                    reply,
                } => {
                    let r = self.push_take(&mut g, &recipient, limit, hold, now);
                    replies.push(Reply::Pushed(reply, r));
                }
                Job::PushDone {
                    recipient,
                    token,
                    outcome,
                    reply,
                } => {
                    let r = self.push_done(&mut g, &recipient, &token, outcome, now);
                    replies.push(Reply::Settled(reply, r));
                }
                Job::Stop(reply) => {
                    let _ = reply.send(());
                }
                Job::Barrier(reply) => replies.push(Reply::Barrier(reply)),
                Job::Record(recording, reply) => {
                    match self.apply_recording(&mut g, recording, now) {
                        Ok(()) => replies.push(Reply::Recorded(reply)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
        let jobs_done = started.elapsed();
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            if let Err(e) = self.sweep(&mut g, now) {
                tracing::error!(error = %e, "Sweep failed.");
            }
        }
        let swept = started.elapsed();
        let arrivals = std::mem::take(&mut g.arrivals);
        let head_moves = std::mem::take(&mut g.head_moves);
        let new_nodes = std::mem::take(&mut g.new_nodes);
        let result = self.commit(g, accepted_any, now);
        let committed = started.elapsed();
        if committed >= SLOW_GROUP {
            tracing::debug!(
                jobs = job_count,
                jobs_ms = jobs_done.as_secs_f64() * 1e3,
                sweep_ms = (swept - jobs_done).as_secs_f64() * 1e3,
                commit_ms = (committed - swept).as_secs_f64() * 1e3,
                "A slow group commit."
            );
        }
        match result {
            Ok(checkpoint) => {
                self.nodes.extend(new_nodes);
                for (inbox, head) in head_moves {
                    let h = self.heads.entry(inbox).or_default();
                    *h = (*h).max(head);
                }
                for (inbox, seq) in &arrivals {
                    if let Some(h) = self.heads.get_mut(inbox) {
                        *h = (*h).min(*seq);
                    }
                }
                self.answer(replies, checkpoint.as_ref());
                self.inboxes.wake(arrivals.keys());
            }
            Err(e) => {
                tracing::error!(error = %e, "Group commit failed; nothing of it is acknowledged.");
                self.state = before;
                self.wide.clear();
                self.nodes.clear();
                self.fail(replies, &e);
            }
        }
    }

    /// Appends a journal entry: its bytes, its Merkle nodes, its place in the envelope's history.
    fn journal(
        &mut self,
        g: &mut Group<'_>,
        entry: Entry,
        seq: Option<u64>,
    ) -> Result<Entry, EngineError> {
        self.append(g, entry, seq, false).map(|(e, _)| e)
    }

    /// [`Writer::journal`], which also gives back the entry's bytes when `keep_bytes` (its
    /// receipt carries them: not serialized a second time).
    fn append(
        &mut self,
        g: &mut Group<'_>,
        mut entry: Entry,
        seq: Option<u64>,
        keep_bytes: bool,
    ) -> Result<(Entry, Option<Vec<u8>>), EngineError> {
        entry.index = self.state.journal_size;
        let bytes = entry
            .to_bytes()
            .map_err(|e| EngineError::Journal(e.to_string()))?;
        let leaf = merkle::leaf_hash(&bytes);
        let nodes = merkle::append(entry.index, leaf, |l, i| g.node(l, i))
            .map_err(|e| EngineError::Journal(e.to_string()))?;
        for (level, index, hash) in nodes {
            g.put(keys::node(level, index), hash.to_vec());
            g.new_nodes.push((level, index, hash));
        }
        let kept = keep_bytes.then(|| bytes.clone());
        g.put_unread(keys::journal(entry.index), bytes);
        g.postings.add(&entry);
        if let Some(seq) = seq {
            g.put_unread(keys::history(seq, entry.index), Vec::new());
        }
        self.state.journal_size += 1;
        Ok((entry, kept))
    }

    fn accept(
        &mut self,
        g: &mut Group<'_>,
        sub: Submission,
        now: OffsetDateTime,
        replies: &mut Vec<Reply>,
    ) -> Result<AcceptOutcome, EngineError> {
        let h = &sub.header;
        let idem = keys::idempotency(h.sender.as_str(), &h.id);
        if let Some(seq) = g.get(&idem)? {
            let seq = keys::trailing_u64(&seq)
                .ok_or_else(|| StoreError::corrupt(&idem, "not a sequence number"))?;
            let original = self.record(g, seq)?;
            let mut e = entry_for(
                EventKind::Received,
                h,
                &sub.digest,
                now,
                Some(h.sender.as_str()),
            );
            if original.digest != hex::encode(sub.digest) {
                e.kind = EventKind::Refused;
                e.code = Some("envelope-id-conflict".into());
                e.detail = Some(format!(
                    "the id was used for envelope {} with digest {}",
                    original.id, original.digest
                ));
                self.journal(g, e, None)?;
                return Err(EngineError::IdConflict(h.id));
            }
            e.detail = Some(format!(
                "again: a duplicate of the envelope accepted at index {}",
                original.accepted_index
            ));
            self.journal(g, e, Some(seq))?;
            return Ok(AcceptOutcome::Duplicate(seq));
        }
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        let (entry, entry_bytes) = self.append(
            g,
            entry_for(EventKind::Accepted, h, &sub.digest, now, None),
            Some(seq),
            true,
        )?;
        let record = EnvelopeRecord {
            seq,
            id: h.id,
            sender: h.sender.to_string(),
            recipient: h.recipient.to_string(),
            recipients: sub.recipients.iter().map(ToString::to_string).collect(),
            service: h.service.clone(),
            action: h.action.clone(),
            conversation: h.conversation.clone(),
            profile: h.profile,
            in_reply_to: h.in_reply_to,
            expires_at: h.expires_at.map(format_time),
            format: match sub.format {
                Format::Xml => "xml".into(),
                Format::Json => "json".into(),
            },
            digest: hex::encode(sub.digest),
            accepted_at: format_time(now),
            accepted_index: entry.index,
        };
        let record_json = serde_json::to_vec(&record).unwrap_or_default();
        g.put(keys::envelope(seq), record_json.clone());
        // A shared value: its clone copies no byte (envelopes are kilobytes, and this is the
        // hub's one serial stage).
        g.put(keys::raw(seq), sub.raw.clone());
        g.put(idem, seq.to_be_bytes().to_vec());
        g.put(keys::by_id(&h.id, seq), Vec::new());
        if let Some(exp) = h.expires_at
            && !self.config.external_queues
        {
            // With external queues, RabbitMQ expires queued envelopes (per-message TTL).
            g.put(keys::expiry(unix_ms(exp), seq), Vec::new());
        }
        let mut direct = Vec::new();
        for r in &sub.recipients {
            // A response somebody is waiting for goes to the waiter, not the inbox.
            let waiter = match (h.profile, h.in_reply_to) {
                (Profile::Response, Some(req)) => self
                    .waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&(r.to_string(), req))),
                _ => None,
            };
            match waiter {
                Some(tx) => {
                    let leased = Leased {
                        lease: String::new(),
                        lease_expires_at: String::new(),
                        envelope_id: h.id,
                        sender: h.sender.to_string(),
                        media_type: sub.format.media_type(),
                        envelope: String::from_utf8_lossy(&sub.raw).into_owned(),
                    };
                    let mut e =
                        entry_for(EventKind::Delivered, h, &sub.digest, now, Some(r.as_str()));
                    e.detail = Some(DELIVERED_TO_WAITER.into());
                    self.journal(g, e, Some(seq))?;
                    g.put(
                        keys::delivery(r.as_str(), seq),
                        delivery("delivered", 1, now),
                    );
                    replies.push(Reply::Waiter(tx, leased, r.to_string(), seq));
                }
                None => direct.push(r.to_string()),
            }
        }
        let outbound = if !self.config.external_queues {
            for r in &direct {
                g.put(keys::queue(r, seq), Vec::new());
            }
            None
        } else if direct.is_empty() {
            None
        } else {
            let route = if h.recipient == Recipient::Broadcast {
                Route::Event
            } else {
                Route::Direct(direct)
            };
            g.put(keys::outbox(seq), pending_bytes(&route, true));
            Some(Box::new(Outbound {
                record: record.clone(),
                record_json,
                raw: sub.raw.clone(),
                route,
                by_request: true,
            }))
        };
        if let (Profile::Response, Some(_)) = (h.profile, h.in_reply_to) {
            self.journal(
                g,
                entry_for(EventKind::Answered, h, &sub.digest, now, None),
                Some(seq),
            )?;
        }
        Ok(AcceptOutcome::New {
            entry: Box::new((entry, entry_bytes.unwrap_or_default())),
            outbound,
        })
    }

    fn refuse(
        &mut self,
        g: &mut Group<'_>,
        r: RefusalRecord,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let entry = Entry {
            index: 0,
            kind: EventKind::Refused,
            at: now,
            envelope_id: r.envelope_id,
            sender: r.sender,
            recipient: r.recipient,
            service: r.service,
            action: r.action,
            conversation: r.conversation,
            digest: hex::encode(r.digest),
            code: Some(r.code),
            detail: Some(r.detail),
            actor: r.caller,
        };
        self.journal(g, entry, None).map(|_| ())
    }

    /// Takes up to `limit` envelopes from `recipient`'s queue under fresh leases held until
    /// `hold_until`; envelopes found expired are expired instead (never delivered).
    fn take(
        &mut self,
        g: &mut Group<'_>,
        recipient: &EntityId,
        limit: usize,
        hold_until: OffsetDateTime,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Taken>, EngineError> {
        let mut out = Vec::new();
        let prefix = keys::queue_prefix(recipient.as_str());
        let head = self.heads.get(&prefix).copied().unwrap_or(0);
        let mut after = head
            .checked_sub(1)
            .map(|h| keys::queue(recipient.as_str(), h));
        // The last envelope this take passed: all before it are taken.
        let mut passed = None;
        while out.len() < limit {
            let page = self.store.scan(&prefix, after.as_deref(), limit.max(16))?;
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
            for (qkey, _) in page {
                if out.len() >= limit {
                    break;
                }
                let Some(seq) = keys::trailing_u64(&qkey) else {
                    continue;
                };
                passed = Some(seq);
                if g.is_deleted(&qkey) {
                    continue;
                }
                let rec = self.record(g, seq)?;
                g.delete(qkey);
                if rec
                    .expires_at
                    .as_deref()
                    .and_then(|t| snodo_envelopes::header::parse_time("expires_at", t).ok())
                    .is_some_and(|t| t <= now)
                {
                    self.expire_for(g, &rec, recipient.as_str(), now)?;
                    continue;
                }
                let raw = g
                    .get(&keys::raw(seq))?
                    .ok_or_else(|| StoreError::corrupt(&keys::raw(seq), "missing"))?;
                let token = new_token();
                let lease = Lease {
                    recipient: recipient.to_string(),
                    seq,
                    expires_ms: unix_ms(hold_until),
                };
                g.put(
                    keys::lease(&token),
                    serde_json::to_vec(&lease).unwrap_or_default(),
                );
                g.put(keys::lease_expiry(lease.expires_ms, &token), Vec::new());
                let attempts = self.attempts(g, recipient.as_str(), seq)? + 1;
                g.put(
                    keys::delivery(recipient.as_str(), seq),
                    delivery(state, attempts, now),
                );
                out.push((token, rec, raw, attempts));
            }
        }
        if let Some(seq) = passed {
            g.head_moves.push((prefix, seq + 1));
        }
        Ok(out)
    }

    /// The record of envelope `seq` (records are never rewritten: one with many recipients
    /// is kept parsed for the next of them).
    fn record(&mut self, g: &Group<'_>, seq: u64) -> Result<Arc<EnvelopeRecord>, EngineError> {
        if let Some(rec) = self.wide.get(&seq) {
            return Ok(rec.clone());
        }
        let rkey = keys::envelope(seq);
        let rec = g
            .get(&rkey)?
            .ok_or_else(|| StoreError::corrupt(&rkey, "envelope record missing"))?;
        let rec: Arc<EnvelopeRecord> =
            Arc::new(serde_json::from_slice(&rec).map_err(|e| StoreError::corrupt(&rkey, e))?);
        if rec.recipients.len() >= WIDE_RECIPIENTS {
            self.wide.insert(seq, rec.clone());
            while self.wide.len() > WIDE_KEPT {
                self.wide.pop_first();
            }
        }
        Ok(rec)
    }

    fn lease(
        &mut self,
        g: &mut Group<'_>,
        recipient: &EntityId,
        limit: usize,
        lease_for: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Leased>, EngineError> {
        let expires = now + lease_for;
        let mut out = Vec::new();
        for (token, rec, raw, _) in self.take(g, recipient, limit, expires, "leased", now)? {
            let mut e = record_entry(EventKind::Delivered, &rec, now, Some(recipient.as_str()));
            e.detail = Some(format!("leased until {}", format_time(expires)));
            self.journal(g, e, Some(rec.seq))?;
            out.push(Leased {
                lease: token,
                lease_expires_at: format_time(expires),
                envelope_id: rec.id,
                sender: rec.sender.clone(),
                media_type: rec.media_type(),
                envelope: String::from_utf8_lossy(&raw).into_owned(),
            });
        }
        Ok(out)
    }

    fn push_take(
        &mut self,
        g: &mut Group<'_>,
        recipient: &EntityId,
        limit: usize,
        hold: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Pushed>, EngineError> {
        let taken = self.take(g, recipient, limit, now + hold, "pushing", now)?;
        Ok(taken
            .into_iter()
            .map(|(token, rec, raw, attempts)| Pushed {
                lease: token,
                envelope_id: rec.id,
                media_type: rec.media_type(),
                accepted_ms: snodo_envelopes::header::parse_time("accepted_at", &rec.accepted_at)
                    .map(unix_ms)
                    .unwrap_or_default(),
                service: rec.service.clone(),
                envelope: raw,
                attempts,
            })
            .collect())
    }

    fn push_done(
        &mut self,
        g: &mut Group<'_>,
        recipient: &EntityId,
        token: &str,
        outcome: PushOutcome,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let (lease, rec, attempts) = self.end_lease(g, recipient, token)?;
        let dkey = keys::delivery(recipient.as_str(), lease.seq);
        match outcome {
            PushOutcome::Delivered { status } => {
                g.put(dkey, delivery("delivered", attempts, now));
                let mut e = record_entry(EventKind::Delivered, &rec, now, Some(recipient.as_str()));
                e.detail = Some(format!(
                    "pushed; the endpoint answered {status} (attempt {attempts})"
                ));
                self.journal(g, e, Some(lease.seq))?;
            }
            PushOutcome::Retry { after, .. } => {
                g.put(dkey, delivery("retrying", attempts, now));
                g.put(
                    keys::retry(unix_ms(now + after), recipient.as_str(), lease.seq),
                    Vec::new(),
                );
            }
            PushOutcome::DeadLetter { reason } => {
                g.put(dkey, delivery("dead_lettered", attempts, now));
                g.put(keys::dead_letter(recipient.as_str(), lease.seq), Vec::new());
                let mut e =
                    record_entry(EventKind::DeadLettered, &rec, now, Some(recipient.as_str()));
                e.detail = Some(format!("after {attempts} attempts: {reason}"));
                self.journal(g, e, Some(lease.seq))?;
                let detail =
                    format!("not delivered to {recipient} after {attempts} attempts: {reason}");
                self.notice(g, &rec, "dead-lettered", &detail, now)?;
            }
        }
        Ok(())
    }

    /// `rec` expired before it reached `recipient`: journal it, tell the sender.
    fn expire_for(
        &mut self,
        g: &mut Group<'_>,
        rec: &EnvelopeRecord,
        recipient: &str,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        g.put(
            keys::delivery(recipient, rec.seq),
            delivery("expired", 0, now),
        );
        self.journal(
            g,
            record_entry(EventKind::Expired, rec, now, Some(recipient)),
            Some(rec.seq),
        )?;
        let detail = format!(
            "expired at {} before {recipient} took it",
            rec.expires_at.as_deref().unwrap_or("?")
        );
        self.notice(g, rec, "expired", &detail, now)
    }

    /// Sends `rec`'s sender a failure notice signed by the hub: an envelope from
    /// `hub:<name>` answering the failed one, in its conversation.
    fn notice(
        &mut self,
        g: &mut Group<'_>,
        rec: &EnvelopeRecord,
        reason: &str,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let Ok(sender) = rec.sender.parse::<EntityId>() else {
            return Ok(());
        };
        if sender == self.config.hub_entity {
            return Ok(()); // never a notice about a notice
        }
        let body = serde_json::json!({
            "envelope_id": rec.id,
            "recipient": rec.recipient,
            "service": rec.service,
            "action": rec.action,
            "reason": reason,
            "detail": detail,
            "at": format_time(now),
        });
        let envelope = Envelope::builder(
            self.config.hub_entity.clone(),
            Recipient::Entity(sender.clone()),
            NOTICE_SERVICE,
            NOTICE_ACTION,
        )
        .conversation(rec.conversation.clone())
        .in_reply_to(rec.id)
        .profile(Profile::Oneway)
        .json(body)
        .build()
        .map_err(|e| EngineError::Journal(format!("notice: {e}")))?;
        let raw = snodo_envelopes::sign(&envelope, &self.notices, Format::Json)
            .map_err(|e| EngineError::Journal(format!("notice: {e}")))?;
        let digest = snodo_envelopes::sha256(&raw);
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        let h = &envelope.header;
        let entry = self.journal(
            g,
            entry_for(EventKind::Accepted, h, &digest, now, None),
            Some(seq),
        )?;
        let record = EnvelopeRecord {
            seq,
            id: h.id,
            sender: h.sender.to_string(),
            recipient: sender.to_string(),
            recipients: vec![sender.to_string()],
            service: h.service.clone(),
            action: h.action.clone(),
            conversation: h.conversation.clone(),
            profile: h.profile,
            in_reply_to: h.in_reply_to,
            expires_at: None,
            format: "json".into(),
            digest: hex::encode(digest),
            accepted_at: format_time(now),
            accepted_index: entry.index,
        };
        g.put(
            keys::envelope(seq),
            serde_json::to_vec(&record).unwrap_or_default(),
        );
        g.put(keys::raw(seq), raw);
        g.put(
            keys::idempotency(h.sender.as_str(), &h.id),
            seq.to_be_bytes().to_vec(),
        );
        g.put(keys::by_id(&h.id, seq), Vec::new());
        self.enqueue(g, sender.as_str(), seq);
        Ok(())
    }

    /// Ends the lease `token` held by `holder`: the lease, its envelope's record, and how many
    /// attempts the delivery has had.
    fn end_lease(
        &mut self,
        g: &mut Group<'_>,
        holder: &EntityId,
        token: &str,
    ) -> Result<(Lease, Arc<EnvelopeRecord>, u32), EngineError> {
        let lkey = keys::lease(token);
        let lease: Lease = match g.get(&lkey)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&lkey, e))?,
            None => return Err(EngineError::UnknownLease(token.to_owned())),
        };
        if lease.recipient != holder.as_str() {
            return Err(EngineError::UnknownLease(token.to_owned()));
        }
        g.delete(lkey);
        g.delete(keys::lease_expiry(lease.expires_ms, token));
        let rec = self.record(g, lease.seq)?;
        let attempts = self.attempts(g, holder.as_str(), lease.seq)?.max(1);
        Ok((lease, rec, attempts))
    }

    /// How many times the envelope `seq` was handed to `recipient` so far.
    fn attempts(&self, g: &Group<'_>, recipient: &str, seq: u64) -> Result<u32, EngineError> {
        let dkey = keys::delivery(recipient, seq);
        Ok(match g.get(&dkey)? {
            Some(v) => {
                serde_json::from_slice::<DeliveryRecord>(&v)
                    .map_err(|e| StoreError::corrupt(&dkey, e))?
                    .attempts
            }
            None => 0,
        })
    }

    fn settle(
        &mut self,
        g: &mut Group<'_>,
        caller: &EntityId,
        token: &str,
        ack: bool,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let (lease, rec, attempts) = self.end_lease(g, caller, token)?;
        let dkey = keys::delivery(caller.as_str(), lease.seq);
        if ack {
            g.put(dkey, delivery("acknowledged", attempts, now));
            self.journal(
                g,
                record_entry(EventKind::Acknowledged, &rec, now, Some(caller.as_str())),
                Some(lease.seq),
            )?;
        } else {
            g.put(dkey, delivery("returned", attempts, now));
            g.put(keys::queue(caller.as_str(), lease.seq), Vec::new());
        }
        Ok(())
    }

    /// The keys of time index `space` (`x/`, `w/`, `t/`: a big-endian time in ms first) due
    /// at `now_ms`, a bounded number, from where the last sweep of it ended (`cursor`): keys
    /// are never written with a time before the sweep that precedes them, and a range
    /// bounded on both sides walks none of the deleted keys before or after it.
    fn due(
        &mut self,
        space: &[u8],
        cursor: usize,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let from_ms = self.swept[cursor].min(now_ms);
        let from = if from_ms == i64::MIN {
            space.to_vec()
        } else {
            [space, &from_ms.to_be_bytes()].concat()
        };
        let to = [space, &now_ms.saturating_add(1).to_be_bytes()].concat();
        let found = self.store.scan_range(&from, &to, SWEEP_BATCH)?;
        self.swept[cursor] = match found.last() {
            Some((key, _)) if found.len() == SWEEP_BATCH => key
                .get(2..10)
                .and_then(|b| b.try_into().ok())
                .map_or(from_ms, i64::from_be_bytes),
            _ => now_ms,
        };
        Ok(found.into_iter().map(|(k, _)| k).collect())
    }

    /// Returns expired leases to their inbox and expires envelopes past their `expires_at`.
    fn sweep(&mut self, g: &mut Group<'_>, now: OffsetDateTime) -> Result<(), EngineError> {
        let now_ms = unix_ms(now);
        for key in self.due(b"x/", 0, now_ms)? {
            let token = String::from_utf8_lossy(&key[11..]).into_owned();
            g.delete(key);
            let lkey = keys::lease(&token);
            if let Some(v) = g.get(&lkey)? {
                let lease: Lease =
                    serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&lkey, e))?;
                g.delete(lkey);
                g.put(keys::queue(&lease.recipient, lease.seq), Vec::new());
                let attempts = self.attempts(g, &lease.recipient, lease.seq)?;
                g.put(
                    keys::delivery(&lease.recipient, lease.seq),
                    delivery("returned", attempts, now),
                );
            }
        }
        for key in self.due(b"w/", 1, now_ms)? {
            g.delete(key.clone());
            let (Some(seq), Some(recipient)) = (
                keys::trailing_u64(&key),
                key.get(11..key.len().saturating_sub(9)),
            ) else {
                continue;
            };
            let recipient = String::from_utf8_lossy(recipient).into_owned();
            g.put(keys::queue(&recipient, seq), Vec::new());
        }
        for key in self.due(b"t/", 2, now_ms)? {
            g.delete(key.clone());
            let Some(seq) = keys::trailing_u64(&key) else {
                continue;
            };
            let rec = self.record(g, seq)?;
            for r in &rec.recipients {
                let qkey = keys::queue(r, seq);
                if g.get(&qkey)?.is_some() {
                    g.delete(qkey);
                    self.expire_for(g, &rec, r, now)?;
                }
            }
        }
        if let Some(retention) = self.config.retention {
            self.prune(g, now - retention, now)?;
        }
        Ok(())
    }

    /// Prunes the exact bytes of envelopes accepted before `cutoff`, in acceptance order, a
    /// bounded number per sweep; envelopes still waiting for delivery keep theirs.
    fn prune(
        &mut self,
        g: &mut Group<'_>,
        cutoff: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let after = self.state.prune_from.checked_sub(1).map(keys::envelope);
        // Most sweeps find the oldest record not yet due: it is read alone before a page.
        let oldest = self.store.scan(b"m/", after.as_deref(), 1)?;
        match oldest.first() {
            Some((key, value)) if accepted_before(key, value, cutoff)?.is_some() => {}
            _ => return Ok(()),
        }
        for (key, value) in self.store.scan(b"m/", after.as_deref(), 512)? {
            let Some(rec) = accepted_before(&key, &value, cutoff)? else {
                break;
            };
            self.state.prune_from = rec.seq + 1;
            let mut pending = false;
            for r in &rec.recipients {
                pending |= g.get(&keys::queue(r, rec.seq))?.is_some();
                if let Some(d) = g.get(&keys::delivery(r, rec.seq))? {
                    let d: DeliveryRecord =
                        serde_json::from_slice(&d).map_err(|e| StoreError::corrupt(&key, e))?;
                    pending |= matches!(d.state.as_str(), "leased" | "pushing" | "retrying");
                }
            }
            if pending || g.get(&keys::raw(rec.seq))?.is_none() {
                continue;
            }
            g.delete(keys::raw(rec.seq));
            let mut e = record_entry(EventKind::Pruned, &rec, now, None);
            e.detail = Some(format!(
                "body pruned after the retention period; its digest was {}",
                rec.digest
            ));
            self.journal(g, e, Some(rec.seq))?;
        }
        Ok(())
    }

    /// Signs a checkpoint when due, applies the group and flushes it.
    fn commit(
        &mut self,
        mut g: Group<'_>,
        accepted_any: bool,
        now: OffsetDateTime,
    ) -> Result<Option<SharedCheckpoint>, EngineError> {
        let unsigned = self.state.journal_size - self.state.checkpoint_size;
        let due = unsigned > 0
            && (accepted_any
                || unsigned >= self.config.checkpoint_max_entries
                || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval);
        let checkpoint = if due {
            let size = self.state.journal_size;
            let root = merkle::root(size, |l, i| g.node(l, i))
                .map_err(|e| EngineError::Journal(e.to_string()))?;
            let signed = self
                .hub
                .sign(self.hub.checkpoint(size, root, now))
                .map_err(|e| EngineError::Journal(e.to_string()))?;
            // Its JSON, made once: the stored record and every receipt of the group.
            let signed = SharedCheckpoint::with_json(signed)
                .map_err(|e| EngineError::Journal(e.to_string()))?;
            g.put(
                keys::checkpoint(size),
                serde_json::to_vec(&signed).unwrap_or_default(),
            );
            self.state.checkpoint_size = size;
            self.last_checkpoint = Instant::now();
            Some(signed)
        } else {
            None
        };
        for (key, value) in std::mem::take(&mut g.postings).into_writes() {
            g.put_unread(key, value);
        }
        if g.batch.is_empty() {
            return Ok(checkpoint);
        }
        g.put(
            keys::STATE.to_vec(),
            serde_json::to_vec(&self.state).unwrap_or_default(),
        );
        let t = Instant::now();
        self.store.apply(g.batch)?;
        let applied = t.elapsed();
        self.store.flush()?;
        if t.elapsed() >= SLOW_GROUP {
            tracing::debug!(
                apply_ms = applied.as_secs_f64() * 1e3,
                flush_ms = (t.elapsed() - applied).as_secs_f64() * 1e3,
                "A slow store write."
            );
        }
        Ok(checkpoint)
    }

    fn answer(&mut self, replies: Vec<Reply>, checkpoint: Option<&SharedCheckpoint>) {
        let mut requeue = Vec::new();
        for reply in replies {
            match reply {
                Reply::Accepted(tx, Ok(AcceptOutcome::New { entry, outbound })) => {
                    let admitted = checkpoint
                        .ok_or_else(|| EngineError::Journal("no checkpoint was signed".into()))
                        .map(|cp| Admitted::New(entry, cp.clone(), outbound.map(|o| *o)));
                    let _ = tx.send(admitted);
                }
                Reply::Accepted(tx, Ok(AcceptOutcome::Duplicate(seq))) => {
                    let r = self.original_receipt(seq).and_then(|r| {
                        Ok(Admitted::Duplicate(
                            Box::new(r),
                            self.pending_outbound(seq)?,
                        ))
                    });
                    let _ = tx.send(r);
                }
                Reply::Recorded(tx) => {
                    let _ = tx.send(Ok(()));
                }
                Reply::Accepted(tx, Err(e)) => {
                    let _ = tx.send(Err(e));
                }
                Reply::Leased(tx, r, holder) => {
                    if let Err(Ok(leased)) = tx.send(r) {
                        self.unclaimed
                            .extend(leased.into_iter().map(|l| (holder.clone(), l.lease)));
                    }
                }
                Reply::Settled(tx, r) => {
                    let _ = tx.send(r);
                }
                Reply::Pushed(tx, r) => {
                    let _ = tx.send(r);
                }
                Reply::Barrier(tx) => {
                    let _ = tx.send(());
                }
                Reply::Waiter(tx, leased, recipient, seq) => {
                    if tx.send(leased).is_err() {
                        requeue.push((recipient, seq));
                    }
                }
            }
        }
        self.requeue.extend(requeue);
        if std::mem::take(&mut self.outbox_dirty) {
            self.outbox.notify_one();
        }
    }

    /// Puts envelope `seq` in `recipient`'s queue: the store's, or the outbox for the
    /// transport to publish.
    fn enqueue(&mut self, g: &mut Group<'_>, recipient: &str, seq: u64) {
        if self.config.external_queues {
            let route = Route::Direct(vec![recipient.to_owned()]);
            g.put(keys::outbox(seq), pending_bytes(&route, false));
            self.outbox_dirty = true;
        } else {
            g.put(keys::queue(recipient, seq), Vec::new());
        }
    }

    /// The publication of `seq` still owed to the transport, if any.
    fn pending_outbound(&self, seq: u64) -> Result<Option<Outbound>, EngineError> {
        if !self.config.external_queues {
            return Ok(None);
        }
        let store = self.store.as_ref();
        match store.get(&keys::outbox(seq))? {
            Some(value) => Ok(Some(load_outbound(store, seq, &value)?)),
            None => Ok(None),
        }
    }

    /// Applies what the transport reported.
    fn apply_recording(
        &mut self,
        g: &mut Group<'_>,
        recording: Recording,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        for seq in recording.published {
            g.delete(keys::outbox(seq));
        }
        for (recipient, sender, id, digest) in recording.markers {
            g.put(
                keys::delivered(&recipient, &sender, &id),
                digest.into_bytes(),
            );
        }
        for ev in recording.events {
            let mut e = record_entry(ev.kind, &ev.record, now, ev.actor.as_deref());
            e.detail = ev.detail;
            let seq = ev.local.then_some(ev.record.seq);
            self.journal(g, e, seq)?;
            if let (true, Some(actor)) = (ev.local, &ev.actor) {
                let state = match ev.kind {
                    EventKind::Delivered => "delivered",
                    EventKind::Acknowledged => "acknowledged",
                    EventKind::Expired => "expired",
                    EventKind::DeadLettered => "dead_lettered",
                    _ => continue,
                };
                g.put(
                    keys::delivery(actor, ev.record.seq),
                    delivery(state, 1, now),
                );
            }
        }
        for (record, reason, detail) in recording.notices {
            self.notice(g, &record, &reason, &detail, now)?;
        }
        Ok(())
    }

    /// The receipt first returned for envelope `seq`, rebuilt: its `accepted` entry under the
    /// first checkpoint that covers it (signed in the same group commit), with the same proof.
    fn original_receipt(&self, seq: u64) -> Result<Receipt, EngineError> {
        let store = self.store.as_ref();
        let rkey = keys::envelope(seq);
        let rec: EnvelopeRecord = match store.get(&rkey)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&rkey, e))?,
            None => return Err(StoreError::corrupt(&rkey, "accepted envelope missing").into()),
        };
        let jkey = keys::journal(rec.accepted_index);
        let bytes = store
            .get(&jkey)?
            .ok_or_else(|| StoreError::corrupt(&jkey, "journal entry missing"))?;
        let entry = Entry::from_bytes(&bytes).map_err(|e| StoreError::corrupt(&jkey, e))?;
        let (ckey, cp) = store
            .scan(b"k/", Some(&keys::checkpoint(rec.accepted_index)), 1)?
            .pop()
            .ok_or_else(|| StoreError::corrupt(&jkey, "no checkpoint covers the entry"))?;
        let cp: SharedCheckpoint =
            serde_json::from_slice(&cp).map_err(|e| StoreError::corrupt(&ckey, e))?;
        receipt(store, &self.nodes, &entry, bytes, &cp)
    }

    fn fail(&self, replies: Vec<Reply>, e: &EngineError) {
        let msg = e.to_string();
        for reply in replies {
            match reply {
                Reply::Accepted(tx, _) => {
                    let _ = tx.send(Err(EngineError::Journal(msg.clone())));
                }
                Reply::Leased(tx, ..) => {
                    let _ = tx.send(Err(EngineError::Journal(msg.clone())));
                }
                Reply::Settled(tx, _) => {
                    let _ = tx.send(Err(EngineError::Journal(msg.clone())));
                }
                Reply::Pushed(tx, _) => {
                    let _ = tx.send(Err(EngineError::Journal(msg.clone())));
                }
                Reply::Recorded(tx) => {
                    let _ = tx.send(Err(EngineError::Journal(msg.clone())));
                }
                Reply::Barrier(_) | Reply::Waiter(..) => {}
            }
        }
    }
}

fn entry_for(
    kind: EventKind,
    h: &Header,
    digest: &[u8; 32],
    now: OffsetDateTime,
    actor: Option<&str>,
) -> Entry {
    Entry {
        index: 0,
        kind,
        at: now,
        envelope_id: Some(h.id),
        sender: Some(h.sender.to_string()),
        recipient: Some(h.recipient.to_string()),
        service: Some(h.service.clone()),
        action: Some(h.action.clone()),
        conversation: Some(h.conversation.clone()),
        digest: hex::encode(digest),
        code: None,
        detail: None,
        actor: actor.map(str::to_owned),
    }
}

fn record_entry(
    kind: EventKind,
    r: &EnvelopeRecord,
    now: OffsetDateTime,
    actor: Option<&str>,
) -> Entry {
    Entry {
        index: 0,
        kind,
        at: now,
        envelope_id: Some(r.id),
        sender: Some(r.sender.clone()),
        recipient: Some(r.recipient.clone()),
        service: Some(r.service.clone()),
        action: Some(r.action.clone()),
        conversation: Some(r.conversation.clone()),
        digest: r.digest.clone(),
        code: None,
        detail: None,
        actor: actor.map(str::to_owned),
    }
}

/// The receipt of `entry`, whose bytes in the journal are `bytes`, under `checkpoint`: its
/// inclusion proof from the Merkle nodes in `store` (nodes of complete subtrees are never
/// rewritten, so any thread may read them).
fn receipt(
    store: &dyn Store,
    nodes: &NodeCache,
    entry: &Entry,
    bytes: Vec<u8>,
    checkpoint: &SharedCheckpoint,
) -> Result<Receipt, EngineError> {
    let node = |l: u32, i: u64| nodes.get_or_read(l, i, || stored_node(store, l, i));
    let proof = merkle::inclusion_proof(entry.index, checkpoint.checkpoint.size, node)
        .map_err(|e| EngineError::Journal(e.to_string()))?;
    Receipt::with_bytes(entry, bytes, proof, checkpoint.clone())
        .map_err(|e| EngineError::Journal(e.to_string()))
}

fn delivery(state: &str, attempts: u32, now: OffsetDateTime) -> Vec<u8> {
    serde_json::to_vec(&DeliveryRecord {
        state: state.into(),
        attempts,
        at: format_time(now),
    })
    .unwrap_or_default()
}

/// The envelope record stored under `key`, when it was accepted before `cutoff`.
fn accepted_before(
    key: &[u8],
    value: &[u8],
    cutoff: OffsetDateTime,
) -> Result<Option<EnvelopeRecord>, EngineError> {
    let rec: EnvelopeRecord =
        serde_json::from_slice(value).map_err(|e| StoreError::corrupt(key, e))?;
    let accepted = snodo_envelopes::header::parse_time("accepted_at", &rec.accepted_at)
        .map_err(|e| StoreError::corrupt(key, e))?;
    Ok((accepted < cutoff).then_some(rec))
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A fresh lease token: 128 random bits, hex.
pub(crate) fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
