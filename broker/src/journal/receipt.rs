//! The receipt the hub returns on accepting an envelope: the `accepted` journal entry, its
//! inclusion proof, and the signed checkpoint the proof leads to — evidence a sender keeps and
//! anyone with the federation CA verifies offline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use snodo_envelopes::TrustStore;
use uuid::Uuid;

use super::checkpoint::{
    CheckpointError, SharedCheckpoint, VerifiedCheckpoint, VerifiedCheckpoints,
};
use super::entry::{Entry, EntryError, EventKind, format_utc, shorten};
use super::merkle::{Hash, ProofError, verify_inclusion};

/// Evidence that the hub accepted an envelope.
///
/// The top-level fields repeat what the entry says, for a reader; [`Receipt::verify`] checks
/// that they agree with the entry, and that the entry is in the journal the checkpoint signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The accepted envelope's `id`.
    pub envelope_id: Uuid,
    /// Its sender, `class:code`.
    pub sender: String,
    /// Lowercase hex SHA-256 of the exact bytes the hub received.
    pub digest: String,
    /// The entry's index in the journal.
    pub index: u64,
    /// When the hub accepted it, RFC 3339 UTC (the entry's `at`).
    pub accepted_at: String,
    /// The `accepted` entry's canonical bytes, standard base64: the leaf itself.
    pub entry: String,
    /// The inclusion proof of the entry under the checkpoint, standard base64 hashes, deepest
    /// first (RFC 9162 §2.1.3.1).
    pub inclusion_proof: Vec<String>,
    /// The hub's signed checkpoint of a journal that holds the entry.
    pub checkpoint: SharedCheckpoint,
}

/// A receipt that verified: what it proves.
#[derive(Debug)]
pub struct VerifiedReceipt {
    /// The accepted entry, decoded.
    pub entry: Entry,
    /// The checkpoint, with the hub that signed it.
    pub checkpoint: VerifiedCheckpoint,
    /// Whether envelope bytes were given and matched the digest.
    pub envelope_checked: bool,
}

/// Why a receipt could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt is not receipt JSON.
    #[error("receipt is malformed: {0}")]
    Malformed(String),
    /// The signed checkpoint does not verify.
    #[error("{0}")]
    Checkpoint(CheckpointError),
    /// The entry or a proof hash is not base64 of the right length.
    #[error("receipt {field} is not valid: {reason}")]
    Encoding {
        /// `entry` or `inclusion_proof[i]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry does not decode.
    #[error("receipt entry: {0}")]
    Entry(EntryError),
    /// The entry records another event than an acceptance.
    #[error("the journal entry records `{0}`, not `accepted`")]
    NotAccepted(EventKind),
    /// The entry lacks a field an acceptance must have.
    #[error("the journal entry has no `{0}`")]
    Incomplete(&'static str),
    /// A field of the receipt disagrees with the entry.
    #[error("receipt {field} is `{receipt}` but the journal entry says `{entry}`")]
    Mismatch {
        /// The receipt field.
        field: &'static str,
        /// Its value in the receipt.
        receipt: String,
        /// Its value in the entry.
        entry: String,
    },
    /// The entry is not included under the checkpoint by the proof.
    #[error("the entry is not in the journal the checkpoint signs: {0}")]
    Proof(ProofError),
    /// The envelope given is not the one received.
    #[error("the envelope's SHA-256 is {actual}, not the receipt's digest {digest}")]
    EnvelopeMismatch {
        /// The digest the receipt records.
        digest: String,
        /// The digest of the bytes given.
        actual: String,
    },
}

impl ReceiptError {
    /// A stable, machine-readable code for this error (kebab-case); a refused checkpoint keeps
    /// its own code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::Malformed(_) => "receipt-malformed",
            ReceiptError::Checkpoint(e) => e.code(),
            ReceiptError::Encoding { .. } => "receipt-encoding",
            ReceiptError::Entry(_) => "receipt-entry-malformed",
            ReceiptError::NotAccepted(_) => "receipt-entry-not-accepted",
            ReceiptError::Incomplete(_) => "receipt-entry-incomplete",
            ReceiptError::Mismatch { .. } => "receipt-entry-mismatch",
            ReceiptError::Proof(_) => "receipt-proof-invalid",
            ReceiptError::EnvelopeMismatch { .. } => "receipt-envelope-mismatch",
        }
    }
}

