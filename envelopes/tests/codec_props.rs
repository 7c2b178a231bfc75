//! Properties of the two encodings: model → XML → model and model → JSON → model are
//! identities for every valid envelope, signing then verifying gives back the envelope in both
//! formats, and no single flipped byte of a signed envelope ever verifies.

mod common;

use std::sync::OnceLock;

use common::Fed;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Number, Value};
use snodo_envelopes::pki::KeyType;
use snodo_envelopes::{
    Body, ContentType, EntityId, Envelope, Format, Header, Limits, Profile, Recipient, json, sign,
    xml,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: what RFC 3339 can write.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

fn p256() -> &'static Fed {
    static FED: OnceLock<Fed> = OnceLock::new();
    FED.get_or_init(|| Fed::new(KeyType::P256))
}

// --- Headers -----------------------------------------------------------------------------------

fn entity_id() -> impl Strategy<Value = EntityId> {
    ("[a-z]{1,32}", "[A-Za-z0-9_-]{1,64}")
        .prop_map(|(class, code)| format!("{class}:{code}").parse().unwrap())
}

fn service() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z][a-z0-9_-]{0,15}", 1..5)
        .prop_map(|s| s.join("."))
        .prop_filter("at most 64 characters", |s| s.len() <= 64)
}

fn action() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,63}"
}

fn conversation() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

fn uuid_v7() -> impl Strategy<Value = Uuid> {
    (0u64..(1 << 48), any::<[u8; 10]>())
        .prop_map(|(ms, rand)| uuid::Builder::from_unix_timestamp_millis(ms, &rand).into_uuid())
}

fn time_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        Just(Profile::Oneway),
        Just(Profile::Request),
        Just(Profile::Response),
        Just(Profile::Event),
    ]
}

/// A header that obeys every rule, from `sender`; `content_type` is set with the body.
fn header(sender: impl Strategy<Value = EntityId>) -> impl Strategy<Value = Header> {
    (
        (
            uuid_v7(),
            sender,
            entity_id(),
            service(),
            action(),
            conversation(),
        ),
        (
            profile(),
            prop::option::of(any::<u128>().prop_map(Uuid::from_u128)),
            MIN_MS..=MAX_MS,
            prop::option::of(1i64..=20 * 365 * 86_400_000),
            prop::option::of(any::<u64>()),
        ),
    )
        .prop_filter_map(
            "recipient differs from sender, answer differs from id",
            |((id, sender, to, service, action, conversation), (profile, reply, at, ttl, seq))| {
                let recipient = match profile {
                    Profile::Event => Recipient::Broadcast,
                    _ if to == sender => return None,
                    _ => Recipient::Entity(to),
                };
                let in_reply_to = match (profile, reply) {
                    (Profile::Response, None) => {
                        Some(Uuid::from_u128(u128::from(at.unsigned_abs())))
                    }
                    (_, r) => r,
                };
                if in_reply_to == Some(id) {
                    return None;
                }
                let expires_at = match ttl {
                    Some(ttl) if at + ttl <= MAX_MS => Some(time_ms(at + ttl)),
                    Some(_) => return None,
                    None => None,
                };
                Some(Header {
                    id,
                    sender,
                    recipient,
                    service,
                    action,
                    conversation,
                    in_reply_to,
                    profile,
                    created_at: time_ms(at),
                    expires_at,
                    sequence: seq,
                    content_type: ContentType::Json,
                })
            },
        )
}

// --- JSON bodies -------------------------------------------------------------------------------

/// Any character, with the ones encoders get wrong made frequent.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        1 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        1 => prop::sample::select(vec![
            '<', '&', '>', ']', '"', '\'', '\\', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}',
            '\u{feff}', '\u{fffe}', '\u{ffff}', '\u{10ffff}', '\u{1f600}',
        ]),
    ]
}

