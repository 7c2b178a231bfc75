//! A message built in Rust, written and read in both forms: the value comes back equal.

use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Importo, Nav};
use snodo_schemas::services::tributi_imu::{AvvisoPagamento, Rata};
use snodo_schemas::{Payload, from_json, from_xml, to_json, to_xml};

fn notice() -> AvvisoPagamento {
    AvvisoPagamento {
        contribuente: CodiceFiscale::parse("RSSMRA85T10A562S").unwrap(),
        comune: CodiceIstat::parse("001272").unwrap(),
        anno: 2026,
        rata: Rata::Saldo,
        // DOMAIN.md's worked example: an A/1 main residence owes €808 for the year.
        importo: Importo::euro(808).unwrap(),
        scadenza: Data::parse("2026-12-16").unwrap(),
        nav: Nav::new(1, 1).unwrap(),
    }
}

#[test]
fn a_typed_message_round_trips_in_both_forms() {
    let value = notice();
    assert_eq!(AvvisoPagamento::SERVICE, "tributi.imu");
    assert_eq!(AvvisoPagamento::ACTION, "avviso-pagamento");

    let json = to_json(&value).unwrap();
    assert_eq!(json["importo"], 80_800);
    assert_eq!(json["nav"], "301000000000000144");
    assert_eq!(from_json::<AvvisoPagamento>(&json).unwrap(), value);

    let xml = to_xml(&value).unwrap();
    assert!(
        xml.starts_with(
            r#"<avviso-pagamento xmlns="urn:snodo:service:tributi.imu:1"><anno>2026</anno>"#
        ),
        "{xml}"
    );
    assert!(xml.contains("<nav>301000000000000144</nav>"), "{xml}");
    assert_eq!(from_xml::<AvvisoPagamento>(&xml).unwrap(), value);
}

#[test]
fn a_value_the_schema_refuses_is_not_written() {
    // The year is a plain integer in Rust, bounded in the schema.
    let value = AvvisoPagamento {
        anno: 1990,
        ..notice()
    };
    let e = to_json(&value).unwrap_err();
    assert_eq!(e.violations()[0].at, "/anno", "{e}");
    assert!(to_xml(&value).is_err());
}
