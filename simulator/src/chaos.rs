//! Faults a run injects (`--chaos LIST`): a hub node killed and restarted, partners whose
//! systems stop or slow down, RabbitMQ restarted, and a rogue member sending what must be
//! refused. Each runs as a task while citizens are active and says what it did.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use snodo_envelopes::{EntityId, Format, Signer};

use crate::federation::{Federation, ROGUE};
use crate::hub::Hubs;
use crate::load::sign_one;
use crate::rabbit::PrivateRabbit;
use crate::world::World;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of a spawned hub node at random moments, and its restart.
    KillHub,
    /// Some entities stop answering (their pull loops stop) for a while.
    PartnerOutage,
    /// The simulation's own RabbitMQ stopped and started mid-run (`--transport private`).
    AmqpRestart,
    /// One partner answers slowly: its pull loop stops and starts in turns.
    SlowPartner,
    /// A rogue member sends malformed, unsigned, wrongly signed, oversize, replayed and
    /// unauthorised envelopes, each of which must be refused with its code.
    BadInput,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "kill-hub" => Fault::KillHub,
            "partner-outage" => Fault::PartnerOutage,
            "amqp-restart" => Fault::AmqpRestart,
            "slow-partner" => Fault::SlowPartner,
            "bad-input" => Fault::BadInput,
            other => {
                return Err(format!(
                    "`{other}` is not a fault: kill-hub, partner-outage, amqp-restart, slow-partner, bad-input"
                ));
            }
        })
    }
}

/// What the bad-input fault sent and what came back.
#[derive(Debug, Default, Clone)]
pub struct BadInput {
    /// Refused with the expected code, by code.
    pub expected: BTreeMap<String, u64>,
    /// Anything else: accepted, or refused with another code.
    pub unexpected: Vec<String>,
}

/// What the faults did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Times each fault struck.
    pub struck: BTreeMap<String, u64>,
    /// The bad inputs.
    pub bad: BadInput,
    /// Why a fault could not act.
    pub errors: Vec<String>,
}

/// The kinds of bad input, in turn, with the code each must be refused with.
const BAD: [(&str, &str); 6] = [
    ("malformed", "envelope-malformed"),
    ("unsigned", "signature-missing"),
    ("tampered", "signature-invalid"),
    ("oversize", "envelope-too-large"),
    ("replayed", "transport-identity-mismatch"),
    ("unauthorised", "sender-not-allowed"),
];

/// One bad envelope of `kind`: its media type and bytes.
fn bad_envelope(
    kind: &str,
    rogue: &Signer,
    comune: &Signer,
    fed: &Federation,
) -> anyhow::Result<(&'static str, Bytes)> {
    let me: EntityId = ROGUE.parse()?;
    let xml = Format::Xml.media_type();
    Ok(match kind {
        "malformed" => (
            Format::Json.media_type(),
            Bytes::from_static(b"{\"payload\": \"not an envelope\""),
        ),
        "unsigned" => {
            let signed = sign_one(rogue, &me, Format::Xml, 64)?;
            let text = String::from_utf8_lossy(&signed.bytes).into_owned();
            let (Some(a), Some(b)) = (text.find("<ds:Signature"), text.find("</ds:Signature>"))
            else {
                anyhow::bail!("no signature to strip");
            };
            let stripped = format!("{}{}", &text[..a], &text[b + "</ds:Signature>".len()..]);
            (xml, Bytes::from(stripped))
        }
        "tampered" => {
            let signed = sign_one(rogue, &me, Format::Xml, 512)?;
            let text = String::from_utf8_lossy(&signed.bytes);
            let altered = text.replacen("xxxx", "xxxy", 1);
            if altered == text {
                anyhow::bail!("no body text to alter");
            }
            (xml, Bytes::from(altered))
        }
        "oversize" => {
            // A signed envelope followed by whitespace past the size limit.
            let mut bytes = sign_one(rogue, &me, Format::Xml, 64)?.bytes.to_vec();
            bytes.resize(snodo_envelopes::limits::DEFAULT_MAX_BYTES + 1024, b' ');
            (xml, Bytes::from(bytes))
        }
        "replayed" => {
            let first: EntityId = fed
                .comuni
                .first()
                .map(|c| c.entity())
                .unwrap_or_default()
                .parse()?;
            (
                Format::Json.media_type(),
                sign_one(comune, &first, Format::Json, 64)?.bytes,
            )
        }
        _ => (
            Format::Json.media_type(),
            sign_one(rogue, &me, Format::Json, 64)?.bytes,
        ),
    })
}

