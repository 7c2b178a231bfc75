//! The hub's journal API seen from an auditor (or an entity, which sees only the entries it is
//! party to): queries, and exports into a bundle, over TLS with a client certificate.
//!
//! The calls (the hub's side is in `api/`):
//!
//! | call | answer |
//! |---|---|
//! | `GET /v1/journal/entries?<filters>&after=` | `Accept: application/x-ndjson`: every matching item, one per line |
//! | `GET /v1/journal/envelopes/{id}/raw` | the exact signed bytes |
//! | `GET /v1/journal/checkpoint` | the latest signed checkpoint |
//! | `GET /v1/journal/checkpoints?from=&to=` | `{"checkpoints": [...]}`, sizes in `[from, to]`, at most 1000 |
//! | `GET /v1/journal/proof/inclusion?index=&size=` | `{"index", "size", "hashes": [base64]}` |
//! | `GET /v1/journal/proof/consistency?from=&to=` | `{"from", "to", "hashes": [base64]}` |
//!
//! An item is `{"index": n, "entry": <entry as JSON>, "bytes": "<base64 canonical bytes>"}`;
//! the bytes are the evidence, and the client checks the rest agrees with them.
//!
//! An export pins the hub's latest checkpoint first and exports the journal of that size, so
//! that what the hub appends meanwhile (auditors' queries are journaled too) stays out.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use snodo_envelopes::header::{format_time, parse_time};
use uuid::Uuid;

use super::AuditError;
use super::bundle::{BundleCounts, BundleHeader, BundleWriter, MAX_LINE};
use super::datadir::{certificate_pem, partial_path};
use super::verify::Trust;
use crate::journal::checkpoint::SignedCheckpoint;
use crate::journal::entry::{Entry, EventKind};
use crate::journal::merkle::{self, Hash, verify_consistency, verify_inclusion};

/// How many requests an export keeps in flight (raw envelopes, proofs).
const IN_FLIGHT: usize = 16;
/// How many times a request is tried when the hub is unreachable or overloaded.
const ATTEMPTS: u32 = 5;
/// How many times a broken stream of entries is resumed.
const RESUMES: u32 = 5;

/// Which entries to query or export; every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Entries the entity is party to.
    pub entity: Option<String>,
    /// About envelopes from this sender.
    pub sender: Option<String>,
    /// About envelopes to this recipient.
    pub recipient: Option<String>,
    /// This service.
    pub service: Option<String>,
    /// This action.
    pub action: Option<String>,
    /// This conversation.
    pub conversation: Option<String>,
    /// This envelope.
    pub envelope_id: Option<Uuid>,
    /// This kind of event.
    pub kind: Option<String>,
    /// `ok`, `refused` or a refusal code.
    pub status: Option<String>,
    /// From this time (RFC 3339).
    pub from: Option<String>,
    /// Up to this time (RFC 3339).
    pub to: Option<String>,
    /// After this index.
    pub after: Option<u64>,
}

