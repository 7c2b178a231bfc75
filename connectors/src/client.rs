//! The hub client any Rust program can use: it signs envelopes with the entity's key, submits
//! them over mutual TLS (retrying transient failures with the same envelope id, which the
//! hub's idempotency makes safe), checks the hub's signed receipt, waits for responses, and
//! leases, acknowledges and returns inbox envelopes — each verified before it is handed on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use snodo_broker::api::batch as wire_batch;
use snodo_broker::journal::VerifiedCheckpoints;
use snodo_broker::journal::receipt::{Receipt, ReceiptError};
use snodo_envelopes::{
    EntityId, Envelope, Format, Identity, Limits, Recipient, Signer, TrustStore, Verifier,
};
use uuid::Uuid;

use crate::inbound::{Inbound, Refusal};

/// The header that carries the receipt when the hub answers a request with its response.
const RECEIPT_HEADER: &str = "snodo-receipt";

/// The most envelopes [`HubClient::submit_all`] puts in one `POST /v1/envelopes/batch` (the hub
/// takes up to [`snodo_broker::api::batch::MAX_BATCH`]).
pub const BATCH_ENVELOPES: usize = 64;
/// The most signed bytes [`HubClient::submit_all`] puts in one batch: far below the hub's
/// default limits on a request's body (10 MiB) and on one sender's bytes in flight (64 MiB).
pub const BATCH_BYTES: usize = 1024 * 1024;

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The key, certificates or URL cannot make a client.
    #[error("hub client: {0}")]
    Setup(String),
    /// The hub could not be reached, or the connection broke (after every retry).
    #[error("{what}: the hub could not be reached: {detail}")]
    Unreachable {
        /// The call.
        what: String,
        /// What failed.
        detail: String,
    },
    /// The hub answered with a problem.
    #[error("{what}: the hub answered {status} {code}: {detail}")]
    Refused {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The problem's stable code (empty when the answer had none).
        code: String,
        /// The problem's detail.
        detail: String,
        /// How long the hub asked to wait, if it did.
        retry_after: Option<Duration>,
    },
    /// The hub answered something this client does not understand.
    #[error("{what}: unexpected answer from the hub: {detail}")]
    Protocol {
        /// The call.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The hub's receipt does not prove acceptance of this envelope.
    #[error("the receipt for envelope {envelope_id} does not verify: {source}")]
    Receipt {
        /// The envelope submitted.
        envelope_id: Uuid,
        /// Why the receipt fails.
        source: ReceiptError,
    },
    /// An envelope to send could not be signed, or is not this entity's to send.
    #[error("envelope: {0}")]
    Envelope(#[from] snodo_envelopes::Error),
    /// The response to a request failed verification; it was not handed on.
    #[error("the response to {request} was refused: {refusal}")]
    Response {
        /// The request's id.
        request: Uuid,
        /// Why.
        refusal: Refusal,
    },
}

impl ClientError {
    /// Whether trying again later may succeed: connection failures, 5xx, 429.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// Whether the same call will fail again whatever happens: a refusal, a bad receipt.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        !self.is_retryable()
    }

    /// The hub's problem code, when it answered with one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

/// How transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The first backoff; each next one doubles, with full jitter.
    pub initial: Duration,
    /// The longest backoff, and the longest `Retry-After` honoured.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

/// What a [`HubClient`] is made of: files of the entity and the federation.
#[derive(Clone, Debug)]
pub struct HubClientConfig {
    /// The hub's base URL, `https://host:port`.
    pub hub: String,
    /// The federation CA (PEM): the hub's TLS certificate, receipts and incoming envelopes
    /// are checked against it.
    pub ca: PathBuf,
    /// The CA's revocation list, applied to incoming envelopes' signers.
    pub crl: Option<PathBuf>,
    /// The entity's certificate (PEM): its TLS client certificate and signing certificate.
    pub cert: PathBuf,
    /// The entity's private key (PEM).
    pub key: PathBuf,
    /// The encoding of envelopes sent.
    pub format: Format,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// The longest a single HTTP exchange may take (a waiting request adds its wait).
    pub timeout: Duration,
}

impl HubClientConfig {
    /// A configuration with JSON envelopes, default retries and a 30 s timeout.
    #[must_use]
    pub fn new(hub: impl Into<String>, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        HubClientConfig {
            hub: hub.into(),
            ca,
            crl: None,
            cert,
            key,
            format: Format::Json,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A signed envelope ready to submit: its bytes never change, so every retry is the same
/// submission.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The envelope's id.
    pub id: Uuid,
    /// The encoding.
    pub format: Format,
    /// The signed bytes.
    pub bytes: Bytes,
}

/// The hub's answer to a submission.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// The receipt, verified: the hub's signed evidence of acceptance.
    pub receipt: Receipt,
    /// True when the hub had already accepted this id (an earlier attempt got through).
    pub duplicate: bool,
}

/// The outcome of a request that waits for its response.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The response came in time; both were verified.
    Response {
        /// The request's receipt.
        receipt: Receipt,
        /// The response envelope.
        response: Box<Inbound>,
    },
    /// No response in time (or the request was a retry the hub had already accepted): the
    /// response, when it comes, arrives in the inbox or by push.
    Pending {
        /// The request's receipt.
        receipt: Receipt,
    },
}

/// An envelope leased from the inbox, verified.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The lease token, for [`HubClient::ack`] and [`HubClient::nack`].
    pub lease: String,
    /// The envelope.
    pub inbound: Inbound,
}

