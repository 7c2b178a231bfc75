//! An export of 100,000 journal entries streams from the hub without its memory growing with
//! the size of the export: the hub runs as a child process over a store prepared with the
//! entries, and its resident memory is sampled while the NDJSON stream is read.

mod common;

use common::child::HubProcess;
use common::*;
use snodo_broker::journal::entry::{Entry, EventKind};
use snodo_broker::journal::merkle;
use snodo_broker::journal::query::Postings;
use snodo_broker::store::{Batch, FjallStore, Store, keys};

const ENTRIES: u64 = 100_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Writes `ENTRIES` journal entries (with their indexes) straight into the hub's store.
fn prepare(t: &TestHub) {
    let store = FjallStore::open(&t.dir.path().join("data/store")).unwrap();
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let mut batch = Batch::default();
    let mut postings = Postings::default();
    let mut nodes = std::collections::HashMap::new();
    for i in 0..ENTRIES {
        let mut e = Entry::new(
            i,
            EventKind::Accepted,
            start + time::Duration::milliseconds(i as i64),
            "ab".repeat(32),
        );
        e.envelope_id = Some(uuid::Uuid::now_v7());
        e.sender = Some(if i % 2 == 0 { TURIN } else { CUNEO }.into());
        e.recipient = Some(ANPR.into());
        e.service = Some("residenza.cambio".into());
        e.action = Some("richiesta".into());
        e.conversation = Some(format!("pratica-{i}"));
        let bytes = e.to_bytes().unwrap();
        let added = merkle::append(i, merkle::leaf_hash(&bytes), |l, k| {
            nodes.get(&(l, k)).copied()
        })
        .unwrap();
        for (l, k, h) in added {
            nodes.insert((l, k), h);
            batch.put(keys::node(l, k), h.to_vec());
        }
        batch.put(keys::journal(i), bytes);
        postings.add(&e);
        if batch.len() > 50_000 {
            for (k, v) in std::mem::take(&mut postings).into_writes() {
                batch.put(k, v);
            }
            store.apply(std::mem::take(&mut batch)).unwrap();
        }
    }
    let state = serde_json::json!({ "journal_size": ENTRIES, "next_seq": 0, "checkpoint_size": 0 });
    batch.put(keys::STATE.to_vec(), serde_json::to_vec(&state).unwrap());
    for (k, v) in postings.into_writes() {
        batch.put(k, v);
    }
    store.apply(batch).unwrap();
    store.flush().unwrap();
    drop(store);
    // The store's background workers let go of the directory's lock shortly after the close;
    // the hub process needs it.
    let path = t.dir.path().join("data/store");
    for _ in 0..100 {
        if FjallStore::open(&path).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_100000_entries_streams_in_bounded_memory() {
    let t = TestHub::new("");
    // A small page cache, so that what the store caches cannot pass for what the export holds.
    let text = std::fs::read_to_string(&t.config_path).unwrap();
    std::fs::write(
        &t.config_path,
        text.replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\nstore_cache = 4194304",
        ),
    )
    .unwrap();
    std::fs::create_dir_all(t.dir.path().join("data/store")).unwrap();
    prepare(&t);
    let mut hub = HubProcess::new(&t);
    hub.start().await;
    let auditor = t.client("auditor-corte-dei-conti");
    let base = hub.base();
    // Warm up: the first page, so that the baseline includes a served request.
    let first = auditor
        .try_get_at(&base, "/v1/journal/entries?limit=10")
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    let baseline = rss_kib(hub.pid());

    let mut resp = auditor
        .http
        .get(format!("{base}/v1/journal/entries"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut lines, mut bytes, mut peak) = (0u64, 0u64, baseline);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if lines % 5_000 < 50 {
            peak = peak.max(rss_kib(hub.pid()));
        }
    }
    peak = peak.max(rss_kib(hub.pid()));
    // Every entry, plus the auditor's own journaled queries.
    assert!(lines >= ENTRIES, "{lines} lines");
    let growth_kib = peak.saturating_sub(baseline);
    eprintln!(
        "export: {lines} lines, {} MiB; hub RSS {} MiB -> peak {} MiB",
        bytes >> 20,
        baseline >> 10,
        peak >> 10
    );
    // The export is tens of MiB; the hub holds one page of it at a time (and a 4 MiB page
    // cache), not the export.
    assert!(bytes > 30 << 20, "the export is {} MiB", bytes >> 20);
    assert!(
        growth_kib * 1024 < bytes / 2,
        "the hub grew by {} MiB for a {} MiB export",
        growth_kib >> 10,
        bytes >> 20
    );
    hub.signal("TERM");
    assert!(
        hub.wait_exit(std::time::Duration::from_secs(30))
            .await
            .success()
    );
}
