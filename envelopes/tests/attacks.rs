//! Hostile envelopes: every known way to forge, smuggle or choke on a signed envelope is refused
//! with the precise error a hub operator would read, and never with a panic.

mod common;

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use serde_json::{Value, json};
use snodo_envelopes::pki::{self, CertificateAuthority, KeyType, Subject, Validity};
use snodo_envelopes::{
    Envelope, Error, Format, Limits, Signer, Verifier, json as json_codec, sign, xml,
};
use time::{Duration, OffsetDateTime};

/// The RSA federation, generated once for the whole file (RSA keys are slow to make).
fn rsa() -> &'static Fed {
    static FED: OnceLock<Fed> = OnceLock::new();
    FED.get_or_init(|| Fed::new(KeyType::Rsa2048))
}

/// The P-256 federation shared by the tests that do not change its files.
fn p256() -> &'static Fed {
    static FED: OnceLock<Fed> = OnceLock::new();
    FED.get_or_init(|| Fed::new(KeyType::P256))
}

fn both() -> [&'static Fed; 2] {
    [p256(), rsa()]
}

/// Verifies `input`, which must be refused; returns why. A panic in the verifier fails the test
/// with its own message.
fn refused(v: &Verifier, input: &[u8]) -> Error {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.verify(input)));
    match outcome.unwrap_or_else(|_| {
        panic!(
            "the verifier panicked on:\n{}",
            String::from_utf8_lossy(input)
        )
    }) {
        Ok(ok) => panic!(
            "accepted a hostile envelope from {}:\n{}",
            ok.envelope.header.sender,
            String::from_utf8_lossy(input)
        ),
        Err(e) => e,
    }
}

/// Verifies the XML `doc`, which must be refused.
fn refused_xml(fed: &Fed, doc: &str) -> Error {
    refused(&fed.verifier(), doc.as_bytes())
}

/// `s` with the first `from` replaced by `to`; `from` must be there, so no test passes by
/// editing nothing.
fn edit(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "`{from}` is not in:\n{s}");
    s.replacen(from, to, 1)
}

fn signed_xml(fed: &Fed, env: &Envelope) -> String {
    String::from_utf8(sign(env, &fed.signer("comune:001272"), Format::Xml).unwrap()).unwrap()
}

fn signed_json(fed: &Fed, env: &Envelope) -> Vec<u8> {
    sign(env, &fed.signer("comune:001272"), Format::Json).unwrap()
}

/// The text between `<tag>` and `</tag>`, and where it starts.
fn inner<'a>(doc: &'a str, tag: &str) -> (usize, &'a str) {
    let open = format!("<{tag}>");
    let start = doc.find(&open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let end = start + doc[start..].find(&format!("</{tag}>")).unwrap();
    (start, &doc[start..end])
}

/// A flattened JWS taken apart: the protected header and the payload as JSON values.
struct Jws {
    protected: Value,
    payload: Value,
    raw: Value,
}

impl Jws {
    fn parse(signed: &[u8]) -> Jws {
        let raw: Value = serde_json::from_slice(signed).unwrap();
        let part = |k: &str| -> Value {
            let b = URL_SAFE_NO_PAD
                .decode(raw[k].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{k}: {e}"));
            serde_json::from_slice(&b).unwrap()
        };
        Jws {
            protected: part("protected"),
            payload: part("payload"),
            raw,
        }
    }

    /// Re-signs `protected` and `payload` (raw payload bytes) with `signer`'s key.
    fn sign_raw(protected: &Value, payload: &[u8], signer: &Signer) -> Vec<u8> {
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(protected).unwrap());
        let pl = URL_SAFE_NO_PAD.encode(payload);
        let sig = signer.sign_bytes(format!("{p}.{pl}").as_bytes()).unwrap();
        serde_json::to_vec(&json!({
            "protected": p,
            "payload": pl,
            "signature": URL_SAFE_NO_PAD.encode(sig),
        }))
        .unwrap()
    }

    /// The same JWS with its payload replaced and the original signature kept.
    fn with_payload(&self, payload: &Value) -> Vec<u8> {
        let mut raw = self.raw.clone();
        raw["payload"] = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(payload).unwrap())
            .into();
        serde_json::to_vec(&raw).unwrap()
    }
}

// --- Tampering: any change to what was signed breaks the signature --------------------------

#[test]
fn tampered_xml_header_body_or_signature_value_is_signature_invalid() {
    for fed in both() {
        for env in [json_envelope(), xml_envelope()] {
            let doc = signed_xml(fed, &env);
            let header = edit(
                &doc,
                "<action>richiesta</action>",
                "<action>annullamento</action>",
            );
            let body = edit(&doc, "RSSMRA80A01L219X", "VRDGPP80A01L219X");
            let (at, value) = inner(&doc, "ds:SignatureValue");
            let mut sig = STANDARD
                .decode(value.split_ascii_whitespace().collect::<String>())
                .unwrap();
            sig[10] ^= 0x01;
            let mut bad_sig = doc.clone();
            bad_sig.replace_range(at..at + value.len(), &STANDARD.encode(&sig));
            let (at, value) = inner(&doc, "ds:DigestValue");
            let mut bad_digest = doc.clone();
            bad_digest.replace_range(at..at + value.len(), &STANDARD.encode([7u8; 32]));
            // Whitespace between elements is content too: the signature covers it.
            let spaced = edit(&doc, "</Header><Body>", "</Header>\n<Body>");
            for (what, forged) in [
                ("action", header),
                ("body", body),
                ("SignatureValue", bad_sig),
                ("DigestValue", bad_digest),
                ("whitespace", spaced),
            ] {
                let err = refused_xml(fed, &forged);
                assert!(
                    matches!(err, Error::SignatureInvalid(_)),
                    "{:?} {what}: {err}",
                    fed.kind
                );
            }
        }
    }
}

