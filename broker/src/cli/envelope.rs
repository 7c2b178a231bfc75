//! `snodo envelope`: sign an envelope from the command line, verify one.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use snodo_envelopes::{
    Body, EntityId, Envelope, Format, Identity, Limits, Profile, Recipient, Signer, TrustStore,
    Verifier,
};
use uuid::Uuid;

/// The `envelope` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvelopeCommand {
    /// Build and sign an envelope; write it to stdout.
    Sign {
        /// The sender's private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The sender's certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The sender, `class:code`; must be the entity the certificate names.
        #[arg(long)]
        from: EntityId,
        /// The recipient, `class:code`, or `*` for an event.
        #[arg(long, value_parser = parse_recipient)]
        to: Recipient,
        /// The service, such as `residenza.cambio`.
        #[arg(long)]
        service: String,
        /// The action, such as `richiesta`.
        #[arg(long)]
        action: String,
        /// The body: a file holding JSON, or an XML fragment (`-` for stdin).
        #[arg(long)]
        body: PathBuf,
        /// The encoding of the signed envelope.
        #[arg(long, value_parser = parse_format)]
        format: Format,
        /// Join this conversation (default: a new one, named after the envelope id).
        #[arg(long)]
        conversation: Option<String>,
        /// The id of the envelope this one answers.
        #[arg(long)]
        in_reply_to: Option<Uuid>,
        /// oneway, request, response or event (default: event for `*`, response with
        /// --in-reply-to, otherwise oneway).
        #[arg(long, value_parser = parse_profile)]
        profile: Option<Profile>,
        /// Expire this long after creation: 30s, 15m, 2h, 7d.
        #[arg(long, value_parser = super::parse_duration)]
        expires_in: Option<time::Duration>,
        /// Per-conversation sequence number.
        #[arg(long)]
        sequence: Option<u64>,
    },
    /// Verify a signed envelope; print its header as JSON (exit 0) or the reason (exit 1).
    Verify {
        /// The federation CA certificate (PEM; a bundle is accepted).
        #[arg(long)]
        ca: PathBuf,
        /// The revocation list (PEM), if any.
        #[arg(long)]
        crl: Option<PathBuf>,
        /// Largest accepted envelope, in bytes.
        #[arg(long, default_value_t = snodo_envelopes::limits::DEFAULT_MAX_BYTES)]
        max_bytes: usize,
        /// The signed envelope (`-` for stdin).
        file: PathBuf,
    },
}

fn parse_recipient(s: &str) -> Result<Recipient, String> {
    Recipient::parse(s).map_err(|e| e.to_string())
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|_| format!("`{s}` is not xml or json"))
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse().map_err(|e: snodo_envelopes::Error| e.to_string())
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Why `snodo envelope verify` refused an envelope: printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("envelope refused ({code}): {0}", code = .0.code())]
pub struct Refused(pub snodo_envelopes::Error);

/// Runs an `envelope` subcommand.
///
/// # Errors
/// [`Refused`] when verification fails; other errors for unreadable files or bad arguments.
pub fn run(cmd: EnvelopeCommand) -> anyhow::Result<()> {
    match cmd {
        EnvelopeCommand::Sign {
            key,
            cert,
            from,
            to,
            service,
            action,
            body,
            format,
            conversation,
            in_reply_to,
            profile,
            expires_in,
            sequence,
        } => {
            let signer = Signer::load(&key, &cert)?;
            if signer.identity != Identity::Entity(from.clone()) {
                bail!(
                    "the certificate names {}, not --from {from}",
                    signer.identity
                );
            }
            let raw = read_input(&body)?;
            let text = String::from_utf8(raw).context("the body is not UTF-8")?;
            let body = if text.trim_start().starts_with('<') {
                Body::Xml(text.trim().to_owned())
            } else {
                Body::Json(
                    serde_json::from_str(&text)
                        .context("the body is neither an XML fragment nor JSON")?,
                )
            };
            let mut b = Envelope::builder(from, to, service, action).body(body);
            if let Some(c) = conversation {
                b = b.conversation(c);
            }
            if let Some(r) = in_reply_to {
                b = b.in_reply_to(r);
            }
            if let Some(p) = profile {
                b = b.profile(p);
            }
            if let Some(d) = expires_in {
                b = b.expires_in(d);
            }
            if let Some(n) = sequence {
                b = b.sequence(n);
            }
            let envelope = b.build()?;
            let signed = snodo_envelopes::sign(&envelope, &signer, format)?;
            let mut out = super::Stdout::lock();
            out.write_all(&signed)?;
            out.write_all(b"\n")?;
        }
        EnvelopeCommand::Verify {
            ca,
            crl,
            max_bytes,
            file,
        } => {
            let trust = TrustStore::load(&ca, crl.as_deref())?;
            let limits = Limits {
                max_bytes,
                ..Limits::default()
            };
            let input = read_input(&file)?;
            let verified = Verifier::new(Arc::new(trust), limits)
                .verify(trim_newline(&input))
                .map_err(Refused)?;
            super::print_line(serde_json::to_string_pretty(&verified.envelope.header)?)?;
        }
    }
    Ok(())
}

/// Files written by `sign` end with a newline that is not part of the signed bytes.
fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}
