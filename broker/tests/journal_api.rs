//! The journal over HTTPS: auditors see everything and their queries are journaled; entities
//! see only what they are party to, whatever their filters; exports stream as NDJSON and CSV;
//! entries, raw envelopes, checkpoints and proofs check out offline.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};
use snodo_broker::journal::SignedCheckpoint;
use snodo_broker::journal::entry::Entry;
use snodo_broker::journal::merkle;
use snodo_envelopes::Format;

const AUDITOR: &str = "auditor-corte-dei-conti";

fn hash(v: &Value) -> merkle::Hash {
    STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Submits a few envelopes between Turin, Cuneo, the portal and ANPR, and one refusal.
async fn traffic(
    t: &TestHub,
    hub: &snodo_broker::cli::serve::Running,
) -> Vec<(uuid::Uuid, Vec<u8>)> {
    let mut sent = Vec::new();
    for (from, format) in [
        (TURIN, Format::Json),
        (CUNEO, Format::Xml),
        (TURIN, Format::Xml),
        (PORTAL, Format::Json),
    ] {
        let (env, signed) = t.envelope(
            from,
            ANPR,
            "residenza.cambio",
            "richiesta",
            json!({"cf": from}),
            format,
        );
        assert_eq!(
            t.client(from).submit(hub, &signed, format).await.status,
            202
        );
        sent.push((env.header.id, signed));
    }
    // A refusal of Cuneo's: submitted with Cuneo's certificate but signed by Turin.
    let (_, signed) = t.envelope(
        TURIN,
        ANPR,
        "residenza.cambio",
        "richiesta",
        json!({}),
        Format::Json,
    );
    assert_eq!(
        t.client(CUNEO)
            .submit(hub, &signed, Format::Json)
            .await
            .status,
        403
    );
    // ANPR takes and acknowledges everything.
    let anpr = t.client(ANPR);
    for item in anpr.inbox(hub, "?limit=10").await {
        assert_eq!(
            anpr.ack(hub, item["lease"].as_str().unwrap()).await.status,
            204
        );
    }
    sent
}

async fn all_entries(
    c: &Client,
    hub: &snodo_broker::cli::serve::Running,
    filters: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let a = c
            .get(
                hub,
                &format!("/v1/journal/entries?limit=3{filters}{cursor}"),
            )
            .await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let page = a.json();
        out.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_sees_only_what_it_is_party_to() {
    let t = TestHub::new("");
    let hub = t.start().await;
    traffic(&t, &hub).await;
    let cuneo = t.client(CUNEO);
    let mine = all_entries(&cuneo, &hub, "").await;
    assert!(!mine.is_empty());
    for item in &mine {
        let e = &item["entry"];
        let party = [&e["sender"], &e["recipient"], &e["actor"]]
            .iter()
            .any(|p| p.as_str() == Some(CUNEO));
        assert!(party, "Cuneo saw {e}");
    }
    // Its refusal is there.
    assert!(
        mine.iter().any(|i| i["entry"]["kind"] == "refused"
            && i["entry"]["code"] == "transport-identity-mismatch")
    );
    // Asking for another entity's entries returns nothing of theirs.
    for filters in [
        "&sender=comune:001272",
        "&entity=portale:comunefacile",
        "&recipient=anpr:ministero&sender=portale:comunefacile",
    ] {
        let got = all_entries(&cuneo, &hub, filters).await;
        for item in &got {
            let e = &item["entry"];
            assert!(
                [&e["sender"], &e["recipient"], &e["actor"]]
                    .iter()
                    .any(|p| p.as_str() == Some(CUNEO)),
                "{filters}: {e}"
            );
        }
    }
    assert!(
        all_entries(&cuneo, &hub, "&sender=comune:001272")
            .await
            .iter()
            .all(|i| i["entry"]["actor"] == CUNEO)
    );
    // Nor its raw envelopes, nor its entries by index.
    let turin_entry = all_entries(&t.client(TURIN), &hub, "&kind=accepted").await[0].clone();
    let a = cuneo
        .get(
            &hub,
            &format!("/v1/journal/entries/{}", turin_entry["index"]),
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "not-found".into()));
    let id = turin_entry["entry"]["envelope_id"].as_str().unwrap();
    let a = cuneo
        .get(&hub, &format!("/v1/journal/envelopes/{id}/raw"))
        .await;
    assert_eq!(a.status, 404);
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_sees_everything_proves_it_and_is_journaled() {
    let t = TestHub::new("");
    let hub = t.start().await;
    let sent = traffic(&t, &hub).await;
    let auditor = t.client(AUDITOR);
    let everything = all_entries(&auditor, &hub, "").await;
    // 4 accepted, 1 refused, 4 delivered, 4 acknowledged, and the auditor's own queries.
    let count = |kind: &str| {
        everything
            .iter()
            .filter(|i| i["entry"]["kind"] == kind)
            .count()
    };
    assert_eq!(
        (
            count("accepted"),
            count("refused"),
            count("delivered"),
            count("acknowledged")
        ),
        (4, 1, 4, 4)
    );
    assert!(
        count("queried") >= 1,
        "the auditor's first query is journaled before it is answered"
    );

    // Filters: by sender, by kind, by status, by conversation, by time.
    let turin = all_entries(&auditor, &hub, "&sender=comune:001272&kind=accepted").await;
    assert_eq!(turin.len(), 2);
    let refused = all_entries(&auditor, &hub, "&status=transport-identity-mismatch").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["entry"]["actor"], CUNEO);
    let conv = sent[1].0.to_string();
    let by_conv = all_entries(&auditor, &hub, &format!("&conversation={conv}")).await;
    assert_eq!(
        by_conv
            .iter()
            .map(|i| i["entry"]["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["accepted", "delivered", "acknowledged"]
    );
    let a = auditor.get(&hub, "/v1/journal/entries?kind=bogus").await;
    assert_eq!((a.status, a.code()), (400, "bad-parameter".into()));

    // Every entry's bytes are its canonical encoding.
    for item in &everything {
        let bytes = STANDARD.decode(item["bytes"].as_str().unwrap()).unwrap();
        let e = Entry::from_bytes(&bytes).unwrap();
        assert_eq!(e.index, item["index"].as_u64().unwrap());
    }

    // Raw envelopes are the exact bytes submitted, and verify.
    for (id, signed) in &sent {
        let a = auditor
            .get(&hub, &format!("/v1/journal/envelopes/{id}/raw"))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(&a.body, signed);
        verifier(&t).verify(&a.body).unwrap();
    }

    // The latest checkpoint verifies; every entry under it has an inclusion proof that checks;
    // an earlier checkpoint is consistent with it.
    let cp: SignedCheckpoint =
        serde_json::from_slice(&auditor.get(&hub, "/v1/journal/checkpoint").await.body).unwrap();
    cp.verify(&t.trust(), time::OffsetDateTime::now_utc())
        .unwrap();
    let size = cp.checkpoint.size;
    for item in everything
        .iter()
        .filter(|i| i["index"].as_u64().unwrap() < size)
    {
        let index = item["index"].as_u64().unwrap();
        let p = auditor
            .get(
                &hub,
                &format!("/v1/journal/proof/inclusion?index={index}&size={size}"),
            )
            .await
            .json();
        let proof: Vec<merkle::Hash> = p["hashes"].as_array().unwrap().iter().map(hash).collect();
        let leaf = merkle::leaf_hash(&STANDARD.decode(item["bytes"].as_str().unwrap()).unwrap());
        merkle::verify_inclusion(&leaf, index, size, &proof, &cp.checkpoint.root).unwrap();
    }
    let all: Vec<SignedCheckpoint> = serde_json::from_value(
        auditor.get(&hub, "/v1/journal/checkpoints").await.json()["checkpoints"].clone(),
    )
    .unwrap();
    assert!(all.len() >= 2, "{}", all.len());
    let old = &all[0];
    let p = auditor
        .get(
            &hub,
            &format!(
                "/v1/journal/proof/consistency?from={}&to={size}",
                old.checkpoint.size
            ),
        )
        .await
        .json();
    let proof: Vec<merkle::Hash> = p["hashes"].as_array().unwrap().iter().map(hash).collect();
    merkle::verify_consistency(
        old.checkpoint.size,
        size,
        &old.checkpoint.root,
        &cp.checkpoint.root,
        &proof,
    )
    .unwrap();
    let a = auditor
        .get(
            &hub,
            &format!("/v1/journal/proof/inclusion?index=0&size={}", size + 1000),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad-parameter".into()));

    // Who asked what is itself in the journal.
    let queries = all_entries(&auditor, &hub, "&kind=queried").await;
    assert!(queries.iter().any(|q| {
        q["entry"]["detail"]
            .as_str()
            .unwrap()
            .contains("status=transport-identity-mismatch")
    }));
    assert!(
        queries
            .iter()
            .all(|q| q["entry"]["actor"] == "auditor:corte-dei-conti")
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_as_ndjson_and_csv() {
    let t = TestHub::new("");
    let hub = t.start().await;
    traffic(&t, &hub).await;
    let auditor = t.client(AUDITOR);
    let url = format!(
        "https://127.0.0.1:{}/v1/journal/entries?kind=accepted",
        hub.addr.port()
    );
    let a = auditor
        .send(
            auditor
                .http
                .get(&url)
                .header("accept", "application/x-ndjson"),
        )
        .await;
    assert_eq!(a.content_type, "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(a.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let a = auditor
        .send(auditor.http.get(&url).header("accept", "text/csv"))
        .await;
    assert_eq!(a.content_type, "text/csv; charset=utf-8");
    let text = String::from_utf8(a.body).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "index,at,kind,envelope_id,sender,recipient,service,action,conversation,digest,code,detail,actor"
    );
    assert_eq!(rows.len(), 5);
    assert!(rows[1..].iter().all(|r| r.contains(",accepted,")));
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_pruned_after_retention_and_the_tree_still_verifies() {
    let t = TestHub::with(Options {
        journal: "retention = \"1s\"",
        ..Options::default()
    });
    let hub = t.start().await;
    let sent = traffic(&t, &hub).await;
    // One more that nobody takes: waiting envelopes are never pruned.
    let (waiting, _) = t.accepted(&hub, TURIN, ANPR).await;
    let auditor = t.client(AUDITOR);
    let before: SignedCheckpoint =
        serde_json::from_slice(&auditor.get(&hub, "/v1/journal/checkpoint").await.body).unwrap();
    let (id, _) = &sent[0];
    let pruned = eventually(10, || async {
        let got = all_entries(&auditor, &hub, &format!("&envelope_id={id}&kind=pruned")).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(
        pruned[0]["entry"]["detail"]
            .as_str()
            .unwrap()
            .contains("pruned after the retention period")
    );
    let a = auditor
        .get(&hub, &format!("/v1/journal/envelopes/{id}/raw"))
        .await;
    assert_eq!((a.status, a.code()), (410, "envelope-pruned".into()));
    assert_eq!(
        auditor
            .get(
                &hub,
                &format!("/v1/journal/envelopes/{}/raw", waiting.header.id)
            )
            .await
            .status,
        200
    );
    // The old checkpoint is consistent with the new one: pruning changed no entry.
    let after: SignedCheckpoint =
        serde_json::from_slice(&auditor.get(&hub, "/v1/journal/checkpoint").await.body).unwrap();
    let p = auditor
        .get(
            &hub,
            &format!(
                "/v1/journal/proof/consistency?from={}&to={}",
                before.checkpoint.size, after.checkpoint.size
            ),
        )
        .await
        .json();
    let proof: Vec<merkle::Hash> = p["hashes"].as_array().unwrap().iter().map(hash).collect();
    merkle::verify_consistency(
        before.checkpoint.size,
        after.checkpoint.size,
        &before.checkpoint.root,
        &after.checkpoint.root,
        &proof,
    )
    .unwrap();
    hub.shutdown().await.unwrap();
}
