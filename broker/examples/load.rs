//! Load generator for the hub over HTTPS: starts a hub (a child `snodo serve`, or in this
//! process), signs envelopes for several senders, drives them from many concurrent connections
//! with client certificates (HTTP/2 or HTTP/1.1 keep-alive), and reports accepted envelopes per
//! second, latency percentiles, the hub's memory along the way, and every error.
//!
//! ```sh
//! cargo build --release -p snodo-broker          # the `snodo` binary the child runs
//! cargo run --release -p snodo-broker --example load -- \
//!     --clients 64 --envelopes 50000 --format json --body-size 1024
//! ```
//!
//! The load is closed-loop: each of `--clients` workers has one request in flight and sends the
//! next when the answer (the receipt) is read whole. Latency is measured per request from the
//! send to the last byte of the answer. Envelopes are signed before the clock starts, unless
//! `--stream` signs them while sending (for backlog runs too large to hold in memory; then the
//! signing threads compete with the hub for the CPU and throughput is not the figure).
//!
//! A child hub logs to `hub.log` in the run's directory (`--keep DIR` keeps it) at the level
//! `SNODO_LOG` gives, `warn` when unset.

#[path = "../benches/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use serde_json::json;
use snodo_broker::api::batch;
use snodo_envelopes::Format;
use snodo_envelopes::pki::KeyType;

// As the hub: the load generator shares its cores, and `--hub in-process` measures both.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Http {
    /// HTTP/2 (ALPN h2); streams of one connection are multiplexed.
    #[value(name = "2")]
    H2,
    /// HTTP/1.1 with keep-alive, one request in flight per connection.
    #[value(name = "1.1")]
    H1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HubMode {
    /// `snodo serve` as a child process: its memory is the hub's alone, and perf can attach.
    Child,
    /// `serve::start` in this process: memory then includes the load generator.
    InProcess,
}

/// Drives a hub with signed envelopes over HTTPS and reports what it sustained.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Args {
    /// Concurrent requests in flight (workers, each one request at a time).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// TLS connections the workers share (HTTP/2 multiplexes on them); default: one each.
    #[arg(long)]
    connections: Option<usize>,
    /// Envelopes to submit in all.
    #[arg(long, default_value_t = 50_000)]
    envelopes: usize,
    /// `json` (JWS) or `xml` (XML-DSig).
    #[arg(long, default_value = "json")]
    format: Format,
    /// Bytes of each envelope's body (the signed envelope is larger).
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Key type of the CA and the members: `rsa2048` or `p256`.
    #[arg(long, default_value = "rsa2048")]
    key_type: KeyType,
    /// Key type of the hub's key (it signs the checkpoints): `p256` or `rsa2048`.
    #[arg(long, default_value = "p256")]
    hub_key_type: KeyType,
    /// Sending entities (all send to one recipient's inbox).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// HTTP version.
    #[arg(long, value_enum, default_value = "2")]
    http: Http,
    /// Where the hub runs.
    #[arg(long, value_enum, default_value = "child")]
    hub: HubMode,
    /// The `snodo` binary for `--hub child` (default: next to this example's directory).
    #[arg(long)]
    snodo: Option<PathBuf>,
    /// Sign while sending instead of before (for runs too large to pre-sign).
    #[arg(long)]
    stream: bool,
    /// Print a progress line with the hub's memory this many times during the run.
    #[arg(long, default_value_t = 10)]
    reports: usize,
    /// Record the hub child with `perf record` into this file while the load runs.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Options given to `perf record` (before `-p PID -o FILE`).
    #[arg(
        long,
        default_value = "--call-graph dwarf,16384 -F 499",
        allow_hyphen_values = true
    )]
    perf_args: String,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the federation and the hub's store in this directory (created) instead of a
    /// temporary one that is removed. A directory an earlier run kept is taken up again: its
    /// PKI and store stay, so a run can start with a journal of millions of entries (give the
    /// same `--key-type` and no more `--senders` than that run).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Queue through the RabbitMQ at this URL (the amqp transport) instead of the hub's
    /// store; the run's queues are deleted at the end.
    #[arg(long)]
    amqp: Option<String>,
    /// Envelopes per request: 1 posts each to `/v1/envelopes`; more posts them together to
    /// `/v1/envelopes/batch` (latency is then the batch's, counted for each envelope).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Offer this many envelopes per second in all, on a fixed schedule (open loop), instead of
    /// sending the next request as soon as a worker is free: each request has a time to be
    /// sent, and its latency counts from then, so time spent waiting for a free worker counts.
    /// `--clients` then caps the requests in flight.
    #[arg(long)]
    rate: Option<f64>,
    /// A `KEY = VALUE` line added to the hub configuration's `[hub]` table (repeatable), for
    /// example `--hub-set "store_memtable = 16777216"`.
    #[arg(long)]
    hub_set: Vec<String>,
}

