//! Journal queries on a store of 250,000 entries (`QUERY_ENTRIES` for another size): a page of
//! results by an indexed field (a frequent one and a rare one), by a time range, and deep in
//! the log — the cost follows the page, not the size of the journal. Prints how long building
//! the store took and the process's peak memory.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use snodo_broker::journal::entry::{Entry, EventKind};
use snodo_broker::journal::query::{self, Field, Filter, Postings};
use snodo_broker::store::{Batch, FjallStore, Store, keys};
use time::OffsetDateTime;

/// Entries in the journal: `QUERY_ENTRIES`, default 250,000.
fn entries() -> u64 {
    std::env::var("QUERY_ENTRIES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(250_000)
}
const COMUNI: u64 = 1_181;
/// Entries per group commit when the journal is built.
const GROUP: u64 = 256;

fn start() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
}

/// The journal: senders spread over the 1,181 comuni of Piedmont, one conversation per 3 entries.
fn build(dir: &std::path::Path) -> FjallStore {
    let store = FjallStore::open(dir).expect("store");
    let mut batch = Batch::default();
    let mut postings = Postings::default();
    for i in 0..entries() {
        let kind = [
            EventKind::Accepted,
            EventKind::Delivered,
            EventKind::Acknowledged,
        ][(i % 3) as usize];
        let mut e = Entry::new(
            i,
            kind,
            start() + time::Duration::milliseconds(i as i64),
            "ab".repeat(32),
        );
        e.sender = Some(format!("comune:{:06}", 1000 + (i / 3) % COMUNI));
        e.recipient = Some("anpr:ministero".into());
        e.service = Some("residenza.cambio".into());
        e.action = Some("richiesta".into());
        e.conversation = Some(format!("pratica-{}", i / 3));
        batch.put(keys::journal(i), e.to_bytes().expect("entry"));
        postings.add(&e);
        // Index keys as the hub writes them under load: one per field and value per group
        // commit of a few hundred entries.
        if i % GROUP == GROUP - 1 {
            for (k, v) in std::mem::take(&mut postings).into_writes() {
                batch.put(k, v);
            }
        }
        if batch.len() >= 10_000 {
            store.apply(std::mem::take(&mut batch)).expect("apply");
        }
    }
    for (k, v) in postings.into_writes() {
        batch.put(k, v);
    }
    store.apply(batch).expect("apply");
    store.flush().expect("flush");
    store
}

fn queries(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let n = entries();
    let built = std::time::Instant::now();
    let store = build(dir.path());
    eprintln!(
        "built a journal of {n} entries in {:.1} s; peak memory (VmHWM) {}",
        built.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s
                .lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_owned))
            .unwrap_or_default()
    );
    let mut g = c.benchmark_group(format!("query at {n} entries"));
    let mut by = |name: &str, filter: Filter, after: Option<u64>| {
        g.bench_function(BenchmarkId::new("page of 100", name), |b| {
            b.iter(|| {
                let p = query::page(&store, black_box(&filter), n, after, 100).expect("page");
                black_box(p.entries.len())
            });
        });
    };
    let mut sender = Filter::default();
    sender.with(Field::Sender, "comune:001272");
    by("sender (1 in 1,181)", sender.clone(), None);
    by("sender, deep in the log", sender, Some(n - n / 25));
    let mut conversation = Filter::default();
    conversation.with(Field::Conversation, "pratica-65432");
    by("conversation (3 entries)", conversation, None);
    let mut kind = Filter::default();
    kind.with(Field::Kind, "acknowledged");
    by("kind (1 in 3)", kind, None);
    let range = Filter {
        from: Some(start() + time::Duration::seconds(1_500)),
        to: Some(start() + time::Duration::seconds(1_501)),
        ..Filter::default()
    };
    by("time range of 1 s", range, None);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = queries
}
criterion_main!(benches);
