//! The dev federation: a PKI and a configuration a newcomer can serve at once.
//!
//! `snodo serve --dev --data-dir D` calls [`ensure`] to create, once, `D/pki` (a CA, the hub and
//! six entities, P-256 keys) and `D/snodo.toml` (a few services of the Comune Facile plan), then
//! prints [`instructions`]: ready-to-paste `snodo` and `curl` command lines.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use snodo_envelopes::EntityId;
use snodo_envelopes::pki::{self, CertificateAuthority, KeyType, Subject, Validity};

use crate::config::{Config, FILE_NAME};

/// The directory of the dev PKI inside the data directory.
pub const PKI_DIR: &str = "pki";

/// The entities of the dev federation, with their human names.
pub const ENTITIES: [(&str, &str); 6] = [
    ("comune:001272", "Torino"),
    ("comune:004078", "Cuneo"),
    ("anpr:ministero", "Anagrafe nazionale (ANPR)"),
    ("pagopa:nodo", "Nodo dei pagamenti"),
    ("portale:comunefacile", "Portale Comune Facile"),
    ("prefettura:TO", "Prefettura di Torino"),
];

/// Why the dev federation could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A directory or file could not be created or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The PKI could not be created or completed.
    #[error("creating the dev PKI: {0}")]
    Pki(#[from] snodo_envelopes::Error),
}

/// Makes sure `data_dir` holds a dev federation and returns the path of its configuration.
///
/// When `data_dir/snodo.toml` exists it is left alone, whatever it holds. Otherwise the PKI in
/// `data_dir/pki` is created (or completed, if an earlier run was interrupted) and the
/// configuration is written last, atomically, so that its presence means the federation is whole.
///
/// # Errors
/// [`DevError::Io`] when a directory or file cannot be written; [`DevError::Pki`] when keys or
/// certificates cannot be created.
pub fn ensure(data_dir: &Path) -> Result<PathBuf, DevError> {
    let config_path = data_dir.join(FILE_NAME);
    if config_path.exists() {
        return Ok(config_path);
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DevError::Io { path, source }
    };
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let pki_dir = data_dir.join(PKI_DIR);
    let entities = ENTITIES
        .iter()
        .map(|(id, _)| id.parse::<EntityId>())
        .collect::<Result<Vec<_>, _>>()?;
    if pki_dir.join(pki::CA_KEY).exists() {
        complete_pki(&pki_dir, &entities)?;
    } else {
        pki::init(&pki_dir, &entities, KeyType::P256)?;
    }
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(config_text().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &config_path).map_err(io(&config_path))?;
    Ok(config_path)
}

/// Issues what an interrupted [`pki::init`] left out: the hub's and entities' keys and
/// certificates that are missing. A half-written pair is replaced.
fn complete_pki(dir: &Path, entities: &[EntityId]) -> Result<(), DevError> {
    let ca = CertificateAuthority::load(dir)?;
    let hub = Subject::Hub {
        name: "hub".to_owned(),
        dns: Vec::new(),
    };
    let subjects = std::iter::once((hub, "hub".to_owned())).chain(
        entities
            .iter()
            .map(|e| (Subject::Entity(e.clone()), e.file_stem())),
    );
    for (subject, stem) in subjects {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        if cert.exists() && key.exists() {
            continue;
        }
        for partial in [&cert, &key] {
            if partial.exists() {
                fs::remove_file(partial).map_err(|source| DevError::Io {
                    path: partial.clone(),
                    source,
                })?;
            }
        }
        pki::issue(dir, &ca, &subject, KeyType::P256, Validity::default())?;
    }
    Ok(())
}

