//! `GET /v1/inbox` (lease the caller's next envelopes), `POST /v1/inbox/ack` and `/nack`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::Caller;
use super::error::ApiError;
use crate::engine::Leased;
use crate::hub::Hub;

/// Query of `GET /v1/inbox`.
#[derive(Debug, Deserialize)]
pub struct LeaseQuery {
    /// At most this many envelopes (default 10, capped by the configuration).
    limit: Option<usize>,
    /// Lease them for this long (`30s`; default and cap from the configuration).
    lease: Option<String>,
}

/// The envelopes handed out.
#[derive(Debug, serde::Serialize)]
pub struct Inbox {
    /// Each with its lease token.
    pub envelopes: Vec<Leased>,
}

/// Body of `ack` and `nack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settle {
    /// The lease token.
    pub lease: String,
}

/// Leases the caller's next envelopes.
///
/// # Errors
/// An [`ApiError`] for a bad parameter or a hub failure.
pub async fn lease(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<LeaseQuery>,
) -> Result<Json<Inbox>, ApiError> {
    let entity = caller.entity()?.clone();
    hub.rate(entity.as_str())?;
    let limits = hub.config().limits.clone();
    let limit = q
        .limit
        .unwrap_or(10)
        .clamp(1, limits.inbox_max_batch as usize);
    let lease_for = match q.lease.as_deref() {
        None => limits.lease_default,
        Some(l) => humantime::parse_duration(l).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-parameter",
                format!("lease={l:?} is not a duration like 30s: {e}"),
            )
        })?,
    }
    .clamp(std::time::Duration::from_secs(1), limits.lease_max);
    let envelopes = match &hub.transport {
        Some(t) => crate::amqp::lease(&hub, t, &entity, limit, lease_for).await?,
        None => hub.engine.lease(entity, limit, lease_for).await?,
    };
    hub.metrics.leased(envelopes.len());
    Ok(Json(Inbox { envelopes }))
}

/// Acknowledges a leased envelope: it is delivered and will never be handed out again.
///
/// # Errors
/// `lease-unknown` when the caller holds no such lease.
pub async fn ack(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Json(s): Json<Settle>,
) -> Result<StatusCode, ApiError> {
    settle(hub, caller, s, true).await
}

/// Returns a leased envelope to the inbox at once.
///
/// # Errors
/// `lease-unknown` when the caller holds no such lease.
pub async fn nack(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    Json(s): Json<Settle>,
) -> Result<StatusCode, ApiError> {
    settle(hub, caller, s, false).await
}

async fn settle(
    hub: Arc<Hub>,
    caller: Caller,
    s: Settle,
    ack: bool,
) -> Result<StatusCode, ApiError> {
    let entity = caller.entity()?.clone();
    hub.rate(entity.as_str())?;
    match &hub.transport {
        Some(t) => crate::amqp::settle(&hub, t, &entity, &s.lease, ack).await?,
        None => hub.engine.settle(entity, s.lease, ack).await?,
    }
    hub.metrics.settled(ack);
    Ok(StatusCode::NO_CONTENT)
}
