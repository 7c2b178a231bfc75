//! `/healthz` (the process answers), `/readyz` (store writable, keys loaded, certificates not
//! near expiry), `/metrics` (Prometheus text) and `POST /v1/admin/reload`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use snodo_envelopes::Identity;

use super::Caller;
use super::error::ApiError;
use crate::hub::Hub;

/// Health, readiness and metrics.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let problems = hub.readiness();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    // With the amqp transport the queues are RabbitMQ's, which reports their depth.
    for e in hub
        .registry()
        .entities()
        .filter(|_| hub.transport.is_none())
    {
        let id = e.id.to_string();
        if let Ok(n) = hub.engine.queue_depth(&id, 100_000) {
            hub.metrics.depth(&id, n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics.render(),
    )
        .into_response()
}

/// Reloads the configuration file (the hub's own certificate only).
///
/// # Errors
/// 403 for any other caller; 422 naming the bad field when the new file is refused.
pub async fn reload(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    match &caller.0 {
        Identity::Hub(name) if *name == hub.config().hub.name => {}
        other => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{other} may not reload the configuration; use the hub's own certificate"),
            ));
        }
    }
    let summary = hub.reload_from_file().map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config-invalid",
            format!("{e:#}"),
        )
    })?;
    Ok((StatusCode::OK, format!("reloaded: {summary}\n")).into_response())
}
