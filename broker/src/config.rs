//! The hub configuration file: one serde tree with a JSON Schema, checked before any port is bound.
//!
//! [`Config::load`] reads a TOML file, refuses unknown fields anywhere in it, resolves relative
//! paths against the file's directory and checks every rule that ties the fields together
//! (patterns name configured entities, subscriptions name event actions, limits are not zero).
//! Every refusal names the file and the field, as `services[1].actions[0].senders[2]`.
//!
//! ```toml
//! [hub]
//! name = "hub"                      # the certificate's SAN is urn:snodo:hub:hub
//! listen = "127.0.0.1:8443"
//! data_dir = "data"                 # relative to this file's directory
//!
//! [tls]
//! ca = "pki/ca.crt"
//! cert = "pki/hub.crt"
//! key = "pki/hub.key"
//!
//! [limits]
//! requests_per_second = 2000
//!
//! [[entities]]
//! id = "comune:001272"
//! name = "Torino"
//!
//! [[entities]]
//! id = "anpr:ministero"
//! endpoint = "https://anpr.example.it/snodo"
//!
//! [[services]]
//! name = "residenza.cambio"
//! deadline = "2days"
//!
//! [[services.actions]]
//! name = "richiesta"
//! profile = "request"
//! senders = ["comune:*"]
//! recipients = ["anpr:ministero"]
//!
//! [[auditors]]
//! name = "revisore"
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use snodo_envelopes::{
    ContentType, EntityId, Header, Identity, Profile, Recipient, Signer, TrustStore,
};

/// The name of the configuration file in a data directory (`snodo serve --dev`).
pub const FILE_NAME: &str = "snodo.toml";

/// The whole configuration of one hub node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This hub node: its name, the addresses it listens on, where it keeps its data.
    #[serde(default)]
    pub hub: HubConfig,
    /// The federation CA, the revocation list, and the hub's own certificate and key.
    pub tls: TlsConfig,
    /// Bounds on what one envelope and one entity may cost the hub.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How often the journal signs a checkpoint.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Push delivery: timeouts, retries and how long to keep trying.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The members of the federation; only these may connect, send and receive.
    #[serde(default)]
    pub entities: Vec<EntityConfig>,
    /// The services, their actions and who may send and receive each.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Who receives the events of an event action (topic subscriptions).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Auditors: certificates with SAN `urn:snodo:auditor:<name>` that may read the whole journal.
    #[serde(default)]
    pub auditors: Vec<AuditorConfig>,
    /// Where accepted envelopes wait for delivery: in this node's store (`embedded`, the
    /// default) or in RabbitMQ queues shared by several hub nodes (`amqp`).
    #[serde(default)]
    pub transport: TransportConfig,
    /// The other hub nodes of this federation, whose journals this node's auditor API can
    /// also answer for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
}

/// How envelopes travel from acceptance to delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Queues in this node's store; one hub process.
    #[default]
    Embedded,
    /// RabbitMQ: one quorum queue per entity, shared by every hub node of the federation.
    Amqp,
}

/// `[transport]`: where accepted envelopes wait for delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// `embedded` (default) or `amqp`.
    #[serde(default)]
    pub kind: TransportKind,
    /// The RabbitMQ URL, `amqp://user:password@host:5672/vhost` or `amqps://…` (TLS through
    /// rustls). Without it, the environment variable `SNODO_AMQP_URL` gives it (so that a
    /// password need not be in the file). Required for `amqp`, one way or the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The virtual host, when not in the URL's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// A PEM CA certificate (or bundle) that RabbitMQ's certificate must chain to, for
    /// `amqps://` URLs; relative to the configuration file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// How many unacknowledged push deliveries one consumer holds at once (`basic_qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The prefix of every exchange and queue name, so that several federations can share one
    /// RabbitMQ. Default `snodo`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

/// `[[peers]]`: another hub node of the federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The node's `hub.name`; its certificate's SAN is `urn:snodo:hub:<name>`.
    pub name: String,
    /// The node's API, `https://host:port`.
    #[schemars(url)]
    pub url: String,
}

/// `[hub]`: this hub node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The node's name: its certificate must carry the SAN `urn:snodo:hub:<name>`, and it names
    /// the node in receipts and checkpoints.
    #[serde(default = "default_hub_name")]
    pub name: String,
    /// The TLS address the API listens on (client certificates required).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A plain-HTTP address serving only `/healthz`, `/readyz` and `/metrics`, for probes and
    /// scrapers that hold no client certificate. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_listen: Option<SocketAddr>,
    /// Where the node keeps its store and journal; relative to the configuration file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bytes of the store's block cache (with its memtables, the bulk of the hub's memory
    /// beyond the requests in flight). Default 64 MiB.
    #[serde(default = "default_store_cache")]
    pub store_cache: u64,
    /// Bytes the store's memtables take together before they are written out as tables: half
    /// for the raw envelopes' tree, an eighth each for the records' and the journal's, a quarter
    /// for the tree of everything else. Each tree holds up to four (the one being written and
    /// three waiting to be flushed; then writes wait). Default 32 MiB (BENCHMARKS.md, sections
    /// m and p). It applies when the store is created: an existing store keeps its budget, and
    /// the hub warns at start when this asks for another. At least 1 MiB.
    #[serde(default = "default_store_memtable")]
    pub store_memtable: u64,
}

/// `[tls]`: PEM files; relative paths are relative to the configuration file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The federation CA certificate (or a bundle): every client certificate and envelope
    /// signature must chain to it.
    pub ca: PathBuf,
    /// The CA's certificate revocation list; revoked certificates are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// The hub's certificate (SAN `urn:snodo:hub:<hub.name>`), served to clients and used to
    /// sign receipts and checkpoints.
    pub cert: PathBuf,
    /// The hub's private key, matching `cert`.
    pub key: PathBuf,
}

