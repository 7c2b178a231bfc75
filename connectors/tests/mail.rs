//! E-mail through a real SMTP server on 127.0.0.1 (Python's aiosmtpd, which `scripts/setup.sh`
//! installs): the message delivered has the recipient, subject and body that were sent.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snodo_connectors::mail::{Mail, MailConfig, Mailer, Sent, SmtpConfig, SmtpSecurity};

/// The SMTP server, stopped (its standard input closed, then killed) when dropped.
struct SmtpSink(Child);

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink(port: u16, dir: &Path) -> SmtpSink {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/smtp_sink.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 for the SMTP test server ({e}); run scripts/setup.sh")
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    if read.is_err() || line.trim() != "ready" {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = child.kill();
        panic!(
            "the SMTP test server (aiosmtpd) did not start: {err}\n\
             install it with scripts/setup.sh (pip install aiosmtpd)"
        );
    }
    SmtpSink(child)
}

#[tokio::test]
async fn a_mail_reaches_a_real_smtp_server_with_recipient_subject_and_body() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let _sink = start_sink(port, dir.path());
    let mailer = Mailer::new(&MailConfig {
        from: "Ufficio anagrafe <anagrafe@comune.torino.example.it>".into(),
        smtp: Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            username: None,
            password_file: None,
        }),
        directory: None,
    })
    .unwrap();
    let mail = Mail {
        to: vec!["m.rossi@comune.torino.example.it".into()],
        subject: "Nuova pratica di cambio di residenza P-17".into(),
        body: "È arrivata la pratica P-17: via Garibaldi 12, scala B, piano 3.\nDa registrare entro 2 giorni lavorativi.".into(),
    };
    assert_eq!(mailer.send(&mail).await.unwrap(), Sent::Smtp);

    let delivered = dir.path().join("0001.json");
    let started = Instant::now();
    while !delivered.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the SMTP server recorded no message"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let got: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&delivered).unwrap()).unwrap();
    assert_eq!(
        got["rcpt_tos"],
        serde_json::json!(["m.rossi@comune.torino.example.it"])
    );
    assert_eq!(got["mail_from"], "anagrafe@comune.torino.example.it");
    assert_eq!(got["to"], "m.rossi@comune.torino.example.it");
    assert_eq!(got["subject"], mail.subject);
    // Lines travel as CRLF, as SMTP requires.
    assert_eq!(
        got["body"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        mail.body
    );
    assert!(
        !dir.path().join("0002.json").exists(),
        "one message, delivered once"
    );

    // A recipient the server cannot even parse is refused before any connection.
    let bad = Mail {
        to: vec!["not-an-address".into()],
        ..mail
    };
    assert!(mailer.send(&bad).await.is_err());
}
