//! The figures and verdicts of a run, printed as a table or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// The detail of a run holding its envelopes by hub service, printed as a table of its own.
pub const ENVELOPES_BY_SERVICE: &str = "envelopes_by_service";

/// One service's figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceFigures {
    /// Conversations started.
    pub conversations_started: u64,
    /// Conversations that reached a final state.
    pub conversations_finished: u64,
    /// Envelopes sent for this service.
    pub envelopes: u64,
    /// Latency percentiles of its exchanges, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// The progress of a run on standard error: one line rewritten every second on a terminal,
/// a line every 5 seconds otherwise (a log), nothing with `--json`.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    /// Progress on standard error, silent when `quiet`.
    #[must_use]
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal as _;
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet,
            last: None,
        }
    }

    /// Shows `text` if it is time to.
    pub fn update(&mut self, text: &str) {
        let every = if self.tty { 1 } else { 5 };
        if self.quiet || self.last.is_some_and(|t| t.elapsed().as_secs() < every) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        if self.tty {
            eprint!("\r\x1b[K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    /// Ends the progress line (on a terminal), so that what follows starts on its own.
    pub fn done(&self) {
        if self.tty && !self.quiet && self.last.is_some() {
            eprintln!();
        }
    }
}

/// A run's summary; the fields a reader's scripts rely on are at the top level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `run` or `bench`.
    pub mode: String,
    /// Envelopes the hub receipted.
    pub accepted: u64,
    /// Envelopes the recipients received (counting repeats).
    pub delivered: u64,
    /// Receipted envelopes never delivered.
    pub lost: u64,
    /// Envelopes delivered more than once.
    pub duplicates: u64,
    /// Bad inputs refused with the expected code.
    pub refused_expected: u64,
    /// Requests refused that should have been accepted, or refused with another code.
    pub refused_unexpected: u64,
    /// Conversations started, over every service.
    pub conversations_started: u64,
    /// Conversations that reached a final state.
    pub conversations_finished: u64,
    /// Whether every node's journal was exported and verified offline.
    pub journal_verified: bool,
    /// Accepted envelopes per second of the run.
    pub envelopes_per_sec: f64,
    /// Latency percentiles, milliseconds: of acceptance for `bench`, of whole conversations
    /// (the slowest service's) for `run`.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Per service.
    pub services: BTreeMap<String, ServiceFigures>,
    /// Anything else measured (memory, CPU, sizes), by name.
    pub details: BTreeMap<String, serde_json::Value>,
    /// Every violated invariant, naming the envelope or conversation.
    pub violations: Vec<String>,
    /// The plots of `--report`.
    #[serde(skip)]
    pub plots: crate::report::Plots,
}

impl Summary {
    /// Whether every invariant held.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The summary as a table for a terminal.
    #[must_use]
    pub fn table(&self) -> String {
        let mut s = String::new();
        // A run counts conversations per service and envelopes per hub service (in the
        // details); a bench counts envelopes.
        let counted = if self.mode == "run" { "" } else { "envelopes" };
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "service", "started", "finished", counted, "p50 ms", "p95 ms", "p99 ms"
        );
        for (name, f) in &self.services {
            let envelopes = if self.mode == "run" {
                String::new()
            } else {
                f.envelopes.to_string()
            };
            let _ = writeln!(
                s,
                "{name:<28} {:>10} {:>10} {envelopes:>10} {:>9.2} {:>9.2} {:>9.2}",
                f.conversations_started, f.conversations_finished, f.p50_ms, f.p95_ms, f.p99_ms
            );
        }
        // A run's envelopes, by the hub's service they were sent for (a conversation of one
        // service may send envelopes of another: a building permit's fees are a payment).
        let by_service = self
            .details
            .get(ENVELOPES_BY_SERVICE)
            .and_then(serde_json::Value::as_object);
        if let Some(by_service) = by_service {
            let _ = writeln!(s);
            let _ = writeln!(s, "{:<28} {:>10}", "hub service", "envelopes");
            for (name, n) in by_service {
                let _ = writeln!(s, "{name:<28} {:>10}", n);
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "accepted {}  delivered {}  lost {}  duplicates {}  refused as expected {}  refused unexpectedly {}",
            self.accepted,
            self.delivered,
            self.lost,
            self.duplicates,
            self.refused_expected,
            self.refused_unexpected
        );
        let latency = if self.mode == "run" {
            "conversations (the slowest service's)"
        } else {
            "acceptance"
        };
        let _ = writeln!(
            s,
            "{:.0} envelopes/s  {latency} p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms",
            self.envelopes_per_sec, self.p50_ms, self.p95_ms, self.p99_ms
        );
        for (k, v) in &self.details {
            if k != ENVELOPES_BY_SERVICE {
                let _ = writeln!(s, "{k}: {v}");
            }
        }
        let _ = writeln!(
            s,
            "journal verified: {}",
            if self.journal_verified { "yes" } else { "NO" }
        );
        if self.violations.is_empty() {
            let _ = writeln!(s, "invariants: all hold");
        } else {
            let _ = writeln!(s, "invariants VIOLATED ({}):", self.violations.len());
            for v in self.violations.iter().take(50) {
                let _ = writeln!(s, "  {v}");
            }
            if self.violations.len() > 50 {
                let _ = writeln!(s, "  … and {} more", self.violations.len() - 50);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_table_lists_conversations_and_envelopes_by_service() {
        let mut s = Summary {
            mode: "run".into(),
            ..Summary::default()
        };
        s.services.insert(
            "edilizia.permessi".into(),
            ServiceFigures {
                conversations_started: 3,
                conversations_finished: 3,
                ..ServiceFigures::default()
            },
        );
        s.details.insert(
            ENVELOPES_BY_SERVICE.into(),
            serde_json::json!({"edilizia.permessi": 27, "pagamenti": 9}),
        );
        let t = s.table();
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.contains(&vec!["edilizia.permessi", "27"]), "{t}");
        assert!(rows.contains(&vec!["pagamenti", "9"]), "{t}");
        assert!(!t.contains(ENVELOPES_BY_SERVICE), "{t}");
        assert!(t.contains("invariants: all hold"), "{t}");
    }
}
