//! Pure load for `snodo-sim bench`: envelopes signed before the clock starts, then sent from
//! many concurrent HTTPS connections with client certificates (HTTP/2), closed-loop: each
//! worker has one request in flight and sends the next when the receipt is read whole.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use snodo_envelopes::{EntityId, Envelope, Format, Signer};
use uuid::Uuid;

use crate::federation::{BENCH, Federation, REGION};

/// One signed envelope and its id.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The envelope id.
    pub id: Uuid,
    /// The signed bytes.
    pub bytes: Bytes,
    /// The same as an item of a batch request (`api::batch::request_item`), escaped once
    /// here rather than for every request the load sends.
    pub item: Bytes,
}

/// What each sender sends, signed in advance.
#[derive(Debug)]
pub struct Pool {
    /// Per sender: its entity and its envelopes.
    pub senders: Vec<(EntityId, Vec<Signed>)>,
    /// The encoding.
    pub format: Format,
    /// Bytes of one signed envelope.
    pub signed_size: usize,
}

/// One envelope from `sender` to the region with a body of `size` bytes, signed.
///
/// # Errors
/// When it cannot be built or signed.
pub fn sign_one(
    signer: &Signer,
    sender: &EntityId,
    format: Format,
    size: usize,
) -> anyhow::Result<Signed> {
    let b = Envelope::builder(
        sender.clone(),
        REGION.parse::<EntityId>()?,
        BENCH.0,
        BENCH.1,
    );
    let env = match format {
        Format::Json => {
            let fixed = r#"{"nota":""}"#.len();
            b.json(json!({"nota": "x".repeat(size.saturating_sub(fixed))}))
        }
        Format::Xml => {
            let wrap = |n: &str| {
                format!(
                    r#"<c:Misura xmlns:c="urn:snodo:simulatore:1"><c:nota>{n}</c:nota></c:Misura>"#
                )
            };
            let fixed = wrap("").len();
            b.xml(wrap(&"x".repeat(size.saturating_sub(fixed))))
        }
    }
    .build()?;
    let bytes = Bytes::from(snodo_envelopes::sign(&env, signer, format)?);
    let item = snodo_broker::api::batch::request_item(&bytes, format.media_type()).into();
    Ok(Signed {
        id: env.header.id,
        bytes,
        item,
    })
}

impl Pool {
    /// `total` envelopes spread over `senders` comuni of `fed`, signed on every core.
    ///
    /// # Errors
    /// When a key cannot be read or an envelope cannot be signed.
    pub fn sign(
        fed: &Federation,
        senders: usize,
        total: usize,
        format: Format,
        body_size: usize,
    ) -> anyhow::Result<Pool> {
        let senders = senders.clamp(1, fed.comuni.len());
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let mut out = Vec::with_capacity(senders);
        for (i, c) in fed.comuni.iter().take(senders).enumerate() {
            let entity: EntityId = c.entity().parse()?;
            let (cert, key) = fed.cert_and_key(&entity);
            let signer =
                Signer::load(&key, &cert).with_context(|| format!("loading {entity}'s key"))?;
            let n = total / senders + usize::from(i < total % senders);
            let signed: Vec<Signed> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| n / threads + usize::from(t < n % threads))
                    .map(|k| {
                        let (signer, entity) = (signer.clone(), &entity);
                        s.spawn(move || {
                            (0..k)
                                .map(|_| sign_one(&signer, entity, format, body_size))
                                .collect::<anyhow::Result<Vec<_>>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("a signing thread panicked"))?
                    })
                    .collect::<anyhow::Result<Vec<Vec<_>>>>()
            })?
            .into_iter()
            .flatten()
            .collect();
            out.push((entity, signed));
        }
        let signed_size = out
            .iter()
            .find_map(|(_, v)| v.first())
            .map_or(0, |s| s.bytes.len());
        Ok(Pool {
            senders: out,
            format,
            signed_size,
        })
    }

    /// Envelopes in the pool.
    #[must_use]
    pub fn len(&self) -> usize {
        self.senders.iter().map(|(_, v)| v.len()).sum()
    }

    /// Whether the pool is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ids of the envelopes the hub receipted (202, or 200 for a repeat).
    pub receipted: Vec<Uuid>,
    /// Acceptance latencies, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Failed requests by kind (`HTTP 503 transport-unavailable`, `request: …`).
    pub errors: BTreeMap<String, usize>,
    /// Ids of envelopes whose fate is unknown (the request failed without an answer).
    pub unknown: Vec<Uuid>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

/// How the pool is sent: from how many workers, how many envelopes per request, for how
/// long, and on what schedule.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Workers, each on its own TLS connection, one request in flight each.
    pub clients: usize,
    /// Envelopes per request: more than one go through `/v1/envelopes/batch`.
    pub batch: usize,
    /// The longest the load runs.
    pub duration: Duration,
    /// Envelopes per second offered on a fixed schedule (open loop: a request's latency
    /// counts from when it was due, so waiting for a free worker counts too); `None`: as fast
    /// as the hub answers.
    pub rate: Option<f64>,
}

