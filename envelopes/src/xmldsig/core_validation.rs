//! XML-DSig core validation of an envelope's signature through libxmlsec1, one step at a time:
//! the steps `xmlSecDSigCtxVerify` takes, for the one structure [`super::check_structure`]
//! admits, with the calls of libxmlsec1's public API that its own
//! `xmlSecDSigCtxProcessSignatureNode` (1.2.37) makes, which the `xmlsec` crate does not wrap.
//! What differs, and why each is the same verification:
//!
//! - **No key match.** `xmlSecDSigCtxVerify` matches the key it is given against the signature
//!   method's needs (`xmlSecKeyMatch`); with OpenSSL 3, libxmlsec1 1.2 tells a public RSA key from
//!   a private one by reading its modulus and exponents through `EVP_PKEY_get_bn_param`, each
//!   into a 2048-byte buffer: a tenth of the verification of a 1 KiB envelope. The key here is
//!   the verified signer certificate's, checked against the signature method by
//!   [`super::Parsed::verify`], and libxmlsec1's signature transform refuses a key of another
//!   kind when it is set (pinned by a test).
//! - **Fewer nodes walked.** libxml2 canonicalizes a node set by walking the whole document and
//!   asking of every node whether it belongs. The reference's digest leaves `Signature` out
//!   (enveloped transform): `Signature` is out of the tree while it is taken. SignedInfo's
//!   exclusive canonicalization does not depend on what is above `Signature`: the rest of the
//!   envelope is set aside while it is taken (unless a prefix list asks for namespaces declared
//!   above, pinned by a test). The tree is put back as it was each time.
//! - **SignatureValue decoded by the `base64` crate** (libxmlsec1's decoder takes one character
//!   at a time), skipping the same white space; the value is then checked by libxmlsec1's
//!   signature transform as before.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint, c_void};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use libxml::readonly::RoNode;
use libxml::tree::Document;
use xmlsec::XmlSecSignatureContext;
use xmlsec::bindings as ffi;

unsafe extern "C" {
    /// libxmlsec1's switch of its default error callback's output (`xmlsec/errors.h`), which
    /// the `xmlsec` crate's bindings leave out.
    fn xmlSecErrorsDefaultCallbackEnableOutput(enabled: c_int);
}

/// Stops libxmlsec1 printing its errors on standard error, once per process (libxmlsec1 is
/// initialized by then: a context exists). A signature that does not verify is a refusal
/// reported to its sender with its reason, not a line on the hub's console for every tampered
/// envelope a partner sends.
fn quiet() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets one flag of libxmlsec1's, read by its default error callback.
    QUIET.call_once(|| unsafe { xmlSecErrorsDefaultCallbackEnableOutput(0) });
}

/// The elements of a `ds:Signature` that validation reads, in libxml2's tree of the document.
#[derive(Clone, Copy, Debug)]
pub(super) struct SignatureNodes {
    /// `Signature`, the last child of the root.
    pub(super) signature: RoNode,
    pub(super) signed_info: RoNode,
    pub(super) c14n_method: RoNode,
    pub(super) signature_method: RoNode,
    /// The one `Reference`, whose `URI` is `""`.
    pub(super) reference: RoNode,
    pub(super) signature_value: RoNode,
}

