//! A verification's outcome when the evidence fails it: the [`Place`] at fault (an entry, its
//! envelope, a checkpoint, a proof, a bundle line, a store key), the [`Fault`] found there, and
//! the [`Failure`] that joins them and says which came first.

use std::fmt;

use crate::journal::checkpoint::CheckpointError;
use crate::journal::entry::EntryError;
use crate::journal::merkle::ProofError;

/// Where in the evidence a failure lies.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// The bundle's header, or its CA.
    Header,
    /// A line of the bundle that is not a readable record.
    Line {
        /// The line number, from 1.
        line: u64,
        /// The index of the last entry read before it, if any: the bad one is likely next.
        after: Option<u64>,
    },
    /// The journal entry at this index.
    Entry(u64),
    /// The raw envelope of the acceptance recorded at this journal index.
    Envelope(u64),
    /// The checkpoint of this tree size (`None` when it cannot be read).
    Checkpoint(Option<u64>),
    /// The consistency proof between checkpoints of these sizes.
    Consistency {
        /// The earlier size.
        from: u64,
        /// The later size.
        to: u64,
    },
    /// A key of the hub's store, printable.
    Store(String),
    /// The end of the bundle or of the store: what the whole must satisfy.
    End,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Header => f.write_str("bundle header"),
            Place::Line {
                line,
                after: Some(i),
            } => write!(f, "bundle line {line} (after entry {i})"),
            Place::Line { line, after: None } => write!(f, "bundle line {line}"),
            Place::Entry(i) => write!(f, "entry {i}"),
            Place::Envelope(i) => write!(f, "entry {i}, its envelope"),
            Place::Checkpoint(Some(s)) => write!(f, "checkpoint of size {s}"),
            Place::Checkpoint(None) => f.write_str("checkpoint"),
            Place::Consistency { from, to } => {
                write!(f, "consistency proof from size {from} to {to}")
            }
            Place::Store(key) => write!(f, "store key {key}"),
            Place::End => f.write_str("end"),
        }
    }
}

