//! The journal end to end: a real PKI, a journal of a few hundred entries about signed
//! envelopes, signed checkpoints, receipts verified by the library and by `snodo receipt
//! verify`, and the forgeries both refuse with the same words.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use snodo_broker::journal::merkle::verify_consistency;
use snodo_broker::journal::{
    CheckpointSigner, Entry, EventKind, MemoryTree, Receipt, SignedCheckpoint,
};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{Body, EntityId, Envelope, Format, Signer, TrustStore};
use time::OffsetDateTime;

const COMUNE: &str = "comune:001272";
const ANPR: &str = "anpr:ministero";

/// A hub's journal as the hub would build it, with the PKI it lives in.
struct Journal {
    tmp: tempfile::TempDir,
    pki: PathBuf,
    trust: TrustStore,
    hub: CheckpointSigner,
    tree: MemoryTree,
    entries: Vec<Entry>,
    /// The exact bytes of every envelope the hub received, by envelope number.
    envelopes: Vec<Vec<u8>>,
    /// `(journal index, envelope number)` of every acceptance.
    accepted: Vec<(u64, usize)>,
}

impl Journal {
    /// 120 envelopes from the comune to ANPR: each received, then accepted and delivered, or,
    /// one in ten, refused.
    fn build() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let entities: Vec<EntityId> = [COMUNE, ANPR].iter().map(|e| e.parse().unwrap()).collect();
        pki::init(&pki, &entities, KeyType::P256).unwrap();
        let trust = TrustStore::load(&pki.join(pki::CA_CERT), None).unwrap();
        let hub =
            CheckpointSigner::load(&pki.join(pki::HUB_KEY), &pki.join(pki::HUB_CERT)).unwrap();
        let comune = Signer::load(
            &pki.join("comune-001272.key"),
            &pki.join("comune-001272.crt"),
        )
        .unwrap();

        let mut journal = Journal {
            tmp,
            pki,
            trust,
            hub,
            tree: MemoryTree::new(),
            entries: Vec::new(),
            envelopes: Vec::new(),
            accepted: Vec::new(),
        };
        for n in 0..120 {
            let envelope = Envelope::builder(
                entities[0].clone(),
                entities[1].clone(),
                "residenza.cambio",
                "richiesta",
            )
            .conversation(format!("pratica-{n}"))
            .body(Body::Json(serde_json::json!({ "pratica": n })))
            .build()
            .unwrap();
            let format = if n % 2 == 0 {
                Format::Json
            } else {
                Format::Xml
            };
            let bytes = snodo_envelopes::sign(&envelope, &comune, format).unwrap();
            let digest = Entry::digest_of(&bytes);
            let h = &envelope.header;
            let about = |kind| Entry {
                envelope_id: Some(h.id),
                sender: Some(h.sender.to_string()),
                recipient: Some(h.recipient.as_str().to_owned()),
                service: Some(h.service.clone()),
                action: Some(h.action.clone()),
                conversation: Some(h.conversation.clone()),
                ..Entry::new(0, kind, OffsetDateTime::now_utc(), digest.clone())
            };
            journal.append(Entry::new(
                0,
                EventKind::Received,
                OffsetDateTime::now_utc(),
                digest.clone(),
            ));
            if n % 10 == 9 {
                journal.append(Entry {
                    code: Some("registry-denied".into()),
                    detail: Some("comune:001272 may not send residenza.cambio/richiesta".into()),
                    ..about(EventKind::Refused)
                });
            } else {
                let index = journal.append(about(EventKind::Accepted));
                journal.accepted.push((index, n));
                journal.append(Entry {
                    actor: Some(ANPR.into()),
                    ..about(EventKind::Delivered)
                });
            }
            journal.envelopes.push(bytes);
        }
        journal
    }

    fn append(&mut self, mut entry: Entry) -> u64 {
        entry.index = self.tree.size();
        let index = self.tree.push(entry.leaf_hash().unwrap()).unwrap();
        self.entries.push(entry);
        index
    }

    fn checkpoint(&self, size: u64) -> SignedCheckpoint {
        let root = self.tree.root_at(size).unwrap();
        self.hub
            .sign(self.hub.checkpoint(size, root, OffsetDateTime::now_utc()))
            .unwrap()
    }

    fn receipt(&self, index: u64, checkpoint: &SignedCheckpoint) -> Receipt {
        let proof = self
            .tree
            .inclusion_proof(index, checkpoint.checkpoint.size)
            .unwrap();
        Receipt::new(&self.entries[index as usize], proof, checkpoint.clone()).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn ca(&self) -> PathBuf {
        self.pki.join(pki::CA_CERT)
    }
}

