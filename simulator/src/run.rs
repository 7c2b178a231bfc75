//! `snodo-sim run`: the simulation. The federation's bodies at work, citizens' conversations
//! through every service at a steady rate while simulated time runs fast, then time runs on
//! until every conversation is final, and the invariants are checked: every conversation
//! final, every body consistent with its counterparts, every accepted envelope acknowledged
//! once by its recipient, the journal verified offline.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};
use serde_json::json;
use snodo_connectors::{Clock as _, Store};
use time::macros::datetime;

use crate::chaos::{self, Fault};
use crate::federation::Federation;
use crate::hub::{Hubs, Placement};
use crate::invariants;
use crate::options::{self, Common};
use crate::population;
use crate::rabbit::PrivateRabbit;
use crate::scenario::{
    Context, Log, contravvenzioni, edilizia, residenza, tributi, viabilita, ztl,
};
use crate::summary::{ENVELOPES_BY_SERVICE, Progress, Summary};
use crate::world::World;

/// `snodo-sim run` options.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long citizens start new conversations (then time runs on until all are final).
    #[arg(long, default_value = "30s", value_parser = options::duration)]
    pub duration: Duration,
    /// Conversations started per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Real time per simulated day while citizens are active (terms of 45 and 90 days then
    /// complete within a run).
    #[arg(long, default_value = "1s", value_parser = options::duration)]
    pub day: Duration,
    /// One simulated citizen per this many inhabitants (at least two per comune).
    #[arg(long, default_value_t = 5_000)]
    pub inhabitants_per_citizen: u64,
    /// Seed of every random choice (default: from the time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults to inject while citizens are active, comma-separated: kill-hub (needs --hub
    /// spawn), partner-outage, amqp-restart (needs --transport private), slow-partner,
    /// bad-input.
    #[arg(long, value_delimiter = ',')]
    pub chaos: Vec<Fault>,
}

/// Advances `world`'s clock by one simulated day per `day` of real time (per 250 ms once
/// `fast` is set and no conversation is in a prompt step, `prompt`), until `stop`.
fn drive_clock(
    world_clock: Arc<snodo_connectors::ManualClock>,
    day: Duration,
    fast: Arc<AtomicBool>,
    prompt: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tick = Duration::from_millis(50);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(tick).await;
            let per_day = if fast.load(Ordering::Relaxed) && prompt.load(Ordering::Relaxed) == 0 {
                Duration::from_millis(250)
            } else {
                day
            };
            let step = 86_400.0 * tick.as_secs_f64() / per_day.as_secs_f64().max(1e-3);
            world_clock.advance(time::Duration::seconds_f64(step));
        }
    })
}

/// The RabbitMQ URL of `--transport`: as given, or that of a node the simulation starts in
/// `dir` for `private` (returned too, for the `amqp-restart` fault).
///
/// # Errors
/// When the private node cannot start.
pub async fn transport(
    c: &Common,
    dir: &std::path::Path,
) -> anyhow::Result<(
    Option<String>,
    Option<Arc<tokio::sync::Mutex<PrivateRabbit>>>,
)> {
    match c.transport.as_deref() {
        Some("private") => {
            let r = PrivateRabbit::start_in(&dir.join("rabbitmq")).await?;
            Ok((Some(r.url()), Some(Arc::new(tokio::sync::Mutex::new(r)))))
        }
        other => Ok((other.map(str::to_owned), None)),
    }
}

