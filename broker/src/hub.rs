//! The hub's shared state (configuration, registry, verifier, engine, limits, metrics) and the
//! acceptance pipeline of DESIGN.md, step by step.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use snodo_envelopes::{EntityId, Format, Identity, Profile, Recipient, Verifier};

use crate::api::error::ApiError;
use crate::config::Config;
use crate::engine::{Accepted, Engine, Leased, RefusalRecord, Submission, Waiter};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Value;

/// What may change on reload: the registry and the trust material.
#[derive(Debug)]
struct Current {
    config: Arc<Config>,
    registry: Arc<Registry>,
    verifier: Verifier,
    /// The partner listener's TLS configuration (CA, revocation list, hub certificate): built
    /// with the rest, so that a reloaded revocation list refuses the revoked at the next
    /// handshake.
    tls: Arc<rustls::ServerConfig>,
    /// When the hub's certificate and the CA's expire (unix seconds), for readiness.
    expiries: Vec<(&'static str, i64)>,
}

/// Envelopes up to this size are verified on the request's worker thread: the hand-off to the
/// blocking pool would cost about as much as the check.
const INLINE_VERIFY_BYTES: usize = 16 * 1024;

/// Readiness fails this long before a certificate expires.
const EXPIRY_WARNING_SECS: i64 = 7 * 86_400;

/// An envelope that passed [`Hub::check`], for [`Hub::admit`].
#[derive(Debug)]
pub struct Checked {
    submission: Submission,
    /// For a request submitted with `wait`: where its response arrives, and how long to wait.
    waiter: Option<(Waiter, Duration)>,
}

/// Everything the API handlers share.
#[derive(Debug)]
pub struct Hub {
    current: RwLock<Current>,
    /// The file the configuration was read from, for reloads.
    config_path: Option<PathBuf>,
    /// The single writer.
    pub engine: Engine,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Per-entity request rate and bytes in flight.
    pub limiter: Limiter,
    /// Set to `true` when shutdown begins. The listeners and delivery watch it, and so do
    /// requests waiting for their response, which then answer with their receipt.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The amqp transport, when `transport.kind = "amqp"`; queues are in the store otherwise.
    pub transport: Option<Arc<crate::amqp::Amqp>>,
    /// Talks to peer nodes with this node's certificate (made at first use).
    peer_client: std::sync::OnceLock<reqwest::Client>,
}

/// The outcome of a submission that was not refused.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted (new or duplicate).
    Accepted(Accepted),
    /// Accepted, and the response to this request arrived within `?wait`.
    Answered(Accepted, Leased),
}

