//! The `snodo` command line: argument definitions and the commands behind them.

pub mod audit;
pub mod config;
pub mod envelope;
pub mod pki;
pub mod receipt;
pub mod serve;

use clap::{Parser, Subcommand};

/// snodo — the cooperation hub of a federation of public administrations.
#[derive(Debug, Parser)]
#[command(name = "snodo", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keys and certificates of the federation.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Sign and verify envelopes.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    /// Run the hub.
    Serve(serve::ServeArgs),
    /// Check a hub configuration file, print its JSON Schema.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Verify receipts the hub returns.
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Query and export the journal; verify an export, or a hub's data directory, offline.
    #[command(subcommand)]
    Audit(Box<audit::AuditCommand>),
}

/// Parses a duration such as `30s`, `15m`, `2h` or `7d`.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_duration(s: &str) -> Result<time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 15m, 2h, 7d: {e}"))?;
    time::Duration::try_from(d).map_err(|e| format!("`{s}`: {e}"))
}
