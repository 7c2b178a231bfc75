//! A hub on 127.0.0.1 for end-to-end tests: a fresh PKI, a configuration, real TLS clients.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Envelope, Format, Recipient, Signer, TrustStore};

pub const TURIN: &str = "comune:001272";
pub const CUNEO: &str = "comune:004078";
pub const ANPR: &str = "anpr:ministero";
pub const PORTAL: &str = "portale:comunefacile";
pub const PAGOPA: &str = "pagopa:nodo";

/// The registry every test hub serves.
pub const SERVICES: &str = r#"
[[entities]]
id = "comune:001272"
name = "Comune di Torino"
[[entities]]
id = "comune:004078"
name = "Comune di Cuneo"
[[entities]]
id = "anpr:ministero"
[[entities]]
id = "portale:comunefacile"
[[entities]]
id = "pagopa:nodo"

[[services]]
name = "residenza.cambio"
[[services.actions]]
name = "richiesta"
senders = ["comune:*", "portale:comunefacile"]
recipients = ["anpr:ministero"]
[[services.actions]]
name = "esito"
profile = "response"
senders = ["anpr:ministero"]
recipients = ["comune:*", "portale:comunefacile"]

[[services]]
name = "anpr.feed"
[[services.actions]]
name = "variazione"
profile = "event"
senders = ["anpr:ministero"]

[[subscriptions]]
service = "anpr.feed"
action = "variazione"
subscribers = ["comune:*"]

[[auditors]]
name = "corte-dei-conti"
"#;

/// A federation on disk and the configuration of its hub.
pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestHub {
    /// A PKI (P-256) and a configuration with `extra` TOML appended to the `[limits]` table.
    pub fn new(limits: &str) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = [TURIN, CUNEO, ANPR, PORTAL, PAGOPA]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        pki::init(&dir.path().join("pki"), &entities, KeyType::P256).unwrap();
        let ca = pki::CertificateAuthority::load(&dir.path().join("pki")).unwrap();
        pki::issue(
            &dir.path().join("pki"),
            &ca,
            &pki::Subject::Auditor("corte-dei-conti".into()),
            KeyType::P256,
            pki::Validity::default(),
        )
        .unwrap();
        let config = format!(
            r#"
[hub]
name = "hub"
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
data_dir = "data"

[tls]
ca = "pki/ca.crt"
cert = "pki/hub.crt"
key = "pki/hub.key"

[limits]
{limits}

[journal]
checkpoint_interval = "100ms"
{SERVICES}"#
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

    pub fn signer(&self, entity: &str) -> Signer {
        let stem = entity.parse::<EntityId>().unwrap().file_stem();
        Signer::load(
            &self.pki().join(format!("{stem}.key")),
            &self.pki().join(format!("{stem}.crt")),
        )
        .unwrap()
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::load(&self.pki().join("ca.crt"), None).unwrap()
    }

    /// A TLS client presenting `who`'s certificate (`auditor-x`, `hub` or an entity id).
    pub fn client(&self, who: &str) -> Client {
        let stem = who
            .parse::<EntityId>()
            .map(|e| e.file_stem())
            .unwrap_or_else(|_| who.to_owned());
        client_with(&self.pki(), &stem)
    }

    /// A signed envelope from `from` to `to`.
    pub fn envelope(
        &self,
        from: &str,
        to: &str,
        service: &str,
        action: &str,
        body: Value,
        format: Format,
    ) -> (Envelope, Vec<u8>) {
        let to = if to == "*" {
            Recipient::Broadcast
        } else {
            Recipient::Entity(to.parse().unwrap())
        };
        let env = Envelope::builder(from.parse().unwrap(), to, service, action)
            .json(body)
            .build()
            .unwrap();
        let signed = snodo_envelopes::sign(&env, &self.signer(from), format).unwrap();
        (env, signed)
    }
}

/// A reqwest client over rustls with a client certificate.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
}

pub fn client_with(pki: &Path, stem: &str) -> Client {
    let config = snodo_broker::tls::client_config(
        &pki.join("ca.crt"),
        &pki.join(format!("{stem}.crt")),
        &pki.join(format!("{stem}.key")),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap();
    Client { http }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The problem+json code.
    pub fn code(&self) -> String {
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["code"].as_str().unwrap().to_owned()
    }
}

impl Client {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.bytes().await.unwrap().to_vec();
        Answer {
            status,
            content_type,
            headers,
            body,
        }
    }

    pub async fn submit(&self, hub: &Running, signed: &[u8], format: Format) -> Answer {
        self.submit_query(hub, signed, format, "").await
    }

    pub async fn submit_query(
        &self,
        hub: &Running,
        signed: &[u8],
        format: Format,
        query: &str,
    ) -> Answer {
        let url = format!("https://127.0.0.1:{}/v1/envelopes{query}", hub.addr.port());
        self.send(
            self.http
                .post(url)
                .header("content-type", format.media_type())
                .body(signed.to_vec()),
        )
        .await
    }

    pub async fn get(&self, hub: &Running, path: &str) -> Answer {
        self.send(
            self.http
                .get(format!("https://127.0.0.1:{}{path}", hub.addr.port())),
        )
        .await
    }

    pub async fn post_json(&self, hub: &Running, path: &str, body: Value) -> Answer {
        self.send(
            self.http
                .post(format!("https://127.0.0.1:{}{path}", hub.addr.port()))
                .json(&body),
        )
        .await
    }

    /// Leases the inbox: the envelopes with their lease tokens.
    pub async fn inbox(&self, hub: &Running, query: &str) -> Vec<Value> {
        let a = self.get(hub, &format!("/v1/inbox{query}")).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        a.json()["envelopes"].as_array().unwrap().clone()
    }

    pub async fn ack_url(&self, base: &str, lease: &str) -> Answer {
        self.send(
            self.http
                .post(format!("{base}/v1/inbox/ack"))
                .json(&json!({ "lease": lease })),
        )
        .await
    }

    pub async fn ack(&self, hub: &Running, lease: &str) -> Answer {
        self.post_json(hub, "/v1/inbox/ack", json!({ "lease": lease }))
            .await
    }
}

/// The trust store wrapped for verifiers.
pub fn verifier(hub: &TestHub) -> snodo_envelopes::Verifier {
    snodo_envelopes::Verifier::new(Arc::new(hub.trust()), snodo_envelopes::Limits::default())
}