impl Receipt {
    /// The receipt for the `accepted` entry `entry`, included by `proof` under `checkpoint`.
    ///
    /// Checks the proof, so that the hub never hands out a receipt that does not verify.
    ///
    /// # Errors
    /// [`ReceiptError::NotAccepted`] or [`ReceiptError::Incomplete`] for an entry that records
    /// no acceptance; [`ReceiptError::Entry`] when it cannot be encoded;
    /// [`ReceiptError::Proof`] when the proof does not lead to the checkpoint's root.
    pub fn new(
        entry: &Entry,
        proof: Vec<Hash>,
        checkpoint: impl Into<SharedCheckpoint>,
    ) -> Result<Self, ReceiptError> {
        let bytes = entry.to_bytes().map_err(ReceiptError::Entry)?;
        Self::with_bytes(entry, bytes, proof, checkpoint)
    }

    /// [`Receipt::new`] for an entry whose bytes in the journal are `bytes` (the journal's
    /// writer has them: they are not serialized again). The receipt carries `bytes`; if they
    /// were not `entry`'s, the receipt would not verify.
    ///
    /// # Errors
    /// As [`Receipt::new`].
    pub fn with_bytes(
        entry: &Entry,
        bytes: Vec<u8>,
        proof: Vec<Hash>,
        checkpoint: impl Into<SharedCheckpoint>,
    ) -> Result<Self, ReceiptError> {
        let checkpoint = checkpoint.into();
        let (envelope_id, sender) = accepted(entry)?;
        let leaf = super::merkle::leaf_hash(&bytes);
        let c = &checkpoint.checkpoint;
        verify_inclusion(&leaf, entry.index, c.size, &proof, &c.root)
            .map_err(ReceiptError::Proof)?;
        Ok(Receipt {
            envelope_id,
            sender: sender.to_owned(),
            digest: entry.digest.clone(),
            index: entry.index,
            accepted_at: accepted_at(entry)?,
            entry: STANDARD.encode(bytes),
            inclusion_proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
            checkpoint,
        })
    }

