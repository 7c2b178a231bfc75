//! Trust in signers: certificate chains to the federation CA, validity, revocation, and the
//! entity a certificate names — with verified chains cached by certificate.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{PKey, Public};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Crl, X509StoreContext};
use time::OffsetDateTime;

use crate::entity::{ENTITY_URI_PREFIX, EntityId};
use crate::error::{Error, Result};
use crate::header::format_time;
use crate::pki::{AUDITOR_URI_PREFIX, HUB_URI_PREFIX, load_certs, load_crl};

/// How many verified certificates the cache keeps before it starts over.
const CACHE_CAPACITY: usize = 65_536;

/// Who a verified certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A member of the federation (`urn:snodo:entity:<class>:<code>`).
    Entity(EntityId),
    /// A hub node (`urn:snodo:hub:<name>`).
    Hub(String),
    /// An auditor (`urn:snodo:auditor:<name>`): reads the journal, sends nothing.
    Auditor(String),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Entity(e) => write!(f, "{e}"),
            Identity::Hub(h) => write!(f, "hub:{h}"),
            Identity::Auditor(a) => write!(f, "auditor:{a}"),
        }
    }
}

/// A certificate that chains to the federation CA, with what verification needs of it.
#[derive(Debug)]
pub struct VerifiedCert {
    /// Who the certificate names.
    pub identity: Identity,
    /// Its public key, to check signatures with.
    pub public_key: PKey<Public>,
    /// The DER encoding, as received.
    pub der: Vec<u8>,
    /// SHA-256 of the DER encoding.
    pub fingerprint: [u8; 32],
    /// Serial number in upper-case hex.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
}

impl VerifiedCert {
    /// The entity this certificate names, if it names one.
    #[must_use]
    pub fn entity(&self) -> Option<&EntityId> {
        match &self.identity {
            Identity::Entity(e) => Some(e),
            Identity::Hub(_) | Identity::Auditor(_) => None,
        }
    }
}

/// The federation's trust anchors and revocation list, shared by every verification.
///
/// Chain checks are done once per certificate and cached by its DER encoding; validity and
/// revocation are checked on every use (they change with time and with the list).
pub struct TrustStore {
    /// The CA certificates that anchor every chain.
    store: X509Store,
    /// Serial numbers (upper-case hex) on the revocation list.
    revoked: HashSet<String>,
    /// Chains already verified, found by the leaf's DER (which each holds): an exact match,
    /// without a digest of the certificate on every envelope.
    cache: Mutex<HashSet<ByDer>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl TrustStore {
    /// Trusts `cas`, with the serials on `crl` revoked. The list must be signed by one of them.
    ///
    /// # Errors
    /// [`Error::Key`] when the CRL is not signed by a trusted CA.
    pub fn new(cas: Vec<X509>, crl: Option<&X509Crl>) -> Result<Self> {
        let mut revoked = HashSet::new();
        if let Some(crl) = crl {
            let signed = cas.iter().any(|ca| {
                ca.public_key()
                    .ok()
                    .is_some_and(|k| crl.verify(&k).unwrap_or(false))
            });
            if !signed {
                return Err(Error::Key(
                    "the revocation list is not signed by the federation CA".into(),
                ));
            }
            for r in crl.get_revoked().into_iter().flatten() {
                revoked.insert(r.serial_number().to_bn()?.to_hex_str()?.to_string());
            }
        }
        let mut b = X509StoreBuilder::new()?;
        for ca in cas {
            b.add_cert(ca)?;
        }
        // Time is checked by us, against the verification time the caller chooses.
        b.set_flags(X509VerifyFlags::NO_CHECK_TIME)?;
        Ok(TrustStore {
            store: b.build(),
            revoked,
            cache: Mutex::new(HashSet::new()),
        })
    }

    /// Loads the CA bundle at `ca_path` and, if given, the revocation list at `crl_path`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Key`] when a file is missing or unreadable.
    pub fn load(ca_path: &Path, crl_path: Option<&Path>) -> Result<Self> {
        let cas = load_certs(ca_path)?;
        let crl = crl_path.map(load_crl).transpose()?;
        Self::new(cas, crl.as_ref())
    }

    /// Verifies the signer certificate `der` (with optional intermediates) at time `now`:
    /// chain to a trusted CA, validity, revocation, and an identity URI.
    ///
    /// # Errors
    /// [`Error::CertificateMalformed`], [`Error::CertificateUntrusted`],
    /// [`Error::CertificateExpired`], [`Error::CertificateRevoked`] or
    /// [`Error::CertificateNoIdentity`].
    pub fn verify_cert(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> Result<Arc<VerifiedCert>> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(der).map(|c| c.0.clone()));
        let cert = match cached {
            Some(c) => c,
            None => {
                let c =
                    Arc::new(self.verify_chain(der, intermediates, crate::digest::sha256(der))?);
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                    cache.insert(ByDer(c.clone()));
                }
                c
            }
        };
        let at = now.unix_timestamp();
        if at < cert.not_before || at > cert.not_after {
            return Err(Error::CertificateExpired {
                at: format_time(now),
                not_before: unix_to_string(cert.not_before),
                not_after: unix_to_string(cert.not_after),
            });
        }
        if self.revoked.contains(&cert.serial) {
            return Err(Error::CertificateRevoked {
                serial: cert.serial.clone(),
            });
        }
        Ok(cert)
    }

    fn verify_chain(
        &self,
        der: &[u8],
        intermediates: &[Vec<u8>],
        fingerprint: [u8; 32],
    ) -> Result<VerifiedCert> {
        let cert = X509::from_der(der).map_err(|e| Error::CertificateMalformed(e.to_string()))?;
        let mut chain = Stack::new()?;
        for i in intermediates {
            chain
                .push(X509::from_der(i).map_err(|e| Error::CertificateMalformed(e.to_string()))?)?;
        }
        let mut ctx = X509StoreContext::new()?;
        let (ok, why) = ctx.init(&self.store, &cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_owned()))
        })?;
        if !ok {
            return Err(Error::CertificateUntrusted(why));
        }
        let identity = identity_of(&cert)?;
        Ok(VerifiedCert {
            identity,
            public_key: cert.public_key()?,
            der: der.to_vec(),
            fingerprint,
            serial: cert.serial_number().to_bn()?.to_hex_str()?.to_string(),
            not_before: asn1_to_unix(cert.not_before())?,
            not_after: asn1_to_unix(cert.not_after())?,
        })
    }
}

