//! `snodo pki`: create the federation's CA, issue entity certificates, revoke them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use snodo_envelopes::EntityId;
use snodo_envelopes::pki::{self, CertificateAuthority, KeyType, Subject, Validity};

/// The `pki` subcommands.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA, the hub's key and certificate, and one per entity, in a new directory.
    Init {
        /// Directory to create the files in (`ca.crt`, `ca.key`, `hub.*`, `<class>-<code>.*`).
        #[arg(long)]
        dir: PathBuf,
        /// Entities to issue, comma-separated: `comune:001272,anpr:ministero`.
        #[arg(long, value_delimiter = ',', required = true)]
        entities: Vec<EntityId>,
        /// Key type of the CA's and the entities' keys.
        #[arg(long, default_value = "rsa2048", value_parser = parse_key_type)]
        key_type: KeyType,
        /// Key type of the hub's key, which signs a checkpoint at every group commit (P-256
        /// signs about thirty times faster than RSA-2048).
        #[arg(long, default_value = "p256", value_parser = parse_key_type)]
        hub_key_type: KeyType,
    },
    /// Issue a key and certificate for one more entity, signed by the directory's CA.
    Issue {
        /// The PKI directory (holds `ca.crt` and `ca.key`).
        #[arg(long)]
        dir: PathBuf,
        /// The entity: `class:code`.
        #[arg(long, required_unless_present = "auditor", conflicts_with = "auditor")]
        entity: Option<EntityId>,
        /// Or an auditor's name: a certificate `urn:snodo:auditor:<name>` (list it in the hub's
        /// `[[auditors]]`), written as `auditor-<name>.crt`/`.key`.
        #[arg(long)]
        auditor: Option<String>,
        /// Key type.
        #[arg(long, default_value = "rsa2048", value_parser = parse_key_type)]
        key_type: KeyType,
        /// Validity in days from now.
        #[arg(long, default_value_t = pki::DEFAULT_VALIDITY_DAYS)]
        days: u32,
    },
    /// Add a certificate to the revocation list (`ca.crl`) that verifiers read.
    Revoke {
        /// The PKI directory (holds `ca.crt` and `ca.key`).
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke.
        #[arg(long, conflicts_with = "entity", required_unless_present = "entity")]
        cert: Option<PathBuf>,
        /// The entity whose certificate in the directory to revoke.
        #[arg(long)]
        entity: Option<EntityId>,
    },
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse().map_err(|e: snodo_envelopes::Error| e.to_string())
}

/// Runs a `pki` subcommand, reporting what it wrote on stdout.
///
/// # Errors
/// When a file cannot be read or written, or the CA is missing.
pub fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init {
            dir,
            entities,
            key_type,
            hub_key_type,
        } => {
            let issued = pki::init_with_hub(&dir, &entities, key_type, hub_key_type)?;
            super::print_line(format_args!("CA:  {}", dir.join(pki::CA_CERT).display()))?;
            for i in issued {
                super::print_line(format_args!(
                    "key: {}  cert: {}",
                    i.key_path.display(),
                    i.cert_path.display()
                ))?;
            }
        }
        PkiCommand::Issue {
            dir,
            entity,
            auditor,
            key_type,
            days,
        } => {
            let subject = match (entity, auditor) {
                (Some(e), _) => Subject::Entity(e),
                (None, Some(a)) => {
                    let ok = !a.is_empty()
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    anyhow::ensure!(ok, "auditor name `{a}` must be letters, digits, '-' or '_'");
                    Subject::Auditor(a)
                }
                (None, None) => anyhow::bail!("give --entity or --auditor"),
            };
            let ca = CertificateAuthority::load(&dir)
                .with_context(|| format!("loading the CA in {}", dir.display()))?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let validity = Validity {
                not_before: now - 300,
                not_after: now + i64::from(days) * 86_400,
            };
            let i = pki::issue(&dir, &ca, &subject, key_type, validity)?;
            super::print_line(format_args!(
                "key: {}  cert: {}",
                i.key_path.display(),
                i.cert_path.display()
            ))?;
        }
        PkiCommand::Revoke { dir, cert, entity } => {
            let cert = match (cert, entity) {
                (Some(c), _) => c,
                (None, Some(e)) => cert_of(&dir, &e),
                (None, None) => anyhow::bail!("give --cert or --entity"),
            };
            let crl = pki::revoke(&dir, &cert)?;
            super::print_line(format_args!(
                "revoked {}; revocation list: {}",
                cert.display(),
                crl.display()
            ))?;
        }
    }
    Ok(())
}

fn cert_of(dir: &Path, e: &EntityId) -> PathBuf {
    dir.join(format!("{}.crt", e.file_stem()))
}
