//! Several hub nodes, one auditor API: a journal request with `?node=NAME` naming a peer of
//! `[[peers]]` is forwarded to that node, over mutual TLS with this node's certificate, on
//! behalf of the caller; the peer serves it as if the caller had asked it directly (an entity
//! sees only its own entries there too) and journals the query as made through this node.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use snodo_envelopes::{EntityId, Identity};

use super::Caller;
use super::error::ApiError;
use crate::hub::Hub;

/// The header naming whom a peer node asks for.
pub const ON_BEHALF_OF: &str = "snodo-on-behalf-of";

/// Resolves `?node=` and requests on behalf of a peer's caller, for the journal's routes.
pub async fn route(State(hub): State<Arc<Hub>>, mut request: Request, next: Next) -> Response {
    // Only the journal is served across nodes: nothing else may be done on behalf of others.
    if !request.uri().path().starts_with("/v1/journal/") {
        return next.run(request).await;
    }
    if let Err(e) = act_for_peer(&hub, &mut request) {
        return e.into_response();
    }
    let (node, rest) = split_node(request.uri());
    let Some(node) = node else {
        return next.run(request).await;
    };
    let config = hub.config();
    if node == config.hub.name {
        // This node: serve it here, without the parameter the handlers do not know.
        let pq = match &rest {
            Some(q) => format!("{}?{q}", request.uri().path()),
            None => request.uri().path().to_owned(),
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
        return next.run(request).await;
    }
    let Some(peer) = config.peers.iter().find(|p| p.name == node) else {
        let known: Vec<&str> = std::iter::once(config.hub.name.as_str())
            .chain(config.peers.iter().map(|p| p.name.as_str()))
            .collect();
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-node",
            format!(
                "node `{node}` is neither this node nor a listed peer (known: {})",
                known.join(", ")
            ),
        )
        .into_response();
    };
    let Some(caller) = request.extensions().get::<Caller>() else {
        return ApiError::internal(&"no caller").into_response();
    };
    let asked = Asked {
        caller: caller.0.to_string(),
        path: request.uri().path().to_owned(),
        query: rest,
        accept: request.headers().get(header::ACCEPT).cloned(),
    };
    drop(request);
    match forward(&hub, &peer.url, asked).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A request from a listed peer node that names whom it asks for acts as that caller.
fn act_for_peer(hub: &Hub, request: &mut Request) -> Result<(), ApiError> {
    let Some(on_behalf) = request.headers().get(ON_BEHALF_OF) else {
        return Ok(());
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return Ok(());
    };
    let forbidden = |m: String| ApiError::new(StatusCode::FORBIDDEN, "not-a-peer", m);
    let Identity::Hub(node) = &caller.0 else {
        return Err(forbidden(format!(
            "{} is not a hub node: only peers ask on behalf of others",
            caller.0
        )));
    };
    if !hub.config().peers.iter().any(|p| p.name == *node) {
        return Err(forbidden(format!(
            "hub node `{node}` is not among this node's [[peers]]"
        )));
    }
    let text = on_behalf.to_str().unwrap_or_default();
    let identity = if let Some(name) = text.strip_prefix("auditor:") {
        Identity::Auditor(name.to_owned())
    } else if let Ok(e) = text.parse::<EntityId>() {
        Identity::Entity(e)
    } else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            format!("{ON_BEHALF_OF}: `{text}` is not an entity or an auditor"),
        ));
    };
    request
        .extensions_mut()
        .insert(Caller(identity, caller.1.clone(), Some(node.clone())));
    Ok(())
}

/// `node`'s value and the query without it.
fn split_node(uri: &Uri) -> (Option<String>, Option<String>) {
    let Some(query) = uri.query() else {
        return (None, None);
    };
    let mut node = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("node=") {
            Some(v) => {
                node = Some(v.to_owned());
                false
            }
            None => true,
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| rest.join("&"));
    (node, rest)
}

/// What is forwarded of a request (the request itself is not `Sync`).
struct Asked {
    caller: String,
    path: String,
    query: Option<String>,
    accept: Option<HeaderValue>,
}

async fn forward(hub: &Hub, base: &str, asked: Asked) -> Result<Response, ApiError> {
    let client = hub.peer_client().map_err(|e| ApiError::internal(&e))?;
    let base_url = base.trim_end_matches('/');
    let url = match &asked.query {
        Some(q) => format!("{base_url}{}?{q}", asked.path),
        None => format!("{base_url}{}", asked.path),
    };
    let mut out = client.get(&url).header(ON_BEHALF_OF, asked.caller);
    if let Some(accept) = asked.accept {
        out = out.header(header::ACCEPT, accept);
    }
    let resp = out.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "peer-unreachable",
            format!("the peer node at {base} did not answer: {e}"),
        )
        .retry_after(5)
    })?;
    let mut response = Response::builder().status(resp.status().as_u16());
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(name.as_str())
            && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
        {
            response = response.header(name, v);
        }
    }
    response
        .body(Body::from_stream(resp.bytes_stream()))
        .map_err(|e| ApiError::internal(&e))
}
