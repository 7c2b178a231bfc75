//! Property tests of the shared formats: generated valid values parse, one altered character is
//! refused, NAVs made are NAVs read, and what a type accepts its JSON Schema accepts too.

use proptest::prelude::*;
use schemars::JsonSchema;
use snodo_schemas::formats::{
    CodiceBelfiore, CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Importo, Iuv, Nav,
    PuntiBase, Targa, TipoSoggetto,
};

const MONTHS: &[u8] = b"ABCDEHLMPRST";
const OMOCODIA: &[u8] = b"LMNPQRSTUV";
const NUMERIC: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];

/// A valid person's code: letters, year, month, day (women +40), place, omocodia on any of the
/// numeric positions, and its check letter.
fn person_code() -> impl Strategy<Value = String> {
    (
        "[A-Z]{6}",
        0u8..100,
        0usize..12,
        1u8..=28,
        any::<bool>(),
        "[A-Z][0-9]{3}",
        prop::array::uniform7(any::<bool>()),
    )
        .prop_map(|(letters, year, month, day, woman, place, omocodia)| {
            let day = if woman { day + 40 } else { day };
            let mut code: Vec<u8> = format!(
                "{letters}{year:02}{}{day:02}{place}",
                char::from(MONTHS[month])
            )
            .into_bytes();
            for (i, swap) in NUMERIC.iter().zip(omocodia) {
                if swap {
                    code[*i] = OMOCODIA[usize::from(code[*i] - b'0')];
                }
            }
            let first = String::from_utf8(code).unwrap();
            let check = CodiceFiscalePersona::check_letter(&first).unwrap();
            format!("{first}{check}")
        })
}

/// A valid legal entity's code: 10 digits and the check digit.
fn entity_code() -> impl Strategy<Value = String> {
    "[0-9]{10}".prop_map(|first| {
        let check = CodiceFiscale::check_digit(&first).unwrap();
        format!("{first}{check}")
    })
}

/// `s` with character `i` (modulo its length) replaced by `c`, if that changes it.
fn altered(s: &str, i: usize, c: char) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    let i = i % chars.len();
    (chars[i] != c).then(|| {
        chars[i] = c;
        chars.into_iter().collect()
    })
}

/// True when `value` is accepted by the JSON Schema of `T`.
fn schema_accepts<T: JsonSchema>(value: &str) -> bool {
    let schema = schemars::schema_for!(T).to_value();
    jsonschema::validator_for(&schema)
        .unwrap()
        .is_valid(&serde_json::Value::String(value.to_owned()))
}

