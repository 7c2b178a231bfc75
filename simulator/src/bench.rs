//! `snodo-sim bench`: pure load. Pre-signed envelopes from the comuni to the region at the
//! highest rate the hub sustains (or at a fixed offered rate, `--rate`), then the invariants of every run (each receipted envelope
//! delivered exactly once, the journal verified) and the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use snodo_envelopes::{EntityId, Format};

use crate::federation::{Federation, REGION};
use crate::hub::Hubs;
use crate::invariants::{self, Delivered};
use crate::load::{self, Pool};
use crate::options::{self, Common};
use crate::process::{cpu_seconds, memory, mib};
use crate::summary::{ServiceFigures, Summary};

/// `snodo-sim bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// The longest the load runs (it also stops when every envelope is sent).
    #[arg(long, default_value = "60s", value_parser = options::duration)]
    pub duration: Duration,
    /// `json` (JWS) or `xml` (XML-DSig).
    #[arg(long, default_value = "json")]
    pub format: Format,
    /// Bytes of each envelope's body.
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// Envelopes signed before the clock starts.
    #[arg(long, default_value_t = 50_000)]
    pub envelopes: usize,
    /// Concurrent requests (one TLS connection each, bound to one sender: at least
    /// `--senders`).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Sending comuni, the most populous.
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Envelopes per request: 1 posts each to `/v1/envelopes`; more posts them together to
    /// `/v1/envelopes/batch` (each envelope's latency is then its request's).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Offer this many envelopes per second on a fixed schedule (open loop: each latency counts
    /// from when its request was due) instead of as many as the hub answers.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Runs the bench and returns its summary.
