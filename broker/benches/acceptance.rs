//! The acceptance pipeline in process: `Hub::submit` of pre-signed 1 KiB JSON envelopes with
//! distinct ids (verify, authorize, journal, Merkle nodes, store batch, flush, checkpoint,
//! receipt), one at a time and 64 at a time (the group commit shares one flush and one
//! checkpoint signature among the requests that arrive together). Measured in the same run:
//! the raw signature verification and the envelope verification it starts with.
//!
//! Each iteration is one envelope, so criterion's time is per envelope and its throughput is
//! envelopes per second. Signing happens before the timer starts.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openssl::hash::MessageDigest;
use snodo_broker::cli::serve;
use snodo_broker::config::Config;
use snodo_broker::engine::Accepted;
use snodo_broker::hub::{Hub, Outcome};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{Format, Identity, Limits, TrustStore, Verifier};

const BODY: usize = 1024;
const MEDIA_TYPE: &str = "application/jose+json";

/// Submits every envelope of `batches` with `concurrency` tasks in flight, like the handlers of
/// that many connections; panics on anything but a new acceptance.
async fn submit_all(
    hub: &Arc<Hub>,
    fed: &support::Federation,
    batches: Vec<support::Batch>,
    concurrency: usize,
) {
    let work: Arc<Vec<(Identity, bytes::Bytes)>> = Arc::new(
        batches
            .into_iter()
            .flat_map(|b| {
                let who = Identity::Entity(fed.senders[b.sender].clone());
                b.envelopes.into_iter().map(move |e| (who.clone(), e))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (hub, work, next) = (hub.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((who, body)) = work.get(i) else {
                    break;
                };
                match hub.submit(who, Some(MEDIA_TYPE), body.clone(), None).await {
                    Ok(Outcome::Accepted(Accepted::New(r))) => {
                        black_box(r);
                    }
                    Ok(other) => panic!("not a new acceptance: {other:?}"),
                    Err(e) => panic!("refused: {e:?}"),
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("submit task");
    }
}

fn acceptance(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (kind_name, kind) in [("rsa2048", KeyType::Rsa2048), ("p256", KeyType::P256)] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let fed = support::Federation::create(
            dir.path(),
            4,
            kind,
            snodo_envelopes::pki::HUB_KEY_TYPE,
            "127.0.0.1:0".parse().expect("address"),
            None,
        )
        .expect("federation");
        let config = Config::load(&fed.config_path()).expect("configuration");
        let running = rt.block_on(serve::start(config, None)).expect("hub");
        let hub = running.hub.clone();

        let mut g = c.benchmark_group(format!("acceptance-{kind_name}"));
        g.throughput(Throughput::Elements(1));

        // The references, in the same sitting: one raw signature verification over 1 KiB, and
        // the verification of one signed 1 KiB JSON envelope.
        let key = pki::generate_key(kind).expect("key");
        let data = [7u8; 1024];
        let sig = openssl::sign::Signer::new(MessageDigest::sha256(), &key)
            .and_then(|mut s| s.sign_oneshot_to_vec(&data))
            .expect("raw signature");
        g.bench_function("raw-verify", |b| {
            b.iter(|| {
                let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &key).unwrap();
                assert!(v.verify_oneshot(black_box(&sig), black_box(&data)).unwrap());
            })
        });
        let trust = TrustStore::load(&fed.pki().join("ca.crt"), None).expect("trust");
        let verifier = Verifier::new(Arc::new(trust), Limits::default());
        let one = support::sign_all(&fed, 1, Format::Json, BODY, 1).expect("sign")[0].envelopes[0]
            .clone();
        g.bench_function("envelope-verify", |b| {
            b.iter(|| black_box(verifier.verify(black_box(&one)).unwrap()))
        });

        for concurrency in [1usize, 64] {
            g.bench_function(BenchmarkId::new("submit", format!("c{concurrency}")), |b| {
                b.iter_custom(|iters| {
                    let n = usize::try_from(iters).expect("iterations");
                    let per_sender = n.div_ceil(fed.senders.len());
                    let mut batches =
                        support::sign_all(&fed, per_sender, Format::Json, BODY, 2).expect("sign");
                    // Exactly `iters` envelopes.
                    let mut extra = per_sender * fed.senders.len() - n;
                    for b in &mut batches {
                        let cut = extra.min(b.envelopes.len());
                        b.envelopes.truncate(b.envelopes.len() - cut);
                        extra -= cut;
                    }
                    let started = Instant::now();
                    rt.block_on(submit_all(&hub, &fed, batches, concurrency));
                    started.elapsed()
                })
            });
        }
        g.finish();
        rt.block_on(running.shutdown()).expect("shutdown");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = acceptance
}
criterion_main!(benches);