proptest! {
    #[test]
    fn valid_person_codes_parse(code in person_code()) {
        let cf = CodiceFiscale::parse(&code).unwrap();
        prop_assert_eq!(cf.tipo(), TipoSoggetto::Persona);
        let person = CodiceFiscalePersona::parse(&code).unwrap();
        prop_assert_eq!(person.as_str(), code.as_str());
        prop_assert!(schema_accepts::<CodiceFiscalePersona>(&code));
        let json = serde_json::to_value(&cf).unwrap();
        prop_assert_eq!(serde_json::from_value::<CodiceFiscale>(json).unwrap(), cf);
    }

    #[test]
    fn one_altered_character_of_a_person_code_is_refused(
        code in person_code(),
        i in 0usize..16,
        c in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".to_vec()),
    ) {
        if let Some(bad) = altered(&code, i, char::from(c)) {
            prop_assert!(CodiceFiscale::parse(&bad).is_err(), "{} accepted", bad);
        }
    }

    #[test]
    fn valid_entity_codes_parse_and_one_altered_digit_is_refused(
        code in entity_code(),
        i in 0usize..11,
        d in 0u32..10,
    ) {
        prop_assert_eq!(CodiceFiscale::parse(&code).unwrap().tipo(), TipoSoggetto::Ente);
        prop_assert!(CodiceFiscalePersona::parse(&code).is_err());
        prop_assert!(schema_accepts::<CodiceFiscale>(&code));
        if let Some(bad) = altered(&code, i, char::from_digit(d, 10).unwrap()) {
            prop_assert!(CodiceFiscale::parse(&bad).is_err(), "{} accepted", bad);
        }
    }

    #[test]
    fn navs_made_are_navs_read(segregation in 0u8..100, base in 0u64..10_000_000_000_000) {
        let nav = Nav::new(segregation, base).unwrap();
        prop_assert_eq!(nav.as_str().len(), 18);
        prop_assert_eq!(Nav::parse(nav.as_str()).unwrap(), nav.clone());
        prop_assert_eq!(nav.segregazione(), segregation);
        let iuv = Iuv::parse(nav.iuv().as_str()).unwrap();
        prop_assert_eq!(iuv.nav(), nav.clone());
        prop_assert!(schema_accepts::<Nav>(nav.as_str()));
        prop_assert!(schema_accepts::<Iuv>(iuv.as_str()));
    }

    #[test]
    fn one_altered_digit_of_a_nav_is_refused(
        segregation in 0u8..100,
        base in 0u64..10_000_000_000_000,
        i in 0usize..18,
        d in 0u32..10,
    ) {
        let nav = Nav::new(segregation, base).unwrap();
        if let Some(bad) = altered(nav.as_str(), i, char::from_digit(d, 10).unwrap()) {
            prop_assert!(Nav::parse(&bad).is_err(), "{} accepted", bad);
        }
    }

    #[test]
    fn what_the_types_accept_their_schemas_accept(s in "[A-Z0-9]{0,8}") {
        if Targa::parse(&s).is_ok() {
            prop_assert!(schema_accepts::<Targa>(&s));
        }
        if CodiceIstat::parse(&s).is_ok() {
            prop_assert!(schema_accepts::<CodiceIstat>(&s));
        }
        if CodiceBelfiore::parse(&s).is_ok() {
            prop_assert!(schema_accepts::<CodiceBelfiore>(&s));
        }
    }

    #[test]
    fn plates_of_the_current_forms_parse(
        car in "[A-HJ-NPR-TV-Z]{2}[0-9]{3}[A-HJ-NPR-TV-Z]{2}",
        moto in "[A-HJ-NPR-TV-Z]{2}[0-9]{5}",
    ) {
        prop_assert!(Targa::parse(&car).is_ok());
        prop_assert!(Targa::parse(&moto).is_ok());
        prop_assert!(Targa::parse(&car.to_lowercase()).is_err());
    }

    #[test]
    fn dates_are_calendar_days(y in 0i32..10000, m in 0u8..14, d in 0u8..33) {
        let text = format!("{y:04}-{m:02}-{d:02}");
        let real = time::Month::try_from(m)
            .ok()
            .and_then(|m| time::Date::from_calendar_date(y, m, d).ok());
        match (Data::parse(&text), real) {
            (Ok(parsed), Some(date)) => {
                prop_assert_eq!(parsed.date(), date);
                prop_assert_eq!(parsed.as_str(), text.as_str());
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{}: {:?} but {:?}", text, got, want),
        }
    }

    #[test]
    fn amounts_are_cents_and_never_negative(cents in any::<u64>(), negative in i64::MIN..0) {
        let a = Importo::centesimi(cents);
        let json = serde_json::to_value(a).unwrap();
        prop_assert_eq!(json.as_u64(), Some(cents));
        prop_assert_eq!(serde_json::from_value::<Importo>(json).unwrap(), a);
        prop_assert!(serde_json::from_value::<Importo>(serde_json::json!(negative)).is_err());
    }

    #[test]
    fn proportions_are_at_most_the_whole(bp in any::<u16>()) {
        let parsed = serde_json::from_value::<PuntiBase>(serde_json::json!(bp));
        prop_assert_eq!(parsed.is_ok(), bp <= 10_000);
    }
}

#[test]
fn the_domain_examples() {
    for code in ["RSSMRA85T10A562S", "MRTMTT25D09F205Z"] {
        assert_eq!(CodiceFiscalePersona::parse(code).unwrap().as_str(), code);
    }
    let e = CodiceFiscale::parse("RSSMRA85T10A562X").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`RSSMRA85T10A562X` is not a valid codice fiscale: the check letter should be S, not X"
    );
    let nav = Nav::new(1, 1).unwrap();
    assert_eq!(nav.as_str(), "301000000000000144");
    assert_eq!(Nav::parse("301000000000000144").unwrap(), nav);
    assert_eq!(nav.iuv().as_str(), "01000000000000144");
    assert_eq!(Importo::centesimi(80_800).to_string(), "€808.00");
}