/// `[limits]`: bounds on what one envelope and one entity may cost the hub. None may be zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted envelope in bytes; larger ones are refused with 413.
    #[serde(default = "default_max_envelope_bytes")]
    pub max_envelope_bytes: usize,
    /// Deepest accepted nesting of XML elements or JSON values, body included.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Sustained requests per second one entity may make; beyond it, 429 with Retry-After.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Requests one entity may make at once above the sustained rate (token bucket size).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Bytes of request bodies one entity may have in flight at once; beyond it, 429 with
    /// Retry-After. At least `max_envelope_bytes`, or the largest envelope could never pass.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// Concurrent TLS connections one entity may hold.
    #[serde(default = "default_max_connections_per_entity")]
    pub max_connections_per_entity: u32,
    /// Concurrent connections the node accepts in all, before anyone is identified.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The longest `?wait=` a client may ask for (long polling, synchronous requests).
    #[serde(default = "default_max_wait", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub max_wait: Duration,
    /// The lease on inbox messages when the client names none.
    #[serde(default = "default_lease_default", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub lease_default: Duration,
    /// The longest lease a client may ask for; at least `lease_default`.
    #[serde(default = "default_lease_max", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub lease_max: Duration,
    /// The most messages one inbox read returns.
    #[serde(default = "default_inbox_max_batch")]
    pub inbox_max_batch: u32,
}

/// `[journal]`: when the journal signs a checkpoint — after an interval or a number of entries,
/// whichever comes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Longest time between checkpoints while entries arrive (bounds receipt latency).
    #[serde(default = "default_checkpoint_interval", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub checkpoint_interval: Duration,
    /// Most entries under one checkpoint (bounds the work of one signature batch).
    #[serde(default = "default_checkpoint_max_entries")]
    pub checkpoint_max_entries: u32,
    /// How long the exact bytes of accepted envelopes are kept (`"365days"`); past it they are
    /// pruned, and the journal records it, while entries, digests, the tree and checkpoints
    /// stay. Envelopes still waiting for delivery are never pruned. Absent: kept forever.
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub retention: Option<Duration>,
}

/// `[delivery]`: push delivery to entities that have an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How long one push attempt may take before it counts as failed.
    #[serde(default = "default_push_timeout", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub push_timeout: Duration,
    /// The wait before the first retry; it doubles on each failure, with jitter.
    #[serde(default = "default_retry_initial", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub retry_initial: Duration,
    /// The longest wait between two retries; at least `retry_initial`.
    #[serde(default = "default_retry_max", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub retry_max: Duration,
    /// How long after acceptance delivery is tried before the message is dead-lettered, for
    /// services that set no `deadline` of their own.
    #[serde(default = "default_deadline", with = "duration")]
    #[schemars(schema_with = "duration_schema")]
    pub default_deadline: Duration,
}

/// `[[entities]]`: one member of the federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// The entity, `class:code` (`comune:001272`); its certificate's SAN is
    /// `urn:snodo:entity:<id>`.
    #[serde(deserialize_with = "entity_id")]
    #[schemars(schema_with = "entity_id_schema")]
    pub id: EntityId,
    /// A human name for logs and listings (`Torino`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An `https` URL the hub pushes this entity's messages to; without one, the entity pulls
    /// from its inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub endpoint: Option<String>,
}

/// `[[services]]`: one citizen service, a defined exchange of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service as envelopes name it: dot-separated lowercase segments (`residenza.cambio`).
    pub name: String,
    /// The version of the service's message contract (`v1`).
    #[serde(default = "default_version")]
    pub version: String,
    /// How long delivery of this service's messages is tried before they are dead-lettered;
    /// `delivery.default_deadline` when absent.
    #[serde(
        default,
        with = "duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "duration_schema")]
    pub deadline: Option<Duration>,
    /// The messages of the service and who may send and receive each.
    pub actions: Vec<ActionConfig>,
}

/// `[[services.actions]]`: one message of a service and its access rights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The action as envelopes name it: one lowercase segment (`richiesta`).
    pub name: String,
    /// The one messaging pattern this action is sent with; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "profile_schema")]
    pub profile: Option<Profile>,
    /// Who may send it: entity ids, `class:*` or `*`.
    pub senders: Vec<Pattern>,
    /// Whom it may be addressed to: entity ids, `class:*` or `*`. Event actions take none:
    /// their events go to the action's `[[subscriptions]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Pattern>,
    /// The schema its bodies must match, from the catalog of snodo-schemas: `"service/action"`
    /// names a message of the catalog, `"none"` checks nothing. Absent: the catalog's message
    /// of this same service and action when the catalog has one, else nothing is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<crate::validate::SchemaSetting>,
}

/// `[[subscriptions]]`: who receives the events of one event action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The service of the topic (`mobilita.viabilita`).
    pub service: String,
    /// The event action of the topic (`evento`).
    pub action: String,
    /// Who receives each event: entity ids, `class:*` or `*`.
    pub subscribers: Vec<Pattern>,
}

/// `[[auditors]]`: an auditor, who may query and export the whole journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditorConfig {
    /// The auditor's name; its certificate's SAN is `urn:snodo:auditor:<name>`.
    pub name: String,
}

// ---- Defaults -------------------------------------------------------------------------------

fn default_hub_name() -> String {
    "hub".to_owned()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_store_cache() -> u64 {
    crate::store::fjall::DEFAULT_CACHE_BYTES
}
fn default_store_memtable() -> u64 {
    crate::store::fjall::DEFAULT_MEMTABLE_BYTES
}
fn default_max_envelope_bytes() -> usize {
    snodo_envelopes::limits::DEFAULT_MAX_BYTES
}
fn default_max_depth() -> usize {
    snodo_envelopes::limits::DEFAULT_MAX_DEPTH
}
fn default_requests_per_second() -> u32 {
    2000
}
fn default_burst() -> u32 {
    4000
}
fn default_max_bytes_in_flight() -> usize {
    64 * 1024 * 1024
}
fn default_max_connections_per_entity() -> u32 {
    256
}
fn default_max_connections() -> u32 {
    10_000
}
fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_lease_default() -> Duration {
    Duration::from_secs(30)
}
fn default_lease_max() -> Duration {
    Duration::from_secs(600)
}
fn default_inbox_max_batch() -> u32 {
    100
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_checkpoint_max_entries() -> u32 {
    1000
}
fn default_push_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_deadline() -> Duration {
    Duration::from_secs(3600)
}
fn default_version() -> String {
    "v1".to_owned()
}
fn default_prefetch() -> u16 {
    32
}
fn default_prefix() -> String {
    "snodo".to_owned()
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kind: TransportKind::Embedded,
            url: None,
            vhost: None,
            ca: None,
            prefetch: default_prefetch(),
            prefix: default_prefix(),
        }
    }
}

