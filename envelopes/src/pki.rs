//! The federation PKI: the CA, keys and certificates of entities and of the hub, the revocation
//! list, and the files they live in.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{
    CrlNumber, X509, X509Builder, X509Crl, X509CrlBuilder, X509Name, X509NameBuilder,
    X509RevokedBuilder,
};

use crate::entity::EntityId;
use crate::error::{Error, Result};

/// The SAN URI prefix that names a hub node in its certificate.
pub const HUB_URI_PREFIX: &str = "urn:snodo:hub:";

/// The SAN URI prefix that names an auditor in its certificate.
pub const AUDITOR_URI_PREFIX: &str = "urn:snodo:auditor:";

/// File names inside a PKI directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The hub's certificate.
pub const HUB_CERT: &str = "hub.crt";
/// The hub's private key.
pub const HUB_KEY: &str = "hub.key";
/// The certificate revocation list (PEM X.509 CRL signed by the CA).
pub const CRL: &str = "ca.crl";

/// Default validity of entity and hub certificates, in days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 825;
/// Validity of the CA certificate, in days.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// The kind of key to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyType {
    /// RSA with a 2048-bit modulus; signs RS256 / RSA-SHA256.
    #[default]
    Rsa2048,
    /// ECDSA on NIST P-256; signs ES256 / ECDSA-SHA256.
    P256,
}

impl std::str::FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rsa2048" => Ok(KeyType::Rsa2048),
            "p256" => Ok(KeyType::P256),
            other => Err(Error::Key(format!(
                "key type `{other}` is not rsa2048 or p256"
            ))),
        }
    }
}

/// Generates a fresh private key.
///
/// # Errors
/// [`Error::Crypto`] if the library fails.
pub fn generate_key(kind: KeyType) -> Result<PKey<Private>> {
    Ok(match kind {
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
        KeyType::P256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
    })
}

/// What a certificate is for, which fixes its extensions.
#[derive(Clone, Debug)]
pub enum Subject {
    /// A member of the federation: signs envelopes, authenticates as a TLS client and, for
    /// push delivery, as a TLS server.
    Entity(EntityId),
    /// A hub node: signs receipts and checkpoints and serves TLS on `localhost`/127.0.0.1 and
    /// the extra DNS names given.
    Hub {
        /// The node's name (`urn:snodo:hub:<name>`).
        name: String,
        /// DNS names the hub serves under, besides `localhost`.
        dns: Vec<String>,
    },
    /// An auditor: reads the whole journal through the hub's API, sends no envelope.
    Auditor(String),
}

impl Subject {
    fn common_name(&self) -> String {
        match self {
            Subject::Entity(e) => e.to_string(),
            Subject::Hub { name, .. } => format!("snodo hub {name}"),
            Subject::Auditor(name) => format!("snodo auditor {name}"),
        }
    }

    /// The identity URI placed in the certificate's subjectAltName.
    #[must_use]
    pub fn uri(&self) -> String {
        match self {
            Subject::Entity(e) => e.uri(),
            Subject::Hub { name, .. } => format!("{HUB_URI_PREFIX}{name}"),
            Subject::Auditor(name) => format!("{AUDITOR_URI_PREFIX}{name}"),
        }
    }
}