    /// Reads a receipt from its JSON.
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`] saying what is wrong.
    pub fn from_json(json: &[u8]) -> Result<Self, ReceiptError> {
        serde_json::from_slice(json).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// Verifies the receipt offline: the checkpoint's signature (with the hub certificate
    /// checked at the checkpoint's time, so that a receipt outlives the certificate, but never
    /// a revocation); that the entry is the `accepted` entry of this envelope, sender, digest
    /// and index; that the proof includes it under the checkpoint's root; and, given the
    /// envelope's bytes, that they are the ones received.
    ///
    /// # Errors
    /// The [`ReceiptError`] naming the first check that failed.
    pub fn verify(
        &self,
        trust: &TrustStore,
        envelope: Option<&[u8]>,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let checkpoint = self
            .checkpoint
            .verify(trust, self.checkpoint.checkpoint.time)
            .map_err(ReceiptError::Checkpoint)?;
        self.verify_under(checkpoint, envelope)
    }

    /// As [`Receipt::verify`], the checkpoint's signature checked through `verified`: once
    /// for all the receipts that share the checkpoint.
    ///
    /// # Errors
    /// As [`Receipt::verify`].
    pub fn verify_cached(
        &self,
        trust: &TrustStore,
        envelope: Option<&[u8]>,
        verified: &VerifiedCheckpoints,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let checkpoint = verified
            .verify(&self.checkpoint, trust)
            .map_err(ReceiptError::Checkpoint)?;
        self.verify_under(checkpoint, envelope)
    }

    /// The checks of [`Receipt::verify`] after the checkpoint's signature.
    fn verify_under(
        &self,
        checkpoint: VerifiedCheckpoint,
        envelope: Option<&[u8]>,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let bytes = STANDARD
            .decode(&self.entry)
            .map_err(|e| ReceiptError::Encoding {
                field: "entry".into(),
                reason: format!("not base64: {e}"),
            })?;
        let entry = Entry::from_bytes(&bytes).map_err(ReceiptError::Entry)?;
        let (envelope_id, sender) = accepted(&entry)?;
        let mismatch = |field, receipt: String, entry: String| {
            Err(ReceiptError::Mismatch {
                field,
                receipt: shorten(&receipt),
                entry: shorten(&entry),
            })
        };
        if entry.index != self.index {
            return mismatch("index", self.index.to_string(), entry.index.to_string());
        }
        if envelope_id != self.envelope_id {
            return mismatch(
                "envelope_id",
                self.envelope_id.to_string(),
                envelope_id.to_string(),
            );
        }
        if sender != self.sender {
            return mismatch("sender", self.sender.clone(), sender.to_owned());
        }
        if entry.digest != self.digest {
            return mismatch("digest", self.digest.clone(), entry.digest.clone());
        }
        let at = accepted_at(&entry)?;
        if at != self.accepted_at {
            return mismatch("accepted_at", self.accepted_at.clone(), at);
        }

        let proof = self
            .inclusion_proof
            .iter()
            .enumerate()
            .map(|(i, h)| decode_hash(i, h))
            .collect::<Result<Vec<Hash>, _>>()?;
        let c = &checkpoint.checkpoint;
        verify_inclusion(
            &super::merkle::leaf_hash(&bytes),
            entry.index,
            c.size,
            &proof,
            &c.root,
        )
        .map_err(ReceiptError::Proof)?;

        if let Some(envelope) = envelope {
            let actual = Entry::digest_of(envelope);
            if actual != entry.digest {
                return Err(ReceiptError::EnvelopeMismatch {
                    digest: entry.digest,
                    actual,
                });
            }
        }
        Ok(VerifiedReceipt {
            entry,
            checkpoint,
            envelope_checked: envelope.is_some(),
        })
    }
}

/// The envelope id and sender of an `accepted` entry.
fn accepted(entry: &Entry) -> Result<(Uuid, &str), ReceiptError> {
    if entry.kind != EventKind::Accepted {
        return Err(ReceiptError::NotAccepted(entry.kind));
    }
    let id = entry
        .envelope_id
        .ok_or(ReceiptError::Incomplete("envelope_id"))?;
    let sender = entry
        .sender
        .as_deref()
        .ok_or(ReceiptError::Incomplete("sender"))?;
    Ok((id, sender))
}

fn accepted_at(entry: &Entry) -> Result<String, ReceiptError> {
    format_utc(entry.at).map_err(|e| ReceiptError::Entry(EntryError::Time(e)))
}

fn decode_hash(i: usize, text: &str) -> Result<Hash, ReceiptError> {
    let field = || format!("inclusion_proof[{i}]");
    let bytes = STANDARD.decode(text).map_err(|e| ReceiptError::Encoding {
        field: field(),
        reason: format!("not base64: {e}"),
    })?;
    let len = bytes.len();
    Hash::try_from(bytes).map_err(|_| ReceiptError::Encoding {
        field: field(),
        reason: format!("a hash is 32 bytes, not {len}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{CheckpointSigner, MemoryTree};
    use snodo_envelopes::EntityId;
    use snodo_envelopes::pki::{self, KeyType};
    use time::OffsetDateTime;

    struct Fixture {
        _dir: tempfile::TempDir,
        trust: TrustStore,
        entries: Vec<Entry>,
        tree: MemoryTree,
        hub: CheckpointSigner,
    }

    fn envelope(i: u64) -> Vec<u8> {
        format!("<Envelope xmlns=\"urn:snodo:envelope:1\"><!-- {i} --></Envelope>").into_bytes()
    }

    fn fixture(n: u64) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        pki::init(
            &dir,
            &["comune:001272".parse::<EntityId>().unwrap()],
            KeyType::P256,
        )
        .unwrap();
        let trust = TrustStore::load(&dir.join(pki::CA_CERT), None).unwrap();
        let hub =
            CheckpointSigner::load(&dir.join(pki::HUB_KEY), &dir.join(pki::HUB_CERT)).unwrap();
        let mut tree = MemoryTree::new();
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                let kind = if i % 3 == 1 {
                    EventKind::Accepted
                } else {
                    EventKind::Received
                };
                let e = Entry {
                    envelope_id: Some(Uuid::from_u128(u128::from(i / 3))),
                    sender: Some("comune:001272".into()),
                    ..Entry::new(
                        i,
                        kind,
                        OffsetDateTime::now_utc(),
                        Entry::digest_of(&envelope(i / 3)),
                    )
                };
                tree.push(e.leaf_hash().unwrap()).unwrap();
                e
            })
            .collect();
        Fixture {
            _dir: tmp,
            trust,
            entries,
            tree,
            hub,
        }
    }

    impl Fixture {
        fn receipt(&self, index: u64) -> Receipt {
            let size = self.tree.size();
            let checkpoint = self
                .hub
                .sign(self.hub.checkpoint(
                    size,
                    self.tree.root().unwrap(),
                    OffsetDateTime::now_utc(),
                ))
                .unwrap();
            let proof = self.tree.inclusion_proof(index, size).unwrap();
            Receipt::new(&self.entries[index as usize], proof, checkpoint).unwrap()
        }
    }

    #[test]
    fn a_receipt_verifies_and_says_what_it_proves() {
        let f = fixture(40);
        let r = f.receipt(22);
        assert_eq!(r.index, 22);
        assert_eq!(r.envelope_id, Uuid::from_u128(7));
        assert_eq!(r.inclusion_proof.len(), 6);
        let v = r.verify(&f.trust, Some(&envelope(7))).unwrap();
        assert_eq!(v.entry, f.entries[22]);
        assert_eq!(v.checkpoint.hub, "hub");
        assert_eq!(v.checkpoint.checkpoint.size, 40);
        assert!(v.envelope_checked);
        assert!(!r.verify(&f.trust, None).unwrap().envelope_checked);
    }

    #[test]
    fn a_checkpoint_verified_once_serves_every_receipt_under_it_and_nothing_else() {
        let f = fixture(40);
        let verified = VerifiedCheckpoints::default();
        let r = f.receipt(22);
        let mut same = f.receipt(25);
        same.checkpoint = r.checkpoint.clone();
        for receipt in [&r, &same, &r] {
            let v = receipt.verify_cached(&f.trust, None, &verified).unwrap();
            assert_eq!(v.checkpoint.checkpoint.size, 40);
            assert_eq!(v.entry.index, receipt.index);
        }
        // Found, the signature is not checked again: not even against a store trusting no
        // CA, which refuses it afresh (hence one cache per trust store).
        let nobody = TrustStore::new(Vec::new(), None).unwrap();
        assert!(same.verify(&nobody, None).is_err());
        assert!(same.verify_cached(&nobody, None, &verified).is_ok());
        // A receipt is still checked against the checkpoint found: the proof of another entry.
        let mut wrong = r.clone();
        wrong.inclusion_proof = same.inclusion_proof.clone();
        let e = wrong.verify_cached(&f.trust, None, &verified).unwrap_err();
        assert_eq!(e.code(), "receipt-proof-invalid");
        // A checkpoint that differs in any field is verified afresh, and refused.
        let mut forged = r.clone();
        forged.checkpoint.checkpoint.size = 41;
        let e = forged.verify_cached(&f.trust, None, &verified).unwrap_err();
        assert_eq!(e.code(), "checkpoint-signature-invalid", "{e}");
        let mut resigned = r.clone();
        resigned.checkpoint.signature = same.checkpoint.signature.replace('A', "B");
        assert!(resigned.verify_cached(&f.trust, None, &verified).is_err());
    }

    #[test]
    fn receipts_are_json_with_snake_case_fields() {
        let f = fixture(5);
        let r = f.receipt(1);
        let json = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "accepted_at",
                "checkpoint",
                "digest",
                "entry",
                "envelope_id",
                "inclusion_proof",
                "index",
                "sender"
            ]
        );
        assert_eq!(json["checkpoint"]["algorithm"], "ES256");
        let text = serde_json::to_vec_pretty(&r).unwrap();
        assert_eq!(Receipt::from_json(&text).unwrap(), r);
        let e = Receipt::from_json(b"{\"envelope_id\": 1}").unwrap_err();
        assert_eq!(e.code(), "receipt-malformed");
        assert!(
            e.to_string()
                .starts_with("receipt is malformed: invalid type: integer `1`"),
            "{e}"
        );
    }

    #[test]
    fn a_receipt_from_the_journal_bytes_is_the_same_and_other_bytes_do_not_make_one() {
        let f = fixture(8);
        let r = f.receipt(4);
        let e = &f.entries[4];
        let proof = f.tree.inclusion_proof(4, 8).unwrap();
        let bytes = e.to_bytes().unwrap();
        let same = Receipt::with_bytes(e, bytes, proof.clone(), r.checkpoint.clone()).unwrap();
        assert_eq!(same, r);
        // The bytes of another entry: their leaf is not under the root by this proof.
        let other = f.entries[7].to_bytes().unwrap();
        let err = Receipt::with_bytes(e, other, proof, r.checkpoint.clone()).unwrap_err();
        assert_eq!(err.code(), "receipt-proof-invalid");
    }

    #[test]
    fn only_an_acceptance_with_a_valid_proof_makes_a_receipt() {
        let f = fixture(8);
        let good = f.receipt(4);
        let proof = f.tree.inclusion_proof(4, 8).unwrap();
        let e = Receipt::new(&f.entries[3], proof.clone(), good.checkpoint.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the journal entry records `received`, not `accepted`"
        );
        let mut anonymous = f.entries[4].clone();
        anonymous.sender = None;
        let e = Receipt::new(&anonymous, proof.clone(), good.checkpoint.clone()).unwrap_err();
        assert_eq!(e.to_string(), "the journal entry has no `sender`");
        let e =
            Receipt::new(&f.entries[4], proof[1..].to_vec(), good.checkpoint.clone()).unwrap_err();
        assert_eq!(e.code(), "receipt-proof-invalid");
    }

    #[test]
    fn every_disagreement_is_named() {
        let f = fixture(30);
        let r = f.receipt(10);
        let refuse = |r: Receipt| r.verify(&f.trust, None).unwrap_err().to_string();

        let mut x = r.clone();
        x.sender = "comune:001273".into();
        assert_eq!(
            refuse(x),
            "receipt sender is `comune:001273` but the journal entry says `comune:001272`"
        );
        let mut x = r.clone();
        x.index = 11;
        assert_eq!(
            refuse(x),
            "receipt index is `11` but the journal entry says `10`"
        );
        let mut x = r.clone();
        x.envelope_id = Uuid::nil();
        assert!(
            refuse(x).starts_with("receipt envelope_id is `00000000-0000-0000-0000-000000000000`")
        );
        let mut x = r.clone();
        x.digest = Entry::digest_of(b"other");
        assert!(refuse(x).starts_with("receipt digest is `"));
        let mut x = r.clone();
        x.accepted_at = "2020-01-01T00:00:00Z".into();
        assert!(refuse(x).starts_with("receipt accepted_at is `2020-01-01T00:00:00Z`"));