fn any_string(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(any_char(), 0..max).prop_map(|c| c.into_iter().collect()),
        1 => Just("<&>]]>".to_owned()),
        1 => Just("]]><![CDATA[x]]>".to_owned()),
    ]
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    (NORMAL | SUBNORMAL | ZERO | POSITIVE | NEGATIVE).prop_filter("finite", |f| f.is_finite())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        any_string(24).prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any_string(12), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

// --- XML bodies --------------------------------------------------------------------------------

/// A character XML 1.0 allows in content.
fn xml_char() -> impl Strategy<Value = char> {
    any_char().prop_filter("allowed in XML 1.0", |&c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
            || c >= '\u{10000}'
    })
}

fn xml_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(xml_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn escape_attr(s: &str) -> String {
    escape_text(s).replace('"', "&quot;")
}

#[derive(Clone, Debug)]
enum Ns {
    /// No declaration: the element inherits the default namespace.
    Inherit,
    /// `xmlns="urn:…"`.
    Default(u8),
    /// `xmlns:p="urn:…"` and the element named `p:…`.
    Prefixed(String, u8),
    /// A prefix declared by an ancestor, if there is one.
    Ancestor(Index),
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    /// Predefined and numeric references, written as such.
    Reference(&'static str),
    CData(String),
    Element {
        ns: Ns,
        name: String,
        /// Unprefixed attributes (names made unique when written), and whether the element's
        /// own prefix, if any, also qualifies one of them.
        attrs: Vec<(String, String)>,
        prefixed_attr: bool,
        children: Vec<Node>,
        /// `<a></a>` rather than `<a/>` when there are no children.
        open_close: bool,
    },
}

fn xml_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9._-]{0,8}".prop_filter("not reserved", |n| {
        !n.to_ascii_lowercase().starts_with("xml")
    })
}

/// What an element is, short of its children: namespace, name, attributes, and form.
type Head = (Ns, String, Vec<(String, String)>, bool, bool);

fn element_head() -> impl Strategy<Value = Head> {
    let ns = prop_oneof![
        Just(Ns::Inherit),
        (0u8..4).prop_map(Ns::Default),
        ("[a-w][a-z]{0,3}", 0u8..4)
            .prop_filter("not reserved", |(p, _)| !p.starts_with("xml"))
            .prop_map(|(p, u)| Ns::Prefixed(p, u)),
        any::<Index>().prop_map(Ns::Ancestor),
    ];
    (
        ns,
        xml_name(),
        prop::collection::vec((xml_name(), xml_text(12)), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
}

fn xml_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        3 => xml_text(16).prop_map(Node::Text),
        1 => prop::sample::select(vec![
            "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#233;", "&#x1F600;", "&#10;", "&#13;",
            "&#x9;",
        ])
        .prop_map(Node::Reference),
        1 => xml_text(16).prop_map(|t| Node::CData(t.replace('>', ""))),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        (element_head(), prop::collection::vec(inner, 0..5)).prop_map(
            |((ns, name, attrs, prefixed_attr, open_close), children)| Node::Element {
                ns,
                name,
                attrs,
                prefixed_attr,
                children,
                open_close,
            },
        )
    })
}

fn render(node: &Node, prefixes: &mut Vec<String>, out: &mut String) {
    match node {
        Node::Text(t) => out.push_str(&escape_text(t)),
        Node::Reference(r) => out.push_str(r),
        Node::CData(t) => {
            out.push_str("<![CDATA[");
            out.push_str(t);
            out.push_str("]]>");
        }
        Node::Element {
            ns,
            name,
            attrs,
            prefixed_attr,
            children,
            open_close,
        } => {
            let (qname, decl, declared) = match ns {
                Ns::Inherit => (name.clone(), String::new(), None),
                Ns::Default(u) => (name.clone(), format!(" xmlns=\"urn:test:{u}\""), None),
                Ns::Prefixed(p, u) => (
                    format!("{p}:{name}"),
                    format!(" xmlns:{p}=\"urn:test:{u}\""),
                    Some(p.clone()),
                ),
                Ns::Ancestor(i) if !prefixes.is_empty() => {
                    (format!("{}:{name}", i.get(prefixes)), String::new(), None)
                }
                Ns::Ancestor(_) => (name.clone(), String::new(), None),
            };
            out.push('<');
            out.push_str(&qname);
            out.push_str(&decl);
            let mut seen = std::collections::HashSet::new();
            for (i, (k, v)) in attrs.iter().enumerate() {
                if !seen.insert(k) {
                    continue;
                }
                let k = match (&declared, i == 0 && *prefixed_attr) {
                    (Some(p), true) => format!("{p}:{k}"),
                    _ => k.clone(),
                };
                out.push_str(&format!(" {k}=\"{}\"", escape_attr(v)));
            }
            if children.is_empty() && !open_close {
                out.push_str("/>");
                return;
            }
            out.push('>');
            let pushed = declared.is_some();
            if let Some(p) = declared {
                prefixes.push(p);
            }
            for c in children {
                render(c, prefixes, out);
            }
            if pushed {
                prefixes.pop();
            }
            out.push_str("</");
            out.push_str(&qname);
            out.push('>');
        }
    }
}

