//! libxml2's parse of the documents libxmlsec1 signs and verifies, with one parser context kept
//! per thread: making a context, its input stack and its dictionary of names anew takes about a
//! fifth of the parse of a 1 KiB envelope, and the `libxml` crate makes one per document.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_int;

use libxml::bindings as ffi;
use libxml::tree::Document;

/// The options of every parse: no network, no messages on stderr, short texts kept inside their
/// nodes. Nothing else: no entity substitution, no DTD loading, no recovery from errors.
const OPTIONS: c_int = (ffi::xmlParserOption_XML_PARSE_NONET
    | ffi::xmlParserOption_XML_PARSE_NOERROR
    | ffi::xmlParserOption_XML_PARSE_NOWARNING
    | ffi::xmlParserOption_XML_PARSE_COMPACT) as c_int;

/// A context's dictionary keeps every name it has seen, and names are the sender's to choose:
/// past this many, the context is replaced.
const MAX_NAMES: c_int = 10_000;

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// A libxml2 parser context, freed when dropped.
struct Context(ffi::xmlParserCtxtPtr);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context was made by `xmlNewParserCtxt` and is freed once; the documents
        // it parsed hold their own reference to its dictionary.
        unsafe { ffi::xmlFreeParserCtxt(self.0) }
    }
}

/// Parses `input` (UTF-8, or what its declaration says) with this thread's context.
///
/// # Errors
/// `None` when libxml2 does not find a well-formed document, or cannot make a context.
pub(super) fn parse(input: &[u8]) -> Option<Document> {
    let len = c_int::try_from(input.len()).ok()?;
    CONTEXT.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            libxml::init_parser();
            // SAFETY: libxml2 is initialized; a null result is handled.
            let ctxt = unsafe { ffi::xmlNewParserCtxt() };
            if ctxt.is_null() {
                return None;
            }
            *slot = Some(Context(ctxt));
        }
        let ctxt = slot.as_ref()?.0;
        // SAFETY: `ctxt` is this thread's own context, used by nothing else while this runs;
        // `xmlCtxtReadMemory` resets it, reads `len` bytes of `input` (alive for the call), and
        // returns a document the caller owns, or null when the input is not well-formed.
        let (doc, names) = unsafe {
            let doc = ffi::xmlCtxtReadMemory(
                ctxt,
                input.as_ptr().cast(),
                len,
                c"noname.xml".as_ptr(),
                std::ptr::null(),
                OPTIONS,
            );
            (doc, ffi::xmlDictSize((*ctxt).dict))
        };
        if names > MAX_NAMES {
            *slot = None;
        }
        (!doc.is_null()).then(|| Document::new_ptr(doc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_one_after_another_and_a_bad_one_changes_nothing() {
        let a = parse(b"<a xmlns='urn:a'><b>1</b></a>").unwrap();
        assert!(parse(b"<a><b></a>").is_none());
        let c = parse(b"<c/>").unwrap();
        assert_eq!(a.get_root_readonly().unwrap().get_name(), "a");
        assert_eq!(c.get_root_readonly().unwrap().get_name(), "c");
        assert_eq!(
            a.to_string(),
            parse(a.to_string().as_bytes()).unwrap().to_string()
        );
    }

    #[test]
    fn a_context_that_has_seen_too_many_names_is_replaced() {
        let many: String = (0..MAX_NAMES + 10).map(|i| format!("<n{i}/>")).collect();
        let doc = parse(format!("<r>{many}</r>").as_bytes()).unwrap();
        assert!(CONTEXT.with(|slot| slot.borrow().is_none()));
        // The document outlives the context it came from.
        assert_eq!(
            doc.get_root_readonly().unwrap().get_child_elements().len(),
            usize::try_from(MAX_NAMES + 10).unwrap()
        );
        assert!(parse(b"<after/>").is_some());
    }

    /// The libxml crate's `no_def_dtd` is XML_PARSE_DTDLOAD for XML: an external subset would
    /// be read from disk. Not here.
    #[test]
    fn an_external_subset_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let dtd = dir.path().join("x.dtd");
        std::fs::write(&dtd, "<!ATTLIST r a CDATA 'from the file'>").unwrap();
        let doc = parse(format!("<!DOCTYPE r SYSTEM '{}'><r/>", dtd.display()).as_bytes()).unwrap();
        // SAFETY: a live document, read only.
        let external = unsafe { (*doc.doc_ptr()).extSubset };
        assert!(external.is_null());
        assert_eq!(doc.get_root_readonly().unwrap().get_attribute("a"), None);
    }
}
