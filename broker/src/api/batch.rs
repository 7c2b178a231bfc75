//! `POST /v1/envelopes/batch`: several signed envelopes in one request, each through the
//! acceptance pipeline of `POST /v1/envelopes` on its own (accepted, a duplicate, or refused
//! with its code), answered together. One request, one TLS record stream and one handler run
//! for up to [`MAX_BATCH`] envelopes: what a partner with many messages to send (a registry feed,
//! a night's notices) pays per envelope is the pipeline, not the request.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Caller;
use super::error::ApiError;
use crate::engine::Accepted;
use crate::hub::{Hub, Outcome};
use crate::journal::receipt::Receipt;

/// The most envelopes one batch may hold.
pub const MAX_BATCH: usize = 100;

/// Body of `POST /v1/envelopes/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The envelopes, each as its exact signed text.
    pub envelopes: Vec<Item>,
}

/// One envelope of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// `application/xml` or `application/jose+json`, as the `Content-Type` of a single
    /// submission.
    pub media_type: String,
    /// The signed envelope; its UTF-8 bytes are the bytes received, digested and journaled.
    pub envelope: String,
}

/// The answer to a batch: one result per envelope, in the order sent.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Each envelope's outcome.
    pub results: Vec<ItemResult>,
}

/// One envelope's outcome: the status a single submission would have had, with its receipt
/// (202 accepted, 200 a duplicate) or its problem (any refusal).
#[derive(Debug, Serialize)]
pub struct ItemResult {
    /// 202, 200, or the refusal's status.
    pub status: u16,
    /// The receipt, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The refusal, as the problem document a single submission would have had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<serde_json::Value>,
}

/// The body of a batch request for `envelopes` (each its exact signed text), as a client
/// writes it: straight from the bytes, with no copy into an intermediate JSON value.
/// Envelopes that are not UTF-8 text go as empty strings, which the hub refuses.
#[must_use]
pub fn request_body<'a>(
    envelopes: impl IntoIterator<Item = &'a [u8]>,
    media_type: &str,
) -> Vec<u8> {
    let items: Vec<Vec<u8>> = envelopes
        .into_iter()
        .map(|e| request_item(e, media_type))
        .collect();
    request_body_of(items.iter().map(Vec::as_slice))
}

/// One envelope as an item of a batch request, `{"media_type":…,"envelope":…}`: the JSON
/// escaping of its text, done once by a client that prepares its envelopes in advance (a load
/// generator) and joined into requests by [`request_body_of`].
#[must_use]
pub fn request_item(envelope: &[u8], media_type: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ItemOut<'a> {
        media_type: &'a str,
        envelope: &'a str,
    }
    serde_json::to_vec(&ItemOut {
        media_type,
        envelope: std::str::from_utf8(envelope).unwrap_or_default(),
    })
    .unwrap_or_default()
}

/// The body of a batch request for `items`, each made by [`request_item`].
#[must_use]
pub fn request_body_of<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = br#"{"envelopes":["#.to_vec();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Each envelope's status and problem code (empty when it has none) in the answer to a batch,
/// as a client reads it: the receipts are skipped over, not parsed. Empty when `body` is not
/// such an answer.
#[must_use]
pub fn answer_statuses(body: &[u8]) -> Vec<(u16, String)> {
    #[derive(Deserialize)]
    struct Answer {
        results: Vec<Status>,
    }
    #[derive(Deserialize)]
    struct Status {
        status: u16,
        problem: Option<Problem>,
    }
    #[derive(Deserialize)]
    struct Problem {
        code: Option<String>,
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.results)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.status, r.problem.and_then(|p| p.code).unwrap_or_default()))
        .collect()
}