impl Filters {
    /// True when nothing is filtered: every entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// Checks the values the hub would refuse: the kind, the times.
    ///
    /// # Errors
    /// [`AuditError::Usage`] naming the filter.
    pub fn validate(&self) -> Result<(), AuditError> {
        if let Some(kind) = &self.kind {
            kind.parse::<EventKind>()
                .map_err(|e| AuditError::Usage(format!("--kind: {e}")))?;
        }
        for (name, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(v) = value {
                parse_time(name, v).map_err(|e| AuditError::Usage(format!("--{name}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The filters as query parameters, in a stable order.
    #[must_use]
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let mut push = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                p.push((k, v));
            }
        };
        push("entity", self.entity.clone());
        push("sender", self.sender.clone());
        push("recipient", self.recipient.clone());
        push("service", self.service.clone());
        push("action", self.action.clone());
        push("conversation", self.conversation.clone());
        push("envelope_id", self.envelope_id.map(|i| i.to_string()));
        push("kind", self.kind.clone());
        push("status", self.status.clone());
        push("from", self.from.clone());
        push("to", self.to.clone());
        push("after", self.after.map(|i| i.to_string()));
        p
    }

    /// The filters as the bundle header records them.
    #[must_use]
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("?{}", q.join("&"))
}

/// One journal entry as the hub serves it, checked: its canonical bytes decode to the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its index.
    pub index: u64,
    /// The entry, decoded from the bytes.
    pub entry: Entry,
    /// The canonical bytes: the leaf.
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct WireItem {
    index: u64,
    entry: serde_json::Value,
    bytes: String,
}

#[derive(Deserialize)]
struct Page {
    entries: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Checkpoints {
    checkpoints: Vec<SignedCheckpoint>,
}

#[derive(Deserialize)]
struct Proof {
    hashes: Vec<String>,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

/// A client of the hub's journal API.
#[derive(Clone, Debug)]
pub struct JournalClient {
    http: reqwest::Client,
    /// The hub's base URL, without a trailing slash.
    base: String,
    /// The federation CA, PEM, as read from the file the TLS configuration trusts.
    ca_pem: String,
    /// Who the client certificate names, for the bundle header.
    identity: Option<String>,
    /// The node whose journal to read, through the hub asked (its `[[peers]]`); the hub's own
    /// when `None`.
    node: Option<String>,
}

impl JournalClient {
    /// A client of the hub at `hub` (`https://host:port`), trusting the CA at `ca` and
    /// presenting `cert` and `key`.
    ///
    /// # Errors
    /// [`AuditError::Tls`] when the files cannot make a TLS configuration;
    /// [`AuditError::Io`] when the CA cannot be read.
    pub fn new(hub: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self, AuditError> {
        let tls = crate::tls::client_config(ca, cert, key)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AuditError::Transport(e.to_string()))?;
        let ca_pem = std::fs::read_to_string(ca).map_err(|e| AuditError::io(ca, e))?;
        let identity = crate::tls::load_certs(cert)
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|c| crate::tls::identity(&c).ok())
            .map(|i| i.to_string());
        Ok(JournalClient {
            http,
            base: hub.trim_end_matches('/').to_owned(),
            ca_pem,
            identity,
            node: None,
        })
    }

    /// This client, reading the journal of node `node` through the same hub.
    #[must_use]
    pub fn for_node(&self, node: &str) -> Self {
        JournalClient {
            node: Some(node.to_owned()),
            ..self.clone()
        }
    }

    /// The federation CA this client trusts, PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `GET path` with `Accept: accept`, retried with backoff while the hub is unreachable,
    /// overloaded or rate-limiting; a problem+json answer becomes [`AuditError::Refused`].
    async fn get(&self, path: &str, accept: &str) -> Result<reqwest::Response, AuditError> {
        let url = match &self.node {
            Some(n) if path.contains('?') => format!("{}{path}&node={n}", self.base),
            Some(n) => format!("{}{path}?node={n}", self.base),
            None => format!("{}{path}", self.base),
        };
        let what = format!("GET {path}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .http
                .get(&url)
                .header(reqwest::header::ACCEPT, accept)
                .send()
                .await;
            let (error, retry_after) = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = resp.bytes().await.unwrap_or_default();
                    let problem: Problem = serde_json::from_slice(&body).unwrap_or(Problem {
                        code: String::new(),
                        detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    });
                    let e = AuditError::Refused {
                        what: what.clone(),
                        status,
                        code: problem.code,
                        detail: problem.detail,
                    };
                    (e, retry_after)
                }
                Err(e) => (AuditError::Transport(format!("{what}: {e}")), None),
            };
            if !error.is_retryable() || attempt >= ATTEMPTS {
                return Err(error);
            }
            let backoff = Duration::from_millis(200u64 << attempt.min(6));
            let jittered = backoff.mul_f64(rand::random::<f64>());
            let wait = retry_after.unwrap_or(jittered).min(Duration::from_secs(30));
            tracing::debug!(%what, attempt, ?wait, error = %error, "Retrying.");
            tokio::time::sleep(wait).await;
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AuditError> {
        let resp = self.get(path, "application/json").await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuditError::Transport(format!("GET {path}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| AuditError::Protocol {
            what: format!("GET {path}"),
            detail: e.to_string(),
        })
    }

    /// The hub's latest signed checkpoint.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached or refuses.
    pub async fn latest_checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        self.get_json("/v1/journal/checkpoint").await
    }

    /// The signed checkpoints with sizes in `[from, to]`, in size order (at most 1000).
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached or refuses.
    pub async fn checkpoints(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<SignedCheckpoint>, AuditError> {
        let c: Checkpoints = self
            .get_json(&format!("/v1/journal/checkpoints?from={from}&to={to}"))
            .await?;
        Ok(c.checkpoints)
    }

    /// The inclusion proof of entry `index` in the journal of `size` entries.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached, refuses, or sends no hashes.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let path = format!("/v1/journal/proof/inclusion?index={index}&size={size}");
        let p: Proof = self.get_json(&path).await?;
        hashes(&p.hashes, &path)
    }

    /// The consistency proof between the journals of `from` and `to` entries.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached, refuses, or sends no hashes.
    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
        let path = format!("/v1/journal/proof/consistency?from={from}&to={to}");
        let p: Proof = self.get_json(&path).await?;
        hashes(&p.hashes, &path)
    }

    /// The exact signed bytes of envelope `id`, and their media type.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached or refuses.
    pub async fn raw_envelope(
        &self,
        id: Uuid,
        sender: Option<&str>,
    ) -> Result<(String, Vec<u8>), AuditError> {
        // Ids are unique per sender only: name the sender when it is known.
        let path = match sender {
            Some(s) => format!("/v1/journal/envelopes/{id}/raw?sender={s}"),
            None => format!("/v1/journal/envelopes/{id}/raw"),
        };
        let resp = self
            .get(&path, "application/xml, application/jose+json")
            .await?;
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AuditError::Transport(format!("GET {path}: {e}")))?;
        Ok((media_type, bytes.to_vec()))
    }

    /// The journal's entry recording the pruning of the envelope that `accepted` accepted,
    /// if there is one.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached or refuses.
    pub async fn pruning_of(&self, accepted: &Item) -> Result<Option<Item>, AuditError> {
        let Some(id) = accepted.entry.envelope_id else {
            return Ok(None);
        };
        let path = format!("/v1/journal/entries?envelope_id={id}&kind=pruned");
        let page: Page = self.get_json(&path).await?;
        for v in page.entries {
            let item = parse_item(&serde_json::to_vec(&v).unwrap_or_default(), &path)?;
            let e = &item.entry;
            if item.index > accepted.index
                && e.kind == EventKind::Pruned
                && e.digest == accepted.entry.digest
                && e.sender == accepted.entry.sender
            {
                return Ok(Some(item));
            }
        }
        Ok(None)
    }

    /// Entry `index`.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached, refuses, or serves an entry whose
    /// parts disagree.
    pub async fn entry(&self, index: u64) -> Result<Item, AuditError> {
        let path = format!("/v1/journal/entries/{index}");
        let resp = self.get(&path, "application/json").await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| AuditError::Transport(format!("GET {path}: {e}")))?;
        parse_item(&body, &path)
    }

