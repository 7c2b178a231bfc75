//! The listeners: HTTPS with client certificates for partners (each connection tagged with
//! the identity its certificate names), optional plain HTTP for health and metrics, and a
//! graceful shutdown that stops accepting, finishes what is in flight and flushes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use snodo_envelopes::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::api::Caller;
use crate::api::error::ApiError;
use crate::hub::Hub;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A shutdown signal every listener watches: `true` once shutdown has begun.
pub type Shutdown = watch::Receiver<bool>;

async fn stopped(mut shutdown: Shutdown) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`, then drains. Each connection gets
/// the hub's TLS configuration in force when it arrives (see [`Hub::tls_config`]).
///
/// # Errors
/// When accepting connections fails for good.
pub async fn serve_tls(
    listener: TcpListener,
    hub: Arc<Hub>,
    app: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Answers are small and awaited: none waits for an acknowledgement of the last.
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(hub.tls_config());
        let hub = hub.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused.");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out.");
                    return;
                }
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned();
            let identity = client_cert
                .as_ref()
                .ok_or_else(|| "no client certificate".to_owned())
                .and_then(crate::tls::identity);
            let identity = match identity {
                Ok(i) => i,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "Client certificate names no snodo identity.");
                    return;
                }
            };
            let guard = match &identity {
                Identity::Entity(e) => match hub.limiter.connect(e.as_str()) {
                    Some(g) => Some(g),
                    None => {
                        tracing::info!(%peer, entity = %e, "Too many connections.");
                        let refuse = Router::new().fallback(|| async {
                            ApiError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                "too-many-connections",
                                "this entity has too many open connections",
                            )
                            .retry_after(1)
                            .into_response()
                        });
                        serve_connection(tls, refuse, watcher).await;
                        return;
                    }
                },
                _ => None,
            };
            tracing::debug!(%peer, caller = %identity, "Connection open.");
            let cert = Arc::new(client_cert.map(|c| c.to_vec()).unwrap_or_default());
            serve_connection(
                tls,
                app.layer(Extension(Caller(identity, cert, None))),
                watcher,
            )
            .await;
            drop(guard);
        });
    }
    drop(listener);
    tracing::info!("Listener closed; finishing requests in flight.");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Requests still in flight after the drain timeout were cut.");
    }
    Ok(())
}

/// The HTTP/2 flow-control window of one request's body, bytes.
const H2_STREAM_WINDOW: u32 = 1 << 20;
/// The HTTP/2 flow-control window of one connection (its requests together), bytes.
const H2_CONNECTION_WINDOW: u32 = 4 << 20;

async fn serve_connection<IO>(io: IO, app: Router, watcher: hyper_util::server::graceful::Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/2's default 64 KiB windows make a client wait for a window update in the middle of
    // any larger body (a batch of envelopes); these hold a whole batch of 100, and bound what
    // one connection may have buffered unread.
    builder
        .http2()
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
}

/// Serves health and metrics over plain HTTP on `listener` until `shutdown`.
///
/// # Errors
/// When the listener fails.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped(shutdown))
        .await
}

/// Binds `addr`, naming it in the error.
///
/// # Errors
/// A message naming the address.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
}
