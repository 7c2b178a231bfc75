//! The XML envelope's signature: enveloped XML-DSig through libxmlsec1 (OpenSSL backend), with
//! the structure checked first so that only a signature over the whole document is accepted.

use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libxml::readonly::RoNode;
use quick_xml::escape::escape;
use xmlsec::{XmlSecKey, XmlSecKeyFormat, XmlSecSignatureContext};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::signer::{Algorithm, Signer};
use crate::trust::VerifiedCert;
use crate::xml::{self, DSIG_NS};

mod core_validation;
mod parser_context;

use core_validation::SignatureNodes;

/// Exclusive XML canonicalization 1.0 (without comments).
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The enveloped-signature transform.
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// SHA-256 digests.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// How many verification keys each thread keeps loaded in libxmlsec1.
const KEY_CACHE_CAPACITY: usize = 4096;

thread_local! {
    /// libxmlsec1 keys are not `Send`: each thread keeps its own, by certificate fingerprint.
    /// Keyed by the certificate's fingerprint and whether the key is the private one.
    static KEYS: RefCell<HashMap<([u8; 32], bool), XmlSecKey>> = RefCell::new(HashMap::new());
}

/// Signs `envelope` with an enveloped signature over the whole document.
///
/// # Errors
/// [`Error::Crypto`] if libxmlsec1 refuses the key or fails.
pub fn sign(envelope: &Envelope, signer: &Signer) -> Result<String> {
    let template = format!(
        concat!(
            "<ds:Signature xmlns:ds=\"{ns}\"><ds:SignedInfo>",
            "<ds:CanonicalizationMethod Algorithm=\"{c14n}\"/>",
            "<ds:SignatureMethod Algorithm=\"{alg}\"/>",
            "<ds:Reference URI=\"\"><ds:Transforms>",
            "<ds:Transform Algorithm=\"{env}\"/><ds:Transform Algorithm=\"{c14n}\"/>",
            "</ds:Transforms><ds:DigestMethod Algorithm=\"{sha}\"/><ds:DigestValue/>",
            "</ds:Reference></ds:SignedInfo><ds:SignatureValue/>",
            "<ds:KeyInfo><ds:X509Data>{certs}</ds:X509Data></ds:KeyInfo></ds:Signature>"
        ),
        ns = DSIG_NS,
        c14n = EXC_C14N,
        alg = signer.algorithm.xmldsig_uri(),
        env = ENVELOPED,
        sha = SHA256,
        certs = std::iter::once(&signer.cert_der)
            .chain(&signer.chain_der)
            .map(|c| format!(
                "<ds:X509Certificate>{}</ds:X509Certificate>",
                STANDARD.encode(c)
            ))
            .collect::<String>(),
    );
    let unsigned = xml::encode_with_signature(envelope, &template);
    let doc = parse_libxml(unsigned.as_bytes())?;
    let slot = (signer.fingerprint, true);
    let key = take_key(slot, || signer.key_pem.clone())?;
    let mut ctx = XmlSecSignatureContext::new();
    ctx.insert_key(key);
    let outcome = ctx.sign_document(&doc);
    if let Some(key) = ctx.release_key() {
        return_key(slot, key);
    }
    outcome.map_err(|e| Error::Crypto(format!("libxmlsec1 signing failed: {e}")))?;
    fill_template(envelope, &template, &doc)
}

/// The signed envelope in our own encoding: the template with the digest and signature values
/// libxmlsec1 computed over `doc`. Serializing `doc` instead would hand the recipient libxml2's
/// rewriting of the body (attribute values normalized, `<a></a>` as `<a/>`, CR as LF), not the
/// body that was signed. Both serializations have the same canonical form, so the values hold.
fn fill_template(
    envelope: &Envelope,
    template: &str,
    doc: &libxml::tree::Document,
) -> Result<String> {
    let missing = |what: &str| Error::Crypto(format!("libxmlsec1 left no {what}"));
    let signature = envelope_signature(doc).ok_or_else(|| missing("Signature"))?;
    let child = |parent: &libxml::tree::Node, local: &str| {
        parent
            .get_child_elements()
            .into_iter()
            .find(|c| c.get_name() == local)
            .ok_or_else(|| missing(local))
    };
    let reference = child(&child(&signature, "SignedInfo")?, "Reference")?;
    let digest = child(&reference, "DigestValue")?.get_content();
    let value = child(&signature, "SignatureValue")?.get_content();
    let signed = template
        .replacen(
            "<ds:DigestValue/>",
            &format!("<ds:DigestValue>{}</ds:DigestValue>", escape(&digest)),
            1,
        )
        .replacen(
            "<ds:SignatureValue/>",
            &format!("<ds:SignatureValue>{}</ds:SignatureValue>", escape(&value)),
            1,
        );
    Ok(xml::encode_with_signature(envelope, &signed))
}