#[test]
fn tampered_jws_header_body_or_signature_is_signature_invalid() {
    for fed in both() {
        let v = fed.verifier();
        for env in [json_envelope(), xml_envelope()] {
            let signed = signed_json(fed, &env);
            let jws = Jws::parse(&signed);
            let mut header = jws.payload.clone();
            header["header"]["action"] = "annullamento".into();
            let mut body = jws.payload.clone();
            body["body"] = match &body["body"] {
                Value::String(x) => x.replace("RSSMRA80A01L219X", "VRDGPP80A01L219X").into(),
                _ => json!({"codice_fiscale": "VRDGPP80A01L219X"}),
            };
            let mut sig = URL_SAFE_NO_PAD
                .decode(jws.raw["signature"].as_str().unwrap())
                .unwrap();
            sig[10] ^= 0x01;
            let mut bad_sig = jws.raw.clone();
            bad_sig["signature"] = URL_SAFE_NO_PAD.encode(&sig).into();
            for (what, forged) in [
                ("header", jws.with_payload(&header)),
                ("body", jws.with_payload(&body)),
                ("signature", serde_json::to_vec(&bad_sig).unwrap()),
            ] {
                let err = refused(&v, &forged);
                assert!(
                    matches!(err, Error::SignatureInvalid(_)),
                    "{:?} {what}: {err}",
                    fed.kind
                );
            }
        }
    }
}

#[test]
fn another_members_certificate_in_place_of_the_signers_is_signature_invalid() {
    let fed = p256();
    let other = fed.signer("anpr:ministero");
    let other_xml =
        String::from_utf8(sign(&anpr_envelope(), &other, Format::Xml).unwrap()).unwrap();
    let other_der = inner(&other_xml, "ds:X509Certificate").1.to_owned();
    let doc = signed_xml(fed, &xml_envelope());
    let (at, der) = inner(&doc, "ds:X509Certificate");
    let mut forged = doc.clone();
    forged.replace_range(at..at + der.len(), &other_der);
    let err = refused_xml(fed, &forged);
    assert!(matches!(err, Error::SignatureInvalid(_)), "{err}");

    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let mut protected = jws.protected.clone();
    protected["x5c"] =
        Jws::parse(&sign(&anpr_envelope(), &other, Format::Json).unwrap()).protected["x5c"].clone();
    let mut forged = jws.raw.clone();
    forged["protected"] = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&protected).unwrap())
        .into();
    let err = refused(&fed.verifier(), &serde_json::to_vec(&forged).unwrap());
    assert!(matches!(err, Error::SignatureInvalid(_)), "{err}");
}

/// A legitimate envelope from the registry to Turin.
fn anpr_envelope() -> Envelope {
    Envelope::builder(
        entity("anpr:ministero"),
        entity("comune:001272"),
        "residenza.cambio",
        "esito",
    )
    .in_reply_to(json_envelope().header.id)
    .json(json!({"esito": "ok"}))
    .build()
    .unwrap()
}

// --- XML signature wrapping ------------------------------------------------------------------

const FORGED_HEADER_ACTION: &str = "<action>annullamento</action>";

#[test]
fn signed_header_moved_into_a_wrapper_after_the_body_is_malformed() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let (_, header) = inner(&doc, "Header");
    let original = format!("<Header>{header}</Header>");
    let forged_header = original.replace("<action>richiesta</action>", FORGED_HEADER_ACTION);
    // The forged header where the signed one was, the signed one in an extension wrapper.
    let wrapped = edit(
        &edit(&doc, &original, &forged_header),
        "</Body>",
        &format!("</Body><Extension>{original}</Extension>"),
    );
    let err = refused_xml(fed, &wrapped);
    assert!(
        matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("Extension")),
        "{err}"
    );
    // The signed header wrapped before the forged one.
    let before = edit(
        &doc,
        &original,
        &format!("<Extension>{original}</Extension>{forged_header}"),
    );
    let err = refused_xml(fed, &before);
    assert!(
        matches!(&err, Error::Malformed { detail, .. } if detail.contains("must begin with Header")),
        "{err}"
    );
}

#[test]
fn signed_header_moved_into_the_body_breaks_the_signature() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let (_, header) = inner(&doc, "Header");
    let original = format!("<Header>{header}</Header>");
    let forged_header = original.replace("<action>richiesta</action>", FORGED_HEADER_ACTION);
    // Inside the body the signed header is well-formed XML in a wrapper of the attacker's; the
    // signature covers the whole document, so moving anything breaks it.
    let forged = edit(
        &edit(&doc, &original, &forged_header),
        "<Body>",
        &format!(
            "<Body><w:Wrap xmlns:w=\"urn:attacker\">{}</w:Wrap>",
            original.replace("<Header>", "<Header xmlns=\"urn:snodo:envelope:1\">")
        ),
    );
    let err = refused_xml(fed, &forged);
    assert!(matches!(err, Error::SignatureInvalid(_)), "{err}");
}

#[test]
fn a_second_signature_anywhere_is_refused() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let sig_at = doc.find("<ds:Signature").unwrap();
    let signature = &doc[sig_at..doc.rfind("</Envelope>").unwrap()];

    // In the body: counted, though the body is the sender's own XML.
    let in_body = edit(&doc, "<Body>", &format!("<Body>{signature}"));
    let err = refused_xml(fed, &in_body);
    assert!(matches!(err, Error::MultipleSignatures(2)), "{err}");

    // A second one after the first.
    let twice = edit(&doc, "</Envelope>", &format!("{signature}</Envelope>"));
    let err = refused_xml(fed, &twice);
    assert!(
        matches!(&err, Error::SignatureScope(m) if m.contains("last child")),
        "{err}"
    );

    // Nested inside the first one's KeyInfo.
    let nested = edit(
        &doc,
        "</ds:X509Data>",
        &format!("</ds:X509Data>{signature}"),
    );
    let err = refused_xml(fed, &nested);
    assert!(matches!(err, Error::MultipleSignatures(2)), "{err}");

    // Unprefixed, in the XML-DSig namespace only by a default declaration it inherits: taken
    // out of the envelope the body would mean something else, so Body may not declare one.
    let unprefixed = signature
        .replace("ds:", "")
        .replace(" xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"", "");
    // (A default declaration on `Body` itself would move `Body` out of the envelope namespace,
    // so it takes a prefixed `Body`.)
    let from_body = edit(
        &edit(
            &edit(
                &doc,
                "<Body>",
                "<e:Body xmlns=\"http://www.w3.org/2000/09/xmldsig#\">",
            ),
            "</Body>",
            &format!("{unprefixed}</e:Body>"),
        ),
        "<Envelope xmlns=\"urn:snodo:envelope:1\"",
        "<Envelope xmlns=\"urn:snodo:envelope:1\" xmlns:e=\"urn:snodo:envelope:1\"",
    );
    let err = refused_xml(fed, &from_body);
    assert!(
        matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("default namespace")),
        "{err}"
    );
    // The same declared by a wrapper inside the body: counted.
    let from_wrapper = edit(
        &doc,
        "<Body>",
        &format!("<Body><w xmlns=\"http://www.w3.org/2000/09/xmldsig#\">{unprefixed}</w>"),
    );
    let err = refused_xml(fed, &from_wrapper);
    assert!(matches!(err, Error::MultipleSignatures(2)), "{err}");
}

