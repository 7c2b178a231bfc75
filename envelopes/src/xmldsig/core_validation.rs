//! XML-DSig core validation of an envelope's signature through libxmlsec1, one step at a time:
//! the steps `xmlSecDSigCtxVerify` takes, for the one structure [`super::check_structure`]
//! admits, except the look-up of the key.
//!
//! `xmlSecDSigCtxVerify` matches the key it is given against the signature method's needs
//! (`xmlSecKeyMatch`). With OpenSSL 3, libxmlsec1 1.2 tells a public RSA key from a private one by
//! reading its modulus, public and private exponents through `EVP_PKEY_get_bn_param`, each into a
//! 2048-byte buffer: a tenth of the whole verification of a 1 KiB envelope. The key here is the
//! one of the signer certificate that has just been verified, checked against the signature
//! method by [`super::Parsed::verify`], and libxmlsec1's OpenSSL signature transform refuses a key
//! of another kind when it is set; nothing else of the verification is left out or done by snodo
//! instead of libxmlsec1. The functions called are libxmlsec1's public API, in the order and with
//! the arguments of its own `xmlSecDSigCtxProcessSignatureNode` (1.2.37), which the `xmlsec`
//! crate does not wrap.
#![allow(unsafe_code)]

use std::ffi::c_void;

use libxml::readonly::RoNode;
use libxml::tree::Document;
use xmlsec::XmlSecSignatureContext;
use xmlsec::bindings as ffi;

/// The elements of a `ds:Signature` that validation reads, in libxml2's tree of the document.
#[derive(Clone, Copy, Debug)]
pub(super) struct SignatureNodes {
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
/// `ctx` must be fresh (created, given its key, never used); it is spent afterwards.
///
/// # Errors
/// What libxmlsec1 could not do (an unknown algorithm, a malformed value): the signature is then
/// not valid either.
pub(super) fn verify(
    ctx: &mut XmlSecSignatureContext,
    doc: &Document,
    nodes: &SignatureNodes,
) -> Result<bool, &'static str> {
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
        if ffi::xmlSecDSigReferenceCtxProcessNode(reference, node(nodes.reference)) < 0 {
            return Err("processing the Reference");
        }
        if (*reference).status != ffi::xmlSecDSigStatus_xmlSecDSigStatusSucceeded {
            (*d).status = ffi::xmlSecDSigStatus_xmlSecDSigStatusInvalid;
            return Ok(false);
        }

        // SignedInfo canonicalized into the signature method, then SignatureValue checked.
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
        if ffi::xmlSecTransformVerifyNodeContent(
            method,
            node(nodes.signature_value),
            &raw mut (*d).transformCtx,
        ) < 0
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

#[cfg(test)]
mod tests {
    use xmlsec::{XmlSecKey, XmlSecKeyFormat};

    use super::*;
    use crate::pki::{self, KeyType};
    use crate::{EntityId, Envelope, Limits, Signer};

    /// A signed envelope, parsed, and the public key of a second signer of `other` kind.
    fn signed(kind: KeyType, other: KeyType) -> (super::super::Parsed, Vec<u8>, Vec<u8>) {
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
        let doc = super::super::sign(&env, &signer).unwrap();
        let parsed = super::super::parse(doc.as_bytes(), &Limits::default()).unwrap();
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

    fn check(parsed: &super::super::Parsed, pem: &[u8]) -> Result<bool, &'static str> {
        let mut ctx = XmlSecSignatureContext::new();
        ctx.insert_key(XmlSecKey::from_memory(pem, XmlSecKeyFormat::Pem, None).unwrap());
        verify(&mut ctx, &parsed.doc, &parsed.nodes)
    }

    #[test]
    fn the_signers_key_validates_and_another_of_the_same_kind_does_not() {
        let (parsed, own, other) = signed(KeyType::P256, KeyType::P256);
        assert_eq!(check(&parsed, &own), Ok(true));
        assert_eq!(check(&parsed, &other), Ok(false));
    }

    /// What `xmlSecKeyMatch` would have refused, libxmlsec1's signature transform refuses too:
    /// a key of another kind than the signature method's.
    #[test]
    fn a_key_of_another_kind_is_refused_when_set() {
        let (parsed, _, rsa) = signed(KeyType::P256, KeyType::Rsa2048);
        assert_eq!(check(&parsed, &rsa), Err("setting the key"));
    }

    #[test]
    fn a_context_is_used_once() {
        let (parsed, own, _) = signed(KeyType::P256, KeyType::P256);
        let mut ctx = XmlSecSignatureContext::new();
        ctx.insert_key(XmlSecKey::from_memory(&own, XmlSecKeyFormat::Pem, None).unwrap());
        assert_eq!(verify(&mut ctx, &parsed.doc, &parsed.nodes), Ok(true));
        assert_eq!(
            verify(&mut ctx, &parsed.doc, &parsed.nodes),
            Err("a used context, or one without a key")
        );
    }
}
