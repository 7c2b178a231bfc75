//! The citizens' conversations a simulation drives, one module per service, and what they
//! record: conversations started and finished, latencies, and every inconsistency found.

pub mod contravvenzioni;
pub mod edilizia;
pub mod residenza;
pub mod tributi;
pub mod viabilita;
pub mod ztl;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use snodo_connectors::Clock as _;
use time::OffsetDateTime;

use crate::load::percentile_ms;
use crate::population::Citizen;
use crate::summary::ServiceFigures;
use crate::world::World;

/// What the conversations of one service recorded.
#[derive(Debug, Default)]
struct ServiceLog {
    started: u64,
    finished: u64,
    latencies_us: Vec<u32>,
    /// When each conversation finished.
    finished_at: Vec<Instant>,
}

/// What every conversation records, shared by their tasks.
#[derive(Debug, Default)]
pub struct Log {
    services: Mutex<BTreeMap<String, ServiceLog>>,
    violations: Mutex<Vec<String>>,
    open: Mutex<BTreeMap<String, String>>,
}

impl Log {
    /// A conversation `id` of `service` starts.
    pub fn start(&self, service: &str, id: &str) {
        if let Ok(mut s) = self.services.lock() {
            s.entry(service.to_owned()).or_default().started += 1;
        }
        if let Ok(mut o) = self.open.lock() {
            o.insert(id.to_owned(), service.to_owned());
        }
    }

    /// Conversation `id` of `service`, started at `since`, reached a final state.
    pub fn finish(&self, service: &str, id: &str, since: Instant) {
        if let Ok(mut s) = self.services.lock() {
            let l = s.entry(service.to_owned()).or_default();
            l.finished += 1;
            l.latencies_us
                .push(u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX));
            l.finished_at.push(Instant::now());
        }
        if let Ok(mut o) = self.open.lock() {
            o.remove(id);
        }
    }

    /// An invariant does not hold.
    pub fn violation(&self, what: String) {
        tracing::error!(%what, "Invariant violated.");
        if let Ok(mut v) = self.violations.lock() {
            v.push(what);
        }
    }

    /// The conversations not finished, `(id, service)`.
    #[must_use]
    pub fn open(&self) -> Vec<(String, String)> {
        self.open
            .lock()
            .map(|o| o.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
            .unwrap_or_default()
    }

    /// Conversations started and finished so far, over every service.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        self.services.lock().map_or((0, 0), |s| {
            s.values()
                .fold((0, 0), |(a, b), l| (a + l.started, b + l.finished))
        })
    }

    /// The violations so far.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The plots of `--report`: conversations finished per second (5-second windows) and
    /// latency by percentile, per service; times counted from `origin`.
    #[must_use]
    pub fn plots(&self, origin: Instant) -> crate::report::Plots {
        let Ok(s) = self.services.lock() else {
            return crate::report::Plots::default();
        };
        let mut plots = crate::report::Plots::default();
        for (name, l) in s.iter() {
            let at = l
                .finished_at
                .iter()
                .map(|t| t.saturating_duration_since(origin).as_secs_f64())
                .collect();
            plots.throughput.push(crate::report::rate(name, at, 5.0));
            let mut us = l.latencies_us.clone();
            us.sort_unstable();
            plots.latency.push(crate::report::percentiles(name, &us));
        }
        plots
    }

    /// Figures per service.
    #[must_use]
    pub fn figures(&self) -> BTreeMap<String, ServiceFigures> {
        let Ok(mut s) = self.services.lock() else {
            return BTreeMap::new();
        };
        s.iter_mut()
            .map(|(name, l)| {
                l.latencies_us.sort_unstable();
                (
                    name.clone(),
                    ServiceFigures {
                        conversations_started: l.started,
                        conversations_finished: l.finished,
                        envelopes: 0,
                        p50_ms: percentile_ms(&l.latencies_us, 50.0),
                        p95_ms: percentile_ms(&l.latencies_us, 95.0),
                        p99_ms: percentile_ms(&l.latencies_us, 99.0),
                    },
                )
            })
            .collect()
    }
}

