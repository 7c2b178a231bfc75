//! The configuration of `snodo-connector`: one entity, its hub, how it receives, and the
//! adapter to its municipal system — one serde tree with a JSON Schema, checked before
//! anything starts; a bad file names the field.
//!
//! ```toml
//! [hub]
//! url = "https://hub.example.it:8443"
//! format = "json"                    # envelopes sent: json or xml
//!
//! [tls]
//! ca = "pki/ca.crt"
//! cert = "pki/comune-001272.crt"    # the entity is the one its certificate names
//! key = "pki/comune-001272.key"
//!
//! [state]
//! dir = "state"                      # processed records and the outbox (sled)
//!
//! [receive]
//! mode = "pull"                      # or "push", with listen = "0.0.0.0:9443"
//!
//! [adapter]
//! kind = "dir"
//! dir = "scambio"                    # outbox/, inbox/, sent/, error/ inside
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::adapter::reference;
use crate::catalog::Unknown;

/// The whole configuration of one connector process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The hub to connect to.
    pub hub: HubSection,
    /// The federation CA and the entity's certificate and key.
    pub tls: TlsSection,
    /// Where the connector keeps its durable state.
    pub state: StateSection,
    /// How envelopes arrive: leased from the inbox, or pushed by the hub.
    #[serde(default)]
    pub receive: ReceiveSection,
    /// The adapter to the municipal system.
    pub adapter: AdapterSection,
}

/// `[hub]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The hub's base URL, `https://host:port`.
    pub url: String,
    /// The encoding of envelopes sent: `json` (JWS) or `xml` (XML-DSig).
    #[serde(default)]
    pub format: FormatName,
    /// How many times a call to the hub is tried when it fails transiently.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The longest one HTTP exchange with the hub may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// The encoding of envelopes sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    /// JWS, flattened JSON serialization.
    #[default]
    Json,
    /// XML with an enveloped XML-DSig signature.
    Xml,
}

impl FormatName {
    /// The envelope crate's format.
    #[must_use]
    pub fn format(self) -> snodo_envelopes::Format {
        match self {
            FormatName::Json => snodo_envelopes::Format::Json,
            FormatName::Xml => snodo_envelopes::Format::Xml,
        }
    }
}

/// `[tls]`: PEM files; relative paths are relative to the configuration file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The federation CA.
    pub ca: PathBuf,
    /// The CA's revocation list: signers on it are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// The entity's certificate; its SAN names the entity this connector acts as.
    pub cert: PathBuf,
    /// The entity's private key (mode 0600).
    pub key: PathBuf,
}

/// `[state]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// A directory for the sled store: processed envelopes, the outbox, adapter records.
    pub dir: PathBuf,
}

/// `[receive]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveSection {
    /// `pull` (lease the inbox) or `push` (the hub posts to `listen`; the hub's registry
    /// must name this connector's URL as the entity's endpoint).
    #[serde(default)]
    pub mode: ReceiveMode,
    /// Pull: envelopes per lease.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Pull: how long a lease lasts, the longest one envelope may take to process.
    #[serde(default = "default_lease", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub lease: Duration,
    /// Pull: the pause when the inbox is empty.
    #[serde(default = "default_idle", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle: Duration,
    /// Push: the HTTPS address to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for ReceiveSection {
    fn default() -> Self {
        ReceiveSection {
            mode: ReceiveMode::default(),
            batch: default_batch(),
            lease: default_lease(),
            idle: default_idle(),
            listen: None,
        }
    }
}

/// How envelopes arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiveMode {
    /// Lease the inbox.
    #[default]
    Pull,
    /// The hub pushes.
    Push,
}

