//! The life of a `snodo serve` process as an operator sees it: SIGTERM with requests in
//! flight, SIGHUP and `POST /v1/admin/reload` with good and broken files, a bad configuration
//! at start, and `snodo serve --dev` on an empty directory.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::{self, ChildGuard, HubProcess};
use common::*;
use serde_json::json;
use snodo_broker::journal::Receipt;
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Envelope, Format, Profile};
use uuid::Uuid;

/// No rate limit gets in the way of the load.
const LIMITS: &str = "requests_per_second = 100000\nburst = 100000";

/// How one submission ended.
#[derive(Debug)]
enum Outcome {
    /// A receipt, and whether the request was sent before SIGTERM and answered after it.
    Receipt(Box<Receipt>, bool),
    /// No receipt: the connection failed or the hub said it was unavailable.
    Failed(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_exits_0_and_loses_nothing() {
    let t = TestHub::new(LIMITS);
    let mut hub = HubProcess::new(&t);
    let senders = [TURIN, CUNEO, PORTAL];
    // (sender, id, signed bytes, format)
    type Load = Vec<(usize, Uuid, Vec<u8>, Format)>;
    let items: Arc<Load> = Arc::new(
        (0..600)
            .map(|n| {
                let format = if n % 2 == 0 {
                    Format::Json
                } else {
                    Format::Xml
                };
                let sender = n % senders.len();
                let (env, bytes) = t.envelope(
                    senders[sender],
                    ANPR,
                    "residenza.cambio",
                    "richiesta",
                    json!({ "n": n }),
                    format,
                );
                (sender, env.header.id, bytes, format)
            })
            .collect(),
    );
    let clients: Arc<Vec<Client>> = Arc::new(senders.iter().map(|s| t.client(s)).collect());
    hub.start().await;
    let base = hub.base();

    // Eight tasks submit, each envelope once, until the queue is empty.
    let next = Arc::new(AtomicUsize::new(0));
    let sigterm_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let outcomes: Arc<Mutex<HashMap<Uuid, Outcome>>> = Arc::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (items, clients, next, base) =
                (items.clone(), clients.clone(), next.clone(), base.clone());
            let (sigterm_at, outcomes) = (sigterm_at.clone(), outcomes.clone());
            tokio::spawn(async move {
                while let Some((sender, id, bytes, format)) =
                    items.get(next.fetch_add(1, Ordering::SeqCst))
                {
                    let sent = Instant::now();
                    let a = clients[*sender].try_submit_at(&base, bytes, *format).await;
                    let outcome = match a {
                        Ok(a) if a.status == 202 => {
                            let in_flight = sigterm_at
                                .lock()
                                .unwrap()
                                .is_some_and(|s| sent < s && s < Instant::now());
                            let receipt = Receipt::from_json(&a.body).unwrap();
                            Outcome::Receipt(Box::new(receipt), in_flight)
                        }
                        Ok(a) if a.status == 503 => Outcome::Failed("503".into()),
                        Ok(a) => panic!("{} {}", a.status, String::from_utf8_lossy(&a.body)),
                        Err(e) => Outcome::Failed(root_cause(&e)),
                    };
                    outcomes.lock().unwrap().insert(*id, outcome);
                }
            })
        })
        .collect();

