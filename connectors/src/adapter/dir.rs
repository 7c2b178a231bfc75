//! The `dir` adapter: the municipal system exchanges files with the connector in four folders
//! of one exchange directory.
//!
//! **Sending** — a file dropped in `outbox/` (written elsewhere, or under a name starting
//! with `.`, then renamed in) is sent; its name says what it is:
//!
//! ```text
//! RECIPIENT__SERVICE__ACTION[__OPTION...].json|xml
//! anpr-ministero__residenza.cambio__richiesta__request__pratica-17.json
//! portale-comunefacile__residenza.cambio__esito__re-0190b7c2-…-9f.xml
//! ```
//!
//! `RECIPIENT` is the entity with `-` for `:` (`comune-001272`), or `all` for an event;
//! options are `request` (the request profile), `re-UUID` (an answer to the envelope UUID
//! received from the recipient: it joins that conversation), or any other text (a tag for the
//! municipal system, ignored). The content is the body: JSON (`.json`) or an XML fragment
//! (`.xml`), which must be well-formed and parse as the message named (see [`Catalog`]). A file
//! that is not is moved to `error/` with a `NAME.reason` file beside it; so is a file the hub
//! refuses. A sent file is moved to `sent/ID__NAME` with the hub's receipt beside it
//! (`sent/ID__NAME.receipt.json`). The signed envelope is recorded before it is submitted,
//! so a crash and a restart resubmit the same envelope (same id): the hub delivers it once.
//!
//! **Receiving** — each envelope received is written to `inbox/` as the exact signed bytes
//! (verifiable with `snodo envelope verify`), named
//! `SENDER__SERVICE__ACTION__ID.json|xml`. The file is written and synced under a temporary
//! name (`.NAME.tmp`) before the envelope is recorded as processed, renamed into place after,
//! and only then is the hub told it is delivered. A crash at any point loses nothing and
//! writes nothing twice: before the record, the redelivery rewrites the temporary file;
//! after it, the rename is finished at start-up (or on the redelivery) if it had not
//! happened, and a processed envelope is never written again.
//!
//! Test hooks (see [`test_pause`]): `SNODO_TEST_PAUSE_BEFORE_INBOX_WRITE_MS` pauses after an
//! envelope is received and verified, before its file is written;
//! `SNODO_TEST_PAUSE_BEFORE_INBOX_RENAME_MS` after it is recorded, before the rename.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snodo_envelopes::{EntityId, Format, Profile, Recipient};
use uuid::Uuid;

use super::{AdapterError, conversation_of};
use crate::catalog::{Catalog, Unknown};
use crate::client::{HubClient, Signed};
use crate::dispatch::{
    Effects, Handler, HandlerError, Outgoing, PROCESSED_TREE, Processed, test_pause,
};
use crate::inbound::{BoxFuture, Inbound};
use crate::shutdown::{Shutdown, stopped};
use crate::store::{Store, Tree};

/// The tree of outbox files signed and not yet settled, by file name.
pub const FILES_TREE: &str = "snodo.dir.files";

/// A file of `outbox/` signed and being submitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FileRecord {
    /// SHA-256 of the file's content, hex: a new file under the same name is a new envelope.
    digest: String,
    /// The envelope's id.
    id: Uuid,
    /// The signed envelope.
    signed: Outgoing,
}

/// What became of one outbox file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    /// Receipted by the hub; moved to `sent/`.
    Sent(Uuid),
    /// Refused (by the adapter or the hub); moved to `error/` with the reason.
    Refused(String),
    /// The hub could not be reached; the file stays for the next round.
    Deferred(String),
}

/// The four folders and what the adapter needs to fill and empty them.
pub struct DirAdapter {
    outbox: PathBuf,
    inbox: PathBuf,
    sent: PathBuf,
    error: PathBuf,
    catalog: Catalog,
    unknown: Unknown,
    client: HubClient,
    files: Tree<FileRecord>,
    processed: Tree<Processed>,
    store: Store,
}

