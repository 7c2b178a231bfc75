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