#[derive(Deserialize)]
struct WireInbox {
    envelopes: Vec<WireLeased>,
}

#[derive(Deserialize)]
struct WireLeased {
    lease: String,
    envelope_id: Uuid,
    sender: String,
    envelope: String,
}

#[derive(Deserialize)]
struct WireResults {
    results: Vec<WireResult>,
}

#[derive(Deserialize)]
struct WireResult {
    status: u16,
    #[serde(default)]
    receipt: Option<Box<RawValue>>,
    #[serde(default)]
    problem: Option<Problem>,
}

/// The results of the answer `body` to a batch of `sent` envelopes, one per envelope.
fn batch_answers(what: &str, body: &[u8], sent: usize) -> Result<Vec<WireResult>, ClientError> {
    let protocol = |detail: String| ClientError::Protocol {
        what: what.to_owned(),
        detail,
    };
    let answer: WireResults = serde_json::from_slice(body)
        .map_err(|e| protocol(format!("not the answer to a batch: {e}")))?;
    if answer.results.len() != sent {
        return Err(protocol(format!(
            "{} results for {sent} envelopes",
            answer.results.len()
        )));
    }
    Ok(answer.results)
}

/// `signed` cut into the batches of [`HubClient::submit_all`], in order.
fn batches(signed: &[Signed]) -> Vec<&[Signed]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, s) in signed.iter().enumerate() {
        if i > start && (i - start == BATCH_ENVELOPES || bytes + s.bytes.len() > BATCH_BYTES) {
            out.push(&signed[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += s.bytes.len();
    }
    if start < signed.len() {
        out.push(&signed[start..]);
    }
    out
}

/// The error of a whole batch request, as each of its envelopes' (envelope `id`).
fn copy_error(e: &ClientError, id: Uuid) -> ClientError {
    let what = format!("POST /v1/envelopes/batch ({id})");
    match e {
        ClientError::Unreachable { detail, .. } => ClientError::Unreachable {
            what,
            detail: detail.clone(),
        },
        ClientError::Refused {
            status,
            code,
            detail,
            retry_after,
            ..
        } => ClientError::Refused {
            what,
            status: *status,
            code: code.clone(),
            detail: detail.clone(),
            retry_after: *retry_after,
        },
        other => ClientError::Protocol {
            what,
            detail: other.to_string(),
        },
    }
}

#[derive(Deserialize, Default)]
struct Problem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    detail: String,
}

/// A client of the hub for one entity. Clones share one connection pool.
#[derive(Clone, Debug)]
pub struct HubClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    /// Who this client is (its certificate's SAN).
    entity: EntityId,
    signer: Signer,
    verifier: Verifier,
    format: Format,
    retry: RetryPolicy,
    /// The hub's checkpoints already verified: the receipts of a batch share them.
    checkpoints: VerifiedCheckpoints,
}