#[test]
fn a_reference_to_an_element_instead_of_the_whole_document_is_out_of_scope() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    for uri in [
        "#x",
        "#xpointer(/)",
        "#xpointer(id('x'))",
        "http://attacker.example/",
    ] {
        let forged = edit(&doc, "URI=\"\"", &format!("URI=\"{uri}\""));
        let err = refused_xml(fed, &forged);
        assert!(
            matches!(&err, Error::SignatureScope(m) if m.contains(uri)),
            "{uri}: {err}"
        );
    }
    let no_uri = edit(&doc, " URI=\"\"", "");
    let err = refused_xml(fed, &no_uri);
    assert!(matches!(err, Error::SignatureScope(_)), "{err}");
    let two = edit(
        &doc,
        "</ds:Reference>",
        "</ds:Reference><ds:Reference URI=\"#x\"><ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference>",
    );
    let err = refused_xml(fed, &two);
    assert!(
        matches!(&err, Error::SignatureScope(m) if m.contains("one Reference")),
        "{err}"
    );
}

#[test]
fn regression_a_prefixed_uri_before_the_reference_uri_is_the_one_libxmlsec1_follows() {
    // libxmlsec1 reads `URI` (and `Algorithm`) with libxml2's `xmlGetProp`: the first attribute
    // of that local name, whatever its namespace. A check that read the unprefixed one saw `""`
    // where libxmlsec1 would digest only `#x`; the structure is now judged as libxmlsec1 reads it.
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let forged = edit(
        &doc,
        "<ds:Reference URI=\"\"",
        "<ds:Reference xmlns:f=\"urn:f\" f:URI=\"#x\" URI=\"\"",
    );
    let err = refused_xml(fed, &forged);
    assert!(
        matches!(&err, Error::SignatureScope(m) if m.contains("#x")),
        "{err}"
    );
}

#[test]
fn key_info_holds_one_x509_data_of_certificates_in_base64_text_only() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let nested = edit(
        &doc,
        "</ds:X509Certificate>",
        "<ds:X509Certificate>AA==</ds:X509Certificate></ds:X509Certificate>",
    );
    let err = refused_xml(fed, &nested);
    assert!(
        matches!(&err, Error::CertificateMalformed(m) if m.contains("text only")),
        "{err}"
    );
    let not_base64 = edit(&doc, "<ds:X509Certificate>", "<ds:X509Certificate>!");
    let err = refused_xml(fed, &not_base64);
    assert!(matches!(err, Error::CertificateMalformed(_)), "{err}");
    let two = edit(
        &doc,
        "</ds:KeyInfo>",
        "<ds:X509Data><ds:X509Certificate>AA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
    );
    let err = refused_xml(fed, &two);
    assert!(matches!(err, Error::CertificateMissing(_)), "{err}");
    let none = edit(
        &doc,
        &doc[doc.find("<ds:X509Data>").unwrap()..doc.find("</ds:KeyInfo>").unwrap()],
        "<ds:X509Data/>",
    );
    let err = refused_xml(fed, &none);
    assert!(
        matches!(&err, Error::CertificateMissing(m) if m.contains("no X509Certificate")),
        "{err}"
    );
    // Line breaks in the base64, as xmlsec1 writes it, are fine (KeyInfo is outside the
    // enveloped digest and SignedInfo, so this still verifies).
    let (_, cert) = inner(&doc, "ds:X509Certificate");
    let wrapped: String = cert
        .as_bytes()
        .chunks(64)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    let rewrapped = edit(&doc, cert, &wrapped);
    fed.verifier().verify(rewrapped.as_bytes()).unwrap();
}

#[test]
fn an_object_inside_the_signature_is_out_of_scope() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let forged = edit(
        &doc,
        "</ds:KeyInfo>",
        "</ds:KeyInfo><ds:Object Id=\"x\"><Header>forged</Header></ds:Object>",
    );
    let err = refused_xml(fed, &forged);
    assert!(
        matches!(&err, Error::SignatureScope(m) if m.contains("Object")),
        "{err}"
    );
}

#[test]
fn transforms_other_than_enveloped_and_exclusive_c14n_are_refused() {
    let fed = p256();
    let doc = signed_xml(fed, &xml_envelope());
    let enveloped =
        "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>";
    let xpath = "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>not(ancestor-or-self::Header)</ds:XPath></ds:Transform>";
    let xslt = "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/>";
    let with_comments =
        "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#WithComments\"/>";
    for (what, forged) in [
        (
            "xpath",
            edit(&doc, enveloped, &format!("{enveloped}{xpath}")),
        ),
        ("xpath only", edit(&doc, enveloped, xpath)),
        ("xslt", edit(&doc, enveloped, &format!("{enveloped}{xslt}"))),
        (
            "c14n with comments",
            edit(
                &doc,
                "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                with_comments,
            ),
        ),
        ("no enveloped", edit(&doc, enveloped, "")),
    ] {
        let err = refused_xml(fed, &forged);
        assert!(
            matches!(&err, Error::SignatureScope(m) if m.contains("transforms")),
            "{what}: {err}"
        );
    }
}

