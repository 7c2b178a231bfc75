//! The options every `snodo-sim` command shares: the federation and where its hub runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use snodo_envelopes::pki::KeyType;

use crate::hub::Placement;

/// The federation and its hub.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Where the federation's PKI is cached and runs keep their data.
    #[arg(long, default_value = "snodo-sim-data", env = "SNODO_SIM_DATA")]
    pub data_dir: PathBuf,
    /// Only the N most populous comuni (all 1,181 by default).
    #[arg(long)]
    pub comuni: Option<usize>,
    /// The list of comuni.
    #[arg(long, default_value_os_t = crate::comuni::default_path())]
    pub csv: PathBuf,
    /// Key type of the whole federation: `rsa2048` or `p256`.
    #[arg(long, default_value = "rsa2048")]
    pub key_type: KeyType,
    /// `embedded` (in this process), `spawn` (`snodo serve` children) or the https:// URL of
    /// a hub serving this federation.
    #[arg(long, default_value = "embedded")]
    pub hub: Placement,
    /// Queue through RabbitMQ at this URL (`amqp://…`) instead of the hub's store;
    /// `private` starts a RabbitMQ node of the run's own (which `amqp-restart` may restart).
    #[arg(long)]
    pub transport: Option<String>,
    /// Hub nodes sharing RabbitMQ (needs --transport).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// The `snodo` binary for `--hub spawn` (default: beside this program).
    #[arg(long)]
    pub snodo: Option<PathBuf>,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the summary and its plots (throughput, latency) to this HTML page.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep the run's hub data and journal export (in the data directory) instead of
    /// removing them.
    #[arg(long)]
    pub keep: bool,
}

/// Parses `30s`, `2m`, `1h 30m`.
///
/// # Errors
/// A message saying what a duration looks like.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (say 30s, 2m, 1h)"))
}
