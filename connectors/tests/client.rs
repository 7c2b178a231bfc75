//! The hub client and the connector runtime against a real hub on 127.0.0.1: submit with
//! verified receipts, retries that reuse the envelope id, requests that wait, lease and ack,
//! push delivery, idempotent dispatch, and incoming envelopes that fail verification.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use snodo_connectors::dispatch::{Disposition, PullConfig};
use snodo_connectors::inbound::BoxFuture;
use snodo_connectors::push::{PushConfig, PushReceiver};
use snodo_connectors::{
    Answer, ClientError, Dispatcher, Effects, Handler, HandlerError, HubClient, Inbound, Signed,
    Store, Submitted,
};
use snodo_envelopes::{EntityId, Format, Profile, Recipient};

fn to(entity: &str) -> Recipient {
    Recipient::Entity(entity.parse::<EntityId>().unwrap())
}

#[tokio::test]
async fn submit_lease_ack_in_both_encodings_with_verified_receipts() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    for format in [Format::Json, Format::Xml] {
        let portal = t.client(&hub, PORTAL, format);
        let turin = t.client(&hub, TURIN, Format::Json);
        let env = portal
            .envelope(to(TURIN), "prova.scambio", "notifica")
            .json(json!({"pratica": "P-1"}))
            .build()
            .unwrap();
        let s = portal.submit(&env).await.unwrap();
        assert!(!s.duplicate);
        assert_eq!(s.receipt.envelope_id, env.header.id);
        assert_eq!(s.receipt.sender, PORTAL);

        let leased = turin.lease(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(leased.len(), 1, "{format:?}");
        assert_eq!(leased[0].inbound.envelope, env);
        assert_eq!(leased[0].inbound.format, format);
        turin.ack(&leased[0].lease).await.unwrap();
        assert!(
            turin
                .lease(10, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        // The lease is spent: a second ack is the hub's lease-unknown, not a retry loop.
        let e = turin.ack(&leased[0].lease).await.unwrap_err();
        assert_eq!(e.code(), Some("lease-unknown"), "{e}");
        assert!(e.is_permanent());
    }
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refusal_names_the_hub_code_and_is_not_retried() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let turin = t.client(&hub, TURIN, Format::Json);
    // comune -> comune for `esito` is allowed, but `anpr.feed` is no service of this hub.
    let env = turin
        .envelope(to(CUNEO), "anpr.feed", "variazione")
        .build()
        .unwrap();
    let e = turin.submit(&env).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown-service"), "{e}");
    assert!(e.is_permanent());
    // An envelope claiming another sender is refused before anything is sent.
    let forged = snodo_envelopes::Envelope::builder(
        CUNEO.parse().unwrap(),
        to(ANPR),
        "prova.scambio",
        "notifica",
    )
    .build()
    .unwrap();
    let e = turin.submit(&forged).await.unwrap_err();
    assert!(
        e.to_string().contains("cannot send as comune:004078"),
        "{e}"
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_request_waits_for_its_verified_response_or_returns_the_receipt() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let portal = t.client(&hub, PORTAL, Format::Json);
    let turin = t.client(&hub, TURIN, Format::Xml);

    // Turin answers whatever request it leases.
    let responder = {
        let turin = turin.clone();
        tokio::spawn(async move {
            loop {
                let leased = turin.lease(1, Duration::from_secs(30)).await.unwrap();
                if let Some(d) = leased.into_iter().next() {
                    let h = &d.inbound.envelope.header;
                    let reply = turin
                        .envelope(Recipient::Entity(h.sender.clone()), &h.service, "esito")
                        .in_reply_to(h.id)
                        .conversation(h.conversation.clone())
                        .json(json!({"esito": "registrata"}))
                        .build()
                        .unwrap();
                    turin.submit(&reply).await.unwrap();
                    turin.ack(&d.lease).await.unwrap();
                    return reply;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let request = portal
        .envelope(to(TURIN), "prova.scambio", "richiesta")
        .profile(Profile::Request)
        .json(json!({"pratica": "P-2"}))
        .build()
        .unwrap();
    let answer = portal
        .request(&request, Duration::from_secs(10))
        .await
        .unwrap();
    let reply = responder.await.unwrap();
    match answer {
        Answer::Response { receipt, response } => {
            assert_eq!(receipt.envelope_id, request.header.id);
            assert_eq!(response.envelope, reply);
            assert_eq!(response.format, Format::Xml);
        }
        Answer::Pending { .. } => panic!("the response came in time"),
    }

    // Nobody answers Cuneo's requests: the receipt alone after the wait.
    let request = portal
        .envelope(to(CUNEO), "prova.scambio", "richiesta")
        .profile(Profile::Request)
        .build()
        .unwrap();
    match portal
        .request(&request, Duration::from_millis(300))
        .await
        .unwrap()
    {
        Answer::Pending { receipt } => assert_eq!(receipt.envelope_id, request.header.id),
        Answer::Response { .. } => panic!("nobody answered"),
    }
    hub.shutdown().await.unwrap();
}

/// A TLS front of the hub, with the hub's certificate, that forwards each submission to the
/// hub and then lies about the first `lose` answers (503 instead of the receipt), as a
/// connection lost after the hub accepted would.
async fn lossy_front(
    t: &TestHub,
    hub_url: String,
    entity: &str,
    lose: u32,
) -> (String, Arc<Mutex<u32>>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let tls = snodo_broker::tls::server_config(
        &t.pki().join("ca.crt"),
        None,
        &t.pki().join("hub.crt"),
        &t.pki().join("hub.key"),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let forward = raw_client(&t.pki(), &entity.parse::<EntityId>().unwrap().file_stem());
    let seen = Arc::new(Mutex::new(0u32));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/v1/envelopes",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (forward, hub_url, counter) = (forward.clone(), hub_url.clone(), counter.clone());
            async move {
                let resp = forward
                    .post(format!("{hub_url}/v1/envelopes"))
                    .header("content-type", headers.get("content-type").unwrap().clone())
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap();
                let n = {
                    let mut c = counter.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n <= lose {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        Vec::new(),
                    )
                        .into_response();
                }
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    bytes.to_vec(),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
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
    (url, seen)
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_id_and_delivered_once() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let (front, seen) = lossy_front(&t, url(&hub), PORTAL, 2).await;
    let portal = HubClient::new(&t.client_config(&front, PORTAL, Format::Json)).unwrap();
    let env = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .json(json!({"pratica": "P-3"}))
        .build()
        .unwrap();
    let s = portal.submit(&env).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        3,
        "two lost answers, then the receipt"
    );
    assert!(s.duplicate, "the hub recognised the retry");
    assert_eq!(s.receipt.envelope_id, env.header.id);
    let turin = t.client(&hub, TURIN, Format::Json);
    let leased = turin.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1, "delivered once");
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_hub_is_retried_then_reported() {
    let t = TestHub::new(&[]);
    let port = free_port();
    let portal = HubClient::new(&t.client_config(
        &format!("https://127.0.0.1:{port}"),
        PORTAL,
        Format::Json,
    ))
    .unwrap();
    let env = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .build()
        .unwrap();
    let e = portal.submit(&env).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("could not be reached"), "{e}");
}

/// Records what it handles; stages a store write and, for requests, a response.
struct Recorder {
    seen: Arc<Mutex<Vec<uuid::Uuid>>>,
    client: HubClient,
    store: Store,
}

impl Handler for Recorder {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(inbound.id());
            let tree = self
                .store
                .tree::<String>("practices")
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
            effects
                .update
                .put(&tree, &inbound.id().to_string(), &"registered".to_owned())
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
            let h = &inbound.envelope.header;
            if h.profile == Profile::Request {
                effects.send(
                    self.client
                        .envelope(Recipient::Entity(h.sender.clone()), &h.service, "esito")
                        .in_reply_to(h.id)
                        .conversation(h.conversation.clone())
                        .json(json!({"esito": "registrata"}))
                        .build()
                        .map_err(|e| HandlerError::Reject(e.to_string()))?,
                );
            }
            Ok(())
        })
    }
}

fn recorder(client: &HubClient, store: &Store) -> (Arc<Recorder>, Arc<Mutex<Vec<uuid::Uuid>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (
        Arc::new(Recorder {
            seen: seen.clone(),
            client: client.clone(),
            store: store.clone(),
        }),
        seen,
    )
}

#[tokio::test]
async fn the_pull_loop_processes_once_answers_and_acks() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let portal = t.client(&hub, PORTAL, Format::Json);
    let turin = t.client(&hub, TURIN, Format::Json);
    let store = Store::temporary().unwrap();
    let (handler, seen) = recorder(&turin, &store);
    let dispatcher = Arc::new(
        Dispatcher::builder()
            .route("prova.scambio", "richiesta", handler)
            .build(turin.clone(), store.clone())
            .unwrap(),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let pull = tokio::spawn(dispatcher.clone().run_pull(
        PullConfig {
            batch: 4,
            lease: Duration::from_secs(30),
            idle: Duration::from_millis(50),
        },
        stop_rx,
    ));
    let request = portal
        .envelope(to(TURIN), "prova.scambio", "richiesta")
        .profile(Profile::Request)
        .build()
        .unwrap();
    let answer = portal
        .request(&request, Duration::from_secs(10))
        .await
        .unwrap();
    let Answer::Response { response, .. } = answer else {
        panic!("the runtime answers within the wait");
    };
    assert_eq!(
        response.envelope.header.in_reply_to,
        Some(request.header.id)
    );
    // An envelope with no route is rejected, recorded with its bytes, and acknowledged.
    let stray = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .build()
        .unwrap();
    portal.submit(&stray).await.unwrap();
    let record = eventually(10, "the stray envelope's record", || async {
        dispatcher.processed(PORTAL, stray.header.id).unwrap()
    })
    .await;
    assert_eq!(record.outcome, "rejected");
    assert!(
        record
            .reason
            .unwrap()
            .contains("no handler for prova.scambio/notifica")
    );
    assert!(record.raw.is_some());

    let _ = stop.send(true);
    pull.await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![request.header.id]);
    let practices = store.tree::<String>("practices").unwrap();
    assert_eq!(
        practices
            .get(&request.header.id.to_string())
            .unwrap()
            .as_deref(),
        Some("registered")
    );
    assert_eq!(dispatcher.outbox_len(), 0);
    // Both were acknowledged: nothing is left in Turin's inbox.
    assert!(
        turin
            .lease(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_redelivered_envelope_is_not_processed_twice() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let portal = t.client(&hub, PORTAL, Format::Json);
    let turin = t.client(&hub, TURIN, Format::Json);
    let dir = tempfile::tempdir().unwrap();
    let request = portal
        .envelope(to(TURIN), "prova.scambio", "richiesta")
        .profile(Profile::Request)
        .build()
        .unwrap();
    portal.submit(&request).await.unwrap();
    let leased = turin.lease(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(leased.len(), 1);
    let seen = {
        let store = Store::open(dir.path()).unwrap();
        let (handler, seen) = recorder(&turin, &store);
        let d = Dispatcher::builder()
            .route("prova.scambio", "richiesta", handler)
            .build(turin.clone(), store)
            .unwrap();
        assert_eq!(
            d.dispatch(&leased[0].inbound).await.unwrap(),
            Disposition::Processed
        );
        // The process "dies" here, before the ack; the store is closed with it.
        seen
    };
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The lease lapses and the hub hands the envelope out again, to a new process.
    let again = eventually(10, "the redelivery", || async {
        let l = turin.lease(1, Duration::from_secs(30)).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await;
    // sled lets go of its lock when its background thread ends.
    let store = eventually(10, "the store's lock", || async {
        Store::open(dir.path()).ok()
    })
    .await;
    let (handler, seen2) = recorder(&turin, &store);
    let d = Dispatcher::builder()
        .route("prova.scambio", "richiesta", handler)
        .build(turin.clone(), store)
        .unwrap();
    assert_eq!(
        d.dispatch(&again[0].inbound).await.unwrap(),
        Disposition::AlreadyProcessed
    );
    turin.ack(&again[0].lease).await.unwrap();
    assert!(seen2.lock().unwrap().is_empty(), "the handler ran again");
    // The response was sent once.
    let inbox = portal.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(inbox.len(), 1);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_envelope_failing_verification_is_refused_and_returned_never_handed_on() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let portal = t.client(&hub, PORTAL, Format::Json);
    let env = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .build()
        .unwrap();
    portal.submit(&env).await.unwrap();
    // After the hub accepted it, the portal's certificate is revoked; Turin's client knows.
    let crl = snodo_envelopes::pki::revoke(&t.pki(), &t.files(PORTAL).0).unwrap();
    let mut config = t.client_config(&url(&hub), TURIN, Format::Json);
    config.crl = Some(crl);
    let strict = HubClient::new(&config).unwrap();
    assert!(
        strict
            .lease(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    // It was returned (nack), not acknowledged: a client without the CRL gets it at once.
    let lenient = t.client(&hub, TURIN, Format::Json);
    let leased = lenient.lease(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].inbound.id(), env.header.id);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn pushes_are_verified_processed_once_and_only_the_hub_may_push() {
    let port = free_port();
    let endpoint = format!("https://127.0.0.1:{port}/snodo/push");
    let t = TestHub::new(&[(TURIN, endpoint.clone())]);
    let hub = t.start().await;
    let portal = t.client(&hub, PORTAL, Format::Xml);
    let turin = t.client(&hub, TURIN, Format::Json);
    let store = Store::temporary().unwrap();
    let (handler, seen) = recorder(&turin, &store);
    let dispatcher = Arc::new(
        Dispatcher::builder()
            .fallback(handler)
            .build(turin.clone(), store.clone())
            .unwrap(),
    );
    let (cert, key) = t.files(TURIN);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let receiver = PushReceiver::start(
        &PushConfig {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            ca: t.pki().join("ca.crt"),
            crl: None,
            cert,
            key,
        },
        turin.entity().clone(),
        turin.verifier().clone(),
        dispatcher.clone(),
        stop_rx,
    )
    .await
    .unwrap();

    let env = portal
        .envelope(to(TURIN), "prova.scambio", "notifica")
        .json(json!({"pratica": "P-9"}))
        .build()
        .unwrap();
    portal.submit(&env).await.unwrap();
    eventually(10, "the push", || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), vec![env.header.id]);

    // A tampered envelope, pushed with the hub's own certificate, is refused with its code.
    let signed = portal.sign(&env).unwrap();
    let tampered = String::from_utf8(signed.bytes.to_vec())
        .unwrap()
        .replace("P-9", "P-6");
    let as_hub = push_client(&t.pki(), "hub", TURIN);
    let resp = as_hub
        .post(&endpoint)
        .header("content-type", "application/xml")
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "signature-invalid", "{problem}");
    // The same bytes again, untampered: a redelivery, acknowledged without a second run.
    let resp = as_hub
        .post(&endpoint)
        .header("content-type", "application/xml")
        .body(signed.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    // Another entity may not push, even with a valid envelope.
    let as_portal = push_client(&t.pki(), "portale-comunefacile", TURIN);
    let resp = as_portal
        .post(&endpoint)
        .body(signed.bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(seen.lock().unwrap().len(), 1, "handed on exactly once");

    let _ = stop.send(true);
    receiver.stopped().await;
    hub.shutdown().await.unwrap();
}

/// `n` notices from the portal to Turin, signed alternately in JSON and XML (one client each
/// for the same entity), in the order made.
fn notices(json: &HubClient, xml: &HubClient, n: usize) -> Vec<Signed> {
    (0..n)
        .map(|i| {
            let c = if i % 2 == 0 { json } else { xml };
            let env = c
                .envelope(to(TURIN), "prova.scambio", "notifica")
                .json(json!({ "pratica": format!("P-{i}") }))
                .build()
                .unwrap();
            c.sign(&env).unwrap()
        })
        .collect()
}

/// Leases Turin's inbox until `n` envelopes came, acknowledging each; their ids in order.
async fn drain_inbox(turin: &HubClient, n: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for _ in 0..50 {
        if ids.len() >= n {
            break;
        }
        for d in turin.lease(100, Duration::from_secs(30)).await.unwrap() {
            ids.push(d.inbound.id());
            turin.ack(&d.lease).await.unwrap();
        }
    }
    ids
}

/// How many distinct checkpoints (by journal size) the receipts among `results` carry.
fn checkpoints(results: &[Result<Submitted, ClientError>]) -> usize {
    let sizes: std::collections::HashSet<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|s| s.receipt.checkpoint.checkpoint.size)
        .collect();
    sizes.len()
}

/// Appends `[limits]` with `settings` to the test hub's configuration.
fn limit(t: &TestHub, settings: &str) {
    let mut config = std::fs::read_to_string(&t.config_path).unwrap();
    config.push_str(&format!("\n[limits]\n{settings}\n"));
    std::fs::write(&t.config_path, config).unwrap();
}

#[tokio::test]
async fn submit_all_sends_batches_in_order_with_a_verified_result_for_each() {
    let t = TestHub::new(&[]);
    let hub = t.start().await;
    let json = t.client(&hub, PORTAL, Format::Json);
    let xml = t.client(&hub, PORTAL, Format::Xml);
    let mut signed = notices(&json, &xml, 150);
    // One the hub has already receipted: a duplicate, with the original receipt.
    let earlier = json.submit_signed(&signed[70]).await.unwrap();
    // One for a service this hub does not know: refused on its own, the rest accepted.
    let unknown = json
        .envelope(to(TURIN), "anpr.feed", "variazione")
        .build()
        .unwrap();
    signed[100] = json.sign(&unknown).unwrap();

    let results = json.submit_all(&signed).await;
    assert_eq!(results.len(), signed.len());
    for (i, (s, r)) in signed.iter().zip(&results).enumerate() {
        match i {
            100 => {
                let e = r.as_ref().unwrap_err();
                assert_eq!(e.code(), Some("unknown-service"), "{e}");
                assert!(e.is_permanent());
            }
            _ => {
                let ok = r.as_ref().unwrap_or_else(|e| panic!("envelope {i}: {e}"));
                assert_eq!(ok.receipt.envelope_id, s.id, "envelope {i}'s own receipt");
                assert_eq!(ok.duplicate, i == 70, "envelope {i}");
            }
        }
    }
    assert_eq!(
        results[70].as_ref().unwrap().receipt.index,
        earlier.receipt.index
    );
    // Sent 64 to a request, each batch committed together: receipts share checkpoints,
    // where envelopes sent one after the other each have their own.
    assert!(
        checkpoints(&results) <= 30,
        "{} checkpoints for 149 receipts",
        checkpoints(&results)
    );
    // Delivered once each, in the order given.
    let turin = t.client(&hub, TURIN, Format::Json);
    let expected: Vec<uuid::Uuid> = signed
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 100 && *i != 70)
        .map(|(_, s)| s.id)
        .collect();
    let mut delivered = drain_inbox(&turin, 149).await;
    assert_eq!(delivered.remove(0), signed[70].id, "the one sent first");
    assert_eq!(delivered, expected);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_batch_past_the_hubs_size_limit_is_sent_one_envelope_at_a_time() {
    let t = TestHub::new(&[]);
    // Room for one envelope (about 1 KiB signed), not for ten in one request.
    limit(&t, "max_envelope_bytes = 6000");
    let hub = t.start().await;
    let json = t.client(&hub, PORTAL, Format::Json);
    let xml = t.client(&hub, PORTAL, Format::Xml);
    let signed = notices(&json, &xml, 10);
    let results = json.submit_all(&signed).await;
    for (s, r) in signed.iter().zip(&results) {
        assert_eq!(r.as_ref().unwrap().receipt.envelope_id, s.id);
    }
    assert_eq!(
        checkpoints(&results),
        10,
        "each sent and committed on its own"
    );
    let turin = t.client(&hub, TURIN, Format::Json);
    let ids: Vec<uuid::Uuid> = signed.iter().map(|s| s.id).collect();
    assert_eq!(drain_inbox(&turin, 10).await, ids);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn envelopes_of_a_batch_turned_away_for_the_rate_are_retried_then_left_to_the_caller() {
    let t = TestHub::new(&[]);
    limit(&t, "requests_per_second = 10\nburst = 10");
    let hub = t.start().await;
    let json = t.client(&hub, PORTAL, Format::Json);
    let xml = t.client(&hub, PORTAL, Format::Xml);
    let signed = notices(&json, &xml, 64);
    let first = json.submit_all(&signed).await;
    let accepted = first.iter().filter(|r| r.is_ok()).count();
    // The burst's ten at once, then what the rate lets through while the client retries.
    assert!(accepted >= 10, "{accepted} accepted");
    let left: Vec<Signed> = signed
        .iter()
        .zip(&first)
        .filter(|(_, r)| r.is_err())
        .map(|(s, r)| {
            let e = r.as_ref().unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert_eq!(e.code(), Some("rate-limited"), "{e}");
            s.clone()
        })
        .collect();
    // Five attempts with backoffs of at most 500 ms: not time enough for 64 at 10/s.
    assert!(!left.is_empty(), "all 64 accepted at 10/s");
    // The caller (a connector's outbox) sends the rest again later: each accepted once.
    let mut rest = left;
    for _ in 0..20 {
        if rest.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let results = json.submit_all(&rest).await;
        rest = rest
            .into_iter()
            .zip(results)
            .filter(|(_, r)| r.is_err())
            .map(|(s, _)| s)
            .collect();
    }
    assert!(rest.is_empty(), "{} never accepted", rest.len());
    let turin = t.client(&hub, TURIN, Format::Json);
    let mut delivered = drain_inbox(&turin, 64).await;
    delivered.sort();
    let mut ids: Vec<uuid::Uuid> = signed.iter().map(|s| s.id).collect();
    ids.sort();
    assert_eq!(delivered, ids, "each delivered once");
    hub.shutdown().await.unwrap();
}