/// The status of a plain-HTTP GET on 127.0.0.1:`port`, or `None` when nothing answers.
async fn plain_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.ok()?;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB: (VmRSS, VmHWM).
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/<pid>/stat` (clock
/// ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Disk used under `dir`, in bytes.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where envelopes of one sender come from: signed in advance, or by threads as they go.
enum Source {
    Signed(Vec<Bytes>, AtomicUsize),
    Stream(tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Bytes>>),
}

impl Source {
    async fn next(&self) -> Option<Bytes> {
        match self {
            Source::Signed(v, i) => v.get(i.fetch_add(1, Ordering::Relaxed)).cloned(),
            Source::Stream(rx) => rx.lock().await.recv().await,
        }
    }
}

/// A child process that is killed if the load generator stops early (an error, a panic).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The hub under load.
enum HubHandle {
    Child(KillOnDrop),
    InProcess(snodo_broker::cli::serve::Running),
}

impl HubHandle {
    fn pid(&self) -> u32 {
        match self {
            HubHandle::Child(c) => c.0.id(),
            HubHandle::InProcess(_) => std::process::id(),
        }
    }
}

fn snodo_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.snodo {
        Some(p) => p.clone(),
        None => {
            let exe = std::env::current_exe()?;
            // target/<profile>/examples/load -> target/<profile>/snodo
            exe.parent()
                .and_then(Path::parent)
                .map(|d| d.join("snodo"))
                .context("locating the snodo binary")?
        }
    };
    if !path.exists() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p snodo-broker`, pass \
             --snodo PATH, or use --hub in-process",
            path.display()
        );
    }
    Ok(path)
}