#[test]
fn weak_or_symmetric_xml_algorithms_are_not_allowed() {
    for fed in both() {
        let doc = signed_xml(fed, &xml_envelope());
        let method_at = doc.find("<ds:SignatureMethod Algorithm=\"").unwrap() + 31;
        let method_end = method_at + doc[method_at..].find('"').unwrap();
        let method = &doc[method_at..method_end];
        for alg in [
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
            "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1",
            "http://www.w3.org/2001/04/xmldsig-more#rsa-md5",
        ] {
            let forged = edit(&doc, method, alg);
            let err = refused_xml(fed, &forged);
            assert!(
                matches!(&err, Error::AlgorithmNotAllowed(a) if a == alg),
                "{alg}: {err}"
            );
        }
        // An allowed method that is not the one the signer's key makes.
        let other = if method.ends_with("rsa-sha256") {
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
        } else {
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        };
        let err = refused_xml(fed, &edit(&doc, method, other));
        assert!(matches!(err, Error::AlgorithmNotAllowed(_)), "{err}");
        // HMAC with a truncated output, the classic CVE-2009-0217.
        let truncated = edit(
            &doc,
            &format!("<ds:SignatureMethod Algorithm=\"{method}\"/>"),
            "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#hmac-sha1\"><ds:HMACOutputLength>8</ds:HMACOutputLength></ds:SignatureMethod>",
        );
        let err = refused_xml(fed, &truncated);
        assert!(matches!(err, Error::AlgorithmNotAllowed(_)), "{err}");
        // Weak digests and another canonicalization.
        let sha1 = edit(
            &doc,
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
        let err = refused_xml(fed, &sha1);
        assert!(
            matches!(&err, Error::AlgorithmNotAllowed(a) if a.ends_with("#sha1")),
            "{err}"
        );
        let c14n = edit(
            &doc,
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments\"/>",
        );
        let err = refused_xml(fed, &c14n);
        assert!(
            matches!(&err, Error::AlgorithmNotAllowed(a) if a.ends_with("#WithComments")),
            "{err}"
        );
    }
}

// --- DTDs, entities, size and depth ----------------------------------------------------------

/// An unsigned XML envelope whose body is `body`, with `prolog` before the root.
fn xml_doc(prolog: &str, body: &str) -> String {
    let doc = xml::encode(&xml_envelope());
    let doc = doc.replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", prolog, 1);
    let (at, old) = inner(&doc, "Body");
    let mut out = doc.clone();
    out.replace_range(at..at + old.len(), body);
    out
}

#[test]
fn xxe_reading_a_local_file_is_doctype_forbidden_and_leaks_nothing() {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let fed = p256();
    let signed = signed_xml(fed, &xml_envelope());
    let dtd = "<!DOCTYPE Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>";
    for doc in [
        xml_doc(
            &format!("<?xml version=\"1.0\"?>{dtd}"),
            "<r:x xmlns:r=\"urn:r\">&x;</r:x>",
        ),
        xml_doc(dtd, "&x;"),
        xml_doc("<!DOCTYPE Envelope SYSTEM \"file:///etc/passwd\">", ""),
        edit(
            &edit(&signed, "?>", &format!("?>{dtd}")),
            "RSSMRA80A01L219X",
            "&x;",
        ),
    ] {
        for err in [
            refused_xml(fed, &doc),
            xml::decode(doc.as_bytes(), &Limits::default()).unwrap_err(),
        ] {
            assert!(matches!(err, Error::DoctypeForbidden), "{err}");
            let shown = format!("{err} {err:?}");
            for line in passwd.lines().filter(|l| l.len() > 4) {
                assert!(!shown.contains(line), "the error leaks `{line}`");
            }
            assert_eq!(err.code(), "xml-doctype-forbidden");
        }
    }
    // The same trick inside an XML body given to the builder.
    let err = Envelope::builder(
        entity("comune:001272"),
        entity("anpr:ministero"),
        "residenza.cambio",
        "richiesta",
    )
    .xml(format!("{dtd}<r:x xmlns:r=\"urn:r\">&x;</r:x>"))
    .build()
    .unwrap_err();
    assert!(matches!(err, Error::DoctypeForbidden), "{err}");
}

#[test]
fn billion_laughs_is_doctype_forbidden() {
    let mut dtd = String::from("<!DOCTYPE Envelope [<!ENTITY l0 \"ha\">");
    for i in 1..10 {
        let prev = format!("&l{};", i - 1);
        dtd.push_str(&format!("<!ENTITY l{i} \"{}\">", prev.repeat(10)));
    }
    dtd.push_str("]>");
    let doc = xml_doc(&format!("<?xml version=\"1.0\"?>{dtd}"), "&l9;");
    let err = refused_xml(p256(), &doc);
    assert!(matches!(err, Error::DoctypeForbidden), "{err}");
    // An undeclared entity, without any DTD, is no more than a syntax error.
    let err = xml::decode(xml_doc("", "&l9;").as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("entity `l9`")),
        "{err}"
    );
}

#[test]
fn ten_thousand_nested_elements_are_too_deep() {
    let fed = p256();
    let deep = format!(
        "{}{}",
        "<a xmlns=\"urn:a\">".repeat(10_000),
        "</a>".repeat(10_000)
    );
    let err = refused_xml(fed, &xml_doc("", &deep));
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
    let err = Envelope::builder(
        entity("comune:001272"),
        entity("anpr:ministero"),
        "residenza.cambio",
        "richiesta",
    )
    .xml(deep.clone())
    .build()
    .unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
    // Inside the signature, which the parser checks in passing.
    let signed = signed_xml(fed, &xml_envelope());
    let in_signature = edit(
        &signed,
        "</ds:KeyInfo>",
        &format!("</ds:KeyInfo><ds:Object>{deep}</ds:Object>"),
    );
    let err = refused_xml(fed, &in_signature);
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
    // Unclosed: the bound is hit before the end of input is.
    let err = refused_xml(fed, &xml_doc("", &"<a>".repeat(10_000)));
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
}

