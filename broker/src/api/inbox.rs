//! `GET /v1/inbox` (lease the caller's next envelopes), `POST /v1/inbox/ack` and `/nack`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use snodo_envelopes::EntityId;

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
    /// When the inbox is empty, wait up to this long (`20s`; capped by `limits.max_wait`)
    /// for envelopes to arrive before answering with none: a long poll.
    wait: Option<String>,
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
    let lease_for = ApiError::duration("lease", q.lease.as_deref())?
        .unwrap_or(limits.lease_default)
        .clamp(std::time::Duration::from_secs(1), limits.lease_max);
    let wait = ApiError::duration("wait", q.wait.as_deref())?
        .unwrap_or(Duration::ZERO)
        .min(limits.max_wait);
    let until = Instant::now() + wait;
    let envelopes = loop {
        // Listening before looking: an arrival between the look and the wait still wakes.
        let signal = hub.engine.inbox_signal(entity.as_str());
        let arrived = signal.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let envelopes = match &hub.transport {
            Some(t) => amqp_lease(&hub, t, &entity, limit, lease_for).await?,
            None => hub.engine.lease(entity.clone(), limit, lease_for).await?,
        };
        let now = Instant::now();
        if !envelopes.is_empty() || now >= until {
            break envelopes;
        }
        // Arrivals wake the embedded queue's waiters; RabbitMQ's queues and envelopes whose
        // lease ran out are looked at again every so often.
        let again = if hub.transport.is_some() {
            RECHECK_QUEUE
        } else {
            RECHECK_EXPIRED
        };
        let _ = tokio::time::timeout((until - now).min(again), arrived).await;
    };
    hub.metrics.leased(envelopes.len());
    Ok(Json(Inbox { envelopes }))
}

/// Leases from RabbitMQ in a task of its own, which the request going away does not cut
/// short (RabbitMQ's deliveries would stay unacknowledged on the channel): what it leased for
/// a request that is gone goes back to the queue at once.
async fn amqp_lease(
    hub: &Arc<Hub>,
    amqp: &Arc<crate::amqp::Amqp>,
    entity: &EntityId,
    limit: usize,
    lease_for: Duration,
) -> Result<Vec<Leased>, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (hub, amqp, entity) = (hub.clone(), amqp.clone(), entity.clone());
    tokio::spawn(async move {
        let r = crate::amqp::lease(&hub, &amqp, &entity, limit, lease_for).await;
        if let Err(Ok(leased)) = tx.send(r) {
            for l in leased {
                let _ = crate::amqp::settle(&hub, &amqp, &entity, &l.lease, false).await;
            }
        }
    });
    rx.await.map_err(|e| ApiError::internal(&e))?
}

/// How often a long poll looks at a RabbitMQ queue again.
const RECHECK_QUEUE: Duration = Duration::from_millis(100);

/// How often a long poll looks at the embedded queue again without an arrival (envelopes
/// come back when a lease runs out, which wakes nobody).
const RECHECK_EXPIRED: Duration = Duration::from_secs(1);

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
