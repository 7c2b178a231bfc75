//! A real hub on 127.0.0.1 for the connectors' end-to-end tests: a fresh PKI, a registry, the
//! broker's own `serve::start`, and hub clients of the connector crate for each entity.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_connectors::{HubClient, HubClientConfig, RetryPolicy};
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Format};

pub const TURIN: &str = "comune:001272";
pub const CUNEO: &str = "comune:004078";
pub const ANPR: &str = "anpr:ministero";
pub const PORTAL: &str = "portale:comunefacile";

/// The registry of the test hub.
const SERVICES: &str = r#"
[[services]]
name = "prova.scambio"
deadline = "{deadline}"
[[services.actions]]
name = "richiesta"
profile = "request"
senders = ["portale:comunefacile", "comune:*"]
recipients = ["comune:*", "anpr:ministero"]
[[services.actions]]
name = "esito"
profile = "response"
senders = ["comune:*", "anpr:ministero"]
recipients = ["portale:comunefacile", "comune:*"]
[[services.actions]]
name = "notifica"
senders = ["portale:comunefacile", "comune:*", "anpr:ministero"]
recipients = ["comune:*", "anpr:ministero", "portale:comunefacile"]
"#;

/// A federation on disk and its hub's configuration.
pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestHub {
    /// A PKI (P-256) and a hub configuration; `endpoints` gives entities push endpoints.
    pub fn new(endpoints: &[(&str, String)]) -> TestHub {
        TestHub::with(endpoints, "1h")
    }

    /// As [`TestHub::new`], with the push delivery deadline of the service.
    pub fn with(endpoints: &[(&str, String)], deadline: &str) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = [TURIN, CUNEO, ANPR, PORTAL]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let entities_toml: String = [TURIN, CUNEO, ANPR, PORTAL]
            .iter()
            .map(|e| match endpoints.iter().find(|(x, _)| x == e) {
                Some((_, url)) => format!("[[entities]]\nid = \"{e}\"\nendpoint = \"{url}\"\n"),
                None => format!("[[entities]]\nid = \"{e}\"\n"),
            })
            .collect();
        let config = format!(
            r#"
[hub]
name = "hub"
listen = "127.0.0.1:0"
data_dir = "data"

[tls]
ca = "pki/ca.crt"
cert = "pki/hub.crt"
key = "pki/hub.key"

[journal]
checkpoint_interval = "100ms"

[delivery]
retry_initial = "50ms"
retry_max = "200ms"

{entities_toml}
{services}"#,
            services = SERVICES.replace("{deadline}", deadline)
        );
        let config_path = dir.path().join("snodo.toml");
        std::fs::write(&config_path, config).unwrap();
        TestHub { dir, config_path }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub async fn start(&self) -> Running {
        let config = Config::load(&self.config_path).unwrap();
        serve::start(config, Some(self.config_path.clone()))
            .await
            .unwrap()
    }

    /// The certificate and key files of `entity`.
    pub fn files(&self, entity: &str) -> (PathBuf, PathBuf) {
        let stem = entity.parse::<EntityId>().unwrap().file_stem();
        (
            self.pki().join(format!("{stem}.crt")),
            self.pki().join(format!("{stem}.key")),
        )
    }

    /// The client configuration of `entity` for the hub at `url`.
    pub fn client_config(&self, url: &str, entity: &str, format: Format) -> HubClientConfig {
        let (cert, key) = self.files(entity);
        let mut c = HubClientConfig::new(url, self.pki().join("ca.crt"), cert, key);
        c.format = format;
        c.retry = RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        c
    }

    /// A connector-crate client of `entity` for `hub`.
    pub fn client(&self, hub: &Running, entity: &str, format: Format) -> HubClient {
        HubClient::new(&self.client_config(&url(hub), entity, format)).unwrap()
    }
}

/// The hub's base URL.
pub fn url(hub: &Running) -> String {
    format!("https://127.0.0.1:{}", hub.addr.port())
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reqwest client presenting `stem`'s certificate (`hub`, or an entity's file stem).
pub fn raw_client(pki: &Path, stem: &str) -> reqwest::Client {
    let config = snodo_broker::tls::client_config(
        &pki.join("ca.crt"),
        &pki.join(format!("{stem}.crt")),
        &pki.join(format!("{stem}.key")),
    )
    .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

/// A reqwest client presenting `stem`'s certificate to `entity`'s push endpoint, which must
/// name that entity (what the hub's push delivery uses).
pub fn push_client(pki: &Path, stem: &str, entity: &str) -> reqwest::Client {
    let config = snodo_broker::tls::push_client_config(
        &pki.join("ca.crt"),
        &pki.join(format!("{stem}.crt")),
        &pki.join(format!("{stem}.key")),
        &entity.parse().unwrap(),
    )
    .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

/// A hub on 127.0.0.1 for a service's end-to-end test: a P-256 PKI for `entities` in
/// `dir/pki`, the hub's data in `dir/data`, checkpoints every 100 ms, and `registry` (the
/// service's `hub-services.toml`) as its services. Returns the hub and its URL.
pub async fn service_hub(dir: &Path, entities: &[&str], registry: &str) -> (Running, String) {
    let ids: Vec<EntityId> = entities.iter().map(|e| e.parse().unwrap()).collect();
    pki::init(&dir.join("pki"), &ids, KeyType::P256).unwrap();
    let entities_toml: String = entities
        .iter()
        .map(|e| format!("[[entities]]\nid = \"{e}\"\n"))
        .collect();
    let config = format!(
        "[hub]\nname = \"hub\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n\
         [tls]\nca = \"pki/ca.crt\"\ncert = \"pki/hub.crt\"\nkey = \"pki/hub.key\"\n\n\
         [journal]\ncheckpoint_interval = \"100ms\"\n\n{entities_toml}\n{registry}"
    );
    let path = dir.join("snodo.toml");
    std::fs::write(&path, config).unwrap();
    let hub = serve::start(Config::load(&path).unwrap(), Some(path))
        .await
        .unwrap();
    let url = url(&hub);
    (hub, url)
}

/// `entity`'s hub client (JSON) with the PKI of [`service_hub`] in `dir`, retrying quickly.
pub fn service_client(dir: &Path, url: &str, entity: &str) -> HubClient {
    let pki = dir.join("pki");
    let stem = entity.parse::<EntityId>().unwrap().file_stem();
    let mut c = HubClientConfig::new(
        url.to_owned(),
        pki.join("ca.crt"),
        pki.join(format!("{stem}.crt")),
        pki.join(format!("{stem}.key")),
    );
    c.retry = RetryPolicy {
        attempts: 5,
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    HubClient::new(&c).unwrap()
}