    /// Every entry matching `filters`, streamed (NDJSON), in index order.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached or refuses.
    pub async fn entries(&self, filters: &Filters) -> Result<EntryStream<'_>, AuditError> {
        let mut stream = EntryStream {
            client: self,
            filters: filters.clone(),
            response: None,
            buf: Vec::new(),
            start: 0,
            last: None,
            resumes: 0,
            done: false,
        };
        stream.open().await?;
        Ok(stream)
    }
}

fn hashes(list: &[String], what: &str) -> Result<Vec<Hash>, AuditError> {
    list.iter()
        .map(|h| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| AuditError::Protocol {
                    what: format!("GET {what}"),
                    detail: format!("`{h}` is not a base64 SHA-256 hash"),
                })
        })
        .collect()
}

fn parse_item(line: &[u8], what: &str) -> Result<Item, AuditError> {
    let protocol = |detail: String| AuditError::Protocol {
        what: format!("GET {what}"),
        detail,
    };
    let wire: WireItem =
        serde_json::from_slice(line).map_err(|e| protocol(format!("not a journal item: {e}")))?;
    let bytes = STANDARD
        .decode(&wire.bytes)
        .map_err(|e| protocol(format!("entry {}: bytes not base64: {e}", wire.index)))?;
    let entry =
        Entry::from_bytes(&bytes).map_err(|e| protocol(format!("entry {}: {e}", wire.index)))?;
    if entry.index != wire.index {
        return Err(protocol(format!(
            "the item says index {}, its bytes say {}",
            wire.index, entry.index
        )));
    }
    let shown: Result<Entry, _> = serde_json::from_value(wire.entry);
    if shown.as_ref().ok() != Some(&entry) {
        return Err(protocol(format!(
            "entry {}: the JSON shown is not what its canonical bytes say",
            wire.index
        )));
    }
    Ok(Item {
        index: wire.index,
        entry,
        bytes,
    })
}

/// The entries of a query, read line by line from the hub's NDJSON answer; a broken
/// connection is resumed after the last entry read.
#[derive(Debug)]
pub struct EntryStream<'c> {
    client: &'c JournalClient,
    filters: Filters,
    response: Option<reqwest::Response>,
    /// Bytes received and not yet read, from `start`.
    buf: Vec<u8>,
    start: usize,
    /// The last index read: entries must increase, and a resumed query starts after it.
    last: Option<u64>,
    resumes: u32,
    done: bool,
}