impl HubClient {
    /// A client from `config`'s files.
    ///
    /// # Errors
    /// [`ClientError::Setup`] naming the file or value that cannot be used: an unreadable key
    /// or certificate, a key that does not match, a certificate naming no entity.
    pub fn new(config: &HubClientConfig) -> Result<Self, ClientError> {
        let setup =
            |what: &str, e: &dyn std::fmt::Display| ClientError::Setup(format!("{what}: {e}"));
        let tls = snodo_broker::tls::client_config(&config.ca, &config.cert, &config.key)
            .map_err(|e| setup("TLS", &e))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.timeout)
            .build()
            .map_err(|e| setup("HTTP client", &e))?;
        let signer = Signer::load(&config.key, &config.cert)
            .map_err(|e| setup(&config.key.display().to_string(), &e))?;
        let entity = match &signer.identity {
            Identity::Entity(e) => e.clone(),
            other => {
                return Err(ClientError::Setup(format!(
                    "{}: the certificate names {other}, not an entity",
                    config.cert.display()
                )));
            }
        };
        let trust = TrustStore::load(&config.ca, config.crl.as_deref())
            .map_err(|e| setup(&config.ca.display().to_string(), &e))?;
        if !config.hub.starts_with("https://") {
            return Err(ClientError::Setup(format!(
                "hub URL `{}` must start with https://",
                config.hub
            )));
        }
        Ok(HubClient {
            inner: Arc::new(Inner {
                http,
                base: config.hub.trim_end_matches('/').to_owned(),
                entity,
                signer,
                verifier: Verifier::new(Arc::new(trust), Limits::default()),
                format: config.format,
                retry: RetryPolicy {
                    attempts: config.retry.attempts.max(1),
                    ..config.retry
                },
                checkpoints: VerifiedCheckpoints::default(),
            }),
        })
    }

    /// The entity this client acts as.
    #[must_use]
    pub fn entity(&self) -> &EntityId {
        &self.inner.entity
    }

    /// The encoding of the envelopes this client signs.
    #[must_use]
    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// The verifier incoming envelopes pass through.
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Starts an envelope from this entity.
    pub fn envelope(
        &self,
        recipient: impl Into<Recipient>,
        service: impl Into<String>,
        action: impl Into<String>,
    ) -> snodo_envelopes::EnvelopeBuilder {
        Envelope::builder(self.inner.entity.clone(), recipient, service, action)
    }

    /// Signs `envelope` with the entity's key in the client's encoding.
    ///
    /// # Errors
    /// [`ClientError::Envelope`] when the envelope's sender is not this entity or signing fails.
    pub fn sign(&self, envelope: &Envelope) -> Result<Signed, ClientError> {
        if envelope.header.sender != self.inner.entity {
            return Err(ClientError::Envelope(
                snodo_envelopes::Error::InvalidField {
                    field: "sender",
                    reason: format!(
                        "{} cannot send as {}",
                        self.inner.entity, envelope.header.sender
                    ),
                },
            ));
        }
        let bytes = snodo_envelopes::sign(envelope, &self.inner.signer, self.inner.format)?;
        Ok(Signed {
            id: envelope.header.id,
            format: self.inner.format,
            bytes: Bytes::from(bytes),
        })
    }

    /// Signs and submits `envelope`; returns the hub's verified receipt.
    ///
    /// # Errors
    /// [`ClientError`]: a refusal by the hub (its code), the hub unreachable after every
    /// retry, or a receipt that does not verify.
    pub async fn submit(&self, envelope: &Envelope) -> Result<Submitted, ClientError> {
        let signed = self.sign(envelope)?;
        self.submit_signed(&signed).await
    }

    /// Submits an envelope signed earlier (by [`HubClient::sign`]).
    ///
    /// # Errors
    /// As [`HubClient::submit`].
    pub async fn submit_signed(&self, signed: &Signed) -> Result<Submitted, ClientError> {
        let resp = self.post_envelope(signed, None).await?;
        let duplicate = resp.status == 200;
        let receipt = self.receipt_from(signed, &resp.body)?;
        Ok(Submitted { receipt, duplicate })
    }

    /// Submits envelopes signed earlier, several to a request through
    /// `POST /v1/envelopes/batch`, in the order given: at most [`BATCH_ENVELOPES`] and about
    /// [`BATCH_BYTES`] in each. Returns one result per envelope, in order, each what
    /// [`HubClient::submit_signed`] would have given for it. Envelopes the hub turned away for
    /// a passing reason (429, 5xx) are sent again after the retry policy's backoff; a hub
    /// without the batch endpoint (404), or whose limit on a request's size refuses the batch
    /// (413), gets them one at a time. Once the hub could not be reached at all, the envelopes
    /// not yet sent are not tried: they get that error too.
    pub async fn submit_all(&self, signed: &[Signed]) -> Vec<Result<Submitted, ClientError>> {
        let mut results = Vec::with_capacity(signed.len());
        let mut down: Option<ClientError> = None;
        for chunk in batches(signed) {
            if let Some(e) = &down {
                results.extend(chunk.iter().map(|s| Err(copy_error(e, s.id))));
                continue;
            }
            let outcome = if chunk.len() == 1 {
                vec![self.submit_signed(&chunk[0]).await]
            } else {
                self.submit_batch(chunk).await
            };
            if let Some(Err(e @ ClientError::Unreachable { .. })) = outcome.last() {
                down = Some(copy_error(e, Uuid::nil()));
            }
            results.extend(outcome);
        }
        results
    }

    /// One batch of [`HubClient::submit_all`].
    async fn submit_batch(&self, signed: &[Signed]) -> Vec<Result<Submitted, ClientError>> {
        let url = format!("{}/v1/envelopes/batch", self.inner.base);
        let mut results: Vec<Option<Result<Submitted, ClientError>>> =
            signed.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..signed.len()).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let items: Vec<Vec<u8>> = pending
                .iter()
                .map(|&i| wire_batch::request_item(&signed[i].bytes, signed[i].format.media_type()))
                .collect();
            let body = Bytes::from(wire_batch::request_body_of(items.iter().map(Vec::as_slice)));
            let what = format!("POST /v1/envelopes/batch ({} envelopes)", pending.len());
            let reply = self
                .with_retries(&what, Duration::ZERO, || {
                    self.inner
                        .http
                        .post(&url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                })
                .await;
            let answers = match reply.and_then(|r| batch_answers(&what, &r.body, pending.len())) {
                Ok(answers) => answers,
                Err(ClientError::Refused {
                    status: 404 | 413, ..
                }) => {
                    for &i in &pending {
                        results[i] = Some(self.submit_signed(&signed[i]).await);
                    }
                    break;
                }
                Err(e) => {
                    for &i in &pending {
                        results[i] = Some(Err(copy_error(&e, signed[i].id)));
                    }
                    break;
                }
            };
            let mut again = Vec::new();
            for (&i, answer) in pending.iter().zip(answers) {
                let result = self.batch_result(&signed[i], answer);
                if matches!(&result, Err(e) if e.is_retryable()) {
                    again.push(i);
                }
                results[i] = Some(result);
            }
            if again.is_empty() || attempt >= self.inner.retry.attempts {
                break;
            }
            let policy = self.inner.retry;
            let wait = snodo_broker::delivery::backoff(attempt, policy.initial, policy.max);
            tracing::info!(%what, attempt, ?wait, turned_away = again.len(), "Retrying the envelopes the hub turned away for now.");
            tokio::time::sleep(wait).await;
            pending = again;
        }
        results
            .into_iter()
            .zip(signed)
            .map(|(r, s)| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Protocol {
                        what: format!("POST /v1/envelopes/batch ({})", s.id),
                        detail: "no result for this envelope".into(),
                    })
                })
            })
            .collect()
    }

    /// One envelope's result in the answer to a batch, as [`HubClient::submit_signed`] gives
    /// it: its receipt verified, or the hub's refusal.
    fn batch_result(&self, signed: &Signed, answer: WireResult) -> Result<Submitted, ClientError> {
        let what = format!("POST /v1/envelopes/batch ({})", signed.id);
        match (answer.status, answer.receipt) {
            (200 | 202, Some(receipt)) => Ok(Submitted {
                receipt: self.receipt_from(signed, receipt.get().as_bytes())?,
                duplicate: answer.status == 200,
            }),
            (200 | 202, None) => Err(ClientError::Protocol {
                what,
                detail: format!("status {} without a receipt", answer.status),
            }),
            (status, _) => {
                let problem = answer.problem.unwrap_or_default();
                Err(ClientError::Refused {
                    what,
                    status,
                    code: problem.code,
                    detail: problem.detail,
                    retry_after: None,
                })
            }
        }
    }

    /// Signs and submits a request, waiting up to `wait` (bounded by the hub) for the
    /// response, which is verified like every incoming envelope.
    ///
    /// # Errors
    /// As [`HubClient::submit`]; [`ClientError::Response`] when a response came but failed
    /// verification or does not answer this request.
    pub async fn request(
        &self,
        envelope: &Envelope,
        wait: Duration,
    ) -> Result<Answer, ClientError> {
        let signed = self.sign(envelope)?;
        self.request_signed(envelope, &signed, wait).await
    }

    /// [`HubClient::request`] for an envelope signed earlier.
    ///
    /// # Errors
    /// As [`HubClient::request`].
    pub async fn request_signed(
        &self,
        envelope: &Envelope,
        signed: &Signed,
        wait: Duration,
    ) -> Result<Answer, ClientError> {
        let resp = self.post_envelope(signed, Some(wait)).await?;
        let is_receipt = resp
            .content_type
            .split(';')
            .next()
            .is_some_and(|m| m.trim() == "application/json");
        if is_receipt {
            let receipt = self.receipt_from(signed, &resp.body)?;
            return Ok(Answer::Pending { receipt });
        }
        let Some(encoded) = resp.receipt_header else {
            return Err(ClientError::Protocol {
                what: "POST /v1/envelopes?wait".into(),
                detail: format!("a response without the {RECEIPT_HEADER} header"),
            });
        };
        let receipt_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|e| ClientError::Protocol {
                what: "POST /v1/envelopes?wait".into(),
                detail: format!("the {RECEIPT_HEADER} header is not base64url: {e}"),
            })?;
        let receipt = self.receipt_from(signed, &receipt_json)?;
        let refuse = |refusal| ClientError::Response {
            request: signed.id,
            refusal,
        };
        let response =
            Inbound::verify(&self.inner.verifier, &self.inner.entity, resp.body).map_err(refuse)?;
        let h = &response.envelope.header;
        if h.in_reply_to != Some(signed.id)
            || Recipient::Entity(h.sender.clone()) != envelope.header.recipient
        {
            return Err(refuse(Refusal {
                code: "response-mismatch",
                detail: format!(
                    "envelope {} from {} does not answer request {} to {}",
                    h.id, h.sender, signed.id, envelope.header.recipient
                ),
            }));
        }
        Ok(Answer::Response {
            receipt,
            response: Box::new(response),
        })
    }

    fn receipt_from(&self, signed: &Signed, body: &[u8]) -> Result<Receipt, ClientError> {
        let bad = |source| ClientError::Receipt {
            envelope_id: signed.id,
            source,
        };
        let receipt = Receipt::from_json(body).map_err(bad)?;
        receipt
            .verify_cached(
                self.inner.verifier.trust(),
                Some(&signed.bytes),
                &self.inner.checkpoints,
            )
            .map_err(bad)?;
        if receipt.envelope_id != signed.id || receipt.sender != self.inner.entity.as_str() {
            return Err(bad(ReceiptError::Mismatch {
                field: "envelope_id",
                receipt: format!("{} from {}", receipt.envelope_id, receipt.sender),
                entry: format!("{} from {}", signed.id, self.inner.entity),
            }));
        }
        Ok(receipt)
    }

    async fn post_envelope(
        &self,
        signed: &Signed,
        wait: Option<Duration>,
    ) -> Result<Reply, ClientError> {
        let mut url = format!("{}/v1/envelopes", self.inner.base);
        if let Some(w) = wait {
            url.push_str(&format!("?wait={}ms", w.as_millis()));
        }
        let what = format!("POST /v1/envelopes ({})", signed.id);
        self.with_retries(&what, wait.unwrap_or_default(), || {
            self.inner
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, signed.format.media_type())
                .body(signed.bytes.clone())
        })
        .await
    }

    /// Leases up to `limit` envelopes of the inbox for `lease`. Each is verified; one that
    /// fails is logged and returned to the hub (nack), never handed on.
    ///
    /// # Errors
    /// [`ClientError`] when the hub cannot be reached or refuses.
    pub async fn lease(&self, limit: usize, lease: Duration) -> Result<Vec<Delivery>, ClientError> {
        self.lease_waiting(limit, lease, Duration::ZERO).await
    }

    /// As [`HubClient::lease`], and when the inbox is empty the hub holds the request for up
    /// to `wait` (its `limits.max_wait` at most) and answers as soon as envelopes arrive: a
    /// long poll, which costs the hub nothing while the inbox stays empty.
    ///
    /// # Errors
    /// As [`HubClient::lease`].
    pub async fn lease_waiting(
        &self,
        limit: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ClientError> {
        let mut url = format!(
            "{}/v1/inbox?limit={limit}&lease={}ms",
            self.inner.base,
            lease.as_millis()
        );
        if !wait.is_zero() {
            url.push_str(&format!("&wait={}ms", wait.as_millis()));
        }
        let what = "GET /v1/inbox";
        let reply = self
            .with_retries(what, wait, || self.inner.http.get(&url))
            .await?;
        let inbox: WireInbox =
            serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol {
                what: what.into(),
                detail: e.to_string(),
            })?;
        // Signature checks are CPU work (libxmlsec1 for XML): off the reactor.
        let verifier = self.inner.verifier.clone();
        let me = self.inner.entity.clone();
        let checked = tokio::task::spawn_blocking(move || {
            inbox
                .envelopes
                .into_iter()
                .map(|mut item| {
                    let raw = Bytes::from(std::mem::take(&mut item.envelope).into_bytes());
                    let verdict = Inbound::verify(&verifier, &me, raw);
                    (item, verdict)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ClientError::Protocol {
            what: what.into(),
            detail: format!("verification task: {e}"),
        })?;
        let mut out = Vec::with_capacity(checked.len());
        for (item, verdict) in checked {
            match verdict {
                Ok(inbound) => out.push(Delivery {
                    lease: item.lease,
                    inbound,
                }),
                Err(refusal) => {
                    tracing::error!(
                        envelope_id = %item.envelope_id,
                        sender = %item.sender,
                        code = refusal.code,
                        detail = %refusal.detail,
                        "Incoming envelope refused: it failed verification and goes back to the hub."
                    );
                    if let Err(e) = self.nack(&item.lease).await {
                        tracing::warn!(envelope_id = %item.envelope_id, error = %e, "Refused envelope not returned; its lease will lapse.");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Acknowledges a leased envelope: delivered for good.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with code `lease-unknown` when the lease has lapsed (the
    /// envelope will be delivered again); otherwise as any call.
    pub async fn ack(&self, lease: &str) -> Result<(), ClientError> {
        self.settle("ack", lease).await
    }

    /// Returns a leased envelope to the inbox at once.
    ///
    /// # Errors
    /// As [`HubClient::ack`].
    pub async fn nack(&self, lease: &str) -> Result<(), ClientError> {
        self.settle("nack", lease).await
    }

    async fn settle(&self, verb: &str, lease: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/inbox/{verb}", self.inner.base);
        let body = serde_json::json!({ "lease": lease });
        self.with_retries(&format!("POST /v1/inbox/{verb}"), Duration::ZERO, || {
            self.inner.http.post(&url).json(&body)
        })
        .await
        .map(|_| ())
    }

    /// Sends what `build` makes until a 2xx, retrying connection failures, 5xx and 429 (after
    /// `Retry-After` when given) with exponential backoff and full jitter.
    async fn with_retries(
        &self,
        what: &str,
        extra_time: Duration,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, ClientError> {
        let policy = self.inner.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build();
            if !extra_time.is_zero() {
                request = request.timeout(extra_time + Duration::from_secs(30));
            }
            let error = match request.send().await {
                Ok(resp) => match Reply::read(what, resp).await {
                    Ok(reply) => return Ok(reply),
                    Err(e) => e,
                },
                Err(e) => ClientError::Unreachable {
                    what: what.to_owned(),
                    detail: error_chain(&e),
                },
            };
            if !error.is_retryable() || attempt >= policy.attempts {
                return Err(error);
            }
            let backoff = snodo_broker::delivery::backoff(attempt, policy.initial, policy.max);
            let wait = match &error {
                ClientError::Refused {
                    retry_after: Some(after),
                    ..
                } => (*after).min(policy.max),
                _ => backoff,
            };
            tracing::info!(%what, attempt, ?wait, error = %error, "Retrying.");
            tokio::time::sleep(wait).await;
        }
    }
}

/// A 2xx answer, read whole.
struct Reply {
    status: u16,
    content_type: String,
    receipt_header: Option<String>,
    body: Bytes,
}

impl Reply {
    async fn read(what: &str, resp: reqwest::Response) -> Result<Reply, ClientError> {
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE.as_str()).unwrap_or_default();
        let receipt_header = header(RECEIPT_HEADER);
        let retry_after = header(reqwest::header::RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let success = resp.status().is_success();
        let body = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            what: what.to_owned(),
            detail: format!("reading the answer: {}", error_chain(&e)),
        })?;
        if success {
            return Ok(Reply {
                status,
                content_type,
                receipt_header,
                body,
            });
        }
        let problem: Problem = serde_json::from_slice(&body).unwrap_or_else(|_| Problem {
            code: String::new(),
            detail: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
        Err(ClientError::Refused {
            what: what.to_owned(),
            status,
            code: problem.code,
            detail: problem.detail,
            retry_after,
        })
    }
}

/// An error with its sources, for a log line that says what really happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retryable_and_refusals_are_not() {
        let refused = |status| ClientError::Refused {
            what: "x".into(),
            status,
            code: "c".into(),
            detail: String::new(),
            retry_after: None,
        };
        assert!(refused(503).is_retryable());
        assert!(refused(429).is_retryable());
        assert!(refused(500).is_retryable());
        assert!(refused(403).is_permanent());
        assert!(refused(409).is_permanent());
        assert_eq!(refused(403).code(), Some("c"));
        assert!(
            ClientError::Unreachable {
                what: "x".into(),
                detail: "refused".into()
            }
            .is_retryable()
        );
    }
}
