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
//!
//! A comune that runs several reference back offices (its offices, all one entity with one
//! inbox) lists them, each with its data under its name; they share one dispatcher, where
//! each takes only the envelopes that are its own ([`crate::dispatch`]):
//!
//! ```toml
//! [adapter]
//! kind = "reference"
//! back_office = ["tributi", "polizia-locale", "ztl", "edilizia"]
//!
//! [adapter.data.tributi]
//! comune = "001272"
//! # …
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
    /// Reference back offices of this build take the messages themselves.
    Reference {
        /// Which one (`"tributi"`), or which ones, in the order their handlers are offered
        /// envelopes (`["comune", "tributi", "ztl"]`); see [`reference::AVAILABLE`].
        back_office: BackOffices,
        /// Its data (a comune's street register and residents…); with a list, a table with
        /// each one's data under its name (`[adapter.data.tributi]`). A relative
        /// `posta.directory` is relative to this file's directory.
        #[serde(default)]
        data: serde_json::Value,
    },
}

/// The reference back offices one connector runs: one name, or a list of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BackOffices {
    /// One back office; `[adapter.data]` is its data.
    One(String),
    /// Several, sharing the entity's one dispatcher; `[adapter.data.NAME]` is each one's data.
    Several(Vec<String>),
}

impl BackOffices {
    /// The names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        match self {
            BackOffices::One(name) => vec![name.as_str()],
            BackOffices::Several(names) => names.iter().map(String::as_str).collect(),
        }
    }

    /// Each back office with its data, taken from `data`, and the data's field name
    /// (`adapter.data`, or `adapter.data.NAME` for a list).
    #[must_use]
    pub fn with_data<'a>(
        &'a self,
        data: &serde_json::Value,
    ) -> Vec<(&'a str, String, serde_json::Value)> {
        match self {
            BackOffices::One(name) => vec![(name.as_str(), "adapter.data".into(), data.clone())],
            BackOffices::Several(names) => names
                .iter()
                .map(|n| {
                    (
                        n.as_str(),
                        format!("adapter.data.{n}"),
                        data.get(n).cloned().unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
        }
    }
}

impl PartialEq<str> for BackOffices {
    fn eq(&self, other: &str) -> bool {
        matches!(self, BackOffices::One(name) if name == other)
    }
}

impl<'de> Deserialize<'de> for BackOffices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = BackOffices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the name of a reference back office, or a list of names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BackOffices, E> {
                Ok(BackOffices::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BackOffices, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(BackOffices::Several(names))
            }
        }
        d.deserialize_any(Names)
    }
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
            return Err(invalid(field, message));
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
            AdapterSection::Reference { back_office, data } => {
                let pointers: Vec<String> = match back_office {
                    BackOffices::One(_) => vec!["/posta/directory".into()],
                    BackOffices::Several(names) => names
                        .iter()
                        .map(|n| {
                            format!(
                                "/{}/posta/directory",
                                n.replace('~', "~0").replace('/', "~1")
                            )
                        })
                        .collect(),
                };
                for pointer in pointers {
                    if let Some(dir) = data.pointer_mut(&pointer)
                        && let Some(text) = dir.as_str()
                        && Path::new(text).is_relative()
                    {
                        *dir = serde_json::Value::String(base.join(text).display().to_string());
                    }
                }
            }
            AdapterSection::Http { .. } => {}
        }
    }

    /// The first rule broken between fields, as (field, message).
    fn problem(&self) -> Option<(String, String)> {
        self.problem_of_fields()
            .map(|(field, message)| (field.to_owned(), message))
            .or_else(|| self.problem_of_back_offices())
    }

    /// The first problem of the reference back offices named and their data.
    fn problem_of_back_offices(&self) -> Option<(String, String)> {
        let AdapterSection::Reference { back_office, data } = &self.adapter else {
            return None;
        };
        let names = back_office.names();
        if let BackOffices::Several(list) = back_office {
            if list.is_empty() {
                return Some((
                    "adapter.back_office".into(),
                    "the list names no back office".into(),
                ));
            }
            for (i, n) in list.iter().enumerate() {
                if list[..i].contains(n) {
                    return Some((
                        format!("adapter.back_office[{i}]"),
                        format!("`{n}` is listed twice"),
                    ));
                }
            }
            match data {
                serde_json::Value::Null => {}
                serde_json::Value::Object(by_name) => {
                    if let Some(other) = by_name.keys().find(|k| !names.contains(&k.as_str())) {
                        return Some((
                            format!("adapter.data.{other}"),
                            format!(
                                "`{other}` is not one of the back offices listed in adapter.back_office ({})",
                                names.join(", ")
                            ),
                        ));
                    }
                }
                _ => {
                    return Some((
                        "adapter.data".into(),
                        "with a list of back offices, a table of each one's data under its name"
                            .into(),
                    ));
                }
            }
        }
        for (i, (name, field, data)) in back_office.with_data(data).into_iter().enumerate() {
            match reference::find(name) {
                Err(message) => {
                    let field = match back_office {
                        BackOffices::One(_) => "adapter.back_office".to_owned(),
                        BackOffices::Several(_) => format!("adapter.back_office[{i}]"),
                    };
                    return Some((field, message));
                }
                Ok(found) => {
                    if let Err(message) = (found.check)(&data) {
                        return Some((field, message));
                    }
                }
            }
        }
        None
    }

    /// The first rule broken between the fields other than the back offices'.
    fn problem_of_fields(&self) -> Option<(&'static str, String)> {
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
            AdapterSection::Reference { .. } | AdapterSection::Dir { .. } => {}
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

    /// `[adapter.data…]` of the example configuration `file`, moved under `name`.
    fn data_of(file: &str, name: &str) -> String {
        let start = file.find("[adapter.data]").unwrap();
        file[start..]
            .replace("[[adapter.data.", &format!("[[adapter.data.{name}."))
            .replace("[adapter.data]", &format!("[adapter.data.{name}]"))
            .replace(
                "[adapter.data.posta]",
                &format!("[adapter.data.{name}.posta]"),
            )
    }

    fn several(names: &str, data: &[(&str, &str)]) -> String {
        let head = GOOD.replace(
            "kind = \"dir\"\ndir = \"scambio\"",
            &format!("kind = \"reference\"\nback_office = {names}"),
        );
        let data: String = data
            .iter()
            .map(|(file, name)| data_of(file, name))
            .collect();
        format!("{head}\n{data}")
    }

    #[test]
    fn a_list_of_back_offices_each_with_its_data_under_its_name() {
        let tributi = include_str!("../examples/tributi/tributi-001272.toml");
        let polizia = include_str!("../examples/contravvenzioni/polizia-001272.toml");
        let ztl = include_str!("../examples/ztl/ztl-001272.toml");
        let edilizia = include_str!("../examples/edilizia/edilizia-001272.toml");
        let all = [
            (tributi, "tributi"),
            (polizia, "polizia-locale"),
            (ztl, "ztl"),
            (edilizia, "edilizia"),
        ];
        let text = several(r#"["tributi", "polizia-locale", "ztl", "edilizia"]"#, &all);
        let c = load(&text).unwrap();
        let AdapterSection::Reference { back_office, data } = &c.adapter else {
            panic!("{:?}", c.adapter);
        };
        assert_eq!(
            back_office.names(),
            ["tributi", "polizia-locale", "ztl", "edilizia"]
        );
        let each = back_office.with_data(data);
        assert_eq!(each[0].1, "adapter.data.tributi");
        assert_eq!(
            each[0].2["email_ufficio"],
            "tributi@comune.torino.example.it"
        );
        assert_eq!(each[2].2["motorizzazione"], "mctc:motorizzazione");
        // Each one's mail directory is relative to the file.
        for i in [0, 2] {
            let dir = each[i].2["posta"]["directory"].as_str().unwrap();
            assert!(dir.starts_with("/etc/snodo/posta-"), "{dir}");
        }

        // The single name still works, with `[adapter.data]` as its data.
        let one = GOOD.replace(
            "kind = \"dir\"\ndir = \"scambio\"",
            "kind = \"reference\"\nback_office = \"tributi\"",
        ) + &tributi[tributi.find("[adapter.data]").unwrap()..];
        let c = load(&one).unwrap();
        let AdapterSection::Reference { back_office, .. } = &c.adapter else {
            panic!("{:?}", c.adapter);
        };
        assert_eq!(back_office, "tributi");

        // Mistakes are named by their field.
        let cases = [
            (
                several(r#"["tributi", "questura"]"#, &all[..1]),
                "adapter.back_office[1]",
                "`questura` is not a reference back office",
            ),
            (
                several(r#"["tributi", "tributi"]"#, &all[..1]),
                "adapter.back_office[1]",
                "listed twice",
            ),
            (
                several(r#"["tributi"]"#, &all[..2]),
                "adapter.data.polizia-locale",
                "not one of the back offices listed",
            ),
            (
                several(r#"["tributi", "ztl"]"#, &[all[0]]),
                "adapter.data.ztl",
                "missing field",
            ),
            (
                several(r#"["tributi"]"#, &all[..1]).replace("iban = ", "colore = 1\niban = "),
                "adapter.data.tributi",
                "unknown field `colore`",
            ),
            (
                several("[]", &[]),
                "adapter.back_office",
                "names no back office",
            ),
            (
                // Inside the tagged `[adapter]`, serde names the section (as for `poll`).
                several("3", &[]),
                "adapter",
                "the name of a reference back office, or a list of names",
            ),
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