fn snodo(args: &[&Path], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn verify_cli(j: &Journal, receipt: &Receipt, extra: &[&Path]) -> Output {
    let file = j.write("receipt.json", &serde_json::to_vec_pretty(receipt).unwrap());
    let mut args: Vec<&Path> = vec!["receipt".as_ref(), "verify".as_ref(), "--ca".as_ref()];
    let ca = j.ca();
    args.push(&ca);
    args.extend_from_slice(extra);
    args.push(&file);
    snodo(&args, None)
}

/// The library refuses `receipt` with `code`, and the command line says the same in one line.
fn assert_refused(j: &Journal, receipt: &Receipt, envelope: Option<&[u8]>, code: &str) -> String {
    let err = receipt.verify(&j.trust, envelope).unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    let file = envelope.map(|e| j.write("envelope", e));
    let extra: Vec<&Path> = match &file {
        Some(f) => vec!["--envelope".as_ref(), f],
        None => vec![],
    };
    let out = verify_cli(j, receipt, &extra);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("snodo: receipt refused ({code}): {err}\n")
    );
    err.to_string()
}

#[test]
fn receipts_verify_with_the_library_and_the_command_line() {
    let j = Journal::build();
    assert!(
        j.tree.size() > 300,
        "a few hundred entries: {}",
        j.tree.size()
    );
    let full = j.checkpoint(j.tree.size());
    let picks = [0, 1, 40, j.accepted.len() - 1];
    for &(index, n) in picks.iter().map(|&p| &j.accepted[p]) {
        let receipt = j.receipt(index, &full);
        let envelope = &j.envelopes[n];

        let v = receipt.verify(&j.trust, Some(envelope)).unwrap();
        assert_eq!(v.entry.index, index);
        assert_eq!(v.entry.kind, EventKind::Accepted);
        assert_eq!(
            v.entry.conversation.as_deref(),
            Some(format!("pratica-{n}").as_str())
        );
        assert_eq!(v.checkpoint.hub, "hub");
        assert_eq!(v.checkpoint.checkpoint.size, j.tree.size());

        // The envelope file as `snodo envelope sign` writes it, with a final newline.
        let file = j.write("envelope", &[envelope.as_slice(), b"\n"].concat());
        let out = verify_cli(&j, &receipt, &["--envelope".as_ref(), &file]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["envelope_id"], receipt.envelope_id.to_string());
        assert_eq!(summary["sender"], COMUNE);
        assert_eq!(summary["digest"], Entry::digest_of(envelope));
        assert_eq!(summary["index"], index);
        assert_eq!(summary["accepted_at"], receipt.accepted_at);
        assert_eq!(summary["hub"], "hub");
        assert_eq!(summary["checkpoint_size"], j.tree.size());
        assert_eq!(summary["envelope_checked"], true);
    }

    // From stdin, without the envelope.
    let receipt = j.receipt(j.accepted[5].0, &full);
    let ca = j.ca();
    let out = snodo(
        &[
            "receipt".as_ref(),
            "verify".as_ref(),
            "--ca".as_ref(),
            &ca,
            "-".as_ref(),
        ],
        Some(&serde_json::to_vec(&receipt).unwrap()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["envelope_checked"], false);
}

#[test]
fn an_early_receipt_stays_valid_and_checkpoints_are_consistent() {
    let j = Journal::build();
    let early = j.checkpoint(100);
    let full = j.checkpoint(j.tree.size());
    let (index, n) = j.accepted[10];
    assert!(index < 100);
    let old = j.receipt(index, &early);
    let new = j.receipt(index, &full);
    old.verify(&j.trust, Some(&j.envelopes[n])).unwrap();
    new.verify(&j.trust, Some(&j.envelopes[n])).unwrap();

    // An auditor holding both checkpoints checks that the second extends the first.
    let now = OffsetDateTime::now_utc();
    let (a, b) = (
        early.verify(&j.trust, now).unwrap(),
        full.verify(&j.trust, now).unwrap(),
    );
    let proof = j.tree.consistency_proof(100, j.tree.size()).unwrap();
    verify_consistency(
        100,
        b.checkpoint.size,
        &a.checkpoint.root,
        &b.checkpoint.root,
        &proof,
    )
    .unwrap();
    // A journal rewritten after the early checkpoint is not.
    let mut forked = j.entries.clone();
    forked[3].detail = Some("rewritten".into());
    let forked = MemoryTree::from_leaves(forked.iter().map(|e| e.leaf_hash().unwrap())).unwrap();
    let proof = forked.consistency_proof(100, forked.size()).unwrap();
    let err = verify_consistency(
        100,
        forked.size(),
        &a.checkpoint.root,
        &forked.root().unwrap(),
        &proof,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the consistency proof does not rebuild the old root (of the tree of size 100)"
    );
}

#[test]
fn forged_and_mistaken_receipts_are_refused() {
    let j = Journal::build();
    let full = j.checkpoint(j.tree.size());
    let (index, n) = j.accepted[20];
    let receipt = j.receipt(index, &full);
    let size = j.tree.size();

    // A tampered entry: the sender's evidence says it was sent elsewhere.
    let mut entry = j.entries[index as usize].clone();
    entry.recipient = Some("prefettura:TO".into());
    let mut forged = receipt.clone();
    forged.entry = STANDARD.encode(entry.to_bytes().unwrap());
    assert_eq!(
        assert_refused(&j, &forged, None, "receipt-proof-invalid"),
        format!(
            "the entry is not in the journal the checkpoint signs: the inclusion proof does not \
             lead from the leaf at index {index} to the root of the tree of size {size}"
        )
    );

    // Another acceptance's entry in place of this one.
    let mut swapped = receipt.clone();
    swapped.entry = STANDARD.encode(j.entries[j.accepted[21].0 as usize].to_bytes().unwrap());
    assert_eq!(
        assert_refused(&j, &swapped, None, "receipt-entry-mismatch"),
        format!(
            "receipt index is `{index}` but the journal entry says `{}`",
            j.accepted[21].0
        )
    );

    // A wrong proof element.
    let mut wrong = receipt.clone();
    let mut hash = STANDARD.decode(&wrong.inclusion_proof[3]).unwrap();
    hash[31] ^= 0x01;
    wrong.inclusion_proof[3] = STANDARD.encode(hash);
    assert_refused(&j, &wrong, None, "receipt-proof-invalid");

    // A checkpoint signed by an entity's key and certificate instead of the hub's.
    let comune = Signer::load(
        &j.pki.join("comune-001272.key"),
        &j.pki.join("comune-001272.crt"),
    )
    .unwrap();
    let mut by_entity = receipt.clone();
    let body = by_entity.checkpoint.checkpoint.body().unwrap();
    by_entity.checkpoint.signature = STANDARD.encode(comune.sign_bytes(body.as_bytes()).unwrap());
    let der = pki::load_cert(&j.pki.join("comune-001272.crt"))
        .unwrap()
        .to_der()
        .unwrap();
    by_entity.checkpoint.certificate = STANDARD.encode(der);
    assert_eq!(
        assert_refused(&j, &by_entity, None, "checkpoint-signer-not-hub"),
        "checkpoint is signed by comune:001272, not by a hub"
    );
    // The entity's signature under the hub's certificate.
    let mut by_entity = receipt.clone();
    by_entity.checkpoint.signature = STANDARD.encode(comune.sign_bytes(body.as_bytes()).unwrap());
    assert_eq!(
        assert_refused(&j, &by_entity, None, "checkpoint-signature-invalid"),
        "checkpoint signature does not verify: it was not made over this text by the key of hub `hub`"
    );

    // A checkpoint claiming a larger journal than the hub signed.
    let mut grown = receipt.clone();
    grown.checkpoint.checkpoint.size += 1;
    assert_refused(&j, &grown, None, "checkpoint-signature-invalid");

    // The wrong envelope: another one of the same sender, and the right one altered.
    let other = &j.envelopes[n + 1];
    let msg = assert_refused(&j, &receipt, Some(other), "receipt-envelope-mismatch");
    assert_eq!(
        msg,
        format!(
            "the envelope's SHA-256 is {}, not the receipt's digest {}",
            Entry::digest_of(other),
            receipt.digest
        )
    );
    let mut altered = j.envelopes[n].clone();
    altered[10] ^= 0x20;
    assert_refused(&j, &receipt, Some(&altered), "receipt-envelope-mismatch");
}

#[test]
fn receipts_need_the_federation_ca_and_an_unrevoked_hub() {
    let j = Journal::build();
    let full = j.checkpoint(j.tree.size());
    let receipt = j.receipt(j.accepted[0].0, &full);
    let receipt_file = j.write("receipt.json", &serde_json::to_vec(&receipt).unwrap());

    // Another federation's CA.
    let other = j.path("other");
    pki::init(&other, &[], KeyType::P256).unwrap();
    let other_ca = other.join(pki::CA_CERT);
    let trust = TrustStore::load(&other_ca, None).unwrap();
    assert_eq!(
        receipt.verify(&trust, None).unwrap_err().code(),
        "certificate-untrusted"
    );
    let out = snodo(
        &[
            "receipt".as_ref(),
            "verify".as_ref(),
            "--ca".as_ref(),
            &other_ca,
            &receipt_file,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "snodo: receipt refused (certificate-untrusted): checkpoint certificate refused: \
             signer certificate is not issued by the federation CA"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);

    // The hub's certificate revoked.
    let crl = pki::revoke(&j.pki, &j.pki.join(pki::HUB_CERT)).unwrap();
    let trust = TrustStore::load(&j.ca(), Some(&crl)).unwrap();
    assert_eq!(
        receipt.verify(&trust, None).unwrap_err().code(),
        "certificate-revoked"
    );
    let out = verify_cli(&j, &receipt, &["--crl".as_ref(), &crl]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("snodo: receipt refused (certificate-revoked): "),
        "{stderr}"
    );
}

#[test]
fn what_is_not_a_receipt_is_refused_in_one_line() {
    let j = Journal::build();
    let ca = j.ca();
    for (content, want) in [
        (
            &b"not json"[..],
            "snodo: receipt refused (receipt-malformed): receipt is malformed: expected ident at line 1 column 2\n",
        ),
        (
            b"{}",
            "snodo: receipt refused (receipt-malformed): receipt is malformed: missing field `envelope_id` at line 1 column 2\n",
        ),
    ] {
        let file = j.write("bad.json", content);
        let out = snodo(
            &[
                "receipt".as_ref(),
                "verify".as_ref(),
                "--ca".as_ref(),
                &ca,
                &file,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), want);
    }
    let missing = j.path("missing.json");
    let out = snodo(
        &[
            "receipt".as_ref(),
            "verify".as_ref(),
            "--ca".as_ref(),
            &ca,
            &missing,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("snodo: reading ")
    );
}