/// The federation's certificate authority.
#[derive(Debug)]
pub struct CertificateAuthority {
    /// The self-signed CA certificate every verifier trusts.
    pub cert: X509,
    /// The CA's signing key.
    key: PKey<Private>,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA named `name`.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the library fails.
    pub fn create(name: &str, kind: KeyType) -> Result<Self> {
        let key = generate_key(kind)?;
        let subject = name_of(name)?;
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        b.set_serial_number(&*random_serial()?)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(&subject)?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(CA_VALIDITY_DAYS)?)?;
        b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(CertificateAuthority {
            cert: b.build(),
            key,
        })
    }

    /// Loads the CA from `dir/ca.crt` and `dir/ca.key`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Key`] when a file is missing or unreadable.
    pub fn load(dir: &Path) -> Result<Self> {
        let cert = load_cert(&dir.join(CA_CERT))?;
        let key = load_key(&dir.join(CA_KEY))?;
        Ok(CertificateAuthority { cert, key })
    }

    /// Issues a certificate for `subject` over `public`, valid from `not_before` to
    /// `not_after` (unix seconds).
    ///
    /// # Errors
    /// [`Error::Crypto`] if the library fails.
    pub fn issue(
        &self,
        subject: &Subject,
        public: &PKey<Private>,
        not_before: i64,
        not_after: i64,
    ) -> Result<X509> {
        let mut b = X509Builder::new()?;
        b.set_version(2)?;
        b.set_serial_number(&*random_serial()?)?;
        b.set_subject_name(&*name_of(&subject.common_name())?)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(public)?;
        b.set_not_before(&*Asn1Time::from_unix(not_before)?)?;
        b.set_not_after(&*Asn1Time::from_unix(not_after)?)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        let mut usage = KeyUsage::new();
        usage.critical().digital_signature().non_repudiation();
        if public.rsa().is_ok() {
            usage.key_encipherment();
        }
        b.append_extension(usage.build()?)?;
        b.append_extension(
            ExtendedKeyUsage::new()
                .client_auth()
                .server_auth()
                .build()?,
        )?;
        let mut san = SubjectAlternativeName::new();
        san.uri(&subject.uri());
        if let Subject::Hub { dns, .. } = subject {
            san.dns("localhost").ip("127.0.0.1");
            for d in dns {
                san.dns(d);
            }
        }
        let ctx = b.x509v3_context(Some(&self.cert), None);
        let san = san.build(&ctx)?;
        let ski = SubjectKeyIdentifier::new().build(&ctx)?;
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?;
        b.append_extension(san)?;
        b.append_extension(ski)?;
        b.append_extension(aki)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build())
    }

    /// Builds a new revocation list: the entries of `previous` plus `cert`, numbered one higher.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the library fails.
    pub fn revoke(&self, previous: Option<&X509Crl>, cert: &X509) -> Result<X509Crl> {
        let mut b = X509CrlBuilder::new()?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_last_update(&*Asn1Time::days_from_now(0)?)?;
        b.set_next_update(&*Asn1Time::days_from_now(30)?)?;
        let mut number = 1u32;
        let serial = cert.serial_number().to_bn()?;
        let mut already = false;
        if let Some(prev) = previous {
            if let Some((_, n)) = prev.extension::<CrlNumber>()? {
                number = n
                    .to_bn()?
                    .to_dec_str()?
                    .parse::<u32>()
                    .unwrap_or(0)
                    .saturating_add(1);
            }
            for r in prev.get_revoked().into_iter().flatten() {
                already |= r.serial_number().to_bn()? == serial;
                b.add_revoked(r.to_owned()?)?;
            }
        }
        if !already {
            let mut r = X509RevokedBuilder::new()?;
            r.set_serial_number(cert.serial_number())?;
            r.set_revocation_date(&*Asn1Time::days_from_now(0)?)?;
            b.add_revoked(r.build())?;
        }
        let dummy = X509Builder::new()?;
        let ctx = dummy.x509v3_context(Some(&self.cert), None);
        b.append_extension(AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?)?;
        b.append_extension(CrlNumber::new(BigNum::from_u32(number)?)?.build()?)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok(b.build()?)
    }
}

/// A key and certificate pair, as written in a PKI directory.
#[derive(Debug)]
pub struct Issued {
    /// Where the certificate was written.
    pub cert_path: PathBuf,
    /// Where the private key was written (mode 0600).
    pub key_path: PathBuf,
}

/// The key type of a hub node's key, whatever its members use. The hub signs a checkpoint at
/// every group commit, on the path of every receipt: an ECDSA P-256 signature costs about a
/// thirtieth of an RSA-2048 one (as for transparency logs, RFC 6962). Members verify it like
/// any other key.
pub const HUB_KEY_TYPE: KeyType = KeyType::P256;

/// Creates a PKI directory: the CA and one key and certificate per entity of type `kind`, and
/// the hub's of [`HUB_KEY_TYPE`].
///
/// Refuses to overwrite an existing CA.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be written or already holds a CA.
pub fn init(dir: &Path, entities: &[EntityId], kind: KeyType) -> Result<Vec<Issued>> {
    init_with_hub(dir, entities, kind, HUB_KEY_TYPE)
}