#[test]
fn a_json_body_ten_thousand_deep_is_too_deep_even_when_properly_signed() {
    let fed = p256();
    let signer = fed.signer("comune:001272");
    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let payload = format!(
        "{{\"header\":{},\"body\":{deep}}}",
        serde_json::to_string(&jws.payload["header"]).unwrap()
    );
    let forged = Jws::sign_raw(&jws.protected, payload.as_bytes(), &signer);
    let err = refused(&fed.verifier(), &forged);
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
    // The JWS itself, and the codec on its own.
    let err = refused(&fed.verifier(), deep.replace('[', "{\"a\":[").as_bytes());
    assert!(matches!(err, Error::TooDeep { .. }), "{err}");
    let err = json_codec::decode(payload.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
    // And in an XML envelope's JSON body.
    let doc = xml::encode(&json_envelope());
    let (at, old) = inner(&doc, "Body");
    let mut deep_doc = doc.clone();
    deep_doc.replace_range(at..at + old.len(), &deep);
    let err = xml::decode(deep_doc.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
}

#[test]
fn a_deep_protected_header_is_too_deep() {
    let fed = p256();
    let signer = fed.signer("comune:001272");
    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let mut protected = jws.protected.clone();
    let mut deep = json!("x");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    protected["x5c"] = deep;
    let payload = serde_json::to_vec(&jws.payload).unwrap();
    let forged = Jws::sign_raw(&protected, &payload, &signer);
    let err = refused(&fed.verifier(), &forged);
    assert!(matches!(err, Error::TooDeep { limit: 64 }), "{err}");
}

#[test]
fn a_document_over_the_size_limit_is_too_large() {
    let fed = p256();
    let limits = Limits {
        max_bytes: 8 * 1024,
        max_depth: 64,
    };
    let small = Verifier::new(fed.verifier().trust().clone(), limits);
    let big = Envelope::builder(
        entity("comune:001272"),
        entity("anpr:ministero"),
        "residenza.cambio",
        "richiesta",
    )
    .json(json!({"note": "x".repeat(16 * 1024)}))
    .build()
    .unwrap();
    for format in [Format::Xml, Format::Json] {
        let signed = sign(&big, &fed.signer("comune:001272"), format).unwrap();
        let err = refused(&small, &signed);
        assert!(
            matches!(err, Error::TooLarge { size, limit: 8192 } if size == signed.len()),
            "{format:?}: {err}"
        );
        // The same bytes pass the default limits.
        fed.verifier().verify(&signed).unwrap();
    }
    let doc = xml::encode(&big);
    let err = xml::decode(doc.as_bytes(), &limits).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let err = json_codec::decode(&json_codec::encode(&big), &limits).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

// --- JWS header attacks ----------------------------------------------------------------------

fn reprotect(fed: &Fed, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let signer = fed.signer("comune:001272");
    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let mut protected = jws.protected.clone();
    edit(&mut protected);
    Jws::sign_raw(
        &protected,
        &serde_json::to_vec(&jws.payload).unwrap(),
        &signer,
    )
}

#[test]
fn jws_alg_none_is_not_allowed() {
    let fed = p256();
    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let mut protected = jws.protected.clone();
    protected["alg"] = "none".into();
    let mut raw = jws.raw.clone();
    raw["protected"] = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&protected).unwrap())
        .into();
    raw["signature"] = "".into();
    let err = refused(&fed.verifier(), &serde_json::to_vec(&raw).unwrap());
    assert!(
        matches!(&err, Error::AlgorithmNotAllowed(a) if a == "none"),
        "{err}"
    );
}

#[test]
fn jws_hs256_keyed_with_the_signers_public_key_is_not_allowed() {
    for fed in both() {
        let jws = Jws::parse(&signed_json(fed, &json_envelope()));
        let cert =
            openssl::x509::X509::from_pem(&std::fs::read(fed.path("comune-001272.crt")).unwrap())
                .unwrap();
        let public_pem = cert.public_key().unwrap().public_key_to_pem().unwrap();
        let mut protected = jws.protected.clone();
        protected["alg"] = "HS256".into();
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap());
        let pl = jws.raw["payload"].as_str().unwrap();
        let key = openssl::pkey::PKey::hmac(&public_pem).unwrap();
        let mut mac =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        let tag = mac
            .sign_oneshot_to_vec(format!("{p}.{pl}").as_bytes())
            .unwrap();
        let forged =
            json!({"protected": p, "payload": pl, "signature": URL_SAFE_NO_PAD.encode(tag)});
        let err = refused(&fed.verifier(), &serde_json::to_vec(&forged).unwrap());
        assert!(
            matches!(&err, Error::AlgorithmNotAllowed(a) if a == "HS256"),
            "{err}"
        );
    }
}

#[test]
fn jws_algorithms_off_the_list_or_not_matching_the_key_are_not_allowed() {
    let fed = p256();
    for alg in ["PS256", "RS512", "ES384", "EdDSA", "rs256", ""] {
        let err = refused(&fed.verifier(), &reprotect(fed, |p| p["alg"] = alg.into()));
        assert!(
            matches!(&err, Error::AlgorithmNotAllowed(a) if a == alg),
            "{alg}: {err}"
        );
    }
    // RS256 claimed, P-256 key: the key decides, not the header.
    let err = refused(
        &fed.verifier(),
        &reprotect(fed, |p| p["alg"] = "RS256".into()),
    );
    assert!(
        matches!(&err, Error::AlgorithmNotAllowed(a) if a.contains("ES256")),
        "{err}"
    );
}