impl TransportConfig {
    /// The RabbitMQ URL in force: `url`, else `SNODO_AMQP_URL`.
    #[must_use]
    pub fn amqp_url(&self) -> Option<String> {
        self.url.clone().or_else(|| {
            std::env::var("SNODO_AMQP_URL")
                .ok()
                .filter(|u| !u.is_empty())
        })
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            name: default_hub_name(),
            listen: default_listen(),
            plain_listen: None,
            data_dir: default_data_dir(),
            store_cache: default_store_cache(),
            store_memtable: default_store_memtable(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_envelope_bytes: default_max_envelope_bytes(),
            max_depth: default_max_depth(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            max_bytes_in_flight: default_max_bytes_in_flight(),
            max_connections_per_entity: default_max_connections_per_entity(),
            max_connections: default_max_connections(),
            max_wait: default_max_wait(),
            lease_default: default_lease_default(),
            lease_max: default_lease_max(),
            inbox_max_batch: default_inbox_max_batch(),
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_max_entries: default_checkpoint_max_entries(),
            retention: None,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            push_timeout: default_push_timeout(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            default_deadline: default_deadline(),
        }
    }
}

impl LimitsConfig {
    /// The parser bounds these limits set for envelopes.
    #[must_use]
    pub fn envelope_limits(&self) -> snodo_envelopes::Limits {
        snodo_envelopes::Limits {
            max_bytes: self.max_envelope_bytes,
            max_depth: self.max_depth,
        }
    }
}

// ---- Patterns -------------------------------------------------------------------------------

/// Whom an access rule or a subscription names: one entity, a class of entities, or everyone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// One entity: `comune:001272`.
    Entity(EntityId),
    /// Every entity of a class: `comune:*`.
    Class(String),
    /// Every entity: `*`.
    Any,
}

impl Pattern {
    /// True when `entity` is one this pattern names.
    #[must_use]
    pub fn matches(&self, entity: &EntityId) -> bool {
        match self {
            Pattern::Entity(e) => e == entity,
            Pattern::Class(c) => entity.class() == c,
            Pattern::Any => true,
        }
    }
}

impl FromStr for Pattern {
    type Err = String;

    /// Parses `*`, `class:*` or an entity id; the error says what is wrong.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(class) = s.strip_suffix(":*") {
            // The class rule of `EntityId`: 1 to 32 lowercase letters.
            return if !class.is_empty()
                && class.len() <= 32
                && class.bytes().all(|b| b.is_ascii_lowercase())
            {
                Ok(Pattern::Class(class.to_owned()))
            } else {
                Err(format!(
                    "entity class `{class}` must be 1 to 32 lowercase letters"
                ))
            };
        }
        EntityId::parse_field(s, "pattern")
            .map(Pattern::Entity)
            .map_err(|e| format!("`{s}` is not an entity id, `class:*` or `*`: {}", reason(e)))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Entity(e) => write!(f, "{e}"),
            Pattern::Class(c) => write!(f, "{c}:*"),
            Pattern::Any => f.write_str("*"),
        }
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An entity (`comune:001272`), every entity of a class (`comune:*`), or every entity (`*`).",
            "pattern": "^(\\*|[a-z]{1,32}:(\\*|[A-Za-z0-9_-]{1,64}))$",
            "examples": ["comune:001272", "comune:*", "*"]
        })
    }
}

// ---- Serde and schema helpers ---------------------------------------------------------------

/// The reason inside an envelopes error, without the "header field" wording that suits envelopes
/// but not a configuration file.
fn reason(e: snodo_envelopes::Error) -> String {
    match e {
        snodo_envelopes::Error::InvalidField { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn entity_id<'de, D: Deserializer<'de>>(d: D) -> Result<EntityId, D::Error> {
    let s = String::deserialize(d)?;
    EntityId::parse_field(&s, "id").map_err(|e| serde::de::Error::custom(reason(e)))
}

fn entity_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^[a-z]{1,32}:[A-Za-z0-9_-]{1,64}$",
        "examples": ["comune:001272", "anpr:ministero"]
    })
}

fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "A duration: a number and a unit, such as 100ms, 30s, 10m, 1h or 2days.",
        "examples": ["100ms", "30s", "10m", "1h"]
    })
}

fn profile_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["oneway", "request", "response", "event"]
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 100ms, 30s, 10m or 1h: {e}"))
}

/// Durations as humantime strings (`30s`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as humantime strings (`30s`).
mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

// ---- Errors ---------------------------------------------------------------------------------

/// One thing wrong in a configuration: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field's path, as `services[1].actions[0].senders[2]`; empty for a TOML syntax error.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Line and column (from 1) in the file, when the parser knows them.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Why a configuration was refused. The message names the file and every bad field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", file.display())]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown or ill-typed field, or breaks a rule.
    #[error("{}: {}", file.display(), ProblemList(problems))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Everything found wrong, section by section; never empty.
        problems: Vec<Problem>,
    },
    /// A TLS file named by the configuration could not be used.
    #[error("{field} ({}): {source}", path.display())]
    Tls {
        /// The field that names the file: `tls.ca`, `tls.crl`, `tls.cert` or `tls.key`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: snodo_envelopes::Error,
    },
    /// The hub certificate does not name this hub.
    #[error("tls.cert ({}): the certificate names {found}, not hub `{expected}` (hub.name)", path.display())]
    HubIdentity {
        /// The hub certificate.
        path: PathBuf,
        /// The identity the certificate names.
        found: Identity,
        /// `hub.name`.
        expected: String,
    },
}

impl ConfigError {
    /// The fields this error is about (`hub.listen`, `services[1].actions[0].senders[2]`).
    #[must_use]
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.field.as_str()).collect()
            }
            ConfigError::Tls { field, .. } => vec![field],
            ConfigError::HubIdentity { .. } => vec!["tls.cert"],
        }
    }
}

/// Formats problems: one inline, several one per line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

// ---- Loading --------------------------------------------------------------------------------

/// The hub's trust anchors and signing identity, read from the files `[tls]` names.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The federation CA and revocation list, to check client certificates and signatures.
    pub trust: TrustStore,
    /// The hub's key and certificate, to sign receipts and checkpoints.
    pub signer: Signer,
}

