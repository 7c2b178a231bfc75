//! The amqp transport against a real RabbitMQ: several hub nodes sharing one broker, the
//! broker unreachable, restarted mid-traffic, and a node killed mid-delivery. (The hub's
//! end-to-end scenarios run on both transports in `hub.rs` and `delivery.rs`.)

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::child::{HubProcess, free_port, plain_get, plain_text};
use common::rabbit::PrivateRabbit;
use common::*;
use serde_json::json;
use snodo_broker::cli::serve::{self, Running};
use snodo_broker::config::Config;
use snodo_envelopes::Format;

/// The kinds of the journal entries about envelope `id` that `who` may see on `hub`.
async fn kinds(t: &TestHub, hub: &Running, who: &str, id: &str) -> Vec<String> {
    let a = t
        .client(who)
        .get(hub, &format!("/v1/journal/entries?envelope_id={id}"))
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_submitted_to_one_node_is_pulled_from_another_and_only_once() {
    let t = TestHub::on(Transport::Amqp);
    let a = t.start_node(&t.node("a")).await;
    let b = t.start_node(&t.node("b")).await;
    let (env, signed) = t.accepted(&a, TURIN, ANPR).await;
    let id = env.header.id.to_string();

    let anpr = t.client(ANPR);
    let leased = eventually(10, || async {
        let l = anpr.inbox(&b, "").await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(leased.len(), 1, "{leased:?}");
    assert_eq!(leased[0]["envelope_id"], id);
    assert_eq!(
        leased[0]["envelope"].as_str().unwrap().as_bytes(),
        signed.as_slice()
    );
    let lease = leased[0]["lease"].as_str().unwrap();
    // A lease is held by the node that handed it out.
    assert_eq!(anpr.ack(&a, lease).await.code(), "lease-unknown");
    assert_eq!(anpr.ack(&b, lease).await.status, 204);

    // Each node journals its part of the story, under its own signed checkpoints.
    assert_eq!(kinds(&t, &a, TURIN, &id).await, ["accepted"]);
    assert_eq!(
        kinds(&t, &b, ANPR, &id).await,
        ["delivered", "acknowledged"]
    );

    // The sender retries on the other node, which has not seen the id: accepted again there,
    // but the recipient, which has taken it already, is not handed it a second time.
    let again = t.client(TURIN).submit(&b, &signed, Format::Json).await;
    assert_eq!(
        again.status,
        202,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in [&a, &b] {
        assert!(anpr.inbox(node, "").await.is_empty());
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_rabbitmq_is_unreachable_submissions_get_503_and_readyz_says_why() {
    let t = TestHub::on(Transport::Amqp);
    t.set_amqp_url(&format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()));
    let config = Config::load(&t.config_path).unwrap();
    let hub = serve::start(config, Some(t.config_path.clone()))
        .await
        .unwrap();
    // Once the first attempt has failed, /readyz says why.
    let plain = hub.plain_addr.unwrap().port();
    let text = eventually(10, || async {
        let (status, text) = plain_text(plain, "/readyz").await?;
        (status == 503 && text.contains("cannot connect")).then_some(text)
    })
    .await;
    assert!(text.contains("RabbitMQ is not usable"), "{text}");
    assert!(!text.contains(":guest@"), "the password leaked: {text}");

    let (_, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Json,
    );
    let a = t.client(TURIN).submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (503, "transport-unavailable".into()));
    assert!(a.headers.contains_key("retry-after"), "{:?}", a.headers);
    let detail = a.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("cannot connect"), "{detail}");
    assert!(!detail.contains(":guest@"), "the password leaked: {detail}");

    let lease = t.client(ANPR).get(&hub, "/v1/inbox").await;
    assert_eq!(
        (lease.status, lease.code()),
        (503, "transport-unavailable".into())
    );
    hub.shutdown().await.unwrap();
}

/// What the recipient saw: how often each envelope was acknowledged.
type Acks = Arc<Mutex<HashMap<String, u32>>>;

/// Leases and acknowledges `entity`'s envelopes on `base` until `want` are acknowledged;
/// panics if an acknowledged envelope is ever handed out again.
async fn drain(client: Client, base: String, acks: Acks, want: usize, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while acks.lock().unwrap().len() < want {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {want} acknowledged",
            acks.lock().unwrap().len()
        );
        let Ok(resp) = client
            .http
            .get(format!("{base}/v1/inbox?limit=10&lease=5s"))
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if resp.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body: serde_json::Value = resp.json().await.unwrap();
        let items = body["envelopes"].as_array().unwrap().clone();
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for item in items {
            let id = item["envelope_id"].as_str().unwrap().to_owned();
            assert!(
                !acks.lock().unwrap().contains_key(&id),
                "{id} was handed out again after its acknowledgement"
            );
            let a = client.ack_url(&base, item["lease"].as_str().unwrap()).await;
            if a.status == 204 {
                *acks.lock().unwrap().entry(id).or_default() += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_traffic_every_receipted_envelope_is_delivered_once() {
    let mut rabbit = PrivateRabbit::start_new().await;
    let t = TestHub::on(Transport::Amqp);
    t.set_amqp_url(&rabbit.url());
    let hub = t.start().await;
    let base = format!("https://127.0.0.1:{}", hub.addr.port());
    const N: usize = 60;

    let receipts: Arc<Mutex<HashSet<String>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let submitter = {
        let (client, base, receipts, refused) = (
            t.client(TURIN),
            base.clone(),
            receipts.clone(),
            refused.clone(),
        );
        let envelopes: Vec<_> = (0..N)
            .map(|i| {
                t.envelope(
                    TURIN,
                    ANPR,
                    "residenza.cambio",
                    "richiesta",
                    json!({ "n": i }),
                    Format::Json,
                )
            })
            .collect();
        tokio::spawn(async move {
            for (env, signed) in envelopes {
                loop {
                    let a = client
                        .send(
                            client
                                .http
                                .post(format!("{base}/v1/envelopes"))
                                .header("content-type", Format::Json.media_type())
                                .body(signed.clone()),
                        )
                        .await;
                    match a.status {
                        200 | 202 => {
                            receipts.lock().unwrap().insert(env.header.id.to_string());
                            break;
                        }
                        503 => {
                            assert_eq!(a.code(), "transport-unavailable");
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => panic!("{other}: {}", String::from_utf8_lossy(&a.body)),
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let acks: Acks = Arc::default();
    let puller = tokio::spawn(drain(t.client(ANPR), base.clone(), acks.clone(), N, 120));

    tokio::time::sleep(Duration::from_millis(800)).await;
    rabbit.stop().await;
    // While it is down the hub says why it is not ready.
    let plain = hub.plain_addr.unwrap().port();
    eventually(10, || async {
        (plain_get(plain, "/readyz").await == Some(503)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rabbit.start().await;

    submitter.await.unwrap();
    puller.await.unwrap();
    let receipts = receipts.lock().unwrap().clone();
    let acks = acks.lock().unwrap().clone();
    assert_eq!(receipts.len(), N);
    assert_eq!(
        acks.keys().cloned().collect::<HashSet<_>>(),
        receipts,
        "acknowledged and receipted differ"
    );
    assert!(acks.values().all(|n| *n == 1), "{acks:?}");
    assert!(
        refused.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no submission met the outage: the test proved nothing"
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_leaves_its_unacknowledged_envelopes_to_the_other() {
    let t = TestHub::on(Transport::Amqp);
    let mut a = HubProcess::for_config(&t.node("a"), &t.dir.path().join("a.log"));
    a.start().await;
    eventually(30, || async {
        (plain_get(a.plain_port, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    let b = t.start_node(&t.node("b")).await;
    const N: usize = 20;
    for _ in 0..N {
        t.accepted(&b, TURIN, ANPR).await;
    }
    // The recipient leases ten on node A, for a long time, and acknowledges three.
    let anpr = t.client(ANPR);
    let held = eventually(10, || async {
        let r = anpr
            .send(
                anpr.http
                    .get(format!("{}/v1/inbox?limit=10&lease=10m", a.base())),
            )
            .await;
        let items = r.json()["envelopes"].as_array().unwrap().clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    let acks: Acks = Arc::default();
    for item in &held[..3] {
        let r = anpr
            .ack_url(&a.base(), item["lease"].as_str().unwrap())
            .await;
        assert_eq!(r.status, 204);
        acks.lock()
            .unwrap()
            .insert(item["envelope_id"].as_str().unwrap().to_owned(), 1);
    }
    // Node A dies holding the other leases; RabbitMQ gives their envelopes to node B at once,
    // not after the ten minutes of the lease.
    a.kill();
    let base = format!("https://127.0.0.1:{}", b.addr.port());
    tokio::time::timeout(
        Duration::from_secs(60),
        drain(anpr.clone(), base, acks.clone(), N, 60),
    )
    .await
    .unwrap();
    let acks = acks.lock().unwrap().clone();
    assert_eq!(acks.len(), N);
    assert!(acks.values().all(|n| *n == 1), "{acks:?}");
    for item in &held[3..] {
        assert!(acks.contains_key(item["envelope_id"].as_str().unwrap()));
    }
    b.shutdown().await.unwrap();
}

/// Gives the node configuration at `path` a fixed port and the peers `peers` (name, port).
fn with_port_and_peers(path: &std::path::Path, port: u16, peers: &[(&str, u16)]) {
    let mut text = std::fs::read_to_string(path).unwrap().replace(
        "\nlisten = \"127.0.0.1:0\"",
        &format!("\nlisten = \"127.0.0.1:{port}\""),
    );
    for (name, port) in peers {
        text.push_str(&format!(
            "\n[[peers]]\nname = \"{name}\"\nurl = \"https://127.0.0.1:{port}\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_auditors_for_its_peers_and_a_bundle_of_both_verifies_offline() {
    let t = TestHub::on(Transport::Amqp);
    let (port_a, port_b) = (free_port(), free_port());
    let (config_a, config_b) = (t.node("a"), t.node("b"));
    with_port_and_peers(&config_a, port_a, &[("b", port_b)]);
    with_port_and_peers(&config_b, port_b, &[("a", port_a)]);
    let a = t.start_node(&config_a).await;
    let b = t.start_node(&config_b).await;
    let (env, _) = t.accepted(&a, TURIN, ANPR).await;
    let anpr = t.client(ANPR);
    let leased = eventually(10, || async {
        let l = anpr.inbox(&b, "").await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(
        anpr.ack(&b, leased[0]["lease"].as_str().unwrap())
            .await
            .status,
        204
    );
    let id = env.header.id.to_string();

    // Asked through node A, node B answers with its own journal and checkpoint.
    let auditor = t.client("auditor-corte-dei-conti");
    let a_ = auditor
        .get(&a, &format!("/v1/journal/entries?envelope_id={id}&node=b"))
        .await;
    assert_eq!(a_.status, 200, "{}", String::from_utf8_lossy(&a_.body));
    let kinds: Vec<String> = a_.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["delivered", "acknowledged"]);
    let cp = auditor.get(&a, "/v1/journal/checkpoint?node=b").await;
    assert_eq!(cp.status, 200);
    assert!(
        cp.json().to_string().contains("snodo.hub/b"),
        "{}",
        cp.json()
    );
    // Node B journaled who asked, and through which node.
    let queried = auditor.get(&b, "/v1/journal/entries?kind=queried").await;
    assert!(
        String::from_utf8_lossy(&queried.body).contains("auditor:corte-dei-conti via hub:a"),
        "{}",
        String::from_utf8_lossy(&queried.body)
    );
    // An entity sees only its own entries on the peer too.
    let cuneo = t.client(CUNEO).get(&a, "/v1/journal/entries?node=b").await;
    assert_eq!(cuneo.status, 200);
    assert!(cuneo.json()["entries"].as_array().unwrap().is_empty());
    // Unknown nodes are named; a hub that is not a peer cannot ask on anyone's behalf.
    let unknown = auditor.get(&a, "/v1/journal/entries?node=zz").await;
    assert_eq!(unknown.code(), "unknown-node");
    let stranger = t.client("hub");
    let forged = stranger
        .send(
            stranger
                .http
                .get(format!("https://127.0.0.1:{port_a}/v1/journal/entries"))
                .header("snodo-on-behalf-of", "auditor:corte-dei-conti"),
        )
        .await;
    assert_eq!((forged.status, forged.code()), (403, "not-a-peer".into()));

    // One export through node A holds both journals; it verifies offline, node by node.
    let pki = t.pki();
    let out = t.dir.path().join("both.bundle");
    let base = format!("https://127.0.0.1:{port_a}");
    let (pki2, out2) = (pki.clone(), out.clone());
    let export = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_snodo"))
            .args([
                "audit", "export", "--hub", &base, "--node", "a", "--node", "b", "--out",
            ])
            .arg(&out2)
            .arg("--cert")
            .arg(pki2.join("auditor-corte-dei-conti.crt"))
            .arg("--key")
            .arg(pki2.join("auditor-corte-dei-conti.key"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(["audit", "verify"])
        .arg(&out)
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(text.contains("the journal of hub `a`"), "{text}");
    assert!(text.contains("the journal of hub `b`"), "{text}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_over_tls_with_the_federation_ca() {
    let t = TestHub::on(Transport::Amqp);
    let ca = snodo_envelopes::pki::CertificateAuthority::load(&t.pki()).unwrap();
    snodo_envelopes::pki::issue(
        &t.pki(),
        &ca,
        &snodo_envelopes::pki::Subject::Hub {
            name: "rabbitmq".into(),
            dns: Vec::new(),
        },
        snodo_envelopes::pki::KeyType::P256,
        snodo_envelopes::pki::Validity::default(),
    )
    .unwrap();
    let pki = t.pki();
    let rabbit = PrivateRabbit::start_tls(
        &pki.join("ca.crt"),
        &pki.join("hub-rabbitmq.crt"),
        &pki.join("hub-rabbitmq.key"),
    )
    .await;
    t.set_amqp_url(&format!(
        "amqps://guest:guest@localhost:{}/%2f",
        rabbit.port
    ));
    let text = std::fs::read_to_string(&t.config_path).unwrap().replace(
        "kind = \"amqp\"\n",
        "kind = \"amqp\"\nca = \"pki/ca.crt\"\n",
    );
    std::fs::write(&t.config_path, text).unwrap();
    let hub = t.start().await;
    let (env, _) = t.accepted(&hub, TURIN, ANPR).await;
    let anpr = t.client(ANPR);
    let leased = eventually(10, || async {
        let l = anpr.inbox(&hub, "").await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(leased[0]["envelope_id"], env.header.id.to_string());
    assert_eq!(
        anpr.ack(&hub, leased[0]["lease"].as_str().unwrap())
            .await
            .status,
        204
    );
    hub.shutdown().await.unwrap();
}
