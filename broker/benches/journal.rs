//! The journal's own costs at a million entries: appending a leaf (hashing and the nodes it
//! completes), and generating inclusion and consistency proofs — over the in-memory tree, so
//! that the figures are the Merkle work alone (in the hub each node is one more store read);
//! and serializing a group's receipts, whose checkpoint is the same for all of them.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use snodo_broker::journal::merkle::{self, MemoryTree};
use snodo_broker::journal::{CheckpointSigner, Entry, EventKind, Receipt, SharedCheckpoint};
use snodo_envelopes::pki::{self, KeyType};
use time::OffsetDateTime;
use uuid::Uuid;

const SIZE: u64 = 1_000_000;

fn leaf(i: u64) -> merkle::Hash {
    merkle::leaf_hash(&i.to_be_bytes())
}

fn journal(c: &mut Criterion) {
    let mut tree = MemoryTree::from_leaves((0..SIZE).map(leaf)).expect("tree");
    let root = tree.root().expect("root");
    let mut g = c.benchmark_group("journal");
    g.bench_function(BenchmarkId::new("append", "at 1M"), |b| {
        let mut i = SIZE;
        b.iter(|| {
            i += 1;
            black_box(tree.push(leaf(i)).expect("append"))
        });
    });
    let size = SIZE;
    g.bench_function(BenchmarkId::new("inclusion_proof", "1M"), |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 7_919) % size;
            black_box(tree.inclusion_proof(i, size).expect("proof"))
        });
    });
    g.bench_function(BenchmarkId::new("verify_inclusion", "1M"), |b| {
        let proof = tree.inclusion_proof(123_456, size).expect("proof");
        b.iter(|| {
            merkle::verify_inclusion(&leaf(123_456), 123_456, size, black_box(&proof), &root)
                .expect("verifies")
        });
    });
    g.bench_function(BenchmarkId::new("consistency_proof", "500k to 1M"), |b| {
        b.iter(|| black_box(tree.consistency_proof(500_000, size).expect("proof")));
    });
    receipts(&mut g);
    g.finish();
}

/// A group's 32 receipts at a journal of a million entries, under an RSA-2048 hub's
/// checkpoint, serialized as one batch answer: each with its own copy of the checkpoint
/// (serialized 32 times) against the group's one shared JSON.
fn receipts(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    const GROUP: u64 = 32;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    pki::init(
        &dir,
        &["comune:001272".parse().expect("id")],
        KeyType::Rsa2048,
    )
    .expect("pki");
    let hub =
        CheckpointSigner::load(&dir.join(pki::HUB_KEY), &dir.join(pki::HUB_CERT)).expect("hub key");
    let now = OffsetDateTime::now_utc();
    let entries: Vec<Entry> = (SIZE..SIZE + GROUP)
        .map(|i| Entry {
            envelope_id: Some(Uuid::from_u128(u128::from(i))),
            sender: Some("comune:001272".into()),
            ..Entry::new(
                i,
                EventKind::Accepted,
                now,
                Entry::digest_of(&i.to_be_bytes()),
            )
        })
        .collect();
    let leaves = (0..SIZE)
        .map(leaf)
        .chain(entries.iter().map(|e| e.leaf_hash().expect("leaf")));
    let tree = MemoryTree::from_leaves(leaves).expect("tree");
    let size = tree.size();
    let signed = hub
        .sign(hub.checkpoint(size, tree.root().expect("root"), now))
        .expect("signed");
    let receipts = |checkpoint: SharedCheckpoint| -> Vec<Receipt> {
        entries
            .iter()
            .map(|e| {
                let proof = tree.inclusion_proof(e.index, size).expect("proof");
                Receipt::new(e, proof, checkpoint.clone()).expect("receipt")
            })
            .collect()
    };
    let own = receipts(signed.clone().into());
    let shared = receipts(SharedCheckpoint::with_json(signed).expect("json"));
    assert_eq!(
        serde_json::to_vec(&own).expect("json"),
        serde_json::to_vec(&shared).expect("json")
    );
    for (name, receipts) in [
        ("checkpoint per receipt", own),
        ("shared checkpoint", shared),
    ] {
        g.bench_function(BenchmarkId::new("32 receipts to JSON", name), |b| {
            b.iter(|| black_box(serde_json::to_vec(&receipts).expect("json")));
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = journal
}
criterion_main!(benches);