/// `[adapter]`: how the connector talks to the municipal system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AdapterSection {
    /// Folders: files dropped in `outbox/` are sent; received envelopes appear in `inbox/`.
    Dir {
        /// The exchange directory, holding `outbox/`, `inbox/`, `sent/` and `error/`.
        dir: PathBuf,
        /// How often `outbox/` is looked at.
        #[serde(default = "default_poll", with = "humantime_serde")]
        #[schemars(with = "String")]
        poll: Duration,
        /// A message whose type this build does not know: `refuse` it, or send it if it is
        /// `well-formed` (the hub checks bodies against its registry's schemas).
        #[serde(default)]
        unknown_messages: UnknownMessages,
    },
    /// HTTP on both sides: received envelopes are POSTed as JSON to `deliver_to`; the
    /// municipal system sends by POSTing to `listen`.
    Http {
        /// The municipal system's URL that takes received messages (2xx = taken).
        deliver_to: String,
        /// Where the connector takes messages to send; a loopback address.
        listen: SocketAddr,
        /// How long the municipal system may take to answer a delivery.
        #[serde(default = "default_timeout", with = "humantime_serde")]
        #[schemars(with = "String")]
        timeout: Duration,
        /// As for `dir`.
        #[serde(default)]
        unknown_messages: UnknownMessages,
    },
    /// A reference back office of this build takes the messages itself.
    Reference {
        /// Which one; see [`reference::AVAILABLE`].
        back_office: String,
        /// Its data (a comune's street register and residents…); a relative
        /// `posta.directory` is relative to this file's directory.
        #[serde(default)]
        data: serde_json::Value,
    },
}

/// What to do with a message type this build does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownMessages {
    /// Refuse it.
    #[default]
    Refuse,
    /// Send it if it is well-formed JSON or XML.
    WellFormed,
}

impl UnknownMessages {
    /// The catalog's policy.
    #[must_use]
    pub fn policy(self) -> Unknown {
        match self {
            UnknownMessages::Refuse => Unknown::Refuse,
            UnknownMessages::WellFormed => Unknown::WellFormed,
        }
    }
}