///
/// # Errors
/// When the federation or the hub cannot be set up; violated invariants are in the summary.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Summary> {
    let c = &args.common;
    // Each client holds one sender's certificate and sends only its envelopes.
    anyhow::ensure!(
        args.clients >= args.senders,
        "--clients {} is fewer than --senders {}: each client sends for one sender, so the \
         others' envelopes would never be sent",
        args.clients,
        args.senders
    );
    if let Some(r) = args.rate {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate {r} is not a positive number of envelopes per second"
        );
    }
    std::fs::create_dir_all(&c.data_dir)?;
    let fed = Federation::ensure(&c.data_dir, &c.csv, c.comuni, c.key_type)?;
    let run_dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&c.data_dir)?;
    let (amqp, rabbit) = crate::run::transport(c, run_dir.path()).await?;
    let hubs = Hubs::start(
        &fed,
        &c.hub,
        amqp.as_deref(),
        c.nodes,
        run_dir.path(),
        c.snodo.as_deref(),
    )
    .await?;
    let urls: Vec<String> = hubs.nodes.iter().map(|n| n.url.clone()).collect();
    let signing = Instant::now();
    let pool = Pool::sign(
        &fed,
        args.senders,
        args.envelopes,
        args.format,
        args.body_size,
    )?;
    let signing = signing.elapsed();
    let signed_size = pool.signed_size;
    let sent = pool.len();
    eprintln!(
        "snodo-sim bench: {sent} {:?} envelopes ({signed_size} B signed) signed in {:.1} s; \
         {} clients, {} envelope(s) per request, on {} hub node(s)",
        args.format,
        signing.as_secs_f64(),
        args.clients,
        args.batch.max(1),
        urls.len()
    );

    // Memory of the hub processes, sampled while the load runs.
    let pids = hubs.pids();
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pids, peak) = (pids.clone(), peak_kib.clone());
        tokio::spawn(async move {
            loop {
                let total: u64 = pids.iter().filter_map(|p| memory(*p)).map(|m| m.0).sum();
                peak.fetch_max(total, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let cpu_before: Option<f64> = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let progress = Arc::new(std::sync::Mutex::new(crate::summary::Progress::new(c.json)));
    let shown = progress.clone();
    let samples: Arc<std::sync::Mutex<Vec<(f64, usize)>>> = Arc::default();
    let record = samples.clone();
    let outcome = load::drive(
        &fed,
        pool,
        &urls,
        load::Shape {
            clients: args.clients,
            batch: args.batch,
            duration: args.duration,
            rate: args.rate,
        },
        move |n, t| {
            if let Ok(mut s) = record.lock() {
                s.push((t.as_secs_f64(), n));
            }
            if let Ok(mut p) = progress.lock() {
                p.update(&format!(
                    "snodo-sim bench: {n:>9} answered  t={:>5.1} s  {:>8.0}/s",
                    t.as_secs_f64(),
                    n as f64 / t.as_secs_f64().max(1e-9)
                ));
            }
        },
    )
    .await?;
    if let Ok(p) = shown.lock() {
        p.done();
    }
    let cpu_after: Option<f64> = pids.iter().map(|p| cpu_seconds(*p)).sum();
    sampler.abort();
    let secs = outcome.elapsed.as_secs_f64();
    let accepted = outcome.receipted.len();

    let region: EntityId = REGION.parse()?;
    let seen = invariants::drain(
        &fed,
        &region,
        &urls[0],
        accepted,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await?;
    let d = Delivered::compare(&outcome.receipted, &outcome.unknown, &seen);
    let nodes: Vec<String> = hubs.nodes.iter().map(|n| n.name.clone()).collect();
    let journal = invariants::verify_journal(
        &fed,
        &urls[0],
        &nodes,
        &run_dir.path().join("journal.bundle"),
    )
    .await;

    let mut s = Summary {
        mode: "bench".into(),
        accepted: accepted as u64,
        delivered: d.delivered as u64,
        lost: d.lost.len() as u64,
        duplicates: d.duplicates.len() as u64,
        envelopes_per_sec: accepted as f64 / secs.max(1e-9),
        p50_ms: load::percentile_ms(&outcome.latencies_us, 50.0),
        p95_ms: load::percentile_ms(&outcome.latencies_us, 95.0),
        p99_ms: load::percentile_ms(&outcome.latencies_us, 99.0),
        ..Summary::default()
    };
    let service_name = format!(
        "{}.{}",
        crate::federation::BENCH.0,
        crate::federation::BENCH.1
    );
    s.services.insert(
        service_name.clone(),
        ServiceFigures {
            envelopes: accepted as u64,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            ..ServiceFigures::default()
        },
    );
    for id in &d.lost {
        s.violations
            .push(format!("envelope {id}: receipted, never delivered"));
    }
    for id in &d.duplicates {
        s.violations
            .push(format!("envelope {id}: delivered more than once"));
    }
    for id in &d.unexpected {
        s.violations
            .push(format!("envelope {id}: delivered but never receipted"));
    }
    for (kind, n) in &outcome.errors {
        s.refused_unexpected += *n as u64;
        s.violations.push(format!("{n} submissions failed: {kind}"));
    }
    match journal {
        Ok(j) => {
            s.journal_verified = true;
            s.details.insert("journal_entries".into(), json!(j.entries));
            s.details
                .insert("journal_envelopes".into(), json!(j.envelopes));
            s.details
                .insert("journal_checkpoints".into(), json!(j.checkpoints));
            s.details
                .insert("journal_verify_s".into(), json!(j.verify_seconds));
            if j.envelopes < accepted as u64 {
                s.violations.push(format!(
                    "the journal holds {} envelopes, fewer than the {accepted} receipted",
                    j.envelopes
                ));
            }
        }
        Err(e) => s.violations.push(format!("journal: {e:#}")),
    }
    // Receipts per second between progress samples, and latency by percentile.
    let mut throughput = crate::report::Series {
        name: service_name.clone(),
        points: Vec::new(),
    };
    if let Ok(samples) = samples.lock() {
        let mut last = (0.0, 0usize);
        for &(t, n) in samples.iter() {
            let rate = n.saturating_sub(last.1) as f64 / (t - last.0).max(1e-9);
            throughput.points.push((t, rate));
            last = (t, n);
        }
    }
    s.plots = crate::report::Plots {
        throughput: vec![throughput],
        latency: vec![crate::report::percentiles(
            &service_name,
            &outcome.latencies_us,
        )],
    };
    s.details
        .insert("format".into(), json!(format!("{:?}", args.format)));
    s.details.insert("body_size".into(), json!(args.body_size));
    if let Some(r) = args.rate {
        s.details.insert("offered_per_s".into(), json!(r));
    }
    s.details.insert("signed_size".into(), json!(signed_size));
    s.details.insert("sent".into(), json!(sent));
    s.details
        .insert("seconds".into(), json!(format!("{secs:.2}")));
    s.details.insert(
        "signing_s".into(),
        json!(format!("{:.1}", signing.as_secs_f64())),
    );
    s.details.insert("nodes".into(), json!(nodes.len()));
    s.details.insert(
        "hub_rss_peak_mib".into(),
        json!(format!("{:.1}", mib(peak_kib.load(Ordering::Relaxed)))),
    );
    if let (Some(a), Some(b)) = (cpu_after, cpu_before)
        && hubs.spawned()
    {
        s.details.insert(
            "hub_cpu_us_per_envelope".into(),
            json!(format!("{:.0}", (a - b) * 1e6 / accepted.max(1) as f64)),
        );
    }
    let mut entities: Vec<String> = fed.members.iter().map(ToString::to_string).collect();
    entities.sort_unstable();
    hubs.stop(&entities).await?;
    drop(rabbit);
    if c.keep {
        let kept = run_dir.keep();
        s.details
            .insert("kept".into(), json!(kept.display().to_string()));
    }
    Ok(s)
}
