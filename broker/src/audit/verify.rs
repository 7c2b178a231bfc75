//! What the bundle and data-directory verifiers share: the trust material, the checks on every
//! entry, envelope, checkpoint and proof, and a pool of threads for the signatures. A failure
//! is a [`Failure`] (in `failure`), what was verified a [`Report`] (in `report`).
//!
//! A verification is a stream of records fed to a [`Checker`] in order. The checker does the
//! sequential work itself — decoding each entry from its canonical bytes, hashing it, growing
//! the Merkle tree's right edge (its *frontier*: one hash per level, so a log of any size needs
//! a few kilobytes), comparing roots with checkpoints and checking proofs — and hands the
//! signature checks (every envelope, every checkpoint) to worker threads. Every failure carries
//! its position in the stream; the one reported is the earliest, whichever thread found it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::x509::{X509, X509Crl};
use snodo_envelopes::header::format_time;
use snodo_envelopes::{Format, Limits, TrustStore, Verifier};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuditError;
pub use super::failure::{Failure, Fault, Place};
pub use super::report::{
    CaReport, CheckpointSummary, CheckpointsReport, EntriesReport, EnvelopesReport, HubCertReport,
    Mode, Report, RevokedLater, TrustReport,
};
use crate::engine::EnvelopeRecord;
use crate::journal::checkpoint::SignedCheckpoint;
use crate::journal::entry::{Entry, EventKind};
use crate::journal::merkle::{
    self, Hash, empty_root, node_hash, verify_consistency, verify_inclusion,
};

/// The bounds within which envelopes are parsed when verified. The hub accepted them within
/// its own configured limits; an auditor must not refuse what the hub was allowed to accept,
/// so these are generous, but still bounded (a bundle may be hostile).
pub const ENVELOPE_LIMITS: Limits = Limits {
    max_bytes: 256 * 1024 * 1024,
    // serde_json's own recursion limit: no JSON envelope can be deeper.
    max_depth: 128,
};

/// How many signature checks travel to a worker together.
const BATCH_JOBS: usize = 64;
/// How many bytes of envelopes travel to a worker together, at most (roughly).
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How many "signed by a certificate revoked later" notes the report lists one by one.
const NOTES_LISTED: usize = 20;

/// The federation's CA (and revocation list) that a verification trusts, and how it was
/// chosen.
pub struct Trust {
    /// Verifies envelopes; its trust store (CA only, no revocation list: revocation is judged
    /// here, against the time of use) also verifies the hub's checkpoint certificates.
    verifier: Verifier,
    /// Revoked serials (upper-case hex, as [`snodo_envelopes::VerifiedCert::serial`]) and
    /// when each was revoked.
    revoked: HashMap<String, OffsetDateTime>,
    /// The CA certificates, DER, to compare with a bundle's.
    ca_der: Vec<Vec<u8>>,
    /// For the report: subject and SHA-256 fingerprint of each CA certificate.
    ca: Vec<CaReport>,
    /// True when the auditor chose the CA (`--ca`); false when it came from the bundle.
    pinned: bool,
    /// For the report: how many certificates the revocation list names, if one was given.
    crl_entries: Option<usize>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("ca", &self.ca)
            .field("pinned", &self.pinned)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl Trust {
    /// Trusts `cas`, with the certificates on `crl` revoked from the time the list says.
    /// `pinned` says whether the auditor chose the CA (rather than taking a bundle's).
    ///
    /// # Errors
    /// [`AuditError::Trust`] when no CA is given, or the revocation list is not signed by one.
    pub fn new(cas: Vec<X509>, crl: Option<&X509Crl>, pinned: bool) -> Result<Self, AuditError> {
        let trust = |e: &dyn fmt::Display| AuditError::Trust(e.to_string());
        if cas.is_empty() {
            return Err(AuditError::Trust("no CA certificate".into()));
        }
        let mut revoked = HashMap::new();
        let mut crl_entries = None;
        if let Some(crl) = crl {
            let signed = cas.iter().any(|ca| {
                ca.public_key()
                    .ok()
                    .is_some_and(|k| crl.verify(&k).unwrap_or(false))
            });
            if !signed {
                return Err(AuditError::Trust(
                    "the revocation list is not signed by the federation CA".into(),
                ));
            }
            for r in crl.get_revoked().into_iter().flatten() {
                let serial = r
                    .serial_number()
                    .to_bn()
                    .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
                    .map_err(|e| trust(&e))?;
                let at = asn1_to_time(r.revocation_date()).map_err(|e| trust(&e))?;
                revoked.insert(serial, at);
            }
            crl_entries = Some(revoked.len());
        }
        let mut ca = Vec::new();
        let mut ca_der = Vec::new();
        for c in &cas {
            ca.push(CaReport {
                subject: subject_of(c),
                sha256: fingerprint(c).map_err(|e| trust(&e))?,
            });
            ca_der.push(c.to_der().map_err(|e| trust(&e))?);
        }
        let store = TrustStore::new(cas, None).map_err(|e| trust(&e))?;
        Ok(Trust {
            verifier: Verifier::new(Arc::new(store), ENVELOPE_LIMITS),
            revoked,
            ca_der,
            ca,
            pinned,
            crl_entries,
        })
    }

    /// Loads the CA bundle at `ca` (PEM) and, if given, the revocation list at `crl` (PEM); the
    /// CA is pinned.
    ///
    /// # Errors
    /// [`AuditError::Io`] when a file is unreadable; [`AuditError::Trust`] when it holds no
    /// certificate, or the list is not the CA's.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<Self, AuditError> {
        let cas = load_pem_certs(ca)?;
        let crl = crl.map(load_pem_crl).transpose()?;
        Trust::new(cas, crl.as_ref(), true)
    }

