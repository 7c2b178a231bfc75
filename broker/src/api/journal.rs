//! The journal for auditors and parties: `GET /v1/journal/...` — entries by filter (JSON pages,
//! NDJSON and CSV streams), one entry, the exact bytes of an envelope, checkpoints, and RFC 9162
//! inclusion and consistency proofs. An entity sees only what it is party to; a listed auditor
//! sees everything, and every query it makes is journaled first.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use snodo_envelopes::{EntityId, Identity};

use super::Caller;
use super::error::ApiError;
use crate::hub::Hub;
use crate::journal::SignedCheckpoint;
use crate::journal::entry::{Entry, EventKind};
use crate::journal::merkle;
use crate::journal::query::{self, Field, Filter, Found};
use crate::store::keys;

/// Who reads the journal, and so what they may see.
enum Reader {
    /// Everything.
    Auditor,
    /// Only entries it is party to.
    Entity(EntityId),
}

impl Reader {
    fn entity(&self) -> Option<&EntityId> {
        match self {
            Reader::Auditor => None,
            Reader::Entity(e) => Some(e),
        }
    }
}

async fn reader(
    hub: &Hub,
    caller: &Caller,
    query: Option<&str>,
    path: &str,
) -> Result<Reader, ApiError> {
    match &caller.0 {
        Identity::Entity(e) => Ok(Reader::Entity(e.clone())),
        Identity::Auditor(name) if hub.registry().is_auditor(name) => {
            let asked = match query {
                Some(q) if !q.is_empty() => format!("GET {path}?{q}"),
                _ => format!("GET {path}"),
            };
            let actor = match &caller.2 {
                Some(node) => format!("{} via hub:{node}", caller.0),
                None => caller.0.to_string(),
            };
            hub.engine.record_query(actor, asked).await?;
            Ok(Reader::Auditor)
        }
        Identity::Auditor(name) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "auditor-not-listed",
            format!("auditor {name} is not listed in the hub's configuration"),
        )),
        Identity::Hub(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "hubs do not read the journal here",
        )),
    }
}

fn bad(what: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-parameter", what)
}

/// Filters of `GET /v1/journal/entries`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    entity: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    service: Option<String>,
    action: Option<String>,
    conversation: Option<String>,
    envelope_id: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

impl EntriesQuery {
    fn filter(&self, reader: &Reader) -> Result<Filter, ApiError> {
        let mut f = Filter::default();
        for (field, value) in [
            (Field::Entity, &self.entity),
            (Field::Sender, &self.sender),
            (Field::Recipient, &self.recipient),
            (Field::Service, &self.service),
            (Field::Action, &self.action),
            (Field::Conversation, &self.conversation),
            (Field::Status, &self.status),
        ] {
            if let Some(v) = value {
                f.with(field, v.clone());
            }
        }
        if let Some(id) = &self.envelope_id {
            f.with(Field::EnvelopeId, query::parse_uuid(id).map_err(bad)?);
        }
        if let Some(k) = &self.kind {
            let kind: EventKind = k.parse().map_err(|e| bad(format!("kind: {e}")))?;
            f.with(Field::Kind, kind.as_str());
        }
        let time = |name: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    snodo_envelopes::header::parse_time(name, s).map_err(|e| bad(e.to_string()))
                })
                .transpose()
        };
        f.from = time("from", &self.from)?;
        f.to = time("to", &self.to)?;
        // An entity sees only what it is party to, whatever else it asks.
        if let Some(e) = reader.entity() {
            f.with(Field::Entity, e.as_str());
        }
        Ok(f)
    }
}

/// One entry as served: its fields and its exact bytes.
#[derive(Debug, Serialize)]
pub struct Item {
    /// The journal index.
    pub index: u64,
    /// The entry's fields.
    pub entry: Entry,
    /// Its canonical bytes (base64), the leaf data of the Merkle tree.
    pub bytes: String,
}

impl From<Found> for Item {
    fn from(f: Found) -> Self {
        Item {
            index: f.entry.index,
            bytes: STANDARD.encode(&f.bytes),
            entry: f.entry,
        }
    }
}

/// A page of entries.
#[derive(Debug, Serialize)]
pub struct Entries {
    /// The entries, in journal order.
    pub entries: Vec<Item>,
    /// Pass as `after` for the next page; absent at the end.
    pub next: Option<u64>,
}

