//! Known-bad documents are refused in both forms, each refusal naming the field: a JSON pointer
//! for JSON, an element path and line for XML.

use serde_json::{Value, json};
use snodo_schemas::{Catalog, Error, Form, MessageSchema};

fn message(service: &str, action: &str) -> &'static MessageSchema {
    Catalog::global().get(service, action).unwrap()
}

fn declaration() -> (&'static MessageSchema, Value) {
    let m = message("residenza.cambio", "dichiarazione");
    let example = m.examples().remove(0);
    m.validate_json(&example).unwrap();
    (m, example)
}

/// The XML form of `body`, one element per line (the example's texts are never empty, so the
/// line breaks only fall between elements).
fn xml_lines(m: &MessageSchema, body: &Value) -> String {
    m.json_to_xml(body).unwrap().replace("><", ">\n<")
}

/// The violations of a refusal, checking its form.
fn refused(r: Result<(), Error>, form: Form) -> Vec<snodo_schemas::Violation> {
    match r {
        Err(Error::Invalid {
            form: f,
            violations,
            ..
        }) if f == form => violations,
        other => panic!("expected an invalid {form:?} body, got {other:?}"),
    }
}

#[test]
fn the_pretty_xml_of_the_tests_is_valid() {
    let (m, body) = declaration();
    let xml = xml_lines(m, &body);
    m.validate_xml(&xml).unwrap();
    assert_eq!(m.xml_to_json(&xml).unwrap(), body);
}

#[test]
fn a_wrong_check_letter_is_refused_at_its_field() {
    let (m, mut body) = declaration();
    body["persone"][1]["persona"]["codice_fiscale"] = json!("RSSMRA85T10A562X");
    // The JSON Schema's pattern cannot see the check letter; the types do.
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/persone/1/persona/codice_fiscale");
    assert!(
        v[0].problem.contains("check letter should be S, not X"),
        "{v:?}"
    );

    let good = xml_lines(m, &declaration().1);
    let bad = good.replacen(
        "RSSMRA85T10A562S</codice_fiscale>",
        "RSSMRA85T10A562X</codice_fiscale>",
        2,
    );
    let bad = bad.replacen(
        "RSSMRA85T10A562X</codice_fiscale>",
        "RSSMRA85T10A562S</codice_fiscale>",
        1,
    );
    let line = bad
        .lines()
        .position(|l| l.contains("RSSMRA85T10A562X"))
        .unwrap()
        + 1;
    let v = refused(m.validate_xml(&bad), Form::Xml);
    assert_eq!(v[0].at, "/dichiarazione/persone[2]/persona/codice_fiscale");
    assert_eq!(v[0].line, Some(u32::try_from(line).unwrap()));
    assert!(
        v[0].problem.contains("check letter should be S, not X"),
        "{v:?}"
    );
}

#[test]
fn a_bad_nav_is_refused_in_both_forms() {
    let m = message("tributi.imu", "avviso-pagamento");
    let mut body = m.examples().remove(0);
    body["nav"] = json!("301000000000000145");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/nav");
    assert!(
        v[0].problem.contains("check digits should be 44, not 45"),
        "{v:?}"
    );

    body["nav"] = json!("301000000000000144");
    let xml = xml_lines(m, &body).replace("000144</nav>", "000145</nav>");
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/avviso-pagamento/nav");
    assert!(v[0].line.is_some());
    // A NAV with a letter breaks the pattern, in the schemas themselves.
    body["nav"] = json!("30100000000000014A");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/nav");
    let xml = xml_lines(m, &m.examples()[0]).replace("000144</nav>", "00014A</nav>");
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/avviso-pagamento/nav");
    assert!(v[0].problem.contains("pattern"), "{v:?}");
}

#[test]
fn a_missing_required_field_is_refused() {
    let (m, mut body) = declaration();
    body.as_object_mut().unwrap().remove("indirizzo");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "");
    assert!(v[0].problem.contains("indirizzo"), "{v:?}");

    let xml = xml_lines(m, &declaration().1);
    let start = xml.find("<indirizzo>").unwrap();
    let end = xml.find("</indirizzo>").unwrap() + "</indirizzo>".len();
    let xml = format!("{}{}", &xml[..start], &xml[end..]);
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert!(v[0].at.starts_with("/dichiarazione"), "{v:?}");
    assert!(v[0].problem.contains("indirizzo"), "{v:?}");
}

#[test]
fn a_wrong_type_is_refused() {
    let (m, mut body) = declaration();
    body["firmata"] = json!("yes");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/firmata");

    let xml =
        xml_lines(m, &declaration().1).replace("<firmata>true</firmata>", "<firmata>yes</firmata>");
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/dichiarazione/firmata");
    assert!(v[0].problem.contains("boolean"), "{v:?}");
}

#[test]
fn an_unknown_member_or_element_is_refused() {
    let (m, mut body) = declaration();
    body["colore"] = json!("blu");
    let v = refused(m.validate_json(&body), Form::Json);
    assert!(v[0].problem.contains("colore"), "{v:?}");

    let xml =
        xml_lines(m, &declaration().1).replace("<firmata>", "<colore>blu</colore>\n<firmata>");
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/dichiarazione/colore");
    assert!(v[0].problem.contains("not expected"), "{v:?}");
}