/// The `ds:Signature` that is the last child element of the root: the one whose structure
/// [`check_structure`] approved, and so the only one libxmlsec1 may check.
fn envelope_signature(doc: &libxml::tree::Document) -> Option<libxml::tree::Node> {
    let last = doc.get_root_element()?.get_child_elements().pop()?;
    let ns = last.get_namespace()?;
    (last.get_name() == "Signature" && ns.get_href() == DSIG_NS).then_some(last)
}

/// What an XML envelope claims before anything is trusted.
pub(crate) struct Parsed {
    pub(crate) algorithm: Algorithm,
    pub(crate) leaf: Vec<u8>,
    pub(crate) intermediates: Vec<Vec<u8>>,
    pub(crate) envelope: Envelope,
    /// libxml2's tree of the input: the one whose signature structure was checked, and the one
    /// libxmlsec1 verifies.
    doc: libxml::tree::Document,
    /// The elements of the checked signature in `doc`.
    nodes: SignatureNodes,
}

/// Parses an XML envelope and checks that it carries exactly one signature, the last child of
/// the root, that covers the whole document with allowed algorithms only.
///
/// The hardened parser judges the whole input and counts signatures wherever they are; the
/// structure of the signature is then judged on libxml2's tree, with the attribute look-ups
/// libxmlsec1 itself makes, so that what is checked is what gets verified.
pub(crate) fn parse(input: &[u8], limits: &Limits) -> Result<Parsed> {
    let decoded = xml::decode(input, limits)?;
    let content = match (decoded.signature_count, decoded.signature) {
        (0, _) => return Err(Error::SignatureMissing),
        (1, Some(content)) => content,
        (1, None) => {
            return Err(Error::SignatureScope(
                "the only Signature is not a child of Envelope".into(),
            ));
        }
        (n, _) => return Err(Error::MultipleSignatures(n)),
    };
    let doc = parse_libxml(input)?;
    let sig = doc
        .get_root_readonly()
        .and_then(|root| root.get_last_element_child())
        .filter(|last| is_dsig(*last, "Signature"))
        .ok_or_else(|| {
            Error::SignatureScope("Signature must be the last child of Envelope".into())
        })?;
    let (algorithm, nodes) = check_structure(sig, content.certificates.len())?;
    let mut certs = content
        .certificates
        .iter()
        .map(|text| decode_certificate(text))
        .collect::<Result<Vec<_>>>()?;
    let leaf = certs.remove(0);
    Ok(Parsed {
        algorithm,
        leaf,
        intermediates: certs,
        envelope: decoded.envelope,
        doc,
        nodes,
    })
}

impl Parsed {
    /// Checks the signature with libxmlsec1 and the verified signer's key.
    pub(crate) fn verify(mut self, signer: &VerifiedCert) -> Result<Envelope> {
        let key_alg = Algorithm::for_key(&signer.public_key)?;
        if key_alg != self.algorithm {
            return Err(Error::AlgorithmNotAllowed(format!(
                "{} with a key that signs {}",
                self.algorithm.xmldsig_uri(),
                key_alg.xmldsig_uri()
            )));
        }
        let slot = (signer.fingerprint, false);
        let key = take_key(slot, || {
            signer.public_key.public_key_to_pem().unwrap_or_default()
        })?;
        let mut ctx = XmlSecSignatureContext::new();
        ctx.insert_key(key);
        let outcome = core_validation::verify(&mut ctx, &mut self.doc, &self.nodes);
        if let Some(key) = ctx.release_key() {
            return_key(slot, key);
        }
        match outcome {
            Ok(true) => Ok(self.envelope),
            Ok(false) => Err(Error::SignatureInvalid(
                "the digest or the signature value does not match the document".into(),
            )),
            Err(step) => Err(Error::SignatureInvalid(format!(
                "XML-DSig core validation failed: {step}"
            ))),
        }
    }
}