const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// `GET /v1/journal/entries`.
///
/// # Errors
/// `bad-parameter`, `forbidden`, or a store failure.
pub async fn entries(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q: EntriesQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("query: {e}")))?;
    let reader = reader(&hub, &caller, raw.as_deref(), "/v1/journal/entries").await?;
    let filter = q.filter(&reader)?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let size = hub.engine.journal_size()?;
    let store = hub.engine.store().clone();
    if accept.contains("application/x-ndjson") || accept.contains("text/csv") {
        let csv = !accept.contains("application/x-ndjson");
        return Ok(stream(store, filter, size, q.after, csv));
    }
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let page = tokio::task::spawn_blocking(move || {
        query::page(store.as_ref(), &filter, size, q.after, limit)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(Entries {
        entries: page.entries.into_iter().map(Item::from).collect(),
        next: page.next,
    })
    .into_response())
}

/// Streams every matching entry, a page at a time: memory stays bounded by one page.
fn stream(
    store: Arc<dyn crate::store::Store>,
    filter: Filter,
    size: u64,
    after: Option<u64>,
    csv: bool,
) -> Response {
    let header_row = csv.then(|| CSV_HEADER.to_owned());
    let state = (store, filter, after, false, header_row);
    let body = futures_util::stream::unfold(
        state,
        move |(store, filter, after, done, header_row)| async move {
            if let Some(h) = header_row {
                return Some((
                    Ok::<_, std::io::Error>(h.into_bytes()),
                    (store, filter, after, done, None),
                ));
            }
            if done {
                return None;
            }
            let s = store.clone();
            let f = filter.clone();
            let page = tokio::task::spawn_blocking(move || {
                query::page(s.as_ref(), &f, size, after, PAGE_MAX)
            })
            .await;
            let page = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (store, filter, after, true, None),
                    ));
                }
                Err(e) => {
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (store, filter, after, true, None),
                    ));
                }
            };
            let mut out = Vec::with_capacity(page.entries.len() * 400);
            for found in page.entries {
                if csv {
                    out.extend_from_slice(csv_row(&found.entry).as_bytes());
                } else {
                    let _ = serde_json::to_writer(&mut out, &Item::from(found));
                    out.push(b'\n');
                }
            }
            let done = page.next.is_none();
            Some((Ok(out), (store, filter, page.next, done, None)))
        },
    );
    let mut resp = Body::from_stream(body).into_response();
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

const CSV_HEADER: &str = "index,at,kind,envelope_id,sender,recipient,service,action,conversation,digest,code,detail,actor\n";

fn csv_row(e: &Entry) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let opt = |o: &Option<String>| field(o.as_deref().unwrap_or(""));
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        e.index,
        snodo_envelopes::header::format_time(e.at),
        e.kind,
        e.envelope_id.map(|u| u.to_string()).unwrap_or_default(),
        opt(&e.sender),
        opt(&e.recipient),
        opt(&e.service),
        opt(&e.action),
        opt(&e.conversation),
        e.digest,
        opt(&e.code),
        opt(&e.detail),
        opt(&e.actor),
    )
}

/// `GET /v1/journal/entries/{index}`.
///
/// # Errors
/// `not-found` for an entry the caller may not see or that does not exist.
pub async fn entry(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Path(index): Path<u64>,
) -> Result<Json<Item>, ApiError> {
    let reader = reader(&hub, &caller, None, &format!("/v1/journal/entries/{index}")).await?;
    let found =
        query::get(hub.engine.store().as_ref(), index).map_err(|e| ApiError::internal(&e))?;
    let visible = |f: &Found| match reader.entity() {
        None => true,
        Some(e) => [&f.entry.sender, &f.entry.recipient, &f.entry.actor]
            .into_iter()
            .any(|p| p.as_deref() == Some(e.as_str())),
    };
    match found {
        Some(f) if visible(&f) => Ok(Json(Item::from(f))),
        _ => Err(ApiError::not_found(format!(
            "no journal entry {index} the caller may see"
        ))),
    }
}

/// Query of `GET /v1/journal/envelopes/{id}/raw`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParams {
    /// The sender, since envelope ids are unique per sender only.
    sender: Option<String>,
}

/// `GET /v1/journal/envelopes/{id}/raw[?sender=]`: the exact bytes received.
///
/// # Errors
/// `not-found` for an envelope the caller may not see or that does not exist.
pub async fn raw(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw_query): RawQuery,
) -> Result<Response, ApiError> {
    let q: RawParams = serde_urlencoded::from_str(raw_query.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("query: {e}")))?;
    let reader = reader(
        &hub,
        &caller,
        None,
        &format!("/v1/journal/envelopes/{id}/raw"),
    )
    .await?;
    let uuid = uuid::Uuid::parse_str(&id).map_err(|e| bad(format!("`{id}` is not a UUID: {e}")))?;
    match hub
        .engine
        .raw_envelope(&uuid, q.sender.as_deref(), reader.entity())?
    {
        Some((record, Some(bytes))) => {
            let ct = if record.format == "xml" {
                "application/xml"
            } else {
                snodo_envelopes::jws::MEDIA_TYPE
            };
            Ok(([(header::CONTENT_TYPE, ct)], bytes).into_response())
        }
        Some((record, None)) => Err(ApiError::new(
            StatusCode::GONE,
            "envelope-pruned",
            format!(
                "the body of envelope {id} was pruned after the retention period; its journal entries and digest {} remain",
                record.digest
            ),
        )),
        None => Err(ApiError::not_found(format!(
            "no envelope {id} the caller may see"
        ))),
    }
}

