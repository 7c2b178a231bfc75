//! `snodo audit`: bundles and data directories verified offline, and every kind of tampering
//! caught and named — an entry changed, reordered, removed; a byte flipped in an entry, a raw
//! envelope, a checkpoint's signature, a proof; a journal truncated — by the library and by
//! the command line; and a real hub's data directory, verified and exported.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use serde_json::json;
use snodo_broker::audit::bundle::verify_reader;
use snodo_broker::audit::verify::load_pem_certs;
use snodo_broker::audit::{
    AuditError, Failure, Fault, Filters, JournalClient, Place, Report, Trust, bundle, client,
    datadir,
};
use snodo_broker::journal::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use snodo_broker::journal::{Entry, EventKind};
use snodo_broker::store::{Store, keys};
use snodo_envelopes::Format;
use time::OffsetDateTime;

/// A PKI and a few signed envelopes, made once for every test of this file.
struct Fixture {
    pki: PathBuf,
    pool: Vec<SignedEnvelope>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "audit-fixture-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = small_pki(&dir);
        issue_auditor(&pki, "corte-dei-conti");
        let pool = sign_envelopes(&pki, 6);
        Fixture { pki, pool }
    })
}

/// What the hub journals, for synthetic journals.
#[derive(Clone, Debug)]
enum Op {
    /// Accept the pool's envelope.
    Accept(usize),
    /// Deliver the last envelope accepted.
    Deliver,
    /// Its acknowledgement.
    Ack,
    Refuse,
    /// Prune the body of the last envelope accepted (if not pruned yet).
    Prune,
    /// Sign a checkpoint (if anything was journaled since the last).
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..6).prop_map(Op::Accept),
        2 => Just(Op::Deliver),
        1 => Just(Op::Ack),
        1 => Just(Op::Refuse),
        1 => Just(Op::Prune),
        2 => Just(Op::Checkpoint),
    ]
}

/// A journal made of `ops`, ending with a checkpoint of all of it.
fn journal(ops: &[Op]) -> SyntheticJournal {
    let f = fixture();
    let mut j = SyntheticJournal::new(&f.pki);
    let base = OffsetDateTime::now_utc() - time::Duration::seconds(120);
    let mut last = 0;
    let mut last_accepted = None;
    let mut signed_size = None;
    for (n, op) in ops.iter().enumerate() {
        let at = base + time::Duration::milliseconds(n as i64);
        match op {
            Op::Accept(k) => {
                last = *k;
                last_accepted = Some(j.accept(&f.pool[*k], at));
            }
            Op::Prune => {
                if let Some(i) = last_accepted.filter(|i| !j.pruned.contains_key(i)) {
                    j.prune(i, at);
                }
            }
            Op::Deliver | Op::Ack => {
                let kind = if matches!(op, Op::Deliver) {
                    EventKind::Delivered
                } else {
                    EventKind::Acknowledged
                };
                let mut e = SyntheticJournal::about(&f.pool[last], kind, at);
                e.actor = Some(ANPR.into());
                j.push(e);
            }
            Op::Refuse => {
                j.refuse(at, "sender-not-allowed");
            }
            Op::Checkpoint => {
                if signed_size != Some(j.entries.len()) {
                    signed_size = Some(j.entries.len());
                    j.checkpoint(at);
                }
            }
        }
    }
    if signed_size != Some(j.entries.len()) {
        j.checkpoint(base + time::Duration::milliseconds(ops.len() as i64));
    }
    j
}

/// A journal with a bit of everything: 20 envelopes, each accepted, delivered and (most)
/// acknowledged, some refusals, checkpoints now and then.
fn typical() -> SyntheticJournal {
    let mut ops = Vec::new();
    for n in 0..20 {
        ops.push(Op::Accept(n % 6));
        ops.push(Op::Deliver);
        if n % 4 != 3 {
            ops.push(Op::Ack);
        }
        if n % 5 == 2 {
            ops.push(Op::Refuse);
        }
        if n % 3 == 0 {
            ops.push(Op::Checkpoint);
        }
    }
    journal(&ops)
}

fn all(_: u64) -> bool {
    true
}

fn odd(i: u64) -> bool {
    i % 2 == 1
}

fn verify_bundle(bytes: &[u8], ca: Option<&Path>) -> Result<Report, AuditError> {
    let pinned = ca.map(|p| load_pem_certs(p).unwrap());
    verify_reader(Cursor::new(bytes), "test bundle".into(), pinned, None)
}

fn failure(r: Result<Report, AuditError>) -> Failure {
    match r {
        Err(AuditError::Failed(f)) => *f,
        Err(e) => panic!("not a verification failure: {e}"),
        Ok(report) => panic!("verified, but should not have:\n{report}"),
    }
}

/// True when the failure points at entry `i`: the entry itself, its envelope, a checkpoint
/// whose rebuilt root shows that one of a range of entries including `i` was altered, or the
/// pruning marker that carries entry `i` as the record of a pruning.
fn names(f: &Failure, i: u64) -> bool {
    match (&f.place, &*f.fault) {
        (_, Fault::Pruning(why))
            if why.starts_with(&format!("entry {i} "))
                || why.starts_with(&format!("entry {i}:"))
                || why.starts_with(&format!("entry {i},")) =>
        {
            true
        }
        (Place::Entry(e) | Place::Envelope(e), _) => *e == i,
        (_, Fault::RootMismatch { first, last, .. }) => (*first..=*last).contains(&i),
        _ => false,
    }
}

fn snodo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lines of a bundle, and the line holding the record of `kind` for which `matches` holds.
fn find_line(bundle: &[u8], kind: &str, matches: impl Fn(&serde_json::Value) -> bool) -> usize {
    bundle
        .split(|&b| b == b'\n')
        .position(|l| {
            serde_json::from_slice::<serde_json::Value>(l)
                .is_ok_and(|v| v["type"] == kind && matches(&v))
        })
        .unwrap_or_else(|| panic!("no {kind} line"))
}

/// Flips one base64 character of the string at `pointer` on line `line`, to another base64
/// character: the line stays well-formed, the bytes it encodes change.
fn flip_base64(bundle: &[u8], line: usize, pointer: &str, at: usize) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = bundle.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let v: serde_json::Value = serde_json::from_slice(&lines[line]).unwrap();
    let s = v.pointer(pointer).unwrap().as_str().unwrap();
    let text = String::from_utf8(lines[line].clone()).unwrap();
    let start = text.find(s).unwrap();
    let pos = start + at.min(s.len().saturating_sub(3));
    let mut bytes = text.into_bytes();
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    lines[line] = bytes;
    lines.join(&b'\n')
}

