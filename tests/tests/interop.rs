//! Interoperability with tools no one here wrote: the `xmlsec1` command line (libxmlsec1's own
//! tool) for XML envelopes and Python's jwcrypto (RFC 7515) for JSON envelopes.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use snodo_envelopes::pki::KeyType;
use snodo_envelopes::{EntityId, Envelope, Error, Format, sign};
use snodo_tests::{Federation, workspace_root};

const TURIN: &str = "comune:001272";
const ANPR: &str = "anpr:ministero";

fn envelope(xml_body: bool) -> Envelope {
    let b = Envelope::builder(
        TURIN.parse().unwrap(),
        ANPR.parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    );
    if xml_body {
        b.xml(r#"<r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf><r:via>Via Garibaldi, 3 – “interno” 2</r:via></r:Richiesta>"#)
    } else {
        b.json(json!({"codice_fiscale": "RSSMRA80A01L219X", "via": "Via Garibaldi, 3 – “interno” 2"}))
    }
    .build()
    .unwrap()
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/test installs it)"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn xmlsec1_verify(fed: &Federation, file: &Path) -> (bool, String) {
    let (ok, out, err) = run(Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(fed.path("ca.crt"))
        .arg(file));
    (ok, out + &err)
}

#[test]
fn xml_signed_by_snodo_verifies_with_xmlsec1() {
    for kind in [KeyType::Rsa2048, KeyType::P256] {
        let fed = Federation::new(&[TURIN, ANPR], kind);
        for xml_body in [true, false] {
            let signed = sign(&envelope(xml_body), &fed.signer(TURIN), Format::Xml).unwrap();
            let file = fed.path("signed.xml");
            std::fs::write(&file, &signed).unwrap();
            let (ok, log) = xmlsec1_verify(&fed, &file);
            assert!(ok, "xmlsec1 refused a {kind:?} envelope:\n{log}");
            assert!(log.contains("OK"), "{log}");

            // And xmlsec1 notices tampering, so the check above means something.
            let tampered = String::from_utf8(signed)
                .unwrap()
                .replace("richiesta", "revoca");
            std::fs::write(&file, tampered).unwrap();
            let (ok, log) = xmlsec1_verify(&fed, &file);
            assert!(!ok, "xmlsec1 accepted a tampered envelope:\n{log}");
        }
    }
}

/// An unsigned envelope with a signature template, laid out with indentation the way a person
/// or another system would write it.
fn template(kind: KeyType) -> String {
    let method = match kind {
        KeyType::Rsa2048 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        KeyType::P256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    };
    let env = envelope(true);
    let h = &env.header;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="urn:snodo:envelope:1">
  <Header>
    <id>{id}</id>
    <sender>{TURIN}</sender>
    <recipient>{ANPR}</recipient>
    <service>residenza.cambio</service>
    <action>richiesta</action>
    <conversation>pratica-2026-000042</conversation>
    <profile>request</profile>
    <created_at>2026-11-26T09:00:00Z</created_at>
    <content_type>application/xml</content_type>
  </Header>
  <Body><r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf></r:Richiesta></Body>
  <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <ds:SignatureMethod Algorithm="{method}"/>
      <ds:Reference URI="">
        <ds:Transforms>
          <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
          <ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        </ds:Transforms>
        <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <ds:DigestValue/>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue/>
    <ds:KeyInfo>
      <ds:X509Data/>
    </ds:KeyInfo>
  </ds:Signature>
</Envelope>
"#,
        id = h.id
    )
}