    /// True when `cas` (DER) are exactly this trust's CA certificates, in any order.
    #[must_use]
    pub fn same_ca(&self, cas: &[Vec<u8>]) -> bool {
        let mut a = self.ca_der.clone();
        let mut b = cas.to_vec();
        a.sort();
        b.sort();
        a == b
    }

    /// The CA certificates' subjects and SHA-256 fingerprints.
    #[must_use]
    pub fn ca(&self) -> &[CaReport] {
        &self.ca
    }

    /// The trust store (CA only) that verifies certificates.
    pub(crate) fn store(&self) -> &TrustStore {
        self.verifier.trust()
    }

    /// When the certificate with this serial was revoked, if it is on the list.
    fn revoked_at(&self, serial: &str) -> Option<OffsetDateTime> {
        self.revoked.get(serial).copied()
    }

    fn report(&self) -> TrustReport {
        TrustReport {
            ca: self.ca.clone(),
            ca_pinned: self.pinned,
            crl_entries: self.crl_entries,
        }
    }
}

/// The PEM certificates in the file at `path`.
///
/// # Errors
/// [`AuditError::Io`] or [`AuditError::Trust`].
pub fn load_pem_certs(path: &Path) -> Result<Vec<X509>, AuditError> {
    let pem = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| AuditError::Trust(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(AuditError::Trust(format!(
            "{}: holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_pem_crl(path: &Path) -> Result<X509Crl, AuditError> {
    let pem = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    X509Crl::from_pem(&pem).map_err(|e| AuditError::Trust(format!("{}: {e}", path.display())))
}

/// The SHA-256 fingerprint of a certificate as `openssl x509 -fingerprint -sha256` prints it:
/// upper-case hex pairs joined by colons.
///
/// # Errors
/// When OpenSSL cannot encode the certificate.
pub fn fingerprint(cert: &X509) -> Result<String, openssl::error::ErrorStack> {
    Ok(colon_hex(&cert.digest(MessageDigest::sha256())?))
}

pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn subject_of(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = String::from_utf8_lossy(e.data().as_slice());
            Some(format!("{key}={value}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn asn1_to_time(t: &Asn1TimeRef) -> Result<OffsetDateTime, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch.diff(t).map_err(|e| e.to_string())?;
    let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string())
}

/// The right edge of a Merkle tree being rebuilt leaf by leaf: the roots of its perfect
/// subtrees, largest first — one hash per bit of the size, whatever the size.
#[derive(Clone, Debug, Default)]
pub(crate) struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// Appends a leaf; `completed` receives the leaf and every subtree it completes as
    /// `(level, index, hash)`, lowest first (the nodes the hub's store keeps).
    pub(crate) fn push(&mut self, leaf: Hash, completed: &mut Vec<(u32, u64, Hash)>) {
        let (mut level, mut index, mut hash) = (0u32, self.size, leaf);
        completed.push((0, index, hash));
        while index & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed.push((level, index, hash));
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of every leaf pushed (RFC 9162 MTH).
    pub(crate) fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A signature check for the workers.
enum Job {
    Envelope(Box<EnvelopeJob>),
    Checkpoint(Box<CheckpointJob>),
}

struct EnvelopeJob {
    position: u64,
    line: Option<u64>,
    entry: Entry,
    raw: Vec<u8>,
    /// The media type the bundle gives, to compare with the envelope's encoding.
    media_type: Option<String>,
    /// What the hub's store records about the envelope, to compare with it.
    record: Option<EnvelopeRecord>,
}

struct CheckpointJob {
    position: u64,
    line: Option<u64>,
    signed: SignedCheckpoint,
}

/// What the workers tally.
#[derive(Default)]
struct Tally {
    envelopes: u64,
    xml: u64,
    json: u64,
    revoked_later: Vec<RevokedLater>,
    revoked_later_count: u64,
    checkpoints: u64,
    /// Hub certificates by fingerprint: (hub, serial, checkpoints signed).
    hub_certs: BTreeMap<[u8; 32], (String, String, u64)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.envelopes += other.envelopes;
        self.xml += other.xml;
        self.json += other.json;
        self.revoked_later_count += other.revoked_later_count;
        self.revoked_later.extend(other.revoked_later);
        self.checkpoints += other.checkpoints;
        for (k, (hub, serial, n)) in other.hub_certs {
            self.hub_certs
                .entry(k)
                .or_insert_with(|| (hub, serial, 0))
                .2 += n;
        }
    }
}

/// The earliest failure found by any thread.
struct FirstFailure {
    /// Its position, or `u64::MAX`: read without the lock, to stop early.
    earliest: AtomicU64,
    failure: Mutex<Option<Failure>>,
}

impl FirstFailure {
    fn new() -> Self {
        FirstFailure {
            earliest: AtomicU64::new(u64::MAX),
            failure: Mutex::new(None),
        }
    }

    fn record(&self, f: Failure) {
        let Ok(mut slot) = self.failure.lock() else {
            return;
        };
        if slot.as_ref().is_none_or(|old| f.position < old.position) {
            self.earliest.store(f.position, Ordering::Release);
            *slot = Some(f);
        }
    }

    fn earliest(&self) -> u64 {
        self.earliest.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

/// Runs a verification: `drive` feeds the records to the checker, in order, while worker
/// threads (as many as there are cores) check the signatures.
///
/// # Errors
/// The earliest [`Failure`], by position in the stream.
pub(crate) fn run<F>(
    trust: &Trust,
    source: String,
    source_kind: &'static str,
    drive: F,
) -> Result<Report, Failure>
where
    F: FnOnce(&mut Checker<'_>) -> Result<(), Failure>,
{
    let first = FirstFailure::new();
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Job>>(workers * 2);
    let rx = Mutex::new(rx);
    let (tally, checked) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| s.spawn(|| worker(trust, &rx, &first)))
            .collect();
        let mut checker = Checker::new(&first, tx, source_kind);
        let outcome = drive(&mut checker).and_then(|()| checker.finish());
        if let Err(f) = outcome {
            first.record(f);
        }
        // Dropping the checker closes the channel: the workers finish what is queued.
        let checked = checker.into_checked();
        let mut tally = Tally::default();
        for h in handles {
            match h.join() {
                Ok(t) => tally.merge(t),
                Err(_) => first.record(Failure {
                    place: Place::End,
                    line: None,
                    fault: Box::new(Fault::Sequence("a verification thread panicked".into())),
                    position: u64::MAX,
                }),
            }
        }
        (tally, checked)
    });
    if let Some(f) = first.take() {
        return Err(f);
    }
    Ok(checked.report(source, trust, tally))
}

fn worker(trust: &Trust, rx: &Mutex<Receiver<Vec<Job>>>, first: &FirstFailure) -> Tally {
    let mut tally = Tally::default();
    loop {
        let batch = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(b) => b,
                Err(_) => return tally,
            },
            Err(_) => return tally,
        };
        for job in batch {
            let (position, line, result) = match job {
                Job::Envelope(j) => {
                    if j.position > first.earliest() {
                        continue;
                    }
                    let place = Place::Envelope(j.entry.index);
                    (
                        j.position,
                        j.line,
                        check_envelope(trust, &j, &mut tally).map_err(|f| (place, f)),
                    )
                }
                Job::Checkpoint(j) => {
                    if j.position > first.earliest() {
                        continue;
                    }
                    let place = Place::Checkpoint(Some(j.signed.checkpoint.size));
                    (
                        j.position,
                        j.line,
                        check_checkpoint(trust, &j, &mut tally).map_err(|f| (place, f)),
                    )
                }
            };
            if let Err((place, fault)) = result {
                first.record(Failure {
                    place,
                    line,
                    fault: Box::new(fault),
                    position,
                });
            }
        }
    }
}

/// Checks a raw envelope against its acceptance: digest, signature as of the acceptance,
/// revocation, header, and what the store or bundle says about it.
fn check_envelope(trust: &Trust, j: &EnvelopeJob, tally: &mut Tally) -> Result<(), Fault> {
    let entry = &j.entry;
    let actual = Entry::digest_of(&j.raw);
    if actual != entry.digest {
        return Err(Fault::Digest {
            digest: entry.digest.clone(),
            actual,
        });
    }
    let verified = trust
        .verifier
        .verify_at(&j.raw, entry.at)
        .map_err(|source| Fault::Signature {
            at: format_time(entry.at),
            source,
        })?;
    if let Some(revoked_at) = trust.revoked_at(&verified.signer.serial) {
        if revoked_at <= entry.at {
            return Err(Fault::Revoked {
                serial: verified.signer.serial.clone(),
                revoked_at: format_time(revoked_at),
                used_at: format_time(entry.at),
            });
        }
        tally.revoked_later_count += 1;
        if tally.revoked_later.len() < NOTES_LISTED {
            tally.revoked_later.push(RevokedLater {
                index: entry.index,
                serial: verified.signer.serial.clone(),
                revoked_at: format_time(revoked_at),
            });
        }
    }
    let h = &verified.envelope.header;
    let mismatch = |field: &str, expected: String, found: String| {
        Err(Fault::Mismatch {
            field: field.to_owned(),
            expected,
            found,
        })
    };
    let same = |field: &str, entry: &Option<String>, envelope: String| match entry {
        Some(e) if *e == envelope => Ok(()),
        other => mismatch(
            &format!("the envelope's `{field}`"),
            other.clone().unwrap_or_default(),
            envelope,
        ),
    };
    if entry.envelope_id != Some(h.id) {
        return mismatch(
            "the envelope's `id`",
            entry.envelope_id.map(|i| i.to_string()).unwrap_or_default(),
            h.id.to_string(),
        );
    }
    same("sender", &entry.sender, h.sender.to_string())?;
    same("recipient", &entry.recipient, h.recipient.to_string())?;
    same("service", &entry.service, h.service.clone())?;
    same("action", &entry.action, h.action.clone())?;
    same("conversation", &entry.conversation, h.conversation.clone())?;
    if let Some(m) = &j.media_type
        && m != verified.format.media_type()
    {
        return mismatch(
            "the bundle's media type",
            verified.format.media_type().to_owned(),
            m.clone(),
        );
    }
    if let Some(r) = &j.record {
        check_record(r, entry, &verified)?;
    }
    tally.envelopes += 1;
    match verified.format {
        Format::Xml => tally.xml += 1,
        Format::Json => tally.json += 1,
    }
    Ok(())
}

/// Checks what the hub's store records about an accepted envelope against the envelope and
/// its entry.
fn check_record(
    r: &EnvelopeRecord,
    entry: &Entry,
    verified: &snodo_envelopes::Verified,
) -> Result<(), Fault> {
    let h = &verified.envelope.header;
    let fields: [(&str, String, String); 13] = [
        ("id", h.id.to_string(), r.id.to_string()),
        ("sender", h.sender.to_string(), r.sender.clone()),
        ("recipient", h.recipient.to_string(), r.recipient.clone()),
        ("service", h.service.clone(), r.service.clone()),
        ("action", h.action.clone(), r.action.clone()),
        (
            "conversation",
            h.conversation.clone(),
            r.conversation.clone(),
        ),
        ("profile", h.profile.to_string(), r.profile.to_string()),
        (
            "in_reply_to",
            h.in_reply_to.map(|i| i.to_string()).unwrap_or_default(),
            r.in_reply_to.map(|i| i.to_string()).unwrap_or_default(),
        ),
        (
            "expires_at",
            h.expires_at.map(format_time).unwrap_or_default(),
            r.expires_at.clone().unwrap_or_default(),
        ),
        (
            "format",
            match verified.format {
                Format::Xml => "xml".into(),
                Format::Json => "json".into(),
            },
            r.format.clone(),
        ),
        ("digest", entry.digest.clone(), r.digest.clone()),
        ("accepted_at", format_time(entry.at), r.accepted_at.clone()),
        (
            "accepted_index",
            entry.index.to_string(),
            r.accepted_index.to_string(),
        ),
    ];
    for (field, expected, found) in fields {
        if expected != found {
            return Err(Fault::Mismatch {
                field: format!("the store's record `{field}`"),
                expected,
                found,
            });
        }
    }
    // Whom it goes to: the recipient itself, unless it is an event (its subscribers, which
    // the registry of the time decided and nothing signed records).
    if h.recipient.as_str() != "*" && r.recipients != [h.recipient.to_string()] {
        return Err(Fault::Mismatch {
            field: "the store's record `recipients`".into(),
            expected: h.recipient.to_string(),
            found: r.recipients.join(","),
        });
    }
    Ok(())
}

/// Checks a checkpoint's signature and certificate as of its own time, and revocation.
fn check_checkpoint(trust: &Trust, j: &CheckpointJob, tally: &mut Tally) -> Result<(), Fault> {
    let c = &j.signed.checkpoint;
    let verified = j
        .signed
        .verify(trust.verifier.trust(), c.time)
        .map_err(Fault::Checkpoint)?;
    let cert = &verified.certificate;
    if let Some(revoked_at) = trust.revoked_at(&cert.serial)
        && revoked_at <= c.time
    {
        return Err(Fault::Revoked {
            serial: cert.serial.clone(),
            revoked_at: format_time(revoked_at),
            used_at: format_time(c.time),
        });
    }
    tally.checkpoints += 1;
    tally
        .hub_certs
        .entry(cert.fingerprint)
        .or_insert_with(|| (verified.hub.clone(), cert.serial.clone(), 0))
        .2 += 1;
    Ok(())
}

/// The sequential half of a verification: fed the records in order, it decodes and hashes the
/// entries, rebuilds the tree or checks inclusion proofs, compares roots, checks consistency
/// proofs, and queues the signature checks for the workers.
pub(crate) struct Checker<'a> {
    first: &'a FirstFailure,
    /// Signature checks for the workers, in batches; `None` once closed.
    tx: Option<SyncSender<Vec<Job>>>,
    batch: Vec<Job>,
    batch_bytes: usize,
    /// The position of the record being checked, and its bundle line.
    position: u64,
    line: Option<u64>,
    /// `bundle` or `store`, for messages.
    source_kind: &'static str,
    mode: Mode,
    /// Whether entries after the last checkpoint are acceptable (a live store: the hub signs
    /// them within its interval) or a failure (a bundle must prove everything it holds).
    allow_unsigned_tail: bool,
    /// The hub whose journal this is: from the header, or the first checkpoint.
    hub: Option<String>,
    /// The tree rebuilt so far (complete mode).
    frontier: Frontier,
    /// The nodes the last entry completed (complete mode).
    completed: Vec<(u32, u64, Hash)>,
    entries: EntriesReport,
    /// The latest checkpoint read: size, root, time.
    checkpoint: Option<(u64, Hash, OffsetDateTime)>,
    first_checkpoint: Option<u64>,
    checkpoints_read: u64,
    /// Entries proven by the latest checkpoint whose root matched the rebuilt tree.
    proven: u64,
    roots_rebuilt: u64,
    consistency_proofs: u64,
    /// The two latest checkpoints `(size, root)`, until a consistency proof links them.
    pair: Option<((u64, Hash), (u64, Hash))>,
    /// An acceptance whose envelope must come next.
    awaiting_envelope: Option<Entry>,
    /// Acceptances whose body the source says was pruned, by envelope id and digest, until
    /// the journal's own record of the pruning is read (complete journals).
    /// (Several, oldest first, should the same envelope have been accepted more than once.)
    pending_pruned: HashMap<(Uuid, String), VecDeque<u64>>,
    /// Bodies pruned, their pruning proven.
    pruned: u64,
    /// Pruning markers read.
    pruned_read: u64,
    envelopes_read: u64,
    notes: Vec<String>,
    /// Whether [`Checker::finish`] ran.
    finished: bool,
}

/// What the checker found, for the report.
pub(crate) struct Checked {
    pruned: u64,
    mode: Mode,
    hub: Option<String>,
    entries: EntriesReport,
    first_checkpoint: Option<u64>,
    latest: Option<CheckpointSummary>,
    roots_rebuilt: u64,
    consistency_proofs: u64,
    notes: Vec<String>,
}

impl Checked {
    fn report(self, source: String, trust: &Trust, tally: Tally) -> Report {
        let mut revoked_later = tally.revoked_later;
        revoked_later.sort_by_key(|r| r.index);
        revoked_later.truncate(NOTES_LISTED);
        Report {
            source,
            mode: self.mode,
            hub: self.hub,
            trust: trust.report(),
            entries: self.entries,
            envelopes: EnvelopesReport {
                count: tally.envelopes,
                xml: tally.xml,
                json: tally.json,
                signer_revoked_later: tally.revoked_later_count,
                revoked_later,
                pruned: self.pruned,
            },
            checkpoints: CheckpointsReport {
                count: tally.checkpoints,
                first_size: self.first_checkpoint,
                latest: self.latest,
                roots_rebuilt: self.roots_rebuilt,
                consistency_proofs: self.consistency_proofs,
                hub_certificates: tally
                    .hub_certs
                    .into_iter()
                    .map(|(fp, (hub, serial, checkpoints))| HubCertReport {
                        hub,
                        sha256: colon_hex(&fp),
                        serial,
                        checkpoints,
                    })
                    .collect(),
            },
            notes: self.notes,
        }
    }
}

impl<'a> Checker<'a> {
    fn new(first: &'a FirstFailure, tx: SyncSender<Vec<Job>>, source_kind: &'static str) -> Self {
        Checker {
            first,
            tx: Some(tx),
            batch: Vec::new(),
            batch_bytes: 0,
            position: 0,
            line: None,
            source_kind,
            mode: Mode::Complete,
            allow_unsigned_tail: false,
            hub: None,
            frontier: Frontier::default(),
            completed: Vec::new(),
            entries: EntriesReport::default(),
            checkpoint: None,
            first_checkpoint: None,
            checkpoints_read: 0,
            proven: 0,
            roots_rebuilt: 0,
            consistency_proofs: 0,
            pair: None,
            awaiting_envelope: None,
            pending_pruned: HashMap::new(),
            pruned: 0,
            pruned_read: 0,
            envelopes_read: 0,
            notes: Vec::new(),
            finished: false,
        }
    }

    /// The next record is at `position` in the stream (and on `line` of a bundle).
    pub(crate) fn at(&mut self, position: u64, line: Option<u64>) {
        self.position = position;
        self.line = line;
    }

    /// True when a worker already found a failure earlier than the current record: reading
    /// on cannot change the outcome.
    pub(crate) fn should_stop(&self) -> bool {
        self.first.earliest() < self.position
    }

    /// How the entries are proven.
    pub(crate) fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Tolerates entries after the last checkpoint (a live store's unsigned tail).
    pub(crate) fn allow_unsigned_tail(&mut self) {
        self.allow_unsigned_tail = true;
    }

    /// The hub whose journal this is.
    pub(crate) fn set_hub(&mut self, hub: String) {
        self.hub = Some(hub);
    }

    /// Adds a line to the report.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The size of the latest checkpoint read.
    pub(crate) fn latest_size(&self) -> Option<u64> {
        self.checkpoint.map(|(size, _, _)| size)
    }

    /// The last entry index read.
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.entries.last
    }

    /// Entries, envelopes, checkpoints and pruning markers read so far.
    pub(crate) fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.entries.count,
            self.envelopes_read,
            self.checkpoints_read,
            self.pruned_read,
        )
    }

    /// The nodes the last entry completed, `(level, index, hash)`, lowest first (complete
    /// mode): what the hub's store should hold.
    pub(crate) fn completed(&self) -> &[(u32, u64, Hash)] {
        &self.completed
    }

    /// A failure at the current record.
    pub(crate) fn fail(&self, place: Place, fault: Fault) -> Failure {
        Failure {
            place,
            line: self.line,
            fault: Box::new(fault),
            position: self.position,
        }
    }

    fn send(&mut self, job: Job, bytes: usize) {
        self.batch.push(job);
        self.batch_bytes += bytes;
        if self.batch.len() >= BATCH_JOBS || self.batch_bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(tx) = &self.tx {
            // The workers only stop when the channel closes; a send fails only if they all
            // died, and then the join reports it.
            let _ = tx.send(batch);
        }
    }

    /// What must be settled before any record other than an envelope or a consistency
    /// proof: the envelope of the last acceptance, and (filtered) the proof linking the two
    /// latest checkpoints.
    fn settle(&mut self) -> Result<(), Failure> {
        if let Some(e) = self.awaiting_envelope.take() {
            return Err(self.fail(
                Place::Envelope(e.index),
                Fault::MissingEnvelope(self.source_kind),
            ));
        }
        if let Some(((from, _), (to, _))) = self.pair.take()
            && self.mode == Mode::Filtered
        {
            return Err(self.fail(
                Place::Checkpoint(Some(to)),
                Fault::MissingConsistency { previous: from },
            ));
        }
        Ok(())
    }

    /// Checks one entry: its place in the order, its canonical bytes and own index, and its
    /// inclusion (rebuilt tree, or proof under the latest checkpoint).
    pub(crate) fn entry(
        &mut self,
        index: u64,
        bytes: &[u8],
        proof: Option<&[Hash]>,
    ) -> Result<EventKind, Failure> {
        self.settle()?;
        self.completed.clear();
        match self.mode {
            Mode::Complete => {
                let expected = self.frontier.size();
                if index != expected {
                    return Err(self.fail(
                        Place::Entry(expected),
                        Fault::OutOfOrder {
                            expected,
                            found: index,
                        },
                    ));
                }
            }
            Mode::Filtered => {
                if let Some(previous) = self.entries.last
                    && index <= previous
                {
                    return Err(self.fail(
                        Place::Entry(index),
                        Fault::NotIncreasing {
                            previous,
                            found: index,
                        },
                    ));
                }
            }
        }
        let place = Place::Entry(index);
        let entry =
            Entry::from_bytes(bytes).map_err(|e| self.fail(place.clone(), Fault::Entry(e)))?;
        if entry.index != index {
            return Err(self.fail(
                place,
                Fault::IndexMismatch {
                    record: index,
                    bytes: entry.index,
                },
            ));
        }
        let leaf = merkle::leaf_hash(bytes);
        match (self.mode, proof) {
            (Mode::Complete, None) => self.frontier.push(leaf, &mut self.completed),
            (Mode::Complete, Some(_)) => return Err(self.fail(place, Fault::UnexpectedProof)),
            (Mode::Filtered, proof) => {
                let Some((size, root, _)) = self.checkpoint else {
                    return Err(self.fail(
                        place,
                        Fault::Sequence(
                            "an entry before any checkpoint: in a filtered bundle the checkpoints come first".into(),
                        ),
                    ));
                };
                if index >= size {
                    return Err(self.fail(place, Fault::Uncovered { size }));
                }
                let Some(proof) = proof else {
                    return Err(self.fail(place, Fault::MissingProof));
                };
                verify_inclusion(&leaf, index, size, proof, &root).map_err(|source| {
                    self.fail(place.clone(), Fault::Inclusion { size, source })
                })?;
                self.entries.inclusion_proofs += 1;
            }
        }
        self.entries.count += 1;
        self.entries.first.get_or_insert(index);
        self.entries.last = Some(index);
        *self
            .entries
            .by_kind
            .entry(entry.kind.as_str().to_owned())
            .or_default() += 1;
        let kind = entry.kind;
        if kind == EventKind::Pruned
            && let Some(id) = entry.envelope_id
        {
            let key = (id, entry.digest.clone());
            if let Some(pending) = self.pending_pruned.get_mut(&key)
                && pending.pop_front().is_some()
            {
                self.pruned += 1;
                if pending.is_empty() {
                    self.pending_pruned.remove(&key);
                }
            }
        }
        if kind == EventKind::Accepted {
            self.awaiting_envelope = Some(entry);
        }
        Ok(kind)
    }

    /// Queues the check of the raw envelope of the acceptance just read (at `index`).
    /// `id` and `media_type` are what a bundle says of it; `record` what a store does.
    pub(crate) fn envelope(
        &mut self,
        index: u64,
        id: Option<Uuid>,
        raw: Vec<u8>,
        media_type: Option<String>,
        record: Option<EnvelopeRecord>,
    ) -> Result<(), Failure> {
        let entry = match self.awaiting_envelope.take() {
            Some(e) if e.index == index => e,
            Some(e) => {
                return Err(self.fail(
                    Place::Envelope(e.index),
                    Fault::MissingEnvelope(self.source_kind),
                ));
            }
            None => return Err(self.fail(Place::Envelope(index), Fault::OrphanEnvelope)),
        };
        if let Some(id) = id
            && entry.envelope_id != Some(id)
        {
            return Err(self.fail(
                Place::Envelope(index),
                Fault::Mismatch {
                    field: format!("the {}'s envelope id", self.source_kind),
                    expected: entry.envelope_id.map(|i| i.to_string()).unwrap_or_default(),
                    found: id.to_string(),
                },
            ));
        }
        self.envelopes_read += 1;
        let bytes = raw.len();
        let job = EnvelopeJob {
            position: self.position,
            line: self.line,
            entry,
            raw,
            media_type,
            record,
        };
        self.send(Job::Envelope(Box::new(job)), bytes);
        Ok(())
    }

    /// The body of the envelope accepted at `index` (just read) was pruned after the
    /// retention period. In a complete journal, the journal's own `pruned` entry for it must
    /// follow; in a filtered bundle it comes `embedded` — its index, canonical bytes and
    /// inclusion proof under the latest checkpoint — and is checked at once.
    pub(crate) fn pruned(
        &mut self,
        index: u64,
        embedded: Option<(u64, &[u8], &[Hash])>,
    ) -> Result<(), Failure> {
        let place = Place::Envelope(index);
        self.pruned_read += 1;
        let accepted = match self.awaiting_envelope.take() {
            Some(e) if e.index == index => e,
            Some(e) => {
                return Err(self.fail(
                    Place::Envelope(e.index),
                    Fault::MissingEnvelope(self.source_kind),
                ));
            }
            None => return Err(self.fail(place, Fault::OrphanEnvelope)),
        };
        let Some(id) = accepted.envelope_id else {
            return Err(self.fail(
                place,
                Fault::Pruning("the acceptance names no envelope".into()),
            ));
        };
        match (self.mode, embedded) {
            (Mode::Complete, None) => {
                self.pending_pruned
                    .entry((id, accepted.digest.clone()))
                    .or_default()
                    .push_back(index);
                Ok(())
            }
            (Mode::Complete, Some(_)) => Err(self.fail(
                place,
                Fault::Pruning(
                    "a complete bundle holds the pruning entry itself, not a copy".into(),
                ),
            )),
            (Mode::Filtered, None) => Err(self.fail(
                place,
                Fault::Pruning(
                    "a filtered bundle must carry the entry recording the pruning".into(),
                ),
            )),
            (Mode::Filtered, Some((at, bytes, proof))) => {
                let pruning = Entry::from_bytes(bytes).map_err(|e| {
                    self.fail(place.clone(), Fault::Pruning(format!("entry {at}: {e}")))
                })?;
                let recorded = pruning.index == at
                    && at > index
                    && pruning.kind == EventKind::Pruned
                    && pruning.envelope_id == Some(id)
                    && pruning.digest == accepted.digest;
                if !recorded {
                    return Err(self.fail(
                        place,
                        Fault::Pruning(format!(
                            "entry {at} is not a later record of the pruning of envelope {id}"
                        )),
                    ));
                }
                let Some((size, root, _)) = self.checkpoint else {
                    return Err(self.fail(place, Fault::Pruning("no checkpoint".into())));
                };
                if at >= size {
                    return Err(self.fail(place, Fault::Uncovered { size }));
                }
                verify_inclusion(&merkle::leaf_hash(bytes), at, size, proof, &root).map_err(
                    |source| {
                        self.fail(
                            place.clone(),
                            Fault::Pruning(format!(
                                "entry {at}, recording it, is not in the journal that checkpoint {size} signs: {source}"
                            )),
                        )
                    },
                )?;
                self.pruned += 1;
                Ok(())
            }
        }
    }

    /// Checks a checkpoint's place (hub, order, size against the entries read) and, in a
    /// complete journal, its root against the rebuilt tree; queues its signature check.
    pub(crate) fn checkpoint(&mut self, signed: SignedCheckpoint) -> Result<(), Failure> {
        self.settle()?;
        let (size, root, time) = (
            signed.checkpoint.size,
            signed.checkpoint.root,
            signed.checkpoint.time,
        );
        let place = Place::Checkpoint(Some(size));
        let found = signed
            .checkpoint
            .hub()
            .unwrap_or(&signed.checkpoint.origin)
            .to_owned();
        match &self.hub {
            Some(expected) if *expected != found => {
                return Err(self.fail(
                    place,
                    Fault::OtherHub {
                        expected: expected.clone(),
                        found,
                    },
                ));
            }
            Some(_) => {}
            None => self.hub = Some(found),
        }
        if let Some((previous, _, _)) = self.checkpoint
            && size <= previous
        {
            return Err(self.fail(place, Fault::CheckpointOrder { previous }));
        }
        match self.mode {
            Mode::Complete => {
                let entries = self.frontier.size();
                if size > entries {
                    return Err(self.fail(
                        place,
                        Fault::Truncation {
                            size,
                            entries,
                            source_kind: self.source_kind,
                        },
                    ));
                }
                if size < entries {
                    return Err(self.fail(place, Fault::Misplaced { entries }));
                }
                if self.frontier.root() != root {
                    return Err(self.fail(
                        place,
                        Fault::RootMismatch {
                            size,
                            first: self.proven,
                            last: size.saturating_sub(1),
                        },
                    ));
                }
                self.proven = size;
                self.roots_rebuilt += 1;
            }
            Mode::Filtered => {
                if self.entries.count > 0 {
                    return Err(self.fail(
                        place,
                        Fault::Sequence(
                            "a checkpoint after entries: in a filtered bundle the checkpoints come first".into(),
                        ),
                    ));
                }
            }
        }
        if let Some((previous, previous_root, _)) = self.checkpoint {
            self.pair = Some(((previous, previous_root), (size, root)));
        }
        self.checkpoint = Some((size, root, time));
        self.first_checkpoint.get_or_insert(size);
        self.checkpoints_read += 1;
        let job = CheckpointJob {
            position: self.position,
            line: self.line,
            signed,
        };
        self.send(Job::Checkpoint(Box::new(job)), 0);
        Ok(())
    }

    /// Checks the consistency proof between the two latest checkpoints.
    pub(crate) fn consistency(
        &mut self,
        from: u64,
        to: u64,
        proof: &[Hash],
    ) -> Result<(), Failure> {
        let place = Place::Consistency { from, to };
        match self.pair.take() {
            Some(((a, old_root), (b, new_root))) if a == from && b == to => {
                verify_consistency(from, to, &old_root, &new_root, proof)
                    .map_err(|e| self.fail(place, Fault::Consistency(e)))?;
                self.consistency_proofs += 1;
                Ok(())
            }
            _ => Err(self.fail(
                place,
                Fault::Sequence(
                    "a consistency proof must follow the later of the two checkpoints it links, which must be the latest two".into(),
                ),
            )),
        }
    }

    /// Checks what the whole must satisfy once every record was read.
    ///
    /// # Errors
    /// An acceptance without its envelope, checkpoints without their consistency proof,
    /// entries no checkpoint covers (unless tolerated), no checkpoint at all.
    pub(crate) fn finish(&mut self) -> Result<(), Failure> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.settle()?;
        if let Some(&index) = self.pending_pruned.values().flatten().min() {
            return Err(self.fail(
                Place::Envelope(index),
                Fault::Pruning("the journal records no pruning of it".into()),
            ));
        }
        let signed = self.checkpoint.map_or(0, |(size, _, _)| size);
        if self.checkpoint.is_none() && !self.allow_unsigned_tail {
            return Err(self.fail(
                Place::End,
                Fault::Sequence(format!(
                    "the {} holds no checkpoint: nothing in it is signed by the hub",
                    self.source_kind
                )),
            ));
        }
        if self.mode == Mode::Complete && self.frontier.size() > signed {
            let tail = format!(
                "entries {signed}..={} follow the last checkpoint{}, so no signature covers them",
                self.frontier.size() - 1,
                self.checkpoint
                    .map_or_else(String::new, |(size, _, _)| format!(" (size {size})"))
            );
            if self.allow_unsigned_tail {
                self.note(format!(
                    "unsigned     {tail}: the hub signs them within its checkpoint interval (they were decoded and hashed like the others)"
                ));
            } else {
                return Err(self.fail(Place::Entry(signed), Fault::Sequence(tail)));
            }
        }
        Ok(())
    }

    /// Flushes the last signature checks, closes the workers' channel, and gives what was
    /// found.
    fn into_checked(mut self) -> Checked {
        self.flush();
        self.tx = None;
        Checked {
            pruned: self.pruned,
            mode: self.mode,
            hub: self.hub,
            entries: self.entries,
            first_checkpoint: self.first_checkpoint,
            latest: self.checkpoint.map(|(size, root, time)| CheckpointSummary {
                size,
                root: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, root),
                time: format_time(time),
            }),
            roots_rebuilt: self.roots_rebuilt,
            consistency_proofs: self.consistency_proofs,
            notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::MemoryTree;

    fn leaf(i: u64) -> Hash {
        merkle::leaf_hash(&i.to_be_bytes())
    }

    #[test]
    fn the_frontier_has_the_root_and_nodes_of_the_memory_tree() {
        let mut frontier = Frontier::default();
        let mut tree = MemoryTree::new();
        let mut completed = Vec::new();
        assert_eq!(frontier.root(), empty_root());
        for i in 0..300u64 {
            completed.clear();
            frontier.push(leaf(i), &mut completed);
            tree.push(leaf(i)).unwrap();
            assert_eq!(frontier.root(), tree.root().unwrap(), "size {}", i + 1);
            for &(level, index, hash) in &completed {
                assert_eq!(
                    tree.get(level, index),
                    Some(hash),
                    "node ({level}, {index})"
                );
            }
            assert_eq!(completed.len(), 1 + i.trailing_ones() as usize);
        }
    }

    #[test]
    fn fingerprints_are_colon_separated_upper_case_hex() {
        assert_eq!(colon_hex(&[0xab, 0x01, 0xff]), "AB:01:FF");
    }

    #[test]
    fn failures_name_the_place_and_the_bundle_line() {
        let f = Failure {
            place: Place::Entry(42),
            line: Some(57),
            fault: Box::new(Fault::MissingProof),
            position: 57,
        };
        assert_eq!(
            f.to_string(),
            "entry 42 (bundle line 57): no inclusion proof: a filtered bundle proves each entry under its latest checkpoint"
        );
        assert_eq!(f.entry(), Some(42));
        let f = Failure {
            place: Place::Line {
                line: 9,
                after: Some(6),
            },
            line: Some(9),
            fault: Box::new(Fault::Malformed("EOF".into())),
            position: 9,
        };
        assert_eq!(
            f.to_string(),
            "bundle line 9 (after entry 6): not a bundle record: EOF"
        );
        assert_eq!(f.fault.code(), "bundle-malformed");
    }
}