/// Submits a batch of signed envelopes.
///
/// # Errors
/// An [`ApiError`] when the batch itself is refused (not JSON, empty, too many envelopes, too
/// large); refusals of single envelopes are results.
pub async fn submit(
    State(hub): State<Arc<Hub>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Json<Results>, ApiError> {
    let started = Instant::now();
    let entity = caller.entity()?.to_string();
    let limit = hub.config().limits.max_envelope_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "envelope-too-large",
            format!("the batch is larger than {limit} bytes"),
        )
    })?;
    let batch: Batch = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "batch-malformed",
            format!(
                "the batch is not {{\"envelopes\": [{{\"media_type\", \"envelope\"}}, …]}}: {e}"
            ),
        )
    })?;
    if batch.envelopes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "batch-malformed",
            "the batch holds no envelopes",
        ));
    }
    if batch.envelopes.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            format!(
                "the batch holds {} envelopes; at most {MAX_BATCH}",
                batch.envelopes.len()
            ),
        ));
    }
    let _in_flight = hub.bytes_in_flight(&entity, bytes.len())?;
    drop(bytes);
    // Every envelope counts against the sender's request rate, as if sent alone. All of them
    // are checked before any is admitted: the engine then gets them together, in one group
    // commit, instead of one or two as each signature is verified.
    let checked = batch.envelopes.into_iter().map(|item| {
        let (hub, caller, entity) = (&hub, &caller, &entity);
        async move {
            hub.rate(entity)?;
            hub.check(
                &caller.0,
                Some(&item.media_type),
                bytes::Bytes::from(item.envelope),
                None,
            )
            .await
        }
    });
    let checked = futures_util::future::join_all(checked).await;
    let outcomes = checked.into_iter().map(|checked| {
        let hub = &hub;
        async move { hub.admit(checked?).await }
    });
    let outcomes = futures_util::future::join_all(outcomes).await;
    let seconds = started.elapsed().as_secs_f64();
    let results = outcomes
        .into_iter()
        .map(|outcome| {
            hub.metrics.latency(seconds);
            let accepted = match outcome {
                // Without `wait`, never answered: accepted all the same.
                Ok(Outcome::Accepted(a) | Outcome::Answered(a, _)) => Ok(a),
                Err(e) => Err(e),
            };
            match accepted {
                Ok(Accepted::New(r)) => ItemResult {
                    status: StatusCode::ACCEPTED.as_u16(),
                    receipt: Some(r),
                    problem: None,
                },
                Ok(Accepted::Duplicate(r)) => ItemResult {
                    status: StatusCode::OK.as_u16(),
                    receipt: Some(r),
                    problem: None,
                },
                Err(e) => ItemResult {
                    status: e.status.as_u16(),
                    receipt: None,
                    problem: Some(e.problem()),
                },
            }
        })
        .collect();
    Ok(Json(Results { results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_body_is_what_the_hub_reads_and_its_answer_reads_back() {
        let envelopes: [&[u8]; 2] = [br#"{"protected":"a\"b"}"#, b"<Envelope/>\n"];
        let body = request_body(envelopes, "application/jose+json");
        let batch: Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!(batch.envelopes.len(), 2);
        assert_eq!(batch.envelopes[0].envelope.as_bytes(), envelopes[0]);
        assert_eq!(batch.envelopes[1].envelope.as_bytes(), envelopes[1]);
        assert_eq!(batch.envelopes[1].media_type, "application/jose+json");
        let items: Vec<Vec<u8>> = envelopes
            .iter()
            .map(|e| request_item(e, "application/jose+json"))
            .collect();
        assert_eq!(request_body_of(items.iter().map(Vec::as_slice)), body);
        assert_eq!(
            serde_json::from_slice::<Batch>(&request_body_of([]))
                .unwrap()
                .envelopes
                .len(),
            0
        );

        let answer = Results {
            results: vec![
                ItemResult {
                    status: 200,
                    receipt: None,
                    problem: None,
                },
                ItemResult {
                    status: 403,
                    receipt: None,
                    problem: Some(serde_json::json!({"code": "sender-not-allowed", "title": "x"})),
                },
            ],
        };
        assert_eq!(
            answer_statuses(&serde_json::to_vec(&answer).unwrap()),
            vec![(200, String::new()), (403, "sender-not-allowed".into())]
        );
        assert!(answer_statuses(b"not json").is_empty());
    }
}