/// Core validation of the signature whose elements are `nodes`, in `doc`, with the key inserted in
/// `ctx`: `Ok(true)` when the reference's digest and the signature value both match.
///
/// `ctx` must be fresh (created, given its key, never used); it is spent afterwards. `doc` is
/// changed while the reference and SignedInfo are canonicalized (see [`SignatureSetAside`] and
/// [`RootSetAside`]) and put back as it was each time.
///
/// # Errors
/// What libxmlsec1 could not do (an unknown algorithm, a malformed value): the signature is then
/// not valid either.
pub(super) fn verify(
    ctx: &mut XmlSecSignatureContext,
    doc: &mut Document,
    nodes: &SignatureNodes,
) -> Result<bool, &'static str> {
    quiet();
    let node = |n: RoNode| n.node_ptr().cast::<ffi::xmlNode>();
    let doc_ptr = doc.doc_ptr().cast::<ffi::xmlDoc>();
    // SAFETY: `ctx` wraps a live `xmlSecDSigCtx` that this function alone uses while it runs; the
    // nodes are elements of `doc`, which outlives the call and is not changed by anyone else.
    // Whatever libxmlsec1 creates here is put where `xmlSecDSigCtxVerify` would put it (the
    // context's transforms and reference list), so that `xmlSecDSigCtxDestroy`, run when `ctx`
    // is dropped, frees it as it would.
    unsafe {
        let d = ctx.as_ptr();
        if !(*d).signMethod.is_null() || (*d).signKey.is_null() {
            return Err("a used context, or one without a key");
        }
        (*d).operation = ffi::xmlSecTransformOperation_xmlSecTransformOperationVerify;
        (*d).status = ffi::xmlSecDSigStatus_xmlSecDSigStatusUnknown;
        (*d).signValueNode = node(nodes.signature_value);

        // SignedInfo: the canonicalization method, then the signature method.
        let c14n = ffi::xmlSecTransformCtxNodeRead(
            &raw mut (*d).transformCtx,
            node(nodes.c14n_method),
            ffi::xmlSecTransformUsageC14NMethod,
        );
        if c14n.is_null() {
            return Err("reading CanonicalizationMethod");
        }
        (*d).c14nMethod = c14n;
        let method = ffi::xmlSecTransformCtxNodeRead(
            &raw mut (*d).transformCtx,
            node(nodes.signature_method),
            ffi::xmlSecTransformUsageSignatureMethod,
        );
        if method.is_null() {
            return Err("reading SignatureMethod");
        }
        (*d).signMethod = method;
        (*method).operation = (*d).operation;

        // The key, as `xmlSecDSigCtxProcessKeyInfoNode` sets it once matched.
        if ffi::xmlSecTransformSetKey(method, (*d).signKey) < 0 {
            return Err("setting the key");
        }

        // The reference: digest of the document through its transforms, against DigestValue.
        let reference = ffi::xmlSecDSigReferenceCtxCreate(
            d,
            ffi::xmlSecDSigReferenceOrigin_xmlSecDSigReferenceOriginSignedInfo,
        );
        if reference.is_null() {
            return Err("creating the reference context");
        }
        if ffi::xmlSecPtrListAdd(
            &raw mut (*d).signedInfoReferences,
            reference.cast::<c_void>(),
        ) < 0
        {
            ffi::xmlSecDSigReferenceCtxDestroy(reference);
            return Err("keeping the reference context");
        }
        // Its transforms are enveloped-signature then a canonicalization ([`check_structure`]
        // admits no others): the digest of the document without `Signature`, whose nodes
        // libxml2 would still walk (with their attributes and namespaces) only to be told they
        // are left out. `Signature` is taken out of the tree meanwhile: the same nodes are
        // canonicalized, and the enveloped transform has nothing left to remove.
        //
        // [`check_structure`]: super::check_structure
        let aside = SignatureSetAside::new(node(nodes.signature));
        let processed = ffi::xmlSecDSigReferenceCtxProcessNode(reference, node(nodes.reference));
        drop(aside);
        if processed < 0 {
            return Err("processing the Reference");
        }
        if (*reference).status != ffi::xmlSecDSigStatus_xmlSecDSigStatusSucceeded {
            (*d).status = ffi::xmlSecDSigStatus_xmlSecDSigStatusInvalid;
            return Ok(false);
        }

        // SignedInfo canonicalized into the signature method, then SignatureValue checked.
        // Exclusive canonicalization of SignedInfo does not depend on anything above
        // `Signature`, which is its point; libxml2 walks the whole document all the same, asking
        // of each node whether it is in SignedInfo. The rest of the envelope is set aside
        // meanwhile. A prefix list (`InclusiveNamespaces`) is the exception, which looks
        // namespaces up in the ancestors: then the whole tree stays.
        let _aside = if nodes.c14n_method.get_first_element_child().is_none() {
            Some(RootSetAside::new(doc_ptr, node(nodes.signature))?)
        } else {
            None
        };
        let first = ffi::xmlSecTransformGetDataType(
            (*d).transformCtx.first,
            ffi::xmlSecTransformMode_xmlSecTransformModePush,
            &raw mut (*d).transformCtx,
        );
        if u32::from(first) & ffi::xmlSecTransformDataTypeXml == 0 {
            return Err("a canonicalization method that does not read XML");
        }
        let signed_info = ffi::xmlSecNodeSetGetChildren(doc_ptr, node(nodes.signed_info), 1, 0);
        if signed_info.is_null() {
            return Err("selecting SignedInfo");
        }
        let executed = ffi::xmlSecTransformCtxXmlExecute(&raw mut (*d).transformCtx, signed_info);
        ffi::xmlSecNodeSetDestroy(signed_info);
        if executed < 0 {
            return Err("canonicalizing SignedInfo");
        }
        // SignatureValue, decoded here (what `xmlSecTransformVerifyNodeContent` does with a
        // decoder that takes one character at a time), then checked.
        let value = signature_value(nodes.signature_value)?;
        let size = c_uint::try_from(value.len()).map_err(|_| "SignatureValue is too long")?;
        if ffi::xmlSecTransformVerify(method, value.as_ptr(), size, &raw mut (*d).transformCtx) < 0
        {
            return Err("checking SignatureValue");
        }
        let valid = (*method).status == ffi::xmlSecTransformStatus_xmlSecTransformStatusOk;
        (*d).status = if valid {
            ffi::xmlSecDSigStatus_xmlSecDSigStatusSucceeded
        } else {
            ffi::xmlSecDSigStatus_xmlSecDSigStatusInvalid
        };
        Ok(valid)
    }
}