/// The dev configuration, with comments for whoever opens it.
fn config_text() -> String {
    let mut entities = String::new();
    for (id, name) in ENTITIES {
        // Writing to a String cannot fail.
        let _ = write!(
            entities,
            "\n[[entities]]\nid = \"{id}\"\nname = \"{name}\"\n"
        );
    }
    format!(
        r#"# A dev federation created by `snodo serve --dev`. Check it with `snodo config check`;
# `snodo config schema` prints every field with its default.

[hub]
name = "hub"                # the hub certificate's SAN is urn:snodo:hub:hub
listen = "127.0.0.1:8443"
# plain_listen = "127.0.0.1:8080"   # /healthz, /readyz and /metrics without TLS
data_dir = "data"           # relative paths are relative to this file

[tls]
ca = "{PKI_DIR}/ca.crt"
cert = "{PKI_DIR}/hub.crt"
key = "{PKI_DIR}/hub.key"
# crl = "{PKI_DIR}/ca.crl"   # after `snodo pki revoke --dir {PKI_DIR} ...`

[limits]
max_envelope_bytes = 10485760
requests_per_second = 2000
burst = 4000

[delivery]
retry_initial = "500ms"
retry_max = "30s"
default_deadline = "1h"

# The members of the federation; each has pki/<class>-<code>.crt and .key.
# An entity with `endpoint = "https://..."` gets its messages pushed; the others pull.
{entities}
# Change of residence: the comune or the portal asks the registry, the registry answers and
# informs the comuni concerned.
[[services]]
name = "residenza.cambio"
deadline = "2days"

[[services.actions]]
name = "richiesta"
profile = "request"
senders = ["comune:*", "portale:comunefacile"]
recipients = ["anpr:ministero"]

[[services.actions]]
name = "esito"
profile = "response"
senders = ["anpr:ministero"]
recipients = ["comune:*", "portale:comunefacile"]

[[services.actions]]
name = "comunicazione"
profile = "oneway"
senders = ["anpr:ministero"]
recipients = ["comune:*"]

# Registry feed: numbered batches of registry variations from each comune.
[[services]]
name = "anagrafe.variazioni"

[[services.actions]]
name = "lotto"
profile = "oneway"
senders = ["comune:*"]
recipients = ["anpr:ministero"]

# Property tax: the portal asks a comune for a tax position, the comune has the payment
# notice issued by the payment provider.
[[services]]
name = "tributi.imu"
deadline = "1day"

[[services.actions]]
name = "posizione"
profile = "request"
senders = ["portale:comunefacile"]
recipients = ["comune:*"]

[[services.actions]]
name = "esito"
profile = "response"
senders = ["comune:*"]
recipients = ["portale:comunefacile"]

[[services.actions]]
name = "avviso"
profile = "request"
senders = ["comune:*"]
recipients = ["pagopa:nodo"]

[[services.actions]]
name = "avviso-esito"
profile = "response"
senders = ["pagopa:nodo"]
recipients = ["comune:*"]

# Roads and mobility news: comuni publish events, subscribers receive each one.
[[services]]
name = "mobilita.viabilita"
deadline = "6h"

[[services.actions]]
name = "evento"
profile = "event"
senders = ["comune:*"]

[[subscriptions]]
service = "mobilita.viabilita"
action = "evento"
subscribers = ["portale:comunefacile", "prefettura:TO"]

# Auditors read the whole journal with a certificate whose SAN is urn:snodo:auditor:<name>.
[[auditors]]
name = "revisore"
"#
    )
}

/// What `snodo serve --dev` prints: where the federation lives and the command lines that
/// sign, submit, read and acknowledge a message, with absolute paths.
#[must_use]
pub fn instructions(config_path: &Path, config: &Config) -> String {
    let config_path = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
    let pki_dir = config.tls.ca.parent().unwrap_or(Path::new(".")).to_owned();
    let host = match config.hub.listen.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let base = format!("https://{host}:{}", config.hub.listen.port());
    let file = |e: &str, ext: &str| {
        let stem = e
            .parse::<EntityId>()
            .map_or_else(|_| e.replace(':', "-"), |e| e.file_stem());
        quote(&pki_dir.join(format!("{stem}.{ext}")))
    };
    let curl = |e: &str| {
        format!(
            "curl --cacert {} --cert {} --key {}",
            quote(&config.tls.ca),
            file(e, "crt"),
            file(e, "key")
        )
    };
    let (sender, recipient) = ("comune:001272", "anpr:ministero");
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!("snodo dev federation: {}", config.summary()));
    line(&format!("  configuration: {}", config_path.display()));
    line(&format!(
        "  PKI:           {} (CA, hub, one key and certificate per entity)",
        pki_dir.display()
    ));
    line(&format!(
        "  data:          {}",
        config.hub.data_dir.display()
    ));
    line(&format!("  listening on:  {base}"));
    line("");
    line(&format!(
        "Sign a change-of-residence request from {sender} (Torino) to {recipient}:"
    ));
    line("");
    line(r#"  echo '{"codice_fiscale": "RSSMRA85T10A562S"}' > body.json"#);
    line(&format!(
        "  snodo envelope sign --key {} --cert {} --from {sender} --to {recipient} \\\n      --service residenza.cambio --action richiesta --profile request \\\n      --body body.json --format json > e.json",
        file(sender, "key"),
        file(sender, "crt")
    ));
    line("");
    line(&format!("Submit it as {sender}:"));
    line("");
    line(&format!(
        "  {} \\\n      -H 'Content-Type: application/json' --data-binary @e.json {base}/v1/envelopes",
        curl(sender)
    ));
    line("");
    line(&format!(
        "Read {recipient}'s inbox, leasing up to 10 messages for 30 seconds:"
    ));
    line("");
    line(&format!(
        "  {} \\\n      '{base}/v1/inbox?limit=10&lease=30s'",
        curl(recipient)
    ));
    line("");
    line("Acknowledge them with the lease token from that answer:");
    line("");
    line(&format!(
        "  {} \\\n      -H 'Content-Type: application/json' -d '{{\"lease\": \"<token>\"}}' {base}/v1/inbox/ack",
        curl(recipient)
    ));
    line("");
    line("The API description:");
    line("");
    line(&format!("  {} {base}/v1/openapi.json", curl(sender)));
    line("");
    line(&format!(
        "Other senders: any key and certificate in {}; the services and who may use them are in the configuration.",
        pki_dir.display()
    ));
    out
}

