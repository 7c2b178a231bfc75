//! The one error type of the envelopes crate: every refusal says precisely what was wrong.

use crate::entity::EntityId;

/// Why an envelope, a certificate or a key was refused.
///
/// Each variant names one precise fault; [`Error::code`] gives a stable machine-readable code
/// that the hub reuses in its problem+json refusals.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document is larger than the configured bound.
    #[error("envelope is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused document in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The document nests elements or values deeper than the configured bound.
    #[error("envelope nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// The configured depth limit.
        limit: usize,
    },
    /// The XML document carries a DOCTYPE declaration (DTDs and entities are never processed).
    #[error("XML envelope carries a DOCTYPE declaration; DTDs and entities are not allowed")]
    DoctypeForbidden,
    /// The XML document uses a construct the envelope format does not allow.
    #[error("XML envelope contains a forbidden construct: {0}")]
    XmlForbidden(&'static str),
    /// The document is not well-formed or not a valid envelope.
    #[error("malformed {format} envelope: {detail}")]
    Malformed {
        /// `XML` or `JSON`.
        format: &'static str,
        /// What the parser found wrong.
        detail: String,
    },
    /// A header field is missing.
    #[error("header field `{0}` is missing")]
    MissingField(&'static str),
    /// A header field has a value that breaks its syntax or a header rule.
    #[error("header field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The header field, as named in the envelope contract.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The body does not match the content type announced in the header.
    #[error("body is invalid: {0}")]
    InvalidBody(String),
    /// The document has no signature.
    #[error("envelope is not signed")]
    SignatureMissing,
    /// The document carries more than one signature.
    #[error("envelope carries {0} signatures; exactly one is allowed")]
    MultipleSignatures(usize),
    /// The signature does not cover the whole envelope, or is structured in a way that is refused.
    #[error("signature does not cover the whole envelope: {0}")]
    SignatureScope(String),
    /// The signature or digest algorithm is not on the allow-list.
    #[error("signature algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    /// The signature value does not verify against the signer's certificate.
    #[error("signature does not verify: {0}")]
    SignatureInvalid(String),
    /// No signer certificate is embedded in the signature.
    #[error("signature carries no signer certificate: {0}")]
    CertificateMissing(String),
    /// The signer certificate could not be parsed.
    #[error("signer certificate is unreadable: {0}")]
    CertificateMalformed(String),
    /// The signer certificate does not chain to the federation CA.
    #[error("signer certificate is not issued by the federation CA: {0}")]
    CertificateUntrusted(String),
    /// The signer certificate is outside its validity period.
    #[error("signer certificate is not valid at {at}: valid from {not_before} until {not_after}")]
    CertificateExpired {
        /// Verification time.
        at: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The signer certificate is on the revocation list.
    #[error("signer certificate (serial {serial}) is revoked")]
    CertificateRevoked {
        /// Serial number in hex.
        serial: String,
    },
    /// The signer certificate names no entity (no `urn:snodo:entity:` SAN URI).
    #[error("signer certificate names no snodo entity: {0}")]
    CertificateNoIdentity(String),
    /// The envelope is signed by one entity but claims another as sender.
    #[error("envelope claims sender `{sender}` but is signed by `{signer}`")]
    SenderMismatch {
        /// The `sender` header field.
        sender: EntityId,
        /// The entity named by the signer certificate.
        signer: EntityId,
    },
    /// A key or certificate file could not be used.
    #[error("key material: {0}")]
    Key(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The cryptographic library failed on input it should have handled.
    #[error("cryptographic library error: {0}")]
    Crypto(String),
}

impl Error {
    /// A stable, machine-readable code for this refusal (kebab-case).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "envelope-too-large",
            Error::TooDeep { .. } => "envelope-too-deep",
            Error::DoctypeForbidden => "xml-doctype-forbidden",
            Error::XmlForbidden(_) => "xml-construct-forbidden",
            Error::Malformed { .. } => "envelope-malformed",
            Error::MissingField(_) => "header-field-missing",
            Error::InvalidField { .. } => "header-field-invalid",
            Error::InvalidBody(_) => "body-invalid",
            Error::SignatureMissing => "signature-missing",
            Error::MultipleSignatures(_) => "signature-multiple",
            Error::SignatureScope(_) => "signature-scope",
            Error::AlgorithmNotAllowed(_) => "signature-algorithm-not-allowed",
            Error::SignatureInvalid(_) => "signature-invalid",
            Error::CertificateMissing(_) => "certificate-missing",
            Error::CertificateMalformed(_) => "certificate-malformed",
            Error::CertificateUntrusted(_) => "certificate-untrusted",
            Error::CertificateExpired { .. } => "certificate-expired",
            Error::CertificateRevoked { .. } => "certificate-revoked",
            Error::CertificateNoIdentity(_) => "certificate-no-identity",
            Error::SenderMismatch { .. } => "sender-mismatch",
            Error::Key(_) => "key-unusable",
            Error::Io { .. } => "io",
            Error::Crypto(_) => "crypto-failure",
        }
    }

    /// True when the fault lies in the submitted document or its signer, so resubmitting the
    /// same bytes can never succeed (the hub answers 4xx); false for local faults (files, keys,
    /// the cryptographic library) that may pass on retry.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Error::Io { .. } | Error::Crypto(_) | Error::Key(_))
    }

    pub(crate) fn malformed_xml(detail: impl std::fmt::Display) -> Self {
        Error::Malformed {
            format: "XML",
            detail: detail.to_string(),
        }
    }

    pub(crate) fn malformed_json(detail: impl std::fmt::Display) -> Self {
        Error::Malformed {
            format: "JSON",
            detail: detail.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<openssl::error::ErrorStack> for Error {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Error::Crypto(e.to_string())
    }
}

/// Result with the envelopes crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