impl Hub {
    /// A hub over `engine`, configured by `config`.
    ///
    /// # Errors
    /// A message when the trust material cannot be loaded.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        engine: Engine,
    ) -> anyhow::Result<Self> {
        let current = Self::load(config)?;
        let limiter = Limiter::new(&current.config.limits);
        Ok(Hub {
            current: RwLock::new(current),
            config_path,
            engine,
            metrics: Metrics::new(),
            limiter,
            stopping: tokio::sync::watch::Sender::new(false),
            transport: None,
            peer_client: std::sync::OnceLock::new(),
        })
    }

    /// The mutual-TLS client with which this node asks its peers, on behalf of its callers.
    ///
    /// # Errors
    /// When the node's TLS material cannot make a client.
    pub fn peer_client(&self) -> anyhow::Result<reqwest::Client> {
        if let Some(c) = self.peer_client.get() {
            return Ok(c.clone());
        }
        let config = self.config();
        let tls = crate::tls::client_config(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(self.peer_client.get_or_init(|| client).clone())
    }

    /// This hub, delivering through RabbitMQ.
    #[must_use]
    pub fn with_transport(mut self, amqp: Arc<crate::amqp::Amqp>) -> Self {
        self.transport = Some(amqp);
        self
    }

    fn load(config: Config) -> anyhow::Result<Current> {
        let tls = config.load_tls()?;
        let verifier = Verifier::new(Arc::new(tls.trust), config.limits.envelope_limits());
        let server_tls = Arc::new(crate::tls::server_config(
            &config.tls.ca,
            config.tls.crl.as_deref(),
            &config.tls.cert,
            &config.tls.key,
        )?);
        let mut expiries = Vec::new();
        for (what, path) in [
            ("hub certificate", &config.tls.cert),
            ("CA certificate", &config.tls.ca),
        ] {
            let cert = snodo_envelopes::pki::load_cert(path)?;
            let epoch = openssl::asn1::Asn1Time::from_unix(0)?;
            let d = epoch.diff(cert.not_after())?;
            expiries.push((what, i64::from(d.days) * 86_400 + i64::from(d.secs)));
        }
        Ok(Current {
            registry: Arc::new(Registry::from_config(&config)),
            verifier,
            tls: server_tls,
            config: Arc::new(config),
            expiries,
        })
    }

    /// Reads the configuration file again and applies it; settings that need a restart
    /// (addresses, data directory, name) are kept and reported.
    ///
    /// # Errors
    /// The configuration error naming the bad field; the configuration in force stays.
    pub fn reload_from_file(&self) -> anyhow::Result<String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this hub was not started from a file"))?;
        let new = Config::load(path)?;
        let old = self.config();
        let kept = old.restart_required(&new);
        let summary = new.summary();
        self.reload(new)?;
        if kept.is_empty() {
            Ok(summary)
        } else {
            Ok(format!(
                "{summary}; changes to {} take effect at the next restart",
                kept.join(", ")
            ))
        }
    }

    /// Why the hub is not ready, if it is not: store not writable, a certificate near expiry.
    #[must_use]
    pub fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.engine.store().is_writable() {
            problems.push("the store is not writable".to_owned());
        }
        if let Some(why) = self.transport.as_ref().and_then(|t| t.unavailable()) {
            problems.push(format!("RabbitMQ is not usable: {why}"));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let expiries = self
            .current
            .read()
            .map(|c| c.expiries.clone())
            .unwrap_or_default();
        for (what, at) in expiries {
            if at - now < EXPIRY_WARNING_SECS {
                problems.push(format!(
                    "the {what} expires at {}",
                    snodo_envelopes::header::format_time(
                        time::OffsetDateTime::from_unix_timestamp(at)
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                    )
                ));
            }
        }
        problems
    }

    /// Replaces the registry and trust material with those of `config` (already checked).
    ///
    /// # Errors
    /// A message when the new trust material cannot be loaded; the old one stays.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        let next = Self::load(config)?;
        self.limiter.reconfigure(&next.config.limits);
        if let Ok(mut cur) = self.current.write() {
            *cur = next;
        }
        if let Some(t) = &self.transport {
            // New entities need their queues, new subscriptions their bindings.
            t.registry_changed();
        }
        Ok(())
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.current
            .read()
            .map(|c| c.config.clone())
            .unwrap_or_else(|p| p.into_inner().config.clone())
    }

    /// The registry in force.
    #[must_use]
    pub fn registry(&self) -> Arc<Registry> {
        self.current
            .read()
            .map(|c| c.registry.clone())
            .unwrap_or_else(|p| p.into_inner().registry.clone())
    }

    /// The TLS configuration that the partner listener hands each new connection.
    #[must_use]
    pub fn tls_config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .map(|c| c.tls.clone())
            .unwrap_or_else(|p| p.into_inner().tls.clone())
    }

    /// Checks that a client certificate is still valid and not revoked (cached chain check).
    ///
    /// # Errors
    /// The envelopes crate's certificate error (`certificate-revoked`, `certificate-expired`…).
    pub fn check_certificate(&self, der: &[u8]) -> Result<(), snodo_envelopes::Error> {
        self.verifier()
            .trust()
            .verify_cert(der, &[], time::OffsetDateTime::now_utc())
            .map(|_| ())
    }

    fn verifier(&self) -> Verifier {
        self.current
            .read()
            .map(|c| c.verifier.clone())
            .unwrap_or_else(|p| p.into_inner().verifier.clone())
    }

    /// Takes one request from `entity`'s rate.
    ///
    /// # Errors
    /// `rate-limited` (429) with the seconds to wait.
    pub fn rate(&self, entity: &str) -> Result<(), ApiError> {
        self.limiter.request(entity).map_err(|s| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("{entity} sends more than its request rate"),
            )
            .retry_after(s)
        })
    }

    /// Counts `n` bytes in flight for `entity` until the guard is dropped.
    ///
    /// # Errors
    /// `too-many-bytes-in-flight` (429) with the seconds to wait.
    pub fn bytes_in_flight(
        &self,
        entity: &str,
        n: usize,
    ) -> Result<crate::limits::BytesGuard, ApiError> {
        self.limiter.bytes(entity, n).map_err(|s| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-bytes-in-flight",
                format!("{entity} has too many bytes in flight"),
            )
            .retry_after(s)
        })
    }

    /// The acceptance pipeline for `body` submitted by `caller` as `media_type`, waiting up to
    /// `wait` for the response when the envelope is a request: [`Hub::check`], then
    /// [`Hub::admit`].
    ///
    /// # Errors
    /// The [`ApiError`] of the first step that refuses; every refusal is journaled.
    pub async fn submit(
        &self,
        caller: &Identity,
        media_type: Option<&str>,
        body: bytes::Bytes,
        wait: Option<Duration>,
    ) -> Result<Outcome, ApiError> {
        let checked = self.check(caller, media_type, body, wait).await?;
        self.admit(checked).await
    }

    /// Steps 1 to 5 of the pipeline: media type, signature and certificate chain, transport
    /// identity, expiry, the registry's permission, the body's schema. A batch checks all its
    /// envelopes before it admits any, so that they reach the engine together and share one
    /// group commit (one checkpoint signature, one fsync).
    ///
    /// # Errors
    /// The [`ApiError`] of the first step that refuses; every refusal is journaled.
    pub async fn check(
        &self,
        caller: &Identity,
        media_type: Option<&str>,
        body: bytes::Bytes,
        wait: Option<Duration>,
    ) -> Result<Checked, ApiError> {
        let digest = snodo_envelopes::sha256(&body);
        let refuse = |e: ApiError, header: Option<&snodo_envelopes::Header>| {
            self.refused(caller, &digest, &e, header);
            e
        };
        // Only entities submit envelopes.
        let Identity::Entity(caller_entity) = caller else {
            return Err(refuse(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "caller-not-an-entity",
                    format!("{caller} may not submit envelopes"),
                ),
                None,
            ));
        };
        // 1. Size and syntax: the media type names the encoding the body is in.
        let format = Format::sniff(&body);
        let expected = match media_type.map(|m| m.split(';').next().unwrap_or("").trim()) {
            Some("application/xml" | "text/xml") => Format::Xml,
            Some("application/jose+json" | "application/json") => Format::Json,
            other => {
                return Err(refuse(
                    ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported-media-type",
                        format!(
                            "Content-Type {other:?} is not application/xml or application/jose+json"
                        ),
                    ),
                    None,
                ));
            }
        };
        if format != Some(expected) {
            return Err(refuse(
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "media-type-mismatch",
                    format!("the body is not {}", expected.media_type()),
                ),
                None,
            ));
        }
        // 2. Signature and certificate chain: a small envelope (tens of microseconds) on this
        // worker, a big one on the blocking pool, off the reactor.
        let verifier = self.verifier();
        let verified = if body.len() <= INLINE_VERIFY_BYTES {
            verifier.verify(&body)
        } else {
            let body_for_check = body.clone();
            tokio::task::spawn_blocking(move || verifier.verify(&body_for_check))
                .await
                .map_err(|e| ApiError::internal(&e))?
        }
        .map_err(|e| refuse(ApiError::from(&e), None))?;
        let header = &verified.envelope.header;
        // 3. Transport identity equals signed sender.
        if header.sender != *caller_entity {
            return Err(refuse(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "transport-identity-mismatch",
                    format!(
                        "the envelope is signed by {} but submitted by {caller_entity}",
                        header.sender
                    ),
                ),
                Some(header),
            ));
        }
        // Expired envelopes are never accepted.
        if header.is_expired(time::OffsetDateTime::now_utc()) {
            return Err(refuse(
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "envelope-expired",
                    "the envelope's expires_at has passed",
                ),
                Some(header),
            ));
        }
        // 4. The registry allows sender -> recipient for this service/action.
        let registry = self.registry();
        let schema = match registry.authorize(
            &header.sender,
            &header.recipient,
            &header.service,
            &header.action,
            header.profile,
        ) {
            Ok(action) => action.schema,
            Err(r) => return Err(refuse(ApiError::from(&r), Some(header))),
        };
        let recipients: Vec<EntityId> = match &header.recipient {
            Recipient::Entity(e) => vec![e.clone()],
            Recipient::Broadcast => registry
                .subscribers(&header.service, &header.action)
                .iter()
                .filter(|s| **s != header.sender)
                .cloned()
                .collect(),
        };
        // 5. The body validates against the schema the registry names for this action.
        crate::validate::body(schema, &verified.envelope.body, body.len())
            .await
            .map_err(|e| refuse(e, Some(header)))?;
        // 6-8. Duplicate check, durable write, receipt: the engine.
        let waiter = match (header.profile, wait) {
            (Profile::Request, Some(w)) if !w.is_zero() => {
                Some((self.engine.waiter(&header.sender, header.id), w))
            }
            _ => None,
        };
        let submission = Submission {
            header: header.clone(),
            raw: Value::from(&body[..]),
            digest,
            format: verified.format,
            recipients,
        };
        Ok(Checked { submission, waiter })
    }

    /// Steps 6 to 8 of the pipeline for a checked envelope: the duplicate check, the durable
    /// write and the receipt (with the amqp transport, after RabbitMQ's confirm); then, for a
    /// request submitted with `wait`, the response if it comes in time.
    ///
    /// # Errors
    /// `service-unavailable` (503) when RabbitMQ is unreachable; the engine's errors.
    pub async fn admit(&self, checked: Checked) -> Result<Outcome, ApiError> {
        let Checked { submission, waiter } = checked;
        // With RabbitMQ unreachable nothing could be confirmed: say so before journaling.
        if let Some(t) = &self.transport
            && t.link().is_none()
        {
            return Err(crate::amqp::unavailable(t));
        }
        let started = std::time::Instant::now();
        let (accepted, outbound) = self.engine.admit(submission).await?;
        self.metrics.durable(started.elapsed().as_secs_f64());
        if let (Some(t), Some(out)) = (&self.transport, outbound) {
            // No receipt before RabbitMQ confirmed every copy. The outbox keeps the envelope
            // and publishes it again; the client's retry (same id) gets the receipt then.
            let started = std::time::Instant::now();
            t.publish(self, &out, true)
                .await
                .map_err(|e| crate::amqp::unavailable_because(&e))?;
            self.metrics.confirmed(started.elapsed().as_secs_f64());
        }
        self.metrics.accepted(&accepted);
        match (waiter, &accepted) {
            (Some((waiter, wait)), Accepted::New(_)) => {
                // At shutdown the request stops waiting and gets its receipt, as if nobody had
                // answered in time, rather than hold up the drain until it cuts the answer.
                let mut stopping = self.stopping.subscribe();
                let response = tokio::select! {
                    response = waiter.wait(wait) => response,
                    _ = stopping.wait_for(|s| *s) => None,
                };
                match response {
                    Some(response) => Ok(Outcome::Answered(accepted, response)),
                    None => Ok(Outcome::Accepted(accepted)),
                }
            }
            _ => Ok(Outcome::Accepted(accepted)),
        }
    }

    /// Journals and counts a refusal.
    pub fn refused(
        &self,
        caller: &Identity,
        digest: &[u8; 32],
        e: &ApiError,
        header: Option<&snodo_envelopes::Header>,
    ) {
        self.metrics.refused(e.code);
        if e.status.is_server_error() {
            return;
        }
        let mut r = RefusalRecord {
            caller: Some(caller.to_string()),
            digest: *digest,
            code: e.code.to_owned(),
            detail: e.detail.clone(),
            ..RefusalRecord::default()
        };
        if let Some(h) = header {
            r.envelope_id = Some(h.id);
            r.sender = Some(h.sender.to_string());
            r.recipient = Some(h.recipient.to_string());
            r.service = Some(h.service.clone());
            r.action = Some(h.action.clone());
            r.conversation = Some(h.conversation.clone());
        }
        self.engine.refuse(r);
    }
}