/// A path as one shell word: bare when it is plain, in single quotes otherwise.
fn quote(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+@%,".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use snodo_envelopes::{Profile, Recipient};

    #[test]
    fn ensure_creates_a_sound_federation_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fed");
        let path = ensure(&dir).unwrap();
        assert_eq!(path, dir.join("snodo.toml"));
        let config = Config::load(&path).unwrap();
        config.load_tls().unwrap();
        assert_eq!(config.entities.len(), ENTITIES.len());
        for (id, _) in ENTITIES {
            let e: EntityId = id.parse().unwrap();
            assert!(
                dir.join("pki")
                    .join(format!("{}.key", e.file_stem()))
                    .is_file(),
                "{id}"
            );
        }
        let before = fs::read(&path).unwrap();
        let ca = fs::read(dir.join("pki/ca.crt")).unwrap();
        assert_eq!(ensure(&dir).unwrap(), path);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read(dir.join("pki/ca.crt")).unwrap(), ca);
    }

    #[test]
    fn an_interrupted_pki_is_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ensure(dir).unwrap();
        fs::remove_file(dir.join(FILE_NAME)).unwrap();
        fs::remove_file(dir.join("pki/pagopa-nodo.crt")).unwrap();
        fs::remove_file(dir.join("pki/hub.key")).unwrap();
        let path = ensure(dir).unwrap();
        Config::load(&path).unwrap().load_tls().unwrap();
        assert!(dir.join("pki/pagopa-nodo.crt").is_file());
    }

    #[test]
    fn the_dev_services_allow_what_the_instructions_show() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config::load(&ensure(tmp.path()).unwrap()).unwrap();
        let r = Registry::from_config(&config);
        let id = |s: &str| s.parse::<EntityId>().unwrap();
        let to = |s: &str| Recipient::parse(s).unwrap();
        r.authorize(
            &id("comune:001272"),
            &to("anpr:ministero"),
            "residenza.cambio",
            "richiesta",
            Profile::Request,
        )
        .unwrap();
        r.authorize(
            &id("anpr:ministero"),
            &to("portale:comunefacile"),
            "residenza.cambio",
            "esito",
            Profile::Response,
        )
        .unwrap();
        r.authorize(
            &id("portale:comunefacile"),
            &to("comune:004078"),
            "tributi.imu",
            "posizione",
            Profile::Request,
        )
        .unwrap();
        r.authorize(
            &id("comune:004078"),
            &to("*"),
            "mobilita.viabilita",
            "evento",
            Profile::Event,
        )
        .unwrap();
        assert_eq!(r.subscribers("mobilita.viabilita", "evento").len(), 2);
        assert!(r.is_auditor("revisore"));
    }

    #[test]
    fn instructions_give_absolute_paths_and_every_command() {
        let tmp = tempfile::tempdir().unwrap();
        let path = ensure(tmp.path()).unwrap();
        let config = Config::load(&path).unwrap();
        let text = instructions(&path, &config);
        let pki = tmp.path().join("pki");
        for needle in [
            format!("--cacert {}", pki.join("ca.crt").display()),
            format!("--cert {}", pki.join("comune-001272.crt").display()),
            format!("--key {}", pki.join("anpr-ministero.key").display()),
            "snodo envelope sign".to_owned(),
            "--data-binary @e.json https://localhost:8443/v1/envelopes".to_owned(),
            "'https://localhost:8443/v1/inbox?limit=10&lease=30s'".to_owned(),
            r#"-d '{"lease": "<token>"}' https://localhost:8443/v1/inbox/ack"#.to_owned(),
            "https://localhost:8443/v1/openapi.json".to_owned(),
            path.display().to_string(),
        ] {
            assert!(text.contains(&needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn paths_are_quoted_only_when_needed() {
        assert_eq!(quote(Path::new("/tmp/a-b/c.crt")), "/tmp/a-b/c.crt");
        assert_eq!(quote(Path::new("/tmp/my dir/c.crt")), "'/tmp/my dir/c.crt'");
        assert_eq!(quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