impl Config {
    /// Reads, parses and checks the configuration file at `path`.
    ///
    /// Relative paths in the file are resolved against its directory, so the returned
    /// configuration holds absolute paths when `path` is absolute or the working directory is
    /// known.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read; [`ConfigError::Invalid`] naming every
    /// bad field.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks `text` as if read from `file` (which need not exist): relative paths
    /// are resolved against `file`'s directory.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming every bad field.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        };
        let mut config = parse(text).map_err(|p| invalid(vec![p]))?;
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        let base = absolute.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    /// Joins every relative path onto `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.hub.data_dir);
        join(&mut self.tls.ca);
        join(&mut self.tls.cert);
        join(&mut self.tls.key);
        if let Some(crl) = &mut self.tls.crl {
            join(crl);
        }
        if let Some(ca) = &mut self.transport.ca {
            join(ca);
        }
    }

    /// Every rule this configuration breaks; empty when it is sound. [`Config::load`] runs this;
    /// call it on a configuration built in code.
    #[must_use]
    pub fn problems(&self) -> Vec<Problem> {
        let mut v = Validator::default();
        v.hub(&self.hub);
        v.tls(&self.tls);
        v.limits(&self.limits);
        v.journal(&self.journal);
        v.delivery(&self.delivery);
        v.entities(&self.entities);
        v.services(&self.services);
        v.subscriptions(&self.subscriptions, &self.services);
        v.auditors(&self.auditors);
        v.transport(&self.transport);
        v.peers(&self.peers, &self.hub.name);
        v.problems
    }

    /// Reads the CA, revocation list, hub certificate and key that `[tls]` names, and checks
    /// that the certificate names this hub (`urn:snodo:hub:<hub.name>`).
    ///
    /// # Errors
    /// [`ConfigError::Tls`] naming the field of a missing or unusable file;
    /// [`ConfigError::HubIdentity`] when the certificate names someone else.
    pub fn load_tls(&self) -> Result<TlsMaterial, ConfigError> {
        use snodo_envelopes::pki;
        let tls = &self.tls;
        let at = |field: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| ConfigError::Tls {
                field,
                path,
                source,
            }
        };
        let cas = pki::load_certs(&tls.ca).map_err(at("tls.ca", &tls.ca))?;
        let crl = match &tls.crl {
            Some(path) => Some(pki::load_crl(path).map_err(at("tls.crl", path))?),
            None => None,
        };
        // With the CA and the list read, what can fail is the list's signature by the CA.
        let trust = TrustStore::new(cas, crl.as_ref())
            .map_err(at("tls.crl", tls.crl.as_deref().unwrap_or(&tls.ca)))?;
        let key = pki::load_key(&tls.key).map_err(at("tls.key", &tls.key))?;
        let chain = pki::load_certs(&tls.cert).map_err(at("tls.cert", &tls.cert))?;
        let signer = Signer::new(key, &chain).map_err(at("tls.cert", &tls.cert))?;
        if signer.identity != Identity::Hub(self.hub.name.clone()) {
            return Err(ConfigError::HubIdentity {
                path: tls.cert.clone(),
                found: signer.identity.clone(),
                expected: self.hub.name.clone(),
            });
        }
        Ok(TlsMaterial { trust, signer })
    }

    /// The fields that differ between `self` (running) and `new` (reloaded) and only take
    /// effect after a restart: the node's name, addresses and data directory, the journal's
    /// settings and the key that signs checkpoints and notices. Everything else — registry,
    /// limits, delivery, the CA, the revocation list, the TLS certificate served — the hub
    /// applies on reload.
    #[must_use]
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.hub, &new.hub);
        [
            ("hub.name", a.name != b.name),
            ("hub.listen", a.listen != b.listen),
            ("hub.plain_listen", a.plain_listen != b.plain_listen),
            ("hub.data_dir", a.data_dir != b.data_dir),
            ("journal", self.journal != new.journal),
            ("transport", self.transport != new.transport),
            (
                "tls.key (signing checkpoints and notices)",
                self.tls.key != new.tls.key,
            ),
        ]
        .into_iter()
        .filter_map(|(field, changed)| changed.then_some(field))
        .collect()
    }

    /// A one-line summary: `6 entities, 4 services, 9 actions, 1 subscription, 1 auditor`.
    #[must_use]
    pub fn summary(&self) -> String {
        let actions: usize = self.services.iter().map(|s| s.actions.len()).sum();
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        [
            count(self.entities.len(), "entity", "entities"),
            count(self.services.len(), "service", "services"),
            count(actions, "action", "actions"),
            count(self.subscriptions.len(), "subscription", "subscriptions"),
            count(self.auditors.len(), "auditor", "auditors"),
        ]
        .join(", ")
    }

    /// The JSON Schema of the configuration file (draft 2020-12).
    #[must_use]
    pub fn json_schema() -> serde_json::Value {
        schemars::schema_for!(Config).to_value()
    }
}

/// Parses TOML into the tree, naming the field of the first error.
fn parse(text: &str) -> Result<Config, Problem> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_problem(text, &e, String::new()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // The path ends with the field that failed, an unknown one included (`hub.lisen`).
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        toml_problem(text, &inner, field)
    })
}

fn toml_problem(text: &str, e: &toml::de::Error, field: String) -> Problem {
    let position = e.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    });
    Problem {
        field,
        message: e.message().trim_end().to_owned(),
        position,
    }
}

// ---- Validation -----------------------------------------------------------------------------

/// Collects every problem of a configuration, walking it once in file order.
#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Configured entities, to check that every pattern names one.
    entities: Vec<EntityId>,
}

