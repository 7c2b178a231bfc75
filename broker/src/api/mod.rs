//! The hub's HTTP API: routes, the caller's identity, and the handlers of each resource.

pub mod batch;
pub mod envelopes;
pub mod error;
pub mod health;
pub mod inbox;
pub mod journal;
pub mod openapi;
pub mod peers;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use snodo_envelopes::{EntityId, Identity};

use crate::hub::Hub;
use error::ApiError;

/// Who is calling: the identity of the verified TLS client certificate, and that certificate
/// (DER), set per connection; and the peer hub node the request came through, if it was
/// forwarded (then the identity is the one the peer asked for).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity, pub Arc<Vec<u8>>, pub Option<String>);

impl Caller {
    /// The calling entity, or a 403 for hubs and auditors.
    ///
    /// # Errors
    /// [`ApiError`] `caller-not-an-entity`.
    pub fn entity(&self) -> Result<&EntityId, ApiError> {
        match &self.0 {
            Identity::Entity(e) => Ok(e),
            other => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "caller-not-an-entity",
                format!("{other} has no inbox and sends no envelope"),
            )),
        }
    }
}

/// The API served over TLS to partners.
pub fn app(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/v1/envelopes", post(envelopes::submit))
        .route("/v1/envelopes/batch", post(batch::submit))
        .route("/v1/envelopes/{id}", get(envelopes::status))
        .route("/v1/inbox", get(inbox::lease))
        .route("/v1/inbox/ack", post(inbox::ack))
        .route("/v1/inbox/nack", post(inbox::nack))
        .route("/v1/journal/entries", get(journal::entries))
        .route("/v1/journal/entries/{index}", get(journal::entry))
        .route("/v1/journal/envelopes/{id}/raw", get(journal::raw))
        .route("/v1/journal/checkpoint", get(journal::checkpoint))
        .route("/v1/journal/checkpoints", get(journal::checkpoints))
        .route("/v1/journal/proof/inclusion", get(journal::inclusion))
        .route("/v1/journal/proof/consistency", get(journal::consistency))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/admin/reload", post(health::reload))
        .merge(health::routes())
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            peers::route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            still_trusted,
        ))
        .with_state(hub)
}

/// Checks, on every request, that the caller's certificate is still trusted: a revocation list
/// applied by reload shuts out connections opened before it, not only new ones.
async fn still_trusted(
    axum::extract::State(hub): axum::extract::State<Arc<Hub>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if let Some(caller) = request.extensions().get::<Caller>()
        && let Err(e) = hub.check_certificate(&caller.1)
    {
        return ApiError::from(&e).into_response();
    }
    next.run(request).await
}

/// The API of the optional plain-HTTP listener: health and metrics only.
pub fn plain_app(hub: Arc<Hub>) -> Router {
    health::routes().with_state(hub)
}
