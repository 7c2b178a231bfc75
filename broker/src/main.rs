//! `snodo`: parses the command line and runs the command; all logic lives in the library.

use clap::Parser as _;
use snodo_broker::cli::{Cli, Command, audit, config, envelope, pki, receipt, serve};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pki(cmd) => pki::run(cmd),
        Command::Envelope(cmd) => envelope::run(cmd),
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("SNODO_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(serve::run(args)))
        }
        Command::Config(cmd) => config::run(cmd),
        Command::Receipt(cmd) => receipt::run(cmd),
        Command::Audit(cmd) => audit::run(*cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `snodo … | head`: the reader has what it wanted.
        Err(e) if snodo_broker::cli::reader_gone(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snodo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
