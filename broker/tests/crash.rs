//! Crash safety of `snodo serve`, as a process: thousands of signed envelopes, XML and JSON,
//! submitted concurrently by several entities while consumers lease and acknowledge, and the
//! hub killed with SIGKILL at random moments and restarted each time. Every envelope that got a
//! receipt is delivered exactly once, no acknowledgement counts twice, and the journal left on
//! disk rebuilds to the very roots its signed checkpoints (and the receipts) name.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::child::HubProcess;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use snodo_broker::journal::merkle::{self, verify_consistency};
use snodo_broker::journal::{Entry, EventKind, MemoryTree, Receipt, SignedCheckpoint};
use snodo_broker::store::{FjallStore, Store as _, keys};
use snodo_envelopes::{EntityId, Envelope, Format, Recipient, Signer, TrustStore};
use uuid::Uuid;

/// How many envelopes are submitted.
const ENVELOPES: usize = 3000;
/// How many times the hub is killed.
const KILLS: usize = 5;
/// Concurrent submitting tasks.
const SUBMITTERS: usize = 8;
/// Leases are short, so that those a kill orphaned come back soon.
const LEASE: Duration = Duration::from_secs(3);
/// No rate limit gets in the way of the load.
const LIMITS: &str = "requests_per_second = 100000\nburst = 100000";
/// Who sends what to whom: three comuni-side senders to ANPR, and ANPR's events to the comuni.
const TRAFFIC: [(&str, &str, &str, &str); 4] = [
    (TURIN, ANPR, "residenza.cambio", "richiesta"),
    (CUNEO, ANPR, "residenza.cambio", "richiesta"),
    (PORTAL, ANPR, "residenza.cambio", "richiesta"),
    (ANPR, "*", "anpr.feed", "variazione"),
];
/// The inboxes and how many consumers lease from each.
const INBOXES: [(&str, usize); 3] = [(ANPR, 2), (TURIN, 1), (CUNEO, 1)];

/// One signed envelope of the load.
struct Item {
    sender: &'static str,
    recipients: Vec<&'static str>,
    format: Format,
    id: Uuid,
    bytes: Vec<u8>,
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// The receipt returned for each envelope (each verified offline when it arrived).
    receipts: HashMap<Uuid, Receipt>,
    /// Envelopes whose submission failed with the connection and that were never retried:
    /// accepted or not, nobody was told.
    abandoned: HashSet<Uuid>,
    /// Submissions that failed with the connection and were retried.
    retried: usize,
    /// Retries answered 200: accepted before the kill, the answer lost with the connection.
    retried_duplicates: usize,
    /// 204 answers to acknowledgements, per (recipient, envelope).
    acked: HashMap<(String, Uuid), u32>,
    /// Acknowledgements whose answer was lost with the connection and whose retry found the
    /// lease gone: done before the kill, or expired meanwhile; the journal says which.
    unsure_acks: HashSet<(String, Uuid)>,
    /// Leases that expired before their acknowledgement.
    lost_leases: usize,
}