/// Sends one bad input of each kind in turn every 200 ms until `stop`.
async fn bad_input(
    fed: Federation,
    url: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<BadInput> {
    let rogue_id: EntityId = ROGUE.parse()?;
    let (cert, key) = fed.cert_and_key(&rogue_id);
    let rogue = Signer::load(&key, &cert)?;
    let first: EntityId = fed
        .comuni
        .first()
        .map(|c| c.entity())
        .unwrap_or_default()
        .parse()?;
    let (ccert, ckey) = fed.cert_and_key(&first);
    let comune = Signer::load(&ckey, &ccert)?;
    let tls = snodo_broker::tls::client_config(&fed.pki().join("ca.crt"), &cert, &key)?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut out = BadInput::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (kind, code) = BAD[i % BAD.len()];
        i += 1;
        let (media, body) = match bad_envelope(kind, &rogue, &comune, &fed) {
            Ok(b) => b,
            Err(e) => {
                out.unexpected
                    .push(format!("{kind} input could not be made: {e:#}"));
                continue;
            }
        };
        let resp = http
            .post(format!("{url}/v1/envelopes"))
            .header("content-type", media)
            .body(body)
            .send()
            .await;
        // Unreachable (another fault at work): no verdict.
        if let Ok(r) = resp {
            let status = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let got = v["code"].as_str().unwrap_or_default().to_owned();
            if status.is_client_error() && got == code {
                *out.expected.entry(got).or_default() += 1;
            } else if status.as_u16() == 503 || status.as_u16() == 429 {
                // The hub was down or busy (another fault): no verdict; try again.
            } else {
                out.unexpected.push(format!(
                    "{kind} input: HTTP {status} `{got}`, expected `{code}`"
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(out)
}

async fn nap(stop: &AtomicBool, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The faults of a run, acting until [`Running::finish`].
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<Report>,
}

/// What the faults act on.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The federation.
    pub fed: Federation,
    /// A hub URL for the bad inputs.
    pub url: String,
    /// The hub nodes, for `kill-hub`.
    pub hubs: Arc<tokio::sync::Mutex<Hubs>>,
    /// The bodies, for outages.
    pub world: Arc<World>,
    /// The simulation's own RabbitMQ, for `amqp-restart`.
    pub rabbit: Option<Arc<tokio::sync::Mutex<PrivateRabbit>>>,
}

/// Checks that every fault of `faults` can act on this run's set-up.
///
/// # Errors
/// Naming the fault and what it needs.
pub fn check(faults: &[Fault], spawned: bool, private_rabbit: bool) -> anyhow::Result<()> {
    for f in faults {
        match f {
            Fault::KillHub if !spawned => anyhow::bail!(
                "--chaos kill-hub needs --hub spawn: only a child process can be killed"
            ),
            Fault::AmqpRestart if !private_rabbit => anyhow::bail!(
                "--chaos amqp-restart needs --transport private: the simulation restarts only a RabbitMQ of its own"
            ),
            _ => {}
        }
    }
    Ok(())
}

impl Running {
    /// Starts `faults` on `t`.
    #[must_use]
    pub fn start(faults: &[Fault], t: &Targets) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for f in faults {
            let (t, stop) = (t.clone(), stop.clone());
            match f {
                Fault::BadInput => {
                    tasks.spawn(async move {
                        let mut r = Report::default();
                        match bad_input(t.fed, t.url, stop).await {
                            Ok(b) => {
                                r.struck.insert(
                                    "bad-input".into(),
                                    b.expected.values().sum::<u64>() + b.unexpected.len() as u64,
                                );
                                r.bad = b;
                            }
                            Err(e) => r.errors.push(format!("bad-input: {e:#}")),
                        }
                        r
                    });
                }
                Fault::KillHub => {
                    tasks.spawn(async move {
                        let mut r = Report::default();
                        nap(&stop, Duration::from_secs(2)).await;
                        while !stop.load(Ordering::Relaxed) {
                            let mut hubs = t.hubs.lock().await;
                            let i = rand::rng().random_range(0..hubs.nodes.len());
                            let name = hubs.nodes[i].name.clone();
                            if let Err(e) = hubs.kill(i) {
                                r.errors.push(format!("kill-hub: {e:#}"));
                                break;
                            }
                            tracing::warn!(node = %name, "Fault: hub node killed.");
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if let Err(e) = hubs.start_node(i).await {
                                r.errors.push(format!("kill-hub: restarting {name}: {e:#}"));
                                break;
                            }
                            drop(hubs);
                            *r.struck.entry("kill-hub".into()).or_default() += 1;
                            let wait = rand::rng().random_range(4_000..8_000);
                            nap(&stop, Duration::from_millis(wait)).await;
                        }
                        r
                    });
                }
                Fault::PartnerOutage | Fault::SlowPartner => {
                    let slow = *f == Fault::SlowPartner;
                    tasks.spawn(async move {
                        let mut r = Report::default();
                        let name = if slow {
                            "slow-partner"
                        } else {
                            "partner-outage"
                        };
                        let entities = t.world.entities().await;
                        let slowest = crate::federation::ANPR.to_owned();
                        nap(&stop, Duration::from_secs(1)).await;
                        while !stop.load(Ordering::Relaxed) {
                            let entity = if slow {
                                slowest.clone()
                            } else {
                                entities
                                    .choose(&mut rand::rng())
                                    .cloned()
                                    .unwrap_or_default()
                            };
                            let (down, up) = if slow {
                                (1_500, 1_500)
                            } else {
                                (rand::rng().random_range(2_000..5_000), 3_000)
                            };
                            t.world.pause(&entity).await;
                            tokio::time::sleep(Duration::from_millis(down)).await;
                            t.world.resume(&entity).await;
                            *r.struck.entry(name.into()).or_default() += 1;
                            nap(&stop, Duration::from_millis(up)).await;
                        }
                        r
                    });
                }
                Fault::AmqpRestart => {
                    tasks.spawn(async move {
                        let mut r = Report::default();
                        let Some(rabbit) = t.rabbit else {
                            r.errors
                                .push("amqp-restart: no RabbitMQ of the simulation's own".into());
                            return r;
                        };
                        nap(&stop, Duration::from_secs(3)).await;
                        while !stop.load(Ordering::Relaxed) {
                            let mut rb = rabbit.lock().await;
                            tracing::warn!("Fault: RabbitMQ stopped.");
                            if let Err(e) = rb.stop().await {
                                r.errors.push(format!("amqp-restart: {e:#}"));
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            if let Err(e) = rb.start().await {
                                r.errors
                                    .push(format!("amqp-restart: starting again: {e:#}"));
                                break;
                            }
                            drop(rb);
                            *r.struck.entry("amqp-restart".into()).or_default() += 1;
                            nap(&stop, Duration::from_secs(10)).await;
                        }
                        r
                    });
                }
            }
        }
        Running { stop, tasks }
    }

    /// Stops the faults (every paused partner answers again, every node runs) and returns
    /// what they did.
    pub async fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Report::default();
        while let Some(r) = self.tasks.join_next().await {
            match r {
                Ok(r) => {
                    for (k, v) in r.struck {
                        *out.struck.entry(k).or_default() += v;
                    }
                    for (k, v) in r.bad.expected {
                        *out.bad.expected.entry(k).or_default() += v;
                    }
                    out.bad.unexpected.extend(r.bad.unexpected);
                    out.errors.extend(r.errors);
                }
                Err(e) => out.errors.push(format!("a fault task failed: {e}")),
            }
        }
        out
    }
}