/// A libxmlsec1 key from this thread's cache, or loaded from the PEM that `pem` gives.
///
/// Keys are lent to one operation at a time and handed back with [`return_key`]: copying a
/// libxmlsec1 key re-encodes it through OpenSSL's decoders, which costs more than the
/// signature itself.
fn take_key(slot: ([u8; 32], bool), pem: impl FnOnce() -> Vec<u8>) -> Result<XmlSecKey> {
    if let Some(k) = KEYS.with(|keys| keys.borrow_mut().remove(&slot)) {
        return Ok(k);
    }
    XmlSecKey::from_memory(&pem(), XmlSecKeyFormat::Pem, None)
        .map_err(|e| Error::Crypto(format!("libxmlsec1 cannot load the key: {e}")))
}

fn return_key(slot: ([u8; 32], bool), key: XmlSecKey) {
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() >= KEY_CACHE_CAPACITY {
            keys.clear();
        }
        keys.insert(slot, key);
    });
}

/// Parses with libxml2 for libxmlsec1 ([`parser_context`]): no recovery, no network, no DTD
/// loading, no entity substitution (the input has already been refused if it holds a DOCTYPE).
///
/// No encoding is imposed: the hardened parse has already found the input to be UTF-8 without a
/// byte order mark and refused any declared encoding but UTF-8, which libxml2 reads natively;
/// naming it would send every byte through libxml2's UTF-8 to UTF-8 converter.
fn parse_libxml(input: &[u8]) -> Result<libxml::tree::Document> {
    parser_context::parse(input)
        .ok_or_else(|| Error::malformed_xml("libxml2 does not find a well-formed document"))
}

/// An element child of a `ds:Signature` node, by local name, and whether it is in the
/// XML-DSig namespace.
struct Child {
    node: RoNode,
    name: String,
    dsig: bool,
}

/// Reads the elements below one `ds:Signature` on libxml2's tree.
struct SignatureTree {
    /// The namespace declaration `Signature` itself is in (its URI checked): the elements below
    /// almost always use the same one, recognised by its address without comparing URIs.
    ns: libxml::bindings::xmlNsPtr,
}

impl SignatureTree {
    fn of(sig: RoNode) -> Self {
        SignatureTree {
            ns: sig
                .get_namespace()
                .filter(|ns| ns.get_href() == DSIG_NS)
                .map_or(std::ptr::null_mut(), |ns| ns.ns_ptr()),
        }
    }

    /// The element children of `node`, in document order. Text and anything else between them
    /// is skipped, as libxmlsec1 skips it.
    fn children(&self, node: RoNode) -> Vec<Child> {
        std::iter::successors(node.get_first_element_child(), |c| {
            c.get_next_element_sibling()
        })
        .map(|node| Child {
            node,
            name: node.get_name(),
            dsig: node.get_namespace().is_some_and(|ns| {
                (!self.ns.is_null() && ns.ns_ptr() == self.ns) || ns.get_href() == DSIG_NS
            }),
        })
        .collect()
    }
}

fn in_dsig(node: RoNode) -> bool {
    node.get_namespace()
        .is_some_and(|ns| ns.get_href() == DSIG_NS)
}

fn is_dsig(node: RoNode, local: &str) -> bool {
    in_dsig(node) && node.get_name() == local
}

/// True when `children` are exactly the XML-DSig elements `names`, in that order.
fn exactly(children: &[Child], names: &[&str]) -> bool {
    children.len() == names.len()
        && children
            .iter()
            .zip(names)
            .all(|(c, n)| c.dsig && c.name == *n)
}

fn names(children: &[Child]) -> Vec<&str> {
    children.iter().map(|c| c.name.as_str()).collect()
}

