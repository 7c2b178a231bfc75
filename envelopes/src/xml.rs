//! The XML encoding of an envelope (quick-xml), with a hardened parser: UTF-8 only, no DTD, no
//! entities beyond the five predefined, no comments or processing instructions, bounded size and
//! depth, a fixed structure `Envelope(Header, Body, ds:Signature?)`.

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::escape::{escape, partial_escape};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::envelope::{Body, Envelope};
use crate::error::{Error, Result};
use crate::header::{ContentType, Header, HeaderFields, format_time};
use crate::limits::Limits;

/// The namespace of the envelope's own elements.
pub const ENVELOPE_NS: &str = "urn:snodo:envelope:1";
/// The XML-DSig namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Encodes an envelope without signature.
#[must_use]
pub fn encode(envelope: &Envelope) -> String {
    encode_with_signature(envelope, "")
}

/// Encodes an envelope with `signature` (a serialized `ds:Signature` element, or nothing) as the
/// last child of the root.
pub(crate) fn encode_with_signature(envelope: &Envelope, signature: &str) -> String {
    let h = &envelope.header;
    let mut out = String::with_capacity(512 + signature.len() + body_len_hint(&envelope.body));
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope xmlns=\"");
    out.push_str(ENVELOPE_NS);
    out.push_str("\"><Header>");
    let mut field = |name: &str, value: &str| {
        let _ = write!(out, "<{name}>{}</{name}>", escape(value));
    };
    field("id", &h.id.to_string());
    field("sender", h.sender.as_str());
    field("recipient", h.recipient.as_str());
    field("service", &h.service);
    field("action", &h.action);
    field("conversation", &h.conversation);
    if let Some(r) = h.in_reply_to {
        field("in_reply_to", &r.to_string());
    }
    field("profile", h.profile.as_str());
    field("created_at", &format_time(h.created_at));
    if let Some(t) = h.expires_at {
        field("expires_at", &format_time(t));
    }
    if let Some(n) = h.sequence {
        field("sequence", &n.to_string());
    }
    field("content_type", h.content_type.as_str());
    out.push_str("</Header><Body>");
    match &envelope.body {
        Body::Json(v) => out.push_str(&partial_escape(json_text_for_xml(v))),
        Body::Xml(x) => out.push_str(x),
    }
    out.push_str("</Body>");
    out.push_str(signature);
    out.push_str("</Envelope>");
    out
}

/// A JSON value as text that XML can carry: serde_json escapes control characters but writes
/// U+FFFE and U+FFFF as they are, and XML 1.0 forbids them. They can only occur inside JSON
/// strings, where `\uFFFE` means the same.
fn json_text_for_xml(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.contains(['\u{fffe}', '\u{ffff}']) {
        text.replace('\u{fffe}', "\\ufffe")
            .replace('\u{ffff}', "\\uffff")
    } else {
        text
    }
}

/// True for the characters XML 1.0 allows in a document (its `Char` production).
#[must_use]
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// The first character XML 1.0 does not allow, written `U+` and its hex code point.
fn forbidden_char(s: &str) -> Option<String> {
    // Fast path over the bytes: control characters other than tab, CR and LF are the only
    // forbidden ASCII; outside ASCII only U+FFFE and U+FFFF are (a `str` holds no surrogates),
    // and both start with the byte 0xEF, which sends the text to the exact check below. Whole
    // blocks are judged without stopping early, which the compiler turns into vector code.
    let suspect = |b: u8| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF;
    if s.as_bytes()
        .chunks(64)
        .all(|block| !block.iter().fold(false, |any, &b| any | suspect(b)))
    {
        return None;
    }
    s.chars()
        .find(|&c| !is_xml_char(c))
        .map(|c| format!("U+{:04X}", u32::from(c)))
}

/// The first forbidden character that unescaping `text` brought in. Text that unescaping left
/// as it was is a slice of the input, which the caller has checked whole with
/// [`forbidden_char`]; only a reference (`&#1;`) can add a character, and then the text is new.
#[expect(
    clippy::ptr_arg,
    reason = "whether unescaping borrowed or allocated is the point"
)]
fn forbidden_reference(text: &Cow<'_, str>) -> Option<String> {
    match text {
        Cow::Borrowed(_) => None,
        Cow::Owned(unescaped) => forbidden_char(unescaped),
    }
}

