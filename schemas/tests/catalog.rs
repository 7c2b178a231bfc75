//! Every message of every service: its examples are valid in both forms, round-trip through the
//! Rust types and XML without loss, and the XSD accepts what the types write.

use snodo_schemas::Catalog;

#[test]
fn every_service_of_the_domain_is_in_the_catalog() {
    let services: Vec<&str> = Catalog::global().services().collect();
    assert_eq!(
        services,
        [
            "anagrafe.variazioni",
            "edilizia.permessi",
            "mobilita.contravvenzioni",
            "mobilita.viabilita",
            "mobilita.ztl",
            "pagamenti",
            "residenza.cambio",
            "tributi.imu",
        ]
    );
    for service in &services {
        assert!(Catalog::global().xsd(service).is_ok(), "{service}");
    }
}

#[test]
fn names_are_envelope_names_and_each_type_says_its_action() {
    let segment = |s: &str| {
        let mut b = s.bytes();
        b.next().is_some_and(|c| c.is_ascii_lowercase())
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
    };
    for message in Catalog::global().messages() {
        assert!(
            message.service().split('.').all(segment),
            "{}",
            message.name()
        );
        assert!(
            segment(message.action()) && message.action().len() <= 64,
            "{}",
            message.name()
        );
        // The type's documentation opens with the action it is registered as.
        let description = message.json_schema()["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.starts_with(&format!("`{}` (", message.action())),
            "{}: {description}",
            message.name()
        );
    }
}

#[test]
fn examples_round_trip_through_json_xml_and_the_types() {
    let catalog = Catalog::global();
    let mut checked = 0;
    for message in catalog.messages() {
        let name = message.name();
        for example in message.examples() {
            message
                .validate_json(&example)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{example:#}"));
            let canonical = message.canonical_json(&example).unwrap();
            assert_eq!(canonical, example, "{name}: the types keep every member");
            let xml = message.json_to_xml(&example).unwrap();
            message
                .validate_xml(&xml)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{xml}"));
            let back = message.xml_to_json(&xml).unwrap();
            assert_eq!(back, example, "{name}: XML keeps every value\n{xml}");
            checked += 1;
        }
    }
    assert!(checked >= 80, "{checked} documents checked");
}

mod codec {
    use proptest::prelude::*;
    use serde_json::json;
    use snodo_schemas::{Catalog, Error};

    proptest! {
        /// Any text XML 1.0 can hold survives the XML form, markup characters, carriage
        /// returns, surrounding spaces and all.
        #[test]
        fn free_text_round_trips_through_xml(text in "[\\t\\n\\r -\u{D7FF}\u{E000}-\u{FFFD}\u{10000}-\u{10FFFF}]{0,40}") {
            let m = Catalog::global().get("residenza.cambio", "osservazioni").unwrap();
            let mut body = m.examples().remove(0);
            body["testo"] = json!(text);
            let xml = m.json_to_xml(&body).unwrap();
            prop_assert_eq!(m.xml_to_json(&xml).unwrap(), body);
        }

        /// Numbers keep their value, to the largest.
        #[test]
        fn whole_numbers_round_trip_through_xml(size in any::<u64>(), year in 2012u16..=2100) {
            let m = Catalog::global().get("residenza.cambio", "osservazioni").unwrap();
            let mut body = m.examples().remove(0);
            body["allegati"][0]["dimensione"] = json!(size);
            let xml = m.json_to_xml(&body).unwrap();
            prop_assert_eq!(m.xml_to_json(&xml).unwrap(), body);
            let m = Catalog::global().get("tributi.imu", "posizione").unwrap();
            let mut body = m.examples().remove(0);
            body["anno"] = json!(year);
            let xml = m.json_to_xml(&body).unwrap();
            prop_assert_eq!(m.xml_to_json(&xml).unwrap(), body);
        }

        /// A character XML cannot hold is an error that names the member, not a broken document.
        #[test]
        fn control_characters_have_no_xml_form(c in "[\u{0}-\u{8}\u{B}\u{C}\u{E}-\u{1F}]") {
            let m = Catalog::global().get("residenza.cambio", "osservazioni").unwrap();
            let mut body = m.examples().remove(0);
            body["testo"] = json!(format!("prima{c}dopo"));
            match m.json_to_xml(&body) {
                Err(Error::Unrepresentable { violation, .. }) => prop_assert_eq!(violation.at, "/testo"),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
