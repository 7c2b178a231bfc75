//! The JSON envelope: a JWS in flattened JSON serialization (RFC 7515 §7.2.2), RS256 or ES256,
//! the signer certificate in `x5c`, the payload the JSON encoding of the envelope.

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::signer::{Algorithm, Signer};
use crate::trust::VerifiedCert;

/// The media type of a signed JSON envelope.
pub const MEDIA_TYPE: &str = "application/jose+json";

#[derive(Serialize)]
struct ProtectedOut<'a> {
    alg: &'a str,
    typ: &'a str,
    x5c: Vec<String>,
}

/// The protected header as received: anything not listed here (`jwk`, `jku`, `x5u`, …) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectedIn {
    alg: String,
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

/// The flattened serialization; an unprotected `header` or a `signatures` array is refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened<'a> {
    #[serde(borrow)]
    protected: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    signature: std::borrow::Cow<'a, str>,
}

/// Signs `envelope` as a flattened JWS.
///
/// # Errors
/// [`Error::Crypto`] if the library fails.
pub fn sign(envelope: &Envelope, signer: &Signer) -> Result<Vec<u8>> {
    let mut x5c = vec![STANDARD.encode(&signer.cert_der)];
    x5c.extend(signer.chain_der.iter().map(|c| STANDARD.encode(c)));
    let protected = ProtectedOut {
        alg: signer.algorithm.jws_name(),
        typ: "snodo-envelope+json",
        x5c,
    };
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap_or_default());
    let payload = URL_SAFE_NO_PAD.encode(crate::json::encode(envelope));
    let signing_input = format!("{protected}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(signer.sign_bytes(signing_input.as_bytes())?);
    let out = Flattened {
        protected: protected.into(),
        payload: payload.into(),
        signature: signature.into(),
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// What a JWS claims before anything is trusted: its algorithm, its certificates, its payload.
pub(crate) struct Parsed {
    claimed: Arc<Claimed>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

/// What a protected header says: the algorithm and the certificates in `x5c`.
struct Claimed {
    algorithm: Algorithm,
    leaf: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
}

/// Parses a flattened JWS and checks its protected header against the allow-list.
pub(crate) fn parse(input: &[u8], limits: &Limits) -> Result<Parsed> {
    limits.check_size(input.len())?;
    crate::json::check_depth(input, limits.max_depth)?;
    let jws: Flattened<'_> = serde_json::from_slice(input)
        .map_err(|e| Error::malformed_json(format!("not a flattened JWS: {e}")))?;
    let claimed = claimed(&jws.protected, limits)?;
    let signature = b64url("signature", &jws.signature)?;
    let payload = b64url("payload", &jws.payload)?;
    let mut signing_input = Vec::with_capacity(jws.protected.len() + jws.payload.len() + 1);
    signing_input.extend_from_slice(jws.protected.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(jws.payload.as_bytes());
    Ok(Parsed {
        claimed,
        signing_input,
        signature,
        payload,
    })
}

/// The protected header `protected` parsed, or the same header's parse kept from the last
/// envelope this thread parsed. A sender's envelopes all carry the same protected header (its
/// algorithm and certificate), and a batch is checked on one thread, so most envelopes skip
/// decoding it and its certificate again. The parse depends only on the text and the nesting
/// limit, which together name it.
fn claimed(protected: &str, limits: &Limits) -> Result<Arc<Claimed>> {
    type Last = Option<(usize, String, Arc<Claimed>)>;
    thread_local! {
        static LAST: RefCell<Last> = const { RefCell::new(None) };
    }
    let kept = LAST.with_borrow(|last| match last {
        Some((depth, text, c)) if *depth == limits.max_depth && text == protected => {
            Some(c.clone())
        }
        _ => None,
    });
    if let Some(c) = kept {
        return Ok(c);
    }
    let c = Arc::new(parse_protected(protected, limits)?);
    LAST.with_borrow_mut(|last| *last = Some((limits.max_depth, protected.to_owned(), c.clone())));
    Ok(c)
}

fn parse_protected(protected: &str, limits: &Limits) -> Result<Claimed> {
    let protected_raw = b64url("protected", protected)?;
    // Base64 hid it from the check above: bound its nesting before serde sees it.
    crate::json::check_depth(&protected_raw, limits.max_depth)?;
    let protected: ProtectedIn = serde_json::from_slice(&protected_raw)
        .map_err(|e| Error::malformed_json(format!("protected header: {e}")))?;
    let algorithm = Algorithm::from_jws(&protected.alg)?;
    if let Some(crit) = protected.crit {
        return Err(Error::SignatureScope(format!(
            "critical header parameters {crit:?} are not supported"
        )));
    }
    let _ = (protected.typ, protected.cty);
    let mut certs = match (protected.x5c, protected.kid) {
        (Some(x5c), _) if !x5c.is_empty() => x5c
            .iter()
            .map(|c| {
                STANDARD
                    .decode(c)
                    .map_err(|e| Error::CertificateMalformed(format!("x5c is not base64: {e}")))
            })
            .collect::<Result<Vec<_>>>()?,
        (_, Some(kid)) => {
            return Err(Error::CertificateMissing(format!(
                "`kid` {kid:?} without `x5c`: the signer certificate must be embedded"
            )));
        }
        _ => {
            return Err(Error::CertificateMissing(
                "the protected header has no `x5c`".into(),
            ));
        }
    };
    let leaf = certs.remove(0);
    Ok(Claimed {
        algorithm,
        leaf,
        intermediates: certs,
    })
}

impl Parsed {
    /// The algorithm the header names.
    pub(crate) fn algorithm(&self) -> Algorithm {
        self.claimed.algorithm
    }

    /// The signer certificate the header carries (DER).
    pub(crate) fn leaf(&self) -> &[u8] {
        &self.claimed.leaf
    }

    /// The intermediate certificates the header carries (DER).
    pub(crate) fn intermediates(&self) -> &[Vec<u8>] {
        &self.claimed.intermediates
    }

    /// Checks the signature with the verified signer certificate, then decodes the payload.
    pub(crate) fn verify(self, signer: &VerifiedCert, limits: &Limits) -> Result<Envelope> {
        let key_alg = Algorithm::for_key(&signer.public_key)?;
        let algorithm = self.algorithm();
        if key_alg != algorithm {
            return Err(Error::AlgorithmNotAllowed(format!(
                "{} with a key that signs {}",
                algorithm.jws_name(),
                key_alg.jws_name()
            )));
        }
        let ok = crate::signer::verify_bytes(
            algorithm,
            &signer.public_key,
            &self.signing_input,
            &self.signature,
        )?;
        if !ok {
            return Err(Error::SignatureInvalid(
                "the JWS signature does not match the protected header and payload".into(),
            ));
        }
        crate::json::decode(&self.payload, limits)
    }
}

fn b64url(what: &str, s: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| Error::malformed_json(format!("`{what}` is not unpadded base64url: {e}")))
}
