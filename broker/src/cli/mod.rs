//! The `snodo` command line: argument definitions and the commands behind them.

pub mod audit;
pub mod config;
pub mod envelope;
pub mod pki;
pub mod receipt;
pub mod serve;

use std::io::Write;

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

/// Standard output for the commands. When its reader has gone (`snodo … | head`), a write fails
/// with an error that [`reader_gone`] recognises, so the command ends quietly instead of
/// reporting, or panicking on, a broken pipe.
#[derive(Debug)]
pub struct Stdout(std::io::StdoutLock<'static>);

/// The marker inside the error of a write to a [`Stdout`] whose reader has gone.
#[derive(Debug, thiserror::Error)]
#[error("the reader of standard output has gone")]
pub struct ReaderGone;

impl Stdout {
    /// Locks standard output for the rest of the command.
    #[must_use]
    pub fn lock() -> Self {
        Self(std::io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_gone)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_gone)
    }
}

fn mark_gone(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, ReaderGone)
    } else {
        e
    }
}

/// Writes one line to standard output.
///
/// # Errors
/// When standard output cannot be written; see [`Stdout`].
pub fn print_line(line: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(Stdout::lock(), "{line}")
}

/// Whether a command failed only because the reader of its output went away: the chain holds
/// the `io::Error` that [`Stdout`] marked (its marker is inside it, not a source of its own).
#[must_use]
pub fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<ReaderGone>())
    })
}