/// [`init`] with the hub's key of type `hub_kind`.
///
/// # Errors
/// As [`init`].
pub fn init_with_hub(
    dir: &Path,
    entities: &[EntityId],
    kind: KeyType,
    hub_kind: KeyType,
) -> Result<Vec<Issued>> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if dir.join(CA_KEY).exists() {
        return Err(Error::io(
            &dir.join(CA_KEY),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a CA already exists here",
            ),
        ));
    }
    let ca = CertificateAuthority::create("snodo federation CA", kind)?;
    write_private(&dir.join(CA_KEY), &ca.key.private_key_to_pem_pkcs8()?)?;
    write_public(&dir.join(CA_CERT), &ca.cert.to_pem()?)?;
    let mut out = vec![issue(
        dir,
        &ca,
        &Subject::Hub {
            name: "hub".into(),
            dns: Vec::new(),
        },
        hub_kind,
        Validity::default(),
    )?];
    for e in entities {
        out.push(issue(
            dir,
            &ca,
            &Subject::Entity(e.clone()),
            kind,
            Validity::default(),
        )?);
    }
    Ok(out)
}

/// The validity period of a certificate to issue, in unix seconds.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// First second of validity.
    pub not_before: i64,
    /// Last second of validity.
    pub not_after: i64,
}

impl Default for Validity {
    fn default() -> Self {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Validity {
            not_before: now - 300,
            not_after: now + i64::from(DEFAULT_VALIDITY_DAYS) * 86_400,
        }
    }
}

/// Issues a key and certificate for `subject` into `dir` (`hub.*` or `<class>-<code>.*`).
///
/// # Errors
/// [`Error::Io`] when a file cannot be written or already exists.
pub fn issue(
    dir: &Path,
    ca: &CertificateAuthority,
    subject: &Subject,
    kind: KeyType,
    validity: Validity,
) -> Result<Issued> {
    let stem = match subject {
        Subject::Entity(e) => e.file_stem(),
        Subject::Hub { name, .. } if name == "hub" => "hub".to_owned(),
        Subject::Hub { name, .. } => format!("hub-{name}"),
        Subject::Auditor(name) => format!("auditor-{name}"),
    };
    let key = generate_key(kind)?;
    let cert = ca.issue(subject, &key, validity.not_before, validity.not_after)?;
    let key_path = dir.join(format!("{stem}.key"));
    let cert_path = dir.join(format!("{stem}.crt"));
    write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
    write_public(&cert_path, &cert.to_pem()?)?;
    Ok(Issued {
        cert_path,
        key_path,
    })
}

/// Adds the certificate at `cert_path` to the directory's revocation list (`ca.crl`).
///
/// # Errors
/// [`Error::Io`] or [`Error::Key`] when the CA, the certificate or the list cannot be read.
pub fn revoke(dir: &Path, cert_path: &Path) -> Result<PathBuf> {
    let ca = CertificateAuthority::load(dir)?;
    let cert = load_cert(cert_path)?;
    let crl_path = dir.join(CRL);
    let previous = if crl_path.exists() {
        Some(load_crl(&crl_path)?)
    } else {
        None
    };
    let crl = ca.revoke(previous.as_ref(), &cert)?;
    let tmp = dir.join(format!("{CRL}.tmp"));
    fs::write(&tmp, crl.to_pem()?).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &crl_path).map_err(|e| Error::io(&crl_path, e))?;
    Ok(crl_path)
}