#[test]
fn jws_x5c_from_another_ca_is_untrusted() {
    let fed = p256();
    let rogue = Fed::new(KeyType::P256);
    for format in [Format::Json, Format::Xml] {
        let signed = sign(&json_envelope(), &rogue.signer("comune:001272"), format).unwrap();
        let err = refused(&fed.verifier(), &signed);
        assert!(
            matches!(err, Error::CertificateUntrusted(_)),
            "{format:?}: {err}"
        );
    }
    // The rogue CA's certificate sent along as an intermediate changes nothing.
    let rogue_ca = STANDARD.encode(
        openssl::x509::X509::from_pem(&std::fs::read(rogue.path("ca.crt")).unwrap())
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let signer = rogue.signer("comune:001272");
    let jws = Jws::parse(&sign(&json_envelope(), &signer, Format::Json).unwrap());
    let mut protected = jws.protected.clone();
    protected["x5c"]
        .as_array_mut()
        .unwrap()
        .push(rogue_ca.into());
    let forged = Jws::sign_raw(
        &protected,
        &serde_json::to_vec(&jws.payload).unwrap(),
        &signer,
    );
    let err = refused(&fed.verifier(), &forged);
    assert!(matches!(err, Error::CertificateUntrusted(_)), "{err}");
}

#[test]
fn jws_kid_without_x5c_is_certificate_missing() {
    let fed = p256();
    let forged = reprotect(fed, |p| {
        p.as_object_mut().unwrap().remove("x5c");
        p["kid"] = "comune:001272".into();
    });
    let err = refused(&fed.verifier(), &forged);
    assert!(
        matches!(&err, Error::CertificateMissing(m) if m.contains("kid")),
        "{err}"
    );
    let forged = reprotect(fed, |p| p["x5c"] = json!([]));
    let err = refused(&fed.verifier(), &forged);
    assert!(matches!(err, Error::CertificateMissing(_)), "{err}");
}

#[test]
fn jws_unprotected_header_jwk_or_general_serialization_is_malformed() {
    let fed = p256();
    let signed = signed_json(fed, &json_envelope());
    let mut with_header: Value = serde_json::from_slice(&signed).unwrap();
    with_header["header"] = json!({"alg": "none"});
    let err = refused(&fed.verifier(), &serde_json::to_vec(&with_header).unwrap());
    assert!(
        matches!(&err, Error::Malformed { format: "JSON", detail } if detail.contains("header")),
        "{err}"
    );

    let jwk = reprotect(fed, |p| {
        p["jwk"] = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
    });
    let err = refused(&fed.verifier(), &jwk);
    assert!(
        matches!(&err, Error::Malformed { format: "JSON", detail } if detail.contains("jwk")),
        "{err}"
    );
    for key in ["jku", "x5u", "b64"] {
        let err = refused(&fed.verifier(), &reprotect(fed, |p| p[key] = "x".into()));
        assert!(matches!(err, Error::Malformed { .. }), "{key}: {err}");
    }

    let flat: Value = serde_json::from_slice(&signed).unwrap();
    let general = json!({
        "payload": flat["payload"],
        "signatures": [{"protected": flat["protected"], "signature": flat["signature"]}],
    });
    let err = refused(&fed.verifier(), &serde_json::to_vec(&general).unwrap());
    assert!(
        matches!(err, Error::Malformed { format: "JSON", .. }),
        "{err}"
    );

    let crit = reprotect(fed, |p| p["crit"] = json!(["exp"]));
    let err = refused(&fed.verifier(), &crit);
    assert!(matches!(err, Error::SignatureScope(_)), "{err}");

    // Duplicate members: no "last one wins" in the protected header.
    let dup = String::from_utf8(signed.clone()).unwrap().replacen(
        "{\"protected\"",
        "{\"protected\":\"e30\",\"protected\"",
        1,
    );
    let err = refused(&fed.verifier(), dup.as_bytes());
    assert!(
        matches!(err, Error::Malformed { format: "JSON", .. }),
        "{err}"
    );
}

// --- Certificates: validity and revocation ---------------------------------------------------

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let fed = Fed::new(KeyType::P256);
    let ca = CertificateAuthority::load(fed.dir.path()).unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for (code, validity) in [
        (
            "000001",
            Validity {
                not_before: now - 10 * 86_400,
                not_after: now - 86_400,
            },
        ),
        (
            "000002",
            Validity {
                not_before: now + 86_400,
                not_after: now + 10 * 86_400,
            },
        ),
    ] {
        let who = entity(&format!("comune:{code}"));
        let issued = pki::issue(
            fed.dir.path(),
            &ca,
            &Subject::Entity(who.clone()),
            KeyType::P256,
            validity,
        )
        .unwrap();
        let signer = Signer::load(&issued.key_path, &issued.cert_path).unwrap();
        let env = Envelope::builder(
            who,
            entity("anpr:ministero"),
            "residenza.cambio",
            "richiesta",
        )
        .build()
        .unwrap();
        for format in [Format::Xml, Format::Json] {
            let err = refused(&fed.verifier(), &sign(&env, &signer, format).unwrap());
            assert!(
                matches!(err, Error::CertificateExpired { .. }),
                "{code} {format:?}: {err}"
            );
            assert_eq!(err.code(), "certificate-expired");
        }
    }
    // A valid certificate, judged three years from now.
    let signed = signed_json(&fed, &json_envelope());
    let later = OffsetDateTime::now_utc() + Duration::days(3 * 365);
    let err = fed.verifier().verify_at(&signed, later).unwrap_err();
    assert!(
        matches!(&err, Error::CertificateExpired { at, .. } if at.starts_with(&later.year().to_string())),
        "{err}"
    );
    fed.verifier().verify(&signed).unwrap();
}

