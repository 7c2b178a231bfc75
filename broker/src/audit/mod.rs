//! Auditing the journal: exporting it into a self-contained bundle, and verifying a bundle or a
//! hub's data directory offline, with nothing but the federation's CA.
//!
//! - [`bundle`]: the bundle, a streamable NDJSON file — a header (hub, CA, filters), the
//!   entries as their canonical bytes, the raw signed envelopes of the acceptances, the signed
//!   checkpoints and the proofs that tie them together, and an end record — its writer, and its
//!   verification ([`bundle::verify_file`]).
//! - [`datadir`]: the same verification over a hub's store, and an offline export from it.
//! - [`verify`]: what both share: the trust material, the checks, and a pool of threads for
//!   the signatures.
//! - [`failure`]: the [`Failure`] that names the first bad entry (or checkpoint, proof) and
//!   why; [`report`]: the [`Report`] that says what was verified, and how.
//! - [`client`]: the hub's journal API seen from an auditor: queries and exports over TLS with
//!   a client certificate.
//!
//! Verification never trusts the evidence it reads: every entry is decoded from its canonical
//! bytes and hashed again, every checkpoint's signature is checked against the CA, and every
//! envelope's signature against its sender's certificate at the time the hub accepted it.

pub mod bundle;
pub mod client;
pub mod datadir;
pub mod failure;
pub mod report;
pub mod verify;

pub use bundle::{BundleHeader, BundleWriter, FORMAT};
pub use client::{Filters, JournalClient};
pub use verify::{Failure, Fault, Place, Report, Trust};

/// Why an audit command could not do its work. A verification that ran and found the evidence
/// wanting is [`AuditError::Failed`]; everything else is about getting to the evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The evidence does not verify; the failure names the first bad entry and why.
    #[error("{0}")]
    Failed(Box<Failure>),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The CA or the revocation list cannot be used.
    #[error("trust material: {0}")]
    Trust(String),
    /// The hub's store cannot be opened or read.
    #[error("store: {0}")]
    Store(String),
    /// TLS to the hub cannot be set up from the certificate and key given.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The hub cannot be reached, or the connection broke.
    #[error("hub unreachable: {0}")]
    Transport(String),
    /// The hub refused the request with a problem+json answer.
    #[error("hub refused {what}: {status} {code}: {detail}")]
    Refused {
        /// The request, for the reader: `GET /v1/journal/checkpoint`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The problem's stable code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// The hub answered outside the journal API's contract.
    #[error("hub answered {what} outside the contract: {detail}")]
    Protocol {
        /// The request.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// An argument is not usable (a filter, a size).
    #[error("{0}")]
    Usage(String),
}

impl AuditError {
    /// A stable, machine-readable code for this error (kebab-case); a failed verification
    /// gives its fault's code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Failed(f) => f.fault.code(),
            AuditError::Io { .. } => "audit-io",
            AuditError::Trust(_) => "audit-trust",
            AuditError::Store(_) => "audit-store",
            AuditError::Tls(_) => "audit-tls",
            AuditError::Transport(_) => "hub-unreachable",
            AuditError::Refused { .. } => "hub-refused",
            AuditError::Protocol { .. } => "hub-protocol",
            AuditError::Usage(_) => "audit-usage",
        }
    }

    /// True when the same request may succeed later: the hub was unreachable, overloaded or
    /// rate-limiting. Never true of evidence that failed to verify.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            AuditError::Transport(_) => true,
            AuditError::Refused { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// True when the verification ran and the evidence failed it (exit status 1 and the
    /// failure's words), as opposed to evidence that could not be read at all.
    #[must_use]
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, AuditError::Failed(_))
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<Failure> for AuditError {
    fn from(f: Failure) -> Self {
        AuditError::Failed(Box::new(f))
    }
}
