//! `snodo audit`: query the hub's journal, export it into a bundle, and verify a bundle (or a
//! hub's data directory) offline.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::audit::client::{self, OutputFormat};
use crate::audit::{AuditError, Filters, JournalClient, Report, bundle, datadir};

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Query the hub's journal: the entries the certificate may see (an auditor's: all).
    Query {
        /// The hub to ask.
        #[command(flatten)]
        hub: HubArgs,
        /// Which entries.
        #[command(flatten)]
        filters: FilterArgs,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// How to print them: an aligned table, one JSON entry per line (its canonical
        /// bytes), or CSV with a header line.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Export the journal into a self-contained bundle that `snodo audit verify` checks
    /// offline: without filters, every entry with every checkpoint (the verifier rebuilds the
    /// tree); with filters, the matching entries, each with its inclusion proof under the
    /// latest checkpoint. Raw envelopes of the acceptances and the CA come along.
    Export {
        /// The hub to export from.
        #[command(flatten)]
        hub: OptionalHubArgs,
        /// Export from a hub's data directory instead (offline; the hub must be stopped).
        #[arg(long, conflicts_with_all = ["hub", "cert", "key"], required_unless_present = "hub")]
        data_dir: Option<PathBuf>,
        /// Which entries (export from a hub only).
        #[command(flatten)]
        filters: FilterArgs,
        /// Also prove that the journal of this earlier checkpoint size (one you verified
        /// before) is a prefix of the one exported: a consistency proof from it.
        #[arg(long, conflicts_with = "data_dir")]
        since: Option<u64>,
        /// Where to write the bundle (written as FILE.partial, renamed when complete).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle offline (or, with --data-dir, a hub's journal on disk): every entry's
    /// leaf hash, every inclusion and consistency, every checkpoint's signature, every
    /// envelope's signature. Prints what was verified and exits 0, or names the first bad
    /// entry and why and exits 1.
    Verify {
        /// The bundle.
        #[arg(required_unless_present = "data_dir", conflicts_with = "data_dir")]
        file: Option<PathBuf>,
        /// Verify the journal in this hub data directory (or its `store` directory) instead;
        /// the hub must be stopped. Needs --ca.
        #[arg(long, requires = "ca")]
        data_dir: Option<PathBuf>,
        /// The federation CA (PEM) to trust. Without it, a bundle's own CA is used and its
        /// fingerprint printed, to compare with the federation's published one.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The CA's revocation list (PEM): signatures made after a certificate's revocation
        /// fail; earlier ones are listed.
        #[arg(long)]
        crl: Option<PathBuf>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach the hub.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// The hub's base URL: `https://hub.example:8443`.
    #[arg(long)]
    pub hub: String,
    /// The client certificate (PEM): an auditor's sees the whole journal.
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The federation CA (PEM) that the hub's certificate chains to, also embedded in
    /// exports (default: `ca.crt` beside the certificate).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Read the journal of this hub node (one of the hub's `[[peers]]`) through the hub.
    #[arg(long)]
    pub node: Option<String>,
}

/// How to reach the hub, when a data directory may stand in for it.
#[derive(Debug, Args)]
pub struct OptionalHubArgs {
    /// The hub's base URL: `https://hub.example:8443`.
    #[arg(long, requires_all = ["cert", "key"])]
    pub hub: Option<String>,
    /// The client certificate (PEM): an auditor's sees the whole journal.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The federation CA (PEM), embedded in the bundle (default: `ca.crt` beside the
    /// certificate; required with --data-dir).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Export the journal of this hub node (the hub itself or one of its `[[peers]]`)
    /// through the hub; repeated, one bundle file holds each node's journal in turn.
    #[arg(long = "node", conflicts_with = "data_dir")]
    pub nodes: Vec<String>,
}

/// The journal query's filters.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Entries the entity is party to (sender, recipient or actor).
    #[arg(long)]
    pub entity: Option<String>,
    /// Entries about envelopes from this sender.
    #[arg(long)]
    pub sender: Option<String>,
    /// Entries about envelopes to this recipient.
    #[arg(long)]
    pub recipient: Option<String>,
    /// This service (`residenza.cambio`).
    #[arg(long)]
    pub service: Option<String>,
    /// This action (`richiesta`).
    #[arg(long)]
    pub action: Option<String>,
    /// This conversation.
    #[arg(long)]
    pub conversation: Option<String>,
    /// This envelope.
    #[arg(long)]
    pub envelope_id: Option<Uuid>,
    /// This kind of event: received, refused, accepted, delivered, acknowledged, answered,
    /// expired, dead_lettered.
    #[arg(long)]
    pub kind: Option<String>,
    /// `ok`, `refused`, or a refusal code.
    #[arg(long)]
    pub status: Option<String>,
    /// From this time on (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// Entries after this index.
    #[arg(long)]
    pub after: Option<u64>,
}

impl From<FilterArgs> for Filters {
    fn from(a: FilterArgs) -> Self {
        Filters {
            entity: a.entity,
            sender: a.sender,
            recipient: a.recipient,
            service: a.service,
            action: a.action,
            conversation: a.conversation,
            envelope_id: a.envelope_id,
            kind: a.kind,
            status: a.status,
            from: a.from,
            to: a.to,
            after: a.after,
        }
    }
}

/// How `query` prints entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One entry per line: its canonical JSON bytes.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Why `snodo audit verify` refused the evidence: printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("audit verify failed: {0}")]
pub struct VerifyFailed(pub AuditError);

fn default_ca(cert: &Path) -> PathBuf {
    cert.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(snodo_envelopes::pki::CA_CERT)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Prints one report as before, several (a bundle of several nodes) one after the other, or
/// as `{"nodes": [...]}` in JSON.
fn print_reports(reports: &[Report], json: bool) -> anyhow::Result<()> {
    let mut out = super::Stdout::lock();
    match (reports, json) {
        ([one], true) => serde_json::to_writer_pretty(&mut out, one)?,
        (many, true) => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "nodes": many }))?
        }
        (many, false) => {
            for (i, r) in many.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                write!(out, "{r}")?;
            }
            return Ok(());
        }
    }
    writeln!(out)?;
    Ok(())
}