        // Another entry in the place of this one.
        let mut x = r.clone();
        x.entry = STANDARD.encode(f.entries[13].to_bytes().unwrap());
        assert_eq!(
            refuse(x),
            "receipt index is `10` but the journal entry says `13`"
        );
        let mut x = r.clone();
        x.entry = STANDARD.encode(f.entries[9].to_bytes().unwrap());
        assert_eq!(
            refuse(x),
            "the journal entry records `received`, not `accepted`"
        );

        // A doctored entry with the receipt doctored to match: only the proof catches it.
        let mut doctored = f.entries[10].clone();
        doctored.sender = Some("comune:001273".into());
        let mut x = r.clone();
        x.entry = STANDARD.encode(doctored.to_bytes().unwrap());
        x.sender = "comune:001273".into();
        assert_eq!(
            refuse(x),
            "the entry is not in the journal the checkpoint signs: the inclusion proof does not lead from the leaf at index 10 to the root of the tree of size 30"
        );

        let mut x = r.clone();
        x.entry = "%%%".into();
        assert!(refuse(x).starts_with("receipt entry is not valid: not base64"));
        let mut x = r.clone();
        x.entry = STANDARD.encode(b"{}");
        assert!(
            refuse(x)
                .starts_with("receipt entry: journal entry is malformed: missing field `index`")
        );
        let mut x = r.clone();
        x.inclusion_proof[2] = STANDARD.encode([0u8; 31]);
        assert_eq!(
            refuse(x),
            "receipt inclusion_proof[2] is not valid: a hash is 32 bytes, not 31"
        );
        let mut x = r.clone();
        x.inclusion_proof.pop();
        assert_eq!(
            refuse(x),
            "the entry is not in the journal the checkpoint signs: the proof has 4 hashes where 5 are needed"
        );
        let mut x = r.clone();
        x.checkpoint.checkpoint.size = 31;
        assert_eq!(
            x.verify(&f.trust, None).unwrap_err().code(),
            "checkpoint-signature-invalid"
        );

        let e = r.verify(&f.trust, Some(b"not the envelope")).unwrap_err();
        assert_eq!(e.code(), "receipt-envelope-mismatch");
        assert_eq!(
            e.to_string(),
            format!(
                "the envelope's SHA-256 is {}, not the receipt's digest {}",
                Entry::digest_of(b"not the envelope"),
                r.digest
            )
        );
    }

    #[test]
    fn an_older_receipt_still_verifies_after_the_journal_grows() {
        let mut f = fixture(10);
        let old = f.receipt(7);
        for i in 10..50 {
            let e = Entry::new(
                i,
                EventKind::Delivered,
                OffsetDateTime::now_utc(),
                Entry::digest_of(b"x"),
            );
            f.tree.push(e.leaf_hash().unwrap()).unwrap();
        }
        old.verify(&f.trust, Some(&envelope(2))).unwrap();
        let new = f.receipt(7);
        new.verify(&f.trust, Some(&envelope(2))).unwrap();
        assert_ne!(old.inclusion_proof, new.inclusion_proof);
    }
}