impl EntryStream<'_> {
    async fn open(&mut self) -> Result<(), AuditError> {
        let mut filters = self.filters.clone();
        if let Some(last) = self.last {
            filters.after = Some(filters.after.map_or(last, |a| a.max(last)));
        }
        let path = format!("/v1/journal/entries{}", query_string(&filters.pairs()));
        self.response = Some(self.client.get(&path, "application/x-ndjson").await?);
        self.buf.clear();
        self.start = 0;
        self.done = false;
        Ok(())
    }

    /// The next entry, or `None` at the end.
    ///
    /// # Errors
    /// [`AuditError`] when the hub cannot be reached (after resuming), or serves an entry
    /// out of order or whose parts disagree.
    pub async fn next(&mut self) -> Result<Option<Item>, AuditError> {
        loop {
            let pending = &self.buf[self.start..];
            let line_end = pending.iter().position(|&b| b == b'\n');
            if line_end.is_some() || (self.done && !pending.is_empty()) {
                let end = line_end.map_or(self.buf.len(), |i| self.start + i + 1);
                let line = &self.buf[self.start..end];
                self.start = end;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let item = parse_item(line, "/v1/journal/entries")?;
                if self.last.is_some_and(|last| item.index <= last) {
                    return Err(AuditError::Protocol {
                        what: "GET /v1/journal/entries".into(),
                        detail: format!(
                            "entry {} after entry {}: not in index order",
                            item.index,
                            self.last.unwrap_or_default()
                        ),
                    });
                }
                self.last = Some(item.index);
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            if self.start > 0 && self.start * 2 >= self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let Some(response) = self.response.as_mut() else {
                return Ok(None);
            };
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if self.buf.len() - self.start + chunk.len() > MAX_LINE {
                        return Err(AuditError::Protocol {
                            what: "GET /v1/journal/entries".into(),
                            detail: format!("a line longer than {MAX_LINE} bytes"),
                        });
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(None) => self.done = true,
                Err(e) if self.resumes < RESUMES => {
                    self.resumes += 1;
                    tracing::warn!(error = %e, after = ?self.last, "Entry stream broke; resuming.");
                    self.open().await?;
                }
                Err(e) => {
                    return Err(AuditError::Transport(format!(
                        "GET /v1/journal/entries: {e}"
                    )));
                }
            }
        }
    }
}

/// Fetches the checkpoints of sizes up to `to` a page at a time, in size order.
struct CheckpointPager<'c> {
    client: &'c JournalClient,
    /// The next size to ask from.
    from: u64,
    to: u64,
    page: VecDeque<SignedCheckpoint>,
    exhausted: bool,
}

impl CheckpointPager<'_> {
    async fn peek_size(&mut self) -> Result<Option<u64>, AuditError> {
        if self.page.is_empty() && !self.exhausted {
            let page = if self.from <= self.to {
                self.client.checkpoints(self.from, self.to).await?
            } else {
                Vec::new()
            };
            match page.last() {
                Some(last) => self.from = last.checkpoint.size.saturating_add(1),
                None => self.exhausted = true,
            }
            for c in page {
                let size = c.checkpoint.size;
                if size > self.to || self.page.back().is_some_and(|b| b.checkpoint.size >= size) {
                    return Err(AuditError::Protocol {
                        what: "GET /v1/journal/checkpoints".into(),
                        detail: format!("checkpoint of size {size} out of order or range"),
                    });
                }
                self.page.push_back(c);
            }
        }
        Ok(self.page.front().map(|c| c.checkpoint.size))
    }

    fn pop(&mut self) -> Option<SignedCheckpoint> {
        self.page.pop_front()
    }
}

/// An entry fetched for an export, with what goes with it.
type Fetched = (Item, Option<Vec<Hash>>, Option<Body>);