/// Runs an `audit` subcommand.
///
/// # Errors
/// [`VerifyFailed`] when the evidence does not verify (or cannot be read); other errors when
/// the hub, a file or an argument is unusable.
pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify {
            file,
            data_dir,
            ca,
            crl,
            json,
        } => {
            let reports = match (file, data_dir, ca) {
                (_, Some(dir), Some(ca)) => {
                    datadir::verify(&dir, &ca, crl.as_deref()).map(|r| vec![r])
                }
                (Some(file), None, ca) => {
                    bundle::verify_file_nodes(&file, ca.as_deref(), crl.as_deref())
                }
                _ => {
                    return Err(
                        AuditError::Usage("give a bundle, or --data-dir with --ca".into()).into(),
                    );
                }
            }
            .map_err(VerifyFailed)?;
            print_reports(&reports, json)
        }
        AuditCommand::Export {
            hub,
            data_dir,
            filters,
            since,
            out,
        } => {
            let filters = Filters::from(filters);
            if let Some(dir) = data_dir {
                if !filters.is_empty() {
                    return Err(AuditError::Usage(
                        "an export from a data directory is complete: filters need a hub".into(),
                    )
                    .into());
                }
                let ca = hub
                    .ca
                    .context("--data-dir needs --ca: the CA to embed in the bundle")?;
                let counts = datadir::export(&dir, &ca, &out)?;
                eprintln!(
                    "Wrote {}: {} entries, {} envelopes, {} checkpoints.",
                    out.display(),
                    counts.entries,
                    counts.envelopes,
                    counts.checkpoints
                );
                return Ok(());
            }
            let (Some(url), Some(cert), Some(key)) = (hub.hub, hub.cert, hub.key) else {
                return Err(AuditError::Usage(
                    "give --hub, --cert and --key, or --data-dir".into(),
                )
                .into());
            };
            let ca = hub.ca.unwrap_or_else(|| default_ca(&cert));
            let connection = JournalClient::new(&url, &ca, &cert, &key)?;
            let rt = runtime()?;
            match hub.nodes.as_slice() {
                [] | [_] => {
                    let connection = match hub.nodes.first() {
                        Some(n) => connection.for_node(n),
                        None => connection,
                    };
                    let counts = rt.block_on(client::export(&connection, &filters, since, &out))?;
                    eprintln!(
                        "Wrote {}: {} entries, {} envelopes, {} checkpoints.",
                        out.display(),
                        counts.entries,
                        counts.envelopes,
                        counts.checkpoints
                    );
                }
                nodes => {
                    let counts = rt.block_on(client::export_nodes(
                        &connection,
                        nodes,
                        &filters,
                        since,
                        &out,
                    ))?;
                    for (node, c) in nodes.iter().zip(counts) {
                        eprintln!(
                            "Node {node}: {} entries, {} envelopes, {} checkpoints.",
                            c.entries, c.envelopes, c.checkpoints
                        );
                    }
                    eprintln!("Wrote {}.", out.display());
                }
            }
            Ok(())
        }
        AuditCommand::Query {
            hub,
            filters,
            limit,
            format,
        } => {
            let ca = hub.ca.unwrap_or_else(|| default_ca(&hub.cert));
            let mut connection = JournalClient::new(&hub.hub, &ca, &hub.cert, &hub.key)?;
            if let Some(n) = &hub.node {
                connection = connection.for_node(n);
            }
            let format = match format {
                Format::Table => OutputFormat::Table,
                Format::Json => OutputFormat::Json,
                Format::Csv => OutputFormat::Csv,
            };
            let stdout = super::Stdout::lock();
            runtime()?.block_on(client::query(
                &connection,
                &Filters::from(filters),
                limit,
                format,
                stdout,
            ))?;
            Ok(())
        }
    }
}
