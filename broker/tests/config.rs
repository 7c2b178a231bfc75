//! `snodo config` as an operator runs it: good files pass, bad ones name the field and exit 1;
//! the dev federation passes its own check.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use snodo_broker::config::Config;
use snodo_broker::dev;

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

/// A dev federation in a temporary directory: its PKI serves every file under test.
fn federation() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    dev::ensure(tmp.path()).unwrap();
    tmp
}

/// A small configuration over the dev PKI, to be broken one field at a time.
const GOOD: &str = r#"
[hub]
listen = "127.0.0.1:9443"

[tls]
ca = "pki/ca.crt"
cert = "pki/hub.crt"
key = "pki/hub.key"

[[entities]]
id = "comune:001272"

[[entities]]
id = "anpr:ministero"
endpoint = "https://anpr.example.it/snodo"

[[services]]
name = "residenza.cambio"

[[services.actions]]
name = "richiesta"
profile = "request"
senders = ["comune:*"]
recipients = ["anpr:ministero"]
"#;

/// Writes `text` as `name` in `dir` and checks it.
fn check(dir: &Path, name: &str, text: &str) -> Output {
    fs::write(dir.join(name), text).unwrap();
    snodo(&["config", "check", name], dir)
}

/// Checks a broken variant of [`GOOD`]: exit status 1 and one line naming the file and `field`.
fn refused(dir: &Path, text: &str, field: &str, why: &str) {
    let o = check(dir, "bad.toml", text);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(err.starts_with("snodo: bad.toml: "), "{err}");
    assert!(
        err.contains(&format!(": {field}: ")),
        "field {field} not named in: {err}"
    );
    assert!(err.contains(why), "`{why}` not in: {err}");
}

#[test]
fn a_good_file_passes() {
    let fed = federation();
    let o = check(fed.path(), "good.toml", GOOD);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "ok: 2 entities, 1 service, 1 action, 0 subscriptions, 0 auditors; hub `hub` on 127.0.0.1:9443, certificate for hub:hub\n"
    );
}

#[test]
fn an_unknown_field_is_named() {
    let fed = federation();
    let text = GOOD.replace("listen = ", "lisen = ");
    refused(fed.path(), &text, "hub.lisen", "unknown field `lisen`");
    let text = GOOD.replace(
        "profile = \"request\"",
        "profile = \"request\"\nrecipient = []",
    );
    refused(
        fed.path(),
        &text,
        "services[0].actions[0].recipient",
        "unknown field",
    );
}

#[test]
fn a_bad_entity_id_is_named() {
    let fed = federation();
    let text = GOOD.replace("id = \"anpr:ministero\"", "id = \"anpr\"");
    refused(
        fed.path(),
        &text,
        "entities[1].id",
        "`anpr` is not of the form class:code",
    );
}

#[test]
fn a_pattern_naming_no_entity_is_named() {
    let fed = federation();
    let text = GOOD.replace(
        "senders = [\"comune:*\"]",
        "senders = [\"comune:*\", \"comune:004078\"]",
    );
    refused(
        fed.path(),
        &text,
        "services[0].actions[0].senders[1]",
        "entity `comune:004078` is not in [[entities]]",
    );
    let text = GOOD.replace(
        "recipients = [\"anpr:ministero\"]",
        "recipients = [\"prefettura:*\"]",
    );
    refused(
        fed.path(),
        &text,
        "services[0].actions[0].recipients[0]",
        "class `prefettura`",
    );
}

#[test]
fn a_plain_http_endpoint_is_named() {
    let fed = federation();
    let text = GOOD.replace("https://anpr", "http://anpr");
    refused(
        fed.path(),
        &text,
        "entities[1].endpoint",
        "must be an https URL",
    );
}

#[test]
fn a_missing_tls_file_is_named() {
    let fed = federation();
    let text = GOOD.replace("pki/ca.crt", "pki/nowhere.crt");
    refused(fed.path(), &text, "tls.ca", "No such file");
}

#[test]
fn a_hub_certificate_for_another_hub_is_refused() {
    let fed = federation();
    let text = GOOD.replace("[hub]", "[hub]\nname = \"torino\"");
    let o = check(fed.path(), "other.toml", &text);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tls.cert"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("names hub:hub, not hub `torino`"),
        "{}",
        stderr(&o)
    );
    let text = GOOD.replace("pki/hub.crt", "pki/comune-001272.crt");
    let o = check(fed.path(), "other.toml", &text);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tls.cert"), "{}", stderr(&o));
}

