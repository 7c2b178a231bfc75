//! The `http` adapter: the municipal system and the connector talk HTTP, each way.
//!
//! **Receiving** — each envelope received is POSTed to `deliver_to` as JSON:
//! `{"header": {…the envelope header…}, "body": <JSON, or the XML fragment as a string>,
//! "format": "json"|"xml", "envelope": "<the exact signed bytes>"}`, with the header
//! `snodo-envelope-id`. A 2xx answer means the municipal system has it; only then is the hub
//! told it is delivered. Anything else (or no answer) and the envelope comes back later: the
//! municipal system must treat a repeated `header.id` from the same sender as the same
//! message (the connector never sends one it has recorded as taken, but a crash between its
//! 2xx and that record repeats it).
//!
//! **Sending** — the municipal system POSTs to `http://LISTEN/v1/messages`:
//! `{"recipient": "anpr:ministero" | "*", "service": …, "action": …, "body": <JSON, or an XML
//! fragment string with "xml": true>, "request": bool, "in_reply_to": UUID, "id": UUID}`
//! (`request`, `in_reply_to` and `id` optional). The body is checked against the catalog,
//! signed and submitted; the answer is `200 {"envelope_id", "duplicate", "receipt"}`, or a
//! problem+json: 400 (the message is invalid), 409 (`id` reused for another message), 422
//! (the hub refused it, with the hub's code), 503 (the hub is unreachable: try again). Given an
//! `id`, a retry sends the very same signed envelope, so the hub delivers it once. The
//! endpoint listens on a loopback address only: it has no authentication of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use snodo_envelopes::{Body, EntityId, Format, Profile, Recipient};
use uuid::Uuid;

use super::{AdapterError, conversation_of};
use crate::catalog::{Catalog, Unknown};
use crate::client::{HubClient, Signed};
use crate::dispatch::{Effects, Handler, HandlerError, Outgoing, PROCESSED_TREE, Processed};
use crate::inbound::{BoxFuture, Inbound};
use crate::shutdown::{Shutdown, stopped};
use crate::store::{Store, Tree};

/// The tree of messages sent with an `id`, by id: the request's digest and the signed bytes.
pub const SENT_TREE: &str = "snodo.http.sent";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SentRecord {
    /// SHA-256 of the request, hex.
    digest: String,
    signed: Outgoing,
}

/// A message the municipal system sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// The recipient entity, or `*` for an event.
    pub recipient: String,
    /// The service.
    pub service: String,
    /// The action.
    pub action: String,
    /// The body: JSON, or an XML fragment as a string when `xml` is true.
    pub body: Value,
    /// Whether `body` is an XML fragment.
    #[serde(default)]
    pub xml: bool,
    /// Send with the request profile.
    #[serde(default)]
    pub request: bool,
    /// Answers this envelope received from the recipient (and joins its conversation).
    #[serde(default)]
    pub in_reply_to: Option<Uuid>,
    /// The envelope id (UUIDv7) to use, so that a retry is recognised.
    #[serde(default)]
    pub id: Option<Uuid>,
}

/// The `http` adapter.
pub struct HttpAdapter {
    deliver_to: String,
    http: reqwest::Client,
    catalog: Catalog,
    unknown: Unknown,
    client: HubClient,
    processed: Tree<Processed>,
    sent: Tree<SentRecord>,
    store: Store,
}

impl std::fmt::Debug for HttpAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAdapter")
            .field("deliver_to", &self.deliver_to)
            .finish_non_exhaustive()
    }
}

fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({"status": status.as_u16(), "code": code, "detail": detail.into()}).to_string(),
    )
        .into_response()
}

