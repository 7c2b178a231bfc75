//! Push delivery to partners' endpoints over mutual TLS, retries, the dead-letter queue, expiry,
//! and the signed failure notices senders receive.

mod common;

use common::*;
use serde_json::json;
use snodo_envelopes::{EntityId, Envelope, Format};

/// Turin's inbox, verified: the hub's notices about Turin's envelopes.
async fn notices(t: &TestHub, hub: &snodo_broker::cli::serve::Running) -> Vec<serde_json::Value> {
    let turin = t.client(TURIN);
    let mut out = Vec::new();
    for item in turin.inbox(hub, "").await {
        let v = verifier(t)
            .verify(item["envelope"].as_str().unwrap().as_bytes())
            .unwrap();
        assert_eq!(v.envelope.header.sender.as_str(), "hub:hub");
        assert_eq!(v.envelope.header.service, "snodo.consegna");
        match v.envelope.body {
            snodo_envelopes::Body::Json(b) => {
                out.push(json!({"in_reply_to": v.envelope.header.in_reply_to, "body": b}))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            turin.ack(hub, item["lease"].as_str().unwrap()).await.status,
            204
        );
    }
    out
}

both_transports!(push_retries_until_the_partner_accepts);
async fn push_retries_until_the_partner_accepts(transport: Transport) {
    let t = TestHub::with(Options {
        transport,
        delivery: "retry_initial = \"100ms\"\nretry_max = \"400ms\"",
        ..Options::default()
    });
    let partner = Partner::start(&t.pki(), ANPR, 2).await;
    t.set_endpoint(ANPR, &partner.url);
    let hub = t.start().await;
    let (env, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({"cf": "X"}),
        Format::Xml,
    );
    assert_eq!(
        t.client(TURIN)
            .submit(&hub, &signed, Format::Xml)
            .await
            .status,
        202
    );
    let got = eventually(15, || {
        let r = partner.received.clone();
        async move { r.lock().unwrap().first().cloned() }
    })
    .await;
    assert_eq!(
        got.body, signed,
        "the partner receives the exact signed bytes"
    );
    assert_eq!(got.media_type, "application/xml");
    assert_eq!(
        partner.attempts.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let history = eventually(5, || async {
        let a = t
            .client(TURIN)
            .get(&hub, &format!("/v1/envelopes/{}", env.header.id))
            .await;
        let h = a.json()["history"].as_array().unwrap().clone();
        h.iter().any(|e| e["kind"] == "delivered").then_some(h)
    })
    .await;
    let delivered = history.iter().find(|e| e["kind"] == "delivered").unwrap();
    assert!(
        delivered["detail"].as_str().unwrap().contains("attempt 3"),
        "{delivered}"
    );
    // Pushed, not pulled: nothing waits in the inbox, and it is not pushed again.
    assert!(t.client(ANPR).inbox(&hub, "").await.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(partner.received.lock().unwrap().len(), 1);
    hub.shutdown().await.unwrap();
}

both_transports!(past_the_deadline_an_envelope_is_dead_lettered_and_the_sender_told);
async fn past_the_deadline_an_envelope_is_dead_lettered_and_the_sender_told(transport: Transport) {
    let t = TestHub::with(Options {
        transport,
        delivery: "retry_initial = \"100ms\"\nretry_max = \"300ms\"",
        endpoints: vec![(ANPR, "https://127.0.0.1:9/unreachable".into())],
        deadline: Some("1s"),
        ..Options::default()
    });
    let hub = t.start().await;
    let (env, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({"cf": "X"}),
        Format::Json,
    );
    assert_eq!(
        t.client(TURIN)
            .submit(&hub, &signed, Format::Json)
            .await
            .status,
        202
    );
    let notes = eventually(15, || async {
        let n = notices(&t, &hub).await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["in_reply_to"], env.header.id.to_string());
    assert_eq!(notes[0]["body"]["reason"], "dead-lettered");
    assert_eq!(notes[0]["body"]["recipient"], ANPR);
    let a = t
        .client(TURIN)
        .get(&hub, &format!("/v1/envelopes/{}", env.header.id))
        .await;
    let kinds: Vec<String> = a.json()["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("accepted"));
    assert_eq!(kinds.last().map(String::as_str), Some("dead_lettered"));
    assert!(!kinds.contains(&"delivered".to_owned()));
    hub.shutdown().await.unwrap();
}

both_transports!(an_expired_envelope_is_never_delivered_and_the_sender_is_told);
async fn an_expired_envelope_is_never_delivered_and_the_sender_is_told(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let env = Envelope::builder(
        TURIN.parse().unwrap(),
        ANPR.parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    )
    .expires_in(time::Duration::milliseconds(2000))
    .json(json!({"cf": "X"}))
    .build()
    .unwrap();
    let signed = snodo_envelopes::sign(&env, &t.signer(TURIN), Format::Json).unwrap();
    assert_eq!(
        t.client(TURIN)
            .submit(&hub, &signed, Format::Json)
            .await
            .status,
        202
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        t.client(ANPR).inbox(&hub, "").await.is_empty(),
        "an expired envelope was delivered"
    );
    let notes = eventually(10, || async {
        let n = notices(&t, &hub).await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert_eq!(notes[0]["body"]["reason"], "expired");
    assert_eq!(notes[0]["in_reply_to"], env.header.id.to_string());
    hub.shutdown().await.unwrap();
}
