//! The journal's own costs at a million entries: appending a leaf (hashing and the nodes it
//! completes), and generating inclusion and consistency proofs — over the in-memory tree, so
//! that the figures are the Merkle work alone (in the hub each node is one more store read).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use snodo_broker::journal::merkle::{self, MemoryTree};

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
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = journal
}
criterion_main!(benches);