impl std::fmt::Debug for DirAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirAdapter")
            .field("outbox", &self.outbox)
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AdapterError {
    let path = path.display().to_string();
    move |source| AdapterError::Io { path, source }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs the
/// directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// The entity a file-name stem names: `comune-001272` is `comune:001272` (a class has no `-`).
fn entity_of_stem(stem: &str) -> Option<EntityId> {
    let (class, code) = stem.split_once('-')?;
    format!("{class}:{code}").parse().ok()
}

/// What an outbox file's name says.
#[derive(Debug, PartialEq, Eq)]
struct Name {
    recipient: Recipient,
    service: String,
    action: String,
    xml: bool,
    request: bool,
    reply_to: Option<Uuid>,
}

fn parse_name(name: &str) -> Result<Name, String> {
    let (stem, xml) = if let Some(s) = name.strip_suffix(".json") {
        (s, false)
    } else if let Some(s) = name.strip_suffix(".xml") {
        (s, true)
    } else {
        return Err("the name must end in .json or .xml".into());
    };
    let parts: Vec<&str> = stem.split("__").collect();
    let [recipient, service, action, options @ ..] = parts.as_slice() else {
        return Err("the name must be RECIPIENT__SERVICE__ACTION[__OPTION...].json|xml".into());
    };
    let recipient = if *recipient == "all" {
        Recipient::Broadcast
    } else {
        Recipient::Entity(entity_of_stem(recipient).ok_or_else(|| {
            format!("`{recipient}` is not an entity written as class-code (comune-001272) or `all`")
        })?)
    };
    let mut request = false;
    let mut reply_to = None;
    for option in options {
        if *option == "request" {
            request = true;
        } else if let Some(id) = option.strip_prefix("re-") {
            reply_to = Some(
                Uuid::parse_str(id)
                    .map_err(|e| format!("`re-{id}` does not name an envelope id: {e}"))?,
            );
        }
    }
    if request && reply_to.is_some() {
        return Err("a file cannot be both a request and an answer".into());
    }
    Ok(Name {
        recipient,
        service: (*service).to_owned(),
        action: (*action).to_owned(),
        xml,
        request,
        reply_to,
    })
}

/// The inbox file name of an envelope.
fn inbox_name(inbound: &Inbound) -> String {
    let h = &inbound.envelope.header;
    let ext = match inbound.format {
        Format::Json => "json",
        Format::Xml => "xml",
    };
    format!(
        "{}__{}__{}__{}.{ext}",
        h.sender.file_stem(),
        h.service,
        h.action,
        h.id
    )
}

impl DirAdapter {
    /// The adapter for exchange directory `dir` (its four folders are created), checking
    /// outgoing messages against `catalog` (with `unknown` for the ones it does not know).
    ///
    /// # Errors
    /// [`AdapterError`] when a folder cannot be created or the store fails.
    pub fn new(
        dir: &Path,
        catalog: Catalog,
        unknown: Unknown,
        client: HubClient,
        store: Store,
    ) -> Result<DirAdapter, AdapterError> {
        let sub = |name: &str| -> Result<PathBuf, AdapterError> {
            let p = dir.join(name);
            fs::create_dir_all(&p).map_err(io(&p))?;
            Ok(p)
        };
        Ok(DirAdapter {
            outbox: sub("outbox")?,
            inbox: sub("inbox")?,
            sent: sub("sent")?,
            error: sub("error")?,
            catalog,
            unknown,
            client,
            files: store.tree(FILES_TREE)?,
            processed: store.tree(PROCESSED_TREE)?,
            store,
        })
    }

    /// Finishes what a crash interrupted in `inbox/`: a temporary file of an envelope
    /// recorded as processed is renamed into place; any other is removed (its envelope was not
    /// acknowledged and comes back). Returns how many were renamed.
    ///
    /// # Errors
    /// [`AdapterError`] when the inbox cannot be read or a file moved.
    pub fn recover(&self) -> Result<usize, AdapterError> {
        let mut renamed = 0;
        for entry in fs::read_dir(&self.inbox).map_err(io(&self.inbox))? {
            let entry = entry.map_err(io(&self.inbox))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(final_name) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp"))
            else {
                continue;
            };
            let recorded = final_name
                .rsplit_once('.')
                .map(|(stem, _)| stem.split("__").collect::<Vec<_>>())
                .and_then(|parts| match parts.as_slice() {
                    [sender, _, _, id] => {
                        Some((entity_of_stem(sender)?, Uuid::parse_str(id).ok()?))
                    }
                    _ => None,
                })
                .map(|(sender, id)| self.processed.contains(&format!("{sender}/{id}")))
                .transpose()?
                .unwrap_or(false);
            let tmp = entry.path();
            if recorded {
                let target = self.inbox.join(final_name);
                fs::rename(&tmp, &target).map_err(io(&target))?;
                renamed += 1;
                tracing::info!(file = %target.display(), "Inbox file finished after a restart.");
            } else {
                fs::remove_file(&tmp).map_err(io(&tmp))?;
            }
        }
        fs::File::open(&self.inbox)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.inbox))?;
        Ok(renamed)
    }

    /// Looks at `outbox/` every `poll` and sends what it finds, until `shutdown`.
    pub async fn run_outbox(self: Arc<Self>, poll: Duration, shutdown: Shutdown) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.send_outbox().await {
                tracing::error!(error = %e, "Cannot read the outbox folder.");
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = stopped(shutdown.clone()) => break,
            }
        }
        tracing::info!("Outbox folder watcher stopped.");
    }

    /// Sends every file of `outbox/` once, in name order.
    ///
    /// # Errors
    /// [`AdapterError`] when the folder cannot be read.
    pub async fn send_outbox(&self) -> Result<Vec<(String, FileOutcome)>, AdapterError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.outbox).map_err(io(&self.outbox))? {
            let entry = entry.map_err(io(&self.outbox))?;
            if !entry.file_type().map_err(io(&self.outbox))?.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Files still being written: hidden names, or the usual partial suffixes.
            if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
                continue;
            }
            names.push(name);
        }
        names.sort();
        let mut outcomes = Vec::with_capacity(names.len());
        for name in names {
            let outcome = self.send_file(&name).await?;
            outcomes.push((name, outcome));
        }
        Ok(outcomes)
    }

    /// Sends the file `name` of `outbox/`.
    ///
    /// # Errors
    /// [`AdapterError`] when the file cannot be read or moved, or the store fails.
    pub async fn send_file(&self, name: &str) -> Result<FileOutcome, AdapterError> {
        let path = self.outbox.join(name);
        let limit = snodo_envelopes::Limits::default().max_bytes;
        match fs::metadata(&path) {
            Ok(m) if m.len() > limit as u64 => {
                let reason = format!(
                    "the file is {} bytes, more than an envelope may hold ({limit})",
                    m.len()
                );
                self.refuse(name, &reason)?;
                return Ok(FileOutcome::Refused(reason));
            }
            _ => {}
        }
        let content = match fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileOutcome::Deferred("the file went away".into()));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let digest = hex::encode(snodo_envelopes::sha256(&content));
        let signed = match self.files.get(name)? {
            Some(record) if record.digest == digest => Signed {
                id: record.id,
                format: if record.signed.format == "xml" {
                    Format::Xml
                } else {
                    Format::Json
                },
                bytes: bytes::Bytes::from(record.signed.signed.into_bytes()),
            },
            _ => match self.sign_file(name, &content) {
                Ok(signed) => {
                    let record = FileRecord {
                        digest,
                        id: signed.id,
                        signed: Outgoing::of(&signed)
                            .map_err(|e| AdapterError::Http(format!("signing {name}: {e}")))?,
                    };
                    self.files.put(name, &record)?;
                    self.store.flush()?;
                    signed
                }
                Err(reason) => {
                    self.refuse(name, &reason)?;
                    return Ok(FileOutcome::Refused(reason));
                }
            },
        };
        match self.client.submit_signed(&signed).await {
            Ok(submitted) => {
                let sent_name = format!("{}__{name}", signed.id);
                let receipt = serde_json::to_vec_pretty(&submitted.receipt).unwrap_or_default();
                let receipt_path = self.sent.join(format!("{sent_name}.receipt.json"));
                write_atomically(&receipt_path, &receipt).map_err(io(&receipt_path))?;
                let target = self.sent.join(&sent_name);
                fs::rename(&path, &target).map_err(io(&target))?;
                fs::File::open(&self.outbox)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&self.outbox))?;
                self.files.remove(name)?;
                self.store.flush()?;
                tracing::info!(file = %name, envelope_id = %signed.id, index = submitted.receipt.index, "Outbox file sent.");
                Ok(FileOutcome::Sent(signed.id))
            }
            Err(e) if e.is_permanent() => {
                let reason = format!("the hub refused envelope {}: {e}", signed.id);
                self.refuse(name, &reason)?;
                self.files.remove(name)?;
                self.store.flush()?;
                Ok(FileOutcome::Refused(reason))
            }
            Err(e) => {
                tracing::warn!(file = %name, envelope_id = %signed.id, error = %e, "Outbox file not sent yet; it stays.");
                Ok(FileOutcome::Deferred(e.to_string()))
            }
        }
    }

    /// Validates the file and signs its envelope, or says why it cannot be sent.
    fn sign_file(&self, name: &str, content: &[u8]) -> Result<Signed, String> {
        let parsed = parse_name(name)?;
        let text = std::str::from_utf8(content).map_err(|_| "the file is not UTF-8".to_owned())?;
        let body = self
            .catalog
            .parse(
                &parsed.service,
                &parsed.action,
                text,
                parsed.xml,
                self.unknown,
            )
            .map_err(|e| e.to_string())?;
        let mut builder = self
            .client
            .envelope(parsed.recipient.clone(), &parsed.service, &parsed.action)
            .body(body);
        if parsed.request {
            builder = builder.profile(Profile::Request);
        }
        if let Some(id) = parsed.reply_to {
            let Recipient::Entity(to) = &parsed.recipient else {
                return Err("an answer goes to one entity, not `all`".into());
            };
            let conversation = conversation_of(&self.processed, to, id)?;
            builder = builder
                .in_reply_to(id)
                .conversation(conversation)
                .profile(Profile::Response);
        }
        let envelope = builder.build().map_err(|e| e.to_string())?;
        self.client.sign(&envelope).map_err(|e| e.to_string())
    }

    /// Moves `outbox/name` to `error/` with `name.reason` beside it.
    fn refuse(&self, name: &str, reason: &str) -> Result<(), AdapterError> {
        let mut target_name = name.to_owned();
        if self.error.join(&target_name).exists() {
            target_name = format!("{}__{name}", Uuid::now_v7());
        }
        let reason_path = self.error.join(format!("{target_name}.reason"));
        write_atomically(&reason_path, format!("{reason}\n").as_bytes())
            .map_err(io(&reason_path))?;
        let target = self.error.join(&target_name);
        fs::rename(self.outbox.join(name), &target).map_err(io(&target))?;
        fs::File::open(&self.outbox)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.outbox))?;
        tracing::warn!(file = %name, %reason, "Outbox file refused; moved to error/.");
        Ok(())
    }

    fn paths_of(&self, inbound: &Inbound) -> (PathBuf, PathBuf) {
        let name = inbox_name(inbound);
        (
            self.inbox.join(format!(".{name}.tmp")),
            self.inbox.join(name),
        )
    }
}