impl Validator {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
            position: None,
        });
    }

    fn transport(&mut self, t: &TransportConfig) {
        if let Err(m) = check_token(&t.prefix) {
            self.push("transport.prefix", m);
        }
        if t.prefetch == 0 {
            self.push("transport.prefetch", "must be at least 1");
        }
        if let Some(ca) = &t.ca
            && !ca.is_file()
        {
            self.push("transport.ca", format!("{} is not a file", ca.display()));
        }
        match (t.kind, t.amqp_url()) {
            (TransportKind::Amqp, None) => self.push(
                "transport.url",
                "the amqp transport needs a RabbitMQ URL (here or in SNODO_AMQP_URL)",
            ),
            (_, Some(url)) => {
                if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
                    self.push(
                        "transport.url",
                        format!("not an amqp:// or amqps:// URL: {e}"),
                    );
                }
            }
            (TransportKind::Embedded, None) => {}
        }
    }

    fn peers(&mut self, peers: &[PeerConfig], own: &str) {
        let mut seen = std::collections::HashSet::new();
        for (i, p) in peers.iter().enumerate() {
            if let Err(m) = check_token(&p.name) {
                self.push(format!("peers[{i}].name"), m);
            } else if p.name == own {
                self.push(format!("peers[{i}].name"), "is this node's own hub.name");
            } else if !seen.insert(p.name.as_str()) {
                self.push(
                    format!("peers[{i}].name"),
                    format!("`{}` is listed twice", p.name),
                );
            }
            if !p.url.starts_with("https://") {
                self.push(format!("peers[{i}].url"), "must be an https:// URL");
            }
        }
    }

    fn hub(&mut self, hub: &HubConfig) {
        if let Err(m) = check_token(&hub.name) {
            self.push("hub.name", m);
        }
        // Port 0 asks the system for a free port, so two listeners may both say it.
        if hub.plain_listen == Some(hub.listen) && hub.listen.port() != 0 {
            self.push(
                "hub.plain_listen",
                format!("{} is also hub.listen", hub.listen),
            );
        }
        if hub.store_memtable < 1024 * 1024 {
            self.push("hub.store_memtable", "must be at least 1048576 (1 MiB)");
        }
    }

    fn tls(&mut self, tls: &TlsConfig) {
        let files = [
            ("tls.ca", Some(&tls.ca)),
            ("tls.crl", tls.crl.as_ref()),
            ("tls.cert", Some(&tls.cert)),
            ("tls.key", Some(&tls.key)),
        ];
        for (field, path) in files {
            let Some(path) = path else { continue };
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => self.push(field, format!("{} is not a file", path.display())),
                Err(e) => self.push(field, format!("{}: {e}", path.display())),
            }
        }
    }

    fn nonzero(&mut self, field: &str, zero: bool) {
        if zero {
            self.push(field, "must not be zero");
        }
    }

    fn limits(&mut self, l: &LimitsConfig) {
        self.nonzero("limits.max_envelope_bytes", l.max_envelope_bytes == 0);
        self.nonzero("limits.max_depth", l.max_depth == 0);
        self.nonzero("limits.requests_per_second", l.requests_per_second == 0);
        self.nonzero("limits.burst", l.burst == 0);
        self.nonzero("limits.max_bytes_in_flight", l.max_bytes_in_flight == 0);
        self.nonzero(
            "limits.max_connections_per_entity",
            l.max_connections_per_entity == 0,
        );
        self.nonzero("limits.max_connections", l.max_connections == 0);
        self.nonzero("limits.max_wait", l.max_wait.is_zero());
        self.nonzero("limits.lease_default", l.lease_default.is_zero());
        self.nonzero("limits.lease_max", l.lease_max.is_zero());
        self.nonzero("limits.inbox_max_batch", l.inbox_max_batch == 0);
        if l.max_bytes_in_flight < l.max_envelope_bytes {
            self.push(
                "limits.max_bytes_in_flight",
                format!(
                    "{} is less than limits.max_envelope_bytes ({}): the largest envelope could never be accepted",
                    l.max_bytes_in_flight, l.max_envelope_bytes
                ),
            );
        }
        if l.lease_default > l.lease_max {
            self.push(
                "limits.lease_default",
                format!(
                    "{} is longer than limits.lease_max ({})",
                    humantime::format_duration(l.lease_default),
                    humantime::format_duration(l.lease_max)
                ),
            );
        }
        if l.max_connections_per_entity > l.max_connections {
            self.push(
                "limits.max_connections_per_entity",
                format!(
                    "{} is more than limits.max_connections ({})",
                    l.max_connections_per_entity, l.max_connections
                ),
            );
        }
    }

    fn journal(&mut self, j: &JournalConfig) {
        self.nonzero(
            "journal.checkpoint_interval",
            j.checkpoint_interval.is_zero(),
        );
        self.nonzero(
            "journal.checkpoint_max_entries",
            j.checkpoint_max_entries == 0,
        );
    }

    fn delivery(&mut self, d: &DeliveryConfig) {
        self.nonzero("delivery.push_timeout", d.push_timeout.is_zero());
        self.nonzero("delivery.retry_initial", d.retry_initial.is_zero());
        self.nonzero("delivery.retry_max", d.retry_max.is_zero());
        self.nonzero("delivery.default_deadline", d.default_deadline.is_zero());
        if d.retry_initial > d.retry_max {
            self.push(
                "delivery.retry_initial",
                format!(
                    "{} is longer than delivery.retry_max ({})",
                    humantime::format_duration(d.retry_initial),
                    humantime::format_duration(d.retry_max)
                ),
            );
        }
    }

    fn entities(&mut self, entities: &[EntityConfig]) {
        let mut seen: HashMap<&EntityId, usize> = HashMap::new();
        for (i, e) in entities.iter().enumerate() {
            if let Some(first) = seen.insert(&e.id, i) {
                seen.insert(&e.id, first);
                self.push(
                    format!("entities[{i}].id"),
                    format!("entity `{}` is already listed as entities[{first}]", e.id),
                );
            }
            if let Some(endpoint) = &e.endpoint
                && let Err(m) = check_endpoint(endpoint)
            {
                self.push(format!("entities[{i}].endpoint"), m);
            }
        }
        self.entities = entities.iter().map(|e| e.id.clone()).collect();
    }

    fn patterns(&mut self, field: &str, patterns: &[Pattern]) {
        for (k, p) in patterns.iter().enumerate() {
            if !self.entities.iter().any(|e| p.matches(e)) {
                let why = match p {
                    Pattern::Entity(e) => format!("entity `{e}` is not in [[entities]]"),
                    Pattern::Class(c) => format!("no entity in [[entities]] is of class `{c}`"),
                    Pattern::Any => "`*` names no one: [[entities]] is empty".to_owned(),
                };
                self.push(format!("{field}[{k}]"), why);
            }
        }
    }

    fn services(&mut self, services: &[ServiceConfig]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let at = format!("services[{i}]");
            if let Err(m) = check_envelope_name("service", &s.name) {
                self.push(format!("{at}.name"), m);
            }
            if let Some(first) = seen.get(s.name.as_str()) {
                self.push(
                    format!("{at}.name"),
                    format!(
                        "service `{}` is already defined as services[{first}]",
                        s.name
                    ),
                );
            } else {
                seen.insert(&s.name, i);
            }
            let v = s.version.strip_prefix('v').unwrap_or("");
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                self.push(
                    format!("{at}.version"),
                    format!("`{}` is not a version like v1", s.version),
                );
            }
            if s.deadline.is_some_and(|d| d.is_zero()) {
                self.push(format!("{at}.deadline"), "must not be zero");
            }
            if s.actions.is_empty() {
                self.push(
                    format!("{at}.actions"),
                    "a service needs at least one action",
                );
            }
            let mut actions: HashMap<&str, usize> = HashMap::new();
            for (j, a) in s.actions.iter().enumerate() {
                let at = format!("{at}.actions[{j}]");
                if let Err(m) = check_envelope_name("action", &a.name) {
                    self.push(format!("{at}.name"), m);
                }
                if let Some(first) = actions.get(a.name.as_str()) {
                    self.push(
                        format!("{at}.name"),
                        format!(
                            "action `{}` is already defined in this service as actions[{first}]",
                            a.name
                        ),
                    );
                } else {
                    actions.insert(&a.name, j);
                }
                if a.senders.is_empty() {
                    self.push(format!("{at}.senders"), "name at least one sender");
                }
                self.patterns(&format!("{at}.senders"), &a.senders);
                match a.profile {
                    Some(Profile::Event) if !a.recipients.is_empty() => self.push(
                        format!("{at}.recipients"),
                        "an event action has no recipients: list who receives its events in [[subscriptions]]",
                    ),
                    Some(p) if p != Profile::Event && a.recipients.is_empty() => self.push(
                        format!("{at}.recipients"),
                        format!("a {p} action needs at least one recipient"),
                    ),
                    _ => {}
                }
                self.patterns(&format!("{at}.recipients"), &a.recipients);
                if let Err(m) =
                    crate::validate::SchemaSetting::resolve(a.schema.as_ref(), &s.name, &a.name)
                {
                    self.push(format!("{at}.schema"), m);
                }
            }
        }
    }

    fn subscriptions(&mut self, subscriptions: &[SubscriptionConfig], services: &[ServiceConfig]) {
        for (i, sub) in subscriptions.iter().enumerate() {
            let at = format!("subscriptions[{i}]");
            match services.iter().find(|s| s.name == sub.service) {
                None => self.push(
                    format!("{at}.service"),
                    format!("service `{}` is not defined in [[services]]", sub.service),
                ),
                Some(s) => match s.actions.iter().find(|a| a.name == sub.action) {
                    None => self.push(
                        format!("{at}.action"),
                        format!("service `{}` has no action `{}`", sub.service, sub.action),
                    ),
                    Some(a) => {
                        if let Some(p) = a.profile.filter(|p| *p != Profile::Event) {
                            self.push(
                                format!("{at}.action"),
                                format!(
                                    "`{}` / `{}` is a {p} action; only events have subscribers",
                                    sub.service, sub.action
                                ),
                            );
                        }
                    }
                },
            }
            if sub.subscribers.is_empty() {
                self.push(format!("{at}.subscribers"), "name at least one subscriber");
            }
            self.patterns(&format!("{at}.subscribers"), &sub.subscribers);
        }
    }

    fn auditors(&mut self, auditors: &[AuditorConfig]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, a) in auditors.iter().enumerate() {
            if let Err(m) = check_token(&a.name) {
                self.push(format!("auditors[{i}].name"), m);
            }
            if let Some(first) = seen.get(a.name.as_str()) {
                self.push(
                    format!("auditors[{i}].name"),
                    format!(
                        "auditor `{}` is already listed as auditors[{first}]",
                        a.name
                    ),
                );
            } else {
                seen.insert(&a.name, i);
            }
        }
    }
}

