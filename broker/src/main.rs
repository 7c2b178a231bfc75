//! `snodo`: parses the command line and runs the command; all logic lives in the library.

use clap::Parser as _;
use snodo_broker::cli::{Cli, Command, envelope, pki, receipt};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pki(cmd) => pki::run(cmd),
        Command::Envelope(cmd) => envelope::run(cmd),
        Command::Receipt(cmd) => receipt::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snodo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
