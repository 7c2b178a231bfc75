//! The shutdown signal every long-running part watches: `true` once shutdown has begun.

use tokio::sync::watch;

/// A shutdown signal.
pub type Shutdown = watch::Receiver<bool>;

/// Completes once `shutdown` is `true` (or its sender is gone).
pub async fn stopped(mut shutdown: Shutdown) {
    let _ = shutdown.wait_for(|s| *s).await;
}
