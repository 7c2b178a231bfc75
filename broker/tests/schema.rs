//! Acceptance step 5 end to end over real TLS: bodies are checked against the schema the
//! registry names for their action, in JSON and in XML; an invalid one is refused with 422
//! `body-schema-invalid`, the field at fault in the problem, journaled, and never queued.

mod common;

use common::*;
use serde_json::{Value, json};
use snodo_envelopes::{Envelope, Format, Profile, Recipient};
use snodo_schemas::Catalog;

/// Services whose bodies the catalog checks: one action by default (the catalog's message of
/// the same name), one naming its schema, one large message for the blocking pool.
const CHECKED: &str = r#"
[[services]]
name = "tributi.imu"
[[services.actions]]
name = "avviso-pagamento"
profile = "oneway"
senders = ["comune:*"]
recipients = ["portale:comunefacile"]
[[services.actions]]
name = "avviso"
profile = "oneway"
senders = ["comune:*"]
recipients = ["portale:comunefacile"]
schema = "tributi.imu/avviso-pagamento"

[[services]]
name = "anagrafe.variazioni"
[[services.actions]]
name = "lotto"
profile = "oneway"
senders = ["comune:*"]
recipients = ["anpr:ministero"]
"#;

fn hub_with_schemas() -> TestHub {
    let t = TestHub::new("");
    let mut text = std::fs::read_to_string(&t.config_path).unwrap();
    text.push_str(CHECKED);
    std::fs::write(&t.config_path, text).unwrap();
    t
}

/// A signed oneway envelope of `service`/`action` from Turin to `to`, its body in `format`:
/// `body` itself for JSON, its XML form (under `schema`, `service/action`) for XML.
fn signed(
    t: &TestHub,
    to: &str,
    action: (&str, &str),
    schema: &str,
    body: &Value,
    xml: Option<String>,
    format: Format,
) -> (Envelope, Vec<u8>) {
    let builder = Envelope::builder(
        TURIN.parse().unwrap(),
        Recipient::Entity(to.parse().unwrap()),
        action.0,
        action.1,
    )
    .profile(Profile::Oneway);
    let builder = match format {
        Format::Json => builder.json(body.clone()),
        Format::Xml => builder.xml(xml.unwrap_or_else(|| {
            Catalog::global()
                .by_name(schema)
                .unwrap()
                .json_to_xml(body)
                .unwrap()
        })),
    };
    let env = builder.build().unwrap();
    let bytes = snodo_envelopes::sign(&env, &t.signer(TURIN), format).unwrap();
    (env, bytes)
}

