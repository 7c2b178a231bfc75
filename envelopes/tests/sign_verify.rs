//! Signing and verifying envelopes in both encodings with both key types.

mod common;

use common::*;
use snodo_envelopes::pki::KeyType;
use snodo_envelopes::{Algorithm, Format, sign};

fn round_trip(kind: KeyType, format: Format, xml_body: bool) {
    let fed = Fed::new(kind);
    let env = if xml_body {
        xml_envelope()
    } else {
        json_envelope()
    };
    let signed = sign(&env, &fed.signer("comune:001272"), format).unwrap();
    let v = fed
        .verifier()
        .verify(&signed)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&signed)));
    assert_eq!(v.envelope, env);
    assert_eq!(v.format, format);
    assert_eq!(v.signer.entity(), Some(&entity("comune:001272")));
    let expected = if kind == KeyType::P256 {
        Algorithm::Es256
    } else {
        Algorithm::Rs256
    };
    assert_eq!(v.algorithm, expected);
}

#[test]
fn xml_rsa() {
    round_trip(KeyType::Rsa2048, Format::Xml, true);
    round_trip(KeyType::Rsa2048, Format::Xml, false);
}

#[test]
fn xml_p256() {
    round_trip(KeyType::P256, Format::Xml, true);
}

#[test]
fn json_rsa() {
    round_trip(KeyType::Rsa2048, Format::Json, false);
    round_trip(KeyType::Rsa2048, Format::Json, true);
}

#[test]
fn json_p256() {
    round_trip(KeyType::P256, Format::Json, false);
}
