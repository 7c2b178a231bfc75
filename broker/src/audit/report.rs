//! What a verification checked, and how: the [`Report`] printed as text or JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// How a bundle proves its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every entry from 0, every checkpoint after the entry that completes it: the verifier
    /// rebuilds the tree and compares its root with every checkpoint.
    Complete,
    /// Some entries, each with an inclusion proof under the latest checkpoint; the checkpoints
    /// first, linked by consistency proofs.
    Filtered,
}

/// A CA certificate, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct CaReport {
    /// Its subject.
    pub subject: String,
    /// SHA-256 of its DER, as `openssl x509 -fingerprint -sha256` prints it.
    pub sha256: String,
}

/// What the verification trusted.
#[derive(Clone, Debug, Serialize)]
pub struct TrustReport {
    /// The CA certificates.
    pub ca: Vec<CaReport>,
    /// True when the auditor gave the CA; false when the bundle's own was used.
    pub ca_pinned: bool,
    /// How many certificates the revocation list revokes, if one was given.
    pub crl_entries: Option<usize>,
}

/// What was verified of the entries.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EntriesReport {
    /// Entries verified.
    pub count: u64,
    /// The first index.
    pub first: Option<u64>,
    /// The last index.
    pub last: Option<u64>,
    /// How many of each kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Inclusion proofs verified (filtered bundles: one per entry).
    pub inclusion_proofs: u64,
}

/// What was verified of the envelopes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvelopesReport {
    /// Envelopes verified: digest, signature, header.
    pub count: u64,
    /// Of which XML-DSig.
    pub xml: u64,
    /// Of which JWS.
    pub json: u64,
    /// Envelopes signed by a certificate revoked after the hub accepted them (valid then).
    pub signer_revoked_later: u64,
    /// The first few of those.
    pub revoked_later: Vec<RevokedLater>,
    /// Acceptances whose body the hub pruned after its retention period, each pruning
    /// recorded in the journal (and verified like any entry); their digests stay.
    pub pruned: u64,
}

/// An envelope signed with a certificate revoked after its acceptance.
#[derive(Clone, Debug, Serialize)]
pub struct RevokedLater {
    /// The acceptance's journal index.
    pub index: u64,
    /// The certificate's serial.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: String,
}

/// A hub certificate that signed checkpoints.
#[derive(Clone, Debug, Serialize)]
pub struct HubCertReport {
    /// The hub it names.
    pub hub: String,
    /// SHA-256 of its DER.
    pub sha256: String,
    /// Its serial.
    pub serial: String,
    /// How many checkpoints it signed.
    pub checkpoints: u64,
}

/// The latest checkpoint verified.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointSummary {
    /// Its size.
    pub size: u64,
    /// Its root, standard base64.
    pub root: String,
    /// When the hub signed it.
    pub time: String,
}

/// What was verified of the checkpoints and the proofs between them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointsReport {
    /// Checkpoints whose signature verified.
    pub count: u64,
    /// The first size.
    pub first_size: Option<u64>,
    /// The latest.
    pub latest: Option<CheckpointSummary>,
    /// Roots compared with the tree rebuilt from the entries (complete mode).
    pub roots_rebuilt: u64,
    /// Consistency proofs verified.
    pub consistency_proofs: u64,
    /// The hub certificates that signed them.
    pub hub_certificates: Vec<HubCertReport>,
}

/// What a verification checked, and how. Printed as text (its `Display`) or JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was verified: `bundle FILE` or `data directory D`.
    pub source: String,
    /// How the entries are proven.
    pub mode: Mode,
    /// The hub whose journal it is.
    pub hub: Option<String>,
    /// The trust material.
    pub trust: TrustReport,
    /// Entries.
    pub entries: EntriesReport,
    /// Envelopes.
    pub envelopes: EnvelopesReport,
    /// Checkpoints and consistency.
    pub checkpoints: CheckpointsReport,
    /// Notes on checks specific to the source (the bundle's checksum, the store's nodes).
    pub notes: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.entries;
        let c = &self.checkpoints;
        let v = &self.envelopes;
        writeln!(
            f,
            "Verified {}: the journal of hub `{}`.",
            self.source,
            self.hub.as_deref().unwrap_or("?")
        )?;
        let range = match (e.first, e.last) {
            (Some(a), Some(b)) => format!(" ({a}..={b})"),
            _ => String::new(),
        };
        let kinds = e
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            f,
            "  entries      {}{range}{}",
            e.count,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {kinds}")
            }
        )?;
        match self.mode {
            Mode::Complete => writeln!(
                f,
                "               every entry decoded from its canonical bytes and hashed again; the Merkle tree\n               rebuilt from all of them has the root of every checkpoint ({} compared), which\n               proves each entry's inclusion and the consistency of successive checkpoints",
                c.roots_rebuilt
            )?,
            Mode::Filtered => writeln!(
                f,
                "               every entry decoded from its canonical bytes and hashed again; {} inclusion\n               proofs verified under the latest checkpoint",
                e.inclusion_proofs
            )?,
        }
        writeln!(
            f,
            "  envelopes    {} ({} XML, {} JSON): SHA-256 equal to the accepted entry's digest; the sender's\n               signature and certificate chain verified as of the acceptance; header equal to the entry",
            v.count, v.xml, v.json
        )?;
        if v.pruned > 0 {
            writeln!(
                f,
                "               {} bodies pruned after the retention period: the journal records each pruning, and
               the digest of what was accepted",
                v.pruned
            )?;
        }
        if v.signer_revoked_later > 0 {
            writeln!(
                f,
                "               {} signed by certificates revoked after their acceptance (valid when accepted):",
                v.signer_revoked_later
            )?;
            for r in &v.revoked_later {
                writeln!(
                    f,
                    "                 entry {}: serial {} revoked at {}",
                    r.index, r.serial, r.revoked_at
                )?;
            }
        }
        let sizes = match (c.first_size, &c.latest) {
            (Some(a), Some(l)) => format!(" (sizes {a}..={})", l.size),
            _ => String::new(),
        };
        writeln!(
            f,
            "  checkpoints  {}{sizes}: the hub's signature verified, its certificate chained to the CA as of\n               each checkpoint's time{}",
            c.count,
            if c.consistency_proofs > 0 {
                format!(
                    "; {} consistency proofs between successive checkpoints verified",
                    c.consistency_proofs
                )
            } else {
                String::new()
            }
        )?;
        for h in &c.hub_certificates {
            writeln!(
                f,
                "               signed by hub `{}`: certificate serial {}, SHA-256 {} ({} checkpoints)",
                h.hub, h.serial, h.sha256, h.checkpoints
            )?;
        }
        if let Some(l) = &c.latest {
            writeln!(
                f,
                "  latest       size {}, root {}, signed at {}",
                l.size, l.root, l.time
            )?;
        }
        for ca in &self.trust.ca {
            writeln!(f, "  CA           {} SHA-256 {}", ca.subject, ca.sha256)?;
        }
        if self.trust.ca_pinned {
            writeln!(f, "               pinned with --ca")?;
        } else {
            writeln!(
                f,
                "               taken from the bundle itself, NOT pinned: compare this fingerprint with the\n               federation's published one, or verify again with --ca"
            )?;
        }
        match self.trust.crl_entries {
            Some(n) => writeln!(
                f,
                "  revocation   checked against the revocation list given ({n} certificates revoked)"
            )?,
            None => writeln!(f, "  revocation   not checked: no --crl given")?,
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        Ok(())
    }
}