/// True when text is only XML white space (space, tab, CR, LF): what may separate the
/// envelope's own elements. Not Unicode white space: U+00A0 is content.
fn is_xml_space(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn body_len_hint(body: &Body) -> usize {
    match body {
        Body::Json(_) => 256,
        Body::Xml(x) => x.len(),
    }
}

/// A parsed XML envelope.
#[derive(Debug)]
pub struct Decoded {
    /// The envelope model.
    pub envelope: Envelope,
    /// What is kept of the `ds:Signature` that is the last child of the root, if there is one.
    /// Its content is checked like the rest of the document; its structure is judged on the tree
    /// libxmlsec1 verifies.
    pub signature: Option<SignatureContent>,
    /// How many `ds:Signature` elements the whole document holds, wherever they are.
    pub signature_count: usize,
}

/// What the hardened parser keeps of an envelope's `ds:Signature`: what snodo itself reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SignatureContent {
    /// The text of each `KeyInfo/X509Data/X509Certificate` (base64, unescaped), in document
    /// order: the signer's certificate and its chain. libxmlsec1 never reads them (it is given
    /// the key), so they are taken from the parser whose view snodo trusts for the header too.
    pub certificates: Vec<String>,
}

/// Decodes an XML envelope, signed or not, without verifying anything cryptographic.
///
/// # Errors
/// A precise [`Error`] for the first fault: size, depth, forbidden construct, structure, or a
/// header field.
pub fn decode(input: &[u8], limits: &Limits) -> Result<Decoded> {
    limits.check_size(input.len())?;
    let text =
        std::str::from_utf8(input).map_err(|e| Error::malformed_xml(format!("not UTF-8: {e}")))?;
    if text.starts_with('\u{feff}') {
        return Err(Error::malformed_xml("byte order mark before the document"));
    }
    if let Some(c) = forbidden_char(text) {
        return Err(Error::malformed_xml(format!(
            "character {c} is not allowed in XML"
        )));
    }
    let mut p = Parser::new(text, limits);
    let envelope_start = p.prolog()?;
    let (envelope, signature) = p.envelope(&envelope_start)?;
    p.epilog()?;
    let signature_count = p.signatures;
    Ok(Decoded {
        envelope,
        signature,
        signature_count,
    })
}

/// Checks that `xml` is a self-contained well-formed fragment: elements and text only, every
/// namespace prefix bound inside it, only characters XML 1.0 allows (also as references), no
/// `]]>` in text, nesting within `limits`. Returns how many `ds:Signature` elements it holds.
///
/// # Errors
/// [`Error::InvalidBody`] naming the fault, or [`Error::TooDeep`].
pub fn check_fragment(xml: &str, limits: &Limits) -> Result<usize> {
    check_fragment_at(xml, limits, 0)
}

fn check_fragment_at(xml: &str, limits: &Limits, base_depth: usize) -> Result<usize> {
    let mut reader = NsReader::from_str(xml);
    let mut depth = base_depth;
    let mut signatures = 0;
    let bad = |e: &dyn std::fmt::Display| Error::InvalidBody(format!("XML body: {e}"));
    if let Some(c) = forbidden_char(xml) {
        return Err(bad(&format!("character {c} is not allowed in XML")));
    }
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| bad(&e))?;
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let ns = Ns::of(ns).map_err(|e| Error::InvalidBody(format!("XML body: {e}")))?;
                for a in s.attributes() {
                    let a = a.map_err(|e| bad(&e))?;
                    let (ans, _) = reader.resolve_attribute(a.key);
                    if let ResolveResult::Unknown(p) = ans {
                        return Err(bad(&format!(
                            "attribute prefix `{}` is not bound to a namespace",
                            String::from_utf8_lossy(&p)
                        )));
                    }
                    let value = a.unescape_value().map_err(|e| bad(&e))?;
                    if let Some(c) = forbidden_reference(&value) {
                        return Err(bad(&format!(
                            "attribute value refers to {c}, which XML does not allow"
                        )));
                    }
                }
                if ns == Ns::Dsig && s.local_name().as_ref() == b"Signature" {
                    signatures += 1;
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(Error::TooDeep {
                            limit: limits.max_depth,
                        });
                    }
                }
            }
            Event::End(_) => depth -= 1,
            Event::Text(t) => {
                if contains_cdata_end(&t) {
                    return Err(bad(&"`]]>` is not allowed in text; write `]]&gt;`"));
                }
                let text = t.unescape().map_err(|e| bad(&e))?;
                if let Some(c) = forbidden_reference(&text) {
                    return Err(bad(&format!(
                        "text refers to {c}, which XML does not allow"
                    )));
                }
            }
            Event::CData(_) => {}
            Event::Comment(_) => return Err(Error::InvalidBody("XML body holds a comment".into())),
            Event::PI(_) | Event::Decl(_) => {
                return Err(Error::InvalidBody(
                    "XML body holds a processing instruction".into(),
                ));
            }
            Event::DocType(_) => return Err(Error::DoctypeForbidden),
            Event::Eof => break,
        }
    }
    if depth != base_depth {
        return Err(Error::InvalidBody("XML body has unclosed elements".into()));
    }
    Ok(signatures)
}