async fn start_hub(args: &Args, fed: &support::Federation, port: u16) -> anyhow::Result<HubHandle> {
    match args.hub {
        HubMode::InProcess => {
            let config = snodo_broker::config::Config::load(&fed.config_path())?;
            Ok(HubHandle::InProcess(
                snodo_broker::cli::serve::start(config, Some(fed.config_path())).await?,
            ))
        }
        HubMode::Child => {
            let log = std::fs::File::create(fed.dir.join("hub.log"))?;
            let mut child = KillOnDrop(
                Command::new(snodo_binary(args)?)
                    .arg("serve")
                    .arg("--config")
                    .arg(fed.config_path())
                    .env(
                        "SNODO_LOG",
                        std::env::var("SNODO_LOG").unwrap_or_else(|_| "warn".into()),
                    )
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting snodo serve")?,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.0.try_wait()? {
                    bail!(
                        "snodo serve exited ({status}): {}",
                        std::fs::read_to_string(fed.dir.join("hub.log")).unwrap_or_default()
                    );
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("snodo serve did not listen on port {port} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(HubHandle::Child(child))
        }
    }
}

/// Sends signal `sig` (`TERM`, `INT`) to `pid` with the `kill` command.
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// What one worker saw.
#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, usize>,
    versions: BTreeMap<String, usize>,
}

fn error_key(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("HTTP {status} {code}")
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.senders == 0 || args.envelopes == 0 {
        bail!("--clients, --senders and --envelopes must be at least 1");
    }
    let connections = args
        .connections
        .unwrap_or(args.clients)
        .clamp(1, args.clients);
    let tmp;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let port = match args.hub {
        HubMode::Child => free_port()?,
        HubMode::InProcess => 0,
    };
    let plain_port = free_port()?;
    let fed = support::Federation::create(
        &dir,
        args.senders,
        args.key_type,
        args.hub_key_type,
        ([127, 0, 0, 1], port).into(),
        Some(([127, 0, 0, 1], plain_port).into()),
    )?;
    if !args.hub_set.is_empty() {
        let config = std::fs::read_to_string(fed.config_path())?;
        let lines: String = args.hub_set.iter().map(|l| format!("{l}\n")).collect();
        let config = config.replacen("[hub]\n", &format!("[hub]\n{lines}"), 1);
        std::fs::write(fed.config_path(), config)?;
    }
    let amqp_prefix = format!("snodo-load-{}", std::process::id());
    if let Some(url) = &args.amqp {
        let mut config = std::fs::read_to_string(fed.config_path())?;
        config.push_str(&format!(
            "\n[transport]\nkind = \"amqp\"\nurl = \"{url}\"\nprefix = \"{amqp_prefix}\"\n"
        ));
        std::fs::write(fed.config_path(), config)?;
    }
    let hub = start_hub(&args, &fed, port).await?;
    let port = match &hub {
        HubHandle::InProcess(r) => r.addr.port(),
        HubHandle::Child(_) => port,
    };
    let plain_port = match &hub {
        HubHandle::InProcess(r) => r.plain_addr.map_or(plain_port, |a| a.port()),
        HubHandle::Child(_) => plain_port,
    };
    if args.amqp.is_some() {
        // Ready once connected to RabbitMQ with the topology declared.
        let deadline = Instant::now() + Duration::from_secs(30);
        while plain_status(plain_port, "/readyz").await != Some(200) {
            if Instant::now() > deadline {
                bail!("the hub did not connect to RabbitMQ within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pid = hub.pid();
    let mem_idle = memory(pid);
    println!(
        "hub: {} pid {pid} on 127.0.0.1:{port}; {} senders -> {}; {:?} keys, the hub's {:?}; {:?}, {} B bodies; \
         {} clients on {connections} connections, HTTP/{}",
        match args.hub {
            HubMode::Child => "child `snodo serve`",
            HubMode::InProcess => "in process",
        },
        args.senders,
        support::RECIPIENT,
        args.key_type,
        args.hub_key_type,
        args.format,
        args.body_size,
        args.clients,
        if args.http == Http::H2 { "2" } else { "1.1" },
    );

    // Envelopes, per sender.
    let per_sender: Vec<usize> = (0..args.senders)
        .map(|i| args.envelopes / args.senders + usize::from(i < args.envelopes % args.senders))
        .collect();
    let signing = Instant::now();
    let mut signers = Vec::new();
    let sources: Vec<Arc<Source>> = if args.stream {
        let mut out = Vec::new();
        for (i, sender) in fed.senders.iter().enumerate() {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4096);
            let signer = fed.signer(sender)?;
            let (sender, n, format, size) =
                (sender.clone(), per_sender[i], args.format, args.body_size);
            signers.push(std::thread::spawn(move || -> anyhow::Result<()> {
                for _ in 0..n {
                    let env = support::sign_one(&signer, &sender, format, size)?;
                    if tx.blocking_send(env).is_err() {
                        break;
                    }
                }
                Ok(())
            }));
            out.push(Arc::new(Source::Stream(tokio::sync::Mutex::new(rx))));
        }
        out
    } else {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let mut out = Vec::new();
        for (i, n) in per_sender.iter().enumerate() {
            let one = support::Federation {
                dir: fed.dir.clone(),
                senders: vec![fed.senders[i].clone()],
                key_type: fed.key_type,
            };
            let batch = support::sign_all(&one, *n, args.format, args.body_size, threads)?;
            let envs = batch.into_iter().flat_map(|b| b.envelopes).collect();
            out.push(Arc::new(Source::Signed(envs, AtomicUsize::new(0))));
        }
        println!(
            "signed {} envelopes in {:.1} s",
            args.envelopes,
            signing.elapsed().as_secs_f64()
        );
        out
    };
    let sample = support::sign_one(
        &fed.signer(&fed.senders[0])?,
        &fed.senders[0],
        args.format,
        args.body_size,
    )?;
    println!("signed envelope size: {} bytes", sample.len());

    // Connections: each its own client (its own TLS session and pool), bound to one sender.
    let mut clients = Vec::with_capacity(connections);
    for c in 0..connections {
        let sender = c % args.senders;
        let tls = fed.client_tls(&fed.senders[sender], args.http == Http::H1)?;
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(usize::MAX)
            .timeout(Duration::from_secs(60));
        if args.http == Http::H1 {
            b = b.http1_only();
        }
        clients.push((sender, b.build()?));
    }
    let base = format!("https://127.0.0.1:{port}");
    let url = if args.batch > 1 {
        format!("{base}/v1/envelopes/batch")
    } else {
        format!("{base}/v1/envelopes")
    };
    let per_request = args.batch.max(1);
    let media_type = args.format.media_type();
    // Open loop: request k is due at epoch + k * per_request / rate.
    let interval = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => {
            Some(Duration::from_secs_f64(per_request as f64 / r))
        }
        Some(r) => bail!("--rate must be a positive number of envelopes per second, not {r}"),
        None => None,
    };
    let tickets = Arc::new(AtomicUsize::new(0));
    let epoch = Arc::new(std::sync::OnceLock::<Instant>::new());

    // Workers: open their connection (a health request), wait for everyone, then submit.
    let start_gate = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let accepted = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.clients {
        let (sender, client) = clients[w % connections].clone();
        let source = sources[sender].clone();
        let (gate, accepted, failed) = (start_gate.clone(), accepted.clone(), failed.clone());
        let (url, health) = (url.clone(), format!("{base}/healthz"));
        let (tickets, epoch) = (tickets.clone(), epoch.clone());
        workers.spawn(async move {
            let mut r = WorkerResult::default();
            if let Err(e) = client.get(&health).send().await {
                *r.errors.entry(format!("connect: {e}")).or_default() += 1;
            }
            gate.wait().await;
            loop {
                let mut bodies = Vec::with_capacity(per_request);
                while bodies.len() < per_request {
                    match source.next().await {
                        Some(b) => bodies.push(b),
                        None => break,
                    }
                }
                let n = bodies.len();
                if n == 0 {
                    break;
                }
                let sent = match interval {
                    Some(every) => {
                        let k = u32::try_from(tickets.fetch_add(1, Ordering::Relaxed))
                            .unwrap_or(u32::MAX);
                        let due = *epoch.get_or_init(Instant::now) + every * k;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let request = if per_request == 1 {
                    client
                        .post(&url)
                        .header("content-type", media_type)
                        .body(bodies.swap_remove(0))
                } else {
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(batch::request_body(
                            bodies.iter().map(|b| &b[..]),
                            media_type,
                        ))
                };
                let resp = match request.send().await {
                    Ok(resp) => resp,
                    Err(e) => {
                        *r.errors.entry(format!("request: {e}")).or_default() += n;
                        failed.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                };
                let status = resp.status().as_u16();
                *r.versions
                    .entry(format!("{:?}", resp.version()))
                    .or_default() += 1;
                let body = match resp.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        *r.errors
                            .entry(format!("reading the answer: {e}"))
                            .or_default() += n;
                        failed.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                };
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                // One status per envelope: the response's, or each result of a batch.
                let statuses: Vec<(u16, String)> = if per_request > 1 && status == 200 {
                    batch::answer_statuses(&body)
                        .into_iter()
                        .map(|(s, code)| (s, format!("{s} {code}")))
                        .collect()
                } else {
                    vec![(status, error_key(status, &body)); n]
                };
                for (s, key) in &statuses {
                    if *s == 202 {
                        r.latencies_us.push(us);
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        *r.errors.entry(key.clone()).or_default() += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if statuses.len() < n {
                    *r.errors.entry("results missing".into()).or_default() += n - statuses.len();
                    failed.fetch_add(n - statuses.len(), Ordering::Relaxed);
                }
            }
            r
        });
    }

    // perf attaches before the clock starts.
    let perf = match (&args.perf, &hub) {
        (Some(out), HubHandle::Child(_)) => {
            let mut cmd = Command::new("perf");
            cmd.arg("record")
                .args(args.perf_args.split_whitespace())
                .arg("-p")
                .arg(pid.to_string())
                .arg("-o")
                .arg(out)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = KillOnDrop(cmd.spawn().context("starting perf record")?);
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(child)
        }
        (Some(_), HubHandle::InProcess(_)) => bail!("--perf needs --hub child"),
        (None, _) => None,
    };

    let mem_before = memory(pid);
    let me = std::process::id();
    let cpu_before = (cpu_seconds(pid), cpu_seconds(me));
    start_gate.wait().await;
    let started = Instant::now();

    // Progress and memory, sampled while the workers run.
    let done = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let monitor = {
        let (done, accepted, failed, samples) = (
            done.clone(),
            accepted.clone(),
            failed.clone(),
            samples.clone(),
        );
        let (total, reports) = (args.envelopes, args.reports.max(1));
        tokio::spawn(async move {
            let step = total.div_ceil(reports).max(1);
            let mut next = step;
            let (mut last_n, mut last_t) = (0usize, 0.0f64);
            let mut peak_rss = 0u64;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = accepted.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
                let mem = memory(pid);
                if let Some((rss, _)) = mem {
                    peak_rss = peak_rss.max(rss);
                }
                if n >= next || (done.load(Ordering::Relaxed) && n > last_n) {
                    let t = started.elapsed().as_secs_f64();
                    let (rss, hwm) = mem.unwrap_or_default();
                    let window = (n - last_n) as f64 / (t - last_t).max(1e-9);
                    println!(
                        "  {n:>9} submitted  t={t:>7.1} s  {window:>7.0}/s in this step  hub RSS {:>7.1} MiB (HWM {:>7.1} MiB)",
                        mib(rss),
                        mib(hwm)
                    );
                    if let Ok(mut s) = samples.lock() {
                        s.push(json!({"submitted": n, "t_s": t, "rate": window, "rss_mib": mib(rss), "hwm_mib": mib(hwm)}));
                    }
                    (last_n, last_t) = (n, t);
                    while next <= n {
                        next += step;
                    }
                }
            }
            peak_rss
        })
    };

    let mut latencies = Vec::with_capacity(args.envelopes);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        let r = r.context("worker")?;
        latencies.extend(r.latencies_us);
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in r.versions {
            *versions.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    let mem_after = memory(pid);
    let cpu_after = (cpu_seconds(pid), cpu_seconds(me));
    done.store(true, Ordering::Relaxed);
    let peak_rss = monitor.await.unwrap_or(0);
    if let Some(mut p) = perf {
        // SIGINT makes perf write its file and exit.
        signal(p.0.id(), "INT")?;
        p.0.wait()?;
    }
    for s in signers {
        s.join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
    }

    // The hub's own count, from its metrics.
    let metrics_client = clients[0].1.clone();
    let metrics_text = async {
        metrics_client
            .get(format!("http://127.0.0.1:{plain_port}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }
    .await
    .unwrap_or_default();
    let metric = |name: &str| {
        metrics_text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let hub_count = metric("snodo_envelopes_accepted_total");
    // Where the time of an acceptance went, by the hub's histograms (means).
    let mut stages = serde_json::Map::new();
    for stage in ["acceptance", "journal_commit", "amqp_confirm"] {
        let (sum, count) = (
            metric(&format!("snodo_{stage}_seconds_sum")),
            metric(&format!("snodo_{stage}_seconds_count")),
        );
        if let (Some(sum), Some(count)) = (sum, count)
            && count > 0.0
        {
            let ms = 1000.0 * sum / count;
            // The histogram's bucket that holds the 99th percentile: its upper bound.
            let prefix = format!("snodo_{stage}_seconds_bucket{{le=\"");
            let p99 = metrics_text.lines().find_map(|l| {
                let (le, n) = l.strip_prefix(prefix.as_str())?.split_once("\"} ")?;
                let (le, n) = (le.parse::<f64>().ok()?, n.trim().parse::<f64>().ok()?);
                (n >= 0.99 * count).then_some(1000.0 * le)
            });
            match p99 {
                Some(p99) => println!(
                    "hub {stage}: mean {ms:.2} ms, p99 at most {p99:.1} ms, over {count} envelopes"
                ),
                None => println!("hub {stage}: mean {ms:.2} ms over {count} envelopes"),
            }
            stages.insert(format!("{stage}_mean_ms"), json!(ms));
            if let Some(p99) = p99 {
                stages.insert(format!("{stage}_p99_bound_ms"), json!(p99));
            }
        }
    }

    match hub {
        HubHandle::Child(mut child) => {
            signal(child.0.id(), "TERM")?;
            child.0.wait()?;
        }
        HubHandle::InProcess(running) => running.shutdown().await?,
    }
    let disk = disk_usage(&fed.data_dir());
    if let Some(url) = &args.amqp {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let names = snodo_broker::amqp::Names::new(&amqp_prefix, "hub");
        let mut entities: Vec<String> = fed.senders.iter().map(ToString::to_string).collect();
        entities.push(support::RECIPIENT.to_owned());
        let entities: Vec<&str> = entities.iter().map(String::as_str).collect();
        snodo_broker::amqp::delete_all(&conn, &names, &entities, &["hub"]).await?;
        let _ = conn.close(200, "done".into()).await;
    }

    latencies.sort_unstable();
    let ok = latencies.len();
    let errors_total: usize = errors.values().sum();
    let secs = elapsed.as_secs_f64();
    let rate = ok as f64 / secs;
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    let (rss_idle, _) = mem_idle.unwrap_or_default();
    let (rss_before, _) = mem_before.unwrap_or_default();
    let (rss_after, hwm) = mem_after.unwrap_or_default();
    println!("accepted: {ok} of {} in {secs:.2} s", args.envelopes);
    match args.rate {
        Some(offered) => println!(
            "throughput: {rate:.0} accepted envelopes/s (offered {offered:.0}/s, open loop; latency from each request's due time)"
        ),
        None => println!("throughput: {rate:.0} accepted envelopes/s"),
    }
    println!("latency: p50 {p50:.2} ms  p90 {p90:.2} ms  p99 {p99:.2} ms  max {max:.2} ms");
    println!(
        "hub memory: RSS idle {:.1} MiB, before the run {:.1} MiB, after {:.1} MiB, peak sampled {:.1} MiB, VmHWM {:.1} MiB",
        mib(rss_idle),
        mib(rss_before),
        mib(rss_after),
        mib(peak_rss),
        mib(hwm)
    );
    let used = |before: Option<f64>, after: Option<f64>| after.zip(before).map(|(a, b)| a - b);
    let hub_cpu = used(cpu_before.0, cpu_after.0);
    // In process, the hub's CPU is this process's: the generator's own is not separable.
    let gen_cpu = (args.hub == HubMode::Child)
        .then(|| used(cpu_before.1, cpu_after.1))
        .flatten();
    let per_envelope = |cpu: Option<f64>| cpu.map(|c| c * 1e6 / ok.max(1) as f64);
    if let Some(c) = hub_cpu {
        println!(
            "{}: {c:.2} s in {secs:.2} s ({:.2} cores), {:.0} µs per accepted envelope",
            match args.hub {
                HubMode::Child => "hub CPU",
                HubMode::InProcess => "CPU of this process (hub and generator)",
            },
            c / secs,
            per_envelope(hub_cpu).unwrap_or_default()
        );
    }
    if let Some(c) = gen_cpu {
        println!(
            "load generator CPU: {c:.2} s ({:.2} cores), {:.0} µs per envelope",
            c / secs,
            per_envelope(gen_cpu).unwrap_or_default()
        );
    }
    println!("hub store on disk: {:.1} MiB", disk as f64 / 1048576.0);
    println!("HTTP versions: {versions:?}");
    if let Some(n) = hub_count {
        println!("hub's own count (snodo_envelopes_accepted_total): {n}");
    }
    println!("errors: {errors_total}");
    for (k, v) in &errors {
        println!("  {v:>8}  {k}");
    }
    if let Some(path) = &args.json {
        let summary = json!({
            "clients": args.clients,
            "batch": per_request,
            "connections": connections,
            "envelopes": args.envelopes,
            "format": format!("{:?}", args.format),
            "key_type": format!("{:?}", args.key_type),
            "hub_key_type": format!("{:?}", args.hub_key_type),
            "body_size": args.body_size,
            "signed_size": sample.len(),
            "http": if args.http == Http::H2 { "2" } else { "1.1" },
            "hub": format!("{:?}", args.hub),
            "stream": args.stream,
            "hub_set": args.hub_set,
            "offered_rate": args.rate,
            "accepted": ok,
            "seconds": secs,
            "rate": rate,
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "rss_idle_mib": mib(rss_idle),
            "rss_before_mib": mib(rss_before),
            "rss_after_mib": mib(rss_after),
            "rss_peak_sampled_mib": mib(peak_rss),
            "hwm_mib": mib(hwm),
            "disk_mib": disk as f64 / 1048576.0,
            "hub_cpu_s": hub_cpu,
            "hub_cpu_us_per_envelope": per_envelope(hub_cpu),
            "generator_cpu_s": gen_cpu,
            "generator_cpu_us_per_envelope": per_envelope(gen_cpu),
            "hub_count": hub_count,
            "hub_stages": stages,
            "errors": errors_total,
            "error_kinds": errors,
            "versions": versions,
            "samples": *samples.lock().map_err(|_| anyhow::anyhow!("samples"))?,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    if errors_total > 0 {
        bail!("{errors_total} requests failed");
    }
    Ok(())
}
