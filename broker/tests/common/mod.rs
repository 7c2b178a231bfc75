//! A hub on 127.0.0.1 for end-to-end tests: a fresh PKI, a configuration, real TLS clients.
#![allow(dead_code, unreachable_pub)]

pub mod child;

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

/// The registry every test hub serves (after the entities; `{deadline}` is filled in).
pub const SERVICES: &str = r#"
[[services]]
name = "residenza.cambio"
{deadline}
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

/// What a test hub's configuration may vary.
#[derive(Default)]
pub struct Options<'a> {
    /// TOML lines of the `[limits]` table.
    pub limits: &'a str,
    /// TOML lines of the `[delivery]` table.
    pub delivery: &'a str,
    /// More TOML lines of the `[journal]` table.
    pub journal: &'a str,
    /// Push endpoints: (entity, URL).
    pub endpoints: Vec<(&'a str, String)>,
    /// The delivery deadline of `residenza.cambio` (`"2s"`).
    pub deadline: Option<&'a str>,
}

impl TestHub {
    /// A PKI (P-256) and a configuration with `limits` as the `[limits]` table.
    pub fn new(limits: &str) -> TestHub {
        TestHub::with(Options {
            limits,
            ..Options::default()
        })
    }

    /// A PKI (P-256) and a configuration as `o` says.
    pub fn with(o: Options<'_>) -> TestHub {
        let limits = o.limits;
        let delivery = o.delivery;
        let journal = o.journal;
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
{journal}

[delivery]
{delivery}
{entities}
{services}"#,
            entities = [TURIN, CUNEO, ANPR, PORTAL, PAGOPA]
                .iter()
                .map(|e| match o.endpoints.iter().find(|(x, _)| x == e) {
                    Some((_, url)) => format!("[[entities]]\nid = \"{e}\"\nendpoint = \"{url}\"\n"),
                    None => format!("[[entities]]\nid = \"{e}\"\n"),
                })
                .collect::<String>(),
            services = SERVICES.replace(
                "{deadline}",
                &o.deadline
                    .map(|d| format!("deadline = \"{d}\""))
                    .unwrap_or_default()
            ),
        );
        let config_path = dir.path().join("snodo.toml");
        std::fs::write(&config_path, config).unwrap();
        TestHub { dir, config_path }
    }

    /// Gives `entity` a push endpoint in the configuration (before the hub starts).
    pub fn set_endpoint(&self, entity: &str, url: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let block = format!("[[entities]]\nid = \"{entity}\"\n");
        assert!(
            text.contains(&block),
            "{entity} is not in the configuration"
        );
        let text = text.replace(&block, &format!("{block}endpoint = \"{url}\"\n"));
        std::fs::write(&self.config_path, text).unwrap();
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

/// What a partner's push endpoint received.
#[derive(Debug, Clone)]
pub struct Received {
    pub media_type: String,
    pub body: Vec<u8>,
}

/// A partner's HTTPS endpoint, serving `entity`'s certificate and requiring the hub's: it
/// answers 503 to the first `fail_first` pushes (forever if `u32::MAX`), then 200.
pub struct Partner {
    pub url: String,
    pub received: Arc<std::sync::Mutex<Vec<Received>>>,
    pub attempts: Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Partner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Partner {
    pub async fn start(pki: &Path, entity: &str, fail_first: u32) -> Partner {
        use axum::routing::post;
        use std::sync::atomic::Ordering;
        let stem = entity.parse::<EntityId>().unwrap().file_stem();
        let tls = snodo_broker::tls::server_config(
            &pki.join("ca.crt"),
            None,
            &pki.join(format!("{stem}.crt")),
            &pki.join(format!("{stem}.key")),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}/snodo/push",
            listener.local_addr().unwrap().port()
        );
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (r, a) = (received.clone(), attempts.clone());
        let app = axum::Router::new().route(
            "/snodo/push",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (r, a) = (r.clone(), a.clone());
                    async move {
                        let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                        if n <= fail_first {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let media_type = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        r.lock().unwrap().push(Received {
                            media_type,
                            body: body.to_vec(),
                        });
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Only the hub may push here.
                    let caller = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| snodo_broker::tls::identity(c));
                    assert!(
                        matches!(caller, Some(Ok(snodo_envelopes::Identity::Hub(_)))),
                        "{caller:?}"
                    );
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Partner {
            url,
            received,
            attempts,
            task,
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
