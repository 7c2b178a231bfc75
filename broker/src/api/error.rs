//! `ApiError`: every refusal and failure of the HTTP API as an RFC 9457 problem+json with a
//! stable `code`. A 5xx says little to the client and everything to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;
use crate::registry::Refusal;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A refusal (4xx) or a failure of the hub (5xx).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (listed in the README).
    pub code: &'static str,
    /// What was wrong, for a person; never internal detail on a 5xx.
    pub detail: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// The fields at fault in a refused body, each with what is wrong (`errors` in the problem).
    pub errors: Vec<FieldProblem>,
}

/// One field at fault in a refused body: a JSON pointer, or an XML element path and line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// Where in a JSON body (`/persone/0/persona/codice_fiscale`; empty for the whole body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Where in an XML body (`/dichiarazione/persone[1]/persona/codice_fiscale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The line in an XML body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// What is wrong.
    pub detail: String,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[FieldProblem]>::is_empty")]
    errors: &'a [FieldProblem],
}

impl ApiError {
    /// A refusal with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            errors: Vec::new(),
        }
    }

    /// Adds the fields at fault.
    #[must_use]
    pub fn with_errors(mut self, errors: Vec<FieldProblem>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds a `Retry-After`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A failure of the hub: logged in full, reported to the client as `internal`.
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "Internal error.");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the hub failed; the request had no effect",
        )
    }

    /// 404 for a resource the caller cannot see (or that does not exist: the same answer).
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", what)
    }

    /// Query parameter `name` read as a duration (`30s`, `500ms`, `2m`), if given.
    ///
    /// # Errors
    /// 400 `bad-parameter` naming the parameter and its value.
    pub fn duration(
        name: &str,
        value: Option<&str>,
    ) -> Result<Option<std::time::Duration>, ApiError> {
        value
            .map(|v| {
                humantime::parse_duration(v).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad-parameter",
                        format!("{name}={v:?} is not a duration like 30s: {e}"),
                    )
                })
            })
            .transpose()
    }
}

impl ApiError {
    fn as_problem(&self) -> Problem<'_> {
        Problem {
            kind: format!("urn:snodo:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            errors: &self.errors,
        }
    }

    /// The RFC 9457 problem document of this refusal, as the response body would hold it.
    #[must_use]
    pub fn problem(&self) -> serde_json::Value {
        serde_json::to_value(self.as_problem()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.as_problem()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<&snodo_envelopes::Error> for ApiError {
    fn from(e: &snodo_envelopes::Error) -> Self {
        use snodo_envelopes::Error as E;
        let status = match e {
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::SenderMismatch { .. }
            | E::CertificateUntrusted(_)
            | E::CertificateExpired { .. }
            | E::CertificateRevoked { .. }
            | E::CertificateNoIdentity(_) => StatusCode::FORBIDDEN,
            _ if e.is_permanent() => StatusCode::BAD_REQUEST,
            _ => return ApiError::internal(e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<&Refusal> for ApiError {
    fn from(r: &Refusal) -> Self {
        let status = match r.code() {
            "sender-not-allowed" | "recipient-not-allowed" | "unknown-sender" => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, r.code(), r.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownLease(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "lease-unknown", e.to_string())
            }
            EngineError::IdConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "envelope-id-conflict", e.to_string())
            }
            EngineError::Overloaded | EngineError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
            .retry_after(1),
            other => ApiError::internal(&other),
        }
    }
}
