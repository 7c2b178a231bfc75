//! A hub on 127.0.0.1 for end-to-end tests: a fresh PKI, a configuration, real TLS clients.
#![allow(dead_code, unreachable_pub)]

pub mod child;
pub mod rabbit;

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
# The tests answer with placeholder bodies, not the catalog's `esito`.
schema = "none"

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

/// Where a test hub's queues live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// In the hub's store.
    #[default]
    Embedded,
    /// In the RabbitMQ at `SNODO_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/%2f),
    /// under a prefix of the test's own.
    Amqp,
}

/// Runs the scenario `$name(transport)` as two tests, `$name::embedded` and `$name::amqp`.
#[macro_export]
macro_rules! both_transports {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::common::Transport::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                super::$name($crate::common::Transport::Amqp).await;
            }
        }
    };
}

/// The RabbitMQ the tests use.
pub fn amqp_url() -> String {
    std::env::var("SNODO_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A federation on disk and the configuration of its hub.
pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The prefix of its RabbitMQ objects (amqp transport), removed on drop.
    pub amqp_prefix: Option<String>,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(prefix) = self.amqp_prefix.take() {
            let nodes = ["hub", "a", "b"];
            std::thread::spawn(move || teardown(&prefix, &nodes))
                .join()
                .ok();
        }
    }
}

/// Deletes the queues and exchanges a test hub declared under `prefix`.
fn teardown(prefix: &str, nodes: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(conn) =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        let names = snodo_broker::amqp::Names::new(prefix, "hub");
        let entities = [TURIN, CUNEO, ANPR, PORTAL, PAGOPA];
        let _ = snodo_broker::amqp::delete_all(&conn, &names, &entities, nodes).await;
        let _ = conn.close(200, "done".into()).await;
    });
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
    /// Where the queues live.
    pub transport: Transport,
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
        let amqp_prefix = (o.transport == Transport::Amqp)
            .then(|| format!("snodo-test-{}", hex::encode(rand::random::<[u8; 6]>())));
        let transport = match &amqp_prefix {
            Some(prefix) => format!(
                "[transport]\nkind = \"amqp\"\nurl = \"{}\"\nprefix = \"{prefix}\"\n",
                amqp_url()
            ),
            None => String::new(),
        };
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