/// What the conversations share: the bodies, the population and who is busy.
#[derive(Debug)]
pub struct Context {
    /// The bodies.
    pub world: Arc<World>,
    /// The citizens, as at the start.
    pub citizens: Vec<Citizen>,
    /// Citizens with a second home (property tax is due on it).
    pub second_homes: HashSet<String>,
    /// Citizens in a conversation that changes them (a move, a payment): one at a time.
    pub busy: Mutex<HashSet<String>>,
    /// The record.
    pub log: Log,
    /// How long a conversation may wait for one step, in real time.
    pub step_timeout: Duration,
    /// How many conversations are in steps that must beat a term of a few simulated days
    /// (pay within 5 days, answer within 15): while any is, time does not run fast.
    pub prompt: Arc<AtomicUsize>,
}

/// A conversation's prompt steps, from [`Context::prompt`] until dropped.
#[derive(Debug)]
pub struct Prompt(Arc<AtomicUsize>);

impl Drop for Prompt {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Context {
    /// The conversation takes steps that must beat a short term, until the guard is dropped:
    /// meanwhile simulated time runs at its normal pace, even once citizens stop.
    #[must_use]
    pub fn prompt(&self) -> Prompt {
        self.prompt.fetch_add(1, Ordering::Relaxed);
        Prompt(self.prompt.clone())
    }

    /// A comune's ISTAT code, weighted by population, among `among` (all when empty).
    pub fn weighted_comune(&self, rng: &mut impl Rng, except: Option<&str>) -> Option<String> {
        let candidates: Vec<(&String, u64)> = self
            .world
            .comuni
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != except)
            .map(|(k, m)| (k, m.info.population.max(1)))
            .collect();
        let total: u64 = candidates.iter().map(|(_, p)| p).sum();
        if total == 0 {
            return None;
        }
        let mut x = rng.random_range(0..total);
        for (k, p) in candidates {
            if x < p {
                return Some(k.clone());
            }
            x -= p;
        }
        None
    }

    /// Marks `cfs` busy, or returns false when one of them already is.
    pub fn claim(&self, cfs: &[String]) -> bool {
        let Ok(mut b) = self.busy.lock() else {
            return false;
        };
        if cfs.iter().any(|c| b.contains(c)) {
            return false;
        }
        b.extend(cfs.iter().cloned());
        true
    }

    /// Polls `check` every 50 ms until it gives a value: as long as simulated time is before
    /// `term` (a term of many days, which the clock always reaches), then for at most the step
    /// timeout.
    pub async fn until_term<T>(
        &self,
        term: OffsetDateTime,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        loop {
            if let Some(v) = check() {
                return Some(v);
            }
            if self.world.clock.now() >= term {
                return self.until(check).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A citizen of `comune` (any when `None`) not busy, marked busy under `key` (its codice
    /// fiscale prefixed by `key`), and the citizen's own codice fiscale claimed too when
    /// `stays` (a conversation that needs the citizen not to move meanwhile).
    pub fn free_citizen(
        &self,
        rng: &mut impl Rng,
        comune: Option<&str>,
        stays: bool,
    ) -> Option<Citizen> {
        let here: Vec<&Citizen> = self
            .citizens
            .iter()
            .filter(|c| comune.is_none_or(|k| c.comune == k))
            .collect();
        for _ in 0..8 {
            let c = here.get(rng.random_range(0..here.len().max(1)))?;
            if !stays || self.claim(std::slice::from_ref(&c.cf)) {
                return Some((*c).clone());
            }
        }
        None
    }

    /// Polls `check` every 50 ms until it gives a value, for at most the step timeout.
    pub async fn until<T>(&self, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            if let Some(v) = check() {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The context, shared by the conversations' tasks.
pub type Shared = Arc<Context>;