/// Checks the `ds:Signature` tree: one `Reference URI=""` with the enveloped and exclusive-c14n
/// transforms, SHA-256, an allowed signature method, and `KeyInfo` with one `X509Data` holding
/// the `certificates` certificates the hardened parser found there. Returns the algorithm and
/// the elements validation reads.
fn check_structure(sig: RoNode, certificates: usize) -> Result<(Algorithm, SignatureNodes)> {
    let tree = SignatureTree::of(sig);
    let children = |node| tree.children(node);
    let parts = children(sig);
    if !exactly(&parts, &["SignedInfo", "SignatureValue", "KeyInfo"]) {
        return Err(Error::SignatureScope(format!(
            "Signature must hold exactly SignedInfo, SignatureValue, KeyInfo; it holds {:?}",
            names(&parts)
        )));
    }
    let signed_info = children(parts[0].node);
    if !exactly(
        &signed_info,
        &["CanonicalizationMethod", "SignatureMethod", "Reference"],
    ) {
        let references = signed_info
            .iter()
            .filter(|c| c.dsig && c.name == "Reference")
            .count();
        return Err(Error::SignatureScope(format!(
            "SignedInfo must hold CanonicalizationMethod, SignatureMethod and one Reference and nothing else; it holds {references} Reference(s) in {:?}",
            names(&signed_info)
        )));
    }
    let c14n_alg = algorithm_attr(&signed_info[0])?;
    if c14n_alg != EXC_C14N {
        return Err(Error::AlgorithmNotAllowed(c14n_alg));
    }
    let algorithm = Algorithm::from_xmldsig(&algorithm_attr(&signed_info[1])?)?;
    let reference = &signed_info[2];
    // `xmlGetProp`, as libxmlsec1 reads it: the first attribute of that name, in any namespace.
    match reference.node.get_property("URI").as_deref() {
        Some("") => {}
        Some(uri) => {
            return Err(Error::SignatureScope(format!(
                "Reference URI `{uri}` does not cover the whole envelope; it must be \"\""
            )));
        }
        None => {
            return Err(Error::SignatureScope(
                "Reference has no URI; it must be \"\"".into(),
            ));
        }
    }
    let reference = children(reference.node);
    if !exactly(&reference, &["Transforms", "DigestMethod", "DigestValue"]) {
        return Err(Error::SignatureScope(format!(
            "Reference must hold Transforms, DigestMethod and DigestValue; it holds {:?}",
            names(&reference)
        )));
    }
    let transforms = children(reference[0].node)
        .iter()
        .map(|t| {
            if t.dsig && t.name == "Transform" {
                algorithm_attr(t)
            } else {
                Err(Error::SignatureScope(format!(
                    "Reference transforms must be Transform elements; one is {}",
                    t.name
                )))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if transforms != [ENVELOPED] && transforms != [ENVELOPED, EXC_C14N] {
        return Err(Error::SignatureScope(format!(
            "Reference transforms must be enveloped-signature then exclusive c14n; they are {transforms:?}"
        )));
    }
    let digest = algorithm_attr(&reference[1])?;
    if digest != SHA256 {
        return Err(Error::AlgorithmNotAllowed(digest));
    }
    let key_info = children(parts[2].node);
    let x509 = match key_info.as_slice() {
        [only] if only.dsig && only.name == "X509Data" => only.node,
        _ => {
            return Err(Error::CertificateMissing(
                "KeyInfo must hold exactly one X509Data with the signer certificate".into(),
            ));
        }
    };
    // The certificates themselves are taken from the hardened parse (libxmlsec1 never reads
    // them); both parsers must see as many.
    let in_x509 = children(x509)
        .iter()
        .filter(|c| c.dsig && c.name == "X509Certificate")
        .count();
    if in_x509 == 0 {
        return Err(Error::CertificateMissing(
            "X509Data holds no X509Certificate".into(),
        ));
    }
    if in_x509 != certificates {
        return Err(Error::SignatureScope(format!(
            "libxml2 finds {in_x509} certificate(s) in X509Data where the hardened parser finds {certificates}"
        )));
    }
    let nodes = SignatureNodes {
        signature: sig,
        signed_info: parts[0].node,
        c14n_method: signed_info[0].node,
        signature_method: signed_info[1].node,
        reference: signed_info[2].node,
        signature_value: parts[1].node,
    };
    Ok((algorithm, nodes))
}

/// The DER of a certificate given in base64, where line breaks are allowed (xmlsec1 writes them).
fn decode_certificate(text: &str) -> Result<Vec<u8>> {
    let decoded = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        STANDARD.decode(text.split_ascii_whitespace().collect::<String>())
    } else {
        STANDARD.decode(text)
    };
    decoded.map_err(|e| Error::CertificateMalformed(format!("X509Certificate is not base64: {e}")))
}

/// The `Algorithm` attribute, read as libxmlsec1 reads it (`xmlGetProp`).
fn algorithm_attr(e: &Child) -> Result<String> {
    e.node
        .get_property("Algorithm")
        .ok_or_else(|| Error::SignatureScope(format!("{} has no Algorithm", e.name)))
}