fn default_attempts() -> u32 {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_batch() -> usize {
    16
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}
fn default_idle() -> Duration {
    Duration::from_millis(500)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

/// Durations as humantime strings (`30s`, `1m 30s`).
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like 30s: {e}")))
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A field is wrong.
    #[error("{}: {field}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The field's path (`adapter.poll`), empty for a syntax error.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads, parses and checks `path`; relative paths become relative to its directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the field.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks `text` as if read from `file`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad field.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            field,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid(String::new(), e.message().to_owned()))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            invalid(field, e.into_inner().message().to_owned())
        })?;
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        let base = absolute.parent().unwrap_or(Path::new(".")).to_owned();
        config.resolve(&base);
        if let Some((field, message)) = config.problem() {
            return Err(invalid(field.to_owned(), message));
        }
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.tls.ca);
        join(&mut self.tls.cert);
        join(&mut self.tls.key);
        if let Some(crl) = &mut self.tls.crl {
            join(crl);
        }
        join(&mut self.state.dir);
        match &mut self.adapter {
            AdapterSection::Dir { dir, .. } => join(dir),
            AdapterSection::Reference { data, .. } => {
                if let Some(dir) = data.pointer_mut("/posta/directory")
                    && let Some(text) = dir.as_str()
                    && Path::new(text).is_relative()
                {
                    *dir = serde_json::Value::String(base.join(text).display().to_string());
                }
            }
            AdapterSection::Http { .. } => {}
        }
    }

    /// The first rule broken between fields, as (field, message).
    fn problem(&self) -> Option<(&'static str, String)> {
        if !self.hub.url.starts_with("https://") {
            return Some((
                "hub.url",
                format!("`{}` must start with https://", self.hub.url),
            ));
        }
        if self.hub.attempts == 0 {
            return Some(("hub.attempts", "must be at least 1".into()));
        }
        if self.receive.batch == 0 {
            return Some(("receive.batch", "must be at least 1".into()));
        }
        match (self.receive.mode, self.receive.listen) {
            (ReceiveMode::Push, None) => {
                return Some((
                    "receive.listen",
                    "push needs an address to listen on".into(),
                ));
            }
            (ReceiveMode::Pull, Some(_)) => {
                return Some((
                    "receive.listen",
                    "only push listens; remove it or set mode = \"push\"".into(),
                ));
            }
            _ => {}
        }
        match &self.adapter {
            AdapterSection::Http {
                deliver_to, listen, ..
            } => {
                if !deliver_to.starts_with("http://") {
                    return Some((
                        "adapter.deliver_to",
                        format!(
                            "`{deliver_to}` is not an http:// URL (the municipal system is reached over plain HTTP on its own network)"
                        ),
                    ));
                }
                if !listen.ip().is_loopback() {
                    return Some((
                        "adapter.listen",
                        format!(
                            "{listen} is not a loopback address: the sending endpoint has no authentication of its own and must stay on this machine"
                        ),
                    ));
                }
            }
            AdapterSection::Reference { back_office, data } => match reference::find(back_office) {
                Err(message) => return Some(("adapter.back_office", message)),
                Ok(found) => {
                    if let Err(message) = (found.check)(data) {
                        return Some(("adapter.data", message));
                    }
                }
            },
            AdapterSection::Dir { .. } => {}
        }
        None
    }

    /// The configuration's JSON Schema.
    #[must_use]
    pub fn schema() -> schemars::Schema {
        schemars::schema_for!(Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[hub]
url = "https://127.0.0.1:8443"

[tls]
ca = "pki/ca.crt"
cert = "pki/comune-001272.crt"
key = "pki/comune-001272.key"

[state]
dir = "state"

[adapter]
kind = "dir"
dir = "scambio"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/snodo/connector.toml"))
    }

    #[test]
    fn a_good_file_resolves_paths_and_fills_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.tls.ca, PathBuf::from("/etc/snodo/pki/ca.crt"));
        assert_eq!(c.receive.mode, ReceiveMode::Pull);
        assert_eq!(c.hub.format, FormatName::Json);
        let AdapterSection::Dir {
            dir,
            poll,
            unknown_messages,
        } = &c.adapter
        else {
            panic!("a dir adapter");
        };
        assert_eq!(dir, &PathBuf::from("/etc/snodo/scambio"));
        assert_eq!(*poll, Duration::from_secs(1));
        assert_eq!(*unknown_messages, UnknownMessages::Refuse);
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (GOOD.replace("[state]", "[state]\ncolour = 1"), "state.colour", "unknown field `colour`"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"dir\"\ndir = \"scambio\"\npoll = \"soon\""), "adapter", "`soon` is not a duration"),
            (GOOD.replace("https://127", "http://127"), "hub.url", "must start with https://"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"ftp\""), "adapter", "unknown variant `ftp`"),
            (format!("{GOOD}\n[receive]\nmode = \"push\"\n"), "receive.listen", "push needs an address"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"http\"\ndeliver_to = \"http://127.0.0.1:1/in\"\nlisten = \"0.0.0.0:9000\""), "adapter.listen", "not a loopback address"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"reference\"\nback_office = \"questura\""), "adapter.back_office", "not a reference back office of this build; available: comune, anpr"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"reference\"\nback_office = \"comune\""), "adapter.data", "missing field `stradario`"),
            (GOOD.replace("kind = \"dir\"\ndir = \"scambio\"", "kind = \"reference\"\nback_office = \"portale\"\ndata = { colour = 1 }"), "adapter.data", "unknown field `colour`"),
        ];
        for (text, field, message) in cases {
            match load(&text) {
                Err(ConfigError::Invalid {
                    field: f,
                    message: m,
                    ..
                }) => {
                    assert!(f.starts_with(field), "{field}: the field was {f}: {m}");
                    assert!(m.contains(message), "{field}: {m}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_schema_names_every_section() {
        let schema = serde_json::to_value(Config::schema()).unwrap();
        for section in ["hub", "tls", "state", "receive", "adapter"] {
            assert!(schema["properties"][section].is_object(), "{section}");
        }
        assert_eq!(schema["additionalProperties"], false);
    }
}
