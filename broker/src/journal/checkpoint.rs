//! Signed checkpoints: the hub's signature on the size and root hash of its journal at a time.
//!
//! The signed text is in the style of a C2SP tlog checkpoint, four lines each ending in `\n`:
//!
//! ```text
//! snodo.hub/<name>
//! <tree size, decimal>
//! <root hash, standard base64>
//! <time, RFC 3339 UTC>
//! ```
//!
//! A [`SignedCheckpoint`] carries that text, the signature over its exact bytes (RS256 or ES256,
//! as [`Signer::sign_bytes`] makes it) and the hub's certificate, whose SAN URI
//! `urn:snodo:hub:<name>` must name the hub of the origin line.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use snodo_envelopes::pki::HUB_URI_PREFIX;
use snodo_envelopes::signer::verify_bytes;
use snodo_envelopes::{Algorithm, Identity, Signer, TrustStore, VerifiedCert};
use time::OffsetDateTime;

use super::entry::{format_utc, shorten};
use super::merkle::Hash;

/// What every checkpoint origin starts with; the hub's name follows.
pub const ORIGIN_PREFIX: &str = "snodo.hub/";

/// The size and root of a hub's journal at a time: what the hub signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log: `snodo.hub/<name>`, the hub whose certificate signs it.
    pub origin: String,
    /// The number of entries in the journal.
    pub size: u64,
    /// The Merkle tree root over those entries.
    pub root: Hash,
    /// When the hub took it, in UTC.
    pub time: OffsetDateTime,
}

/// Why a checkpoint could not be written, read, signed or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The text is not four lines of origin, size, root and time in their canonical form.
    #[error("checkpoint text is malformed: {0}")]
    Malformed(String),
    /// The origin cannot stand on one line of a checkpoint.
    #[error(
        "checkpoint origin `{0}` is invalid: it must be non-empty, without spaces, control characters or `+`"
    )]
    Origin(String),
    /// The time cannot be written as RFC 3339 in UTC.
    #[error("checkpoint time {0}")]
    Time(String),
    /// The signature or the certificate is not base64.
    #[error("checkpoint {field} is not valid base64: {reason}")]
    Encoding {
        /// `signature` or `certificate`.
        field: &'static str,
        /// What the decoder found.
        reason: String,
    },
    /// The signature algorithm is not RS256 or ES256.
    #[error("checkpoint signature algorithm `{0}` is not allowed: use RS256 or ES256")]
    AlgorithmNotAllowed(String),
    /// The algorithm named is not the one the certificate's key signs with.
    #[error("checkpoint says it is signed {algorithm}, but the certificate's key signs {key}")]
    AlgorithmMismatch {
        /// The algorithm the checkpoint names.
        algorithm: String,
        /// The algorithm of the certificate's key.
        key: String,
    },
    /// The certificate does not chain to the federation CA, is expired or revoked, or names no
    /// snodo identity.
    #[error("checkpoint certificate refused: {0}")]
    Certificate(snodo_envelopes::Error),
    /// The certificate names an entity, not a hub.
    #[error("checkpoint is signed by {0}, not by a hub")]
    NotAHub(String),
    /// The origin names another hub than the certificate does.
    #[error("checkpoint origin `{origin}` is not that of hub `{hub}`, which signed it")]
    OriginMismatch {
        /// The origin line.
        origin: String,
        /// The hub the certificate names.
        hub: String,
    },
    /// The signature does not verify over the checkpoint text with the certificate's key.
    #[error("checkpoint signature does not verify: {0}")]
    SignatureInvalid(String),
    /// The hub's key and certificate cannot sign checkpoints.
    #[error("hub signing key: {0}")]
    Key(String),
}