    // SIGTERM once a hundred receipts are in, with requests in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcomes.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    *sigterm_at.lock().unwrap() = Some(Instant::now());
    hub.signal("TERM");
    let status = hub.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(status.code(), Some(0), "{}", hub.log_text());
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("submitters hung after the hub stopped")
            .unwrap();
    }
    let log = hub.log_text();
    assert!(log.contains("Shutting down"), "{log}");
    assert!(
        log.contains("snodo hub stopped; everything accepted is on disk."),
        "{log}"
    );
    assert!(
        !log.contains("were cut"),
        "requests were cut at the drain timeout:\n{log}"
    );
    let outcomes = Arc::try_unwrap(outcomes).unwrap().into_inner().unwrap();
    let receipted: HashMap<Uuid, Receipt> = outcomes
        .iter()
        .filter_map(|(id, o)| match o {
            Outcome::Receipt(r, _) => Some((*id, (**r).clone())),
            Outcome::Failed(_) => None,
        })
        .collect();
    let finished_in_flight = outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Receipt(_, true)))
        .count();
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for o in outcomes.values() {
        if let Outcome::Failed(why) = o {
            *reasons.entry(why.as_str()).or_default() += 1;
        }
    }
    let failed: usize = reasons.values().sum();
    eprintln!(
        "{} receipts ({finished_in_flight} for requests sent before SIGTERM and answered after), \
         {failed} without: {reasons:?}",
        receipted.len()
    );
    assert!(
        finished_in_flight > 0,
        "no request in flight at SIGTERM was answered"
    );
    assert!(
        failed > 0,
        "every submission got a receipt: the hub stopped after the load"
    );

    // After a restart: every receipted envelope is there (a retry gets the original receipt);
    // none that failed was accepted (a retry is new), so no answer was cut after acceptance.
    hub.start().await;
    for (sender, id, bytes, format) in items.iter() {
        let a = clients[*sender]
            .try_submit_at(&base, bytes, *format)
            .await
            .unwrap();
        match receipted.get(id) {
            Some(r) => {
                assert_eq!(a.status, 200, "{id}: {}", String::from_utf8_lossy(&a.body));
                assert_eq!(&Receipt::from_json(&a.body).unwrap(), r, "{id}'s receipt");
            }
            None => assert_eq!(
                a.status, 202,
                "{id} was accepted, yet its client got {:?}",
                outcomes[id]
            ),
        }
    }
    // Each envelope is in the inbox once.
    let anpr = t.client(ANPR);
    let mut seen = HashSet::new();
    loop {
        let a = anpr
            .try_get_at(&base, "/v1/inbox?limit=100&lease=60s")
            .await
            .unwrap();
        let leased = a.json()["envelopes"].as_array().unwrap().clone();
        if leased.is_empty() {
            break;
        }
        for e in leased {
            let id: Uuid = e["envelope_id"].as_str().unwrap().parse().unwrap();
            assert!(seen.insert(id), "{id} delivered twice");
        }
    }
    assert_eq!(seen.len(), items.len());
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(40)).await.success());
}

/// The innermost error of a chain: what actually went wrong with a request.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Replaces `from` with `to` in the configuration file, which must hold `from`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "`{from}` not in\n{text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_admin_reload_apply_a_good_file_and_keep_the_old_one_for_a_bad_file() {
    const ASTI: &str = "comune:005005";
    let t = TestHub::new("");
    // Asti has a certificate of the federation, but the configuration does not know it yet.
    let ca = pki::CertificateAuthority::load(&t.pki()).unwrap();
    pki::issue(
        &t.pki(),
        &ca,
        &pki::Subject::Entity(ASTI.parse::<EntityId>().unwrap()),
        KeyType::P256,
        pki::Validity::default(),
    )
    .unwrap();
    let mut hub = HubProcess::new(&t);
    hub.start().await;
    let base = hub.base();
    let submit = |from: &'static str| {
        let (_, bytes) = t.envelope(
            from,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({}),
            Format::Json,
        );
        let (client, base) = (t.client(from), base.clone());
        async move {
            client
                .try_submit_at(&base, &bytes, Format::Json)
                .await
                .unwrap()
        }
    };
    let a = submit(PAGOPA).await;
    assert_eq!((a.status, a.code()), (403, "sender-not-allowed".into()));
    let a = submit(ASTI).await;
    assert_eq!((a.status, a.code()), (403, "unknown-sender".into()));

    // SIGHUP after allowing the payment provider to send: it may, without a restart.
    let allowed = r#"senders = ["comune:*", "portale:comunefacile"]"#;
    let with_pagopa = r#"senders = ["comune:*", "portale:comunefacile", "pagopa:nodo"]"#;
    edit(&hub.config, allowed, with_pagopa);
    hub.signal("HUP");
    let (ok, log) = hub
        .wait_log("Configuration reloaded.", 1, Duration::from_secs(10))
        .await;
    assert!(ok, "{log}");
    assert_eq!(submit(PAGOPA).await.status, 202);

    // SIGHUP after a broken edit: refused, the log names the field, the old file stays.
    edit(
        &hub.config,
        "[limits]\n",
        "[limits]\nrequests_per_secnd = 5\n",
    );
    hub.signal("HUP");
    let (ok, log) = hub
        .wait_log(
            "Configuration not reloaded; the old one stays.",
            1,
            Duration::from_secs(10),
        )
        .await;
    assert!(ok, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("Configuration not reloaded"))
        .unwrap();
    assert!(
        line.contains("limits.requests_per_secnd") && line.contains("unknown field"),
        "{line}"
    );
    assert_eq!(
        submit(PAGOPA).await.status,
        202,
        "the configuration in force is still the last good one"
    );

    // The same through the API: the hub's own certificate only.
    let reload = |who: &str| {
        let client = child_client(&t.pki(), who);
        let base = base.clone();
        async move {
            client
                .try_send(client.http.post(format!("{base}/v1/admin/reload")))
                .await
                .unwrap()
        }
    };
    for who in [TURIN, "auditor-corte-dei-conti"] {
        let a = reload(who).await;
        assert_eq!((a.status, a.code()), (403, "forbidden".into()), "{who}");
    }
    let a = reload("hub").await;
    assert_eq!((a.status, a.code()), (422, "config-invalid".into()));
    let detail = a.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("limits.requests_per_secnd"), "{detail}");
    assert_eq!(submit(PAGOPA).await.status, 202);
    assert_eq!(submit(ASTI).await.status, 403);

    // Mended, with Asti added: the API reload applies it.
    edit(&hub.config, "requests_per_secnd = 5\n", "");
    edit(
        &hub.config,
        "[[entities]]\n",
        &format!("[[entities]]\nid = \"{ASTI}\"\nname = \"Comune di Asti\"\n\n[[entities]]\n"),
    );
    let a = reload("hub").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert!(text.starts_with("reloaded: 6 entities"), "{text}");
    assert_eq!(submit(ASTI).await.status, 202);
    assert_eq!(submit(PAGOPA).await.status, 202);

    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(40)).await.success());
}