type Shared<T> = Arc<Mutex<T>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_envelopes_survive_sigkill_and_are_delivered_exactly_once() {
    let seed: u64 = std::env::var("SNODO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("SNODO_CRASH_SEED={seed} repeats this run's random choices (not its timing)");
    let mut rng = StdRng::seed_from_u64(seed);

    let t = TestHub::new(LIMITS);
    let mut hub = HubProcess::new(&t);
    let items = Arc::new(sign_all(&t.pki()).await);
    let by_id: Arc<HashMap<Uuid, usize>> =
        Arc::new(items.iter().enumerate().map(|(i, it)| (it.id, i)).collect());
    let trust = Arc::new(t.trust());
    let ledger: Shared<Ledger> = Arc::default();
    hub.start().await;
    let base = hub.base();

    // Submitters share one queue of envelopes; each sender has one client (one connection).
    let clients: Arc<HashMap<&str, Client>> = Arc::new(
        [TURIN, CUNEO, PORTAL, ANPR]
            .into_iter()
            .map(|e| (e, t.client(e)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|n| {
            tokio::spawn(submit_all(
                items.clone(),
                next.clone(),
                clients.clone(),
                base.clone(),
                trust.clone(),
                ledger.clone(),
                seed.wrapping_add(n as u64 + 1),
            ))
        })
        .collect();
    let drain_after: Shared<Option<Instant>> = Arc::default();
    let consumers: Vec<_> = INBOXES
        .iter()
        .flat_map(|&(entity, n)| std::iter::repeat_n(entity, n))
        .map(|entity| {
            tokio::spawn(consume(
                entity,
                t.client(entity),
                base.clone(),
                items.clone(),
                by_id.clone(),
                ledger.clone(),
                drain_after.clone(),
            ))
        })
        .collect();

    // Kills spread over the stream of submissions, each at a random moment within its stretch.
    let mut last_kill = Instant::now();
    let mut receipted_at_kill = Vec::new();
    for k in 0..KILLS {
        let target = (k + 1) * ENVELOPES / (KILLS + 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        while ledger.lock().unwrap().receipts.len() < target {
            assert!(
                Instant::now() < deadline,
                "no progress to {target} receipts before kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        receipted_at_kill.push(ledger.lock().unwrap().receipts.len());
        hub.kill();
        last_kill = Instant::now();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        hub.start().await;
    }
    for s in submitters {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("submissions did not finish within 60 s")
            .unwrap();
    }
    // Leases a kill orphaned expire at most LEASE after it; after that, an empty inbox is final.
    *drain_after.lock().unwrap() = Some(last_kill + LEASE + Duration::from_secs(1));
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("the inboxes were not drained within 60 s")
            .unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "{} receipts, {} abandoned, {} retried ({} of them accepted before a kill), {} acks \
         unsure, {} leases lost; receipts at each kill: {receipted_at_kill:?}",
        ledger.receipts.len(),
        ledger.abandoned.len(),
        ledger.retried,
        ledger.retried_duplicates,
        ledger.unsure_acks.len(),
        ledger.lost_leases,
    );
    assert_eq!(
        ledger.receipts.len() + ledger.abandoned.len(),
        ENVELOPES,
        "every envelope either got a receipt or was abandoned"
    );
    assert!(
        receipted_at_kill[0] < ENVELOPES,
        "the first kill came after the load: nothing was in flight"
    );

    // A retry of an accepted envelope, the same bytes, gets the original receipt.
    for item in items
        .iter()
        .filter(|i| ledger.receipts.contains_key(&i.id))
        .step_by(40)
    {
        let a = clients[item.sender]
            .try_submit_at(&base, &item.bytes, item.format)
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(
            Receipt::from_json(&a.body).unwrap(),
            ledger.receipts[&item.id],
            "a duplicate's receipt differs from the original"
        );
    }
    // Nothing is left to deliver.
    for (entity, _) in INBOXES {
        let a = t
            .client(entity)
            .try_get_at(&base, "/v1/inbox?limit=100&lease=1s")
            .await
            .unwrap();
        assert_eq!(a.json()["envelopes"], json!([]), "{entity}'s inbox");
    }

    // A graceful stop, so that the store can be opened here.
    hub.signal("TERM");
    let status = hub.wait_exit(Duration::from_secs(40)).await;
    assert!(status.success(), "SIGTERM: {status}\n{}", hub.log_text());
    check_store(
        &t.dir.path().join("data/store"),
        &trust,
        &items,
        &by_id,
        &ledger,
    );
}

/// Signs the load, on two threads.
async fn sign_all(pki: &Path) -> Vec<Item> {
    let halves: Vec<_> = [0..ENVELOPES / 2, ENVELOPES / 2..ENVELOPES]
        .into_iter()
        .map(|range| {
            let pki = pki.to_owned();
            tokio::task::spawn_blocking(move || {
                let signers: HashMap<&str, Signer> = [TURIN, CUNEO, PORTAL, ANPR]
                    .into_iter()
                    .map(|e| {
                        let stem = e.parse::<EntityId>().unwrap().file_stem();
                        let signer = Signer::load(
                            &pki.join(format!("{stem}.key")),
                            &pki.join(format!("{stem}.crt")),
                        )
                        .unwrap();
                        (e, signer)
                    })
                    .collect();
                range
                    .map(|n| {
                        let (from, to, service, action) = TRAFFIC[n % TRAFFIC.len()];
                        let format = if (n / TRAFFIC.len()).is_multiple_of(2) {
                            Format::Xml
                        } else {
                            Format::Json
                        };
                        let (recipient, recipients) = if to == "*" {
                            (Recipient::Broadcast, vec![TURIN, CUNEO])
                        } else {
                            (Recipient::Entity(to.parse().unwrap()), vec![to])
                        };
                        let env =
                            Envelope::builder(from.parse().unwrap(), recipient, service, action)
                                .conversation(format!("pratica-{n}"))
                                .json(json!({ "n": n, "cf": "RSSMRA80A01L219X" }))
                                .build()
                                .unwrap();
                        let bytes = snodo_envelopes::sign(&env, &signers[from], format).unwrap();
                        Item {
                            sender: from,
                            recipients,
                            format,
                            id: env.header.id,
                            bytes,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut items = Vec::with_capacity(ENVELOPES);
    for h in halves {
        items.extend(h.await.unwrap());
    }
    items
}

/// Submits envelopes from the shared queue until it is empty. A submission that fails with
/// the connection is retried with the same bytes until the hub answers, except that, the first
/// time, one in three is abandoned.
async fn submit_all(
    items: Arc<Vec<Item>>,
    next: Arc<AtomicUsize>,
    clients: Arc<HashMap<&str, Client>>,
    base: String,
    trust: Arc<TrustStore>,
    ledger: Shared<Ledger>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let Some(item) = items.get(n) else { return };
        let client = &clients[item.sender];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failed = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "envelope {} got no answer in 60 s",
                item.id
            );
            match client.try_submit_at(&base, &item.bytes, item.format).await {
                Ok(a) if a.status == 202 || a.status == 200 => {
                    let receipt = Receipt::from_json(&a.body).unwrap();
                    receipt
                        .verify(&trust, Some(&item.bytes))
                        .unwrap_or_else(|e| {
                            panic!("the receipt of {} does not verify: {e}", item.id)
                        });
                    assert_eq!(receipt.envelope_id, item.id);
                    assert!(
                        a.status == 202 || failed,
                        "{} was a duplicate at its first submission",
                        item.id
                    );
                    let mut l = ledger.lock().unwrap();
                    if failed {
                        l.retried += 1;
                        l.retried_duplicates += usize::from(a.status == 200);
                    }
                    l.receipts.insert(item.id, receipt);
                    break;
                }
                // The hub is shutting down or busy, and says so: try again.
                Ok(a) if a.status == 503 => {}
                Ok(a) => panic!(
                    "{} refused: {} {}",
                    item.id,
                    a.status,
                    String::from_utf8_lossy(&a.body)
                ),
                Err(_) => {
                    if !failed && rng.random_bool(1.0 / 3.0) {
                        ledger.lock().unwrap().abandoned.insert(item.id);
                        break;
                    }
                    failed = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..80))).await;
        }
    }
}

/// Leases and acknowledges `entity`'s inbox until it is empty after `drain_after`.
async fn consume(
    entity: &'static str,
    client: Client,
    base: String,
    items: Arc<Vec<Item>>,
    by_id: Arc<HashMap<Uuid, usize>>,
    ledger: Shared<Ledger>,
    drain_after: Shared<Option<Instant>>,
) {
    let query = format!("/v1/inbox?limit=50&lease={}s", LEASE.as_secs());
    loop {
        let leased = match client.try_get_at(&base, &query).await {
            Ok(a) if a.status == 200 => a.json()["envelopes"].as_array().unwrap().clone(),
            Ok(a) if a.status == 503 => Vec::new(),
            Ok(a) => panic!(
                "{entity}'s lease refused: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if leased.is_empty() {
            let drain_after = *drain_after.lock().unwrap();
            if drain_after.is_some_and(|t| Instant::now() >= t) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        }
        for e in leased {
            let id: Uuid = e["envelope_id"].as_str().unwrap().parse().unwrap();
            let item = by_id
                .get(&id)
                .map(|&n| &items[n])
                .unwrap_or_else(|| panic!("{entity} was handed {id}, which nobody sent"));
            assert!(
                item.recipients.contains(&entity),
                "{entity} was handed {id}, sent to {:?}",
                item.recipients
            );
            assert_eq!(
                e["envelope"].as_str().unwrap().as_bytes(),
                item.bytes.as_slice(),
                "{entity} was handed other bytes than those signed for {id}"
            );
            settle(entity, &client, &base, id, &e["lease"], &ledger).await;
        }
    }
}

/// Acknowledges `id` under `lease`. An acknowledgement whose answer was lost with the
/// connection is sent again, the same lease, until the hub answers: 204 if it was not done
/// before the kill, 404 if it was (or if the lease expired meanwhile; the journal tells).
async fn settle(
    entity: &'static str,
    client: &Client,
    base: &str,
    id: Uuid,
    lease: &serde_json::Value,
    ledger: &Shared<Ledger>,
) {
    let key = (entity.to_owned(), id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut retried = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{entity}'s ack of {id} got no answer"
        );
        let ack = client
            .try_post_json_at(base, "/v1/inbox/ack", &json!({ "lease": lease }))
            .await;
        match ack {
            Ok(a) if a.status == 204 => {
                *ledger.lock().unwrap().acked.entry(key).or_default() += 1;
                return;
            }
            Ok(a) if a.status == 404 => {
                let mut l = ledger.lock().unwrap();
                if retried {
                    l.unsure_acks.insert(key);
                } else {
                    // The lease expired before the ack: the envelope comes back.
                    l.lost_leases += 1;
                }
                return;
            }
            // Lost with the connection, or refused while shutting down: again.
            Ok(a) if a.status == 503 => {}
            Ok(a) => panic!(
                "{entity}'s ack of {id} refused: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
            Err(_) => {}
        }
        retried = true;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the store the hub left and checks the journal against what the clients saw.
fn check_store(
    dir: &Path,
    trust: &TrustStore,
    items: &[Item],
    by_id: &HashMap<Uuid, usize>,
    ledger: &Ledger,
) {
    let store = FjallStore::open(dir).unwrap();
    let scan_all = |prefix: &[u8]| {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan(prefix, after.as_deref(), 1024).unwrap();
            let Some((last, _)) = page.last() else {
                return out;
            };
            after = Some(last.clone());
            out.extend(page);
        }
    };

    // The journal: entries 0..n without a gap, and the tree of their leaves.
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for (key, bytes) in scan_all(b"j/") {
        let index = entries.len() as u64;
        assert_eq!(key, keys::journal(index), "a gap in the journal at {index}");
        let entry = Entry::from_bytes(&bytes).unwrap();
        assert_eq!(entry.index, index);
        tree.push(merkle::leaf_hash(&bytes)).unwrap();
        entries.push((entry, bytes));
    }
    let size = tree.size();
    let state: serde_json::Value =
        serde_json::from_slice(&store.get(keys::STATE).unwrap().unwrap()).unwrap();
    assert_eq!(state["journal_size"], size, "the state's journal size");
    // The hub's stored subtrees are those of the rebuilt tree.
    let stored_root = merkle::root(size, |l, i| {
        store
            .get(&keys::node(l, i))
            .ok()
            .flatten()
            .and_then(|v| v.try_into().ok())
    })
    .unwrap();
    assert_eq!(stored_root, tree.root().unwrap(), "the stored Merkle nodes");

    // Every checkpoint signs the root of the first `size` entries, and each extends the one
    // before.
    let mut checkpoints: BTreeMap<u64, SignedCheckpoint> = BTreeMap::new();
    let mut previous: Option<(u64, merkle::Hash)> = None;
    for (key, value) in scan_all(b"k/") {
        let signed: SignedCheckpoint = serde_json::from_slice(&value).unwrap();
        let c = &signed.checkpoint;
        assert_eq!(key, keys::checkpoint(c.size));
        signed
            .verify(trust, c.time)
            .unwrap_or_else(|e| panic!("checkpoint {}: {e}", c.size));
        assert_eq!(
            tree.root_at(c.size).unwrap(),
            c.root,
            "checkpoint {} does not sign the journal's first {} entries",
            c.size,
            c.size
        );
        if let Some((old_size, old_root)) = previous {
            let proof = tree.consistency_proof(old_size, c.size).unwrap();
            verify_consistency(old_size, c.size, &old_root, &c.root, &proof).unwrap();
        }
        previous = Some((c.size, c.root));
        checkpoints.insert(c.size, signed);
    }
    assert!(!checkpoints.is_empty(), "no checkpoint was stored");

    // Every receipt's checkpoint is on disk as handed out, and its entry is in the journal;
    // receipts for later entries never name smaller checkpoints.
    let mut receipts: Vec<&Receipt> = ledger.receipts.values().collect();
    receipts.sort_by_key(|r| r.index);
    let mut last_size = 0;
    for r in receipts {
        let size = r.checkpoint.checkpoint.size;
        assert_eq!(
            checkpoints.get(&size),
            Some(&*r.checkpoint),
            "the checkpoint of {}'s receipt is not the one stored",
            r.envelope_id
        );
        let entry = base64::engine::general_purpose::STANDARD
            .decode(&r.entry)
            .unwrap();
        assert_eq!(entries[r.index as usize].1, entry, "entry {}", r.index);
        assert!(
            size >= last_size,
            "checkpoint sizes go backwards at {}",
            r.index
        );
        last_size = size;
    }

    // What the journal says happened to each envelope.
    let mut accepted: HashMap<Uuid, u32> = HashMap::new();
    let mut acked: HashMap<(String, Uuid), u32> = HashMap::new();
    let mut deliveries = 0;
    for (e, _) in &entries {
        match e.kind {
            EventKind::Delivered => deliveries += 1,
            EventKind::Accepted => *accepted.entry(e.envelope_id.unwrap()).or_default() += 1,
            EventKind::Acknowledged => {
                *acked
                    .entry((e.actor.clone().unwrap(), e.envelope_id.unwrap()))
                    .or_default() += 1;
            }
            EventKind::Refused => panic!("the hub refused a valid envelope: {e:?}"),
            _ => {}
        }
    }
    for id in ledger.receipts.keys() {
        assert_eq!(accepted.get(id), Some(&1), "{id} has a receipt");
    }
    for (id, &n) in &accepted {
        assert_eq!(n, 1, "{id} accepted {n} times");
        assert!(
            ledger.receipts.contains_key(id) || ledger.abandoned.contains(id),
            "{id} accepted but never submitted"
        );
        // Every accepted envelope, receipted or not, was delivered to each recipient once.
        for &r in &items[by_id[id]].recipients {
            let key = (r.to_owned(), *id);
            assert_eq!(
                acked.get(&key),
                Some(&1),
                "{id} acknowledged by {r} {} times in the journal",
                acked.get(&key).unwrap_or(&0)
            );
            let seen = ledger.acked.get(&key).copied().unwrap_or(0);
            assert!(
                seen == 1 || (seen == 0 && ledger.unsure_acks.contains(&key)),
                "{r} was told {seen} times that its ack of {id} was done"
            );
        }
    }
    for (r, id) in acked.keys() {
        assert!(
            accepted.contains_key(id),
            "{r} acknowledged {id}, never accepted"
        );
    }
    eprintln!(
        "journal: {size} entries, {} checkpoints, {} envelopes accepted ({} without a \
         receipt), {deliveries} deliveries for {} acknowledgements",
        checkpoints.len(),
        accepted.len(),
        accepted.len() - ledger.receipts.len(),
        acked.len(),
    );
}