/// What is wrong with the evidence at a [`Place`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// The bundle cannot be read (the file system failed).
    #[error("the bundle cannot be read: {0}")]
    Unreadable(String),
    /// A line that is not a bundle record at all.
    #[error("not a bundle record: {0}")]
    Malformed(String),
    /// A hub certificate in the header that is unreadable, or not the hub's.
    #[error("the header's hub certificate is refused: {0}")]
    HubCertificate(String),
    /// A bundle of a format this snodo does not read.
    #[error("unsupported bundle format `{found}` (this snodo reads {expected})")]
    Format {
        /// What the header says.
        found: String,
        /// What this snodo reads.
        expected: &'static str,
    },
    /// A record where the format does not allow one.
    #[error("{0}")]
    Sequence(String),
    /// The bundle stops before its end record.
    #[error("the bundle ends without its end record: it was truncated")]
    Truncated,
    /// The end record's counts disagree with the records.
    #[error("the end record counts {said} {what}, the bundle holds {found}")]
    Count {
        /// `entries`, `envelopes` or `checkpoints`.
        what: &'static str,
        /// What the end record says.
        said: u64,
        /// What was read.
        found: u64,
    },
    /// The file's SHA-256 is not the one the end record gives.
    #[error(
        "the bundle's SHA-256 is {found}, not {said} as its end record says: the file was damaged or edited (where no signature covers it, as nothing else failed)"
    )]
    Checksum {
        /// What the end record says.
        said: String,
        /// What the bytes hash to.
        found: String,
    },
    /// Bytes after the end record.
    #[error("there is more after the end record")]
    TrailingData,
    /// The bundle's CA is not the one the auditor pinned.
    #[error(
        "the bundle's CA (SHA-256 {embedded}) is not the CA given with --ca (SHA-256 {pinned})"
    )]
    CaMismatch {
        /// Fingerprints of the bundle's CA.
        embedded: String,
        /// Fingerprints of the pinned CA.
        pinned: String,
    },
    /// The bundle's CA cannot be read.
    #[error("the bundle's CA is unusable: {0}")]
    CaUnusable(String),
    /// A field that is not what its encoding requires (base64, a hash's length…).
    #[error("{field} is not valid: {reason}")]
    Encoding {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry's bytes do not decode as a canonical entry.
    #[error("{0}")]
    Entry(EntryError),
    /// A complete journal has a hole, a repeat or a swap here.
    #[error(
        "entry {found} stands where entry {expected} should: entries are missing, repeated or out of order"
    )]
    OutOfOrder {
        /// The index the position calls for.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// A filtered bundle's entries go back.
    #[error("entry {found} follows entry {previous}: entries must come in increasing order")]
    NotIncreasing {
        /// The entry before.
        previous: u64,
        /// This one.
        found: u64,
    },
    /// The record's index and the entry's own disagree.
    #[error("it stands as entry {record}, but its bytes say index {bytes}")]
    IndexMismatch {
        /// The index of the record or store key.
        record: u64,
        /// The index inside the entry.
        bytes: u64,
    },
    /// A filtered bundle's entry without its inclusion proof.
    #[error("no inclusion proof: a filtered bundle proves each entry under its latest checkpoint")]
    MissingProof,
    /// A complete bundle's entry with an inclusion proof.
    #[error(
        "an inclusion proof in a complete bundle, which proves its entries by rebuilding the tree"
    )]
    UnexpectedProof,
    /// An entry at or beyond the checkpoint meant to prove it.
    #[error("the latest checkpoint (size {size}) does not cover it")]
    Uncovered {
        /// The checkpoint's size.
        size: u64,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("not in the journal that checkpoint {size} signs: {source}")]
    Inclusion {
        /// The checkpoint's size.
        size: u64,
        /// How the proof failed.
        source: ProofError,
    },
    /// The tree rebuilt from the entries does not have the signed root.
    #[error(
        "the tree rebuilt from entries 0..{size} does not have the root this checkpoint signs: one of entries {first}..={last} was altered, added, removed or reordered (entries 0..{first} were proven by the checkpoint before), or the checkpoint's root was"
    )]
    RootMismatch {
        /// The checkpoint's size.
        size: u64,
        /// The first entry not covered by an earlier checkpoint that matched.
        first: u64,
        /// The last entry the checkpoint covers.
        last: u64,
    },
    /// A checkpoint covering entries that are not there.
    #[error(
        "it covers {size} entries, but only {entries} precede it in the {source_kind}: entries {entries}..{size} were removed (the journal was truncated) or misplaced"
    )]
    Truncation {
        /// The checkpoint's size.
        size: u64,
        /// The entries before it.
        entries: u64,
        /// `bundle` or `store`.
        source_kind: &'static str,
    },
    /// A complete bundle's checkpoint far from the entry that completes it.
    #[error(
        "it comes after {entries} entries: in a complete bundle a checkpoint follows the entry that brings the journal to its size"
    )]
    Misplaced {
        /// The entries before it.
        entries: u64,
    },
    /// Checkpoint sizes that do not increase.
    #[error("it follows the checkpoint of size {previous}: checkpoint sizes must increase")]
    CheckpointOrder {
        /// The size of the checkpoint before.
        previous: u64,
    },
    /// The checkpoint does not verify (signature, certificate, text).
    #[error("{0}")]
    Checkpoint(CheckpointError),
    /// The checkpoint is another hub's.
    #[error("it is hub `{found}`'s, but this is the journal of hub `{expected}`")]
    OtherHub {
        /// The hub the journal is of.
        expected: String,
        /// The hub the checkpoint names.
        found: String,
    },
    /// A store key and the checkpoint it holds disagree.
    #[error("it is stored under size {key}, but says size {size}")]
    KeyMismatch {
        /// The size in the key.
        key: u64,
        /// The size in the checkpoint.
        size: u64,
    },
    /// No consistency proof between two successive checkpoints of a filtered bundle.
    #[error("no consistency proof links it to the checkpoint of size {previous} before it")]
    MissingConsistency {
        /// The size of the checkpoint before.
        previous: u64,
    },
    /// The consistency proof does not verify.
    #[error("{0}")]
    Consistency(ProofError),
    /// A certificate revoked before it signed.
    #[error(
        "signed at {used_at} with a certificate (serial {serial}) revoked at {revoked_at}, before it signed"
    )]
    Revoked {
        /// The certificate's serial.
        serial: String,
        /// When it was revoked.
        revoked_at: String,
        /// When it signed (the entry's or the checkpoint's time).
        used_at: String,
    },
    /// The envelope is not the one the entry records.
    #[error("its SHA-256 is {actual}, not the digest {digest} the entry records")]
    Digest {
        /// What the entry records.
        digest: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The sender's signature does not verify.
    #[error("the sender's signature does not verify as of {at} ({code}): {source}", code = .source.code())]
    Signature {
        /// The time it was verified at: the acceptance.
        at: String,
        /// Why it does not verify.
        source: snodo_envelopes::Error,
    },
    /// A field of the envelope (or of what is recorded about it) disagrees with the entry.
    #[error("{field} is `{found}`, but the entry says `{expected}`")]
    Mismatch {
        /// The field, and whose it is.
        field: String,
        /// What the entry (or the signed envelope) says.
        expected: String,
        /// What the envelope (or the record) says.
        found: String,
    },
    /// An acceptance whose envelope is not there.
    #[error("it records an acceptance, but the envelope accepted is not in the {0}")]
    MissingEnvelope(&'static str),
    /// A body said to be pruned whose pruning the journal does not record.
    #[error("its body is missing as pruned, but {0}")]
    Pruning(String),
    /// An envelope that follows no acceptance.
    #[error("no acceptance recorded at this index precedes it")]
    OrphanEnvelope,
    /// The store failed, or holds a value that does not decode.
    #[error("{0}")]
    Store(String),
    /// A Merkle node of the store that is not the one the entries give.
    #[error(
        "the store's Merkle node at level {level}, index {index} is not the hash the entries give: the entries or the node were altered, and proofs the hub serves from it are wrong"
    )]
    Node {
        /// The node's level.
        level: u32,
        /// Its index in the level.
        index: u64,
    },
    /// A Merkle node the entries complete, absent from the store.
    #[error(
        "the store lacks the Merkle node at level {level}, index {index}, which the entries complete: the hub cannot prove them"
    )]
    NodeMissing {
        /// The node's level.
        level: u32,
        /// Its index in the level.
        index: u64,
    },
    /// The hub's state disagrees with the journal.
    #[error("{0}")]
    State(String),
}