/// A verified certificate in the cache, found by its DER encoding.
struct ByDer(Arc<VerifiedCert>);

impl Borrow<[u8]> for ByDer {
    fn borrow(&self) -> &[u8] {
        &self.0.der
    }
}

// Hash and equality are those of the DER bytes, as `Borrow<[u8]>` requires.
impl Hash for ByDer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.der.as_slice().hash(state);
    }
}

impl PartialEq for ByDer {
    fn eq(&self, other: &Self) -> bool {
        self.0.der == other.0.der
    }
}

impl Eq for ByDer {}

/// The identity a certificate's subjectAltName URI gives: exactly one `urn:snodo:` URI.
///
/// # Errors
/// [`Error::CertificateNoIdentity`] when there is none, or more than one.
pub fn identity_of(cert: &X509) -> Result<Identity> {
    let mut found = Vec::new();
    for name in cert.subject_alt_names().into_iter().flatten() {
        if let Some(uri) = name.uri() {
            if let Some(rest) = uri.strip_prefix(HUB_URI_PREFIX) {
                found.push(Identity::Hub(rest.to_owned()));
            } else if let Some(rest) = uri.strip_prefix(AUDITOR_URI_PREFIX) {
                found.push(Identity::Auditor(rest.to_owned()));
            } else if uri.starts_with(ENTITY_URI_PREFIX) {
                let e = EntityId::from_uri(uri).ok_or_else(|| {
                    Error::CertificateNoIdentity(format!("`{uri}` is not a valid entity URI"))
                })?;
                found.push(Identity::Entity(e));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::CertificateNoIdentity(format!(
            "no subjectAltName URI starting with {ENTITY_URI_PREFIX} or {HUB_URI_PREFIX}"
        ))),
        n => Err(Error::CertificateNoIdentity(format!(
            "{n} identity URIs; exactly one is allowed"
        ))),
    }
}

fn asn1_to_unix(t: &Asn1TimeRef) -> Result<i64> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

fn unix_to_string(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(format_time)
        .unwrap_or_else(|_| t.to_string())
}