/// Names that go into a certificate URI (hub and auditor names): 1 to 64 letters, digits,
/// `-`, `_` or `.`.
fn check_token(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Push endpoints are absolute `https` URLs with a host.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url =
        reqwest::Url::parse(endpoint).map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "`{endpoint}` must be an https URL: messages are pushed over TLS only"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}` names no host"));
    }
    Ok(())
}

/// Checks a service or action name by the envelope header's own rules, so that the registry
/// accepts exactly the names an envelope can carry: a header that is valid but for the name is
/// validated, and its complaint about `which` is returned.
fn check_envelope_name(which: &'static str, name: &str) -> Result<(), String> {
    let (service, action) = match which {
        "service" => (name, "a"),
        _ => ("a", name),
    };
    let placeholder = |s: &str| EntityId::parse_field(s, "sender").map_err(reason);
    let header = Header {
        id: uuid::Uuid::now_v7(),
        sender: placeholder("config:a")?,
        recipient: Recipient::Entity(placeholder("config:b")?),
        service: service.to_owned(),
        action: action.to_owned(),
        conversation: "config".to_owned(),
        in_reply_to: None,
        profile: Profile::Oneway,
        created_at: time::OffsetDateTime::now_utc(),
        expires_at: None,
        sequence: None,
        content_type: ContentType::Json,
    };
    header.validate().map_err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with empty TLS files, enough for checks that do not read them.
    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "hub.crt", "hub.key"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        d
    }

    const BASE: &str = r#"
[tls]
ca = "ca.crt"
cert = "hub.crt"
key = "hub.key"

[[entities]]
id = "comune:001272"

[[entities]]
id = "comune:004078"

[[entities]]
id = "anpr:ministero"

[[entities]]
id = "portale:comunefacile"

[[services]]
name = "residenza.cambio"

[[services.actions]]
name = "richiesta"
profile = "request"
senders = ["comune:*", "portale:comunefacile"]
recipients = ["anpr:ministero"]

[[services]]
name = "mobilita.viabilita"

[[services.actions]]
name = "evento"
profile = "event"
senders = ["comune:*"]

[[subscriptions]]
service = "mobilita.viabilita"
action = "evento"
subscribers = ["portale:comunefacile"]
"#;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        let d = dir();
        Config::from_toml(&format!("{BASE}{extra}"), &d.path().join("snodo.toml"))
    }

    /// The single field an invalid configuration names, with its message.
    fn refusal(text: &str) -> (String, String) {
        let d = dir();
        match Config::from_toml(text, &d.path().join("snodo.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                (problems[0].field.clone(), problems[0].message.clone())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_sound_file_loads_with_defaults_and_absolute_paths() {
        let d = dir();
        let c = Config::from_toml(BASE, &d.path().join("snodo.toml")).unwrap();
        assert_eq!(c.hub.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.hub.name, "hub");
        assert_eq!(c.tls.ca, d.path().join("ca.crt"));
        assert_eq!(c.hub.data_dir, d.path().join("data"));
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.services[0].version, "v1");
        assert_eq!(c.delivery.default_deadline, Duration::from_secs(3600));
        assert_eq!(
            c.summary(),
            "4 entities, 2 services, 2 actions, 1 subscription, 0 auditors"
        );
    }

    #[test]
    fn durations_are_humantime_strings() {
        let d = dir();
        let text = format!(
            "[limits]\nmax_wait = \"2m\"\n[journal]\ncheckpoint_interval = \"250ms\"\n{BASE}"
        );
        let c = Config::from_toml(&text, &d.path().join("snodo.toml")).unwrap();
        assert_eq!(c.limits.max_wait, Duration::from_secs(120));
        assert_eq!(c.journal.checkpoint_interval, Duration::from_millis(250));
        let (field, message) = refusal(&format!("[limits]\nmax_wait = \"soon\"\n{BASE}"));
        assert_eq!(field, "limits.max_wait");
        assert!(message.contains("`soon` is not a duration"), "{message}");
    }

    #[test]
    fn unknown_fields_are_named_where_they_are() {
        let (field, message) = refusal(&format!("[hub]\nlisen = \"127.0.0.1:1\"\n{BASE}"));
        assert_eq!(field, "hub.lisen");
        assert!(message.contains("unknown field `lisen`"), "{message}");
        let (field, _) = refusal(&format!("colour = 1\n{BASE}"));
        assert_eq!(field, "colour");
        let (field, _) = refusal(&BASE.replace(
            "profile = \"request\"",
            "profile = \"request\"\nsender = []",
        ));
        assert_eq!(field, "services[0].actions[0].sender");
    }

    #[test]
    fn syntax_errors_give_a_position() {
        let d = dir();
        let err = Config::from_toml("[hub\n", &d.path().join("snodo.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems[0].field, "");
        assert_eq!(problems[0].position.map(|p| p.0), Some(1));
        assert!(err.to_string().contains("snodo.toml: "), "{err}");
    }

    #[test]
    fn bad_entity_ids_are_refused_with_the_reason() {
        let (field, message) =
            refusal(&BASE.replace("id = \"comune:004078\"", "id = \"Comune:004078\""));
        assert_eq!(field, "entities[1].id");
        assert!(message.contains("lowercase"), "{message}");
        assert!(!message.contains("header"), "{message}");
    }

    #[test]
    fn duplicates_are_refused() {
        let (field, message) = refusal(&BASE.replace("comune:004078", "comune:001272"));
        assert_eq!(field, "entities[1].id");
        assert!(message.contains("entities[0]"), "{message}");
        let err = load("\n[[services]]\nname = \"residenza.cambio\"\n[[services.actions]]\nname = \"a\"\nsenders = [\"*\"]\n")
            .unwrap_err();
        assert_eq!(err.fields(), ["services[2].name"]);
        assert!(
            err.to_string().contains("already defined as services[0]"),
            "{err}"
        );
        let (field, _) = refusal(&format!(
            "{BASE}\n[[auditors]]\nname = \"a\"\n[[auditors]]\nname = \"a\"\n"
        ));
        assert_eq!(field, "auditors[1].name");
        let dup_action = BASE.replace(
            "[[services]]\nname = \"mobilita.viabilita\"",
            "[[services.actions]]\nname = \"richiesta\"\nsenders = [\"*\"]\n\n[[services]]\nname = \"mobilita.viabilita\"",
        );
        let (field, _) = refusal(&dup_action);
        assert_eq!(field, "services[0].actions[1].name");
    }

    #[test]
    fn names_follow_the_envelope_rules() {
        let (field, message) =
            refusal(&BASE.replace("name = \"residenza.cambio\"", "name = \"Residenza\""));
        assert_eq!(field, "services[0].name");
        assert!(message.contains("dot-separated"), "{message}");
        let (field, message) =
            refusal(&BASE.replace("name = \"richiesta\"", "name = \"richiesta.nuova\""));
        assert_eq!(field, "services[0].actions[0].name");
        assert!(message.contains("one segment"), "{message}");
        let (field, _) = refusal(&BASE.replace(
            "name = \"residenza.cambio\"",
            "name = \"residenza.cambio\"\nversion = \"1.0\"",
        ));
        assert_eq!(field, "services[0].version");
    }

    #[test]
    fn patterns_must_name_configured_entities() {
        let (field, message) = refusal(&BASE.replace(
            "senders = [\"comune:*\", \"portale:comunefacile\"]",
            "senders = [\"comune:*\", \"comune:999999\"]",
        ));
        assert_eq!(field, "services[0].actions[0].senders[1]");
        assert!(message.contains("comune:999999"), "{message}");
        let (field, message) = refusal(&BASE.replace(
            "recipients = [\"anpr:ministero\"]",
            "recipients = [\"provincia:*\"]",
        ));
        assert_eq!(field, "services[0].actions[0].recipients[0]");
        assert!(message.contains("class `provincia`"), "{message}");
        let (field, message) = refusal(&BASE.replace(
            "subscribers = [\"portale:comunefacile\"]",
            "subscribers = [\"comune:**\"]",
        ));
        assert_eq!(field, "subscriptions[0].subscribers[0]");
        assert!(message.contains("not an entity id"), "{message}");
    }

    #[test]
    fn pattern_syntax() {
        assert_eq!("*".parse::<Pattern>(), Ok(Pattern::Any));
        assert_eq!(
            "comune:*".parse::<Pattern>(),
            Ok(Pattern::Class("comune".into()))
        );
        let e: EntityId = "comune:001272".parse().unwrap();
        assert_eq!(
            "comune:001272".parse::<Pattern>(),
            Ok(Pattern::Entity(e.clone()))
        );
        for bad in [
            "",
            "**",
            ":*",
            "Comune:*",
            "comune",
            "comune:0 1",
            "*:001272",
        ] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
        assert!(Pattern::Any.matches(&e));
        assert!(Pattern::Class("comune".into()).matches(&e));
        assert!(!Pattern::Class("comun".into()).matches(&e));
        for p in ["*", "comune:*", "comune:001272"] {
            assert_eq!(p.parse::<Pattern>().unwrap().to_string(), p);
        }
    }

    #[test]
    fn event_actions_and_subscriptions() {
        let (field, _) = refusal(&BASE.replace(
            "profile = \"event\"\nsenders = [\"comune:*\"]",
            "profile = \"event\"\nsenders = [\"comune:*\"]\nrecipients = [\"*\"]",
        ));
        assert_eq!(field, "services[1].actions[0].recipients");
        let (field, _) = refusal(&BASE.replace("recipients = [\"anpr:ministero\"]", ""));
        assert_eq!(field, "services[0].actions[0].recipients");
        let (field, _) = refusal(&BASE.replace("action = \"evento\"", "action = \"notizia\""));
        assert_eq!(field, "subscriptions[0].action");
        let (field, _) = refusal(&BASE.replace(
            "service = \"mobilita.viabilita\"",
            "service = \"mobilita.notizie\"",
        ));
        assert_eq!(field, "subscriptions[0].service");
        let (field, message) = refusal(&format!(
            "{BASE}\n[[subscriptions]]\nservice = \"residenza.cambio\"\naction = \"richiesta\"\nsubscribers = [\"*\"]\n"
        ));
        assert_eq!(field, "subscriptions[1].action");
        assert!(message.contains("only events"), "{message}");
    }

    #[test]
    fn endpoints_are_https() {
        let with = |url: &str| {
            BASE.replace(
                "id = \"anpr:ministero\"",
                &format!("id = \"anpr:ministero\"\nendpoint = \"{url}\""),
            )
        };
        assert!(
            Config::from_toml(
                &with("https://anpr.example.it/snodo"),
                &dir().path().join("x.toml")
            )
            .is_ok()
        );
        for bad in [
            "http://anpr.example.it/snodo",
            "anpr.example.it",
            "https://",
        ] {
            let (field, _) = refusal(&with(bad));
            assert_eq!(field, "entities[2].endpoint", "{bad}");
        }
    }

    #[test]
    fn zero_and_inconsistent_limits_are_refused() {
        for (toml, named) in [
            (
                "[limits]\nrequests_per_second = 0",
                "limits.requests_per_second",
            ),
            ("[limits]\nmax_wait = \"0s\"", "limits.max_wait"),
            (
                "[limits]\nmax_bytes_in_flight = 1024",
                "limits.max_bytes_in_flight",
            ),
            ("[limits]\nlease_default = \"1h\"", "limits.lease_default"),
            (
                "[delivery]\nretry_initial = \"2m\"",
                "delivery.retry_initial",
            ),
            (
                "[journal]\ncheckpoint_max_entries = 0",
                "journal.checkpoint_max_entries",
            ),
        ] {
            let (field, _) = refusal(&format!("{toml}\n{BASE}"));
            assert_eq!(field, named);
        }
        let (field, _) = refusal(&format!("[limits]\nburst = -1\n{BASE}"));
        assert_eq!(field, "limits.burst");
    }

    #[test]
    fn missing_tls_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let err = Config::from_toml(BASE, &d.path().join("snodo.toml")).unwrap_err();
        assert_eq!(err.fields(), ["tls.ca", "tls.cert", "tls.key"]);
        let text = err.to_string();
        assert!(text.contains("3 problems"), "{text}");
        assert!(
            text.contains(&d.path().join("ca.crt").display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn restart_required_names_only_node_fields() {
        let a = load("").unwrap();
        let mut b = a.clone();
        b.limits.burst = 1;
        b.entities.pop();
        assert!(a.restart_required(&b).is_empty());
        b.hub.listen = "127.0.0.1:9443".parse().unwrap();
        assert_eq!(a.restart_required(&b), ["hub.listen"]);
    }

    #[test]
    fn serialized_config_reads_back_the_same() {
        let d = dir();
        let c = Config::from_toml(BASE, &d.path().join("snodo.toml")).unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(
            Config::from_toml(&text, &d.path().join("snodo.toml")).unwrap(),
            c
        );
    }

    #[test]
    fn the_schema_names_every_section_and_forbids_unknown_fields() {
        let schema = Config::json_schema();
        let props = schema["properties"].as_object().unwrap();
        for section in [
            "hub",
            "tls",
            "limits",
            "journal",
            "delivery",
            "entities",
            "services",
            "subscriptions",
            "auditors",
            "transport",
            "peers",
        ] {
            assert!(props.contains_key(section), "{section}");
        }
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["tls"]));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_refused_or_loaded_without_panic(text in "\\PC{0,200}") {
            let _ = Config::from_toml(&text, Path::new("/nonexistent/snodo.toml"));
        }

        #[test]
        fn a_mangled_file_is_refused_or_loaded_without_panic(
            at in 0..BASE.len(),
            cut in 0usize..8,
            insert in "\\PC{0,4}",
        ) {
            let end = (at + cut).min(BASE.len());
            let text = format!("{}{insert}{}", &BASE[..at], &BASE[end..]);
            let d = dir();
            if let Err(ConfigError::Invalid { problems, .. }) =
                Config::from_toml(&text, &d.path().join("snodo.toml"))
            {
                proptest::prop_assert!(!problems.is_empty());
            }
        }

        #[test]
        fn a_parsed_pattern_writes_back_as_read(s in "[*]|[a-zA-Z]{0,3}:([*]|[a-zA-Z0-9_ -]{0,4})|\\PC{0,8}") {
            if let Ok(p) = s.parse::<Pattern>() {
                proptest::prop_assert_eq!(p.to_string(), s);
            }
        }
    }
}