#[test]
fn a_revoked_certificate_is_refused() {
    let fed = Fed::new(KeyType::P256);
    let xml = signed_xml(&fed, &xml_envelope());
    let json = signed_json(&fed, &json_envelope());
    fed.verifier().verify(xml.as_bytes()).unwrap();
    pki::revoke(fed.dir.path(), &fed.path("comune-001272.crt")).unwrap();
    let v = fed.verifier();
    let serial =
        openssl::x509::X509::from_pem(&std::fs::read(fed.path("comune-001272.crt")).unwrap())
            .unwrap()
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string();
    for signed in [xml.as_bytes(), &json] {
        let err = refused(&v, signed);
        assert!(
            matches!(&err, Error::CertificateRevoked { serial: s } if *s == serial),
            "{err}"
        );
    }
    // Others are still fine.
    let other = sign(
        &anpr_envelope(),
        &fed.signer("anpr:ministero"),
        Format::Json,
    )
    .unwrap();
    v.verify(&other).unwrap();
}

#[test]
fn the_hub_certificate_cannot_sign_as_an_entity() {
    let fed = p256();
    let hub = Signer::load(&fed.path("hub.key"), &fed.path("hub.crt")).unwrap();
    for format in [Format::Xml, Format::Json] {
        let err = refused(
            &fed.verifier(),
            &sign(&json_envelope(), &hub, format).unwrap(),
        );
        assert!(
            matches!(err, Error::CertificateNoIdentity(_)),
            "{format:?}: {err}"
        );
    }
}

// --- Identity ----------------------------------------------------------------------------------

#[test]
fn a_valid_signature_by_another_entity_than_the_sender_is_sender_mismatch() {
    let fed = p256();
    let signer = fed.signer("pagopa:nodo");
    for format in [Format::Xml, Format::Json] {
        for env in [json_envelope(), xml_envelope()] {
            let err = refused(&fed.verifier(), &sign(&env, &signer, format).unwrap());
            match &err {
                Error::SenderMismatch { sender, signer } => {
                    assert_eq!(sender.as_str(), "comune:001272");
                    assert_eq!(signer.as_str(), "pagopa:nodo");
                }
                other => panic!("{format:?}: {other}"),
            }
            assert_eq!(
                err.to_string(),
                "envelope claims sender `comune:001272` but is signed by `pagopa:nodo`"
            );
        }
    }
}

// --- Syntax ------------------------------------------------------------------------------------

#[test]
fn input_that_is_neither_xml_nor_json_is_malformed() {
    let v = p256().verifier();
    for input in [
        &b""[..],
        b"   \n",
        b"hello",
        b"[1,2,3]",
        b"\x00\x01\x02",
        b"\xff\xfe<\x00E\x00",
        b"%PDF-1.7",
    ] {
        let err = refused(&v, input);
        assert!(
            matches!(
                err,
                Error::Malformed {
                    format: "envelope",
                    ..
                }
            ),
            "{input:?}: {err}"
        );
    }
}

#[test]
fn every_truncation_of_a_signed_envelope_is_malformed() {
    let fed = p256();
    let v = fed.verifier();
    let xml = signed_xml(fed, &xml_envelope()).into_bytes();
    let json = signed_json(fed, &json_envelope());
    for signed in [xml, json] {
        for len in 0..signed.len() {
            let err = refused(&v, &signed[..len]);
            assert!(
                matches!(err, Error::Malformed { .. }),
                "cut at {len}: {err}\n{}",
                String::from_utf8_lossy(&signed[..len])
            );
        }
    }
}

#[test]
fn an_encoding_other_than_utf8_is_malformed() {
    let fed = p256();
    let signed = signed_xml(fed, &xml_envelope());
    for decl in [
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>",
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
        "<?xml version=\"1.0\" encoding=\"UTF-7\"?>",
    ] {
        let doc = edit(&signed, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>", decl);
        let err = refused_xml(fed, &doc);
        assert!(
            matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("not UTF-8")),
            "{decl}: {err}"
        );
    }
    // Latin-1 bytes where UTF-8 is promised.
    let mut latin1 = xml_doc("", "<r:x xmlns:r=\"urn:r\">citt\u{e0}</r:x>").into_bytes();
    let at = latin1
        .windows(2)
        .position(|w| w == "\u{e0}".as_bytes())
        .unwrap();
    latin1.splice(at..at + 2, [0xe0]);
    let err = refused(&fed.verifier(), &latin1);
    assert!(
        matches!(&err, Error::Malformed { detail, .. } if detail.contains("not UTF-8")),
        "{err}"
    );
    // A byte order mark, and XML 1.1 (whose characters and canonical form differ).
    let bom = format!("\u{feff}{signed}");
    let err = refused_xml(fed, &bom);
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    let v11 = edit(&signed, "version=\"1.0\"", "version=\"1.1\"");
    let err = refused_xml(fed, &v11);
    assert!(
        matches!(&err, Error::Malformed { detail, .. } if detail.contains("1.1")),
        "{err}"
    );
}

#[test]
fn comments_and_processing_instructions_are_forbidden_everywhere() {
    let fed = p256();
    for env in [xml_envelope(), json_envelope()] {
        let signed = signed_xml(fed, &env);
        // Comments are outside exclusive c14n: each of these would still verify if accepted.
        let places = [
            ("before the root", "<Envelope", "<!-- x --><Envelope"),
            ("after the root", "</Envelope>", "</Envelope><!-- x -->"),
            ("in Envelope", "<Header>", "<!-- x --><Header>"),
            ("in Header", "<id>", "<!-- x --><id>"),
            ("in a header field", "richiesta<", "rich<!-- x -->iesta<"),
            ("in Body", "</Body>", "<!-- x --></Body>"),
            (
                "in the signature",
                "<ds:SignedInfo>",
                "<ds:SignedInfo><!-- x -->",
            ),
        ];
        for (place, from, to) in places {
            let err = refused_xml(fed, &edit(&signed, from, to));
            assert!(
                matches!(err, Error::XmlForbidden("comment")),
                "comment {place}: {err}"
            );
            let pi = to.replace("<!-- x -->", "<?php evil() ?>");
            let err = refused_xml(fed, &edit(&signed, from, &pi));
            assert!(
                matches!(err, Error::XmlForbidden("processing instruction")),
                "PI {place}: {err}"
            );
        }
    }
    // Inside an XML body, among the sender's own elements.
    let signed = signed_xml(fed, &xml_envelope());
    let err = refused_xml(fed, &edit(&signed, "<r:cf>", "<r:cf><!--x-->"));
    assert!(matches!(err, Error::XmlForbidden("comment")), "{err}");
    let err = refused_xml(fed, &edit(&signed, "<r:cf>", "<?pi x?><r:cf>"));
    assert!(
        matches!(err, Error::XmlForbidden("processing instruction")),
        "{err}"
    );
}