impl CheckpointError {
    /// A stable, machine-readable code for this error (kebab-case); a refused certificate keeps
    /// the envelopes crate's code (`certificate-expired`, …).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointError::Malformed(_) => "checkpoint-malformed",
            CheckpointError::Origin(_) => "checkpoint-origin-invalid",
            CheckpointError::Time(_) => "checkpoint-time-invalid",
            CheckpointError::Encoding { .. } => "checkpoint-encoding",
            CheckpointError::AlgorithmNotAllowed(_) => "checkpoint-algorithm-not-allowed",
            CheckpointError::AlgorithmMismatch { .. } => "checkpoint-algorithm-mismatch",
            CheckpointError::Certificate(e) => e.code(),
            CheckpointError::NotAHub(_) => "checkpoint-signer-not-hub",
            CheckpointError::OriginMismatch { .. } => "checkpoint-origin-mismatch",
            CheckpointError::SignatureInvalid(_) => "checkpoint-signature-invalid",
            CheckpointError::Key(_) => "hub-key-unusable",
        }
    }

    /// True when the fault lies in the checkpoint or its signer, so that checking it again can
    /// never succeed; false for the hub's own key, which may be fixed.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            CheckpointError::Key(_) => false,
            CheckpointError::Certificate(e) => e.is_permanent(),
            _ => true,
        }
    }
}

impl Checkpoint {
    /// The checkpoint of hub `hub`'s journal of `size` entries with root `root` at `time`.
    #[must_use]
    pub fn new(hub: &str, size: u64, root: Hash, time: OffsetDateTime) -> Self {
        Checkpoint {
            origin: format!("{ORIGIN_PREFIX}{hub}"),
            size,
            root,
            time,
        }
    }

    /// The hub the origin names, if it is a snodo hub origin.
    #[must_use]
    pub fn hub(&self) -> Option<&str> {
        self.origin.strip_prefix(ORIGIN_PREFIX)
    }

