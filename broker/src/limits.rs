//! Per-entity limits: a token bucket of requests per second, a bound on the bytes of envelopes
//! in flight, and a bound on concurrent connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Inner {
    rate: f64,
    burst: f64,
    max_bytes: usize,
    max_connections: u32,
    buckets: HashMap<String, Bucket>,
    bytes: HashMap<String, usize>,
    connections: HashMap<String, u32>,
}

/// The limits of every entity, shared by all connections.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Mutex<Inner>>,
}

/// Bytes reserved for one request; released when dropped.
#[derive(Debug)]
pub struct BytesGuard {
    limiter: Limiter,
    entity: String,
    n: usize,
}

/// One open connection of an entity; released when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    limiter: Limiter,
    entity: String,
}

impl Limiter {
    /// Limits as configured.
    #[must_use]
    pub fn new(c: &LimitsConfig) -> Self {
        let inner = Inner {
            rate: f64::from(c.requests_per_second),
            burst: f64::from(c.burst.max(1)),
            max_bytes: c.max_bytes_in_flight,
            max_connections: c.max_connections_per_entity,
            buckets: HashMap::new(),
            bytes: HashMap::new(),
            connections: HashMap::new(),
        };
        Limiter {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Applies new limits (on reload); counts in progress are kept.
    pub fn reconfigure(&self, c: &LimitsConfig) {
        if let Ok(mut i) = self.inner.lock() {
            i.rate = f64::from(c.requests_per_second);
            i.burst = f64::from(c.burst.max(1));
            i.max_bytes = c.max_bytes_in_flight;
            i.max_connections = c.max_connections_per_entity;
        }
    }

    /// Takes one request from `entity`'s bucket.
    ///
    /// # Errors
    /// The seconds to wait before a request will be allowed.
    pub fn request(&self, entity: &str) -> Result<(), u64> {
        let Ok(mut i) = self.inner.lock() else {
            return Ok(());
        };
        let (rate, burst) = (i.rate, i.burst);
        let now = Instant::now();
        let b = i.buckets.entry(entity.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if rate > 0.0 {
                (1.0 - b.tokens) / rate
            } else {
                60.0
            };
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// Reserves `n` bytes in flight for `entity`.
    ///
    /// # Errors
    /// When the entity already has too many bytes in flight (retry after a second).
    pub fn bytes(&self, entity: &str, n: usize) -> Result<BytesGuard, u64> {
        let Ok(mut i) = self.inner.lock() else {
            return Ok(BytesGuard {
                limiter: self.clone(),
                entity: entity.to_owned(),
                n: 0,
            });
        };
        let max = i.max_bytes;
        let used = i.bytes.entry(entity.to_owned()).or_insert(0);
        if *used > 0 && *used + n > max {
            return Err(1);
        }
        *used += n;
        Ok(BytesGuard {
            limiter: self.clone(),
            entity: entity.to_owned(),
            n,
        })
    }

    /// Opens one connection for `entity`, if it is under its limit.
    #[must_use]
    pub fn connect(&self, entity: &str) -> Option<ConnectionGuard> {
        let mut i = self.inner.lock().ok()?;
        let max = i.max_connections;
        let open = i.connections.entry(entity.to_owned()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(ConnectionGuard {
            limiter: self.clone(),
            entity: entity.to_owned(),
        })
    }
}

impl Drop for BytesGuard {
    fn drop(&mut self) {
        if let Ok(mut i) = self.limiter.inner.lock()
            && let Some(used) = i.bytes.get_mut(&self.entity)
        {
            *used = used.saturating_sub(self.n);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Ok(mut i) = self.limiter.inner.lock()
            && let Some(open) = i.connections.get_mut(&self.entity)
        {
            *open = open.saturating_sub(1);
        }
    }
}