{transport}
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
        TestHub {
            dir,
            config_path,
            amqp_prefix,
        }
    }

    /// A hub with default options on `transport`.
    pub fn on(transport: Transport) -> TestHub {
        TestHub::with(Options {
            transport,
            ..Options::default()
        })
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

    /// The configuration of another hub node `name` of the same federation: the same PKI,
    /// registry and RabbitMQ prefix, its own certificate and data directory.
    pub fn node(&self, name: &str) -> PathBuf {
        let ca = pki::CertificateAuthority::load(&self.pki()).unwrap();
        pki::issue(
            &self.pki(),
            &ca,
            &pki::Subject::Hub {
                name: name.into(),
                dns: Vec::new(),
            },
            KeyType::P256,
            pki::Validity::default(),
        )
        .unwrap();
        let text = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .replace("name = \"hub\"", &format!("name = \"{name}\""))
            .replace("pki/hub.crt", &format!("pki/hub-{name}.crt"))
            .replace("pki/hub.key", &format!("pki/hub-{name}.key"))
            .replace(
                "data_dir = \"data\"",
                &format!("data_dir = \"data-{name}\""),
            );
        let path = self.dir.path().join(format!("snodo-{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the hub of configuration `path` (from [`TestHub::node`]).
    pub async fn start_node(&self, path: &Path) -> Running {
        let config = Config::load(path).unwrap();
        let running = serve::start(config, Some(path.to_owned())).await.unwrap();
        if let Some(t) = &running.hub.transport {
            wait_for_rabbitmq(t).await;
        }
        running
    }

    /// Points the configuration's RabbitMQ URL at `url` (before the hub starts).
    pub fn set_amqp_url(&self, url: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let text = text.replace(
            &format!("url = \"{}\"", amqp_url()),
            &format!("url = \"{url}\""),
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub async fn start(&self) -> Running {
        let config = Config::load(&self.config_path).unwrap();
        let running = serve::start(config, Some(self.config_path.clone()))
            .await
            .unwrap();
        if let Some(t) = &running.hub.transport {
            wait_for_rabbitmq(t).await;
        }
        running
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

    /// Submits an empty `residenza.cambio`/`richiesta` JSON envelope from `from` to `to` and
    /// checks it was accepted (202).
    pub async fn accepted(&self, hub: &Running, from: &str, to: &str) -> (Envelope, Vec<u8>) {
        let (env, signed) = self.envelope(
            from,
            to,
            "residenza.cambio",
            "richiesta",
            json!({}),
            Format::Json,
        );
        let a = self.client(from).submit(hub, &signed, Format::Json).await;
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
        (env, signed)
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

/// Waits until the hub is connected to RabbitMQ, or fails saying how to start one.
pub async fn wait_for_rabbitmq(t: &snodo_broker::amqp::Amqp) {
    for _ in 0..300 {
        if t.link().is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "no RabbitMQ answers at {} ({}): start one with `rabbitmq-server -detached` \
         (scripts/test installs and starts it), or point SNODO_AMQP_URL at one",
        t.redacted_url(),
        t.unavailable().unwrap_or_default()
    );
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

// ---------------------------------------------------------------------------------------------
// Synthetic journals, for the audit tests: built as the engine builds one, kept in memory, and
// written out as a bundle or as a hub's store.

/// An envelope signed once, to be accepted (and delivered…) in synthetic journals.
#[derive(Clone, Debug)]
pub struct SignedEnvelope {
    pub header: snodo_envelopes::Header,
    pub format: Format,
    pub raw: Vec<u8>,
}

/// Signs `n` envelopes from TURIN to ANPR, alternately JSON and XML, with the PKI in `pki`.
pub fn sign_envelopes(pki: &Path, n: usize) -> Vec<SignedEnvelope> {
    let signer = Signer::load(
        &pki.join("comune-001272.key"),
        &pki.join("comune-001272.crt"),
    )
    .unwrap();
    (0..n)
        .map(|i| {
            let env = Envelope::builder(
                TURIN.parse().unwrap(),
                Recipient::Entity(ANPR.parse().unwrap()),
                "residenza.cambio",
                "richiesta",
            )
            .conversation(format!("pratica-{i}"))
            .json(json!({ "pratica": i }))
            .build()
            .unwrap();
            let format = if i % 2 == 0 {
                Format::Json
            } else {
                Format::Xml
            };
            let raw = snodo_envelopes::sign(&env, &signer, format).unwrap();
            SignedEnvelope {
                header: env.header,
                format,
                raw,
            }
        })
        .collect()
}

/// A PKI (P-256) with TURIN and ANPR, in `dir/pki`.
pub fn small_pki(dir: &Path) -> PathBuf {
    let pki_dir = dir.join("pki");
    let entities: Vec<EntityId> = [TURIN, ANPR].iter().map(|e| e.parse().unwrap()).collect();
    pki::init(&pki_dir, &entities, KeyType::P256).unwrap();
    pki_dir
}

/// A hub's journal made in memory as the engine makes one: entries, their Merkle tree, signed
/// checkpoints, and the record and exact bytes of each accepted envelope.
///
/// The fields are public so that tests can tamper with them; [`SyntheticJournal::bundle`] and
/// [`SyntheticJournal::write_store`] write what they hold, with a tree rebuilt from the entries
/// as they are (as a forger would) and the checkpoints as they were signed.
pub struct SyntheticJournal {
    pub pki: PathBuf,
    pub hub: snodo_broker::journal::CheckpointSigner,
    /// Canonical bytes, by index.
    pub entries: Vec<Vec<u8>>,
    /// The accepted envelopes, by the index of their `accepted` entry.
    pub envelopes: std::collections::BTreeMap<u64, (snodo_broker::engine::EnvelopeRecord, Vec<u8>)>,
    pub checkpoints: Vec<snodo_broker::journal::SignedCheckpoint>,
    /// Acceptances whose body was pruned: the index of the acceptance, and of the entry
    /// recording the pruning.
    pub pruned: std::collections::BTreeMap<u64, u64>,
    next_seq: u64,
}

/// How a bundle of a synthetic journal is laid out.
#[derive(Clone, Debug)]
pub enum Layout {
    /// Every entry, every checkpoint.
    Complete,
    /// The entries `pick` keeps, with inclusion proofs under the last checkpoint, which comes
    /// after the checkpoint at position `since` in `checkpoints`, if any.
    Filtered {
        pick: fn(u64) -> bool,
        since: Option<usize>,
    },
}

impl SyntheticJournal {
    pub fn new(pki_dir: &Path) -> Self {
        let hub = snodo_broker::journal::CheckpointSigner::load(
            &pki_dir.join(pki::HUB_KEY),
            &pki_dir.join(pki::HUB_CERT),
        )
        .unwrap();
        SyntheticJournal {
            pki: pki_dir.to_path_buf(),
            hub,
            entries: Vec::new(),
            envelopes: Default::default(),
            checkpoints: Vec::new(),
            pruned: Default::default(),
            next_seq: 0,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.pki.join(pki::CA_CERT)
    }

    /// A copy to tamper with.
    pub fn copy(&self) -> Self {
        SyntheticJournal {
            pki: self.pki.clone(),
            hub: self.hub.clone(),
            entries: self.entries.clone(),
            envelopes: self.envelopes.clone(),
            checkpoints: self.checkpoints.clone(),
            pruned: self.pruned.clone(),
            next_seq: self.next_seq,
        }
    }

    /// Appends `entry` at the next index.
    pub fn push(&mut self, mut entry: snodo_broker::journal::Entry) -> u64 {
        entry.index = self.entries.len() as u64;
        self.entries.push(entry.to_bytes().unwrap());
        entry.index
    }

    /// An entry about `env`.
    pub fn about(
        env: &SignedEnvelope,
        kind: snodo_broker::journal::EventKind,
        at: time::OffsetDateTime,
    ) -> snodo_broker::journal::Entry {
        let h = &env.header;
        snodo_broker::journal::Entry {
            envelope_id: Some(h.id),
            sender: Some(h.sender.to_string()),
            recipient: Some(h.recipient.to_string()),
            service: Some(h.service.clone()),
            action: Some(h.action.clone()),
            conversation: Some(h.conversation.clone()),
            ..snodo_broker::journal::Entry::new(
                0,
                kind,
                at,
                snodo_broker::journal::Entry::digest_of(&env.raw),
            )
        }
    }

    /// Journals the acceptance of `env` at `at`, and keeps its record and bytes.
    pub fn accept(&mut self, env: &SignedEnvelope, at: time::OffsetDateTime) -> u64 {
        let index = self.push(Self::about(
            env,
            snodo_broker::journal::EventKind::Accepted,
            at,
        ));
        let h = &env.header;
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = snodo_broker::engine::EnvelopeRecord {
            seq,
            id: h.id,
            sender: h.sender.to_string(),
            recipient: h.recipient.to_string(),
            recipients: vec![h.recipient.to_string()],
            service: h.service.clone(),
            action: h.action.clone(),
            conversation: h.conversation.clone(),
            profile: h.profile,
            in_reply_to: h.in_reply_to,
            expires_at: h.expires_at.map(snodo_envelopes::header::format_time),
            format: match env.format {
                Format::Xml => "xml".into(),
                Format::Json => "json".into(),
            },
            digest: snodo_broker::journal::Entry::digest_of(&env.raw),
            accepted_at: snodo_envelopes::header::format_time(at),
            accepted_index: index,
        };
        self.envelopes.insert(index, (record, env.raw.clone()));
        index
    }

    /// Prunes the body of the envelope accepted at `accepted`, and journals it, at `at`.
    pub fn prune(&mut self, accepted: u64, at: time::OffsetDateTime) -> u64 {
        let (record, _) = &self.envelopes[&accepted];
        let e = snodo_broker::journal::Entry {
            envelope_id: Some(record.id),
            sender: Some(record.sender.clone()),
            recipient: Some(record.recipient.clone()),
            service: Some(record.service.clone()),
            action: Some(record.action.clone()),
            conversation: Some(record.conversation.clone()),
            detail: Some(format!(
                "body pruned after the retention period; its digest was {}",
                record.digest
            )),
            ..snodo_broker::journal::Entry::new(
                0,
                snodo_broker::journal::EventKind::Pruned,
                at,
                record.digest.clone(),
            )
        };
        let at = self.push(e);
        self.pruned.insert(accepted, at);
        at
    }

    /// Journals a refusal at `at`.
    pub fn refuse(&mut self, at: time::OffsetDateTime, code: &str) -> u64 {
        self.push(snodo_broker::journal::Entry {
            code: Some(code.into()),
            detail: Some(format!("refused: {code}")),
            ..snodo_broker::journal::Entry::new(
                0,
                snodo_broker::journal::EventKind::Refused,
                at,
                snodo_broker::journal::Entry::digest_of(code.as_bytes()),
            )
        })
    }

    /// The tree of the entries as they are now.
    pub fn tree(&self) -> snodo_broker::journal::MemoryTree {
        snodo_broker::journal::MemoryTree::from_leaves(
            self.entries
                .iter()
                .map(|b| snodo_broker::journal::merkle::leaf_hash(b)),
        )
        .unwrap()
    }

    /// Signs a checkpoint of the journal as it is, at `at`.
    pub fn checkpoint(
        &mut self,
        at: time::OffsetDateTime,
    ) -> snodo_broker::journal::SignedCheckpoint {
        let size = self.entries.len() as u64;
        let root = self.tree().root().unwrap();
        let signed = self.hub.sign(self.hub.checkpoint(size, root, at)).unwrap();
        self.checkpoints.push(signed.clone());
        signed
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca()).unwrap()
    }

    fn media_type(record: &snodo_broker::engine::EnvelopeRecord) -> &'static str {
        if record.format == "xml" {
            "application/xml"
        } else {
            "application/jose+json"
        }
    }

    /// The journal as a bundle.
    pub fn bundle(&self, layout: Layout) -> Vec<u8> {
        self.bundle_with(layout, &self.tree())
    }

    /// The journal as a bundle whose inclusion and consistency proofs come from `tree` (the
    /// honest tree, for a forger who keeps the proofs of what they did not touch).
    pub fn bundle_with(&self, layout: Layout, tree: &snodo_broker::journal::MemoryTree) -> Vec<u8> {
        use snodo_broker::audit::{BundleHeader, BundleWriter};
        let last = self.checkpoints.last().expect("a checkpoint");
        let size = last.checkpoint.size;
        let complete = matches!(layout, Layout::Complete);
        let mut header = BundleHeader::new(self.hub.hub(), complete, size, self.ca_pem());
        header.source = Some("synthetic".into());
        let cert = match self.hub.hub() {
            "hub" => pki::HUB_CERT.to_owned(),
            name => format!("hub-{name}.crt"),
        };
        header.hub_certificates = vec![std::fs::read_to_string(self.pki.join(cert)).unwrap()];
        let mut w = BundleWriter::new(Vec::new(), &header).unwrap();
        match layout {
            Layout::Complete => {
                let mut checkpoints = self.checkpoints.iter().peekable();
                while let Some(c) = checkpoints.next_if(|c| c.checkpoint.size == 0) {
                    w.checkpoint(c).unwrap();
                }
                for (i, bytes) in self.entries.iter().enumerate() {
                    let i = i as u64;
                    w.entry(i, bytes, None).unwrap();
                    if self.pruned.contains_key(&i) {
                        w.pruned(i, None).unwrap();
                    } else if let Some((record, raw)) = self.envelopes.get(&i) {
                        w.envelope(i, record.id, Self::media_type(record), raw)
                            .unwrap();
                    }
                    while let Some(c) = checkpoints.next_if(|c| c.checkpoint.size <= i + 1) {
                        w.checkpoint(c).unwrap();
                    }
                }
                for c in checkpoints {
                    w.checkpoint(c).unwrap();
                }
            }
            Layout::Filtered { pick, since } => {
                if let Some(since) = since
                    .map(|s| &self.checkpoints[s])
                    .filter(|s| s.checkpoint.size < size)
                {
                    let from = since.checkpoint.size;
                    w.checkpoint(since).unwrap();
                    w.checkpoint(last).unwrap();
                    w.consistency(from, size, &tree.consistency_proof(from, size).unwrap())
                        .unwrap();
                } else {
                    w.checkpoint(last).unwrap();
                }
                for (i, bytes) in self.entries.iter().enumerate() {
                    let i = i as u64;
                    if i >= size || i >= tree.size() || !pick(i) {
                        continue;
                    }
                    let proof = tree.inclusion_proof(i, size).unwrap();
                    w.entry(i, bytes, Some(&proof)).unwrap();
                    if let Some(&at) = self.pruned.get(&i).filter(|at| **at < size) {
                        let proof = tree.inclusion_proof(at, size).unwrap();
                        w.pruned(i, Some((at, &self.entries[at as usize], &proof)))
                            .unwrap();
                    } else if let Some((record, raw)) = self.envelopes.get(&i) {
                        w.envelope(i, record.id, Self::media_type(record), raw)
                            .unwrap();
                    }
                }
            }
        }
        w.finish().unwrap().0
    }

    /// Writes the journal into a new store in `dir` as the engine would: entries, every Merkle
    /// node of the tree of the entries as they are, checkpoints, envelope records and bytes,
    /// and the hub's state.
    pub fn write_store(&self, dir: &Path) {
        use snodo_broker::store::{Batch, Store, keys};
        let store = open_store(dir);
        let tree = self.tree();
        let mut batch = Batch::default();
        let flush = |batch: &mut Batch, force: bool| {
            if force || batch.len() >= 10_000 {
                store.apply(std::mem::take(batch)).unwrap();
            }
        };
        for (i, bytes) in self.entries.iter().enumerate() {
            batch.put(keys::journal(i as u64), bytes.clone());
            flush(&mut batch, false);
        }
        let size = tree.size();
        let mut level = 0u32;
        while size >> level > 0 {
            for k in 0..(size >> level) {
                batch.put(keys::node(level, k), tree.get(level, k).unwrap().to_vec());
                flush(&mut batch, false);
            }
            level += 1;
        }
        for c in &self.checkpoints {
            batch.put(
                keys::checkpoint(c.checkpoint.size),
                serde_json::to_vec(c).unwrap(),
            );
        }
        for (index, (record, raw)) in &self.envelopes {
            batch.put(
                keys::envelope(record.seq),
                serde_json::to_vec(record).unwrap(),
            );
            if !self.pruned.contains_key(index) {
                batch.put(keys::raw(record.seq), raw.clone());
            }
            flush(&mut batch, false);
        }
        batch.put(
            keys::STATE.to_vec(),
            serde_json::to_vec(&json!({
                "journal_size": self.entries.len(),
                "next_seq": self.next_seq,
                "checkpoint_size": self.checkpoints.last().map_or(0, |c| c.checkpoint.size),
            }))
            .unwrap(),
        );
        flush(&mut batch, true);
        store.flush().unwrap();
    }
}

/// Opens the store in `dir`, waiting (up to 10 s) for a store just closed in this process to
/// let go of its lock: sled's background flusher holds it for up to a second after the drop.
pub fn open_store(dir: &Path) -> snodo_broker::store::SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match snodo_broker::store::SledStore::open(dir) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    }
}

/// A stand-in for the hub's journal API (`/v1/journal/...`), serving a synthetic journal over
/// mutual TLS with the hub's certificate, as the contract describes — for testing the audit
/// client without a hub.
pub struct MockJournalApi {
    pub url: String,
    /// Requests answered 503 before serving (to exercise retries).
    pub unavailable: Arc<std::sync::atomic::AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockJournalApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the mock serves, and how it misbehaves.
pub struct MockJournal {
    pub journal: SyntheticJournal,
    /// Entries withheld from listings, as from a caller who is not party to them.
    pub hidden: fn(u64) -> bool,
}

impl MockJournalApi {
    pub async fn start(mock: MockJournal) -> MockJournalApi {
        use axum::extract::{Path as UrlPath, Query, State};
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;
        use base64::Engine as _;
        use std::collections::HashMap;
        use std::sync::atomic::Ordering;

        type Shared = Arc<(MockJournal, snodo_broker::journal::MemoryTree)>;
        let pki_dir = mock.journal.pki.clone();
        let tree = mock.journal.tree();
        let state: Shared = Arc::new((mock, tree));
        let unavailable = Arc::new(std::sync::atomic::AtomicU32::new(0));

        fn problem(status: StatusCode, code: &str) -> Response {
            (
                status,
                [(header::CONTENT_TYPE, "application/problem+json")],
                serde_json::to_vec(
                    &json!({"status": status.as_u16(), "code": code, "detail": code}),
                )
                .unwrap(),
            )
                .into_response()
        }
        fn item(s: &Shared, i: u64) -> Value {
            let bytes = &s.0.journal.entries[i as usize];
            let entry = snodo_broker::journal::Entry::from_bytes(bytes).unwrap();
            json!({"index": i, "entry": entry,
                "bytes": base64::engine::general_purpose::STANDARD.encode(bytes)})
        }
        let b64 = |h: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(h);

        let entries = move |State(s): State<Shared>,
                            headers: HeaderMap,
                            Query(q): Query<HashMap<String, String>>| async move {
            let size = s.0.journal.entries.len() as u64;
            let after = q.get("after").and_then(|a| a.parse::<u64>().ok());
            let matching: Vec<u64> = (0..size)
                .filter(|i| after.is_none_or(|a| *i > a))
                .filter(|i| !(s.0.hidden)(*i))
                .filter(|i| {
                    let e =
                        snodo_broker::journal::Entry::from_bytes(&s.0.journal.entries[*i as usize])
                            .unwrap();
                    q.get("kind").is_none_or(|k| e.kind.as_str() == k)
                        && q.get("sender").is_none_or(|x| e.sender.as_ref() == Some(x))
                })
                .collect();
            let ndjson = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("ndjson"));
            if ndjson {
                let mut body = Vec::new();
                for i in matching {
                    body.extend_from_slice(&serde_json::to_vec(&item(&s, i)).unwrap());
                    body.push(b'\n');
                }
                ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
            } else {
                let items: Vec<Value> = matching.iter().map(|i| item(&s, *i)).collect();
                axum::Json(json!({"entries": items, "next": null})).into_response()
            }
        };
        let app = axum::Router::new()
            .route("/v1/journal/entries", get(entries))
            .route(
                "/v1/journal/entries/{index}",
                get(|State(s): State<Shared>, UrlPath(i): UrlPath<u64>| async move {
                    if i as usize >= s.0.journal.entries.len() {
                        return problem(StatusCode::NOT_FOUND, "not-found");
                    }
                    axum::Json(item(&s, i)).into_response()
                }),
            )
            .route(
                "/v1/journal/envelopes/{id}/raw",
                get(|State(s): State<Shared>, UrlPath(id): UrlPath<uuid::Uuid>| async move {
                    match s.0.journal.envelopes.values().find(|(r, _)| r.id == id) {
                        Some((r, raw)) => {
                            let media = if r.format == "xml" {
                                "application/xml"
                            } else {
                                "application/jose+json"
                            };
                            ([(header::CONTENT_TYPE, media)], raw.clone()).into_response()
                        }
                        None => problem(StatusCode::NOT_FOUND, "not-found"),
                    }
                }),
            )
            .route(
                "/v1/journal/checkpoint",
                get(|State(s): State<Shared>| async move {
                    axum::Json(s.0.journal.checkpoints.last().cloned()).into_response()
                }),
            )
            .route(
                "/v1/journal/checkpoints",
                get(
                    |State(s): State<Shared>, Query(q): Query<HashMap<String, u64>>| async move {
                        let (from, to) = (q["from"], q["to"]);
                        let list: Vec<_> = s
                            .0
                            .journal
                            .checkpoints
                            .iter()
                            .filter(|c| (from..=to).contains(&c.checkpoint.size))
                            .take(1000)
                            .cloned()
                            .collect();
                        axum::Json(json!({ "checkpoints": list })).into_response()
                    },
                ),
            )
            .route(
                "/v1/journal/proof/inclusion",
                get(
                    move |State(s): State<Shared>, Query(q): Query<HashMap<String, u64>>| async move {
                        match s.1.inclusion_proof(q["index"], q["size"]) {
                            Ok(p) => axum::Json(json!({"index": q["index"], "size": q["size"],
                                "hashes": p.iter().map(b64).collect::<Vec<_>>()}))
                            .into_response(),
                            Err(_) => problem(StatusCode::BAD_REQUEST, "bad-parameter"),
                        }
                    },
                ),
            )
            .route(
                "/v1/journal/proof/consistency",
                get(
                    move |State(s): State<Shared>, Query(q): Query<HashMap<String, u64>>| async move {
                        match s.1.consistency_proof(q["from"], q["to"]) {
                            Ok(p) => axum::Json(json!({"from": q["from"], "to": q["to"],
                                "hashes": p.iter().map(b64).collect::<Vec<_>>()}))
                            .into_response(),
                            Err(_) => problem(StatusCode::BAD_REQUEST, "bad-parameter"),
                        }
                    },
                ),
            )
            .with_state(state);
        let gate = unavailable.clone();
        let app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let gate = gate.clone();
                async move {
                    let left = gate.load(Ordering::SeqCst);
                    if left > 0 {
                        gate.store(left - 1, Ordering::SeqCst);
                        return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
                    }
                    next.run(req).await
                }
            },
        ));

        let tls = snodo_broker::tls::server_config(
            &pki_dir.join("ca.crt"),
            None,
            &pki_dir.join("hub.crt"),
            &pki_dir.join("hub.key"),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
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
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        MockJournalApi {
            url,
            unavailable,
            task,
        }
    }
}

/// Issues an auditor's key and certificate (`auditor-<name>.*`) in `pki_dir`.
pub fn issue_auditor(pki_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ca = pki::CertificateAuthority::load(pki_dir).unwrap();
    pki::issue(
        pki_dir,
        &ca,
        &pki::Subject::Auditor(name.into()),
        KeyType::P256,
        pki::Validity::default(),
    )
    .unwrap();
    (
        pki_dir.join(format!("auditor-{name}.crt")),
        pki_dir.join(format!("auditor-{name}.key")),
    )
}
