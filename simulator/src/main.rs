//! The `snodo-sim` command: `bench` (pure load) over the simulated Piedmont federation.

use std::io::Write as _;

use clap::{Parser, Subcommand};
use snodo_simulator::bench::{self, BenchArgs};
use snodo_simulator::run::{self, RunArgs};

// The load generator shares the machine's cores with the hub; glibc's allocator took a fifth
// of its time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Piedmont federation in motion.
#[derive(Debug, Parser)]
#[command(name = "snodo-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The simulation: every body at work, citizens' conversations through every service,
    /// simulated time running fast, and the invariants checked at the end.
    Run(RunArgs),
    /// Pure load: pre-signed envelopes at the highest rate the hub sustains, then the
    /// invariants (every receipted envelope delivered once, the journal verified).
    Bench(BenchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SNODO_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (summary, json, report) = match cli.command {
        Command::Run(args) => (run::run(&args).await, args.common.json, args.common.report),
        Command::Bench(args) => (
            bench::run(&args).await,
            args.common.json,
            args.common.report,
        ),
    };
    match summary {
        Ok(s) => {
            if let Some(path) = report
                && let Err(e) = std::fs::write(&path, snodo_simulator::report::html(&s, &s.plots))
            {
                eprintln!("snodo-sim: writing {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
            let text = if json {
                match serde_json::to_string_pretty(&s) {
                    Ok(text) => text + "\n",
                    Err(e) => {
                        eprintln!("snodo-sim: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            } else {
                s.table()
            };
            // A reader that has gone (`snodo-sim … | head`) has what it wanted.
            if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                eprintln!("snodo-sim: writing the summary: {e}");
                return std::process::ExitCode::FAILURE;
            }
            if s.ok() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("snodo-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
