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