#[test]
fn several_problems_are_all_named() {
    let fed = federation();
    let text = GOOD.replace("https://anpr", "http://anpr").replace(
        "senders = [\"comune:*\"]",
        "senders = [\"comune:*\", \"pagopa:nodo\"]",
    );
    let o = check(fed.path(), "bad.toml", &text);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml: 2 problems:"), "{err}");
    assert!(err.contains("\n  entities[1].endpoint: "), "{err}");
    assert!(
        err.contains("\n  services[0].actions[0].senders[1]: "),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = snodo(&["config", "check", "absent.toml"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("absent.toml: cannot read the configuration"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_schema_is_json_naming_every_section() {
    let tmp = tempfile::tempdir().unwrap();
    let o = snodo(&["config", "schema"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(schema["title"], "Config");
    for section in [
        "hub",
        "tls",
        "limits",
        "journal",
        "delivery",
        "entities",
        "services",
        "subscriptions",
        "auditors",
    ] {
        assert!(schema["properties"].get(section).is_some(), "{section}");
    }
    // Defaults are part of the schema, durations as the strings the file holds.
    assert_eq!(
        schema["$defs"]["LimitsConfig"]["properties"]["max_wait"]["default"],
        "30s"
    );
    assert_eq!(
        schema["$defs"]["HubConfig"]["properties"]["listen"]["default"],
        "127.0.0.1:8443"
    );
}

#[test]
fn the_dev_federation_passes_its_own_check_and_is_created_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let path = dev::ensure(&dir).unwrap();
    let o = snodo(&["config", "check", path.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("ok: 6 entities, 4 services, "),
        "{}",
        stdout(&o)
    );

    let before = fs::read_to_string(&path).unwrap();
    let hub_cert = fs::read(dir.join("pki/hub.crt")).unwrap();
    assert_eq!(dev::ensure(&dir).unwrap(), path);
    assert_eq!(fs::read_to_string(&path).unwrap(), before);
    assert_eq!(fs::read(dir.join("pki/hub.crt")).unwrap(), hub_cert);

    // A file the user edited is theirs: ensure leaves it alone, even when it is broken.
    fs::write(&path, "broken").unwrap();
    assert_eq!(dev::ensure(&dir).unwrap(), path);
    assert_eq!(fs::read_to_string(&path).unwrap(), "broken");
}

#[test]
fn the_dev_instructions_sign_an_envelope_the_registry_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = dev::ensure(tmp.path()).unwrap();
    let config = Config::load(&path).unwrap();
    let text = dev::instructions(&path, &config);
    // Run the printed `snodo envelope sign` line as printed, with this build's binary.
    let start = text.find("snodo envelope sign").unwrap();
    let end = start + text[start..].find("> e.json").unwrap();
    let sign = text[start..end].replace("\\\n", " ");
    let args: Vec<&str> = sign.split_whitespace().skip(1).collect();
    fs::write(
        tmp.path().join("body.json"),
        r#"{"codice_fiscale": "RSSMRA85T10A562S"}"#,
    )
    .unwrap();
    let o = snodo(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    fs::write(tmp.path().join("e.json"), &o.stdout).unwrap();
    let ca = config.tls.ca.to_str().unwrap();
    let o = snodo(&["envelope", "verify", "--ca", ca, "e.json"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let header: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(header["service"], "residenza.cambio");
    assert_eq!(header["profile"], "request");
}

#[test]
fn the_amqp_transport_needs_a_url_from_the_file_or_snodo_amqp_url() {
    let tmp = federation();
    let amqp = format!("{GOOD}\n[transport]\nkind = \"amqp\"\n");
    // Neither in the file nor in the environment: named.
    fs::write(tmp.path().join("amqp.toml"), &amqp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(["config", "check", "amqp.toml"])
        .current_dir(tmp.path())
        .env_remove("SNODO_AMQP_URL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("transport.url: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("SNODO_AMQP_URL"), "{}", stderr(&o));
    // From the environment, so that the password need not be in the file.
    let o = Command::new(env!("CARGO_BIN_EXE_snodo"))
        .args(["config", "check", "amqp.toml"])
        .current_dir(tmp.path())
        .env(
            "SNODO_AMQP_URL",
            "amqp://snodo:secret@127.0.0.1:5672/federation",
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A URL that is not one, and a prefetch of zero, are named.
    refused(
        tmp.path(),
        &format!("{amqp}url = \"http://127.0.0.1:5672\"\n"),
        "transport.url",
        "not an amqp:// or amqps:// URL",
    );
    refused(
        tmp.path(),
        &format!("{amqp}url = \"amqp://127.0.0.1\"\nprefetch = 0\n"),
        "transport.prefetch",
        "at least 1",
    );
    // A memtable too small for the store to work with.
    refused(
        tmp.path(),
        &GOOD.replace(
            "listen = \"127.0.0.1:9443\"",
            "listen = \"127.0.0.1:9443\"\nstore_memtable = 4096",
        ),
        "hub.store_memtable",
        "at least 1048576",
    );
    // Peers: https only, never this node itself.
    refused(
        tmp.path(),
        &format!("{GOOD}\n[[peers]]\nname = \"hub\"\nurl = \"https://127.0.0.1:9444\"\n"),
        "peers[0].name",
        "this node's own hub.name",
    );
    refused(
        tmp.path(),
        &format!("{GOOD}\n[[peers]]\nname = \"b\"\nurl = \"http://127.0.0.1:9444\"\n"),
        "peers[0].url",
        "https://",
    );
}
