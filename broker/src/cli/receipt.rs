//! `snodo receipt`: verify, offline, a receipt the hub returned on accepting an envelope.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use snodo_envelopes::TrustStore;
use snodo_envelopes::header::format_time;
use uuid::Uuid;

use crate::journal::{Receipt, ReceiptError, VerifiedReceipt};

/// The `receipt` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt; print what it proves as JSON (exit 0) or the reason (exit 1).
    Verify {
        /// The federation CA certificate (PEM; a bundle is accepted).
        #[arg(long)]
        ca: PathBuf,
        /// The revocation list (PEM), if any.
        #[arg(long)]
        crl: Option<PathBuf>,
        /// The envelope as sent, to check against the receipt's digest. A final newline that
        /// is not part of the digest (as `snodo envelope sign` writes) is ignored.
        #[arg(long)]
        envelope: Option<PathBuf>,
        /// The receipt, JSON (`-` for stdin).
        receipt: PathBuf,
    },
}

/// Why `snodo receipt verify` refused a receipt: printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("receipt refused ({code}): {0}", code = .0.code())]
pub struct Refused(pub ReceiptError);

/// What a verified receipt proves, as `snodo receipt verify` prints it.
#[derive(Debug, Serialize)]
struct Summary {
    envelope_id: Uuid,
    sender: String,
    digest: String,
    index: u64,
    accepted_at: String,
    hub: String,
    checkpoint_size: u64,
    checkpoint_time: String,
    envelope_checked: bool,
}

impl From<&VerifiedReceipt> for Summary {
    fn from(v: &VerifiedReceipt) -> Self {
        let e = &v.entry;
        Summary {
            envelope_id: e.envelope_id.unwrap_or_default(),
            sender: e.sender.clone().unwrap_or_default(),
            digest: e.digest.clone(),
            index: e.index,
            accepted_at: format_time(e.at),
            hub: v.checkpoint.hub.clone(),
            checkpoint_size: v.checkpoint.checkpoint.size,
            checkpoint_time: format_time(v.checkpoint.checkpoint.time),
            envelope_checked: v.envelope_checked,
        }
    }
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Runs a `receipt` subcommand.
///
/// # Errors
/// [`Refused`] when the receipt does not verify; other errors for unreadable files.
pub fn run(cmd: ReceiptCommand) -> anyhow::Result<()> {
    match cmd {
        ReceiptCommand::Verify {
            ca,
            crl,
            envelope,
            receipt,
        } => {
            let trust = TrustStore::load(&ca, crl.as_deref())?;
            let envelope = envelope.as_deref().map(read_input).transpose()?;
            let receipt = Receipt::from_json(&read_input(&receipt)?).map_err(Refused)?;
            let verified = match (receipt.verify(&trust, envelope.as_deref()), &envelope) {
                (Err(ReceiptError::EnvelopeMismatch { .. }), Some(bytes))
                    if bytes.ends_with(b"\n") =>
                {
                    receipt.verify(&trust, bytes.strip_suffix(b"\n"))
                }
                (result, _) => result,
            }
            .map_err(Refused)?;
            super::print_line(serde_json::to_string_pretty(&Summary::from(&verified))?)?;
        }
    }
    Ok(())
}