#[test]
fn the_root_element_must_be_the_action_in_the_service_namespace() {
    let (m, body) = declaration();
    let xml = m.json_to_xml(&body).unwrap();
    let other = xml
        .replacen("<dichiarazione ", "<esito ", 1)
        .replace("</dichiarazione>", "</esito>");
    let v = refused(m.validate_xml(&other), Form::Xml);
    assert!(v[0].problem.contains("root element"), "{v:?}");
    let foreign = xml.replace("urn:snodo:service:residenza.cambio:1", "urn:example:other");
    let v = refused(m.validate_xml(&foreign), Form::Xml);
    assert!(v[0].problem.contains("namespace"), "{v:?}");
    let doctype = format!("<!DOCTYPE dichiarazione>{xml}");
    let v = refused(m.validate_xml(&doctype), Form::Xml);
    assert!(v[0].problem.contains("DOCTYPE"), "{v:?}");
    let attribute = xml.replacen("<firmata>", "<firmata a=\"1\">", 1);
    let v = refused(m.validate_xml(&attribute), Form::Xml);
    assert_eq!(v[0].at, "/dichiarazione/firmata");
    let v = refused(m.validate_xml(&xml[..xml.len() - 3]), Form::Xml);
    assert!(v[0].problem.contains("well-formed"), "{v:?}");
}

#[test]
fn rules_that_tie_fields_together_are_refused_at_the_field() {
    // Transfers must sum to the position's total, in both forms.
    let m = message("pagamenti", "posizione-crea");
    let mut body = m.examples().remove(0);
    m.validate_json(&body).unwrap();
    body["importo"] = json!(90_000);
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/trasferimenti");
    assert!(
        v[0].problem
            .contains("sum to €808.00, not to the total €900.00"),
        "{v:?}"
    );
    let xml = m.json_to_xml_pretty(&m.examples()[0]).unwrap().replace(
        "<importo>80800</importo>\n  <iupd>",
        "<importo>90000</importo>\n  <iupd>",
    );
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/posizione-crea/trasferimenti");
    let line = xml
        .lines()
        .position(|l| l.contains("<trasferimenti>"))
        .unwrap()
        + 1;
    assert_eq!(v[0].line, Some(u32::try_from(line).unwrap()));

    // Transfers are numbered 1 to n.
    let mut body = m.examples().remove(0);
    body["trasferimenti"][0]["indice"] = json!(2);
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/trasferimenti/0/indice");

    // A resend range that ends before it starts.
    let m = message("anagrafe.variazioni", "richiesta-reinvio");
    let body = json!({"comune": "001272", "da": 7, "a": 5});
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/a");

    // The declarant moves too; a declaration does not precede the move.
    let (m, mut body) = declaration();
    body["dichiarante"] = json!("MRTMTT25D09F205Z");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/dichiarante");
    let (m, mut body) = declaration();
    body["data_trasferimento"] = json!("2026-03-20");
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/data_dichiarazione");
}