/// The bytes of SignatureValue's base64 text (all of it, as `xmlNodeGetContent` gives it), with
/// the white space libxmlsec1's decoder skips (space, tab, CR, LF) left out. Stricter than that
/// decoder only in refusing non-canonical padding bits, which no signer writes.
fn signature_value(node: RoNode) -> Result<Vec<u8>, &'static str> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let text = node.get_content();
    let decoded = if text.as_bytes().iter().any(space) {
        STANDARD.decode(text.bytes().filter(|b| !space(b)).collect::<Vec<u8>>())
    } else {
        STANDARD.decode(text)
    };
    decoded.map_err(|_| "decoding SignatureValue, which is not base64")
}

/// `Signature` taken out of the document, back where it was once dropped.
struct SignatureSetAside {
    signature: *mut ffi::xmlNode,
    parent: *mut ffi::xmlNode,
    /// What followed `Signature` (white space at most), to put it back before.
    next: *mut ffi::xmlNode,
}

impl SignatureSetAside {
    /// # Safety
    /// `signature` is an element of a document below its root, and both stay alive and
    /// untouched by anyone else until the result is dropped.
    unsafe fn new(signature: *mut ffi::xmlNode) -> Self {
        // SAFETY: as the caller promises; `xmlUnlinkNode` takes `signature`, whole, out of its
        // parent's children (it stays in the document's keeping: `doc` is unchanged).
        unsafe {
            let aside = SignatureSetAside {
                signature,
                parent: (*signature).parent,
                next: (*signature).next,
            };
            ffi::xmlUnlinkNode(signature);
            aside
        }
    }
}

impl Drop for SignatureSetAside {
    fn drop(&mut self) {
        // SAFETY: `signature` goes back among its parent's children where it was, and the tree
        // is as it was parsed.
        unsafe {
            if self.next.is_null() {
                ffi::xmlAddChild(self.parent, self.signature);
            } else {
                ffi::xmlAddPrevSibling(self.next, self.signature);
            }
        }
    }
}

/// The document's root element set aside for `Signature`, the root again once dropped.
///
/// Canonicalization still reads SignedInfo's elements where they are, with the namespace
/// declarations they point to (which stay where they were, alive with the set-aside root).
struct RootSetAside {
    doc: *mut ffi::xmlDoc,
    root: *mut ffi::xmlNode,
    signature: *mut ffi::xmlNode,
    /// What followed `Signature` (white space at most), to put it back before.
    next: *mut ffi::xmlNode,
}

