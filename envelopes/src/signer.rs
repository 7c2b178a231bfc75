//! A signing identity: a private key, its certificate, and the algorithm that key signs with.

use std::path::Path;

use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;

use crate::error::{Error, Result};
use crate::pki::{load_certs, load_key};
use crate::trust::Identity;

/// The signature algorithms on the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`, XML-DSig `rsa-sha256`).
    Rs256,
    /// ECDSA on P-256 with SHA-256 (JWS `ES256`, XML-DSig `ecdsa-sha256`).
    Es256,
}

/// XML-DSig identifier of RSA-SHA256.
pub const XMLDSIG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// XML-DSig identifier of ECDSA-SHA256.
pub const XMLDSIG_ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

impl Algorithm {
    /// The JWS `alg` name.
    #[must_use]
    pub fn jws_name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    /// The XML-DSig `SignatureMethod` URI.
    #[must_use]
    pub fn xmldsig_uri(self) -> &'static str {
        match self {
            Algorithm::Rs256 => XMLDSIG_RSA_SHA256,
            Algorithm::Es256 => XMLDSIG_ECDSA_SHA256,
        }
    }

    /// The allowed algorithm a JWS `alg` names.
    ///
    /// # Errors
    /// [`Error::AlgorithmNotAllowed`] for anything but RS256 and ES256 (`none`, HMAC, PS256…).
    pub fn from_jws(alg: &str) -> Result<Self> {
        match alg {
            "RS256" => Ok(Algorithm::Rs256),
            "ES256" => Ok(Algorithm::Es256),
            other => Err(Error::AlgorithmNotAllowed(other.to_owned())),
        }
    }

    /// The allowed algorithm an XML-DSig `SignatureMethod` URI names.
    ///
    /// # Errors
    /// [`Error::AlgorithmNotAllowed`] for anything but RSA-SHA256 and ECDSA-SHA256.
    pub fn from_xmldsig(uri: &str) -> Result<Self> {
        match uri {
            XMLDSIG_RSA_SHA256 => Ok(Algorithm::Rs256),
            XMLDSIG_ECDSA_SHA256 => Ok(Algorithm::Es256),
            other => Err(Error::AlgorithmNotAllowed(other.to_owned())),
        }
    }

    /// The algorithm a key of this type signs with.
    ///
    /// # Errors
    /// [`Error::AlgorithmNotAllowed`] for keys other than RSA ≥ 2048 bits and EC P-256.
    pub fn for_key<T: openssl::pkey::HasPublic>(key: &PKey<T>) -> Result<Self> {
        match key.id() {
            Id::RSA if key.bits() >= 2048 => Ok(Algorithm::Rs256),
            Id::RSA => Err(Error::AlgorithmNotAllowed(format!(
                "RSA-{} (at least 2048 bits)",
                key.bits()
            ))),
            Id::EC => {
                let ec = key.ec_key()?;
                if ec.group().curve_name() == Some(openssl::nid::Nid::X9_62_PRIME256V1) {
                    Ok(Algorithm::Es256)
                } else {
                    Err(Error::AlgorithmNotAllowed(
                        "ECDSA on a curve other than P-256".into(),
                    ))
                }
            }
            other => Err(Error::AlgorithmNotAllowed(format!("key type {other:?}"))),
        }
    }
}

/// The key and certificate an entity (or the hub) signs with.
#[derive(Clone)]
pub struct Signer {
    /// The private key.
    pub(crate) key: PKey<Private>,
    /// The key in PEM, for libxmlsec1.
    pub(crate) key_pem: Vec<u8>,
    /// The signer certificate, DER, embedded in every signature.
    pub(crate) cert_der: Vec<u8>,
    /// SHA-256 of the certificate, naming this signer in per-thread key caches.
    pub(crate) fingerprint: [u8; 32],
    /// Intermediate certificates, DER, embedded after the signer's.
    pub(crate) chain_der: Vec<Vec<u8>>,
    /// Who the certificate names.
    pub identity: Identity,
    /// What the key signs with.
    pub algorithm: Algorithm,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer")
            .field("identity", &self.identity)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a key and its certificate chain (signer first).
    ///
    /// # Errors
    /// [`Error::Key`] when the key does not match the certificate, or the certificate names no
    /// snodo identity.
    pub fn new(key: PKey<Private>, chain: &[X509]) -> Result<Self> {
        let cert = chain
            .first()
            .ok_or_else(|| Error::Key("no certificate given".into()))?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(Error::Key(
                "the private key does not match the certificate".into(),
            ));
        }
        let identity = crate::trust::identity_of(cert).map_err(|e| Error::Key(e.to_string()))?;
        Ok(Signer {
            algorithm: Algorithm::for_key(&key)?,
            key_pem: key.private_key_to_pem_pkcs8()?,
            fingerprint: crate::digest::sha256(&cert.to_der()?),
            cert_der: cert.to_der()?,
            chain_der: chain[1..]
                .iter()
                .map(|c| c.to_der())
                .collect::<Result<_, _>>()?,
            key,
            identity,
        })
    }

    /// Loads a signer from PEM files: the private key and the certificate (optionally followed
    /// by intermediates).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Key`].
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self> {
        Self::new(load_key(key_path)?, &load_certs(cert_path)?)
    }

    /// Signs `data` with SHA-256; the signature is in the JWS encoding (PKCS#1 v1.5 bytes
    /// for RS256, fixed-width `r || s` for ES256).
    ///
    /// # Errors
    /// [`Error::Crypto`] if the library fails.
    pub fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>> {
        let digest = crate::digest::sha256(data);
        match self.algorithm {
            Algorithm::Rs256 => {
                let mut s =
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.key)?;
                Ok(s.sign_oneshot_to_vec(data)?)
            }
            Algorithm::Es256 => {
                let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &*self.key.ec_key()?)?;
                let mut out = sig.r().to_vec_padded(32)?;
                out.extend(sig.s().to_vec_padded(32)?);
                Ok(out)
            }
        }
    }
}

