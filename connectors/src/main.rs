//! `snodo-connector`: runs one entity's connectors against a hub.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use snodo_connectors::config::Config;

/// Runs one entity's connectors against a snodo hub.
#[derive(Debug, Parser)]
#[command(name = "snodo-connector", version)]
struct Args {
    /// The configuration file (TOML).
    #[arg(long, required_unless_present = "schema")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the configuration's JSON Schema and exit.
    #[arg(long)]
    schema: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&Config::schema()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let Some(path) = args.config else {
        eprintln!("--config FILE is required");
        return ExitCode::FAILURE;
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("snodo-connector: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("snodo-connector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snodo-connector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop.send(true);
    });
    snodo_connectors::connector::run(config, shutdown, None).await
}
