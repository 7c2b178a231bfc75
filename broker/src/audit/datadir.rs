//! Verifying a hub's data directory offline, for its operator, and exporting a complete
//! bundle from it without a running hub.
//!
//! The journal is read from the store's key spaces in one pass: `j/` (the entries, in index
//! order), `k/` (the signed checkpoints, by size), `m/` and `r/` (each accepted envelope's
//! record and exact bytes, by sequence — in the order of their acceptances), merged so that
//! each acceptance is followed by its envelope and each checkpoint comes after the entry that
//! completes it. Beyond what a bundle's verification checks, the store's own Merkle nodes
//! (`n/`) are compared with the tree rebuilt from the entries — they are what the hub serves
//! proofs from — and its state (`s/state`) with the journal.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::bundle::{BundleCounts, BundleHeader, BundleWriter};
use super::verify::{self, Checker, Failure, Fault, Place, Report, Trust};
use crate::engine::EnvelopeRecord;
use crate::journal::checkpoint::SignedCheckpoint;
use crate::journal::entry::{Entry, EventKind};
use crate::store::{FjallStore, Store, StoreError, keys};

/// How many keys one scan of the store reads.
const PAGE: usize = 1024;

/// Opens the store of a hub's data directory: `dir/store` (the data directory, as
/// `hub.data_dir` names it), or `dir` itself (the store directory). Never creates one.
///
/// # Errors
/// [`AuditError::Store`] when neither holds a store, or it cannot be opened (a running hub
/// holds it).
pub fn open_store(dir: &Path) -> Result<(FjallStore, PathBuf), AuditError> {
    // fjall marks its directories with these.
    let holds_store = |d: &Path| d.join("version").is_file() && d.join("keyspaces").is_dir();
    let path = [dir.join("store"), dir.to_path_buf()]
        .into_iter()
        .find(|d| holds_store(d))
        .ok_or_else(|| {
            AuditError::Store(format!(
                "no hub store in {}: neither it nor its `store` directory holds one",
                dir.display()
            ))
        })?;
    let store = FjallStore::open(&path).map_err(|e| {
        AuditError::Store(format!(
            "cannot open {} ({e}); if the hub is running, stop it, or export its journal with `snodo audit export --hub` and verify that",
            path.display()
        ))
    })?;
    Ok((store, path))
}

/// Verifies the journal in a hub's data directory (or its store directory) against the CA
/// at `ca`, with the revocation list at `crl` if given.
///
/// # Errors
/// [`AuditError::Failed`] naming the first bad entry and why; [`AuditError::Store`] when the
/// store cannot be opened; [`AuditError::Io`] or [`AuditError::Trust`] for the CA and list.
pub fn verify(dir: &Path, ca: &Path, crl: Option<&Path>) -> Result<Report, AuditError> {
    let trust = Trust::load(ca, crl)?;
    let (store, path) = open_store(dir)?;
    verify_store(&store, &trust, format!("data directory {}", path.display()))
}

/// Verifies the journal in `store`; `source` names it in the report.
///
/// # Errors
/// [`AuditError::Failed`] naming the first bad entry and why.
pub fn verify_store(
    store: &dyn Store,
    trust: &Trust,
    source: String,
) -> Result<Report, AuditError> {
    verify::run(trust, source, "store", |c| {
        c.allow_unsigned_tail();
        drive(c, store)
    })
    .map_err(AuditError::from)
}