#[test]
fn an_instalment_plan_that_does_not_hold_together_is_refused_at_the_field() {
    let m = message("pagamenti", "posizione-crea");
    let plan = m.examples().remove(0);
    // The sample is a year's tax in two instalments, June and December.
    assert_eq!(plan["rate"].as_array().unwrap().len(), 2);
    m.validate_json(&plan).unwrap();
    let refused_at = |body: &Value, at: &str, says: &str| {
        let v = refused(m.validate_json(body), Form::Json);
        assert!(
            v.iter().any(|v| v.at == at && v.problem.contains(says)),
            "{at}: {says}: {v:?}"
        );
    };

    // One instalment is no plan: 2 to 12.
    let mut body = plan.clone();
    body["rate"].as_array_mut().unwrap().pop();
    refused_at(&body, "/rate", "");
    // Amounts that do not sum to the total.
    let mut body = plan.clone();
    body["rate"][1]["importo"] = json!(40_000);
    refused_at(&body, "/rate", "sum to €804.00, not to the total €808.00");
    // An instalment of nothing.
    let mut body = plan.clone();
    body["rate"][0]["importo"] = json!(0);
    body["rate"][1]["importo"] = json!(80_800);
    refused_at(&body, "/rate/0/importo", "instalment 1 asks for nothing");
    // Due dates that do not increase; the position due before its last instalment.
    let mut body = plan.clone();
    body["rate"][0]["scadenza"] = json!("2026-12-16");
    refused_at(
        &body,
        "/rate/1/scadenza",
        "instalment 2 is due on 2026-12-16, not after instalment 1's 2026-12-16",
    );
    let mut body = plan.clone();
    body["scadenza"] = json!("2026-11-30");
    refused_at(
        &body,
        "/scadenza",
        "its last instalment's due date, 2026-12-16",
    );
    // An instalment that stops being payable before it is due.
    let mut body = plan.clone();
    body["rate"][0]["validita"] = json!("2026-06-15");
    refused_at(&body, "/rate/0/validita", "before its due date 2026-06-16");
    // Two transfers: each instalment says how much of each it pays, and per transfer the
    // instalments make up the position's.
    let mut body = plan.clone();
    let mut second = body["trasferimenti"][0].clone();
    second["indice"] = json!(2);
    second["importo"] = json!(800);
    body["trasferimenti"][0]["importo"] = json!(80_000);
    body["trasferimenti"].as_array_mut().unwrap().push(second);
    m.validate_json(&{
        let mut b = body.clone();
        b.as_object_mut().unwrap().remove("rate");
        b
    })
    .unwrap();
    refused_at(&body, "/rate/0", "the position has 2 transfers");
    let transfers = body["trasferimenti"].clone();
    let parts = |first: u64, second: u64| {
        let mut t = transfers.clone();
        t[0]["importo"] = json!(first);
        t[1]["importo"] = json!(second);
        t
    };
    body["rate"][0]["trasferimenti"] = parts(40_000, 400);
    body["rate"][1]["trasferimenti"] = parts(40_000, 400);
    m.validate_json(&body).unwrap();
    body["rate"][1]["trasferimenti"] = parts(40_100, 300);
    refused_at(
        &body,
        "/rate",
        "the instalments give transfer 1 €801.00, the position €800.00",
    );
    body["rate"][1]["trasferimenti"] = parts(40_000, 300);
    refused_at(
        &body,
        "/rate/1/trasferimenti",
        "sum to €403.00, not to the total €404.00",
    );

    // In XML, at the element and its line.
    let xml = m.json_to_xml_pretty(&plan).unwrap().replacen(
        "<scadenza>2026-06-16</scadenza>",
        "<scadenza>2027-01-16</scadenza>",
        1,
    );
    let v = refused(m.validate_xml(&xml), Form::Xml);
    assert_eq!(v[0].at, "/posizione-crea/rate[2]/scadenza", "{v:?}");
    assert!(v[0].line.is_some(), "{v:?}");

    // A change of the instalments is held to the same rules.
    let m = message("pagamenti", "posizione-aggiorna");
    let mut body = m.examples().remove(0);
    m.validate_json(&body).unwrap();
    body["rate"][0]["importo"] = json!(50_000);
    let v = refused(m.validate_json(&body), Form::Json);
    assert_eq!(v[0].at, "/rate", "{v:?}");
}

#[test]
fn an_unknown_message_is_named() {
    let e = Catalog::global()
        .validate_json("residenza.cambio", "richiesta", &json!({}))
        .unwrap_err();
    assert!(matches!(e, Error::UnknownMessage { .. }), "{e}");
}

mod mutations {
    use proptest::prelude::*;
    use snodo_schemas::Catalog;

    fn samples() -> Vec<(
        &'static snodo_schemas::MessageSchema,
        String,
        serde_json::Value,
    )> {
        [
            "residenza.cambio/dichiarazione",
            "pagamenti/attiva-esito",
            "mobilita.viabilita/evento",
        ]
        .iter()
        .map(|name| {
            let m = Catalog::global().by_name(name).unwrap();
            let json = m.examples().remove(0);
            let xml = m.json_to_xml_pretty(&json).unwrap();
            (m, xml, json)
        })
        .collect()
    }

    proptest! {
        /// Any edit of a valid XML document is accepted or refused, never a panic; a refusal
        /// names an element path or the document.
        #[test]
        fn edited_xml_is_judged_not_crashed(
            which in 0usize..3,
            at in any::<prop::sample::Index>(),
            cut in 0usize..4,
            insert in "[<>/&a-z0-9 \"=:;#x]{0,6}",
        ) {
            let (m, xml, _) = &samples()[which];
            let mut i = at.index(xml.len());
            while !xml.is_char_boundary(i) { i -= 1; }
            let mut j = (i + cut).min(xml.len());
            while !xml.is_char_boundary(j) { j -= 1; }
            let edited = format!("{}{}{}", &xml[..i], insert, &xml[j..]);
            if let Err(e) = m.validate_xml(&edited) {
                prop_assert!(!e.violations().is_empty());
                prop_assert!(e.violations().iter().all(|v| v.at.is_empty() || v.at.starts_with('/')));
            }
        }

        /// Any value put anywhere in a valid JSON document is accepted or refused at a pointer.
        #[test]
        fn edited_json_is_judged_not_crashed(
            which in 0usize..3,
            pick in any::<prop::sample::Index>(),
            value in prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "[A-Z0-9a-z/-]{0,20}".prop_map(serde_json::Value::from),
                Just(serde_json::json!([])),
                Just(serde_json::json!({})),
            ],
        ) {
            let (m, _, json) = &samples()[which];
            let mut pointers = Vec::new();
            collect(json, String::new(), &mut pointers);
            let target = &pointers[pick.index(pointers.len())];
            let mut edited = json.clone();
            if let Some(slot) = edited.pointer_mut(target) {
                *slot = value;
            }
            if let Err(e) = m.validate_json(&edited) {
                prop_assert!(!e.violations().is_empty());
            }
        }
    }

    fn collect(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    collect(child, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    collect(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
}