/// True when raw text holds `]]>`, which XML forbids outside CDATA sections.
fn contains_cdata_end(raw: &[u8]) -> bool {
    // A vectorized search: texts here are up to the whole body, or a certificate in base64.
    memchr::memmem::find(raw, b"]]>").is_some()
}

/// The namespace of an element, as far as the envelope's rules need to tell them apart: no
/// allocation per element, which the parser meets on every start tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    /// No namespace.
    None,
    /// [`ENVELOPE_NS`].
    Envelope,
    /// [`DSIG_NS`].
    Dsig,
    /// Any other.
    Other,
}

impl Ns {
    fn of(r: ResolveResult<'_>) -> std::result::Result<Ns, String> {
        match r {
            ResolveResult::Bound(ns) => Ok(match ns.as_ref() {
                b if b == ENVELOPE_NS.as_bytes() => Ns::Envelope,
                b if b == DSIG_NS.as_bytes() => Ns::Dsig,
                _ => Ns::Other,
            }),
            ResolveResult::Unbound => Ok(Ns::None),
            ResolveResult::Unknown(p) => Err(unbound_prefix(&p)),
        }
    }
}

fn unbound_prefix(prefix: &[u8]) -> String {
    format!(
        "prefix `{}` is not bound to a namespace",
        String::from_utf8_lossy(prefix)
    )
}

/// A pull parser over the envelope document that applies the hardening rules on every event.
struct Parser<'i> {
    input: &'i str,
    reader: NsReader<&'i [u8]>,
    limits: &'i Limits,
    depth: usize,
    signatures: usize,
}