/// A client presenting the certificate of `who` (an entity id, `hub` or `auditor-NAME`).
fn child_client(pki: &Path, who: &str) -> Client {
    let stem = who
        .parse::<EntityId>()
        .map(|e| e.file_stem())
        .unwrap_or_else(|_| who.to_owned());
    client_with(pki, &stem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_exits_naming_the_field_before_binding_any_port() {
    let t = TestHub::new("");
    let hub = HubProcess::new(&t);
    let good = std::fs::read_to_string(&hub.config).unwrap();
    edit(&hub.config, "[hub]\n", "[hub]\nlisen = \"127.0.0.1:1\"\n");
    let serve = || {
        let mut cmd = child::snodo();
        cmd.arg("serve")
            .arg("--config")
            .arg(&hub.config)
            .current_dir(t.dir.path());
        cmd
    };
    let refused = |o: &child::Finished| {
        assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
        assert!(o.stderr.contains("snodo.toml"), "{}", o.stderr);
        assert!(
            o.stderr.contains("hub.lisen") && o.stderr.contains("unknown field `lisen`"),
            "the field is not named: {}",
            o.stderr
        );
        assert!(!o.stderr.contains("cannot listen"), "{}", o.stderr);
    };

    let o = child::run_bounded(serve(), t.dir.path(), Duration::from_secs(30)).await;
    refused(&o);
    assert!(
        child::port_is_free(hub.port) && child::port_is_free(hub.plain_port),
        "a port is taken"
    );
    assert!(
        !t.dir.path().join("data").exists(),
        "the data directory was created for a configuration that was refused"
    );

    // With the HTTPS port taken, the answer is still the field: the file is checked first.
    let taken = std::net::TcpListener::bind(("127.0.0.1", hub.port)).unwrap();
    let o = child::run_bounded(serve(), t.dir.path(), Duration::from_secs(30)).await;
    refused(&o);
    // While the good file, on the taken port, is refused for the port.
    std::fs::write(&hub.config, good).unwrap();
    let o = child::run_bounded(serve(), t.dir.path(), Duration::from_secs(30)).await;
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{}", hub.port)),
        "{}",
        o.stderr
    );
    drop(taken);
}

/// The lines of a child's stdout, read on a thread, as they come.
fn lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The path after each `flag` on `line`.
fn paths_after(line: &str, flag: &str) -> Vec<PathBuf> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| PathBuf::from(w[1]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_creates_a_federation_serves_it_and_prints_commands_that_work() {
    const DEV_PORT: u16 = 8443;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    std::fs::create_dir(&dir).unwrap();
    let serve = || {
        let mut cmd = child::snodo();
        cmd.args(["serve", "--dev", "--data-dir"])
            .arg(&dir)
            .current_dir(tmp.path())
            .env("NO_COLOR", "1");
        cmd
    };
    if !child::port_is_free(DEV_PORT) {
        // Only the port-dependent part is skipped: the federation is still created.
        let o = child::run_bounded(serve(), tmp.path(), Duration::from_secs(60)).await;
        assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
        assert!(
            o.stderr.contains("cannot listen on 127.0.0.1:8443"),
            "{}",
            o.stderr
        );
        assert!(dir.join("snodo.toml").is_file() && dir.join("pki/ca.crt").is_file());
        eprintln!(
            "SKIPPED the serving part of `snodo serve --dev`: 127.0.0.1:{DEV_PORT}, the dev \
             configuration's port, is busy on this machine"
        );
        return;
    }
    let stderr_log = tmp.path().join("dev.log");
    let mut guard = ChildGuard(Some(
        serve()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(child::log_file(&stderr_log))
            .spawn()
            .unwrap(),
    ));
    let rx = lines(guard.get().stdout.take().unwrap());
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed
        .iter()
        .any(|l: &String| l.starts_with("Other senders:"))
    {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => printed.push(line),
            Err(_) => {
                if let Some(status) = guard.get().try_wait().unwrap() {
                    let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                    if log.contains("cannot listen on 127.0.0.1:8443") {
                        eprintln!(
                            "SKIPPED the serving part of `snodo serve --dev`: 127.0.0.1:{DEV_PORT} \
                             was taken by another process meanwhile"
                        );
                        return;
                    }
                    panic!("snodo serve --dev exited ({status}):\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no instructions within 60 s:\n{}",
                    printed.join("\n")
                );
            }
        }
    }
    let text = printed.join("\n");
    assert!(dir.join("snodo.toml").is_file(), "{text}");
    // Each command, its continuation lines (after a trailing `\`) joined.
    let mut commands = vec![String::new()];
    for line in &printed {
        let last = commands.last_mut().unwrap();
        match line.strip_suffix('\\') {
            Some(head) => last.push_str(head),
            None => {
                last.push_str(line);
                commands.push(String::new());
            }
        }
    }
    let curls: Vec<&String> = commands
        .iter()
        .filter(|c| c.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 4, "{text}");
    // Every certificate and key named exists, by an absolute path.
    for command in &commands {
        for flag in ["--cacert", "--cert", "--key"] {
            for path in paths_after(command, flag) {
                assert!(path.is_absolute(), "{flag} {} in\n{text}", path.display());
                assert!(path.is_file(), "{flag} {} does not exist", path.display());
                assert!(
                    path.starts_with(&dir),
                    "{} not in {}",
                    path.display(),
                    dir.display()
                );
            }
        }
    }

    // The printed lines reach the hub: the API description, and the recipient's empty inbox.
    let openapi = curls
        .iter()
        .find(|c| c.contains("/v1/openapi.json"))
        .unwrap();
    let inbox = curls.iter().find(|c| c.contains("/v1/inbox?")).unwrap();
    assert!(
        inbox.contains("'https://localhost:8443/v1/inbox?limit=10&lease=30s'"),
        "{inbox}"
    );
    let cert_of = |command: &str| {
        let (ca, cert, key) = (
            paths_after(command, "--cacert").remove(0),
            paths_after(command, "--cert").remove(0),
            paths_after(command, "--key").remove(0),
        );
        let config = snodo_broker::tls::client_config(&ca, &cert, &key).unwrap();
        Client {
            http: reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .build()
                .unwrap(),
        }
    };
    let base = format!("https://127.0.0.1:{DEV_PORT}");
    let a = cert_of(openapi)
        .try_get_at(&base, "/v1/openapi.json")
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["openapi"], "3.1.0");
    let a = cert_of(inbox)
        .try_get_at(&base, "/v1/inbox?limit=10&lease=30s")
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json(), json!({ "envelopes": [] }));

    child::send_signal(guard.get().id(), "TERM");
    let status = child::wait_exit(guard.get(), Duration::from_secs(40)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_list_added_by_reload_shuts_the_revoked_entity_out() {
    let t = TestHub::new("");
    let mut hub = HubProcess::new(&t);
    hub.start().await;
    let base = hub.base();
    let inbox = |who: &str| {
        // A new client each time: a new connection, a new handshake.
        let client = t.client(who);
        let base = base.clone();
        async move { client.try_get_at(&base, "/v1/inbox").await }
    };
    assert_eq!(inbox(CUNEO).await.unwrap().status, 200);
    // A connection Cuneo keeps open across the revocation.
    let open = t.client(CUNEO);
    assert_eq!(
        open.try_get_at(&base, "/v1/inbox").await.unwrap().status,
        200
    );

    // Cuneo's certificate is revoked, the list named in the configuration, which is reloaded.
    let mut revoke = child::snodo();
    revoke
        .args(["pki", "revoke", "--dir", "pki", "--entity", CUNEO])
        .current_dir(t.dir.path());
    let o = child::run_bounded(revoke, t.dir.path(), Duration::from_secs(30)).await;
    assert!(o.status.success(), "{}", o.stderr);
    edit(
        &hub.config,
        "key = \"pki/hub.key\"\n",
        "key = \"pki/hub.key\"\ncrl = \"pki/ca.crl\"\n",
    );
    hub.signal("HUP");
    let (ok, log) = hub
        .wait_log("Configuration reloaded.", 1, Duration::from_secs(10))
        .await;
    assert!(ok, "{log}");

    assert_eq!(inbox(TURIN).await.unwrap().status, 200);
    let r = inbox(CUNEO).await;
    assert!(
        r.is_err(),
        "a revoked entity read its inbox after the revocation list was reloaded: {r:?}"
    );
    // The connection opened before the reload is refused request by request.
    let a = open.try_get_at(&base, "/v1/inbox").await.unwrap();
    assert_eq!((a.status, a.code()), (403, "certificate-revoked".into()));

    // As after a restart.
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(40)).await.success());
    hub.start().await;
    assert_eq!(inbox(TURIN).await.unwrap().status, 200);
    assert!(inbox(CUNEO).await.is_err(), "revoked, after a restart");
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(40)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_a_request_waiting_for_its_response_with_its_receipt() {
    // Waits longer than the drain may last are allowed.
    let t = TestHub::new("max_wait = \"2m\"");
    let mut hub = HubProcess::new(&t);
    hub.start().await;
    let base = hub.base();
    // A request from the portal that nobody answers, waiting up to a minute for its response.
    let env = Envelope::builder(
        PORTAL.parse().unwrap(),
        ANPR.parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    )
    .profile(Profile::Request)
    .json(json!({ "cf": "RSSMRA80A01L219X" }))
    .build()
    .unwrap();
    let id = env.header.id;
    let signed = snodo_envelopes::sign(&env, &t.signer(PORTAL), Format::Json).unwrap();
    let portal = t.client(PORTAL);
    let waiting = {
        let (portal, base, signed) = (portal.clone(), base.clone(), signed.clone());
        tokio::spawn(async move {
            let req = portal
                .http
                .post(format!("{base}/v1/envelopes?wait=60s"))
                .header("content-type", Format::Json.media_type())
                .body(signed);
            portal
                .try_send_within(req, Duration::from_secs(90))
                .await
                .map_err(|e| root_cause(&e))
        })
    };
    // Once it is accepted (its sender can see it), the hub is told to stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = portal
            .try_get_at(&base, &format!("/v1/envelopes/{id}"))
            .await
            .unwrap();
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.signal("TERM");
    let status = hub.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "{status}");
    let a = waiting
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("an accepted request was cut at shutdown, no receipt: {e}"));
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    Receipt::from_json(&a.body)
        .unwrap()
        .verify(&t.trust(), Some(&signed))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hub_on_the_same_data_directory_is_refused_and_the_first_serves_on() {
    let t = TestHub::new("");
    let mut hub = HubProcess::new(&t);
    hub.start().await;
    // The same file with other ports: only the data directory is shared.
    let (port, plain_port) = (child::free_port(), child::free_port());
    let text = std::fs::read_to_string(&hub.config)
        .unwrap()
        .replace(&format!(":{}\"", hub.port), &format!(":{port}\""))
        .replace(
            &format!(":{}\"", hub.plain_port),
            &format!(":{plain_port}\""),
        );
    let second = t.dir.path().join("second.toml");
    std::fs::write(&second, text).unwrap();
    let mut cmd = child::snodo();
    cmd.arg("serve")
        .arg("--config")
        .arg(&second)
        .current_dir(t.dir.path());
    let o = child::run_bounded(cmd, t.dir.path(), Duration::from_secs(30)).await;
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr.contains("opening the store in"),
        "the refusal does not name the store: {}",
        o.stderr
    );
    assert!(child::port_is_free(port) && child::port_is_free(plain_port));

    // The first hub still accepts.
    let (_, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Xml,
    );
    let a = t
        .client(TURIN)
        .try_submit_at(&hub.base(), &signed, Format::Xml)
        .await
        .unwrap();
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    hub.signal("TERM");
    assert!(hub.wait_exit(Duration::from_secs(40)).await.success());
}
