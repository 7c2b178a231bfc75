//! The `snodo` command line as a user runs it: PKI files, signing, verifying, refusals.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn snodo(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn init(dir: &Path) {
    let o = snodo(
        &[
            "pki",
            "init",
            "--dir",
            "pki",
            "--entities",
            "comune:001272,anpr:ministero",
            "--key-type",
            "p256",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

fn sign_as(dir: &Path, who: &str, to: &str, body: &str, format: &str, extra: &[&str]) -> Output {
    let key = format!("pki/{}.key", who.replace(':', "-"));
    let cert = format!("pki/{}.crt", who.replace(':', "-"));
    let mut args = vec![
        "envelope",
        "sign",
        "--key",
        &key,
        "--cert",
        &cert,
        "--from",
        who,
        "--to",
        to,
        "--service",
        "residenza.cambio",
        "--action",
        "richiesta",
        "--body",
        body,
        "--format",
        format,
    ];
    args.extend_from_slice(extra);
    snodo(&args, dir)
}

fn sign(dir: &Path, format: &str, extra: &[&str]) -> Output {
    sign_as(
        dir,
        "comune:001272",
        "anpr:ministero",
        "body.json",
        format,
        extra,
    )
}

#[test]
fn init_sign_verify_in_both_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    for f in [
        "ca.key",
        "hub.key",
        "comune-001272.key",
        "anpr-ministero.key",
    ] {
        let mode = std::fs::metadata(dir.join("pki").join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    std::fs::write(
        dir.join("body.json"),
        r#"{"codice_fiscale":"RSSMRA80A01L219X"}"#,
    )
    .unwrap();
    for format in ["xml", "json"] {
        let o = sign(
            dir,
            format,
            &[
                "--conversation",
                "pratica-42",
                "--profile",
                "request",
                "--expires-in",
                "2h",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let file = format!("signed.{format}");
        std::fs::write(dir.join(&file), &o.stdout).unwrap();
        let o = snodo(&["envelope", "verify", "--ca", "pki/ca.crt", &file], dir);
        assert!(o.status.success(), "{}", stderr(&o));
        let header: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(header["sender"], "comune:001272");
        assert_eq!(header["recipient"], "anpr:ministero");
        assert_eq!(header["conversation"], "pratica-42");
        assert_eq!(header["profile"], "request");
        assert!(header["expires_at"].is_string());
    }
}

#[test]
fn verify_names_the_reason_on_one_line_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    std::fs::write(dir.join("body.json"), r#"{"n":1}"#).unwrap();
    let o = sign(dir, "json", &[]);
    let signed = String::from_utf8(o.stdout).unwrap();
    std::fs::write(dir.join("signed.json"), &signed).unwrap();
    let o = snodo(
        &["envelope", "verify", "--ca", "pki/ca.crt", "signed.json"],
        dir,
    );
    assert!(
        o.status.success(),
        "before revocation it verifies: {}",
        stderr(&o)
    );

    // Revoke the signer: the same file is now refused, for that reason.
    let o = snodo(
        &["pki", "revoke", "--dir", "pki", "--entity", "comune:001272"],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = snodo(
        &[
            "envelope",
            "verify",
            "--ca",
            "pki/ca.crt",
            "--crl",
            "pki/ca.crl",
            "signed.json",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("certificate-revoked") && err.contains("is revoked"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    // Tampered signature: one line naming the signature.
    let mut jws: serde_json::Value = serde_json::from_str(&signed).unwrap();
    jws["signature"] = "AAAA".into();
    std::fs::write(dir.join("bad.json"), jws.to_string()).unwrap();
    let o = snodo(
        &["envelope", "verify", "--ca", "pki/ca.crt", "bad.json"],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("signature-invalid"), "{}", stderr(&o));
}

#[test]
fn sign_refuses_a_from_that_is_not_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    std::fs::write(dir.join("body.json"), "{}").unwrap();
    let o = snodo(
        &[
            "envelope",
            "sign",
            "--key",
            "pki/comune-001272.key",
            "--cert",
            "pki/comune-001272.crt",
            "--from",
            "anpr:ministero",
            "--to",
            "comune:001272",
            "--service",
            "a.b",
            "--action",
            "c",
            "--body",
            "body.json",
            "--format",
            "xml",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the certificate names comune:001272, not --from anpr:ministero"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn issue_adds_an_entity_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    let o = snodo(
        &[
            "pki",
            "issue",
            "--dir",
            "pki",
            "--entity",
            "pagopa:nodo",
            "--key-type",
            "p256",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = std::fs::metadata(dir.join("pki/pagopa-nodo.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(
        dir.join("body.xml"),
        r#"<p:Avviso xmlns:p="urn:snodo:pagopa:1"/>"#,
    )
    .unwrap();
    let o = sign_as(dir, "pagopa:nodo", "comune:001272", "body.xml", "xml", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(dir.join("e.xml"), &o.stdout).unwrap();
    let o = snodo(&["envelope", "verify", "--ca", "pki/ca.crt", "e.xml"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"content_type\": \"application/xml\""));
}

#[test]
fn bad_arguments_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = snodo(
        &["pki", "init", "--dir", "x", "--entities", "Comune:1"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("entity class `Comune` must be 1 to 32 lowercase letters"),
        "{}",
        stderr(&o)
    );
    let o = snodo(
        &["pki", "issue", "--dir", "nowhere", "--entity", "comune:1"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nowhere/ca.crt"), "{}", stderr(&o));
}

#[test]
fn issue_an_auditor_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir);
    let o = snodo(
        &[
            "pki",
            "issue",
            "--dir",
            "pki",
            "--auditor",
            "corte-dei-conti",
            "--key-type",
            "p256",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cert = std::fs::read(dir.join("pki/auditor-corte-dei-conti.crt")).unwrap();
    let cert = openssl::x509::X509::from_pem(&cert).unwrap();
    assert_eq!(
        snodo_envelopes::trust::identity_of(&cert).unwrap(),
        snodo_envelopes::Identity::Auditor("corte-dei-conti".into())
    );
    let mode = std::fs::metadata(dir.join("pki/auditor-corte-dei-conti.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let o = snodo(
        &["pki", "issue", "--dir", "pki", "--auditor", "bad name"],
        dir,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("auditor name `bad name`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path());
    std::fs::write(tmp.path().join("body.json"), r#"{"x":1}"#).unwrap();
    let signed = sign(tmp.path(), "json", &[]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    std::fs::write(tmp.path().join("env.json"), &signed.stdout).unwrap();
    for args in [
        &["config", "schema"][..],
        &["envelope", "verify", "--ca", "pki/ca.crt", "env.json"][..],
    ] {
        // `snodo … | head` where head has already exited: the pipe has no reader.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_snodo"))
            .args(args)
            .current_dir(tmp.path())
            .stdout(writer)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}