    /// The text the hub signs.
    ///
    /// # Errors
    /// [`CheckpointError::Origin`] for an origin that cannot stand on its line;
    /// [`CheckpointError::Time`] for a time not in UTC or outside the years 0000–9999.
    pub fn body(&self) -> Result<String, CheckpointError> {
        let bad = |c: char| c.is_whitespace() || c.is_control() || c == '+';
        if self.origin.is_empty() || self.origin.chars().any(bad) {
            return Err(CheckpointError::Origin(shorten(&self.origin)));
        }
        let time = format_utc(self.time).map_err(CheckpointError::Time)?;
        Ok(format!(
            "{}\n{}\n{}\n{time}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        ))
    }

    /// Reads a checkpoint text, refusing any but the canonical form (the one [`Self::body`]
    /// writes), so that the text is exactly what was signed.
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`] naming the line at fault.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let malformed = |s: String| CheckpointError::Malformed(s);
        let lines = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("it does not end with a newline".into()))?;
        let lines: Vec<&str> = lines.split('\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(malformed(format!(
                "it has {} lines, not 4 (origin, size, root hash, time)",
                lines.len()
            )));
        };
        let size = parse_size(size).ok_or_else(|| {
            malformed(format!(
                "size `{}` is not a decimal number of entries",
                shorten(size)
            ))
        })?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "root `{}` is not a base64 SHA-256 hash",
                    shorten(root)
                ))
            })?;
        let time = snodo_envelopes::header::parse_time("time", time).map_err(|e| match e {
            snodo_envelopes::Error::InvalidField { reason, .. } => {
                malformed(format!("time {reason}"))
            }
            other => malformed(other.to_string()),
        })?;
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time,
        };
        if checkpoint.body()? != text {
            return Err(malformed(
                "it is not in canonical form (another spelling of the same time or hash)".into(),
            ));
        }
        Ok(checkpoint)
    }
}

/// A decimal `u64` without sign or leading zeros.
fn parse_size(s: &str) -> Option<u64> {
    let canonical = s == "0" || (!s.starts_with('0') && s.bytes().all(|c| c.is_ascii_digit()));
    if canonical { s.parse().ok() } else { None }
}

/// The hub's key and certificate, ready to sign checkpoints.
///
/// It holds the certificate beside the [`Signer`] because a `Signer` does not expose the one
/// it was loaded with, and a signed checkpoint carries it.
#[derive(Clone)]
pub struct CheckpointSigner {
    /// The hub's key.
    signer: Signer,
    /// The hub's certificate, DER, carried in every signed checkpoint.
    certificate: Vec<u8>,
    /// The hub's name, from the certificate's `urn:snodo:hub:<name>`.
    hub: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("hub", &self.hub)
            .field("algorithm", &self.signer.algorithm)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A checkpoint signer from the hub's signer and its certificate.
    ///
    /// # Errors
    /// [`CheckpointError::Key`] when the signer is not a hub's, its name cannot be a checkpoint
    /// origin, or the certificate is not the signer's.
    pub fn new(signer: Signer, certificate: &X509) -> Result<Self, CheckpointError> {
        let key = |s: String| CheckpointError::Key(s);
        let Identity::Hub(hub) = &signer.identity else {
            return Err(key(format!(
                "the key belongs to {}, not to a hub",
                signer.identity
            )));
        };
        if let Err(e) = Checkpoint::new(hub, 0, [0; 32], OffsetDateTime::UNIX_EPOCH).body() {
            return Err(key(format!(
                "the hub's name cannot stand in a checkpoint: {e}"
            )));
        }
        let uri = format!("{HUB_URI_PREFIX}{hub}");
        let names_hub = certificate
            .subject_alt_names()
            .into_iter()
            .flatten()
            .any(|n| n.uri() == Some(uri.as_str()));
        if !names_hub {
            return Err(key(format!("the certificate does not name {uri}")));
        }
        // Prove the pair: sign and check with the certificate's public key.
        let probe = b"snodo checkpoint signer: key and certificate match";
        let public = certificate.public_key().map_err(|e| key(e.to_string()))?;
        let signature = signer.sign_bytes(probe).map_err(|e| key(e.to_string()))?;
        if !verify_bytes(signer.algorithm, &public, probe, &signature).unwrap_or(false) {
            return Err(key("the certificate is not that of the hub's key".into()));
        }
        Ok(CheckpointSigner {
            hub: hub.clone(),
            certificate: certificate.to_der().map_err(|e| key(e.to_string()))?,
            signer,
        })
    }

    /// Loads the hub's key and certificate from PEM files (as `snodo pki init` writes
    /// `hub.key` and `hub.crt`).
    ///
    /// # Errors
    /// [`CheckpointError::Key`] when a file is unreadable or the pair is not a hub's.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self, CheckpointError> {
        let signer =
            Signer::load(key_path, cert_path).map_err(|e| CheckpointError::Key(e.to_string()))?;
        let cert = snodo_envelopes::pki::load_cert(cert_path)
            .map_err(|e| CheckpointError::Key(e.to_string()))?;
        Self::new(signer, &cert)
    }

    /// The hub's name.
    #[must_use]
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// This hub's checkpoint of a journal of `size` entries with root `root` at `time`.
    #[must_use]
    pub fn checkpoint(&self, size: u64, root: Hash, time: OffsetDateTime) -> Checkpoint {
        Checkpoint::new(&self.hub, size, root, time)
    }

    /// Signs `checkpoint`; shorthand for [`SignedCheckpoint::sign`].
    ///
    /// # Errors
    /// As [`SignedCheckpoint::sign`].
    pub fn sign(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, CheckpointError> {
        SignedCheckpoint::sign(checkpoint, self)
    }
}

/// A checkpoint with the hub's signature and certificate, as receipts and auditors get it.
///
/// In JSON, `checkpoint` is the signed text itself, four lines (`jq -r .checkpoint` prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The checkpoint; serialized as its text.
    #[serde(with = "checkpoint_text")]
    pub checkpoint: Checkpoint,
    /// `RS256` or `ES256`.
    pub algorithm: String,
    /// The signature over the checkpoint text, standard base64 (PKCS#1 v1.5 for RS256,
    /// `r || s` for ES256).
    pub signature: String,
    /// The hub's certificate, standard base64 of its DER.
    pub certificate: String,
}

/// A checkpoint whose signature verified, with the hub that signed it.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The name of the hub that signed it.
    pub hub: String,
    /// The hub's certificate, verified.
    pub certificate: Arc<VerifiedCert>,
}

impl SignedCheckpoint {
    /// Signs `checkpoint` with the hub's key.
    ///
    /// # Errors
    /// [`CheckpointError::OriginMismatch`] when the checkpoint names another hub; as
    /// [`Checkpoint::body`]; [`CheckpointError::Key`] when the key fails to sign.
    pub fn sign(
        checkpoint: Checkpoint,
        signer: &CheckpointSigner,
    ) -> Result<Self, CheckpointError> {
        if checkpoint.hub() != Some(signer.hub()) {
            return Err(CheckpointError::OriginMismatch {
                origin: shorten(&checkpoint.origin),
                hub: signer.hub.clone(),
            });
        }
        let body = checkpoint.body()?;
        let signature = signer
            .signer
            .sign_bytes(body.as_bytes())
            .map_err(|e| CheckpointError::Key(e.to_string()))?;
        Ok(SignedCheckpoint {
            checkpoint,
            algorithm: signer.signer.algorithm.jws_name().to_owned(),
            signature: STANDARD.encode(signature),
            certificate: STANDARD.encode(&signer.certificate),
        })
    }

    /// Verifies the checkpoint as of `now`: the certificate chains to the federation CA, is
    /// valid at `now` and not revoked; it names a hub, and the origin is that hub's; the
    /// signature is over the exact checkpoint text.
    ///
    /// # Errors
    /// The [`CheckpointError`] naming the first check that failed.
    pub fn verify(
        &self,
        trust: &TrustStore,
        now: OffsetDateTime,
    ) -> Result<VerifiedCheckpoint, CheckpointError> {
        let algorithm = Algorithm::from_jws(&self.algorithm)
            .map_err(|_| CheckpointError::AlgorithmNotAllowed(shorten(&self.algorithm)))?;
        let der = decode("certificate", &self.certificate)?;
        let signature = decode("signature", &self.signature)?;
        let cert = trust
            .verify_cert(&der, &[], now)
            .map_err(CheckpointError::Certificate)?;
        let hub = match &cert.identity {
            Identity::Hub(hub) => hub.clone(),
            other => return Err(CheckpointError::NotAHub(other.to_string())),
        };
        if self.checkpoint.hub() != Some(hub.as_str()) {
            return Err(CheckpointError::OriginMismatch {
                origin: shorten(&self.checkpoint.origin),
                hub,
            });
        }
        let key = Algorithm::for_key(&cert.public_key).map_err(CheckpointError::Certificate)?;
        if key != algorithm {
            return Err(CheckpointError::AlgorithmMismatch {
                algorithm: algorithm.jws_name().into(),
                key: key.jws_name().into(),
            });
        }
        let body = self.checkpoint.body()?;
        match verify_bytes(algorithm, &cert.public_key, body.as_bytes(), &signature) {
            Ok(true) => Ok(VerifiedCheckpoint {
                checkpoint: self.checkpoint.clone(),
                hub,
                certificate: cert,
            }),
            Ok(false) => Err(CheckpointError::SignatureInvalid(format!(
                "it was not made over this text by the key of hub `{hub}`"
            ))),
            Err(snodo_envelopes::Error::SignatureInvalid(reason)) => {
                Err(CheckpointError::SignatureInvalid(reason))
            }
            Err(e) => Err(CheckpointError::SignatureInvalid(e.to_string())),
        }
    }
}

/// How many signed checkpoints [`VerifiedCheckpoints`] keeps.
const VERIFIED_KEPT: usize = 16;

/// The last signed checkpoints that verified against one trust store, found by their whole
/// signed form. The receipts of one group commit share their checkpoint, so whoever checks
/// them (a connector submitting a batch) verifies its signature once. A checkpoint's
/// verification depends on nothing but its signed form and the trust store (the certificate
/// is checked at the checkpoint's own time), so one found here would verify again; one that
/// differs in any byte is verified afresh. Use one per trust store.
#[derive(Debug, Default)]
pub struct VerifiedCheckpoints {
    last: Mutex<VecDeque<(SignedCheckpoint, VerifiedCheckpoint)>>,
}

impl VerifiedCheckpoints {
    /// [`SignedCheckpoint::verify`] at the checkpoint's own time, or what it gave when
    /// `signed` verified here before.
    ///
    /// # Errors
    /// As [`SignedCheckpoint::verify`].
    pub fn verify(
        &self,
        signed: &SignedCheckpoint,
        trust: &TrustStore,
    ) -> Result<VerifiedCheckpoint, CheckpointError> {
        let known = self.last.lock().ok().and_then(|last| {
            last.iter()
                .find(|(s, _)| s == signed)
                .map(|(_, v)| v.clone())
        });
        if let Some(v) = known {
            return Ok(v);
        }
        let v = signed.verify(trust, signed.checkpoint.time)?;
        if let Ok(mut last) = self.last.lock() {
            last.push_front((signed.clone(), v.clone()));
            last.truncate(VERIFIED_KEPT);
        }
        Ok(v)
    }
}

fn decode(field: &'static str, value: &str) -> Result<Vec<u8>, CheckpointError> {
    STANDARD
        .decode(value)
        .map_err(|e| CheckpointError::Encoding {
            field,
            reason: e.to_string(),
        })
}

/// Serde for [`SignedCheckpoint::checkpoint`]: the checkpoint text.
/// A signed checkpoint shared by every receipt of one group commit: cloned by reference,
/// and serialized from the JSON made once when the hub stored it, not once per receipt.
///
/// It reads as a [`SignedCheckpoint`]; changing it through `DerefMut` (tests that tamper with
/// a receipt) drops the stored JSON, so what is serialized is always what it holds.
#[derive(Clone, Debug)]
pub struct SharedCheckpoint {
    value: Arc<SignedCheckpoint>,
    /// `value` as JSON, when it was made already.
    json: Option<Arc<serde_json::value::RawValue>>,
}

impl SharedCheckpoint {
    /// `checkpoint` with its JSON, made now: the bytes the hub stores, and every receipt's.
    ///
    /// # Errors
    /// As [`Checkpoint::body`], when the checkpoint cannot be written as text.
    pub fn with_json(checkpoint: SignedCheckpoint) -> Result<Self, serde_json::Error> {
        let json = serde_json::value::to_raw_value(&checkpoint)?;
        Ok(SharedCheckpoint {
            value: Arc::new(checkpoint),
            json: Some(Arc::from(json)),
        })
    }

    /// The JSON made by [`SharedCheckpoint::with_json`], if any.
    #[must_use]
    pub fn json(&self) -> Option<&str> {
        self.json.as_deref().map(serde_json::value::RawValue::get)
    }
}

impl From<SignedCheckpoint> for SharedCheckpoint {
    fn from(value: SignedCheckpoint) -> Self {
        SharedCheckpoint {
            value: Arc::new(value),
            json: None,
        }
    }
}

impl std::ops::Deref for SharedCheckpoint {
    type Target = SignedCheckpoint;

    fn deref(&self) -> &SignedCheckpoint {
        &self.value
    }
}

impl std::ops::DerefMut for SharedCheckpoint {
    fn deref_mut(&mut self) -> &mut SignedCheckpoint {
        self.json = None;
        Arc::make_mut(&mut self.value)
    }
}

impl PartialEq for SharedCheckpoint {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for SharedCheckpoint {}

impl Serialize for SharedCheckpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Some(json) => json.serialize(s),
            None => self.value.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SharedCheckpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SignedCheckpoint::deserialize(d).map(Self::from)
    }
}

mod checkpoint_text {
    use serde::{Deserialize as _, Deserializer, Serializer, de, ser};

    use super::Checkpoint;

    pub(super) fn serialize<S: Serializer>(c: &Checkpoint, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&c.body().map_err(ser::Error::custom)?)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Checkpoint, D::Error> {
        Checkpoint::parse(&String::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_envelopes::EntityId;
    use snodo_envelopes::pki::{self, KeyType};
    use time::macros::datetime;

    struct Pki {
        _dir: tempfile::TempDir,
        dir: std::path::PathBuf,
        trust: TrustStore,
    }

    fn pki(kind: KeyType) -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        pki::init_with_hub(
            &dir,
            &["comune:001272".parse::<EntityId>().unwrap()],
            kind,
            kind,
        )
        .unwrap();
        let trust = TrustStore::load(&dir.join(pki::CA_CERT), None).unwrap();
        Pki {
            _dir: tmp,
            dir,
            trust,
        }
    }

    fn hub(p: &Pki) -> CheckpointSigner {
        CheckpointSigner::load(&p.dir.join(pki::HUB_KEY), &p.dir.join(pki::HUB_CERT)).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint::new("hub", 300, [7; 32], datetime!(2025-03-01 10:00:00.5 UTC))
    }

    #[test]
    fn a_shared_checkpoint_serializes_as_what_it_holds() {
        let p = pki(KeyType::P256);
        let signed = hub(&p).sign(checkpoint()).unwrap();
        let plain = serde_json::to_string(&signed).unwrap();
        let mut shared = SharedCheckpoint::with_json(signed.clone()).unwrap();
        assert_eq!(shared.json(), Some(plain.as_str()));
        assert_eq!(serde_json::to_string(&shared).unwrap(), plain);
        assert_eq!(
            serde_json::to_string(&vec![shared.clone(); 2]).unwrap(),
            format!("[{plain},{plain}]")
        );
        let read: SharedCheckpoint = serde_json::from_str(&plain).unwrap();
        assert_eq!(*read, signed);
        assert_eq!(read, shared);
        // Changed in place: the JSON made before is dropped, never served stale.
        shared.signature = "AAAA".into();
        assert_eq!(shared.json(), None);
        assert_eq!(
            serde_json::to_string(&shared).unwrap(),
            plain.replace(&signed.signature, "AAAA")
        );
        assert_ne!(shared, read);
    }

    #[test]
    fn the_text_is_four_canonical_lines() {
        let body = checkpoint().body().unwrap();
        assert_eq!(
            body,
            "snodo.hub/hub\n300\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n2025-03-01T10:00:00.5Z\n"
        );
        assert_eq!(Checkpoint::parse(&body).unwrap(), checkpoint());
        assert_eq!(checkpoint().hub(), Some("hub"));
    }

    #[test]
    fn other_texts_are_refused_with_the_line_at_fault() {
        let body = checkpoint().body().unwrap();
        let err = |t: &str| Checkpoint::parse(t).unwrap_err().to_string();
        assert_eq!(
            err(body.trim_end()),
            "checkpoint text is malformed: it does not end with a newline"
        );
        assert_eq!(
            err(&format!("{body}extension\n")),
            "checkpoint text is malformed: it has 5 lines, not 4 (origin, size, root hash, time)"
        );
        assert_eq!(
            err(&body.replace("\n300\n", "\n0300\n")),
            "checkpoint text is malformed: size `0300` is not a decimal number of entries"
        );
        assert_eq!(
            err(&body.replace("\n300\n", "\n-1\n")),
            "checkpoint text is malformed: size `-1` is not a decimal number of entries"
        );
        assert!(err(&body.replace("BwcH", "!!!!")).contains("root `!!!!"));
        assert!(
            err(&body.replace("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "Bwc="))
                .contains("is not a base64 SHA-256 hash")
        );
        assert!(err(&body.replace(".5Z", ".5+00:00")).contains("not in canonical form"));
        assert!(
            err(&body.replace(".5Z", ".5+01:00"))
                .contains("time `2025-03-01T10:00:00.5+01:00` is not in UTC")
        );
        assert!(
            err(&body.replace("snodo.hub/hub", "snodo hub"))
                .contains("origin `snodo hub` is invalid")
        );
        assert_eq!(
            Checkpoint::parse("0\n").unwrap_err().code(),
            "checkpoint-malformed"
        );
    }

    #[test]
    fn signed_checkpoints_verify_and_serialize_as_json() {
        for kind in [KeyType::P256, KeyType::Rsa2048] {
            let p = pki(kind);
            let hub = hub(&p);
            let now = OffsetDateTime::now_utc();
            let signed = hub.sign(hub.checkpoint(300, [7; 32], now)).unwrap();
            let verified = signed.verify(&p.trust, now).unwrap();
            assert_eq!(verified.hub, "hub");
            assert_eq!(verified.checkpoint.size, 300);

            let json = serde_json::to_value(&signed).unwrap();
            assert_eq!(
                json["algorithm"],
                if kind == KeyType::P256 {
                    "ES256"
                } else {
                    "RS256"
                }
            );
            assert!(
                json["checkpoint"]
                    .as_str()
                    .unwrap()
                    .starts_with("snodo.hub/hub\n300\n")
            );
            let back: SignedCheckpoint = serde_json::from_value(json).unwrap();
            assert_eq!(back, signed);
            back.verify(&p.trust, now).unwrap();
        }
    }

    #[test]
    fn any_change_to_a_signed_checkpoint_is_refused() {
        let p = pki(KeyType::P256);
        let hub = hub(&p);
        let now = OffsetDateTime::now_utc();
        let signed = hub.sign(hub.checkpoint(300, [7; 32], now)).unwrap();
        let refuse = |s: SignedCheckpoint| s.verify(&p.trust, now).unwrap_err();

        let mut s = signed.clone();
        s.checkpoint.size = 301;
        let e = refuse(s);
        assert_eq!(e.code(), "checkpoint-signature-invalid");
        assert_eq!(
            e.to_string(),
            "checkpoint signature does not verify: it was not made over this text by the key of hub `hub`"
        );
        let mut s = signed.clone();
        s.checkpoint.root[0] ^= 1;
        assert_eq!(refuse(s).code(), "checkpoint-signature-invalid");
        let mut s = signed.clone();
        s.checkpoint.time += time::Duration::SECOND;
        assert_eq!(refuse(s).code(), "checkpoint-signature-invalid");

        let mut s = signed.clone();
        s.checkpoint.origin = "snodo.hub/other".into();
        assert_eq!(
            refuse(s).to_string(),
            "checkpoint origin `snodo.hub/other` is not that of hub `hub`, which signed it"
        );
        let mut s = signed.clone();
        s.algorithm = "none".into();
        assert_eq!(
            refuse(s).to_string(),
            "checkpoint signature algorithm `none` is not allowed: use RS256 or ES256"
        );
        let mut s = signed.clone();
        s.algorithm = "RS256".into();
        assert_eq!(
            refuse(s).to_string(),
            "checkpoint says it is signed RS256, but the certificate's key signs ES256"
        );
        let mut s = signed.clone();
        s.signature = "not base64!".into();
        assert!(
            refuse(s)
                .to_string()
                .starts_with("checkpoint signature is not valid base64")
        );
        let mut s = signed.clone();
        s.signature = STANDARD.encode([0u8; 10]);
        assert_eq!(
            refuse(s).to_string(),
            "checkpoint signature does not verify: an ES256 signature is 64 bytes, not 10"
        );
        let mut s = signed.clone();
        s.certificate = STANDARD.encode(b"not a certificate");
        assert_eq!(refuse(s).code(), "certificate-malformed");

        // Before the certificate's validity.
        let e = signed
            .verify(&p.trust, datetime!(2001-01-01 0:00 UTC))
            .unwrap_err();
        assert_eq!(e.code(), "certificate-expired");
        assert!(e.to_string().starts_with("checkpoint certificate refused: signer certificate is not valid at 2001-01-01T00:00:00Z"));

        // Another federation's CA.
        let other = pki(KeyType::P256);
        let e = signed.verify(&other.trust, now).unwrap_err();
        assert_eq!(e.code(), "certificate-untrusted");
    }

    #[test]
    fn an_entity_cannot_sign_checkpoints() {
        let p = pki(KeyType::P256);
        let key = p.dir.join("comune-001272.key");
        let cert = p.dir.join("comune-001272.crt");
        assert_eq!(
            CheckpointSigner::load(&key, &cert).unwrap_err().to_string(),
            "hub signing key: the key belongs to comune:001272, not to a hub"
        );
        // A forgery made by hand with the entity's key and certificate.
        let entity = Signer::load(&key, &cert).unwrap();
        let checkpoint = checkpoint();
        let forged = SignedCheckpoint {
            signature: STANDARD.encode(
                entity
                    .sign_bytes(checkpoint.body().unwrap().as_bytes())
                    .unwrap(),
            ),
            checkpoint,
            algorithm: "ES256".into(),
            certificate: STANDARD.encode(pki::load_cert(&cert).unwrap().to_der().unwrap()),
        };
        let e = forged
            .verify(&p.trust, OffsetDateTime::now_utc())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint is signed by comune:001272, not by a hub"
        );
        assert_eq!(e.code(), "checkpoint-signer-not-hub");

        // The hub's certificate with the entity's signature.
        let hub = hub(&p);
        let mut s = hub
            .sign(hub.checkpoint(1, [0; 32], OffsetDateTime::now_utc()))
            .unwrap();
        s.signature = STANDARD.encode(
            entity
                .sign_bytes(s.checkpoint.body().unwrap().as_bytes())
                .unwrap(),
        );
        assert_eq!(
            s.verify(&p.trust, OffsetDateTime::now_utc())
                .unwrap_err()
                .code(),
            "checkpoint-signature-invalid"
        );
    }

    #[test]
    fn a_hub_signs_only_its_own_checkpoints_with_its_own_certificate() {
        let p = pki(KeyType::P256);
        let hub = hub(&p);
        let e = hub
            .sign(Checkpoint::new(
                "elsewhere",
                1,
                [0; 32],
                OffsetDateTime::now_utc(),
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint origin `snodo.hub/elsewhere` is not that of hub `hub`, which signed it"
        );

        let signer = Signer::load(&p.dir.join(pki::HUB_KEY), &p.dir.join(pki::HUB_CERT)).unwrap();
        let entity_cert = pki::load_cert(&p.dir.join("comune-001272.crt")).unwrap();
        assert_eq!(
            CheckpointSigner::new(signer, &entity_cert)
                .unwrap_err()
                .to_string(),
            "hub signing key: the certificate does not name urn:snodo:hub:hub"
        );
        let e = hub
            .sign(Checkpoint::new(
                "hub",
                1,
                [0; 32],
                datetime!(2025-01-01 1:00 +01:00),
            ))
            .unwrap_err();
        assert_eq!(e.code(), "checkpoint-time-invalid");
        assert!(!CheckpointError::Key(String::new()).is_permanent());
        assert!(e.is_permanent());
    }

    #[test]
    fn json_with_unknown_fields_or_a_bad_text_is_refused() {
        let p = pki(KeyType::P256);
        let hub = hub(&p);
        let signed = hub
            .sign(hub.checkpoint(3, [1; 32], OffsetDateTime::now_utc()))
            .unwrap();
        let mut json = serde_json::to_value(&signed).unwrap();
        json["extra"] = 1.into();
        let e = serde_json::from_value::<SignedCheckpoint>(json).unwrap_err();
        assert!(e.to_string().starts_with("unknown field `extra`"), "{e}");
        let mut json = serde_json::to_value(&signed).unwrap();
        json["checkpoint"] = "snodo.hub/hub\n3\n".into();
        let e = serde_json::from_value::<SignedCheckpoint>(json).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint text is malformed: it has 2 lines, not 4 (origin, size, root hash, time)"
        );
    }
}