/// Runs the simulation and returns its summary.
///
/// # Errors
/// When the federation, the hub or the bodies cannot be set up; violated invariants are in
/// the summary.
pub async fn run(args: &RunArgs) -> anyhow::Result<Summary> {
    let c = &args.common;
    std::fs::create_dir_all(&c.data_dir)?;
    let fed = Federation::ensure(&c.data_dir, &c.csv, c.comuni, c.key_type)?;
    let run_dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&c.data_dir)?;
    let (amqp, rabbit) = transport(c, run_dir.path()).await?;
    chaos::check(&args.chaos, c.hub == Placement::Spawn, rabbit.is_some())?;
    let hubs = Hubs::start(
        &fed,
        &c.hub,
        amqp.as_deref(),
        c.nodes,
        run_dir.path(),
        c.snodo.as_deref(),
    )
    .await?;
    let url = hubs.nodes[0].url.clone();
    let nodes: Vec<String> = hubs.nodes.iter().map(|n| n.name.clone()).collect();
    let hubs = Arc::new(tokio::sync::Mutex::new(hubs));
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let citizens = population::generate(&fed.comuni, args.inhabitants_per_citizen, 2, &mut rng);
    let mut heads = HashSet::new();
    let second_homes: HashSet<String> = citizens
        .iter()
        .filter(|x| heads.insert((x.comune.clone(), x.famiglia.clone())))
        .filter(|_| rng.random_bool(0.4))
        .map(|x| x.cf.clone())
        .collect();
    let say = |s: String| {
        if !c.json {
            eprintln!("snodo-sim: {s}");
        }
    };
    say(format!(
        "{} comuni, {} citizens ({} with a second home), seed {seed}; starting every body",
        fed.comuni.len(),
        citizens.len(),
        second_homes.len()
    ));
    let store = Store::open(&run_dir.path().join("bodies")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let homes: Vec<String> = second_homes.iter().cloned().collect();
    let starting = Instant::now();
    let world = Arc::new(
        World::start(
            &fed,
            &url,
            &citizens,
            &homes,
            &store,
            &run_dir.path().join("mail"),
            datetime!(2027-01-11 09:00 UTC),
        )
        .await?,
    );
    say(format!(
        "every body started in {:.1} s; loading each comune's registry into ANPR",
        starting.elapsed().as_secs_f64()
    ));
    let day_secs = args.day.as_secs_f64().max(0.001);
    let ctx = Arc::new(Context {
        world,
        citizens,
        second_homes,
        busy: Default::default(),
        log: Log::default(),
        // Sixty simulated days, and at least two leases: an answer leased by a hub killed
        // before its reader saw it comes back only when that lease runs out.
        step_timeout: Duration::from_secs_f64(60.0 * day_secs).max(2 * crate::world::PULL_LEASE),
        prompt: Arc::default(),
    });
    let started = Instant::now();

    // The registry feed: each comune's initial load to ANPR, before anyone moves; some
    // comuni at a time, as ANPR takes them.
    let mut loads = tokio::task::JoinSet::new();
    let turns = Arc::new(tokio::sync::Semaphore::new(32));
    for istat in ctx.world.comuni.keys() {
        let (ctx, istat, turns) = (ctx.clone(), istat.clone(), turns.clone());
        loads.spawn(async move {
            let Ok(_turn) = turns.acquire().await else {
                return;
            };
            let id = format!("caricamento:{istat}");
            let t = Instant::now();
            ctx.log.start("anagrafe.variazioni", &id);
            let Some(m) = ctx.world.comuni.get(&istat) else {
                return;
            };
            match m.anagrafe.caricamento_iniziale(50).await {
                Ok(parts) => {
                    let done = ctx
                        .until(|| {
                            m.anagrafe
                                .esito_caricamento(parts)
                                .ok()
                                .flatten()
                                .filter(|e| e.completato)
                        })
                        .await;
                    match done {
                        Some(_) => ctx.log.finish("anagrafe.variazioni", &id, t),
                        None => ctx
                            .log
                            .violation(format!("{id}: ANPR never completed the initial load")),
                    }
                }
                Err(e) => ctx.log.violation(format!("{id}: {e}")),
            }
        });
    }
    while loads.join_next().await.is_some() {}
    say(format!(
        "registry loaded into ANPR in {:.1} s; citizens at work for {:?}",
        started.elapsed().as_secs_f64(),
        args.duration
    ));

    let fast = Arc::new(AtomicBool::new(false));
    let stop_clock = Arc::new(AtomicBool::new(false));
    let clock = drive_clock(
        ctx.world.clock.clone(),
        args.day,
        fast.clone(),
        ctx.prompt.clone(),
        stop_clock.clone(),
    );
    let faults = chaos::Running::start(
        &args.chaos,
        &chaos::Targets {
            fed: fed.clone(),
            url: url.clone(),
            hubs: hubs.clone(),
            world: ctx.world.clone(),
            rabbit: rabbit.clone(),
        },
    );
    let traffic_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let mut next = Instant::now();
    let mut progress = Progress::new(c.json);
    while traffic_started.elapsed() < args.duration {
        let seed: u64 = rng.random();
        let ctx2 = ctx.clone();
        match rng.random_range(0..16) {
            0..=3 => {
                tasks.spawn(async move { residenza::trasloco(ctx2, seed).await });
            }
            4..=6 => {
                tasks.spawn(async move {
                    tributi::calcolo(ctx2, seed).await;
                    None
                });
            }
            7..=8 => {
                tasks.spawn(async move {
                    tributi::pagamento(ctx2, seed).await;
                    None
                });
            }
            9..=10 => {
                tasks.spawn(async move {
                    contravvenzioni::verbale(ctx2, seed).await;
                    None
                });
            }
            11..=12 => {
                tasks.spawn(async move {
                    ztl::permesso(ctx2, seed).await;
                    None
                });
            }
            13..=14 => {
                tasks.spawn(async move {
                    edilizia::pratica(ctx2, seed).await;
                    None
                });
            }
            _ => {
                tasks.spawn(async move {
                    viabilita::evento(ctx2, seed).await;
                    None
                });
            }
        }
        let t = traffic_started.elapsed().as_secs_f64();
        let (started, finished) = ctx.log.counts();
        if t >= 1.0 {
            progress.update(&format!(
            "snodo-sim: t={t:.0} s, simulated {}, {started} conversations started, {finished} finished ({:.1}/s), {} open",
            ctx.world.clock.now().date(),
            finished as f64 / t.max(1e-9),
                started - finished.min(started),
            ));
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    progress.done();
    let report = faults.finish().await;
    say(format!(
        "citizens stop; time runs on until every conversation is final ({} open)",
        ctx.log.open().len()
    ));
    fast.store(true, Ordering::Relaxed);
    let mut moves = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(mv)) = r {
            moves.push(mv);
        }
    }
    stop_clock.store(true, Ordering::Relaxed);
    let _ = clock.await;
    let run_secs = traffic_started.elapsed().as_secs_f64();
    for mv in &moves {
        residenza::consistent(&ctx, mv).await;
    }
    viabilita::consistent(&ctx).await;
    for (id, service) in ctx.log.open() {
        ctx.log
            .violation(format!("{service} {id}: never reached a final state"));
    }

    // Delivery, by the journal: wait until every accepted envelope is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let d = invariants::journal_deliveries(&fed, &url, &nodes).await?;
        if (d.unacknowledged.is_empty() && d.repeated.is_empty()) || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let journal =
        invariants::verify_journal(&fed, &url, &nodes, &run_dir.path().join("journal.bundle"))
            .await;
    let ctx = Arc::into_inner(ctx).context("a conversation still holds the world")?;
    let figures = ctx.log.figures();
    let plots = ctx.log.plots(traffic_started);
    let mut s = Summary {
        mode: "run".into(),
        accepted: deliveries.accepted,
        delivered: deliveries.acknowledged,
        lost: deliveries.unacknowledged.len() as u64,
        duplicates: deliveries.repeated.len() as u64,
        refused_expected: report.bad.expected.values().sum(),
        refused_unexpected: report.bad.unexpected.len() as u64,
        conversations_started: figures.values().map(|f| f.conversations_started).sum(),
        conversations_finished: figures.values().map(|f| f.conversations_finished).sum(),
        envelopes_per_sec: deliveries.accepted as f64 / run_secs.max(1e-9),
        ..Summary::default()
    };
    s.p50_ms = scenario_percentile(&figures, |f| f.p50_ms);
    s.p95_ms = scenario_percentile(&figures, |f| f.p95_ms);
    s.p99_ms = scenario_percentile(&figures, |f| f.p99_ms);
    s.services = figures;
    s.plots = plots;
    s.violations = ctx.log.violations();
    s.violations.extend(report.bad.unexpected.iter().cloned());
    s.violations
        .extend(report.errors.iter().map(|e| format!("fault: {e}")));
    for id in &deliveries.unacknowledged {
        s.violations.push(format!(
            "envelope {id}: accepted, never acknowledged by its recipient"
        ));
    }
    for id in &deliveries.repeated {
        s.violations
            .push(format!("envelope {id}: acknowledged more than once"));
    }
    // Every refusal in the journal must be one the rogue member was meant to get.
    for (code, n) in &deliveries.refusals {
        let meant = report.bad.expected.get(code).copied().unwrap_or(0);
        if *n > meant {
            s.refused_unexpected += n - meant;
            s.violations.push(format!(
                "{} envelopes refused by the hub ({code}) beyond the {meant} bad inputs meant to be",
                n - meant
            ));
        }
    }
    for (fault, n) in &report.struck {
        s.details
            .insert(format!("chaos_{}", fault.replace('-', "_")), json!(n));
    }
    match journal {
        Ok(j) => {
            s.journal_verified = true;
            s.details.insert("journal_entries".into(), json!(j.entries));
            s.details
                .insert("journal_envelopes".into(), json!(j.envelopes));
        }
        Err(e) => s.violations.push(format!("journal: {e:#}")),
    }
    s.details.insert("seed".into(), json!(seed));
    s.details.insert("nodes".into(), json!(nodes.len()));
    s.details
        .insert(ENVELOPES_BY_SERVICE.into(), json!(deliveries.by_service));
    s.details.insert("comuni".into(), json!(fed.comuni.len()));
    s.details
        .insert("citizens".into(), json!(ctx.citizens.len()));
    s.details.insert(
        "simulated_until".into(),
        json!(ctx.world.clock.now().date().to_string()),
    );
    s.details
        .insert("seconds".into(), json!(format!("{run_secs:.1}")));
    let world = Arc::into_inner(ctx.world).context("a fault still holds the world")?;
    world.stop().await;
    let mut entities: Vec<String> = fed.members.iter().map(ToString::to_string).collect();
    entities.sort_unstable();
    let hubs = Arc::into_inner(hubs)
        .context("a fault still holds the hubs")?
        .into_inner();
    hubs.stop(&entities).await?;
    drop(rabbit);
    if c.keep {
        s.details
            .insert("kept".into(), json!(run_dir.keep().display().to_string()));
    }
    Ok(s)
}

/// The largest of a figure over the services: the run's worst.
fn scenario_percentile(
    figures: &std::collections::BTreeMap<String, crate::summary::ServiceFigures>,
    f: impl Fn(&crate::summary::ServiceFigures) -> f64,
) -> f64 {
    figures.values().map(f).fold(0.0, f64::max)
}
