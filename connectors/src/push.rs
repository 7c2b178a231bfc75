//! The push receiver: an HTTPS endpoint (TLS 1.3, rustls) where the hub delivers envelopes.
//!
//! The hub connects with its own certificate, issued by the federation CA; any other client is
//! refused. Each POST carries one envelope's exact signed bytes (the hub's `delivery` module);
//! the receiver verifies it, hands it to the [`Sink`], and answers 204 only once the sink has
//! made it durable. A 2xx is the hub's "delivered"; anything else makes it retry later. An
//! envelope that fails verification is answered 422 with a problem+json and never handed on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use snodo_envelopes::{EntityId, Identity, Limits, Verifier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::inbound::{Inbound, Sink};

/// How long the hub has to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// Why the push receiver could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The TLS material cannot be used.
    #[error("push receiver TLS: {0}")]
    Tls(String),
    /// The address cannot be bound.
    #[error("push receiver cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What every request of the receiver shares.
struct Shared {
    me: EntityId,
    verifier: Verifier,
    sink: Arc<dyn Sink>,
    max_bytes: usize,
}

/// Who is calling, from the TLS client certificate.
#[derive(Clone, Debug)]
struct Peer(Identity);

/// Where the push receiver listens and with what TLS material.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// The address (port 0 picks one).
    pub listen: SocketAddr,
    /// The federation CA: the hub's client certificate must chain to it.
    pub ca: PathBuf,
    /// The CA's revocation list, if any.
    pub crl: Option<PathBuf>,
    /// The entity's certificate, which the hub requires the endpoint to present.
    pub cert: PathBuf,
    /// The entity's key.
    pub key: PathBuf,
}

/// A running push receiver.
#[derive(Debug)]
pub struct PushReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PushReceiver {
    /// Listens as `config` says, presenting the entity's certificate (the hub requires the
    /// endpoint to name the entity) and requiring a client certificate from the CA that names
    /// a hub; verified envelopes for `me` go to `sink`, until `shutdown`.
    ///
    /// # Errors
    /// [`PushError`] when the TLS files cannot be used or the address cannot be bound.
    pub async fn start(
        config: &PushConfig,
        me: EntityId,
        verifier: Verifier,
        sink: Arc<dyn Sink>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<PushReceiver, PushError> {
        let tls = snodo_broker::tls::server_config(
            &config.ca,
            config.crl.as_deref(),
            &config.cert,
            &config.key,
        )
        .map_err(|e| PushError::Tls(e.to_string()))?;
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| PushError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| PushError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            me,
            verifier,
            sink,
            max_bytes: Limits::default().max_bytes + 4096,
        });
        let app = app(shared);
        let task = tokio::spawn(serve(listener, Arc::new(tls), app, shutdown));
        tracing::info!(%addr, "Push receiver listening.");
        Ok(PushReceiver { addr, task })
    }

    /// Waits until the receiver has stopped (after its shutdown signal).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new().fallback(receive).with_state(shared)
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = crate::shutdown::stopped(shutdown.clone()) => break,
        };
        let (tcp, peer_addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Push receiver: accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::shutdown::stopped(shutdown.clone()) => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(peer = %peer_addr, error = %e, "Push receiver: TLS handshake refused.");
                    return;
                }
                Err(_) => {
                    tracing::info!(peer = %peer_addr, "Push receiver: TLS handshake timed out.");
                    return;
                }
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| "no client certificate".to_owned())
                .and_then(snodo_broker::tls::identity);
            let identity = match identity {
                Ok(i) => i,
                Err(e) => {
                    tracing::info!(peer = %peer_addr, error = %e, "Push receiver: the client names no snodo identity.");
                    return;
                }
            };
            let service = TowerToHyperService::new(app.layer(Extension(Peer(identity))));
            let builder = Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(error = %e, "Push connection ended with an error.");
            }
        });
    }
    tracing::info!("Push receiver stopped.");
}

fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "status": status.as_u16(),
        "code": code,
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !matches!(peer, Identity::Hub(_)) {
        tracing::warn!(caller = %peer, "Push refused: only the hub delivers here.");
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the hub pushes here",
        );
    }
    let bytes = match axum::body::to_bytes(body, shared.max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "envelope-too-large",
                "the envelope is larger than the limit",
            );
        }
    };
    let announced = headers
        .get("snodo-envelope-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let verifier = shared.verifier.clone();
    let me = shared.me.clone();
    let verified =
        tokio::task::spawn_blocking(move || Inbound::verify(&verifier, &me, bytes)).await;
    let inbound = match verified {
        Ok(Ok(inbound)) => inbound,
        Ok(Err(refusal)) => {
            tracing::error!(envelope_id = %announced, code = refusal.code, detail = %refusal.detail, "Pushed envelope refused: it failed verification.");
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                refusal.code,
                refusal.detail,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "Push receiver: verification task failed.");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "try again");
        }
    };
    let id = inbound.id();
    match shared.sink.accept(inbound).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::warn!(envelope_id = %id, error = %e, "Pushed envelope not taken; the hub will retry.");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again later",
            )
        }
    }
}
