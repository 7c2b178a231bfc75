//! A federation for the broker's benchmarks and its load generator: a PKI, a hub configuration
//! with the per-entity rate limit lifted, and envelopes pre-signed by several senders to one
//! recipient. Shared by `benches/acceptance.rs` and `examples/load.rs`.
#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::json;
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Envelope, Format, Signer};

/// Every envelope goes to this entity's inbox.
pub const RECIPIENT: &str = "anpr:ministero";
/// The service and action every envelope uses (`comune:*` -> `anpr:ministero`).
pub const SERVICE: (&str, &str) = ("residenza.cambio", "richiesta");

/// A PKI and a hub configuration on disk.
#[derive(Debug)]
pub struct Federation {
    /// Holds `pki/`, `snodo.toml` and the hub's `data/`.
    pub dir: PathBuf,
    /// The sending municipalities, `comune:900001`…
    pub senders: Vec<EntityId>,
    /// RSA-2048 or P-256, for the CA's and the members' keys.
    pub key_type: KeyType,
}

impl Federation {
    /// Creates the PKI for `senders` municipalities and the recipient in `dir`, and a
    /// configuration listening on `listen` (port 0 picks a free one). A PKI already in `dir`
    /// (an earlier run's, with at least as many senders and the same key type) is kept, so a
    /// run can go on with the store another one left. The hub's key is of `hub_key_type`.
    ///
    /// The per-entity request rate (2000/s by default) is lifted: these runs measure what the
    /// hub can do, not the policy that protects it from one partner.
    ///
    /// # Errors
    /// When the PKI or the configuration cannot be written.
    pub fn create(
        dir: &Path,
        senders: usize,
        key_type: KeyType,
        hub_key_type: KeyType,
        listen: SocketAddr,
        plain_listen: Option<SocketAddr>,
    ) -> anyhow::Result<Federation> {
        let senders: Vec<EntityId> = (1..=senders)
            .map(|i| format!("comune:{:06}", 900_000 + i).parse())
            .collect::<Result<_, _>>()?;
        let mut entities = senders.clone();
        entities.push(RECIPIENT.parse()?);
        if !dir.join("pki").join(pki::CA_KEY).exists() {
            pki::init_with_hub(&dir.join("pki"), &entities, key_type, hub_key_type)
                .context("creating the PKI")?;
        }
        let mut config = format!(
            r#"[hub]
name = "hub"
listen = "{listen}"
data_dir = "data"
"#
        );
        if let Some(plain) = plain_listen {
            writeln!(config, "plain_listen = \"{plain}\"")?;
        }
        config.push_str(
            r#"
[tls]
ca = "pki/ca.crt"
cert = "pki/hub.crt"
key = "pki/hub.key"

[limits]
requests_per_second = 1000000
burst = 1000000
max_connections_per_entity = 1024

"#,
        );
        for e in &entities {
            writeln!(config, "[[entities]]\nid = \"{e}\"\n")?;
        }
        let (service, action) = SERVICE;
        write!(
            config,
            r#"[[services]]
name = "{service}"
[[services.actions]]
name = "{action}"
senders = ["comune:*"]
recipients = ["{RECIPIENT}"]
"#
        )?;
        std::fs::write(dir.join("snodo.toml"), config)?;
        Ok(Federation {
            dir: dir.to_owned(),
            senders,
            key_type,
        })
    }

    /// The configuration file.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("snodo.toml")
    }

    /// The directory of the PKI.
    #[must_use]
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The hub's data directory (the store).
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `entity`'s signer.
    ///
    /// # Errors
    /// When its key or certificate cannot be read.
    pub fn signer(&self, entity: &EntityId) -> anyhow::Result<Signer> {
        let stem = entity.file_stem();
        Ok(Signer::load(
            &self.pki().join(format!("{stem}.key")),
            &self.pki().join(format!("{stem}.crt")),
        )?)
    }

    /// A TLS client configuration presenting `entity`'s certificate, offering HTTP/2 and
    /// HTTP/1.1 or HTTP/1.1 only.
    ///
    /// # Errors
    /// When the PEM files cannot be read.
    pub fn client_tls(
        &self,
        entity: &EntityId,
        http1_only: bool,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let stem = entity.file_stem();
        let mut config = snodo_broker::tls::client_config(
            &self.pki().join("ca.crt"),
            &self.pki().join(format!("{stem}.crt")),
            &self.pki().join(format!("{stem}.key")),
        )?;
        if http1_only {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(config)
    }
}

/// Envelopes from `sender` to the recipient, signed in advance.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Index of the sender in [`Federation::senders`].
    pub sender: usize,
    /// The signed envelopes.
    pub envelopes: Vec<Bytes>,
}

/// A body of exactly `size` bytes as encoded (when `size` leaves room for the fixed fields).
fn body_json(size: usize) -> serde_json::Value {
    let base = json!({"codice_fiscale": "RSSMRA80A01L219X", "note": ""});
    let fixed = serde_json::to_vec(&base).map_or(0, |v| v.len());
    json!({"codice_fiscale": "RSSMRA80A01L219X", "note": "x".repeat(size.saturating_sub(fixed))})
}

fn body_xml(size: usize) -> String {
    let wrap = |note: &str| {
        format!(
            r#"<r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf><r:note>{note}</r:note></r:Richiesta>"#
        )
    };
    let fixed = wrap("").len();
    wrap(&"x".repeat(size.saturating_sub(fixed)))
}

/// One signed envelope from `sender` to the recipient with a fresh id and a body of
/// `body_size` bytes, in `format`.
///
/// # Errors
/// When the envelope cannot be built or signed.
pub fn sign_one(
    signer: &Signer,
    sender: &EntityId,
    format: Format,
    body_size: usize,
) -> anyhow::Result<Bytes> {
    let (service, action) = SERVICE;
    let b = Envelope::builder(
        sender.clone(),
        RECIPIENT.parse::<EntityId>()?,
        service,
        action,
    );
    let env = match format {
        Format::Json => b.json(body_json(body_size)),
        Format::Xml => b.xml(body_xml(body_size)),
    }
    .build()?;
    Ok(Bytes::from(snodo_envelopes::sign(&env, signer, format)?))
}

/// `per_sender` envelopes for each sender, signed on `threads` threads.
///
/// # Errors
/// When a key cannot be read or an envelope cannot be signed.
pub fn sign_all(
    fed: &Federation,
    per_sender: usize,
    format: Format,
    body_size: usize,
    threads: usize,
) -> anyhow::Result<Vec<Batch>> {
    let threads = threads.max(1);
    let mut out = Vec::with_capacity(fed.senders.len());
    for (i, sender) in fed.senders.iter().enumerate() {
        let signer = fed.signer(sender)?;
        let chunks: Vec<usize> = (0..threads)
            .map(|t| per_sender / threads + usize::from(t < per_sender % threads))
            .collect();
        let signed = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|&n| {
                    let signer = signer.clone();
                    s.spawn(move || {
                        (0..n)
                            .map(|_| sign_one(&signer, sender, format, body_size))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("signing thread"))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        out.push(Batch {
            sender: i,
            envelopes: signed.into_iter().flatten().collect(),
        });
    }
    Ok(out)
}
