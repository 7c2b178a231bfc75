//! `snodo config`: check a configuration file, print the JSON Schema of the format.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Config;

/// The `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and the TLS files it names; print a summary (exit 0) or every
    /// problem with the field it is in (exit 1).
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
}

/// Runs a `config` subcommand.
///
/// # Errors
/// A [`crate::config::ConfigError`] naming the file and the bad fields when the configuration
/// or its TLS files are refused.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file } => {
            let config = Config::load(&file)?;
            let tls = config
                .load_tls()
                .with_context(|| file.display().to_string())?;
            super::print_line(format_args!(
                "ok: {}; hub `{}` on {}, certificate for {}",
                config.summary(),
                config.hub.name,
                config.hub.listen,
                tls.signer.identity
            ))?;
        }
        ConfigCommand::Schema => {
            super::print_line(serde_json::to_string_pretty(&Config::json_schema())?)?;
        }
    }
    Ok(())
}
