//! The store alone: what the engine's group commit asks of the store for each accepted envelope —
//! about ten keys (journal entry, Merkle nodes, record, raw bytes, idempotency, by-id, history,
//! queue) written in one batch per group of 64 envelopes, with and without the flush, and
//! without the raw envelope bytes. Keys come from `store::keys`, values have the sizes of a
//! 1 KiB JSON envelope's. One iteration is one envelope.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snodo_broker::store::{Batch, FjallStore, Store, keys};
use uuid::Uuid;

const GROUP: u64 = 64;
/// Sizes measured on the hub: a signed 1 KiB JSON envelope (RSA-2048), its record and its
/// `accepted` journal entry.
const RAW: usize = 3908;
const RECORD: usize = 420;
const ENTRY: usize = 380;

/// Writes `n` envelopes starting at `*next`, one batch (and flush) per group.
fn write(store: &FjallStore, next: &mut u64, n: u64, raw: bool, flush: bool) {
    let end = *next + n;
    while *next < end {
        let mut b = Batch::default();
        for seq in *next..(*next + GROUP).min(end) {
            let id = Uuid::now_v7();
            b.put(keys::journal(seq), vec![b'e'; ENTRY]);
            // The leaf, and each subtree this leaf completes.
            for level in 0..=(seq + 1).trailing_zeros() {
                b.put(keys::node(level, seq >> level), vec![level as u8; 32]);
            }
            b.put(keys::envelope(seq), vec![b'r'; RECORD]);
            if raw {
                b.put(keys::raw(seq), vec![b'x'; RAW]);
            }
            b.put(
                keys::idempotency("comune:900001", &id),
                seq.to_be_bytes().to_vec(),
            );
            b.put(keys::by_id(&id, seq), Vec::new());
            b.put(keys::history(seq, seq), Vec::new());
            b.put(keys::queue("anpr:ministero", seq), Vec::new());
        }
        b.put(keys::STATE.to_vec(), vec![b'{'; 60]);
        *next = (*next + GROUP).min(end);
        store.apply(b).expect("apply");
        if flush {
            store.flush().expect("flush");
        }
    }
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    for (name, raw, flush) in [
        ("apply+flush", true, true),
        ("apply", true, false),
        ("apply+flush-without-raw", false, true),
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let s = FjallStore::open(dir.path()).expect("store");
        let mut next = 0u64;
        g.bench_function(BenchmarkId::new("group64", name), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                write(&s, &mut next, iters, raw, flush);
                started.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = store
}
criterion_main!(benches);
