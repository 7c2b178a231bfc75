//! Verification of a signed envelope in either encoding: structure, signer certificate,
//! signature, header rules, and that the signer is the sender.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::signer::{Algorithm, Signer};
use crate::trust::{Identity, TrustStore, VerifiedCert};
use crate::{jws, xmldsig};

/// The entity class under which hub nodes send their own notices: `hub:<name>`.
pub const HUB_CLASS: &str = "hub";

/// The two encodings of a signed envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// XML with an enveloped XML-DSig signature (`application/xml`).
    Xml,
    /// Flattened JWS (`application/jose+json`).
    Json,
}

impl Format {
    /// The media type of a signed envelope in this encoding.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Xml => "application/xml",
            Format::Json => jws::MEDIA_TYPE,
        }
    }

    /// Guesses the encoding from the first significant byte.
    #[must_use]
    pub fn sniff(input: &[u8]) -> Option<Self> {
        match input.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Some(Format::Xml),
            Some(b'{') => Some(Format::Json),
            _ => None,
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "xml" => Ok(Format::Xml),
            "json" => Ok(Format::Json),
            other => Err(Error::invalid(
                "format",
                format!("`{other}` is not xml or json"),
            )),
        }
    }
}

/// Signs `envelope` in `format`.
///
/// # Errors
/// [`Error::Crypto`] if the cryptographic library fails.
pub fn sign(envelope: &Envelope, signer: &Signer, format: Format) -> Result<Vec<u8>> {
    match format {
        Format::Xml => xmldsig::sign(envelope, signer).map(String::into_bytes),
        Format::Json => jws::sign(envelope, signer),
    }
}

/// A signed envelope that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The envelope, exactly as signed.
    pub envelope: Envelope,
    /// The certificate that signed it (its entity is the header's sender).
    pub signer: Arc<VerifiedCert>,
    /// The encoding it arrived in.
    pub format: Format,
    /// The signature algorithm used.
    pub algorithm: Algorithm,
}

/// Verifies signed envelopes against the federation's trust store.
#[derive(Clone, Debug)]
pub struct Verifier {
    trust: Arc<TrustStore>,
    limits: Limits,
}

impl Verifier {
    /// A verifier trusting `trust`, parsing within `limits`.
    #[must_use]
    pub fn new(trust: Arc<TrustStore>, limits: Limits) -> Self {
        Verifier { trust, limits }
    }

    /// The trust store in use.
    #[must_use]
    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.trust
    }

    /// Verifies `input` now, in whichever encoding it is.
    ///
    /// # Errors
    /// The precise [`Error`] of the first check that fails.
    pub fn verify(&self, input: &[u8]) -> Result<Verified> {
        self.verify_at(input, OffsetDateTime::now_utc())
    }

    /// Verifies `input` as of `now` (certificate validity is judged at that instant).
    ///
    /// Succeeds only if the document is well-formed within the limits, carries exactly one
    /// signature that covers all of it with an allowed algorithm, the signer certificate chains
    /// to the CA, is valid at `now` and not revoked, the header obeys its rules, and the
    /// certificate names the header's `sender`.
    ///
    /// # Errors
    /// The precise [`Error`] of the first check that fails.
    pub fn verify_at(&self, input: &[u8], now: OffsetDateTime) -> Result<Verified> {
        let format = Format::sniff(input).ok_or_else(|| Error::Malformed {
            format: "envelope",
            detail: "neither an XML document nor a JSON object".into(),
        })?;
        let (envelope, signer, algorithm) = match format {
            Format::Xml => {
                self.limits.check_size(input.len())?;
                let parsed = xmldsig::parse(input, &self.limits)?;
                let signer = self
                    .trust
                    .verify_cert(&parsed.leaf, &parsed.intermediates, now)?;
                let algorithm = parsed.algorithm;
                (parsed.verify(&signer)?, signer, algorithm)
            }
            Format::Json => {
                let parsed = jws::parse(input, &self.limits)?;
                let signer = self
                    .trust
                    .verify_cert(parsed.leaf(), parsed.intermediates(), now)?;
                let algorithm = parsed.algorithm();
                (parsed.verify(&signer, &self.limits)?, signer, algorithm)
            }
        };
        envelope.header.validate()?;
        match &signer.identity {
            Identity::Entity(e) if *e == envelope.header.sender => {}
            Identity::Entity(e) => {
                return Err(Error::SenderMismatch {
                    sender: envelope.header.sender.clone(),
                    signer: e.clone(),
                });
            }
            // A hub sends its own notices (delivery failures) as the entity `hub:<name>`.
            Identity::Hub(h)
                if envelope.header.sender.class() == HUB_CLASS
                    && envelope.header.sender.code() == h => {}
            other => {
                return Err(Error::CertificateNoIdentity(format!(
                    "certificate of {other} cannot sign as sender `{}`",
                    envelope.header.sender
                )));
            }
        }
        Ok(Verified {
            envelope,
            signer,
            format,
            algorithm,
        })
    }
}