fn drive(c: &mut Checker<'_>, store: &dyn Store) -> Result<(), Failure> {
    let mut journal = StoreJournal::new(store);
    let mut tree = Nodes::new(store);
    let mut position = 0u64;
    let mut nodes = 0u64;
    loop {
        position += 1;
        c.at(position, None);
        if c.should_stop() {
            return Ok(());
        }
        let item = journal.next().map_err(|m| c.fail(m.0, m.1))?;
        match item {
            None => break,
            Some(Item::Checkpoint { key_size, bytes }) => {
                let signed = decode_checkpoint(key_size, &bytes).map_err(|m| c.fail(m.0, m.1))?;
                c.checkpoint(signed)?;
            }
            Some(Item::Entry { index, bytes }) => {
                let kind = c.entry(index, &bytes, None)?;
                let completed = c.completed().to_vec();
                for (level, i, hash) in completed {
                    let place = if level == 0 {
                        Place::Entry(i)
                    } else {
                        Place::Store(node_key(level, i))
                    };
                    tree.check(level, i, &hash).map_err(|f| c.fail(place, f))?;
                    nodes += 1;
                }
                if kind == EventKind::Accepted {
                    position += 1;
                    c.at(position, None);
                    match journal.envelope_for(index).map_err(|m| c.fail(m.0, m.1))? {
                        Some((record, Some(raw))) => {
                            c.envelope(index, Some(record.id), raw, None, Some(record))?;
                        }
                        // Pruned after the retention period: the journal must record it.
                        Some((_, None)) => c.pruned(index, None)?,
                        None => {
                            return Err(
                                c.fail(Place::Envelope(index), Fault::MissingEnvelope("store"))
                            );
                        }
                    }
                }
            }
        }
    }
    c.finish()?;
    if let Some((seq, record)) = journal.leftover_envelope().map_err(|m| c.fail(m.0, m.1))? {
        return Err(c.fail(
            Place::Store(format!("m/{seq}")),
            Fault::Mismatch {
                field: "the store's record `accepted_index`".into(),
                expected: "the index of an acceptance".into(),
                found: record.accepted_index.to_string(),
            },
        ));
    }
    check_state(c, store)?;
    c.note(format!(
        "store        {nodes} Merkle nodes (every one the entries complete) equal to the tree rebuilt from the entries; each envelope's stored record equal to the envelope and its entry"
    ));
    Ok(())
}

/// The hub's state must agree with the journal: its size, and its last checkpoint's.
fn check_state(c: &mut Checker<'_>, store: &dyn Store) -> Result<(), Failure> {
    let place = Place::Store("s/state".into());
    let state = match store.get(keys::STATE) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(()),
        Err(e) => return Err(c.fail(place, Fault::Store(e.to_string()))),
    };
    let state: serde_json::Value = serde_json::from_slice(&state).map_err(|e| {
        c.fail(
            place.clone(),
            Fault::State(format!("it does not decode: {e}")),
        )
    })?;
    let (entries, _, _, _) = c.counts();
    let field = |name: &str| state.get(name).and_then(serde_json::Value::as_u64);
    if let Some(size) = field("journal_size")
        && size != entries
    {
        return Err(c.fail(
            place,
            Fault::State(format!(
                "the hub's state says the journal holds {size} entries, the store holds {entries}"
            )),
        ));
    }
    if let Some(size) = field("checkpoint_size")
        && Some(size) != c.latest_size()
        && !(size == 0 && c.latest_size().is_none())
    {
        return Err(c.fail(
                place,
                Fault::State(format!(
                    "the hub's state says its last checkpoint has size {size}, the store's last has size {}",
                    c.latest_size().map_or_else(|| "none".into(), |s| s.to_string())
                )),
            ));
    }
    Ok(())
}

fn node_key(level: u32, index: u64) -> String {
    format!("n/{level}/{index}")
}

fn decode_checkpoint(key_size: u64, bytes: &[u8]) -> Result<SignedCheckpoint, Miss> {
    let place = Place::Checkpoint(Some(key_size));
    let signed: SignedCheckpoint = serde_json::from_slice(bytes)
        .map_err(|e| miss(place.clone(), Fault::Malformed(e.to_string())))?;
    if signed.checkpoint.size != key_size {
        return Err(miss(
            place,
            Fault::KeyMismatch {
                key: key_size,
                size: signed.checkpoint.size,
            },
        ));
    }
    Ok(signed)
}

/// A key space read in pages, in key order.
struct Scanner<'s> {
    store: &'s dyn Store,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    page: VecDeque<KeyValue>,
    done: bool,
}