#[test]
fn xml_signed_by_xmlsec1_verifies_in_snodo() {
    for kind in [KeyType::Rsa2048, KeyType::P256] {
        let fed = Federation::new(&[TURIN, ANPR], kind);
        let tmpl = fed.path("template.xml");
        std::fs::write(&tmpl, template(kind)).unwrap();
        let out = fed.path("signed-by-xmlsec1.xml");
        let keys = format!("{},{}", fed.key(TURIN).display(), fed.cert(TURIN).display());
        let (ok, _, err) = run(Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(&keys)
            .arg("--output")
            .arg(&out)
            .arg(&tmpl));
        assert!(ok, "xmlsec1 could not sign: {err}");
        let signed = std::fs::read(&out).unwrap();
        let v = fed.verifier().verify(&signed).unwrap_or_else(|e| {
            panic!(
                "snodo refused xmlsec1's {kind:?} signature: {e}\n{}",
                String::from_utf8_lossy(&signed)
            )
        });
        assert_eq!(v.envelope.header.conversation, "pratica-2026-000042");
        assert_eq!(v.signer.entity().unwrap().as_str(), TURIN);

        // Signed by xmlsec1 with the registry's key but claiming Turin as sender: refused.
        let keys = format!("{},{}", fed.key(ANPR).display(), fed.cert(ANPR).display());
        let (ok, _, err) = run(Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(&keys)
            .arg("--output")
            .arg(&out)
            .arg(&tmpl));
        assert!(ok, "xmlsec1 could not sign: {err}");
        let err = fed
            .verifier()
            .verify(&std::fs::read(&out).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::SenderMismatch { .. }), "{err}");
    }
}

fn jose(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    run(Command::new("python3")
        .arg(workspace_root().join("tests/interop/jose_interop.py"))
        .args(args))
}

#[test]
fn json_signed_by_snodo_verifies_with_jwcrypto() {
    for kind in [KeyType::Rsa2048, KeyType::P256] {
        let fed = Federation::new(&[TURIN, ANPR], kind);
        for xml_body in [false, true] {
            let env = envelope(xml_body);
            let signed = sign(&env, &fed.signer(TURIN), Format::Json).unwrap();
            let file = fed.path("signed.json");
            std::fs::write(&file, &signed).unwrap();
            let (ok, payload, err) = jose(&[
                "verify".as_ref(),
                fed.path("ca.crt").as_os_str(),
                file.as_os_str(),
            ]);
            assert!(ok, "jwcrypto refused a {kind:?} JWS: {err}");
            let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(payload["header"]["id"], env.header.id.to_string());
            assert_eq!(payload["header"]["sender"], TURIN);

            // jwcrypto notices a forged payload, so the check above means something.
            let mut jws: serde_json::Value = serde_json::from_slice(&signed).unwrap();
            let forged =
                base64_url(&serde_json::to_vec(&json!({"header": {"sender": ANPR}})).unwrap());
            jws["payload"] = forged.into();
            std::fs::write(&file, serde_json::to_vec(&jws).unwrap()).unwrap();
            let (ok, _, _) = jose(&[
                "verify".as_ref(),
                fed.path("ca.crt").as_os_str(),
                file.as_os_str(),
            ]);
            assert!(!ok, "jwcrypto accepted a forged payload");
        }
    }
}

#[test]
fn json_signed_by_jwcrypto_verifies_in_snodo() {
    for (kind, alg) in [(KeyType::Rsa2048, "RS256"), (KeyType::P256, "ES256")] {
        let fed = Federation::new(&[TURIN, ANPR], kind);
        let env = envelope(false);
        let payload = fed.path("payload.json");
        std::fs::write(&payload, snodo_envelopes::json::encode(&env)).unwrap();
        let (ok, jws, err) = jose(&[
            "sign".as_ref(),
            fed.key(TURIN).as_os_str(),
            fed.cert(TURIN).as_os_str(),
            payload.as_os_str(),
            alg.as_ref(),
        ]);
        assert!(ok, "jwcrypto could not sign: {err}");
        let v = fed
            .verifier()
            .verify(jws.as_bytes())
            .unwrap_or_else(|e| panic!("snodo refused jwcrypto's {alg}: {e}\n{jws}"));
        assert_eq!(v.envelope, env);
    }
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