/// Checks that `signature` (in the JWS encoding, as [`Signer::sign_bytes`] makes it) is a
/// signature over `data` with `algorithm` by the private half of `key`.
///
/// Returns `Ok(false)` for a signature that does not match.
///
/// # Errors
/// [`Error::SignatureInvalid`] for an ES256 signature of the wrong length; [`Error::Crypto`]
/// when the key does not suit the algorithm.
pub fn verify_bytes(
    algorithm: Algorithm,
    key: &PKey<openssl::pkey::Public>,
    data: &[u8],
    signature: &[u8],
) -> Result<bool> {
    match algorithm {
        Algorithm::Rs256 => {
            // Digest first, then a bare public-key operation: cheaper under OpenSSL 3 than a
            // digest-and-verify context built for each signature.
            let digest = crate::digest::sha256(data);
            rs256_contexts::verify(key, &digest, signature)
        }
        Algorithm::Es256 => {
            if signature.len() != 64 {
                return Err(Error::SignatureInvalid(format!(
                    "an ES256 signature is 64 bytes, not {}",
                    signature.len()
                )));
            }
            let r = openssl::bn::BigNum::from_slice(&signature[..32])?;
            let s = openssl::bn::BigNum::from_slice(&signature[32..])?;
            let sig = openssl::ecdsa::EcdsaSig::from_private_components(r, s)?;
            let digest = crate::digest::sha256(data);
            Ok(sig.verify(&digest, &*key.ec_key()?).unwrap_or(false))
        }
    }
}

/// RS256 verification contexts kept per thread and key. Under OpenSSL 3, making a context
/// (provider lookups, the key's export to the provider) costs about a third of the RSA
/// operation itself, and a context initialized once verifies any number of signatures with the
/// same parameters (`EVP_PKEY_verify(3)`).
mod rs256_contexts {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::collections::hash_map::Entry;

    use foreign_types::ForeignTypeRef as _;
    use openssl::pkey::{PKey, Public};
    use openssl::pkey_ctx::PkeyCtx;

    use crate::error::Result;

    /// Contexts per thread: one per signing key seen lately (a hub's verifying threads see
    /// each sender's key again and again). Past this many, one is dropped for each new key.
    const PER_THREAD: usize = 256;

    thread_local! {
        /// Keyed by the `EVP_PKEY`'s address: a context holds a reference to its key, so the
        /// address names that same key for as long as the context is here.
        static CONTEXTS: RefCell<HashMap<usize, PkeyCtx<Public>>> = RefCell::new(HashMap::new());
    }

    fn context(key: &PKey<Public>) -> Result<PkeyCtx<Public>> {
        let mut ctx = PkeyCtx::new(key)?;
        ctx.verify_init()?;
        ctx.set_rsa_padding(openssl::rsa::Padding::PKCS1)?;
        ctx.set_signature_md(openssl::md::Md::sha256())?;
        Ok(ctx)
    }

    /// Whether `signature` is `key`'s PKCS#1 v1.5 signature of the SHA-256 `digest`.
    pub(super) fn verify(key: &PKey<Public>, digest: &[u8; 32], signature: &[u8]) -> Result<bool> {
        let id = key.as_ptr() as usize;
        CONTEXTS.with_borrow_mut(|contexts| {
            if contexts.len() >= PER_THREAD
                && !contexts.contains_key(&id)
                && let Some(&old) = contexts.keys().next()
            {
                contexts.remove(&old);
            }
            let ctx = match contexts.entry(id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(context(key)?),
            };
            let verified = ctx.verify(digest, signature);
            // A refusal that is an error (a signature of the wrong length, say): the context
            // is not kept, in case the failure left anything in it.
            if verified.is_err() {
                contexts.remove(&id);
            }
            Ok(verified.unwrap_or(false))
        })
    }
}

#[cfg(test)]
mod tests {
    use openssl::pkey::{PKey, Public};

    use super::*;
    use crate::pki::{KeyType, generate_key};

    fn public(key: &PKey<Private>) -> PKey<Public> {
        PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
    }

    fn sign(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
        s.sign_oneshot_to_vec(data).unwrap()
    }

    fn verify(key: &PKey<Public>, data: &[u8], signature: &[u8]) -> bool {
        verify_bytes(Algorithm::Rs256, key, data, signature).unwrap()
    }

    #[test]
    fn a_kept_rs256_context_still_tells_each_signature_and_key_apart() {
        let (a, b) = (
            generate_key(KeyType::Rsa2048).unwrap(),
            generate_key(KeyType::Rsa2048).unwrap(),
        );
        let (pa, pb) = (public(&a), public(&b));
        let by_a = sign(&a, b"one");
        let by_b = sign(&b, b"one");
        for _ in 0..3 {
            assert!(verify(&pa, b"one", &by_a));
            assert!(!verify(&pa, b"two", &by_a), "another message");
            assert!(!verify(&pa, b"one", &by_b), "another key's signature");
            assert!(!verify(&pa, b"one", &by_a[..100]), "a signature cut short");
            assert!(verify(&pb, b"one", &by_b));
            assert!(!verify(&pb, b"one", &by_a));
        }
        // A key dropped and another made: a context never answers for a key it was not made for.
        drop(pa);
        let c = generate_key(KeyType::Rsa2048).unwrap();
        let pc = public(&c);
        assert!(!verify(&pc, b"one", &by_a));
        assert!(verify(&pc, b"one", &sign(&c, b"one")));
    }
}