impl<'s> Scanner<'s> {
    fn new(store: &'s dyn Store, prefix: &[u8]) -> Self {
        Scanner {
            store,
            prefix: prefix.to_vec(),
            after: None,
            page: VecDeque::new(),
            done: false,
        }
    }

    fn fill(&mut self) -> Result<(), StoreError> {
        if self.page.is_empty() && !self.done {
            let page = self.store.scan(&self.prefix, self.after.as_deref(), PAGE)?;
            self.done = page.len() < PAGE;
            self.after = page.last().map(|(k, _)| k.clone());
            self.page.extend(page);
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<&KeyValue>, StoreError> {
        self.fill()?;
        Ok(self.page.front())
    }

    fn next(&mut self) -> Result<Option<KeyValue>, StoreError> {
        self.fill()?;
        Ok(self.page.pop_front())
    }
}

/// The store's Merkle nodes, read level by level in index order alongside the entries: the
/// nodes the entries complete come in that order within each level, so one sequential scan
/// per level (a few dozen) replaces a lookup per node.
struct Nodes<'s> {
    store: &'s dyn Store,
    levels: Vec<Scanner<'s>>,
}

impl<'s> Nodes<'s> {
    fn new(store: &'s dyn Store) -> Self {
        Nodes {
            store,
            levels: Vec::new(),
        }
    }

    /// Checks that the store holds `hash` as node `(level, index)`.
    fn check(&mut self, level: u32, index: u64, hash: &[u8]) -> Result<(), Fault> {
        let l = level as usize;
        while self.levels.len() <= l {
            let mut prefix = keys::node(self.levels.len() as u32, 0);
            prefix.truncate(prefix.len() - 8);
            self.levels.push(Scanner::new(self.store, &prefix));
        }
        let scanner = &mut self.levels[l];
        loop {
            let next = scanner
                .peek()
                .map_err(|e| Fault::Store(e.to_string()))?
                .map(|(k, _)| keys::trailing_u64(k));
            match next {
                // A node no entry completes (the key order makes it one passed): skip it.
                Some(Some(i)) if i < index => {
                    scanner.next().map_err(|e| Fault::Store(e.to_string()))?;
                }
                Some(Some(i)) if i == index => {
                    let (_, value) = scanner
                        .next()
                        .map_err(|e| Fault::Store(e.to_string()))?
                        .unwrap_or_default();
                    return if value == hash {
                        Ok(())
                    } else {
                        Err(Fault::Node { level, index })
                    };
                }
                _ => return Err(Fault::NodeMissing { level, index }),
            }
        }
    }
}

/// One record of the journal read from the store.
enum Item {
    Entry { index: u64, bytes: Vec<u8> },
    Checkpoint { key_size: u64, bytes: Vec<u8> },
}

/// The journal's key spaces, merged in the order of a complete bundle.
struct StoreJournal<'s> {
    store: &'s dyn Store,
    entries: Scanner<'s>,
    records: Scanner<'s>,
    checkpoints: Scanner<'s>,
    /// Entries yielded so far: a checkpoint of this size or less is due.
    yielded: u64,
}

/// A fault and its place, found while reading the store (boxed: it is large and rare).
type Miss = Box<(Place, Fault)>;

fn miss(place: Place, fault: Fault) -> Miss {
    Box::new((place, fault))
}

/// A key and its value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// An accepted envelope's record and exact bytes (`None` once pruned).
type Stored = (EnvelopeRecord, Option<Vec<u8>>);

/// A store failure at a key space.
fn store_fault(space: &str, e: &StoreError) -> Miss {
    miss(Place::Store(space.to_owned()), Fault::Store(e.to_string()))
}

/// The number at the end of a key of `len` bytes, or a fault naming the key.
fn key_number(key: &[u8], space: &str, len: usize) -> Result<u64, Miss> {
    let bad = || {
        miss(
            Place::Store(format!(
                "{space}{}",
                hex::encode(key.get(2..).unwrap_or_default())
            )),
            Fault::Store("a key that is not the hub's".into()),
        )
    };
    if key.len() != len {
        return Err(bad());
    }
    keys::trailing_u64(key).ok_or_else(bad)
}

