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
fn an_unknown_message_is_named() {
    let e = Catalog::global()
        .validate_json("residenza.cambio", "richiesta", &json!({}))
        .unwrap_err();
    assert!(matches!(e, Error::UnknownMessage { .. }), "{e}");
}