impl Handler for DirAdapter {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        _effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            test_pause("SNODO_TEST_PAUSE_BEFORE_INBOX_WRITE_MS", inbound.id()).await;
            let (tmp, _) = self.paths_of(inbound);
            let raw = inbound.raw.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(&raw)?;
                f.sync_all()
            })
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .map_err(|e| HandlerError::Retry(format!("writing to the inbox folder: {e}")))
        })
    }

    fn committed<'a>(&'a self, inbound: &'a Inbound) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            test_pause("SNODO_TEST_PAUSE_BEFORE_INBOX_RENAME_MS", inbound.id()).await;
            let (tmp, target) = self.paths_of(inbound);
            let inbox = self.inbox.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                match fs::rename(&tmp, &target) {
                    Ok(()) => {}
                    // Renamed before (a redelivery after the rename, or after the
                    // municipal system took the file): nothing to do.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
                fs::File::open(&inbox)?.sync_all()
            })
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .map_err(|e| HandlerError::Retry(format!("renaming into the inbox folder: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_recipient_service_action_and_options() {
        let n =
            parse_name("anpr-ministero__residenza.cambio__richiesta__request__p-17.json").unwrap();
        assert_eq!(
            n.recipient,
            Recipient::Entity("anpr:ministero".parse().unwrap())
        );
        assert_eq!(n.service, "residenza.cambio");
        assert_eq!(n.action, "richiesta");
        assert!(n.request && !n.xml && n.reply_to.is_none());
        let id = Uuid::now_v7();
        let n = parse_name(&format!(
            "portale-comunefacile__residenza.cambio__esito__re-{id}.xml"
        ))
        .unwrap();
        assert_eq!(n.reply_to, Some(id));
        assert!(n.xml);
        let n = parse_name("all__mobilita.viabilita__evento.json").unwrap();
        assert_eq!(n.recipient, Recipient::Broadcast);
        // A code may hold dashes; the class never does.
        let n = parse_name("comune-ab-12__x.y__z.json").unwrap();
        assert_eq!(
            n.recipient,
            Recipient::Entity("comune:ab-12".parse().unwrap())
        );
    }

    #[test]
    fn bad_names_say_what_is_expected() {
        for (name, says) in [
            ("note.txt", "must end in .json or .xml"),
            (
                "anpr-ministero__richiesta.json",
                "RECIPIENT__SERVICE__ACTION",
            ),
            ("anpr__x.y__z.json", "class-code"),
            (
                "anpr-ministero__x.y__z__re-12.json",
                "does not name an envelope id",
            ),
        ] {
            let e = parse_name(name).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
        }
    }
}
