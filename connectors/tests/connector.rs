//! `snodo-connector` as a child process against a real hub: the `dir` adapter killed with
//! SIGKILL inside each window between receiving an envelope and acknowledging it, then
//! restarted, losing nothing and writing nothing twice; its outbox (sent, refused by the
//! adapter, refused by the hub); the `http` adapter both ways; configuration errors.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use snodo_broker::cli::serve::Running;
use snodo_envelopes::{EntityId, Format, Profile, Recipient};

/// A `snodo-connector` child process, its standard error collected line by line.
struct Connector {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Connector {
    fn start(config: &Path, env: &[(&str, &str)]) -> Connector {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_snodo-connector"));
        cmd.arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Connector { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a line of its log contains `text`.
    async fn wait_for(&mut self, text: &str, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the connector exited ({status}) before `{text}`:\n{}",
                    self.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no `{text}` in the connector's log after {secs} s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash: nothing is flushed or finished.
    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connector configuration for `entity` with `adapter` lines, pulling with short leases.
fn write_config(t: &TestHub, hub: &Running, entity: &str, adapter: &str) -> PathBuf {
    write_config_receiving(
        t,
        hub,
        entity,
        "mode = \"pull\"\nlease = \"2s\"\nidle = \"50ms\"",
        adapter,
    )
}

/// A connector configuration with `receive` and `adapter` lines.
fn write_config_receiving(
    t: &TestHub,
    hub: &Running,
    entity: &str,
    receive: &str,
    adapter: &str,
) -> PathBuf {
    let (cert, key) = t.files(entity);
    let dir = t
        .dir
        .path()
        .join(format!("connector-{}", entity.replace(':', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        r#"
[hub]
url = "{url}"
attempts = 3

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[state]
dir = "state"

[receive]
{receive}

[adapter]
{adapter}
"#,
        url = url(hub),
        ca = t.pki().join("ca.crt").display(),
        cert = cert.display(),
        key = key.display(),
    );
    let path = dir.join("connector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// How many `acknowledged` entries the journal holds for `id`, asked by its sender.
async fn acknowledgements(t: &TestHub, hub: &Running, sender: &str, id: uuid::Uuid) -> usize {
    let client = raw_client(&t.pki(), &sender.parse::<EntityId>().unwrap().file_stem());
    let status: Value = client
        .get(format!("{}/v1/envelopes/{id}", url(hub)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"))
        .iter()
        .filter(|e| e["kind"] == "acknowledged")
        .count()
}

fn to(entity: &str) -> Recipient {
    Recipient::Entity(entity.parse::<EntityId>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dir_adapter_killed_in_every_window_loses_nothing_and_writes_nothing_twice() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let config = write_config(
        &t,
        &hub,
        TURIN,
        "kind = \"dir\"\ndir = \"scambio\"\npoll = \"100ms\"\nunknown_messages = \"well-formed\"",
    );
    let exchange = config.parent().unwrap().join("scambio");
    let inbox = exchange.join("inbox");
    let portal = t.client(&hub, PORTAL, Format::Json);
    let env = portal
        .envelope(to(TURIN), "prova.scambio", "richiesta")
        .profile(Profile::Request)
        .json(json!({"pratica": "P-17", "indirizzo": "via Garibaldi 12"}))
        .build()
        .unwrap();
    let signed = portal.sign(&env).unwrap();
    portal.submit_signed(&signed).await.unwrap();
    let id = env.header.id.to_string();
    let hook = |var: &str| format!("test hook {var}: pausing 60000 ms at envelope {id}");

    // 1. Received and verified, not yet written: killed.
    let mut c = Connector::start(
        &config,
        &[("SNODO_TEST_PAUSE_BEFORE_INBOX_WRITE_MS", "60000")],
    );
    c.wait_for(&hook("SNODO_TEST_PAUSE_BEFORE_INBOX_WRITE_MS"), 20)
        .await;
    c.crash();
    assert!(files_in(&inbox).is_empty(), "{:?}", files_in(&inbox));

    // 2. Written under its temporary name and recorded as processed, not yet renamed: killed.
    let mut c = Connector::start(
        &config,
        &[("SNODO_TEST_PAUSE_BEFORE_INBOX_RENAME_MS", "60000")],
    );
    c.wait_for(&hook("SNODO_TEST_PAUSE_BEFORE_INBOX_RENAME_MS"), 20)
        .await;
    c.crash();
    let names = files_in(&inbox);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with('.') && names[0].ends_with(".tmp"),
        "{names:?}"
    );

    // 3. Restarted: the rename is finished at start-up; the redelivery is recognised; killed
    //    before the ack.
    let mut c = Connector::start(&config, &[("SNODO_TEST_PAUSE_BEFORE_ACK_MS", "60000")]);
    c.wait_for(&hook("SNODO_TEST_PAUSE_BEFORE_ACK_MS"), 20)
        .await;
    assert!(
        c.log()
            .contains("Redelivery of an envelope already processed."),
        "{}",
        c.log()
    );
    c.crash();
    assert_eq!(acknowledgements(&t, &hub, PORTAL, env.header.id).await, 0);

    // 4. Restarted without hooks: the third delivery is acknowledged, and still one file.
    let c = Connector::start(&config, &[]);
    eventually(20, "the acknowledgement", || async {
        (acknowledgements(&t, &hub, PORTAL, env.header.id).await == 1).then_some(())
    })
    .await;
    let names = files_in(&inbox);
    let expected = format!("portale-comunefacile__prova.scambio__richiesta__{id}.json");
    assert_eq!(names, vec![expected.clone()]);
    assert_eq!(
        std::fs::read(inbox.join(&expected)).unwrap(),
        signed.bytes.to_vec()
    );

    // The outbox: an answer to the request joins its conversation and reaches the portal.
    let outbox = exchange.join("outbox");
    let answer = format!("portale-comunefacile__prova.scambio__esito__re-{id}__p-17.json");
    std::fs::write(outbox.join(&answer), r#"{"esito": "registrata"}"#).unwrap();
    // A file that is not JSON, and one the hub refuses (an `esito` that answers nothing).
    std::fs::write(
        outbox.join("anpr-ministero__prova.scambio__notifica.json"),
        "{\"pratica\": ",
    )
    .unwrap();
    std::fs::write(
        outbox.join("comune-004078__prova.scambio__esito.json"),
        "{}",
    )
    .unwrap();
    // An XML body, to ANPR, with a tag for the municipal system.
    std::fs::write(
        outbox.join("anpr-ministero__prova.scambio__notifica__p-17.xml"),
        "<avviso xmlns=\"urn:prova\"><pratica>P-17</pratica></avviso>",
    )
    .unwrap();
    let sent = exchange.join("sent");
    let error = exchange.join("error");
    eventually(20, "the outbox emptied", || async {
        files_in(&outbox).is_empty().then_some(())
    })
    .await;
    let sent_names = files_in(&sent);
    assert_eq!(sent_names.len(), 4, "{sent_names:?}");
    assert!(
        sent_names
            .iter()
            .any(|n| n.ends_with(&format!("__{answer}")))
    );
    assert!(sent_names.iter().any(|n| n.ends_with(".receipt.json")));
    let reason =
        std::fs::read_to_string(error.join("anpr-ministero__prova.scambio__notifica.json.reason"))
            .unwrap();
    assert!(reason.contains("not well-formed JSON"), "{reason}");
    let reason =
        std::fs::read_to_string(error.join("comune-004078__prova.scambio__esito.json.reason"))
            .unwrap();
    assert!(reason.contains("the hub refused"), "{reason}");
    assert!(reason.contains("profile-not-allowed"), "{reason}");

    let leased = portal.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1);
    let h = &leased[0].inbound.envelope.header;
    assert_eq!(h.in_reply_to, Some(env.header.id));
    assert_eq!(h.conversation, env.header.conversation);
    assert_eq!(h.profile, Profile::Response);
    assert_eq!(
        leased[0].inbound.envelope.body,
        snodo_envelopes::Body::Json(json!({"esito": "registrata"}))
    );

    let anpr = t.client(&hub, ANPR, Format::Json);
    let leased = anpr.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(
        leased[0].inbound.envelope.body,
        snodo_envelopes::Body::Xml(
            "<avviso xmlns=\"urn:prova\"><pratica>P-17</pratica></avviso>".into()
        )
    );
    assert_eq!(leased[0].inbound.envelope.header.sender.as_str(), TURIN);

    assert!(c.stop().success(), "a clean stop on SIGTERM");
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_envelopes_reach_the_inbox_folder_once() {
    let port = free_port();
    let t = TestHub::new(&[(TURIN, format!("https://127.0.0.1:{port}/snodo/push"))]);
    let hub = t.start().await;
    let config = write_config_receiving(
        &t,
        &hub,
        TURIN,
        &format!("mode = \"push\"\nlisten = \"127.0.0.1:{port}\""),
        "kind = \"dir\"\ndir = \"scambio\"",
    );
    let inbox = config.parent().unwrap().join("scambio/inbox");
    let mut c = Connector::start(&config, &[]);
    c.wait_for("Push receiver listening.", 20).await;
    let portal = t.client(&hub, PORTAL, Format::Xml);
    let mut ids = Vec::new();
    for n in 0..3 {
        let env = portal
            .envelope(to(TURIN), "prova.scambio", "notifica")
            .json(json!({"n": n}))
            .build()
            .unwrap();
        portal.submit(&env).await.unwrap();
        ids.push(env.header.id);
    }
    // Written under a temporary name first: wait for the three names in place.
    let names = eventually(20, "three inbox files", || async {
        let names = files_in(&inbox);
        (names.len() == 3 && names.iter().all(|n| !n.starts_with('.'))).then_some(names)
    })
    .await;
    for id in ids {
        assert!(
            names.iter().any(|n| n.ends_with(&format!("__{id}.xml"))),
            "{id} in {names:?}"
        );
    }
    assert!(c.stop().success());
    assert_eq!(files_in(&inbox).len(), 3);
    hub.shutdown().await.unwrap();
}

/// The municipal system's endpoint: answers 500 to the first `fail_first` deliveries.
async fn municipal_system(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let app = axum::Router::new().route(
        "/snodo/in",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let r = r.clone();
            async move {
                let mut all = r.lock().unwrap();
                all.push(v);
                if all.len() <= fail_first {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snodo/in", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_adapter_delivers_until_a_2xx_and_sends_with_idempotent_ids() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let (deliver_to, received) = municipal_system(1).await;
    let port = free_port();
    let config = write_config(
        &t,
        &hub,
        TURIN,
        &format!(
            "kind = \"http\"\ndeliver_to = \"{deliver_to}\"\nlisten = \"127.0.0.1:{port}\"\nunknown_messages = \"well-formed\""
        ),
    );
    let mut c = Connector::start(&config, &[]);
    c.wait_for("Local sending endpoint listening.", 20).await;

    // Receiving: the first POST fails (500), the envelope comes back, the second is taken.
    let portal = t.client(&hub, PORTAL, Format::Xml);
    let env = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .xml("<avviso xmlns=\"urn:prova\"><pratica>P-5</pratica></avviso>")
        .build()
        .unwrap();
    portal.submit(&env).await.unwrap();
    eventually(20, "the acknowledgement", || async {
        (acknowledgements(&t, &hub, PORTAL, env.header.id).await == 1).then_some(())
    })
    .await;
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], got[1], "the same message both times");
        assert_eq!(got[1]["header"]["id"], env.header.id.to_string());
        assert_eq!(got[1]["header"]["sender"], PORTAL);
        assert_eq!(got[1]["format"], "xml");
        assert_eq!(
            got[1]["body"],
            "<avviso xmlns=\"urn:prova\"><pratica>P-5</pratica></avviso>"
        );
        // The exact signed bytes, which verify.
        let raw = got[1]["envelope"].as_str().unwrap();
        let verified = portal.verifier().verify(raw.as_bytes()).unwrap();
        assert_eq!(verified.envelope, env);
    }

    // Sending, with an id: a retry is the same envelope, delivered once.
    let local = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/v1/messages");
    let id = uuid::Uuid::now_v7();
    let message = json!({
        "recipient": PORTAL, "service": "prova.scambio", "action": "esito",
        "body": {"esito": "registrata"}, "in_reply_to": env.header.id, "id": id,
    });
    let first: Value = local
        .post(&endpoint)
        .json(&message)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["envelope_id"], id.to_string(), "{first}");
    assert_eq!(first["duplicate"], false);
    let again = local.post(&endpoint).json(&message).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["receipt"], first["receipt"]);
    // The same id for another message is a conflict; a bad message is named.
    let mut other = message.clone();
    other["body"] = json!({"esito": "rifiutata"});
    let resp = local.post(&endpoint).json(&other).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let resp = local
        .post(&endpoint)
        .json(&json!({"recipient": "nobody", "service": "prova.scambio", "action": "esito", "body": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("recipient"),
        "{problem}"
    );
    // A message the hub refuses: its code comes back.
    let resp = local
        .post(&endpoint)
        .json(
            &json!({"recipient": CUNEO, "service": "prova.scambio", "action": "esito", "body": {}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "profile-not-allowed", "{problem}");

    let leased = portal.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1, "sent once");
    assert_eq!(leased[0].inbound.id(), id);
    assert_eq!(
        leased[0].inbound.envelope.header.conversation,
        env.header.conversation
    );
    assert!(c.stop().success());
    hub.shutdown().await.unwrap();
}

#[test]
fn a_bad_configuration_exits_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let base = "[hub]\nurl = \"https://127.0.0.1:1\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[state]\ndir = \"s\"\n";
    for (adapter, says) in [
        (
            "[adapter]\nkind = \"dir\"\ndir = \"x\"\nunknown = 1\n",
            "adapter: unknown field `unknown`",
        ),
        (
            "[adapter]\nkind = \"reference\"\nback_office = \"comune\"\n",
            "adapter.data: missing field `stradario`",
        ),
        (
            "[adapter]\nkind = \"http\"\ndeliver_to = \"ftp://x\"\nlisten = \"127.0.0.1:1\"\n",
            "adapter.deliver_to",
        ),
    ] {
        std::fs::write(&path, format!("{base}{adapter}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_snodo-connector"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    std::fs::write(
        &path,
        format!("{base}[adapter]\nkind = \"dir\"\ndir = \"x\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snodo-connector"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_snodo-connector"))
        .arg("--schema")
        .output()
        .unwrap();
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["adapter"].is_object());
}