impl<'s> StoreJournal<'s> {
    fn new(store: &'s dyn Store) -> Self {
        StoreJournal {
            store,
            entries: Scanner::new(store, b"j/"),
            records: Scanner::new(store, b"m/"),
            checkpoints: Scanner::new(store, b"k/"),
            yielded: 0,
        }
    }

    fn next_checkpoint(&mut self, due_only: bool) -> Result<Option<Item>, Miss> {
        let Some((key, _)) = self.checkpoints.peek().map_err(|e| store_fault("k/", &e))? else {
            return Ok(None);
        };
        let key_size = key_number(key, "k/", 10)?;
        if due_only && key_size > self.yielded {
            return Ok(None);
        }
        let (_, bytes) = self
            .checkpoints
            .next()
            .map_err(|e| store_fault("k/", &e))?
            .unwrap_or_default();
        Ok(Some(Item::Checkpoint { key_size, bytes }))
    }

    /// The next entry or checkpoint: each checkpoint right after the entry that brings the
    /// journal to its size; checkpoints beyond the last entry at the end.
    fn next(&mut self) -> Result<Option<Item>, Miss> {
        if let Some(c) = self.next_checkpoint(true)? {
            return Ok(Some(c));
        }
        if let Some((key, bytes)) = self.entries.next().map_err(|e| store_fault("j/", &e))? {
            let index = key_number(&key, "j/", 10)?;
            self.yielded += 1;
            return Ok(Some(Item::Entry { index, bytes }));
        }
        self.next_checkpoint(false)
    }

    /// The record and exact bytes (`None` once pruned) of the envelope accepted at `index`:
    /// the next `m/` record, which must be that acceptance's.
    fn envelope_for(&mut self, index: u64) -> Result<Option<Stored>, Miss> {
        let Some((key, value)) = self.records.peek().map_err(|e| store_fault("m/", &e))? else {
            return Ok(None);
        };
        let seq = key_number(key, "m/", 10)?;
        let place = Place::Store(format!("m/{seq}"));
        let record: EnvelopeRecord = serde_json::from_slice(value).map_err(|e| {
            miss(
                place.clone(),
                Fault::Store(format!("the record does not decode: {e}")),
            )
        })?;
        if record.accepted_index > index {
            // The acceptance at `index` has no record; this one is for a later acceptance.
            return Ok(None);
        }
        self.records.next().map_err(|e| store_fault("m/", &e))?;
        if record.seq != seq {
            return Err(miss(
                place,
                Fault::Mismatch {
                    field: "the store's record `seq`".into(),
                    expected: seq.to_string(),
                    found: record.seq.to_string(),
                },
            ));
        }
        if record.accepted_index < index {
            return Err(miss(
                place,
                Fault::Mismatch {
                    field: "the store's record `accepted_index`".into(),
                    expected: "the index of an acceptance".into(),
                    found: record.accepted_index.to_string(),
                },
            ));
        }
        match self.store.get(&keys::raw(seq)) {
            Ok(raw) => Ok(Some((record, raw))),
            Err(e) => Err(store_fault(&format!("r/{seq}"), &e)),
        }
    }

    /// An envelope record left over once every entry was read: it names no acceptance.
    fn leftover_envelope(&mut self) -> Result<Option<(u64, EnvelopeRecord)>, Miss> {
        let Some((key, value)) = self.records.next().map_err(|e| store_fault("m/", &e))? else {
            return Ok(None);
        };
        let seq = key_number(&key, "m/", 10)?;
        let record: EnvelopeRecord = serde_json::from_slice(&value).map_err(|e| {
            miss(
                Place::Store(format!("m/{seq}")),
                Fault::Store(format!("the record does not decode: {e}")),
            )
        })?;
        Ok(Some((seq, record)))
    }
}

