//! `POST /v1/envelopes` (the acceptance pipeline) and `GET /v1/envelopes/{id}` (state and
//! history, to the sender and the recipients only).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use uuid::Uuid;

use super::Caller;
use super::error::ApiError;
use crate::engine::Accepted;
use crate::hub::{Hub, Outcome};

/// Query of `POST /v1/envelopes`.
#[derive(Debug, Deserialize)]
pub struct SubmitQuery {
    /// For a `request`: wait this long (`5s`) for the response and return it.
    wait: Option<String>,
}

/// The header carrying the receipt when the response body is the answer to a request.
pub const RECEIPT_HEADER: &str = "snodo-receipt";

/// Submits one signed envelope.
///
/// # Errors
/// An [`ApiError`] naming the refusal.
pub async fn submit(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let config = hub.config();
    let entity = caller.entity()?.to_string();
    hub.rate(&entity)?;
    let wait =
        ApiError::duration("wait", q.wait.as_deref())?.map(|w| w.min(config.limits.max_wait));
    let limit = config.limits.max_envelope_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "envelope-too-large",
                format!("the envelope is larger than {limit} bytes"),
            );
            // Only the first `limit` bytes were read: the digest is of nothing.
            hub.refused(&caller.0, &snodo_envelopes::sha256(b""), &e, None);
            return Err(e);
        }
    };
    let _in_flight = hub.bytes_in_flight(&entity, bytes.len())?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let outcome = hub.submit(&caller.0, media_type, bytes, wait).await?;
    hub.metrics.latency(started.elapsed().as_secs_f64());
    Ok(match outcome {
        Outcome::Accepted(Accepted::New(r)) => (StatusCode::ACCEPTED, Json(r)).into_response(),
        Outcome::Accepted(Accepted::Duplicate(r)) => (StatusCode::OK, Json(r)).into_response(),
        Outcome::Answered(accepted, response) => {
            let receipt = match &accepted {
                Accepted::New(r) | Accepted::Duplicate(r) => {
                    serde_json::to_vec(r).unwrap_or_default()
                }
            };
            let mut resp = (StatusCode::OK, response.envelope).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(response.media_type),
            );
            if let Ok(v) = HeaderValue::from_str(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(receipt),
            ) {
                h.insert(RECEIPT_HEADER, v);
            }
            resp
        }
    })
}

/// The state and history of one envelope.
///
/// # Errors
/// `not-found` unless the caller is its sender or one of its recipients.
pub async fn status(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entity = caller.entity()?;
    let id = Uuid::parse_str(&id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            format!("`{id}` is not a UUID: {e}"),
        )
    })?;
    match hub.engine.envelope(&id, entity).map_err(ApiError::from)? {
        Some((record, history)) => {
            Ok(Json(serde_json::json!({ "envelope": record, "history": history })).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "no envelope {id} that {entity} sent or received"
        ))),
    }
}
