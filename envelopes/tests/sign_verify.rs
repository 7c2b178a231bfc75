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

/// A thread keeps the last protected header it parsed: envelopes of two senders verified in
/// turn on one thread each name their own signer, and an envelope that carries the header just
/// kept but claims another sender is still refused.
#[test]
fn json_envelopes_of_two_senders_in_turn_each_name_their_own_signer() {
    let fed = Fed::new(KeyType::Rsa2048);
    let v = fed.verifier();
    let turin = fed.signer("comune:001272");
    let from_turin = sign(&json_envelope(), &turin, Format::Json).unwrap();
    let answer = snodo_envelopes::Envelope::builder(
        entity("anpr:ministero"),
        entity("comune:001272"),
        "residenza.cambio",
        "esito",
    )
    .json(serde_json::json!({"esito": "registrato"}))
    .build()
    .unwrap();
    let from_anpr = sign(&answer, &fed.signer("anpr:ministero"), Format::Json).unwrap();
    for (signed, who) in [
        (&from_turin, "comune:001272"),
        (&from_turin, "comune:001272"),
        (&from_anpr, "anpr:ministero"),
        (&from_turin, "comune:001272"),
        (&from_anpr, "anpr:ministero"),
        (&from_anpr, "anpr:ministero"),
    ] {
        let ok = v.verify(signed).unwrap();
        assert_eq!(ok.envelope.header.sender, entity(who));
        assert_eq!(ok.signer.entity(), Some(&entity(who)));
    }
    let forged = sign(&answer, &turin, Format::Json).unwrap();
    v.verify(&from_turin).unwrap();
    match v.verify(&forged) {
        Err(snodo_envelopes::Error::SenderMismatch { sender, signer }) => {
            assert_eq!(sender, entity("anpr:ministero"));
            assert_eq!(signer, entity("comune:001272"));
        }
        other => panic!("expected a sender mismatch, got {other:?}"),
    }
}