#[test]
fn characters_xml_forbids_are_refused_before_any_crypto() {
    let fed = p256();
    let signed = signed_xml(fed, &xml_envelope());
    // libxml2 refuses these where quick-xml would not: the two parsers must agree.
    for (bad, shown) in [
        ("\u{1}", "U+0001"),
        ("&#1;", "U+0001"),
        ("\u{ffff}", "U+FFFF"),
        ("&#xFFFE;", "U+FFFE"),
        ("<r:x a=\"&#x1B;\"/>", "U+001B"),
    ] {
        let doc = edit(&signed, "RSSMRA80A01L219X", &format!("RSSMRA{bad}"));
        let err = refused_xml(fed, &doc);
        assert!(
            matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains(shown)),
            "{bad:?}: {err}"
        );
    }
    // Not characters at all.
    for bad in ["&#x0;", "&#xD800;", "&#x110000;"] {
        let doc = edit(&signed, "RSSMRA80A01L219X", bad);
        let err = refused_xml(fed, &doc);
        assert!(
            matches!(err, Error::Malformed { format: "XML", .. }),
            "{bad}: {err}"
        );
    }
    // `]]>` is not allowed in text content.
    let doc = edit(&signed, "RSSMRA80A01L219X", "RSS]]>");
    let err = refused_xml(fed, &doc);
    assert!(
        matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("]]>")),
        "{err}"
    );
    // Only XML white space may separate the envelope's elements; U+00A0 is text.
    let doc = edit(&signed, "</Header><Body>", "</Header>\u{a0}<Body>");
    let err = refused_xml(fed, &doc);
    assert!(
        matches!(&err, Error::Malformed { format: "XML", detail } if detail.contains("unexpected text")),
        "{err}"
    );
}

// --- Header fields: the same precise refusal in both encodings ---------------------------------

#[test]
fn a_bad_header_field_is_named_in_both_encodings() {
    let env = json_envelope();
    let xml_doc = xml::encode(&env);
    let json_doc = String::from_utf8(json_codec::encode(&env)).unwrap();
    let decode_both = |xml_from: &str, xml_to: &str, json_from: &str, json_to: &str| {
        let x = xml::decode(
            edit(&xml_doc, xml_from, xml_to).as_bytes(),
            &Limits::default(),
        )
        .map(|_| ())
        .unwrap_err();
        let j = json_codec::decode(
            edit(&json_doc, json_from, json_to).as_bytes(),
            &Limits::default(),
        )
        .map(|_| ())
        .unwrap_err();
        [x, j]
    };
    for err in decode_both(
        "<sender>comune:001272</sender>",
        "<sender>Comune:1</sender>",
        "\"sender\":\"comune:001272\"",
        "\"sender\":\"Comune:1\"",
    ) {
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "sender",
                    ..
                }
            ),
            "{err}"
        );
    }
    for err in decode_both(
        "<action>richiesta</action>",
        "",
        "\"action\":\"richiesta\",",
        "",
    ) {
        assert!(matches!(err, Error::MissingField("action")), "{err}");
    }
    for err in decode_both(
        "<profile>oneway</profile>",
        "<profile>sometimes</profile>",
        "\"profile\":\"oneway\"",
        "\"profile\":\"sometimes\"",
    ) {
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "profile",
                    ..
                }
            ),
            "{err}"
        );
    }
    for err in decode_both(
        "<content_type>",
        "<sequence>-1</sequence><content_type>",
        "\"content_type\"",
        "\"sequence\":-1,\"content_type\"",
    ) {
        assert!(
            matches!(
                err,
                Error::InvalidField {
                    field: "sequence",
                    ..
                }
            ),
            "{err}"
        );
    }
    for err in decode_both(
        "<content_type>",
        "<colour>red</colour><content_type>",
        "\"content_type\"",
        "\"colour\":\"red\",\"content_type\"",
    ) {
        assert!(
            matches!(&err, Error::Malformed { detail, .. } if detail.contains("colour")),
            "{err}"
        );
    }
}

/// Parsers disagree on which of two equal keys wins; a signed payload must not hold any.
#[test]
fn duplicate_keys_in_a_signed_json_payload_are_malformed() {
    let fed = p256();
    let signer = fed.signer("comune:001272");
    let jws = Jws::parse(&signed_json(fed, &json_envelope()));
    let header = serde_json::to_string(&jws.payload["header"]).unwrap();
    for payload in [
        format!("{{\"header\":{header},\"body\":{{\"importo\":1,\"importo\":1000}}}}"),
        format!(
            "{{\"header\":{},\"body\":{{}}}}",
            header.replacen(
                "\"action\":\"richiesta\"",
                "\"action\":\"richiesta\",\"action\":\"annullamento\"",
                1
            )
        ),
        format!("{{\"header\":{header},\"body\":null,\"body\":{{}}}}"),
    ] {
        let forged = Jws::sign_raw(&jws.protected, payload.as_bytes(), &signer);
        let err = refused(&fed.verifier(), &forged);
        assert!(
            matches!(&err, Error::Malformed { format: "JSON", detail } if detail.contains("duplicate")),
            "{payload}: {err}"
        );
    }
    // The same in the JSON body of an XML envelope.
    let doc = xml::encode(&json_envelope());
    let (at, old) = inner(&doc, "Body");
    let mut twice = doc.clone();
    twice.replace_range(at..at + old.len(), r#"{"importo":1,"importo":1000}"#);
    let err = xml::decode(twice.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBody(m) if m.contains("duplicate key `importo`")),
        "{err}"
    );
}