impl HttpAdapter {
    /// The adapter delivering to `deliver_to` (answers within `timeout`).
    ///
    /// # Errors
    /// [`AdapterError`] when the HTTP client cannot be built or the store fails.
    pub fn new(
        deliver_to: &str,
        timeout: Duration,
        catalog: Catalog,
        unknown: Unknown,
        client: HubClient,
        store: Store,
    ) -> Result<HttpAdapter, AdapterError> {
        // Plain HTTP to a local system; TLS is configured only because the HTTP library
        // wants a provider, with no root (so no https:// URL would be trusted).
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AdapterError::Http(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .build()
            .map_err(|e| AdapterError::Http(e.to_string()))?;
        Ok(HttpAdapter {
            deliver_to: deliver_to.to_owned(),
            http,
            catalog,
            unknown,
            client,
            processed: store.tree(PROCESSED_TREE)?,
            sent: store.tree(SENT_TREE)?,
            store,
        })
    }

    /// Serves the sending endpoint on `listen` until `shutdown`; returns the address bound.
    ///
    /// # Errors
    /// [`AdapterError::Http`] when the address cannot be bound.
    pub async fn serve(
        self: Arc<Self>,
        listen: SocketAddr,
        shutdown: Shutdown,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdapterError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| AdapterError::Http(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AdapterError::Http(e.to_string()))?;
        let app = axum::Router::new()
            .route("/v1/messages", axum::routing::post(send))
            .with_state(self);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(shutdown))
                .await
            {
                tracing::error!(error = %e, "The local sending endpoint failed.");
            }
        });
        tracing::info!(%addr, "Local sending endpoint listening.");
        Ok((addr, task))
    }

    fn sign(&self, m: &Outbound) -> Result<Signed, Box<Response>> {
        let bad =
            |detail: String| Box::new(problem(StatusCode::BAD_REQUEST, "message-invalid", detail));
        let recipient: Recipient = if m.recipient == "*" {
            Recipient::Broadcast
        } else {
            Recipient::Entity(
                m.recipient
                    .parse::<EntityId>()
                    .map_err(|e| bad(format!("recipient: {e}")))?,
            )
        };
        let body = match (&m.body, m.xml) {
            (Value::String(xml), true) => Body::Xml(xml.clone()),
            (_, true) => return Err(bad("body: an XML body is a string".into())),
            (v, false) => Body::Json(v.clone()),
        };
        let body = match body {
            Body::Xml(text) => self
                .catalog
                .parse(&m.service, &m.action, &text, true, self.unknown),
            json => self
                .catalog
                .check(&m.service, &m.action, &json, self.unknown)
                .map(|()| json),
        }
        .map_err(|e| bad(e.to_string()))?;
        let mut builder = self
            .client
            .envelope(recipient.clone(), &m.service, &m.action)
            .body(body);
        if let Some(id) = m.id {
            builder = builder.id(id);
        }
        if m.request {
            builder = builder.profile(Profile::Request);
        }
        if let Some(re) = m.in_reply_to {
            let Recipient::Entity(to) = &recipient else {
                return Err(bad("an answer goes to one entity, not `*`".into()));
            };
            let conversation = conversation_of(&self.processed, to, re).map_err(bad)?;
            builder = builder
                .in_reply_to(re)
                .conversation(conversation)
                .profile(Profile::Response);
        }
        let envelope = builder.build().map_err(|e| bad(e.to_string()))?;
        self.client.sign(&envelope).map_err(|e| bad(e.to_string()))
    }
}

async fn send(State(adapter): State<Arc<HttpAdapter>>, Json(m): Json<Outbound>) -> Response {
    let digest = hex::encode(snodo_envelopes::sha256(
        serde_json::to_vec(&m).unwrap_or_default().as_slice(),
    ));
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "Local sending endpoint failed.");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the connector failed",
        )
    };
    let signed = match m.id.map(|id| adapter.sent.get(&id.to_string())) {
        Some(Err(e)) => return internal(&e),
        Some(Ok(Some(record))) if record.digest == digest => Signed {
            id: m.id.unwrap_or_default(),
            format: if record.signed.format == "xml" {
                Format::Xml
            } else {
                Format::Json
            },
            bytes: bytes::Bytes::from(record.signed.signed.into_bytes()),
        },
        Some(Ok(Some(_))) => {
            return problem(
                StatusCode::CONFLICT,
                "id-reused",
                "this id was already used for another message",
            );
        }
        Some(Ok(None)) | None => {
            let signed = match adapter.sign(&m) {
                Ok(s) => s,
                Err(resp) => return *resp,
            };
            if m.id.is_some() {
                let record = match Outgoing::of(&signed) {
                    Ok(signed) => SentRecord { digest, signed },
                    Err(e) => return internal(&e),
                };
                if let Err(e) = adapter
                    .sent
                    .put(&signed.id.to_string(), &record)
                    .and_then(|()| adapter.store.flush())
                {
                    return internal(&e);
                }
            }
            signed
        }
    };
    match adapter.client.submit_signed(&signed).await {
        Ok(s) => (
            StatusCode::OK,
            Json(json!({"envelope_id": signed.id, "duplicate": s.duplicate, "receipt": s.receipt})),
        )
            .into_response(),
        Err(e) if e.is_permanent() => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.code().unwrap_or("hub-refused"),
            e.to_string(),
        ),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "hub-unreachable",
            e.to_string(),
        ),
    }
}

impl Handler for HttpAdapter {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        _effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let (body, format) = match (&inbound.envelope.body, inbound.format) {
                (Body::Json(v), f) => (v.clone(), f),
                (Body::Xml(x), f) => (Value::String(x.clone()), f),
            };
            let message = json!({
                "header": inbound.envelope.header,
                "body": body,
                "format": match format { Format::Json => "json", Format::Xml => "xml" },
                "envelope": String::from_utf8_lossy(&inbound.raw),
            });
            let resp = self
                .http
                .post(&self.deliver_to)
                .header("snodo-envelope-id", inbound.id().to_string())
                .json(&message)
                .send()
                .await
                .map_err(|e| {
                    HandlerError::Retry(format!("the municipal system cannot be reached: {e}"))
                })?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(HandlerError::Retry(format!(
                    "the municipal system answered {}",
                    resp.status()
                )))
            }
        })
    }
}