/// One significant event: a start tag with its resolved namespace, an end tag, or text.
enum Item<'i> {
    Start(Ns, BytesStart<'i>, bool),
    End,
    Text(Cow<'i, str>),
    Eof,
}

impl<'i> Parser<'i> {
    fn new(input: &'i str, limits: &'i Limits) -> Self {
        let mut reader = NsReader::from_reader(input.as_bytes());
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        Parser {
            input,
            reader,
            limits,
            depth: 0,
            signatures: 0,
        }
    }

    /// Reads the next event, refusing what the format forbids and keeping track of depth.
    fn next(&mut self) -> Result<Item<'i>> {
        let (ns, event) = match self.reader.read_resolved_event() {
            Ok((ns, event)) => (Ns::of(ns), event),
            Err(e) => return Err(self.syntax(e)),
        };
        let (s, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            other => return self.other(other),
        };
        let ns = ns.map_err(Error::malformed_xml)?;
        if !empty {
            self.depth += 1;
            if self.depth > self.limits.max_depth {
                return Err(Error::TooDeep {
                    limit: self.limits.max_depth,
                });
            }
        }
        if ns == Ns::Dsig && s.local_name().as_ref() == b"Signature" {
            self.signatures += 1;
        }
        Ok(Item::Start(ns, s, empty))
    }

    fn other(&mut self, event: Event<'i>) -> Result<Item<'i>> {
        Ok(match event {
            Event::Start(_) | Event::Empty(_) => {
                return Err(Error::malformed_xml("internal: start tag routed as other"));
            }
            Event::End(_) => {
                self.depth -= 1;
                Item::End
            }
            Event::Text(t) => {
                if contains_cdata_end(&t) {
                    return Err(self.syntax("`]]>` is not allowed in text"));
                }
                let text = t.unescape().map_err(|e| self.syntax(e))?;
                if let Some(c) = forbidden_reference(&text) {
                    return Err(self.syntax(format!(
                        "a character reference to {c}, which XML does not allow"
                    )));
                }
                Item::Text(text)
            }
            Event::CData(c) => Item::Text(match c.into_inner() {
                Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).unwrap_or_default()),
                Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
            }),
            Event::DocType(_) => return Err(Error::DoctypeForbidden),
            Event::Comment(_) => return Err(Error::XmlForbidden("comment")),
            Event::PI(_) => return Err(Error::XmlForbidden("processing instruction")),
            Event::Decl(_) => return Err(Error::XmlForbidden("XML declaration after the start")),
            Event::Eof => Item::Eof,
        })
    }

    fn syntax(&self, e: impl std::fmt::Display) -> Error {
        Error::malformed_xml(format!("at byte {}: {e}", self.reader.buffer_position()))
    }

    /// Skips the XML declaration and whitespace, returns the root start tag.
    fn prolog(&mut self) -> Result<BytesStart<'i>> {
        let first = match self.reader.read_resolved_event() {
            Ok((_, event)) => event,
            Err(e) => return Err(self.syntax(e)),
        };
        match first {
            Event::Decl(d) => {
                // XML 1.1 allows other characters and has no canonical form in XML-DSig.
                let version = d.version().map_err(|e| self.syntax(e))?;
                if version.as_ref() != b"1.0" {
                    return Err(Error::malformed_xml(format!(
                        "XML version {} is not 1.0",
                        String::from_utf8_lossy(&version)
                    )));
                }
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| self.syntax(e))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(Error::malformed_xml(format!(
                            "encoding `{}` is not UTF-8",
                            String::from_utf8_lossy(&enc)
                        )));
                    }
                }
            }
            Event::Start(s) => return self.root(None, s),
            Event::Empty(_) => return Err(Error::malformed_xml("the root element is empty")),
            Event::Text(t) if is_blank(&t) => {}
            Event::DocType(_) => return Err(Error::DoctypeForbidden),
            Event::Comment(_) => return Err(Error::XmlForbidden("comment")),
            Event::PI(_) => return Err(Error::XmlForbidden("processing instruction")),
            Event::Eof => return Err(Error::malformed_xml("empty document")),
            _ => return Err(Error::malformed_xml("content before the root element")),
        }
        loop {
            match self.next()? {
                Item::Text(t) if is_xml_space(&t) => {}
                Item::Start(ns, s, false) => return self.root(Some(ns), s),
                Item::Eof => return Err(Error::malformed_xml("no root element")),
                _ => return Err(Error::malformed_xml("content before the root element")),
            }
        }
    }

    fn root(&mut self, ns: Option<Ns>, s: BytesStart<'i>) -> Result<BytesStart<'i>> {
        let ns = match ns {
            Some(ns) => ns,
            None => {
                // The very first event bypassed `next`: account for it here.
                self.depth += 1;
                let (r, _) = self.reader.resolve_element(s.name());
                Ns::of(r).map_err(Error::malformed_xml)?
            }
        };
        if ns != Ns::Envelope || s.local_name().as_ref() != b"Envelope" {
            return Err(Error::malformed_xml(format!(
                "root element is `{}`, expected Envelope in namespace {ENVELOPE_NS}",
                String::from_utf8_lossy(s.name().as_ref())
            )));
        }
        Ok(s)
    }

    /// Everything after the root: whitespace only.
    fn epilog(&mut self) -> Result<()> {
        loop {
            match self.next()? {
                Item::Eof => return Ok(()),
                Item::Text(t) if is_xml_space(&t) => {}
                _ => return Err(Error::malformed_xml("content after the root element")),
            }
        }
    }

    /// The next start tag or end tag, skipping whitespace; text is refused.
    fn structural(&mut self, context: &str) -> Result<Item<'i>> {
        loop {
            match self.next()? {
                Item::Text(t) if is_xml_space(&t) => {}
                Item::Text(_) => {
                    return Err(Error::malformed_xml(format!(
                        "unexpected text inside {context}"
                    )));
                }
                Item::Eof => {
                    return Err(Error::malformed_xml(format!(
                        "document ends inside {context}"
                    )));
                }
                other => return Ok(other),
            }
        }
    }

    /// The envelope, and what is kept of its signature.
    fn envelope(&mut self, root: &BytesStart<'i>) -> Result<(Envelope, Option<SignatureContent>)> {
        self.no_attributes(root, "Envelope")?;
        let header = match self.structural("Envelope")? {
            Item::Start(ns, s, empty) if self.is_env(&ns, &s, b"Header") => {
                self.no_attributes(&s, "Header")?;
                if empty {
                    return Err(Error::MissingField("id"));
                }
                self.header()?
            }
            _ => return Err(Error::malformed_xml("Envelope must begin with Header")),
        };
        let body = match self.structural("Envelope")? {
            Item::Start(ns, s, empty) if self.is_env(&ns, &s, b"Body") => {
                self.no_attributes(&s, "Body")?;
                self.body(header.content_type, empty)?
            }
            _ => return Err(Error::malformed_xml("Header must be followed by Body")),
        };
        let signature = match self.structural("Envelope")? {
            Item::End => None,
            Item::Start(Ns::Dsig, s, empty) if s.local_name().as_ref() == b"Signature" => {
                self.attribute_values(&s)?;
                let content = if empty {
                    SignatureContent::default()
                } else {
                    self.signature_content()?
                };
                match self.structural("Envelope")? {
                    Item::End => {}
                    _ => {
                        return Err(Error::SignatureScope(
                            "Signature must be the last child of Envelope".into(),
                        ));
                    }
                }
                Some(content)
            }
            Item::Start(_, s, _) => {
                return Err(Error::malformed_xml(format!(
                    "unexpected element `{}` after Body",
                    String::from_utf8_lossy(s.name().as_ref())
                )));
            }
            _ => return Err(Error::malformed_xml("unexpected content in Envelope")),
        };
        Ok((Envelope { header, body }, signature))
    }

    fn is_env(&self, ns: &Ns, s: &BytesStart<'_>, local: &[u8]) -> bool {
        *ns == Ns::Envelope && s.local_name().as_ref() == local
    }

    fn no_attributes(&self, s: &BytesStart<'_>, what: &str) -> Result<()> {
        for a in s.attributes() {
            let a = a.map_err(|e| self.syntax(e))?;
            let key = a.key.as_ref();
            if key != b"xmlns" && !key.starts_with(b"xmlns:") {
                return Err(Error::malformed_xml(format!(
                    "{what} takes no attribute `{}`",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        Ok(())
    }

    fn header(&mut self) -> Result<Header> {
        let mut fields = HeaderFields::default();
        loop {
            match self.structural("Header")? {
                Item::End => break,
                Item::Start(ns, s, empty) => {
                    if ns != Ns::Envelope {
                        return Err(Error::malformed_xml(format!(
                            "header element `{}` is not in namespace {ENVELOPE_NS}",
                            String::from_utf8_lossy(s.name().as_ref())
                        )));
                    }
                    self.no_attributes(&s, "a header field")?;
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    let value = if empty {
                        String::new()
                    } else {
                        self.text_only(&name, |what| {
                            Error::malformed_xml(format!("`{what}` must hold text only"))
                        })?
                    };
                    fields.set("XML", &name, value)?;
                }
                _ => return Err(Error::malformed_xml("unexpected content in Header")),
            }
        }
        fields.into_header()
    }

    /// Text content up to the end of the current element; a child element is refused with
    /// `on_element(what)`, anything else the parser refuses with its own error.
    fn text_only(&mut self, what: &str, on_element: fn(&str) -> Error) -> Result<String> {
        let mut value = String::new();
        loop {
            match self.next()? {
                Item::Text(t) => value.push_str(&t),
                Item::End => return Ok(value),
                Item::Start(..) => return Err(on_element(what)),
                Item::Eof => {
                    return Err(Error::malformed_xml(format!(
                        "document ends inside `{what}`"
                    )));
                }
            }
        }
    }

    fn body(&mut self, content_type: ContentType, empty: bool) -> Result<Body> {
        match content_type {
            ContentType::Json => {
                let text = if empty {
                    String::new()
                } else {
                    // Only a child element is a body fault; a comment, a DOCTYPE or a syntax
                    // error keeps its own, more precise, error.
                    self.text_only("Body", |_| {
                        Error::InvalidBody("a JSON body holds JSON text, not XML elements".into())
                    })?
                };
                crate::json::check_depth(text.as_bytes(), self.limits.max_depth)?;
                let value = crate::json::parse_strict(&text)
                    .map_err(|e| Error::InvalidBody(format!("JSON body: {e}")))?;
                Ok(Body::Json(value))
            }
            ContentType::Xml => {
                if empty {
                    return Ok(Body::Xml(String::new()));
                }
                self.body_default_namespace()?;
                // One pass over the body with the document's own parser, so that depth, comments,
                // characters and `ds:Signature` elements are judged with the namespaces really in
                // scope; then the content must also stand on its own as a fragment.
                let body_depth = self.depth;
                let start = self.position();
                loop {
                    let before = self.position();
                    match self.next()? {
                        Item::Start(_, s, _) => self.attribute_values(&s)?,
                        Item::End if self.depth < body_depth => {
                            let inner = &self.input[start..before];
                            check_fragment_at(inner, self.limits, body_depth)?;
                            return Ok(Body::Xml(inner.to_owned()));
                        }
                        Item::Text(_) | Item::End => {}
                        Item::Eof => return Err(Error::malformed_xml("document ends inside Body")),
                    }
                }
            }
        }
    }

    fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    /// The body is taken out of the document as text, where an unprefixed element means the
    /// envelope namespace (or none). A different default namespace in scope at `Body` would
    /// change what the body means once taken out, and would hide a `ds:Signature` in it.
    fn body_default_namespace(&self) -> Result<()> {
        match self
            .reader
            .resolve_element(quick_xml::name::QName(b"Body"))
            .0
        {
            ResolveResult::Unbound => Ok(()),
            ResolveResult::Bound(ns) if ns.as_ref() == ENVELOPE_NS.as_bytes() => Ok(()),
            ResolveResult::Bound(ns) => Err(Error::malformed_xml(format!(
                "the default namespace in scope at Body is {}; it must be {ENVELOPE_NS} or none",
                String::from_utf8_lossy(ns.as_ref())
            ))),
            ResolveResult::Unknown(p) => Err(Error::malformed_xml(unbound_prefix(&p))),
        }
    }

    /// Unescapes every attribute value of `s`, refusing references to forbidden characters.
    fn attribute_values(&self, s: &BytesStart<'_>) -> Result<()> {
        for a in s.attributes() {
            let a = a.map_err(|e| self.syntax(e))?;
            let value = a.unescape_value().map_err(|e| self.syntax(e))?;
            if let Some(c) = forbidden_reference(&value) {
                return Err(self.syntax(format!(
                    "an attribute value refers to {c}, which XML does not allow"
                )));
            }
        }
        Ok(())
    }

    /// Reads up to the end of the `ds:Signature` just started, with every rule of
    /// [`Parser::next`] applied and attribute values checked, keeping only the certificates.
    fn signature_content(&mut self) -> Result<SignatureContent> {
        /// Where the certificates are, below `Signature`.
        const PATH: [&[u8]; 3] = [b"KeyInfo", b"X509Data", b"X509Certificate"];
        let base = self.depth;
        // How many levels of `PATH` the elements open now follow.
        let mut on_path = 0;
        let mut content = SignatureContent::default();
        loop {
            match self.next()? {
                Item::Start(ns, s, empty) => {
                    self.attribute_values(&s)?;
                    // 1 for a child of `Signature`; `next` counted a start tag, not an empty one.
                    let level = self.depth - base + usize::from(empty);
                    if on_path == PATH.len() {
                        return Err(Error::CertificateMalformed(
                            "X509Certificate must hold base64 text only".into(),
                        ));
                    }
                    if level == on_path + 1
                        && ns == Ns::Dsig
                        && s.local_name().as_ref() == PATH[on_path]
                    {
                        if level == PATH.len() {
                            content.certificates.push(String::new());
                        }
                        if !empty {
                            on_path = level;
                        }
                    }
                }
                Item::End if self.depth < base => return Ok(content),
                Item::End => on_path = on_path.min(self.depth - base),
                Item::Text(t) if on_path == PATH.len() => {
                    if let Some(cert) = content.certificates.last_mut() {
                        cert.push_str(&t);
                    }
                }
                Item::Text(_) => {}
                Item::Eof => return Err(Error::malformed_xml("document ends inside Signature")),
            }
        }
    }
}

fn is_blank(t: &quick_xml::events::BytesText<'_>) -> bool {
    t.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_fast_forbidden_char_check_agrees_with_the_definition(
            // The last form puts the odd character anywhere in a text longer than one block.
            s in "\\PC*|[\\x00-\\x{ffff}]{0,40}|[a-z\\n]{0,150}[\\x00-\\x{ffff}]{0,2}[a-z]{0,100}"
        ) {
            let exact = s.chars().find(|&c| !is_xml_char(c)).map(|c| format!("U+{:04X}", u32::from(c)));
            proptest::prop_assert_eq!(forbidden_char(&s), exact);
        }
    }

    #[test]
    fn noncharacters_and_controls_are_found() {
        assert_eq!(forbidden_char("ok \u{e9}\u{10000}"), None);
        assert_eq!(forbidden_char("a\u{1}b").as_deref(), Some("U+0001"));
        assert_eq!(forbidden_char("a\u{fffe}").as_deref(), Some("U+FFFE"));
        assert_eq!(
            forbidden_char("\u{f000}\u{ffff}").as_deref(),
            Some("U+FFFF")
        );
    }
}