/// Exports the journal from the hub into a bundle at `out` (written as `out.partial`, renamed
/// when complete). Without filters: every entry and every checkpoint; with filters: the
/// matching entries, each with its inclusion proof under the latest checkpoint, and, with
/// `since`, the checkpoint of that size and a consistency proof from it.
///
/// # Errors
/// [`AuditError::Usage`] for bad filters or `since`; [`AuditError::Protocol`] when the hub
/// serves evidence that does not hold together (its own checkpoint or proofs do not verify,
/// or a complete export meets a certificate that does not see the whole journal);
/// other [`AuditError`]s when the hub cannot be reached or a file cannot be written.
pub async fn export(
    client: &JournalClient,
    filters: &Filters,
    since: Option<u64>,
    out: &Path,
) -> Result<BundleCounts, AuditError> {
    filters.validate()?;
    let latest = client.latest_checkpoint().await?;
    let trust = Trust::new(
        openssl::x509::X509::stack_from_pem(client.ca_pem().as_bytes())
            .map_err(|e| AuditError::Trust(e.to_string()))?,
        None,
        true,
    )?;
    let protocol = |what: &str, detail: String| AuditError::Protocol {
        what: what.to_owned(),
        detail,
    };
    latest
        .verify(trust.store(), latest.checkpoint.time)
        .map_err(|e| {
            protocol(
                "GET /v1/journal/checkpoint",
                format!("it does not verify: {e}"),
            )
        })?;
    let size = latest.checkpoint.size;
    let hub = latest
        .checkpoint
        .hub()
        .unwrap_or(&latest.checkpoint.origin)
        .to_owned();
    let complete = filters.is_empty();
    let mut header = BundleHeader::new(&hub, complete, size, client.ca_pem().to_owned());
    header.exported_by.clone_from(&client.identity);
    header.source = Some(match &client.node {
        Some(n) => format!("{} (node {n})", client.base),
        None => client.base.clone(),
    });
    header.filters = filters.to_map();
    header.hub_certificates = certificate_pem(&latest).into_iter().collect();

    let partial = partial_path(out);
    let file = std::fs::File::create(&partial).map_err(|e| AuditError::io(&partial, e))?;
    let mut w = BundleWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), &header)
        .map_err(|e| AuditError::io(&partial, e))?;
    let result = if complete {
        export_complete(client, &mut w, &latest, &partial).await
    } else {
        export_filtered(client, &mut w, filters, since, &latest, &partial).await
    };
    if let Err(e) = result {
        drop(w);
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let io = |e: std::io::Error| AuditError::io(&partial, e);
    let (file, counts) = w.finish().map_err(io)?;
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, out).map_err(|e| AuditError::io(out, e))?;
    Ok(counts)
}

/// Exports the journals of several hub nodes, through the hub `client` talks to, into one
/// file that holds each node's bundle in turn ([`crate::audit::bundle::verify_file_nodes`]
/// reads it). The counts of each node, in order.
///
/// # Errors
/// As [`export`], for the first node that fails; nothing is left at `out` then.
pub async fn export_nodes(
    client: &JournalClient,
    nodes: &[String],
    filters: &Filters,
    since: Option<u64>,
    out: &Path,
) -> Result<Vec<BundleCounts>, AuditError> {
    let partial = partial_path(out);
    let mut all = std::fs::File::create(&partial).map_err(|e| AuditError::io(&partial, e))?;
    let mut counts = Vec::new();
    for node in nodes {
        let part = partial_path(&partial.with_extension(format!("node-{node}")));
        let done = partial.with_extension(format!("node-{node}"));
        let result = async {
            let c = export(&client.for_node(node), filters, since, &done).await?;
            let mut f = std::fs::File::open(&done).map_err(|e| AuditError::io(&done, e))?;
            std::io::copy(&mut f, &mut all).map_err(|e| AuditError::io(&partial, e))?;
            Ok::<_, AuditError>(c)
        }
        .await;
        let _ = std::fs::remove_file(&done);
        let _ = std::fs::remove_file(&part);
        match result {
            Ok(c) => counts.push(c),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        }
    }
    all.sync_all().map_err(|e| AuditError::io(&partial, e))?;
    std::fs::rename(&partial, out).map_err(|e| AuditError::io(out, e))?;
    Ok(counts)
}

/// What an export carries for an acceptance: the envelope's exact bytes, or, once the hub
/// pruned them after its retention period, the journal's entry recording that (with its
/// inclusion proof, for a filtered bundle).
enum Body {
    Raw(String, Vec<u8>),
    Pruned(Option<(u64, Vec<u8>, Vec<Hash>)>),
}