impl RootSetAside {
    /// # Safety
    /// `signature` is an element of `doc` below its root, and the two stay alive and untouched
    /// by anyone else until the result is dropped.
    unsafe fn new(
        doc: *mut ffi::xmlDoc,
        signature: *mut ffi::xmlNode,
    ) -> Result<Self, &'static str> {
        // SAFETY: as the caller promises; `xmlDocSetRootElement` unlinks `signature` and puts it
        // in the root's place, returning the root, unlinked but whole.
        unsafe {
            let next = (*signature).next;
            let root = ffi::xmlDocSetRootElement(doc, signature);
            if root.is_null() {
                return Err("setting the envelope aside");
            }
            Ok(RootSetAside {
                doc,
                root,
                signature,
                next,
            })
        }
    }
}

impl Drop for RootSetAside {
    fn drop(&mut self) {
        // SAFETY: the root takes its place back (which unlinks `signature`), and `signature`
        // goes back where it was among the root's children; the tree is then as it was parsed,
        // and freed whole with the document.
        unsafe {
            ffi::xmlDocSetRootElement(self.doc, self.root);
            if self.next.is_null() {
                ffi::xmlAddChild(self.root, self.signature);
            } else {
                ffi::xmlAddPrevSibling(self.next, self.signature);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use xmlsec::{XmlSecKey, XmlSecKeyFormat};

    use super::super::{DSIG_NS, ENVELOPED, EXC_C14N, Parsed, SHA256, parse, parse_libxml, sign};
    use super::*;
    use crate::pki::{self, KeyType};
    use crate::{EntityId, Envelope, Limits, Signer};

    /// An envelope signed by `sign`, parsed, with its signer's public key and the public key of
    /// another signer, of `other` kind.
    fn signed_by(
        kind: KeyType,
        other: KeyType,
        sign: impl FnOnce(&Envelope, &Signer) -> String,
    ) -> (Parsed, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let turin: EntityId = "comune:001272".parse().unwrap();
        pki::init(dir.path(), std::slice::from_ref(&turin), kind).unwrap();
        let signer = Signer::load(
            &dir.path().join("comune-001272.key"),
            &dir.path().join("comune-001272.crt"),
        )
        .unwrap();
        let env = Envelope::builder(
            turin,
            "anpr:ministero".parse::<EntityId>().unwrap(),
            "residenza.cambio",
            "richiesta",
        )
        .json(serde_json::json!({"cf": "RSSMRA80A01L219X"}))
        .build()
        .unwrap();
        let doc = sign(&env, &signer);
        let parsed = parse(doc.as_bytes(), &Limits::default()).unwrap();
        let own = openssl::x509::X509::from_der(&parsed.leaf)
            .unwrap()
            .public_key()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let other = pki::generate_key(other)
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        (parsed, own, other)
    }

    fn signed(kind: KeyType, other: KeyType) -> (Parsed, Vec<u8>, Vec<u8>) {
        signed_by(kind, other, |env, signer| sign(env, signer).unwrap())
    }

    fn check(parsed: &mut Parsed, pem: &[u8]) -> Result<bool, &'static str> {
        let mut ctx = XmlSecSignatureContext::new();
        ctx.insert_key(XmlSecKey::from_memory(pem, XmlSecKeyFormat::Pem, None).unwrap());
        let nodes = parsed.nodes;
        verify(&mut ctx, &mut parsed.doc, &nodes)
    }

    /// The names of the elements of `doc`, in document order.
    fn elements(doc: &Document) -> Vec<String> {
        fn walk(node: RoNode, out: &mut Vec<String>) {
            out.push(node.get_name());
            let mut child = node.get_first_element_child();
            while let Some(c) = child {
                walk(c, out);
                child = c.get_next_element_sibling();
            }
        }
        let mut out = Vec::new();
        walk(doc.get_root_readonly().unwrap(), &mut out);
        out
    }

    #[test]
    fn the_signers_key_validates_and_another_of_the_same_kind_does_not() {
        let (mut parsed, own, other) = signed(KeyType::P256, KeyType::P256);
        let before = elements(&parsed.doc);
        assert_eq!(check(&mut parsed, &own), Ok(true));
        // The envelope set aside for SignedInfo is back where it was, and again for the second.
        assert_eq!(elements(&parsed.doc), before);
        assert_eq!(check(&mut parsed, &other), Ok(false));
        assert_eq!(elements(&parsed.doc), before);
        assert_eq!(check(&mut parsed, &own), Ok(true));
    }

    /// What `xmlSecKeyMatch` would have refused, libxmlsec1's signature transform refuses too:
    /// a key of another kind than the signature method's.
    #[test]
    fn a_key_of_another_kind_is_refused_when_set() {
        let (mut parsed, _, rsa) = signed(KeyType::P256, KeyType::Rsa2048);
        assert_eq!(check(&mut parsed, &rsa), Err("setting the key"));
    }

    #[test]
    fn a_context_is_used_once() {
        let (mut parsed, own, _) = signed(KeyType::P256, KeyType::P256);
        let mut ctx = XmlSecSignatureContext::new();
        ctx.insert_key(XmlSecKey::from_memory(&own, XmlSecKeyFormat::Pem, None).unwrap());
        let nodes = parsed.nodes;
        assert_eq!(verify(&mut ctx, &mut parsed.doc, &nodes), Ok(true));
        assert_eq!(
            verify(&mut ctx, &mut parsed.doc, &nodes),
            Err("a used context, or one without a key")
        );
    }

    #[test]
    fn signature_values_are_base64_with_the_white_space_libxmlsec1_skips() {
        let value = |text: &str| {
            let doc = parse_libxml(format!("<v>{text}</v>").as_bytes()).unwrap();
            signature_value(doc.get_root_readonly().unwrap())
        };
        assert_eq!(value("AAEC\r\n\tAwQ= "), Ok(vec![0, 1, 2, 3, 4]));
        assert!(value("AAECAw!=").is_err());
    }

    /// With a prefix list, exclusive canonicalization renders the listed prefixes declared
    /// above SignedInfo: here `r`, on the root. That signature validates only if the root stays.
    #[test]
    fn a_prefix_list_naming_a_prefix_of_the_root_validates() {
        let by_libxmlsec1 = |env: &Envelope, signer: &Signer| {
            let template = format!(
                concat!(
                    "<ds:Signature xmlns:ds=\"{ns}\"><ds:SignedInfo>",
                    "<ds:CanonicalizationMethod Algorithm=\"{c14n}\">",
                    "<ec:InclusiveNamespaces xmlns:ec=\"{c14n}\" PrefixList=\"r\"/>",
                    "</ds:CanonicalizationMethod>",
                    "<ds:SignatureMethod Algorithm=\"{alg}\"/>",
                    "<ds:Reference URI=\"\"><ds:Transforms>",
                    "<ds:Transform Algorithm=\"{env}\"/><ds:Transform Algorithm=\"{c14n}\"/>",
                    "</ds:Transforms><ds:DigestMethod Algorithm=\"{sha}\"/><ds:DigestValue/>",
                    "</ds:Reference></ds:SignedInfo><ds:SignatureValue/>",
                    "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>",
                    "</ds:X509Data></ds:KeyInfo></ds:Signature>"
                ),
                ns = DSIG_NS,
                c14n = EXC_C14N,
                alg = signer.algorithm.xmldsig_uri(),
                env = ENVELOPED,
                sha = SHA256,
                cert = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &signer.cert_der
                ),
            );
            let unsigned = crate::xml::encode_with_signature(env, &template).replacen(
                "<Envelope xmlns=\"urn:snodo:envelope:1\"",
                "<Envelope xmlns=\"urn:snodo:envelope:1\" xmlns:r=\"urn:r\"",
                1,
            );
            let doc = parse_libxml(unsigned.as_bytes()).unwrap();
            let mut ctx = XmlSecSignatureContext::new();
            ctx.insert_key(
                XmlSecKey::from_memory(&signer.key_pem, XmlSecKeyFormat::Pem, None).unwrap(),
            );
            ctx.sign_document(&doc).unwrap();
            doc.to_string()
        };
        let (mut parsed, own, _) = signed_by(KeyType::P256, KeyType::P256, by_libxmlsec1);
        assert_eq!(check(&mut parsed, &own), Ok(true));
    }
}