/// Writes a private key readable by its owner only (mode 0600 from creation, never wider).
///
/// # Errors
/// [`Error::Io`], including when the file already exists.
pub fn write_private(path: &Path, pem: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(pem)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn write_public(path: &Path, pem: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(pem)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Reads a PEM certificate.
///
/// # Errors
/// [`Error::Io`] or [`Error::Key`].
pub fn load_cert(path: &Path) -> Result<X509> {
    let pem = fs::read(path).map_err(|e| Error::io(path, e))?;
    X509::from_pem(&pem)
        .map_err(|e| Error::Key(format!("{}: not a PEM certificate: {e}", path.display())))
}

/// Reads every PEM certificate in a file (a chain or a bundle).
///
/// # Errors
/// [`Error::Io`] or [`Error::Key`].
pub fn load_certs(path: &Path) -> Result<Vec<X509>> {
    let pem = fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| Error::Key(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Key(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8 or traditional).
///
/// # Errors
/// [`Error::Io`] or [`Error::Key`].
pub fn load_key(path: &Path) -> Result<PKey<Private>> {
    let pem = fs::read(path).map_err(|e| Error::io(path, e))?;
    PKey::private_key_from_pem(&pem)
        .map_err(|e| Error::Key(format!("{}: not a PEM private key: {e}", path.display())))
}

/// Reads a PEM revocation list.
///
/// # Errors
/// [`Error::Io`] or [`Error::Key`].
pub fn load_crl(path: &Path) -> Result<X509Crl> {
    let pem = fs::read(path).map_err(|e| Error::io(path, e))?;
    X509Crl::from_pem(&pem)
        .map_err(|e| Error::Key(format!("{}: not a PEM CRL: {e}", path.display())))
}

fn random_serial() -> Result<Asn1Integer> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn name_of(cn: &str) -> Result<X509Name> {
    let mut n = X509NameBuilder::new()?;
    n.append_entry_by_nid(Nid::ORGANIZATIONNAME, "snodo federation")?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_hub_key_is_p256_unless_asked_whatever_the_members_use() {
        let id = |k: &PKey<Private>| k.id();
        let entities: Vec<EntityId> = vec!["comune:001272".parse().unwrap()];
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &entities, KeyType::Rsa2048).unwrap();
        let hub = load_key(&dir.path().join(HUB_KEY)).unwrap();
        let member = load_key(&dir.path().join("comune-001272.key")).unwrap();
        assert_eq!(id(&hub), openssl::pkey::Id::EC);
        assert_eq!(id(&member), openssl::pkey::Id::RSA);
        let dir = tempfile::tempdir().unwrap();
        init_with_hub(dir.path(), &entities, KeyType::P256, KeyType::Rsa2048).unwrap();
        let hub = load_key(&dir.path().join(HUB_KEY)).unwrap();
        let member = load_key(&dir.path().join("comune-001272.key")).unwrap();
        assert_eq!(id(&hub), openssl::pkey::Id::RSA);
        assert_eq!(id(&member), openssl::pkey::Id::EC);
    }

    #[test]
    fn init_writes_every_file_and_private_keys_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = vec![
            "comune:001272".parse().unwrap(),
            "anpr:ministero".parse().unwrap(),
        ];
        init(dir.path(), &entities, KeyType::P256).unwrap();
        for f in [
            "ca.crt",
            "hub.crt",
            "comune-001272.crt",
            "anpr-ministero.crt",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        for f in [
            "ca.key",
            "hub.key",
            "comune-001272.key",
            "anpr-ministero.key",
        ] {
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let err = init(dir.path(), &entities, KeyType::P256).unwrap_err();
        assert!(err.to_string().contains("a CA already exists"), "{err}");
    }

    #[test]
    fn revoke_accumulates_serials_and_numbers_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = vec![
            "comune:001272".parse().unwrap(),
            "anpr:ministero".parse().unwrap(),
        ];
        init(dir.path(), &entities, KeyType::P256).unwrap();
        let a = dir.path().join("comune-001272.crt");
        let b = dir.path().join("anpr-ministero.crt");
        revoke(dir.path(), &a).unwrap();
        revoke(dir.path(), &a).unwrap();
        let crl = revoke(dir.path(), &b).unwrap();
        let crl = load_crl(&crl).unwrap();
        assert_eq!(crl.get_revoked().unwrap().len(), 2);
        let (_, n) = crl.extension::<CrlNumber>().unwrap().unwrap();
        assert_eq!(n.to_bn().unwrap().to_dec_str().unwrap().to_string(), "3");
        let ca = load_cert(&dir.path().join(CA_CERT)).unwrap();
        assert!(crl.verify(&ca.public_key().unwrap()).unwrap());
    }
}