/// The envelope of an acceptance, checked against the entry's digest; or, if the hub pruned
/// it, the journal's record of the pruning, under the checkpoint of `size` (with its proof
/// when `prove`).
async fn envelope_of(
    client: &JournalClient,
    item: &Item,
    size: u64,
    root: &Hash,
    prove: bool,
) -> Result<Option<Body>, AuditError> {
    if item.entry.kind != EventKind::Accepted {
        return Ok(None);
    }
    let Some(id) = item.entry.envelope_id else {
        return Ok(None);
    };
    let what = format!("GET /v1/journal/envelopes/{id}/raw");
    match client.raw_envelope(id, item.entry.sender.as_deref()).await {
        Ok((media_type, raw)) => {
            if Entry::digest_of(&raw) != item.entry.digest {
                return Err(AuditError::Protocol {
                    what,
                    detail: format!(
                        "the bytes served are not those entry {} records (SHA-256 {})",
                        item.index, item.entry.digest
                    ),
                });
            }
            Ok(Some(Body::Raw(media_type, raw)))
        }
        Err(AuditError::Refused { status: 410, .. }) => {
            let pruning = client.pruning_of(item).await?.ok_or_else(|| AuditError::Protocol {
                what: what.clone(),
                detail: format!(
                    "the body is gone (410), but the journal records no pruning of envelope {id}"
                ),
            })?;
            if pruning.index >= size {
                return Err(AuditError::Protocol {
                    what,
                    detail: format!(
                        "envelope {id} was pruned after the export began (entry {}, beyond the checkpoint of size {size}): export again",
                        pruning.index
                    ),
                });
            }
            if !prove {
                return Ok(Some(Body::Pruned(None)));
            }
            let proof = client.inclusion_proof(pruning.index, size).await?;
            verify_inclusion(
                &merkle::leaf_hash(&pruning.bytes),
                pruning.index,
                size,
                &proof,
                root,
            )
            .map_err(|e| AuditError::Protocol {
                what: format!(
                    "GET /v1/journal/proof/inclusion?index={}&size={size}",
                    pruning.index
                ),
                detail: format!("it does not verify: {e}"),
            })?;
            Ok(Some(Body::Pruned(Some((
                pruning.index,
                pruning.bytes,
                proof,
            )))))
        }
        Err(e) => Err(e),
    }
}

fn write_body<W: Write>(
    w: &mut BundleWriter<W>,
    item: &Item,
    body: Option<Body>,
) -> std::io::Result<()> {
    match body {
        Some(Body::Raw(media_type, raw)) => {
            let id = item.entry.envelope_id.unwrap_or_default();
            w.envelope(item.index, id, &media_type, &raw)
        }
        Some(Body::Pruned(recorded)) => w.pruned(
            item.index,
            recorded
                .as_ref()
                .map(|(at, bytes, proof)| (*at, bytes.as_slice(), proof.as_slice())),
        ),
        None => Ok(()),
    }
}

