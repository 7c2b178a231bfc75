//! E-mail to officials: a [`Mailer`] that sends through SMTP (lettre, rustls) when a server is
//! configured, and otherwise writes each message as an `.eml` file into a directory —
//! atomically, so a reader never sees half a message.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where mail goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// The sender address, `Ufficio anagrafe <anagrafe@comune.example.it>` or a bare address.
    pub from: String,
    /// An SMTP server; without one, mail is written to `directory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
    /// Where `.eml` files are written when no SMTP server is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
}

/// An SMTP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Its host name (checked against its certificate when TLS is used).
    pub host: String,
    /// Its port; default 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The user to authenticate as, if the server requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (never the password itself in the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// How an SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS, required (the default).
    #[default]
    Starttls,
    /// TLS from the first byte.
    Tls,
    /// Plain text: only for a relay on the same machine.
    None,
}

/// One message to an official.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// The recipients' addresses.
    pub to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The configuration cannot work.
    #[error("mail configuration: {0}")]
    Config(String),
    /// An address is not an e-mail address.
    #[error("`{address}` is not an e-mail address: {detail}")]
    Address {
        /// The address.
        address: String,
        /// Why.
        detail: String,
    },
    /// The message cannot be built.
    #[error("the message cannot be built: {0}")]
    Build(String),
    /// The SMTP server refused or could not be reached.
    #[error("SMTP: {detail}")]
    Smtp {
        /// What happened.
        detail: String,
        /// Whether trying later may succeed.
        retryable: bool,
    },
    /// The `.eml` file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl MailError {
    /// Whether sending the same mail later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            MailError::Smtp { retryable, .. } => *retryable,
            MailError::Io { .. } => true,
            _ => false,
        }
    }
}

/// Where a mail went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The SMTP server accepted it.
    Smtp,
    /// It was written to this file.
    File(PathBuf),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(PathBuf),
}

/// Sends mail as its configuration says.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = match &self.transport {
            Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Directory(d) => d.display().to_string(),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &to)
            .finish()
    }
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_owned(),
            detail: e.to_string(),
        })
}

impl Mailer {
    /// A mailer for `config`; relative paths were resolved by the caller.
    ///
    /// # Errors
    /// [`MailError::Config`] when neither or both of `smtp` and `directory` are given, the
    /// password file is unreadable, or the directory cannot be created;
    /// [`MailError::Address`] for a bad `from`.
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let from = mailbox(&config.from)?;
        let transport = match (&config.smtp, &config.directory) {
            (Some(smtp), None) => Transport::Smtp(smtp_transport(smtp)?),
            (None, Some(dir)) => {
                fs::create_dir_all(dir).map_err(|source| MailError::Io {
                    path: dir.clone(),
                    source,
                })?;
                Transport::Directory(dir.clone())
            }
            (Some(_), Some(_)) => {
                return Err(MailError::Config(
                    "give either `smtp` or `directory`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(MailError::Config(
                    "give `smtp` (a server) or `directory` (where .eml files go)".into(),
                ));
            }
        };
        Ok(Mailer { from, transport })
    }

    /// Sends `mail`.
    ///
    /// # Errors
    /// [`MailError`]: a bad address, the server's refusal, a file that cannot be written.
    pub async fn send(&self, mail: &Mail) -> Result<Sent, MailError> {
        if mail.to.is_empty() {
            return Err(MailError::Build("no recipient".into()));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &mail.to {
            builder = builder.to(mailbox(to)?);
        }
        let message = builder
            .body(mail.body.clone())
            .map_err(|e| MailError::Build(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await.map_err(|e| MailError::Smtp {
                    retryable: !e.is_permanent(),
                    detail: e.to_string(),
                })?;
                tracing::info!(to = ?mail.to, subject = %mail.subject, "Mail sent.");
                Ok(Sent::Smtp)
            }
            Transport::Directory(dir) => {
                let bytes = message.formatted();
                let dir = dir.clone();
                let path = tokio::task::spawn_blocking(move || write_eml(&dir, &bytes))
                    .await
                    .map_err(|e| MailError::Build(e.to_string()))??;
                tracing::info!(to = ?mail.to, subject = %mail.subject, file = %path.display(), "Mail written.");
                Ok(Sent::File(path))
            }
        }
    }
}

fn smtp_transport(c: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let smtp_err =
        |e: lettre::transport::smtp::Error| MailError::Config(format!("SMTP {}: {e}", c.host));
    let mut builder = match c.security {
        SmtpSecurity::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(smtp_err)?
        }
        SmtpSecurity::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(smtp_err)?
        }
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
    };
    let port = c.port.unwrap_or(match c.security {
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::Tls => 465,
        SmtpSecurity::None => 25,
    });
    builder = builder.port(port);
    match (&c.username, &c.password_file) {
        (Some(user), Some(file)) => {
            let password = fs::read_to_string(file)
                .map_err(|e| MailError::Config(format!("password_file {}: {e}", file.display())))?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.trim_end_matches(['\r', '\n']).to_owned(),
            ));
        }
        (None, None) => {}
        _ => {
            return Err(MailError::Config(
                "`username` and `password_file` go together".into(),
            ));
        }
    }
    Ok(builder.build())
}

/// Writes `bytes` as a new `.eml` file in `dir`: a temporary file, synced, then renamed, so
/// that the name appears only with the whole message behind it.
fn write_eml(dir: &Path, bytes: &[u8]) -> Result<PathBuf, MailError> {
    let name = format!("{}.eml", uuid::Uuid::now_v7());
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MailError::Io { path, source }
    };
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> Mail {
        Mail {
            to: vec!["ufficiale@comune.example.it".into()],
            subject: "Nuova pratica di residenza".into(),
            body: "È arrivata la pratica P-17.".into(),
        }
    }

    #[tokio::test]
    async fn without_smtp_mail_is_an_eml_file_and_nothing_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mailer::new(&MailConfig {
            from: "Anagrafe <anagrafe@comune.example.it>".into(),
            smtp: None,
            directory: Some(dir.path().join("mail")),
        })
        .unwrap();
        let Sent::File(path) = m.send(&mail()).await.unwrap() else {
            panic!("no SMTP was configured");
        };
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("To: ufficiale@comune.example.it"), "{text}");
        assert!(
            text.contains("Subject: Nuova pratica di residenza"),
            "{text}"
        );
        assert!(
            text.contains("From: Anagrafe <anagrafe@comune.example.it>"),
            "{text}"
        );
        let names: Vec<_> = fs::read_dir(dir.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with(".eml") && !names[0].starts_with('.'));
    }

    #[tokio::test]
    async fn bad_addresses_and_configurations_are_named() {
        let e = Mailer::new(&MailConfig {
            from: "not an address".into(),
            smtp: None,
            directory: Some(PathBuf::from("/tmp")),
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`not an address` is not an e-mail address"),
            "{e}"
        );
        let e = Mailer::new(&MailConfig {
            from: "a@b.it".into(),
            smtp: None,
            directory: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("give `smtp`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let m = Mailer::new(&MailConfig {
            from: "a@b.it".into(),
            smtp: None,
            directory: Some(dir.path().to_owned()),
        })
        .unwrap();
        let mut bad = mail();
        bad.to = vec!["nobody".into()];
        let e = m.send(&bad).await.unwrap_err();
        assert!(matches!(e, MailError::Address { .. }), "{e}");
        assert!(!e.is_retryable());
    }
}