fn notice() -> Value {
    Catalog::global()
        .get("tributi.imu", "avviso-pagamento")
        .unwrap()
        .examples()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_checked_against_their_schema_in_both_forms() {
    let t = hub_with_schemas();
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let avviso = ("tributi.imu", "avviso-pagamento");
    let named = ("tributi.imu", "avviso");
    let schema = "tributi.imu/avviso-pagamento";

    // Valid bodies pass, in both forms, under the default and under a named schema.
    let mut accepted = Vec::new();
    for (action, format) in [
        (avviso, Format::Json),
        (avviso, Format::Xml),
        (named, Format::Json),
        (named, Format::Xml),
    ] {
        let (env, bytes) = signed(&t, PORTAL, action, schema, &notice(), None, format);
        let a = turin.submit(&hub, &bytes, format).await;
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
        accepted.push(env.header.id.to_string());
    }

    // A NAV with a wrong check digit, in JSON: the pointer names the field.
    let mut bad = notice();
    bad["nav"] = json!("301000000000000145");
    let (_, bytes) = signed(&t, PORTAL, avviso, schema, &bad, None, Format::Json);
    let a = turin.submit(&hub, &bytes, Format::Json).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    let problem = a.json();
    assert_eq!(problem["errors"][0]["pointer"], "/nav", "{problem:#}");
    assert!(
        problem["detail"].as_str().unwrap().contains(
            "/nav: `301000000000000145` is not a valid NAV: the check digits should be 44, not 45"
        ),
        "{problem:#}"
    );

    // A missing field, in JSON: the pointer is the object that lacks it.
    let mut bad = notice();
    bad.as_object_mut().unwrap().remove("scadenza");
    let (_, bytes) = signed(&t, PORTAL, named, schema, &bad, None, Format::Json);
    let a = turin.submit(&hub, &bytes, Format::Json).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    assert_eq!(a.json()["errors"][0]["pointer"], "");
    assert!(
        a.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("scadenza")
    );

    // An unknown element, in XML: the element path and its line.
    let good = Catalog::global()
        .by_name(schema)
        .unwrap()
        .json_to_xml(&notice())
        .unwrap()
        .replace("><", ">\n<");
    let xml = good.replace("<rata>", "<sconto>10</sconto>\n<rata>");
    let line = xml.lines().position(|l| l.contains("<sconto>")).unwrap() + 1;
    let (_, bytes) = signed(
        &t,
        PORTAL,
        avviso,
        schema,
        &notice(),
        Some(xml),
        Format::Xml,
    );
    let a = turin.submit(&hub, &bytes, Format::Xml).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    let problem = a.json();
    assert_eq!(
        problem["errors"][0]["path"], "/avviso-pagamento/sconto",
        "{problem:#}"
    );
    assert_eq!(problem["errors"][0]["line"], line, "{problem:#}");

    // A wrong check letter, in XML: the schema's pattern passes it, the types do not.
    let xml = good.replace(
        "<contribuente>RSSMRA85T10A562S<",
        "<contribuente>RSSMRA85T10A562X<",
    );
    assert_ne!(xml, good);
    let (_, bytes) = signed(&t, PORTAL, named, schema, &notice(), Some(xml), Format::Xml);
    let a = turin.submit(&hub, &bytes, Format::Xml).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    let problem = a.json();
    assert_eq!(
        problem["errors"][0]["path"], "/avviso-pagamento/contribuente",
        "{problem:#}"
    );
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("the check letter should be S, not X"),
        "{problem:#}"
    );

    // Only the valid envelopes reached the inbox.
    let inbox = t.client(PORTAL).inbox(&hub, "?limit=100").await;
    let mut ids: Vec<String> = inbox
        .iter()
        .map(|i| i["envelope_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    accepted.sort();
    assert_eq!(ids, accepted);

    // Every refusal is journaled with its code.
    let a = turin
        .get(
            &hub,
            "/v1/journal/entries?status=body-schema-invalid&limit=100",
        )
        .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["entries"].as_array().unwrap().len(), 4);
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_checked_off_the_reactor_and_refused_at_its_field() {
    let t = hub_with_schemas();
    let hub = t.start().await;
    let turin = t.client(TURIN);
    let lotto = Catalog::global()
        .get("anagrafe.variazioni", "lotto")
        .unwrap();
    let mut body = lotto.examples().remove(0);
    let one = body["variazioni"][0].clone();
    body["variazioni"] = Value::Array(vec![one; 200]);
    let action = ("anagrafe.variazioni", "lotto");
    let name = "anagrafe.variazioni/lotto";
    for format in [Format::Json, Format::Xml] {
        let (_, bytes) = signed(&t, ANPR, action, name, &body, None, format);
        assert!(bytes.len() > 16 * 1024, "{} bytes", bytes.len());
        let a = turin.submit(&hub, &bytes, format).await;
        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
    }
    let mut bad = body.clone();
    bad["variazioni"][137]["persona"]["codice_fiscale"] = json!("MRTMTT25D09F205A");
    let (_, bytes) = signed(&t, ANPR, action, name, &bad, None, Format::Json);
    let a = turin.submit(&hub, &bytes, Format::Json).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    assert_eq!(
        a.json()["errors"][0]["pointer"],
        "/variazioni/137/persona/codice_fiscale"
    );
    let xml = lotto.json_to_xml(&body).unwrap().replacen(
        "<tipo>nascita</tipo>",
        "<tipo>nascita</tipo><tipo>morte</tipo>",
        1,
    );
    let (_, bytes) = signed(&t, ANPR, action, name, &body, Some(xml), Format::Xml);
    let a = turin.submit(&hub, &bytes, Format::Xml).await;
    assert_eq!((a.status, a.code()), (422, "body-schema-invalid".into()));
    assert!(
        a.json()["errors"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("/lotto/variazioni[1]"),
        "{:#}",
        a.json()
    );
    assert_eq!(t.client(ANPR).inbox(&hub, "?limit=100").await.len(), 2);
    hub.shutdown().await.unwrap();
}

#[test]
fn a_schema_the_catalog_does_not_have_is_a_configuration_error() {
    let t = TestHub::new("");
    let mut text = std::fs::read_to_string(&t.config_path).unwrap();
    text.push_str(&CHECKED.replace("tributi.imu/avviso-pagamento", "tributi.imu/avvisi"));
    std::fs::write(&t.config_path, text).unwrap();
    let e = snodo_broker::config::Config::load(&t.config_path).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains(".schema: the catalog has no schema `tributi.imu/avvisi`"),
        "{message}"
    );
    assert!(message.contains("avviso-pagamento"), "{message}");
}
