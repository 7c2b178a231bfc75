//! Prometheus metrics: what was accepted, refused (by code), delivered and acknowledged, how
//! long acceptance took, and how deep the inboxes are.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::Accepted;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntityLabel {
    entity: String,
}

/// The hub's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    accepted: Counter,
    duplicates: Counter,
    refused: Family<CodeLabel, Counter>,
    leased: Counter,
    acknowledged: Counter,
    returned: Counter,
    pushed: Counter,
    retried: Counter,
    dead_lettered: Counter,
    latency: Histogram,
    durable: Histogram,
    confirmed: Histogram,
    depth: Family<EntityLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("snodo");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            accepted: Counter::default(),
            duplicates: Counter::default(),
            refused: Family::default(),
            leased: Counter::default(),
            acknowledged: Counter::default(),
            returned: Counter::default(),
            pushed: Counter::default(),
            retried: Counter::default(),
            dead_lettered: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            durable: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            confirmed: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            depth: Family::default(),
        };
        registry.register(
            "envelopes_accepted",
            "Envelopes accepted",
            m.accepted.clone(),
        );
        registry.register(
            "envelopes_duplicate",
            "Duplicate submissions answered with the original receipt",
            m.duplicates.clone(),
        );
        registry.register(
            "envelopes_refused",
            "Envelopes refused, by code",
            m.refused.clone(),
        );
        registry.register(
            "envelopes_leased",
            "Envelopes handed out from inboxes",
            m.leased.clone(),
        );
        registry.register(
            "envelopes_acknowledged",
            "Envelopes acknowledged by their recipient",
            m.acknowledged.clone(),
        );
        registry.register(
            "envelopes_returned",
            "Leased envelopes returned to the inbox",
            m.returned.clone(),
        );
        registry.register(
            "envelopes_pushed",
            "Envelopes pushed to an endpoint that answered 2xx",
            m.pushed.clone(),
        );
        registry.register(
            "pushes_retried",
            "Failed pushes scheduled for a retry",
            m.retried.clone(),
        );
        registry.register(
            "envelopes_dead_lettered",
            "Envelopes dead-lettered past their delivery deadline",
            m.dead_lettered.clone(),
        );
        registry.register(
            "acceptance_seconds",
            "Time from request to receipt",
            m.latency.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Time from a verified envelope to its durable journal entry (group commit)",
            m.durable.clone(),
        );
        registry.register(
            "amqp_confirm_seconds",
            "Time from publishing an accepted envelope to RabbitMQ's confirm (amqp transport)",
            m.confirmed.clone(),
        );
        registry.register(
            "inbox_depth",
            "Envelopes waiting in an inbox (counted up to 100000)",
            m.depth.clone(),
        );
        *m.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = registry;
        m
    }

    /// Counts an acceptance.
    pub fn accepted(&self, a: &Accepted) {
        match a {
            Accepted::New(_) => self.accepted.inc(),
            Accepted::Duplicate(_) => self.duplicates.inc(),
        };
    }

    /// Counts a refusal by code.
    pub fn refused(&self, code: &str) {
        self.refused
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Counts envelopes handed out.
    pub fn leased(&self, n: usize) {
        self.leased.inc_by(n as u64);
    }

    /// Counts an acknowledgement or a return.
    pub fn settled(&self, ack: bool) {
        if ack {
            self.acknowledged.inc();
        } else {
            self.returned.inc();
        }
    }

    /// Counts the outcome of a push.
    pub fn push(&self, outcome: &crate::engine::PushOutcome) {
        match outcome {
            crate::engine::PushOutcome::Delivered { .. } => self.pushed.inc(),
            crate::engine::PushOutcome::Retry { .. } => self.retried.inc(),
            crate::engine::PushOutcome::DeadLetter { .. } => self.dead_lettered.inc(),
        };
    }

    /// Records how long an acceptance took.
    pub fn latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Records how long an envelope waited for its group commit.
    pub fn durable(&self, seconds: f64) {
        self.durable.observe(seconds);
    }

    /// Records how long a publication waited for RabbitMQ's confirm.
    pub fn confirmed(&self, seconds: f64) {
        self.confirmed.observe(seconds);
    }

    /// Sets an inbox depth.
    pub fn depth(&self, entity: &str, n: usize) {
        self.depth
            .get_or_create(&EntityLabel {
                entity: entity.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}