impl Fault {
    /// A stable, machine-readable code (kebab-case); a checkpoint's or envelope's own error
    /// keeps its code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Fault::Unreadable(_) => "bundle-unreadable",
            Fault::Malformed(_) => "bundle-malformed",
            Fault::HubCertificate(_) => "bundle-hub-certificate",
            Fault::Format { .. } => "bundle-format",
            Fault::Sequence(_) => "bundle-sequence",
            Fault::Truncated => "bundle-truncated",
            Fault::Count { .. } => "bundle-count",
            Fault::Checksum { .. } => "bundle-checksum",
            Fault::TrailingData => "bundle-trailing-data",
            Fault::CaMismatch { .. } => "ca-mismatch",
            Fault::CaUnusable(_) => "ca-unusable",
            Fault::Encoding { .. } => "encoding",
            Fault::Entry(_) => "entry-malformed",
            Fault::OutOfOrder { .. } => "entry-out-of-order",
            Fault::NotIncreasing { .. } => "entry-out-of-order",
            Fault::IndexMismatch { .. } => "entry-index-mismatch",
            Fault::MissingProof => "inclusion-proof-missing",
            Fault::UnexpectedProof => "inclusion-proof-unexpected",
            Fault::Uncovered { .. } => "entry-not-covered",
            Fault::Inclusion { .. } => "inclusion-proof-invalid",
            Fault::RootMismatch { .. } => "root-mismatch",
            Fault::Truncation { .. } => "journal-truncated",
            Fault::Misplaced { .. } => "checkpoint-misplaced",
            Fault::CheckpointOrder { .. } => "checkpoint-order",
            Fault::Checkpoint(e) => e.code(),
            Fault::OtherHub { .. } => "checkpoint-other-hub",
            Fault::KeyMismatch { .. } => "store-key-mismatch",
            Fault::MissingConsistency { .. } => "consistency-proof-missing",
            Fault::Consistency(_) => "consistency-proof-invalid",
            Fault::Revoked { .. } => "certificate-revoked-before-use",
            Fault::Digest { .. } => "envelope-digest-mismatch",
            Fault::Signature { source, .. } => source.code(),
            Fault::Mismatch { .. } => "envelope-entry-mismatch",
            Fault::MissingEnvelope(_) => "envelope-missing",
            Fault::OrphanEnvelope => "envelope-orphan",
            Fault::Pruning(_) => "envelope-pruning-unproven",
            Fault::Store(_) => "store-unreadable",
            Fault::Node { .. } => "store-node-mismatch",
            Fault::NodeMissing { .. } => "store-node-missing",
            Fault::State(_) => "store-state-mismatch",
        }
    }
}

/// The first thing found wrong: where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{place}{}: {fault}", line_note(*.line, place))]
pub struct Failure {
    /// Where: the entry, envelope, checkpoint or proof at fault.
    pub place: Place,
    /// The bundle line it was read from, when it came from a bundle.
    pub line: Option<u64>,
    /// What is wrong.
    pub fault: Box<Fault>,
    /// Its position in the stream verified: the earliest failure is the one reported.
    pub(crate) position: u64,
}

fn line_note(line: Option<u64>, place: &Place) -> String {
    match (line, place) {
        (Some(_), Place::Line { .. } | Place::Header | Place::End) | (None, _) => String::new(),
        (Some(l), _) => format!(" (bundle line {l})"),
    }
}

impl Failure {
    /// The index of the entry at fault, when the failure is about one entry (or its envelope).
    #[must_use]
    pub fn entry(&self) -> Option<u64> {
        match self.place {
            Place::Entry(i) | Place::Envelope(i) => Some(i),
            _ => None,
        }
    }
}