fn xml_fragment() -> impl Strategy<Value = String> {
    prop::collection::vec(xml_node(), 0..4).prop_map(|nodes| {
        let mut out = String::new();
        for n in &nodes {
            render(n, &mut Vec::new(), &mut out);
        }
        out
    })
}

// --- Envelopes ---------------------------------------------------------------------------------

fn small_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => json_value().prop_map(Body::Json),
        4 => xml_fragment().prop_map(Body::Xml),
        1 => prop::sample::select(vec![
            Body::Xml(String::new()),
            Body::Json(Value::Null),
            Body::Json(Value::Object(Map::new())),
            Body::Json(Value::Array(Vec::new())),
            Body::Json(Value::String(String::new())),
        ]),
    ]
}

/// Tens of KiB: one long string, many values, or many elements.
fn large_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (xml_text(64), 300usize..1500).prop_map(|(t, n)| Body::Json(Value::String(
            t.repeat(n).chars().take(60_000).collect()
        ))),
        prop::collection::vec(json_value(), 300..600).prop_map(|v| Body::Json(Value::Array(v))),
        prop::collection::vec(xml_fragment(), 100..300).prop_map(|f| Body::Xml(f.concat())),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![12 => small_body(), 1 => large_body()]
}

fn envelope_from(
    sender: impl Strategy<Value = EntityId>,
    body: impl Strategy<Value = Body>,
) -> impl Strategy<Value = Envelope> {
    (header(sender), body).prop_map(|(mut header, body)| {
        header.content_type = body.content_type();
        Envelope { header, body }
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    envelope_from(entity_id(), body())
}

/// An envelope Turin can sign in the test federation.
fn turin_envelope(body: impl Strategy<Value = Body>) -> impl Strategy<Value = Envelope> {
    envelope_from(Just(common::entity("comune:001272")), body)
}

proptest! {
    #[test]
    fn generated_envelopes_are_valid(env in envelope()) {
        prop_assert!(env.validate(&Limits::default()).is_ok(), "{:?}", env.validate(&Limits::default()));
    }

    #[test]
    fn model_to_xml_to_model_is_identity(env in envelope()) {
        let doc = xml::encode(&env);
        let decoded = xml::decode(doc.as_bytes(), &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        prop_assert_eq!(&decoded.envelope, &env, "{}", doc);
        prop_assert!(decoded.signature.is_none());
        prop_assert_eq!(decoded.signature_count, 0);
    }

    #[test]
    fn model_to_json_to_model_is_identity(env in envelope()) {
        let doc = json::encode(&env);
        let decoded = json::decode(&doc, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&doc))))?;
        prop_assert_eq!(&decoded, &env);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn signing_then_verifying_gives_back_the_envelope(env in turin_envelope(body())) {
        let fed = p256();
        let signer = fed.signer("comune:001272");
        let verifier = fed.verifier();
        for format in [Format::Xml, Format::Json] {
            let signed = sign(&env, &signer, format)
                .map_err(|e| TestCaseError::fail(format!("{format:?} sign: {e}")))?;
            let verified = verifier.verify(&signed).map_err(|e| {
                TestCaseError::fail(format!("{format:?}: {e}\n{}", String::from_utf8_lossy(&signed)))
            })?;
            prop_assert_eq!(&verified.envelope, &env, "{:?}", format);
            prop_assert_eq!(verified.format, format);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn no_single_flipped_byte_of_a_signed_json_envelope_verifies(
        env in turin_envelope(small_body()),
        xor in 1u8..=255,
    ) {
        let fed = p256();
        let verifier = fed.verifier();
        let signed = sign(&env, &fed.signer("comune:001272"), Format::Json).unwrap();
        prop_assert!(verifier.verify(&signed).is_ok());
        for i in 0..signed.len() {
            let mut flipped = signed.clone();
            flipped[i] ^= xor;
            let result = verifier.verify(&flipped);
            prop_assert!(
                result.is_err(),
                "byte {} ^ {:#04x} still verifies:\n{}",
                i,
                xor,
                String::from_utf8_lossy(&flipped)
            );
        }
    }
}

// --- Regressions: the bugs these properties found, pinned by name -----------------------------

fn turin_request() -> snodo_envelopes::EnvelopeBuilder {
    Envelope::builder(
        common::entity("comune:001272"),
        common::entity("anpr:ministero"),
        "residenza.cambio",
        "richiesta",
    )
}

/// serde_json writes U+FFFE and U+FFFF raw, XML forbids them, and libxml2 refused to sign.
#[test]
fn regression_json_noncharacters_travel_in_an_xml_envelope() {
    let env = turin_request()
        .json(serde_json::json!({"\u{fffe}": "a\u{ffff}b"}))
        .build()
        .unwrap();
    let doc = xml::encode(&env);
    assert!(doc.contains(r#"{"\ufffe":"a\uffffb"}"#), "{doc}");
    let decoded = xml::decode(doc.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(decoded.envelope, env);
    let fed = p256();
    let signed = sign(&env, &fed.signer("comune:001272"), Format::Xml).unwrap();
    assert_eq!(fed.verifier().verify(&signed).unwrap().envelope, env);
}

/// The XML signer returned libxml2's re-serialization of the document, so the recipient got a
/// different body from the one signed: attribute white space normalized, CR as LF, `<e></e>` as
/// `<e/>`, `&apos;` as `'`, single quotes as double.
#[test]
fn regression_signed_xml_carries_the_body_exactly_as_signed() {
    let body = "<a xmlns=\"urn:a\" b=\"x\ty\nz\" c='q'>\r\n<e></e>&apos;&#233;</a>";
    let env = turin_request().xml(body).build().unwrap();
    let fed = p256();
    let signed = sign(&env, &fed.signer("comune:001272"), Format::Xml).unwrap();
    let text = String::from_utf8(signed.clone()).unwrap();
    assert!(text.contains(body), "{text}");
    assert!(text.starts_with(&xml::encode(&env)[..xml::encode(&env).len() - "</Envelope>".len()]));
    let verified = fed.verifier().verify(&signed).unwrap();
    assert_eq!(verified.envelope.body, Body::Xml(body.to_owned()));
}

/// A time before year 0 was written as unix seconds, which neither codec can read back.
#[test]
fn regression_times_outside_rfc3339_years_are_refused() {
    let before_year_0 = time_ms(MIN_MS - 1);
    let err = turin_request()
        .created_at(before_year_0)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            snodo_envelopes::Error::InvalidField { field: "created_at", reason } if reason.contains("0000 to 9999")
        ),
        "{err}"
    );
    let first = turin_request().created_at(time_ms(MIN_MS)).build().unwrap();
    let doc = xml::encode(&first);
    assert!(
        doc.contains("<created_at>0000-01-01T00:00:00Z</created_at>"),
        "{doc}"
    );
    assert_eq!(
        xml::decode(doc.as_bytes(), &Limits::default())
            .unwrap()
            .envelope,
        first
    );
}