async fn export_complete<W: Write>(
    client: &JournalClient,
    w: &mut BundleWriter<W>,
    latest: &SignedCheckpoint,
    partial: &Path,
) -> Result<(), AuditError> {
    let (size, root) = (latest.checkpoint.size, latest.checkpoint.root);
    let io = |e: std::io::Error| AuditError::io(partial, e);
    let mut checkpoints = CheckpointPager {
        client,
        from: 0,
        to: size,
        page: VecDeque::new(),
        exhausted: false,
    };
    let mut tree = crate::audit::verify::Frontier::default();
    let mut completed = Vec::new();
    let stream = client.entries(&Filters::default()).await?;
    let fetched = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.next().await {
            Ok(Some(item)) if item.index < size => Some((Ok(item), Some(stream))),
            Ok(_) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
    .map(|item| async move {
        let item = item?;
        let body = envelope_of(client, &item, size, &root, false).await?;
        Ok::<Fetched, AuditError>((item, None, body))
    })
    .buffered(IN_FLIGHT);
    futures_util::pin_mut!(fetched);
    let mut expected = 0u64;
    loop {
        while let Some(s) = checkpoints.peek_size().await? {
            if s > expected {
                break;
            }
            let Some(c) = checkpoints.pop() else { break };
            if s < expected || tree.root() != c.checkpoint.root {
                return Err(AuditError::Protocol {
                    what: "GET /v1/journal/checkpoints".into(),
                    detail: format!(
                        "the checkpoint of size {s} does not have the root of the entries served"
                    ),
                });
            }
            w.checkpoint(&c).map_err(io)?;
        }
        let Some(next) = fetched.next().await else {
            break;
        };
        let (item, _, body) = next?;
        if item.index != expected {
            return Err(AuditError::Protocol {
                what: "GET /v1/journal/entries".into(),
                detail: format!(
                    "entry {} came where entry {expected} should: this certificate does not see the whole journal (only an auditor's does); export with a filter, such as --entity",
                    item.index
                ),
            });
        }
        completed.clear();
        tree.push(merkle::leaf_hash(&item.bytes), &mut completed);
        w.entry(item.index, &item.bytes, None).map_err(io)?;
        write_body(w, &item, body).map_err(io)?;
        expected += 1;
    }
    if expected != size {
        return Err(AuditError::Protocol {
            what: "GET /v1/journal/entries".into(),
            detail: format!("the entries stop at {expected}, before the checkpoint's size {size}"),
        });
    }
    Ok(())
}

async fn export_filtered<W: Write>(
    client: &JournalClient,
    w: &mut BundleWriter<W>,
    filters: &Filters,
    since: Option<u64>,
    latest: &SignedCheckpoint,
    partial: &Path,
) -> Result<(), AuditError> {
    let io = |e: std::io::Error| AuditError::io(partial, e);
    let (size, root) = (latest.checkpoint.size, latest.checkpoint.root);
    match since {
        Some(s) if s > size => {
            return Err(AuditError::Usage(format!(
                "--since {s}: the hub's latest checkpoint has size {size}"
            )));
        }
        Some(s) if s < size => {
            let earlier = client
                .checkpoints(s, s)
                .await?
                .into_iter()
                .find(|c| c.checkpoint.size == s)
                .ok_or_else(|| {
                    AuditError::Usage(format!(
                        "--since {s}: the hub has no checkpoint of that size"
                    ))
                })?;
            let proof = client.consistency_proof(s, size).await?;
            verify_consistency(s, size, &earlier.checkpoint.root, &root, &proof).map_err(|e| {
                AuditError::Protocol {
                    what: format!("GET /v1/journal/proof/consistency?from={s}&to={size}"),
                    detail: format!("it does not verify: {e}"),
                }
            })?;
            w.checkpoint(&earlier).map_err(io)?;
            w.checkpoint(latest).map_err(io)?;
            w.consistency(s, size, &proof).map_err(io)?;
        }
        _ => w.checkpoint(latest).map_err(io)?,
    }
    let stream = client.entries(filters).await?;
    let fetched = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.next().await {
            Ok(Some(item)) if item.index < size => Some((Ok(item), Some(stream))),
            Ok(_) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
    .map(|item| async move {
        let item = item?;
        let proof = client.inclusion_proof(item.index, size).await?;
        verify_inclusion(
            &merkle::leaf_hash(&item.bytes),
            item.index,
            size,
            &proof,
            &root,
        )
        .map_err(|e| AuditError::Protocol {
            what: format!(
                "GET /v1/journal/proof/inclusion?index={}&size={size}",
                item.index
            ),
            detail: format!("it does not verify: {e}"),
        })?;
        let body = envelope_of(client, &item, size, &root, true).await?;
        Ok::<Fetched, AuditError>((item, Some(proof), body))
    })
    .buffered(IN_FLIGHT);
    futures_util::pin_mut!(fetched);
    while let Some(next) = fetched.next().await {
        let (item, proof, body) = next?;
        w.entry(item.index, &item.bytes, proof.as_deref())
            .map_err(io)?;
        write_body(w, &item, body).map_err(io)?;
    }
    Ok(())
}

/// How [`query`] prints entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One entry per line, its canonical JSON bytes.
    Json,
    /// CSV with a header line (RFC 4180).
    Csv,
}

const CSV_COLUMNS: [&str; 13] = [
    "index",
    "at",
    "kind",
    "envelope_id",
    "sender",
    "recipient",
    "service",
    "action",
    "conversation",
    "digest",
    "code",
    "detail",
    "actor",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_row(e: &Entry) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields = [
        e.index.to_string(),
        format_time(e.at),
        e.kind.to_string(),
        e.envelope_id.map(|i| i.to_string()).unwrap_or_default(),
        o(&e.sender),
        o(&e.recipient),
        o(&e.service),
        o(&e.action),
        o(&e.conversation),
        e.digest.clone(),
        o(&e.code),
        o(&e.detail),
        o(&e.actor),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// `s` cut to `width` characters (with `…`) and padded.
fn cell(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n > width {
        let cut: String = s.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{s:width$}")
    }
}

fn table_row(e: &Entry) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let what = match (&e.service, &e.action) {
        (Some(s), Some(a)) => format!("{s}/{a}"),
        _ => "-".into(),
    };
    let status = match (&e.kind, &e.code) {
        (EventKind::Refused, Some(code)) => code.clone(),
        _ => "ok".into(),
    };
    format!(
        "{:>8}  {}  {}  {}  {}  {}  {}  {}",
        e.index,
        cell(&format_time(e.at), 27),
        cell(e.kind.as_str(), 13),
        cell(&o(&e.sender), 22),
        cell(&o(&e.recipient), 22),
        cell(&what, 30),
        cell(
            &e.envelope_id.map_or_else(|| "-".into(), |i| i.to_string()),
            36
        ),
        status
    )
}

/// Queries the hub's journal and writes the entries to `out` in `format`, at most `limit`.
/// Returns how many were written. A closed output (a pager that quit) ends it quietly.
///
/// # Errors
/// [`AuditError::Usage`] for bad filters; [`AuditError`] when the hub cannot be reached,
/// refuses, or serves entries whose parts disagree; [`AuditError::Io`] when writing fails.
pub async fn query<W: Write>(
    client: &JournalClient,
    filters: &Filters,
    limit: Option<u64>,
    format: OutputFormat,
    mut out: W,
) -> Result<u64, AuditError> {
    filters.validate()?;
    let mut stream = client.entries(filters).await?;
    let mut written = 0u64;
    let stdout = Path::new("-");
    let write = |out: &mut W, line: &[u8]| -> Result<bool, AuditError> {
        match out.write_all(line).and_then(|()| out.write_all(b"\n")) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(AuditError::io(stdout, e)),
        }
    };
    let head = match format {
        OutputFormat::Table => Some(format!(
            "{:>8}  {}  {}  {}  {}  {}  {}  STATUS",
            "INDEX",
            cell("AT", 27),
            cell("KIND", 13),
            cell("SENDER", 22),
            cell("RECIPIENT", 22),
            cell("SERVICE/ACTION", 30),
            cell("ENVELOPE", 36)
        )),
        OutputFormat::Csv => Some(CSV_COLUMNS.join(",")),
        OutputFormat::Json => None,
    };
    if let Some(head) = head
        && !write(&mut out, head.as_bytes())?
    {
        return Ok(0);
    }
    while limit.is_none_or(|l| written < l) {
        let Some(item) = stream.next().await? else {
            break;
        };
        let line = match format {
            OutputFormat::Table => table_row(&item.entry).into_bytes(),
            OutputFormat::Csv => csv_row(&item.entry).into_bytes(),
            OutputFormat::Json => item.bytes,
        };
        if !write(&mut out, &line)? {
            break;
        }
        written += 1;
    }
    match out.flush() {
        Ok(()) => Ok(written),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(written),
        Err(e) => Err(AuditError::io(stdout, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query_in_a_stable_order() {
        let f = Filters {
            sender: Some("comune:001272".into()),
            from: Some("2025-03-01T10:00:00+00:00".into()),
            kind: Some("accepted".into()),
            after: Some(41),
            ..Filters::default()
        };
        assert_eq!(
            query_string(&f.pairs()),
            "?sender=comune%3A001272&kind=accepted&from=2025-03-01T10%3A00%3A00%2B00%3A00&after=41"
        );
        assert!(!f.is_empty());
        assert!(Filters::default().is_empty());
        assert_eq!(query_string(&[]), "");
    }

    #[test]
    fn bad_filters_are_refused_before_asking() {
        let f = Filters {
            kind: Some("lost".into()),
            ..Filters::default()
        };
        assert!(f.validate().unwrap_err().to_string().contains("--kind"));
        let f = Filters {
            to: Some("yesterday".into()),
            ..Filters::default()
        };
        assert!(f.validate().unwrap_err().to_string().starts_with("--to"));
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"no\""), "\"say \"\"no\"\"\"");
    }

    #[test]
    fn items_whose_parts_disagree_are_refused() {
        let entry = Entry::new(
            3,
            EventKind::Refused,
            time::macros::datetime!(2025-03-01 10:00 UTC),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        );
        let bytes = entry.to_bytes().unwrap();
        let line = |index: u64, shown: &Entry| {
            serde_json::to_vec(&serde_json::json!({
                "index": index, "entry": shown, "bytes": STANDARD.encode(&bytes),
            }))
            .unwrap()
        };
        assert_eq!(parse_item(&line(3, &entry), "x").unwrap().entry, entry);
        assert!(parse_item(&line(4, &entry), "x").is_err());
        let mut other = entry.clone();
        other.code = Some("forged".into());
        let e = parse_item(&line(3, &other), "x").unwrap_err();
        assert!(
            e.to_string().contains("not what its canonical bytes say"),
            "{e}"
        );
    }
}