/// `GET /v1/journal/checkpoint`: the latest signed checkpoint.
///
/// # Errors
/// `not-found` before the first checkpoint.
pub async fn checkpoint(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SignedCheckpoint>, ApiError> {
    reader(&hub, &caller, None, "/v1/journal/checkpoint").await?;
    hub.engine
        .latest_checkpoint()?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no checkpoint has been signed yet"))
}

/// Range of `GET /v1/journal/checkpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<u64>,
    to: Option<u64>,
}

/// Signed checkpoints.
#[derive(Debug, Serialize)]
pub struct Checkpoints {
    /// In size order; at most 1,000 (continue from the last size + 1).
    pub checkpoints: Vec<SignedCheckpoint>,
}

/// `GET /v1/journal/checkpoints?from=&to=`: the checkpoints whose size is in the range.
///
/// # Errors
/// A store failure.
pub async fn checkpoints(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Checkpoints>, ApiError> {
    let r: Range = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("query: {e}")))?;
    reader(&hub, &caller, raw.as_deref(), "/v1/journal/checkpoints").await?;
    let (from, to) = (r.from.unwrap_or(0), r.to.unwrap_or(u64::MAX));
    let store = hub.engine.store();
    let after = from.checked_sub(1).map(keys::checkpoint);
    let mut out = Vec::new();
    for (k, v) in store
        .scan(b"k/", after.as_deref(), PAGE_MAX)
        .map_err(|e| ApiError::internal(&e))?
    {
        if keys::trailing_u64(&k).is_some_and(|size| size > to) {
            break;
        }
        out.push(serde_json::from_slice(&v).map_err(|e| ApiError::internal(&e))?);
    }
    Ok(Json(Checkpoints { checkpoints: out }))
}

/// Parameters of the inclusion proof.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: u64,
}

/// An RFC 9162 proof.
#[derive(Debug, Serialize)]
pub struct Proof {
    /// For inclusion: the leaf index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// For inclusion: the tree size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For consistency: the old size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// For consistency: the new size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// The proof's hashes, base64.
    pub hashes: Vec<String>,
}

fn node(store: &dyn crate::store::Store) -> impl Fn(u32, u64) -> Option<merkle::Hash> + '_ {
    move |l, i| crate::journal::nodes::stored_node(store, l, i)
}

/// `GET /v1/journal/proof/inclusion?index=&size=`.
///
/// # Errors
/// `bad-parameter` for a size beyond the journal or an index beyond the size.
pub async fn inclusion(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Proof>, ApiError> {
    let q: InclusionQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("query: {e}")))?;
    reader(&hub, &caller, raw.as_deref(), "/v1/journal/proof/inclusion").await?;
    let journal = hub.engine.journal_size()?;
    if q.size > journal || q.index >= q.size {
        return Err(bad(format!(
            "need index < size <= {journal} (the journal's size); got index {} and size {}",
            q.index, q.size
        )));
    }
    let store = hub.engine.store().clone();
    let hashes = merkle::inclusion_proof(q.index, q.size, node(store.as_ref()))
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(Proof {
        index: Some(q.index),
        size: Some(q.size),
        from: None,
        to: None,
        hashes: hashes.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

/// Parameters of the consistency proof.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/journal/proof/consistency?from=&to=`.
///
/// # Errors
/// `bad-parameter` unless `from <= to <=` the journal's size.
pub async fn consistency(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Proof>, ApiError> {
    let q: ConsistencyQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad(format!("query: {e}")))?;
    reader(
        &hub,
        &caller,
        raw.as_deref(),
        "/v1/journal/proof/consistency",
    )
    .await?;
    let journal = hub.engine.journal_size()?;
    if q.from > q.to || q.to > journal {
        return Err(bad(format!(
            "need from <= to <= {journal} (the journal's size); got from {} and to {}",
            q.from, q.to
        )));
    }
    let store = hub.engine.store().clone();
    let hashes = merkle::consistency_proof(q.from, q.to, node(store.as_ref()))
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(Proof {
        index: None,
        size: None,
        from: Some(q.from),
        to: Some(q.to),
        hashes: hashes.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}
