//! The hub end to end over real TLS on 127.0.0.1: submit, pull, ack; duplicates; requests
//! that wait for their response; events; leases that expire; refusals; isolation between
//! entities; health, metrics and the OpenAPI document.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use snodo_broker::journal::receipt::Receipt;
use snodo_envelopes::{EntityId, Envelope, Format, Profile};

both_transports!(submit_pull_ack_in_both_formats);
async fn submit_pull_ack_in_both_formats(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let anpr = t.client(ANPR);
    for format in [Format::Json, Format::Xml] {
        let (env, signed) = t.envelope(
            TURIN,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({"cf": "RSSMRA80A01L219X"}),
            format,
        );
        let a = turin.submit(&hub, &signed, format).await;
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
        let receipt: Receipt = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(receipt.envelope_id, env.header.id);
        // The receipt is evidence anyone can check with the CA alone.
        receipt.verify(&t.trust(), Some(&signed)).unwrap();

        let leased = anpr.inbox(&hub, "?limit=10&lease=30s").await;
        assert_eq!(leased.len(), 1, "{leased:?}");
        let item = &leased[0];
        assert_eq!(item["envelope_id"], env.header.id.to_string());
        assert_eq!(item["media_type"], format.media_type());
        // The recipient gets the exact signed bytes, and can check the sender's signature.
        assert_eq!(
            item["envelope"].as_str().unwrap().as_bytes(),
            signed.as_slice()
        );
        let v = verifier(&t)
            .verify(item["envelope"].as_str().unwrap().as_bytes())
            .unwrap();
        assert_eq!(v.envelope, env);

        let a = anpr.ack(&hub, item["lease"].as_str().unwrap()).await;
        assert_eq!(a.status, 204);
        assert!(anpr.inbox(&hub, "").await.is_empty());
        // Acking twice: the lease is gone.
        let a = anpr.ack(&hub, item["lease"].as_str().unwrap()).await;
        assert_eq!((a.status, a.code()), (404, "lease-unknown".into()));

        // The sender sees the state and history.
        let a = turin
            .get(&hub, &format!("/v1/envelopes/{}", env.header.id))
            .await;
        assert_eq!(a.status, 200);
        let kinds: Vec<String> = a.json()["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["accepted", "delivered", "acknowledged"]);
    }
    hub.shutdown().await.unwrap();
}

both_transports!(a_duplicate_gets_the_original_receipt_and_delivers_nothing_new);
async fn a_duplicate_gets_the_original_receipt_and_delivers_nothing_new(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let (env, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({"n": 1}),
        Format::Json,
    );
    let first = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!(first.status, 202);
    let again = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        first.json(),
        again.json(),
        "the original receipt, byte for byte"
    );
    assert_eq!(t.client(ANPR).inbox(&hub, "").await.len(), 1);

    // The same id for other content is a conflict, not a duplicate.
    let other = Envelope::builder(
        TURIN.parse().unwrap(),
        ANPR.parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    )
    .id(env.header.id)
    .json(json!({"n": 2}))
    .build()
    .unwrap();
    let signed = snodo_envelopes::sign(&other, &t.signer(TURIN), Format::Json).unwrap();
    let a = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (409, "envelope-id-conflict".into()));
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_what_was_wrong() {
    let t = TestHub::new("max_envelope_bytes = 4096");
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let body = json!({"cf": "RSSMRA80A01L219X"});

    // The certificate of Cuneo submitting an envelope signed by Turin.
    let (_, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        body.clone(),
        Format::Json,
    );
    let a = t.client(CUNEO).submit(&hub, &signed, Format::Json).await;
    assert_eq!(
        (a.status, a.code()),
        (403, "transport-identity-mismatch".into())
    );

    // A sender the registry does not allow for this action.
    let (_, signed) = t.envelope(
        PAGOPA,
        ANPR,
        "residenza.cambio",
        "richiesta",
        body.clone(),
        Format::Json,
    );
    let a = t.client(PAGOPA).submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (403, "sender-not-allowed".into()));

    // An unknown recipient.
    let (_, signed) = t.envelope(
        TURIN,
        "comune:999999",
        "residenza.cambio",
        "richiesta",
        body.clone(),
        Format::Json,
    );
    let a = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (422, "unknown-recipient".into()));

    // An expired envelope.
    let created = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let env = Envelope::builder(
        TURIN.parse().unwrap(),
        ANPR.parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    )
    .created_at(created)
    .expires_at(created + time::Duration::minutes(1))
    .build()
    .unwrap();
    let signed = snodo_envelopes::sign(&env, &t.signer(TURIN), Format::Xml).unwrap();
    let a = turin.submit(&hub, &signed, Format::Xml).await;
    assert_eq!((a.status, a.code()), (422, "envelope-expired".into()));

    // Oversize.
    let (_, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({"x": "y".repeat(5000)}),
        Format::Json,
    );
    let a = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (413, "envelope-too-large".into()));

    // A tampered envelope, and the wrong media type.
    let (_, mut signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        body.clone(),
        Format::Json,
    );
    let a = turin.submit(&hub, &signed, Format::Xml).await;
    assert_eq!((a.status, a.code()), (415, "media-type-mismatch".into()));
    // Another valid base64url character at the head of the signature: a wrong signature.
    let mut jws: serde_json::Value = serde_json::from_slice(&signed).unwrap();
    let sig = jws["signature"].as_str().unwrap().to_owned();
    let swapped = if sig.starts_with('A') { "B" } else { "A" };
    jws["signature"] = format!("{swapped}{}", &sig[1..]).into();
    signed = serde_json::to_vec(&jws).unwrap();
    let a = turin.submit(&hub, &signed, Format::Json).await;
    assert_eq!((a.status, a.code()), (400, "signature-invalid".into()));

    // An auditor has no inbox and sends nothing.
    let a = t
        .client("auditor-corte-dei-conti")
        .get(&hub, "/v1/inbox")
        .await;
    assert_eq!((a.status, a.code()), (403, "caller-not-an-entity".into()));

    // Nothing refused reached an inbox.
    assert!(t.client(ANPR).inbox(&hub, "").await.is_empty());
    hub.shutdown().await.unwrap();

    // Every refusal is in the journal, with its code.
    use snodo_broker::store::{FjallStore, Store};
    // The store is free once the last connection task has let go of the hub.
    drop(turin);
    let store = eventually(10, || async {
        FjallStore::open(&t.dir.path().join("data/store")).ok()
    })
    .await;
    let codes: Vec<String> = store
        .scan(b"j/", None, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, v)| snodo_broker::journal::entry::Entry::from_bytes(&v).unwrap())
        .filter(|e| e.kind == snodo_broker::journal::entry::EventKind::Refused)
        .map(|e| e.code.unwrap())
        .collect();
    for code in [
        "transport-identity-mismatch",
        "sender-not-allowed",
        "unknown-recipient",
        "envelope-expired",
        "media-type-mismatch",
        "envelope-too-large",
        "signature-invalid",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} not journaled: {codes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_over_its_rate_gets_429_with_retry_after() {
    let t = TestHub::new("requests_per_second = 1\nburst = 3");
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let (_, signed) = t.envelope(
            TURIN,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({}),
            Format::Json,
        );
        let a = turin.submit(&hub, &signed, Format::Json).await;
        if a.status == 429 {
            assert_eq!(a.code(), "rate-limited");
            retry_after = a
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(a.status);
    }
    assert_eq!(&statuses[..3], &[202, 202, 202], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another entity has its own budget.
    let (_, _) = t.accepted(&hub, CUNEO, ANPR).await;
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_no_connection() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let ca = snodo_broker::tls::load_certs(&t.pki().join("ca.crt"))
        .unwrap()
        .remove(0);
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates({
        let mut r = rustls::RootCertStore::empty();
        r.add(ca).unwrap();
        r
    })
    .with_no_client_auth();
    let anonymous = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap();
    let r = anonymous
        .get(format!("https://127.0.0.1:{}/v1/inbox", hub.addr.port()))
        .send()
        .await;
    assert!(
        r.is_err(),
        "a client without certificate was answered: {r:?}"
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_cannot_touch_another_entitys_envelopes() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let (env, _) = t.accepted(&hub, TURIN, ANPR).await;
    let cuneo = t.client(CUNEO);
    assert!(
        cuneo.inbox(&hub, "").await.is_empty(),
        "Cuneo leased ANPR's envelope"
    );
    let a = cuneo
        .get(&hub, &format!("/v1/envelopes/{}", env.header.id))
        .await;
    assert_eq!((a.status, a.code()), (404, "not-found".into()));
    let leased = t.client(ANPR).inbox(&hub, "").await;
    let token = leased[0]["lease"].as_str().unwrap();
    let a = cuneo.ack(&hub, token).await;
    assert_eq!((a.status, a.code()), (404, "lease-unknown".into()));
    let a = cuneo
        .post_json(&hub, "/v1/inbox/nack", json!({ "lease": token }))
        .await;
    assert_eq!((a.status, a.code()), (404, "lease-unknown".into()));
    // The rightful recipient still holds it.
    assert_eq!(t.client(ANPR).ack(&hub, token).await.status, 204);
    hub.shutdown().await.unwrap();
}

both_transports!(a_request_waits_for_its_response);
async fn a_request_waits_for_its_response(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let (req, signed) = t.envelope(
        PORTAL,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({"cf": "X"}),
        Format::Json,
    );
    let req_env = Envelope {
        header: snodo_envelopes::Header {
            profile: Profile::Request,
            ..req.header.clone()
        },
        ..req
    };
    let signed_req = snodo_envelopes::sign(&req_env, &t.signer(PORTAL), Format::Json).unwrap();
    drop(signed);

    // ANPR answers whatever it receives.
    let anpr = t.client(ANPR);
    let answer_signer = t.signer(ANPR);
    let addr = hub.addr;
    let responder = tokio::spawn(async move {
        let hub_url = format!("https://127.0.0.1:{}", addr.port());
        for _ in 0..100 {
            let a = anpr
                .send(anpr.http.get(format!("{hub_url}/v1/inbox")))
                .await;
            let items = a.json()["envelopes"].as_array().unwrap().clone();
            if let Some(item) = items.first() {
                let id: uuid::Uuid = item["envelope_id"].as_str().unwrap().parse().unwrap();
                let resp = Envelope::builder(
                    ANPR.parse().unwrap(),
                    PORTAL.parse::<EntityId>().unwrap(),
                    "residenza.cambio",
                    "esito",
                )
                .in_reply_to(id)
                .json(json!({"esito": "registrato"}))
                .build()
                .unwrap();
                let signed = snodo_envelopes::sign(&resp, &answer_signer, Format::Xml).unwrap();
                let a = anpr
                    .send(
                        anpr.http
                            .post(format!("{hub_url}/v1/envelopes"))
                            .header("content-type", "application/xml")
                            .body(signed),
                    )
                    .await;
                assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
                anpr.ack_url(&hub_url, item["lease"].as_str().unwrap())
                    .await;
                return resp.header.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the request never arrived");
    });
    let a = t
        .client(PORTAL)
        .submit_query(&hub, &signed_req, Format::Json, "?wait=10s")
        .await;
    let response_id = responder.await.unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.content_type, "application/xml");
    let v = verifier(&t).verify(&a.body).unwrap();
    assert_eq!(v.envelope.header.id, response_id);
    assert_eq!(v.envelope.header.in_reply_to, Some(req_env.header.id));
    assert!(a.headers.contains_key("snodo-receipt"));
    // Delivered in the answer: not again in the inbox.
    assert!(t.client(PORTAL).inbox(&hub, "").await.is_empty());

    // With nobody answering, the receipt comes back after the wait.
    let (req2, _) = t.envelope(
        PORTAL,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Json,
    );
    let req2 = Envelope {
        header: snodo_envelopes::Header {
            profile: Profile::Request,
            ..req2.header.clone()
        },
        ..req2
    };
    let signed = snodo_envelopes::sign(&req2, &t.signer(PORTAL), Format::Json).unwrap();
    let a = t
        .client(PORTAL)
        .submit_query(&hub, &signed, Format::Json, "?wait=300ms")
        .await;
    assert_eq!(a.status, 202);
    assert_eq!(a.json()["envelope_id"], req2.header.id.to_string());
    hub.shutdown().await.unwrap();
}

both_transports!(events_fan_out_to_every_subscriber);
async fn events_fan_out_to_every_subscriber(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let (env, signed) = t.envelope(
        ANPR,
        "*",
        "anpr.feed",
        "variazione",
        json!({"cf": "X", "evento": "decesso"}),
        Format::Json,
    );
    assert_eq!(env.header.profile, Profile::Event);
    let a = t.client(ANPR).submit(&hub, &signed, Format::Json).await;
    assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    for comune in [TURIN, CUNEO] {
        let got = t.client(comune).inbox(&hub, "").await;
        assert_eq!(got.len(), 1, "{comune}");
        assert_eq!(got[0]["envelope_id"], env.header.id.to_string());
    }
    // Not a subscriber.
    assert!(t.client(PORTAL).inbox(&hub, "").await.is_empty());
    hub.shutdown().await.unwrap();
}

both_transports!(an_unacknowledged_lease_returns_the_envelope_and_nack_returns_it_at_once);
async fn an_unacknowledged_lease_returns_the_envelope_and_nack_returns_it_at_once(
    transport: Transport,
) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let (env, _) = t.accepted(&hub, TURIN, ANPR).await;
    let anpr = t.client(ANPR);
    let first = anpr.inbox(&hub, "?lease=1s").await;
    assert_eq!(first.len(), 1);
    assert!(
        anpr.inbox(&hub, "").await.is_empty(),
        "leased envelopes are not handed out twice"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let again = anpr.inbox(&hub, "?lease=30s").await;
    assert_eq!(again.len(), 1, "the expired lease returned the envelope");
    assert_eq!(again[0]["envelope_id"], env.header.id.to_string());
    // The old lease is void.
    assert_eq!(
        anpr.ack(&hub, first[0]["lease"].as_str().unwrap())
            .await
            .status,
        404
    );
    let a = anpr
        .post_json(&hub, "/v1/inbox/nack", json!({"lease": again[0]["lease"]}))
        .await;
    assert_eq!(a.status, 204);
    let third = anpr.inbox(&hub, "").await;
    assert_eq!(third.len(), 1);
    assert_eq!(
        anpr.ack(&hub, third[0]["lease"].as_str().unwrap())
            .await
            .status,
        204
    );
    assert!(anpr.inbox(&hub, "").await.is_empty());
    hub.shutdown().await.unwrap();
}

both_transports!(a_batch_takes_each_envelope_through_the_pipeline_on_its_own);
async fn a_batch_takes_each_envelope_through_the_pipeline_on_its_own(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let item = |signed: &[u8], format: Format| {
        json!({"media_type": format.media_type(),
               "envelope": String::from_utf8(signed.to_vec()).unwrap()})
    };
    let cf = json!({"cf": "RSSMRA80A01L219X"});
    let envelope = |format| {
        t.envelope(
            TURIN,
            ANPR,
            "residenza.cambio",
            "richiesta",
            cf.clone(),
            format,
        )
    };
    let (xml, xml_signed) = envelope(Format::Xml);
    let (json_env, json_signed) = envelope(Format::Json);
    // Changed after signing: refused alone, the others accepted.
    let (_, signed) = envelope(Format::Xml);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("RSSMRA80A01L219X", "RSSMRA80A01L219Y");
    let a = turin
        .post_json(
            &hub,
            "/v1/envelopes/batch",
            json!({"envelopes": [item(&xml_signed, Format::Xml), item(&json_signed, Format::Json),
                                 item(tampered.as_bytes(), Format::Xml)]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let results = a.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    for (r, (env, signed)) in results
        .iter()
        .zip([(&xml, &xml_signed), (&json_env, &json_signed)])
    {
        assert_eq!(r["status"], 202, "{r}");
        assert_eq!(r["receipt"]["envelope_id"], env.header.id.to_string());
        assert_eq!(
            r["receipt"]["digest"],
            hex::encode(openssl::sha::sha256(signed))
        );
    }
    assert_eq!(results[2]["status"], 400, "{}", results[2]);
    assert_eq!(results[2]["problem"]["code"], "signature-invalid");
    assert!(results[2].get("receipt").is_none());
    // Sent again, alone or in a batch: the original receipt, nothing delivered twice.
    let again = turin
        .post_json(
            &hub,
            "/v1/envelopes/batch",
            json!({"envelopes": [item(&json_signed, Format::Json)]}),
        )
        .await;
    let again = again.json()["results"][0].clone();
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(again["receipt"]["index"], results[1]["receipt"]["index"]);
    let inbox = t.client(ANPR).inbox(&hub, "?limit=10&wait=2s").await;
    let mut ids: Vec<&str> = inbox
        .iter()
        .map(|e| e["envelope_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![xml.header.id.to_string(), json_env.header.id.to_string()];
    want.sort_unstable();
    assert_eq!(ids, want);
    // A batch refused as a whole names why.
    let r = turin
        .post_json(&hub, "/v1/envelopes/batch", json!({"envelopes": []}))
        .await;
    assert_eq!((r.status, r.code()), (400, "batch-malformed".into()));
    let r = turin
        .post_json(&hub, "/v1/envelopes/batch", json!({"envelope": "x"}))
        .await;
    assert_eq!((r.status, r.code()), (400, "batch-malformed".into()));
    assert!(r.json()["detail"].as_str().unwrap().contains("envelope"));
    let many: Vec<_> = (0..101).map(|_| item(&json_signed, Format::Json)).collect();
    let r = turin
        .post_json(&hub, "/v1/envelopes/batch", json!({"envelopes": many}))
        .await;
    assert_eq!((r.status, r.code()), (413, "batch-too-large".into()));
    assert!(r.json()["detail"].as_str().unwrap().contains("101"));
    hub.shutdown().await.unwrap();
}

both_transports!(a_long_poll_answers_with_what_arrives_while_it_waits);
async fn a_long_poll_answers_with_what_arrives_while_it_waits(transport: Transport) {
    let t = TestHub::on(transport);
    let hub = t.start().await;
    let anpr = t.client(ANPR);
    // Nothing arrives: the poll ends empty.
    assert!(anpr.inbox(&hub, "?wait=300ms").await.is_empty());
    // Something arrives while the inbox is polled: the poll hands it out. Without `wait`
    // the same lease, asked before the submission, would have found the inbox empty.
    let (inbox, accepted) = tokio::join!(anpr.inbox(&hub, "?wait=20s&lease=30s"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.accepted(&hub, TURIN, ANPR).await
    });
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0]["envelope_id"], accepted.0.header.id.to_string());
    // A poll its client gave up on takes nothing: what arrives afterwards is the next
    // poll's.
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        anpr.inbox(&hub, "?wait=20s&lease=30s"),
    )
    .await;
    assert!(gone.is_err(), "the poll was expected to be still waiting");
    let (later, _) = t.accepted(&hub, TURIN, ANPR).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = anpr.inbox(&hub, "?wait=5s").await;
    assert_eq!(next.len(), 1, "the abandoned poll took it: {next:?}");
    assert_eq!(next[0]["envelope_id"], later.header.id.to_string());
    // A wait that is not a duration is refused, naming it.
    let r = anpr.get(&hub, "/v1/inbox?wait=soon").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "bad-parameter");
    assert!(r.json()["detail"].as_str().unwrap().contains("wait"));
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_its_requester_gave_up_on_hands_its_envelopes_back_at_once() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let engine = &hub.hub.engine;
    let anpr: EntityId = ANPR.parse().unwrap();
    let client = t.client(ANPR);
    let long = Duration::from_secs(600);
    // Given up on before the writer answered, and after (the answer waiting unread): either
    // way the next lease has the envelope, not a lease running out in ten minutes.
    for given_up_after in [Duration::ZERO, Duration::from_millis(300)] {
        let (env, _) = t.accepted(&hub, TURIN, ANPR).await;
        // The first poll sends the request; the writer must not have answered it yet. On a
        // busy machine it sometimes has: that lease is handed back and the round tried again.
        let mut given_up = false;
        for _ in 0..20 {
            let lease = engine.lease(anpr.clone(), 10, long);
            tokio::pin!(lease);
            match futures_util::poll!(&mut lease) {
                std::task::Poll::Pending => {
                    tokio::time::sleep(given_up_after).await;
                    given_up = true;
                    break;
                }
                std::task::Poll::Ready(leased) => {
                    for l in leased.unwrap() {
                        engine.settle(anpr.clone(), l.lease, false).await.unwrap();
                    }
                }
            }
        }
        assert!(
            given_up,
            "the writer answered every lease before its first poll"
        );
        let again = client.inbox(&hub, "?wait=5s&lease=600s").await;
        assert_eq!(again.len(), 1, "after {given_up_after:?}: {again:?}");
        assert_eq!(again[0]["envelope_id"], env.header.id.to_string());
        let lease = again[0]["lease"].as_str().unwrap();
        assert_eq!(client.ack(&hub, lease).await.status, 204);
    }
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_openapi() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let (_, _) = t.accepted(&hub, TURIN, ANPR).await;
    // A plain-HTTP client still wants a TLS provider to be chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain = reqwest::Client::new();
    let base = format!("http://{}", hub.plain_addr.unwrap());
    assert_eq!(
        plain
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = plain.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let m = plain
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("snodo_envelopes_accepted_total 1"), "{m}");
    assert!(
        m.contains(r#"snodo_inbox_depth{entity="anpr:ministero"} 1"#),
        "{m}"
    );
    // The plain listener serves nothing else.
    assert_eq!(
        plain
            .get(format!("{base}/v1/inbox"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let doc = t.client(TURIN).get(&hub, "/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/envelopes"]["post"].is_object());
    hub.shutdown().await.unwrap();
}