/// Exports the journal in a hub's data directory as a complete bundle at `out`, up to its
/// latest checkpoint (entries after it are not signed yet, and are left out). `ca` is the
/// federation CA embedded in the header. Nothing is verified here; verify the bundle.
///
/// # Errors
/// [`AuditError::Store`] when the store cannot be read or holds no checkpoint;
/// [`AuditError::Io`] when a file cannot be read or written.
pub fn export(dir: &Path, ca: &Path, out: &Path) -> Result<BundleCounts, AuditError> {
    let (store, path) = open_store(dir)?;
    let ca_pem = std::fs::read_to_string(ca).map_err(|e| AuditError::io(ca, e))?;
    let corrupt = |what: String| AuditError::Store(what);
    let (_, latest) = store
        .last(b"k/")
        .map_err(|e| corrupt(e.to_string()))?
        .ok_or_else(|| corrupt("the journal holds no signed checkpoint yet".into()))?;
    let latest: SignedCheckpoint = serde_json::from_slice(&latest)
        .map_err(|e| corrupt(format!("the latest checkpoint does not decode: {e}")))?;
    let hub = latest
        .checkpoint
        .hub()
        .unwrap_or(&latest.checkpoint.origin)
        .to_owned();
    let size = latest.checkpoint.size;
    let mut header = BundleHeader::new(&hub, true, size, ca_pem);
    header.source = Some(path.display().to_string());
    header.hub_certificates = certificate_pem(&latest).into_iter().collect();

    let partial = partial_path(out);
    let result = write_export(&store, &header, size, &partial);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let counts = result?;
    std::fs::rename(&partial, out).map_err(|e| AuditError::io(out, e))?;
    Ok(counts)
}

/// Writes the complete bundle of the journal of `size` entries in `store` to `partial`.
fn write_export(
    store: &dyn Store,
    header: &BundleHeader,
    size: u64,
    partial: &Path,
) -> Result<BundleCounts, AuditError> {
    let corrupt = |what: String| AuditError::Store(what);
    let file = std::fs::File::create(partial).map_err(|e| AuditError::io(partial, e))?;
    let io = |e: std::io::Error| AuditError::io(partial, e);
    let mut w =
        BundleWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), header).map_err(io)?;
    let mut journal = StoreJournal::new(store);
    let fault = |m: Miss| AuditError::Store(format!("{}: {}", m.0, m.1));
    while let Some(item) = journal.next().map_err(fault)? {
        match item {
            Item::Checkpoint { key_size, bytes } if key_size <= size => {
                let signed = decode_checkpoint(key_size, &bytes).map_err(fault)?;
                w.checkpoint(&signed).map_err(io)?;
            }
            Item::Checkpoint { .. } => {}
            Item::Entry { index, .. } if index >= size => break,
            Item::Entry { index, bytes } => {
                w.entry(index, &bytes, None).map_err(io)?;
                let entry = Entry::from_bytes(&bytes)
                    .map_err(|e| corrupt(format!("entry {index}: {e}")))?;
                if entry.kind == EventKind::Accepted {
                    match journal.envelope_for(index).map_err(fault)? {
                        Some((record, Some(raw))) => {
                            let media_type = if record.format == "xml" {
                                "application/xml"
                            } else {
                                snodo_envelopes::jws::MEDIA_TYPE
                            };
                            w.envelope(index, record.id, media_type, &raw).map_err(io)?;
                        }
                        // Pruned: the journal's own record of it follows in the bundle.
                        Some((_, None)) => w.pruned(index, None).map_err(io)?,
                        None => {}
                    }
                }
            }
        }
    }
    let (file, counts) = w.finish().map_err(io)?;
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(counts)
}

/// The PEM of the certificate a checkpoint carries.
pub(crate) fn certificate_pem(signed: &SignedCheckpoint) -> Option<String> {
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &signed.certificate,
    )
    .ok()?;
    let cert = openssl::x509::X509::from_der(&der).ok()?;
    String::from_utf8(cert.to_pem().ok()?).ok()
}

/// Where a bundle is written before it is complete: `FILE.partial`, renamed at the end, so
/// that a half-written bundle is never taken for one.
pub(crate) fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