/// Sends the pool to the hubs at `urls` (connections spread over them) as `shape` says;
/// calls `progress` every second with the count answered so far.
///
/// # Errors
/// When a TLS client cannot be built.
pub async fn drive(
    fed: &Federation,
    pool: Pool,
    urls: &[String],
    shape: Shape,
    progress: impl Fn(usize, Duration) + Send + 'static,
) -> anyhow::Result<Outcome> {
    let clients = shape.clients.max(1);
    let batch = shape.batch.max(1);
    let duration = shape.duration;
    // The schedule: request k is due `k * every` after the start.
    let every = shape
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(batch as f64 / r));
    let epoch = Arc::new(std::sync::OnceLock::<Instant>::new());
    let tickets = Arc::new(AtomicUsize::new(0));
    let media_type = pool.format.media_type();
    let mut sources = Vec::new();
    let mut http = Vec::new();
    for (entity, envelopes) in pool.senders {
        let (cert, key) = fed.cert_and_key(&entity);
        let tls = snodo_broker::tls::client_config(&fed.pki().join("ca.crt"), &cert, &key)?;
        http.push(tls);
        sources.push(Arc::new((envelopes, AtomicUsize::new(0))));
    }
    let gate = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..clients {
        let s = w % sources.len();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(http[s].clone())
            .timeout(Duration::from_secs(60))
            .build()?;
        let source = sources[s].clone();
        let base = &urls[w % urls.len()];
        let url = if batch > 1 {
            format!("{base}/v1/envelopes/batch")
        } else {
            format!("{base}/v1/envelopes")
        };
        let health = format!("{base}/healthz");
        let (gate, answered, stop) = (gate.clone(), answered.clone(), stop.clone());
        let (epoch, tickets) = (epoch.clone(), tickets.clone());
        workers.spawn(async move {
            let mut o = Outcome::default();
            if let Err(e) = client.get(&health).send().await {
                *o.errors.entry(format!("connect: {e}")).or_default() += 1;
            }
            gate.wait().await;
            let epoch = *epoch.get_or_init(Instant::now);
            while !stop.load(Ordering::Relaxed) {
                let first = source.1.fetch_add(batch, Ordering::Relaxed);
                let Some(envs) = source.0.get(first..(first + batch).min(source.0.len())) else {
                    break;
                };
                if envs.is_empty() {
                    break;
                }
                let sent = match every {
                    Some(every) => {
                        let k = u32::try_from(tickets.fetch_add(1, Ordering::Relaxed))
                            .unwrap_or(u32::MAX);
                        let due = epoch + every * k;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let request = if batch == 1 {
                    client
                        .post(&url)
                        .header("content-type", media_type)
                        .body(envs[0].bytes.clone())
                } else {
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(snodo_broker::api::batch::request_body_of(
                            envs.iter().map(|e| &e.item[..]),
                        ))
                };
                // Each envelope's status, or why the request as a whole has none (and whether
                // its envelopes' fate is then unknown).
                let statuses: Result<Vec<(u16, String)>, (String, bool)> =
                    match request.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.bytes().await {
                                Ok(body) if batch > 1 && status == 200 => Ok(results(&body)),
                                Ok(body) => Ok(vec![(status, error_key(status, &body))]),
                                Err(e) => Err((format!("reading the answer: {e}"), true)),
                            }
                        }
                        Err(e) => Err((format!("request: {e}"), true)),
                    };
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                match statuses {
                    Ok(statuses) if statuses.len() == envs.len() => {
                        for (env, (status, kind)) in envs.iter().zip(statuses) {
                            if status == 202 || status == 200 {
                                o.latencies_us.push(us);
                                o.receipted.push(env.id);
                            } else {
                                *o.errors.entry(kind).or_default() += 1;
                            }
                        }
                    }
                    Ok(_) => {
                        *o.errors.entry("results missing".into()).or_default() += envs.len();
                        o.unknown.extend(envs.iter().map(|e| e.id));
                    }
                    Err((kind, unknown)) => {
                        *o.errors.entry(kind).or_default() += envs.len();
                        if unknown {
                            o.unknown.extend(envs.iter().map(|e| e.id));
                        }
                    }
                }
                answered.fetch_add(envs.len(), Ordering::Relaxed);
            }
            o
        });
    }
    gate.wait().await;
    let started = Instant::now();
    let monitor = {
        let (answered, stop) = (answered.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(answered.load(Ordering::Relaxed), started.elapsed());
                if started.elapsed() >= duration {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let mut out = Outcome::default();
    while let Some(r) = workers.join_next().await {
        let r = r.context("a load worker")?;
        out.receipted.extend(r.receipted);
        out.latencies_us.extend(r.latencies_us);
        out.unknown.extend(r.unknown);
        for (k, v) in r.errors {
            *out.errors.entry(k).or_default() += v;
        }
    }
    out.elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    monitor.abort();
    out.latencies_us.sort_unstable();
    Ok(out)
}

/// Each envelope's status in a batch's answer, with `HTTP <status> <problem code>`.
fn results(body: &[u8]) -> Vec<(u16, String)> {
    snodo_broker::api::batch::answer_statuses(body)
        .into_iter()
        .map(|(status, code)| (status, format!("HTTP {status} {code}")))
        .collect()
}

/// `HTTP <status> <problem code>`.
fn error_key(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("HTTP {status} {code}")
}

/// The `p`th percentile of sorted microseconds, in milliseconds.
#[must_use]
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ranks() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