#[test]
fn a_complete_bundle_verifies_and_says_what_it_checked() {
    let j = typical();
    let bundle = j.bundle(Layout::Complete);
    let report = verify_bundle(&bundle, Some(&j.ca())).unwrap();
    assert_eq!(report.entries.count, j.entries.len() as u64);
    assert_eq!(report.envelopes.count, 20);
    assert_eq!((report.envelopes.json, report.envelopes.xml), (10, 10));
    assert_eq!(report.checkpoints.count, j.checkpoints.len() as u64);
    assert_eq!(report.checkpoints.roots_rebuilt, j.checkpoints.len() as u64);
    assert_eq!(report.entries.by_kind["accepted"], 20);
    assert_eq!(report.hub.as_deref(), Some("hub"));
    assert!(report.trust.ca_pinned);
    let text = report.to_string();
    assert!(
        text.contains("the Merkle tree\n               rebuilt from all of them has the root of every checkpoint"),
        "{text}"
    );
    assert!(text.contains("pinned with --ca"), "{text}");

    // The command line, with and without the CA pinned.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.ndjson");
    std::fs::write(&file, &bundle).unwrap();
    let ca = j.ca();
    let out = snodo(&[
        "audit",
        "verify",
        "--ca",
        ca.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Verified bundle "),
        "{}",
        stdout(&out)
    );
    let out = snodo(&["audit", "verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fingerprint =
        snodo_broker::audit::verify::fingerprint(&snodo_envelopes::pki::load_cert(&ca).unwrap())
            .unwrap();
    assert!(stdout(&out).contains(&fingerprint), "{}", stdout(&out));
    assert!(stdout(&out).contains("NOT pinned"), "{}", stdout(&out));
    let out = snodo(&["audit", "verify", "--json", file.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"]["count"], j.entries.len());
    assert_eq!(json["trust"]["ca_pinned"], false);
    assert_eq!(json["mode"], "complete");
}

#[test]
fn a_filtered_bundle_verifies_with_inclusion_and_consistency_proofs() {
    let j = typical();
    let bundle = j.bundle(Layout::Filtered {
        pick: odd,
        since: Some(1),
    });
    let report = verify_bundle(&bundle, Some(&j.ca())).unwrap();
    let picked = (0..j.entries.len() as u64).filter(|i| odd(*i)).count() as u64;
    assert_eq!(report.entries.count, picked);
    assert_eq!(report.entries.inclusion_proofs, picked);
    assert_eq!(report.checkpoints.count, 2);
    assert_eq!(report.checkpoints.consistency_proofs, 1);
    let accepted_odd = j.envelopes.keys().filter(|i| odd(**i)).count() as u64;
    assert_eq!(report.envelopes.count, accepted_odd);
    assert!(
        report
            .to_string()
            .contains("inclusion\n               proofs verified under the latest checkpoint")
    );

    // Without the consistency proof, two checkpoints prove nothing about each other.
    let lines: Vec<&[u8]> = bundle.split(|&b| b == b'\n').collect();
    let without: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with(br#"{"type":"consistency""#))
        .collect();
    let rewritten = rewrite(&without.join(&b'\n'));
    let f = failure(verify_bundle(&rewritten, Some(&j.ca())));
    assert_eq!(f.fault.code(), "consistency-proof-missing", "{f}");
}

/// Re-serializes a bundle's records with a correct end record, as a forger would: the
/// checksum then vouches for nothing, and only signatures and proofs can catch a change.
fn rewrite(bundle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sha = openssl::sha::Sha256::new();
    let (mut entries, mut envelopes, mut checkpoints) = (0, 0, 0);
    for line in bundle.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        match v["type"].as_str().unwrap() {
            "end" => continue,
            "entry" => entries += 1,
            "envelope" => envelopes += 1,
            "checkpoint" => checkpoints += 1,
            _ => {}
        }
        sha.update(line);
        sha.update(b"\n");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    let end = json!({"type": "end", "entries": entries, "envelopes": envelopes,
        "checkpoints": checkpoints, "sha256": hex::encode(sha.finish())});
    out.extend_from_slice(&serde_json::to_vec(&end).unwrap());
    out.push(b'\n');
    out
}

#[test]
fn a_byte_flipped_in_a_bundle_is_caught_where_it_is() {
    let j = typical();
    let ca = j.ca();
    let complete = j.bundle(Layout::Complete);
    let filtered = j.bundle(Layout::Filtered {
        pick: all,
        since: Some(0),
    });
    let accepted = *j.envelopes.keys().nth(3).unwrap();

    // An entry: in a complete bundle, the rebuilt tree misses the next checkpoint's root (or
    // the entry no longer decodes); in a filtered one, its inclusion proof fails.
    for (bundle, layout) in [(&complete, "complete"), (&filtered, "filtered")] {
        let line = find_line(bundle, "entry", |v| v["index"] == 5);
        for at in [20, 60, 100] {
            let f = failure(verify_bundle(
                &rewrite(&flip_base64(bundle, line, "/bytes", at)),
                Some(&ca),
            ));
            assert!(names(&f, 5), "{layout}, entry byte {at}: {f}");
        }
    }
    // A raw envelope: its digest is no longer the accepted entry's.
    for bundle in [&complete, &filtered] {
        let line = find_line(bundle, "envelope", |v| v["index"] == accepted);
        let f = failure(verify_bundle(
            &rewrite(&flip_base64(bundle, line, "/bytes", 200)),
            Some(&ca),
        ));
        assert_eq!(f.place, Place::Envelope(accepted), "{f}");
        assert_eq!(f.fault.code(), "envelope-digest-mismatch", "{f}");
        assert!(
            f.to_string()
                .starts_with(&format!("entry {accepted}, its envelope (bundle line")),
            "{f}"
        );
    }
    // A checkpoint's signature.
    let last = j.checkpoints.len() - 1;
    for (bundle, which) in [(&complete, 1), (&filtered, last)] {
        let size = j.checkpoints[which].checkpoint.size;
        let line = find_line(bundle, "checkpoint", |v| {
            v["signed"]["checkpoint"]
                .as_str()
                .is_some_and(|t| t.lines().nth(1) == Some(&size.to_string()))
        });
        let f = failure(verify_bundle(
            &rewrite(&flip_base64(bundle, line, "/signed/signature", 10)),
            Some(&ca),
        ));
        assert_eq!(f.place, Place::Checkpoint(Some(size)), "{f}");
        assert_eq!(f.fault.code(), "checkpoint-signature-invalid", "{f}");
    }
    // A node of an inclusion proof, and of a consistency proof.
    let line = find_line(&filtered, "entry", |v| v["index"] == 7);
    let f = failure(verify_bundle(
        &rewrite(&flip_base64(&filtered, line, "/proof/1", 5)),
        Some(&ca),
    ));
    assert_eq!(f.place, Place::Entry(7), "{f}");
    assert_eq!(f.fault.code(), "inclusion-proof-invalid", "{f}");
    let line = find_line(&filtered, "consistency", |_| true);
    let f = failure(verify_bundle(
        &rewrite(&flip_base64(&filtered, line, "/hashes/0", 5)),
        Some(&ca),
    ));
    assert!(matches!(f.place, Place::Consistency { .. }), "{f}");
    assert_eq!(f.fault.code(), "consistency-proof-invalid", "{f}");

    // Where no signature reaches (the header's export time), the file's checksum still does.
    let text = String::from_utf8(complete.clone()).unwrap();
    let at = text.find("\"exported_at\":\"").unwrap() + 16;
    let mut damaged = complete.clone();
    damaged[at] = if damaged[at] == b'1' { b'2' } else { b'1' };
    let f = failure(verify_bundle(&damaged, Some(&ca)));
    assert_eq!(f.fault.code(), "bundle-checksum", "{f}");
}

#[test]
fn the_command_line_names_the_first_bad_entry_and_exits_1() {
    let j = typical();
    let complete = j.bundle(Layout::Complete);
    let line = find_line(&complete, "entry", |v| v["index"] == 9);
    // Swap two entries' bytes, keeping the records' indices: a reordering.
    let mut lines: Vec<Vec<u8>> = complete
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let other = find_line(&complete, "entry", |v| v["index"] == 12);
    let (a, b) = (
        serde_json::from_slice::<serde_json::Value>(&lines[line]).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&lines[other]).unwrap(),
    );
    let mut a2 = a.clone();
    a2["bytes"] = b["bytes"].clone();
    let mut b2 = b.clone();
    b2["bytes"] = a["bytes"].clone();
    lines[line] = serde_json::to_vec(&a2).unwrap();
    lines[other] = serde_json::to_vec(&b2).unwrap();
    let forged = rewrite(&lines.join(&b'\n'));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forged.ndjson");
    std::fs::write(&file, &forged).unwrap();
    let ca = j.ca();
    let out = snodo(&[
        "audit",
        "verify",
        "--ca",
        ca.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "snodo: audit verify failed: entry 9 (bundle line {}): it stands as entry 9, but its bytes say index 12\n",
            line + 1
        )
    );
    // A file that is not there, or not a bundle: exit 1 too.
    let out = snodo(&["audit", "verify", dir.path().join("none").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&file, b"hello\n").unwrap();
    let out = snodo(&["audit", "verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("snodo: audit verify failed: bundle header: not a bundle record"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pinned_ca_must_be_the_bundles_and_the_checkpoints_must_chain_to_it() {
    let j = typical();
    let bundle = j.bundle(Layout::Complete);
    let other = tempfile::tempdir().unwrap();
    let other_pki = small_pki(other.path());
    let f = failure(verify_bundle(&bundle, Some(&other_pki.join("ca.crt"))));
    assert_eq!(f.place, Place::Header);
    assert_eq!(f.fault.code(), "ca-mismatch", "{f}");

    // A forger who swaps in their own CA is caught by a pinned CA; without one, the report
    // prints the forger's fingerprint for the auditor to compare.
    let forged_ca = std::fs::read_to_string(other_pki.join("ca.crt")).unwrap();
    let text = String::from_utf8(bundle).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut forged_header = header.clone();
    forged_header["ca"] = forged_ca.into();
    let forged = text.replacen(
        text.lines().next().unwrap(),
        &serde_json::to_string(&forged_header).unwrap(),
        1,
    );
    let forged = rewrite(forged.as_bytes());
    let f = failure(verify_bundle(&forged, Some(&j.ca())));
    assert_eq!(f.fault.code(), "ca-mismatch", "{f}");
    // Unpinned, the hub's certificates do not chain to the forger's CA.
    let f = failure(verify_bundle(&forged, None));
    assert_eq!(f.place, Place::Header, "{f}");
    assert_eq!(f.fault.code(), "bundle-hub-certificate", "{f}");
}

#[test]
fn a_truncated_or_damaged_bundle_file_is_refused() {
    let j = typical();
    let bundle = j.bundle(Layout::Complete);
    for cut in [bundle.len() / 3, bundle.len() / 2, bundle.len() - 3] {
        let f = failure(verify_bundle(&bundle[..cut], Some(&j.ca())));
        assert!(
            matches!(f.fault.code(), "bundle-truncated" | "bundle-malformed"),
            "cut at {cut}: {f}"
        );
    }
    // Cut at a line boundary: the end record is missing.
    let cut = bundle[..bundle.len() / 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let f = failure(verify_bundle(&bundle[..=cut], Some(&j.ca())));
    assert_eq!(f.fault.code(), "bundle-truncated", "{f}");
    let mut more = bundle.clone();
    more.extend_from_slice(b"{}\n");
    assert_eq!(
        failure(verify_bundle(&more, Some(&j.ca()))).fault.code(),
        "bundle-trailing-data"
    );
}

#[test]
fn signers_revoked_after_acceptance_are_listed_and_before_it_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = small_pki(dir.path());
    let pool = sign_envelopes(&pki_dir, 2);
    let mut j = SyntheticJournal::new(&pki_dir);
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(60);
    j.accept(&pool[0], before);
    j.checkpoint(before);
    let crl = snodo_envelopes::pki::revoke(&pki_dir, &pki_dir.join("comune-001272.crt")).unwrap();
    let bundle = j.bundle(Layout::Complete);
    let certs = load_pem_certs(&j.ca()).unwrap();
    let crl_x = snodo_envelopes::pki::load_crl(&crl).unwrap();
    let report = verify_reader(
        Cursor::new(&bundle),
        "t".into(),
        Some(certs.clone()),
        Some(&crl_x),
    )
    .unwrap();
    assert_eq!(report.envelopes.signer_revoked_later, 1);
    assert_eq!(report.envelopes.revoked_later[0].index, 0);
    assert!(
        report
            .to_string()
            .contains("revoked after their acceptance")
    );
    assert_eq!(report.trust.crl_entries, Some(1));

    // An acceptance after the revocation: the hub should have refused it.
    let after = OffsetDateTime::now_utc() + time::Duration::seconds(60);
    j.accept(&pool[1], after);
    j.checkpoint(after);
    let bundle = j.bundle(Layout::Complete);
    let f = failure(verify_reader(
        Cursor::new(&bundle),
        "t".into(),
        Some(certs),
        Some(&crl_x),
    ));
    assert_eq!(f.place, Place::Envelope(1), "{f}");
    assert_eq!(f.fault.code(), "certificate-revoked-before-use", "{f}");
    assert!(f.to_string().contains("revoked at"), "{f}");
    // The command line takes the list with --crl.
    let file = dir.path().join("b.ndjson");
    std::fs::write(&file, &bundle).unwrap();
    let out = snodo(&[
        "audit",
        "verify",
        "--ca",
        j.ca().to_str().unwrap(),
        "--crl",
        crl.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("entry 1, its envelope"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_data_directory_verifies_and_exports_a_bundle_that_verifies() {
    let j = typical();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    j.write_store(&data.join("store"));
    // A hub data directory, or its store directory.
    for d in [&data, &data.join("store")] {
        let report = eventually_open(|| datadir::verify(d, &j.ca(), None));
        assert_eq!(report.entries.count, j.entries.len() as u64);
        assert_eq!(report.envelopes.count, 20);
        assert_eq!(report.checkpoints.count, j.checkpoints.len() as u64);
        assert!(
            report.notes.iter().any(|n| n.contains("Merkle nodes")),
            "{report}"
        );
    }
    let out_file = dir.path().join("export.ndjson");
    let ca = j.ca();
    let out = snodo(&[
        "audit",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = verify_bundle(&std::fs::read(&out_file).unwrap(), Some(&ca)).unwrap();
    assert_eq!(report.entries.count, j.entries.len() as u64);
    assert_eq!(report.envelopes.count, 20);
    let out = snodo(&[
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Verified data directory"),
        "{}",
        stdout(&out)
    );

    // A directory without a store is not made into one.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = datadir::verify(&empty, &ca, None).unwrap_err();
    let _ = eventually_open(|| datadir::verify(&data, &ca, None));
    assert!(e.to_string().contains("no hub store"), "{e}");
    assert!(std::fs::read_dir(&empty).unwrap().next().is_none());
    let out = snodo(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--ca is required: {}",
        stderr(&out)
    );
}

#[test]
fn entries_after_the_last_checkpoint_are_noted_in_a_store_and_refused_in_a_bundle() {
    let mut j = typical();
    let n = j.entries.len() as u64;
    j.refuse(OffsetDateTime::now_utc(), "rate-limited");
    j.refuse(OffsetDateTime::now_utc(), "rate-limited");
    let dir = tempfile::tempdir().unwrap();
    j.write_store(dir.path());
    let report = verify_store_at(dir.path(), &j.ca()).unwrap();
    assert_eq!(report.entries.count, n + 2);
    let unsigned: Vec<&String> = report
        .notes
        .iter()
        .filter(|x| x.starts_with("unsigned"))
        .collect();
    assert_eq!(unsigned.len(), 1, "{report}");
    assert!(unsigned[0].contains(&format!(
        "entries {n}..={} follow the last checkpoint",
        n + 1
    )));
    let f = failure(verify_bundle(&j.bundle(Layout::Complete), Some(&j.ca())));
    assert_eq!(f.place, Place::Entry(n), "{f}");

    // A hub that only refused something, and stopped before its checkpoint interval.
    let mut j = SyntheticJournal::new(&fixture().pki);
    j.refuse(OffsetDateTime::now_utc(), "envelope-malformed");
    let dir = tempfile::tempdir().unwrap();
    j.write_store(dir.path());
    let report = verify_store_at(dir.path(), &j.ca()).unwrap();
    assert_eq!((report.entries.count, report.checkpoints.count), (1, 0));
}

#[test]
fn pruned_bodies_are_accounted_for_by_the_journal() {
    let mut j = typical();
    let at = OffsetDateTime::now_utc() - time::Duration::seconds(30);
    let accepted: Vec<u64> = j.envelopes.keys().copied().take(5).collect();
    for i in &accepted {
        j.prune(*i, at);
    }
    j.checkpoint(at);
    let ca = j.ca();
    let report = verify_bundle(&j.bundle(Layout::Complete), Some(&ca)).unwrap();
    assert_eq!((report.envelopes.count, report.envelopes.pruned), (15, 5));
    assert!(
        report
            .to_string()
            .contains("5 bodies pruned after the retention period")
    );
    let report = verify_bundle(
        &j.bundle(Layout::Filtered {
            pick: all,
            since: Some(1),
        }),
        Some(&ca),
    )
    .unwrap();
    assert_eq!((report.envelopes.count, report.envelopes.pruned), (15, 5));
    let dir = tempfile::tempdir().unwrap();
    j.write_store(dir.path());
    let report = verify_store_at(dir.path(), &ca).unwrap();
    assert_eq!((report.envelopes.count, report.envelopes.pruned), (15, 5));

    // A body said to be pruned that the journal never pruned: in a bundle (the forger
    // replaced the envelope with a marker), and in a store (the body deleted).
    let victim = *j.envelopes.keys().nth(7).unwrap();
    let mut forged = j.copy();
    forged.pruned.insert(victim, victim);
    let f = failure(verify_bundle(&forged.bundle(Layout::Complete), Some(&ca)));
    assert_eq!(f.place, Place::Envelope(victim), "{f}");
    assert_eq!(f.fault.code(), "envelope-pruning-unproven", "{f}");
    assert!(
        f.to_string()
            .ends_with("its body is missing as pruned, but the journal records no pruning of it"),
        "{f}"
    );
    let f = failure(verify_bundle(
        &forged.bundle(Layout::Filtered {
            pick: all,
            since: None,
        }),
        Some(&ca),
    ));
    assert_eq!(f.place, Place::Envelope(victim), "{f}");
    assert_eq!(f.fault.code(), "envelope-pruning-unproven", "{f}");
    let dir = tempfile::tempdir().unwrap();
    forged.write_store(dir.path());
    let f = failure(verify_store_at(dir.path(), &ca));
    assert_eq!(f.place, Place::Envelope(victim), "{f}");
}

/// Changes a byte of the value under `key` in the store at `dir`: the one at `at`, to another
/// base64 character if it is one (so that an encoding stays valid), else a bit of it.
fn flip_store(dir: &Path, key: &[u8], at: impl Fn(&[u8]) -> usize) {
    let store = open_store(dir);
    let mut value = store.get(key).unwrap().expect("the key");
    let i = at(&value);
    value[i] = match value[i] {
        b'A' => b'B',
        c if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' => b'A',
        c => c ^ 0x01,
    };
    let mut b = snodo_broker::store::Batch::default();
    b.put(key.to_vec(), value);
    store.apply(b).unwrap();
    store.flush().unwrap();
}

fn verify_store_at(dir: &Path, ca: &Path) -> Result<Report, AuditError> {
    let store = open_store(dir);
    let trust = Trust::load(ca, None).unwrap();
    datadir::verify_store(&store, &trust, "test store".into())
}

/// A place to damage in a store: what, the key, the byte, and what the failure must say.
type Case = (
    &'static str,
    Vec<u8>,
    Box<dyn Fn(&[u8]) -> usize>,
    Box<dyn Fn(&Failure) -> bool>,
);

#[test]
fn a_byte_flipped_in_a_data_directory_is_caught_where_it_is() {
    let j = typical();
    let ca = j.ca();
    let accepted = *j.envelopes.keys().nth(2).unwrap();
    let seq = j.envelopes[&accepted].0.seq;
    let size = j.checkpoints[2].checkpoint.size;
    let signature_at = |v: &[u8]| {
        let text = std::str::from_utf8(v).unwrap();
        text.find("\"signature\":\"").unwrap() + 20
    };
    let cases: Vec<Case> = vec![
        (
            "an entry's text",
            keys::journal(6),
            Box::new(|v: &[u8]| v.len() / 2),
            Box::new(|f: &Failure| f.place == Place::Entry(6)),
        ),
        (
            "a raw envelope",
            keys::raw(seq),
            Box::new(|v: &[u8]| v.len() / 3),
            Box::new(move |f: &Failure| {
                f.place == Place::Envelope(accepted) && f.fault.code() == "envelope-digest-mismatch"
            }),
        ),
        (
            "a checkpoint's signature",
            keys::checkpoint(size),
            Box::new(signature_at),
            Box::new(move |f: &Failure| {
                f.place == Place::Checkpoint(Some(size))
                    && f.fault.code() == "checkpoint-signature-invalid"
            }),
        ),
        (
            "a leaf node",
            keys::node(0, 11),
            Box::new(|_: &[u8]| 7),
            Box::new(|f: &Failure| {
                f.place == Place::Entry(11) && f.fault.code() == "store-node-mismatch"
            }),
        ),
        (
            "an interior node",
            keys::node(2, 1),
            Box::new(|_: &[u8]| 30),
            Box::new(|f: &Failure| {
                f.place == Place::Store("n/2/1".into()) && f.fault.code() == "store-node-mismatch"
            }),
        ),
    ];
    for (what, key, at, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        j.write_store(dir.path());
        verify_store_at(dir.path(), &ca).unwrap();
        flip_store(dir.path(), &key, at);
        let f = failure(verify_store_at(dir.path(), &ca));
        assert!(expect(&f), "{what}: {f}");
    }
}

#[test]
fn every_proof_of_a_typical_journal_verifies() {
    let j = typical();
    let tree = j.tree();
    for c in &j.checkpoints {
        let (size, root) = (c.checkpoint.size, c.checkpoint.root);
        for i in 0..size {
            let proof = tree.inclusion_proof(i, size).unwrap();
            verify_inclusion(&leaf_hash(&j.entries[i as usize]), i, size, &proof, &root).unwrap();
        }
    }
}

/// A change an attacker makes to the log.
#[derive(Clone, Debug)]
enum Tamper {
    /// Re-encode entry `i` (canonically) with another detail.
    Alter(prop::sample::Index),
    /// Flip a bit of entry `i`'s bytes.
    Flip(prop::sample::Index, prop::sample::Index, u8),
    /// Swap two entries.
    Swap(prop::sample::Index, prop::sample::Index),
    /// Remove one entry (not the last).
    Remove(prop::sample::Index),
    /// Remove the last `k` entries, keeping the checkpoints.
    Truncate(prop::sample::Index),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Tamper::Alter),
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            0u8..8
        )
            .prop_map(|(i, p, b)| Tamper::Flip(i, p, b)),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(i, k)| Tamper::Swap(i, k)),
        any::<prop::sample::Index>().prop_map(Tamper::Remove),
        any::<prop::sample::Index>().prop_map(Tamper::Truncate),
    ]
}

/// Applies `t` to `j`; returns the entries one of which the failure must name, or none for a
/// truncation (named by the checkpoint that covers the missing entries). `None` when the
/// tampering is a no-op here.
fn apply(j: &mut SyntheticJournal, t: &Tamper) -> Option<Vec<u64>> {
    let n = j.entries.len();
    match t {
        Tamper::Alter(i) => {
            let i = i.index(n);
            let mut e = Entry::from_bytes(&j.entries[i]).unwrap();
            e.detail = Some(format!("{}, altered", e.detail.unwrap_or_default()));
            j.entries[i] = e.to_bytes().unwrap();
            Some(vec![i as u64])
        }
        Tamper::Flip(i, p, bit) => {
            let i = i.index(n);
            let p = p.index(j.entries[i].len());
            j.entries[i][p] ^= 1 << bit;
            Some(vec![i as u64])
        }
        Tamper::Swap(a, b) => {
            let (a, b) = (a.index(n), b.index(n));
            if a == b {
                return None;
            }
            j.entries.swap(a, b);
            Some(vec![a as u64, b as u64])
        }
        Tamper::Remove(i) => {
            if n < 2 {
                return None;
            }
            let i = i.index(n - 1);
            j.entries.remove(i);
            Some(vec![i as u64])
        }
        Tamper::Truncate(k) => {
            let k = k.index(n) + 1;
            j.entries.truncate(n - k);
            Some(vec![])
        }
    }
}

fn assert_named(f: &Failure, expect: &[u64]) -> Result<(), TestCaseError> {
    if expect.is_empty() {
        prop_assert_eq!(f.fault.code(), "journal-truncated", "{}", f);
    } else {
        prop_assert!(
            expect.iter().any(|i| names(f, *i)),
            "should name one of entries {:?}: {}",
            expect,
            f
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For random sequences of appends and checkpoints, every inclusion and consistency proof
    /// verifies, and the bundle verifies; any change to an entry, any reordering, removal or
    /// truncation is then caught, and the failure names the entry (or, for a truncation, the
    /// checkpoint that covers what is gone) — in a bundle whose end record the forger
    /// recomputed, so that only the signatures and proofs can catch it.
    #[test]
    fn random_journals_prove_everything_and_any_tampering_is_caught(
        ops in prop::collection::vec(op(), 1..40),
        t in tamper(),
    ) {
        let j = journal(&ops);
        let tree = j.tree();
        for (a, c) in j.checkpoints.iter().enumerate() {
            let (size, root) = (c.checkpoint.size, c.checkpoint.root);
            prop_assert_eq!(tree.root_at(size).unwrap(), root);
            for i in 0..size {
                let proof = tree.inclusion_proof(i, size).unwrap();
                prop_assert_eq!(verify_inclusion(&leaf_hash(&j.entries[i as usize]), i, size, &proof, &root), Ok(()));
            }
            for later in &j.checkpoints[a..] {
                let (to, to_root) = (later.checkpoint.size, later.checkpoint.root);
                let proof = tree.consistency_proof(size, to).unwrap();
                prop_assert_eq!(verify_consistency(size, to, &root, &to_root, &proof), Ok(()));
            }
        }
        let ca = j.ca();
        verify_bundle(&j.bundle(Layout::Complete), Some(&ca)).unwrap();
        verify_bundle(&j.bundle(Layout::Filtered { pick: all, since: Some(0) }), Some(&ca)).unwrap();

        if j.entries.is_empty() {
            return Ok(());
        }
        let mut forged = j.copy();
        let Some(expect) = apply(&mut forged, &t) else { return Ok(()) };
        let f = failure(verify_bundle(&forged.bundle(Layout::Complete), Some(&ca)));
        assert_named(&f, &expect)?;
        // A filtered bundle claims no completeness: removals and truncations are a smaller
        // selection. Anything changed or moved still fails its inclusion proof.
        if matches!(t, Tamper::Alter(_) | Tamper::Flip(..) | Tamper::Swap(..)) {
            let f = failure(verify_bundle(
                &forged.bundle_with(Layout::Filtered { pick: all, since: None }, &tree),
                Some(&ca),
            ));
            assert_named(&f, &expect)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The same in a hub's data directory, where the forger also rewrites the Merkle nodes and
    /// the hub's state to match the tampered entries: the signed checkpoints still catch it.
    #[test]
    fn tampering_with_a_data_directory_is_caught(
        ops in prop::collection::vec(op(), 1..30),
        t in tamper(),
    ) {
        let j = journal(&ops);
        let ca = j.ca();
        let dir = tempfile::tempdir().unwrap();
        j.write_store(&dir.path().join("honest"));
        verify_store_at(&dir.path().join("honest"), &ca).unwrap();
        if j.entries.is_empty() {
            return Ok(());
        }
        let mut forged = j.copy();
        let Some(expect) = apply(&mut forged, &t) else { return Ok(()) };
        forged.write_store(&dir.path().join("forged"));
        let f = failure(verify_store_at(&dir.path().join("forged"), &ca));
        assert_named(&f, &expect)?;
    }
}

/// A small bundle of each layout, made once.
fn small_bundles() -> &'static (PathBuf, Vec<u8>, Vec<u8>) {
    static B: OnceLock<(PathBuf, Vec<u8>, Vec<u8>)> = OnceLock::new();
    B.get_or_init(|| {
        let j = journal(&[
            Op::Accept(0),
            Op::Deliver,
            Op::Checkpoint,
            Op::Refuse,
            Op::Accept(1),
            Op::Ack,
            Op::Checkpoint,
            Op::Deliver,
        ]);
        let complete = j.bundle(Layout::Complete);
        let filtered = j.bundle(Layout::Filtered {
            pick: odd,
            since: Some(0),
        });
        (j.ca(), complete, filtered)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Flipping any bit of any byte of a bundle, anywhere (header, records, end), is caught.
    #[test]
    fn any_byte_flipped_anywhere_in_a_bundle_is_caught(
        filtered: bool, at: prop::sample::Index, bit in 0u8..8,
    ) {
        let (ca, complete, filtered_bundle) = small_bundles();
        let mut bundle = if filtered { filtered_bundle.clone() } else { complete.clone() };
        let i = at.index(bundle.len());
        bundle[i] ^= 1 << bit;
        let result = verify_bundle(&bundle, Some(ca));
        prop_assert!(
            matches!(result, Err(AuditError::Failed(_))),
            "byte {} bit {} of {:?}: {:?}", i, bit,
            String::from_utf8_lossy(&bundle[i.saturating_sub(30)..(i + 30).min(bundle.len())]),
            result.map(|r| r.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_hubs_data_directory_verifies_and_exports() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let anpr = t.client(ANPR);
    for n in 0..6 {
        let format = if n % 2 == 0 {
            Format::Json
        } else {
            Format::Xml
        };
        let (_, signed) = t.envelope(
            TURIN,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({ "n": n }),
            format,
        );
        let a = turin.submit(&hub, &signed, format).await;
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    }
    // A refusal: ANPR may not send this.
    let (_, signed) = t.envelope(
        ANPR,
        TURIN,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Json,
    );
    assert_eq!(anpr.submit(&hub, &signed, Format::Json).await.status, 403);
    for item in anpr.inbox(&hub, "?limit=10&lease=30s").await {
        assert_eq!(
            anpr.ack(&hub, item["lease"].as_str().unwrap()).await.status,
            204
        );
    }
    // Wait for the checkpoint interval to sign the deliveries too.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        turin
            .submit(
                &hub,
                &t.envelope(
                    TURIN,
                    ANPR,
                    "residenza.cambio",
                    "richiesta",
                    json!({"n": 9}),
                    Format::Json
                )
                .1,
                Format::Json
            )
            .await
            .status,
        202
    );
    let data = t.dir.path().join("data");
    let ca = t.pki().join("ca.crt");
    // While the hub runs, its store is its own.
    let e = datadir::verify(&data, &ca, None).unwrap_err();
    assert!(
        e.to_string().contains("if the hub is running, stop it"),
        "{e}"
    );
    hub.shutdown().await.unwrap();

    let report = eventually_open(|| datadir::verify(&data, &ca, None));
    assert_eq!(report.envelopes.count, 7);
    assert_eq!(report.entries.by_kind["accepted"], 7);
    assert_eq!(report.entries.by_kind["refused"], 1);
    assert_eq!(report.entries.by_kind["acknowledged"], 6);
    assert_eq!(report.hub.as_deref(), Some("hub"));

    let out = snodo(&[
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bundle = t.dir.path().join("journal.ndjson");
    let out = snodo(&[
        "audit",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = snodo(&[
        "audit",
        "verify",
        "--ca",
        ca.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("envelopes    7 (3 XML, 4 JSON)"),
        "{}",
        stdout(&out)
    );

    // The operator's store, with a byte of one entry changed.
    let store = data.join("store");
    let entry = {
        let s = open_store(&store);
        let (key, _) = s.scan(b"j/", None, 3).unwrap().pop().unwrap();
        key
    };
    flip_store(&store, &entry, |v| v.len() - 3);
    let f = failure(eventually_fail(|| datadir::verify(&data, &ca, None)));
    assert_eq!(f.entry(), Some(2), "{f}");
}

/// The auditor of a test hub, as a journal client.
fn hub_client(t: &TestHub, hub: &snodo_broker::cli::serve::Running, who: &str) -> JournalClient {
    let pki = t.pki();
    JournalClient::new(
        &format!("https://localhost:{}", hub.addr.port()),
        &pki.join("ca.crt"),
        &pki.join(format!("{who}.crt")),
        &pki.join(format!("{who}.key")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_from_a_real_hub_verify_offline_even_after_retention() {
    let t = TestHub::with(Options {
        journal: "retention = \"1s\"",
        ..Options::default()
    });
    let hub = t.start().await;
    let (turin, anpr) = (t.client(TURIN), t.client(ANPR));
    let submit = |n: u32| {
        let format = if n.is_multiple_of(2) {
            Format::Json
        } else {
            Format::Xml
        };
        let (_, signed) = t.envelope(
            TURIN,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({ "n": n }),
            format,
        );
        (signed, format)
    };
    for n in 0..4 {
        let (signed, format) = submit(n);
        assert_eq!(turin.submit(&hub, &signed, format).await.status, 202);
    }
    for item in anpr.inbox(&hub, "?limit=10&lease=30s").await {
        assert_eq!(
            anpr.ack(&hub, item["lease"].as_str().unwrap()).await.status,
            204
        );
    }
    // Past the retention period, the acknowledged ones lose their bodies; two new ones keep
    // theirs (one waiting in the inbox is never pruned).
    let auditor = hub_client(&t, &hub, "auditor-corte-dei-conti");
    eventually(10, || async {
        let mut s = auditor
            .entries(&Filters {
                kind: Some("pruned".into()),
                ..Filters::default()
            })
            .await
            .unwrap();
        let mut n = 0;
        while s.next().await.unwrap().is_some() {
            n += 1;
        }
        (n == 4).then_some(())
    })
    .await;
    for n in 4..6 {
        let (signed, format) = submit(n);
        assert_eq!(turin.submit(&hub, &signed, format).await.status, 202);
    }
    let (_, refused) = t.envelope(
        ANPR,
        TURIN,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Json,
    );
    assert_eq!(anpr.submit(&hub, &refused, Format::Json).await.status, 403);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let dir = tempfile::tempdir().unwrap();
    let ca = t.pki().join("ca.crt");
    let all = dir.path().join("all.ndjson");
    let counts = client::export(&auditor, &Filters::default(), None, &all)
        .await
        .unwrap();
    assert_eq!((counts.envelopes, counts.pruned), (2, 4), "{counts:?}");
    let report = bundle::verify_file(&all, Some(&ca), None).unwrap();
    assert_eq!((report.envelopes.count, report.envelopes.pruned), (2, 4));
    assert_eq!(report.entries.by_kind["pruned"], 4);
    assert!(
        report.entries.by_kind["queried"] >= 1,
        "auditors' queries are journaled"
    );

    // Filtered: Turin's acceptances, proven consistent with the checkpoint of the complete
    // export; then Turin itself, who sees only what it is party to.
    let turin_only = Filters {
        sender: Some(TURIN.into()),
        kind: Some("accepted".into()),
        ..Filters::default()
    };
    let part = dir.path().join("turin.ndjson");
    let counts = client::export(
        &auditor,
        &turin_only,
        Some(report.checkpoints.latest.unwrap().size),
        &part,
    )
    .await
    .unwrap();
    assert_eq!((counts.entries, counts.envelopes, counts.pruned), (6, 2, 4));
    let report = bundle::verify_file(&part, Some(&ca), None).unwrap();
    assert_eq!(
        (report.entries.inclusion_proofs, report.envelopes.pruned),
        (6, 4)
    );

    let as_turin = hub_client(&t, &hub, "comune-001272");
    let e = client::export(&as_turin, &Filters::default(), None, &part)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only an auditor's does"), "{e}");
    let mine = Filters {
        entity: Some(TURIN.into()),
        ..Filters::default()
    };
    client::export(&as_turin, &mine, None, &part).await.unwrap();
    let report = bundle::verify_file(&part, Some(&ca), None).unwrap();
    assert!(report.entries.count >= 6 + 4 + 4, "{report}");

    // The command line, with the CA found beside the certificate.
    let pki = t.pki();
    let o = snodo_async(vec![
        "audit".into(),
        "query".into(),
        "--hub".into(),
        format!("https://localhost:{}", hub.addr.port()),
        "--cert".into(),
        pki.join("auditor-corte-dei-conti.crt")
            .display()
            .to_string(),
        "--key".into(),
        pki.join("auditor-corte-dei-conti.key")
            .display()
            .to_string(),
        "--kind".into(),
        "pruned".into(),
        "--format".into(),
        "csv".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let csv = stdout(&o);
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",pruned,")), "{csv}");

    // The operator's view, once the hub is stopped.
    hub.shutdown().await.unwrap();
    let report = eventually_open(|| datadir::verify(&t.dir.path().join("data"), &ca, None));
    assert_eq!((report.envelopes.count, report.envelopes.pruned), (2, 4));
}

/// Retries `f` while the store is still locked by a store just closed in this process.
fn eventually_fail(f: impl Fn() -> Result<Report, AuditError>) -> Result<Report, AuditError> {
    for _ in 0..100 {
        match f() {
            Err(AuditError::Store(_)) => std::thread::sleep(std::time::Duration::from_millis(100)),
            r => return r,
        }
    }
    f()
}

/// Retries `f` while the store is still held by the hub that just stopped.
fn eventually_open(f: impl Fn() -> Result<Report, AuditError>) -> Report {
    for _ in 0..100 {
        match f() {
            Err(AuditError::Store(_)) => std::thread::sleep(std::time::Duration::from_millis(100)),
            r => return r.unwrap(),
        }
    }
    f().unwrap()
}

/// The auditor's certificate and key of the fixture's PKI.
fn auditor() -> (PathBuf, PathBuf) {
    let pki = &fixture().pki;
    (
        pki.join("auditor-corte-dei-conti.crt"),
        pki.join("auditor-corte-dei-conti.key"),
    )
}

fn client_of(api: &MockJournalApi) -> JournalClient {
    let (cert, key) = auditor();
    JournalClient::new(&api.url, &fixture().pki.join("ca.crt"), &cert, &key).unwrap()
}

async fn snodo_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_snodo"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_from_the_journal_api_verify_offline() {
    let j = typical();
    let ca = j.ca();
    let (entries, checkpoints) = (j.entries.len() as u64, j.checkpoints.len() as u64);
    let since = j.checkpoints[2].checkpoint.size;
    let api = MockJournalApi::start(MockJournal {
        journal: j,
        hidden: |_| false,
    })
    .await;
    let client = client_of(&api);
    let dir = tempfile::tempdir().unwrap();

    // Complete: every entry, every checkpoint; the hub overloaded for a moment.
    api.unavailable
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let out = dir.path().join("all.ndjson");
    let counts = client::export(&client, &Filters::default(), None, &out)
        .await
        .unwrap();
    assert_eq!(
        (counts.entries, counts.envelopes, counts.checkpoints),
        (entries, 20, checkpoints)
    );
    let report = bundle::verify_file(&out, Some(&ca), None).unwrap();
    assert_eq!(report.entries.count, entries);
    assert_eq!(report.checkpoints.roots_rebuilt, checkpoints);
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["exported_by"], "auditor:corte-dei-conti");
    assert_eq!(header["source"], api.url.as_str());
    assert!(!dir.path().join("all.ndjson.partial").exists());

    // Filtered, and proven consistent with an earlier checkpoint.
    let filters = Filters {
        kind: Some("accepted".into()),
        ..Filters::default()
    };
    let out = dir.path().join("accepted.ndjson");
    let counts = client::export(&client, &filters, Some(since), &out)
        .await
        .unwrap();
    assert_eq!(
        (counts.entries, counts.envelopes, counts.checkpoints),
        (20, 20, 2)
    );
    let report = bundle::verify_file(&out, Some(&ca), None).unwrap();
    assert_eq!(report.entries.inclusion_proofs, 20);
    assert_eq!(report.checkpoints.consistency_proofs, 1);
    assert_eq!(report.mode, snodo_broker::audit::report::Mode::Filtered);

    // The command line, as an auditor runs it.
    let (cert, key) = auditor();
    let hub_args = |cmd: &str| {
        vec![
            "audit".to_owned(),
            cmd.to_owned(),
            "--hub".into(),
            api.url.clone(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    };
    let mut args = hub_args("export");
    args.extend(["--sender".into(), TURIN.into(), "--out".into()]);
    args.push(dir.path().join("turin.ndjson").display().to_string());
    let o = snodo_async(args).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("Wrote "), "{}", stderr(&o));
    let o = snodo_async(vec![
        "audit".into(),
        "verify".into(),
        "--ca".into(),
        ca.display().to_string(),
        dir.path().join("turin.ndjson").display().to_string(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    for (format, lines) in [("json", 4), ("csv", 5), ("table", 5)] {
        let mut args = hub_args("query");
        args.extend(["--kind", "refused", "--format", format].map(String::from));
        let o = snodo_async(args).await;
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        assert_eq!(text.lines().count(), lines, "{format}: {text}");
        match format {
            "json" => {
                for l in text.lines() {
                    assert_eq!(
                        Entry::from_bytes(l.as_bytes()).unwrap().kind,
                        EventKind::Refused
                    );
                }
            }
            "csv" => assert!(
                text.starts_with("index,at,kind,envelope_id,sender"),
                "{text}"
            ),
            _ => assert!(
                text.lines().nth(1).unwrap().contains("sender-not-allowed"),
                "{text}"
            ),
        }
    }
    let mut args = hub_args("query");
    args.extend(["--limit", "3", "--format", "json"].map(String::from));
    assert_eq!(stdout(&snodo_async(args).await).lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_refuses_what_does_not_hold_together() {
    // A certificate that does not see every entry cannot make a complete export.
    let api = MockJournalApi::start(MockJournal {
        journal: typical(),
        hidden: |i| i == 4,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.ndjson");
    let e = client::export(&client_of(&api), &Filters::default(), None, &out)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "hub-protocol", "{e}");
    assert!(e.to_string().contains("only an auditor's does"), "{e}");
    assert!(!out.exists() && !dir.path().join("b.ndjson.partial").exists());

    // A hub serving entries that are not those it signed.
    let mut j = typical();
    let mut e5 = Entry::from_bytes(&j.entries[5]).unwrap();
    e5.detail = Some("rewritten".into());
    j.entries[5] = e5.to_bytes().unwrap();
    let api = MockJournalApi::start(MockJournal {
        journal: j,
        hidden: |_| false,
    })
    .await;
    let e = client::export(&client_of(&api), &Filters::default(), None, &out)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("does not have the root of the entries served"),
        "{e}"
    );
    let filters = Filters {
        kind: Some("delivered".into()),
        ..Filters::default()
    };
    let e = client::export(&client_of(&api), &filters, None, &out)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    // Bad arguments are refused before asking.
    let filters = Filters {
        from: Some("last tuesday".into()),
        ..Filters::default()
    };
    let e = client::export(&client_of(&api), &filters, None, &out)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "audit-usage");
}

/// Not a test: writes a synthetic complete bundle of `SNODO_AUDIT_BENCH_ENTRIES` entries
/// (default 1,000,000) to `$SNODO_AUDIT_BENCH` for timing `snodo audit verify`:
///
/// ```sh
/// SNODO_AUDIT_BENCH=/tmp/bench.ndjson cargo test --release -p snodo-broker --test audit \
///     -- --ignored --nocapture write_a_large_bundle
/// time target/release/snodo audit verify --ca /tmp/bench.ndjson.pki/pki/ca.crt /tmp/bench.ndjson
/// ```
///
/// Each envelope is accepted, delivered and acknowledged (three entries), half XML, half JSON,
/// drawn from 2,000 signed ones; a checkpoint every `SNODO_AUDIT_BENCH_EVERY` entries (64).
/// With `SNODO_AUDIT_BENCH_STORE=DIR`, the same journal is also written as a hub's store in
/// `DIR`, for `snodo audit verify --data-dir DIR --ca …`.
#[test]
#[ignore = "writes a large file for a benchmark"]
fn write_a_large_bundle() {
    use snodo_broker::audit::{BundleHeader, BundleWriter};
    let Ok(out) = std::env::var("SNODO_AUDIT_BENCH") else {
        eprintln!("set SNODO_AUDIT_BENCH to the file to write");
        return;
    };
    let entries: u64 = std::env::var("SNODO_AUDIT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let every: u64 = std::env::var("SNODO_AUDIT_BENCH_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let out = PathBuf::from(out);
    let pki_dir = PathBuf::from(format!("{}.pki", out.display()));
    let _ = std::fs::remove_dir_all(&pki_dir);
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki_dir = small_pki(&pki_dir);
    let pool = sign_envelopes(&pki_dir, 2000);
    let hub = snodo_broker::journal::CheckpointSigner::load(
        &pki_dir.join("hub.key"),
        &pki_dir.join("hub.crt"),
    )
    .unwrap();
    let mut header = BundleHeader::new(
        "hub",
        true,
        entries,
        std::fs::read_to_string(pki_dir.join("ca.crt")).unwrap(),
    );
    header.hub_certificates = vec![std::fs::read_to_string(pki_dir.join("hub.crt")).unwrap()];
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out).unwrap());
    let mut w = BundleWriter::new(file, &header).unwrap();
    let mut tree = snodo_broker::journal::MemoryTree::new();
    let store = std::env::var("SNODO_AUDIT_BENCH_STORE")
        .ok()
        .map(|d| open_store(Path::new(&d)));
    let mut batch = snodo_broker::store::Batch::default();
    let mut seq = 0u64;
    let at = OffsetDateTime::now_utc() - time::Duration::seconds(60);
    let mut index = 0u64;
    let mut n = 0usize;
    while index < entries {
        let env = &pool[n % pool.len()];
        n += 1;
        for kind in [
            EventKind::Accepted,
            EventKind::Delivered,
            EventKind::Acknowledged,
        ] {
            if index >= entries {
                break;
            }
            let mut e = SyntheticJournal::about(env, kind, at);
            e.index = index;
            if kind != EventKind::Accepted {
                e.actor = Some(ANPR.into());
            }
            let bytes = e.to_bytes().unwrap();
            let leaf = leaf_hash(&bytes);
            if store.is_some() {
                let nodes =
                    snodo_broker::journal::merkle::append(index, leaf, |l, k| tree.get(l, k))
                        .unwrap();
                for (l, k, h) in nodes {
                    batch.put(keys::node(l, k), h.to_vec());
                }
                batch.put(keys::journal(index), bytes.clone());
            }
            tree.push(leaf).unwrap();
            w.entry(index, &bytes, None).unwrap();
            if kind == EventKind::Accepted {
                let (media, format) = if env.format == Format::Xml {
                    ("application/xml", "xml")
                } else {
                    ("application/jose+json", "json")
                };
                w.envelope(index, env.header.id, media, &env.raw).unwrap();
                if store.is_some() {
                    let record = json!({
                        "seq": seq, "id": env.header.id, "sender": TURIN, "recipient": ANPR,
                        "recipients": [ANPR], "service": "residenza.cambio",
                        "action": "richiesta", "conversation": env.header.conversation,
                        "profile": env.header.profile, "in_reply_to": null, "expires_at": null,
                        "format": format, "digest": Entry::digest_of(&env.raw),
                        "accepted_at": snodo_envelopes::header::format_time(at),
                        "accepted_index": index,
                    });
                    batch.put(keys::envelope(seq), serde_json::to_vec(&record).unwrap());
                    batch.put(keys::raw(seq), env.raw.clone());
                    seq += 1;
                }
            }
            index += 1;
            if index.is_multiple_of(every) || index == entries {
                let root = tree.root().unwrap();
                let signed = hub.sign(hub.checkpoint(index, root, at)).unwrap();
                w.checkpoint(&signed).unwrap();
                if let Some(store) = &store {
                    batch.put(
                        keys::checkpoint(index),
                        serde_json::to_vec(&signed).unwrap(),
                    );
                    store.apply(std::mem::take(&mut batch)).unwrap();
                }
            }
        }
    }
    let (_, counts) = w.finish().unwrap();
    if let Some(store) = &store {
        store.flush().unwrap();
    }
    eprintln!("wrote {}: {counts:?}", out.display());
}

/// A journal of 8 envelopes signed by hub node `b` (same federation, its own key).
fn journal_of_node_b() -> SyntheticJournal {
    let f = fixture();
    let key = f.pki.join("hub-b.key");
    if !key.exists() {
        let ca = snodo_envelopes::pki::CertificateAuthority::load(&f.pki).unwrap();
        snodo_envelopes::pki::issue(
            &f.pki,
            &ca,
            &snodo_envelopes::pki::Subject::Hub {
                name: "b".into(),
                dns: Vec::new(),
            },
            snodo_envelopes::pki::KeyType::P256,
            snodo_envelopes::pki::Validity::default(),
        )
        .unwrap();
    }
    let mut j = journal(&[Op::Accept(0), Op::Deliver, Op::Checkpoint, Op::Accept(1)]);
    j.hub = snodo_broker::journal::CheckpointSigner::load(&key, &f.pki.join("hub-b.crt")).unwrap();
    j.checkpoints.clear();
    let at = OffsetDateTime::now_utc() - time::Duration::seconds(10);
    j.checkpoint(at);
    j
}

#[test]
fn a_bundle_of_several_nodes_verifies_node_by_node_and_names_the_part_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (typical(), journal_of_node_b());
    let (bundle_a, bundle_b) = (a.bundle(Layout::Complete), b.bundle(Layout::Complete));
    let both = dir.path().join("both.bundle");
    std::fs::write(&both, [bundle_a.clone(), bundle_b.clone()].concat()).unwrap();
    let reports = bundle::verify_file_nodes(&both, Some(&a.ca()), None).unwrap();
    let hubs: Vec<_> = reports.iter().map(|r| r.hub.clone().unwrap()).collect();
    assert_eq!(hubs, ["hub", "b"]);
    assert_eq!(reports[1].entries.count, b.entries.len() as u64);
    assert!(
        reports[1].source.ends_with("(part 2)"),
        "{}",
        reports[1].source
    );

    // A byte flipped in the second node's part: that part is named.
    let line = find_line(&bundle_b, "envelope", |_| true);
    let flipped = flip_base64(&bundle_b, line, "/bytes", 40);
    std::fs::write(&both, [bundle_a.clone(), flipped].concat()).unwrap();
    let part_a_lines = bundle_a.iter().filter(|b| **b == b'\n').count() as u64;
    match bundle::verify_file_nodes(&both, Some(&a.ca()), None) {
        Err(AuditError::Failed(f)) => {
            // The line named is the file's (from 1): inside the second part.
            assert_eq!(f.line, Some(part_a_lines + line as u64 + 1), "{f}");
            assert!(matches!(f.place, Place::Envelope(_)), "{f}");
        }
        other => panic!("not refused: {:?}", other.map(|r| r.len())),
    }

    // The same node twice is refused; so is anything after the last part that is not a part.
    std::fs::write(&both, [bundle_a.clone(), bundle_a.clone()].concat()).unwrap();
    let e = bundle::verify_file_nodes(&both, Some(&a.ca()), None).unwrap_err();
    assert!(e.to_string().contains("second journal of hub `hub`"), "{e}");
    std::fs::write(
        &both,
        [bundle_a, b"{\"type\":\"checkpoint\"}\n".to_vec()].concat(),
    )
    .unwrap();
    assert!(bundle::verify_file_nodes(&both, Some(&a.ca()), None).is_err());
}
