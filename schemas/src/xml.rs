//! The XML form of a message, derived from its JSON form and its schema, so that one Rust value
//! has one XML document and one JSON document that convert into each other without loss.
//!
//! The root element is the action (`<dichiarazione>`) in the service's namespace
//! (`urn:snodo:service:residenza.cambio:1`, the default namespace of the fragment); every object
//! member is a child element of the same name, in the order of the names (byte order, as the XSD's
//! sequences list them); a list is the element repeated; a scalar is the element's text (numbers
//! as JSON writes them, `true`/`false`). An absent optional member is an absent element, and so
//! is an empty list. Reading goes back through the schema, which says which elements are lists
//! and which text is a number. No attributes (other than namespace declarations), no mixed
//! content, no DOCTYPE, no processing instruction; comments are ignored.

use std::collections::HashMap;
use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::{Map, Number, Value};

use crate::error::Violation;
use crate::schema::{Kind, Shape};

/// Deepest element nesting read, as the envelope's own bound.
const MAX_DEPTH: usize = 64;

/// The namespace of a service's XML messages.
#[must_use]
pub fn namespace(service: &str) -> String {
    format!("urn:snodo:service:{service}:1")
}

/// One element of a parsed body.
#[derive(Debug)]
pub(crate) struct Element {
    /// Local name.
    pub(crate) name: String,
    /// Line of its start tag, from 1.
    pub(crate) line: u32,
    /// Its child elements, in order.
    children: Vec<Element>,
    /// Its text, when it has no children.
    text: String,
}

fn violation(at: &str, line: Option<u32>, problem: impl Into<String>) -> Violation {
    Violation {
        at: at.to_owned(),
        line,
        problem: problem.into(),
    }
}

/// Line numbers of byte offsets.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        Lines(newline_offsets(text))
    }

    fn line(&self, offset: u64) -> u32 {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let n = self.0.partition_point(|&nl| nl < offset) + 1;
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

fn newline_offsets(text: &str) -> Vec<usize> {
    text.bytes()
        .enumerate()
        .filter_map(|(i, b)| (b == b'\n').then_some(i))
        .collect()
}

/// Parses `text` into one root element whose elements all are in namespace `ns`.
///
/// # Errors
/// A [`Violation`] at the element where the text stops being a well-formed fragment of one
/// element in `ns`, with no attributes, mixed content, DOCTYPE or processing instruction.
pub(crate) fn parse(text: &str, ns: &str) -> Result<Element, Violation> {
    let lines = Lines::new(text);
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut root: Option<Element> = None;
    let here = |path: &[String]| {
        if path.is_empty() {
            String::new()
        } else {
            format!("/{}", path.join("/"))
        }
    };
    loop {
        let at = reader.buffer_position();
        let event = reader.read_resolved_event();
        let line = lines.line(at);
        let (resolved, event) = match event {
            Ok(x) => x,
            Err(e) => {
                return Err(violation(
                    &here(&path),
                    Some(lines.line(reader.error_position())),
                    format!("not well-formed XML: {e}"),
                ));
            }
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                path.push(name.clone());
                if root.is_some() {
                    return Err(violation(
                        &here(&path),
                        Some(line),
                        "a body has one root element",
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(violation(
                        &here(&path),
                        Some(line),
                        format!("elements are nested deeper than {MAX_DEPTH}"),
                    ));
                }
                match resolved {
                    ResolveResult::Bound(n) if n.as_ref() == ns.as_bytes() => {}
                    ResolveResult::Bound(n) => {
                        return Err(violation(
                            &here(&path),
                            Some(line),
                            format!(
                                "element `{name}` is in namespace `{}`, not `{ns}`",
                                String::from_utf8_lossy(n.as_ref())
                            ),
                        ));
                    }
                    _ => {
                        return Err(violation(
                            &here(&path),
                            Some(line),
                            format!("element `{name}` is in no namespace; it belongs in `{ns}`"),
                        ));
                    }
                }
                for attr in e.attributes() {
                    let attr = attr.map_err(|err| {
                        violation(
                            &here(&path),
                            Some(line),
                            format!("malformed attribute: {err}"),
                        )
                    })?;
                    if attr.key.as_namespace_binding().is_none() {
                        return Err(violation(
                            &here(&path),
                            Some(line),
                            format!(
                                "unexpected attribute `{}`: values are elements",
                                String::from_utf8_lossy(attr.key.as_ref())
                            ),
                        ));
                    }
                }
                let element = Element {
                    name,
                    line,
                    children: Vec::new(),
                    text: String::new(),
                };
                if matches!(event, Event::Start(_)) {
                    stack.push(element);
                } else {
                    path.pop();
                    close(element, &mut stack, &mut root);
                }
            }
            Event::End(_) => {
                path.pop();
                if let Some(element) = stack.pop() {
                    close(element, &mut stack, &mut root);
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| {
                    violation(
                        &here(&path),
                        Some(line),
                        format!("bad character reference: {e}"),
                    )
                })?;
                push_text(&s, &mut stack, &here(&path), line)?;
            }
            Event::CData(c) => {
                let s = String::from_utf8(c.into_inner().into_owned())
                    .map_err(|_| violation(&here(&path), Some(line), "CDATA that is not UTF-8"))?;
                push_text(&s, &mut stack, &here(&path), line)?;
            }
            Event::DocType(_) => {
                return Err(violation("", Some(line), "a DOCTYPE is not allowed"));
            }
            Event::PI(_) => {
                return Err(violation(
                    &here(&path),
                    Some(line),
                    "processing instructions are not allowed",
                ));
            }
            Event::Decl(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    root.ok_or_else(|| violation("", None, "no root element"))
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn push_text(s: &str, stack: &mut [Element], at: &str, line: u32) -> Result<(), Violation> {
    match stack.last_mut() {
        Some(current) => {
            current.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(violation(at, Some(line), "text outside the root element")),
    }
}

/// Where each value of a converted document came from: JSON pointer → (element path, line).
#[derive(Debug, Default)]
pub(crate) struct Origins(HashMap<String, (String, u32)>);

impl Origins {
    /// The element path and line of JSON pointer `pointer`, or of its nearest ancestor that
    /// came from an element (with the rest of the pointer appended).
    pub(crate) fn locate(&self, pointer: &str) -> (String, Option<u32>) {
        let mut p = pointer;
        loop {
            if let Some((path, line)) = self.0.get(p) {
                let rest = &pointer[p.len()..];
                return (format!("{path}{rest}"), Some(*line));
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return (pointer.to_owned(), None),
            }
        }
    }
}

/// Converts a parsed document into its JSON form, as the root schema `root` describes it.
///
/// # Errors
/// A [`Violation`] at the first element that does not fit the schema.
pub(crate) fn to_json(root: &Element, schema: &Value) -> Result<(Value, Origins), Violation> {
    let mut origins = Origins::default();
    let path = format!("/{}", root.name);
    let value = convert(root, Shape::root(schema), "", &path, &mut origins)?;
    Ok((value, origins))
}

fn convert(
    el: &Element,
    shape: Shape<'_>,
    pointer: &str,
    path: &str,
    origins: &mut Origins,
) -> Result<Value, Violation> {
    origins
        .0
        .insert(pointer.to_owned(), (path.to_owned(), el.line));
    let here = |problem: String| violation(path, Some(el.line), problem);
    let kind = shape
        .kind()
        .ok_or_else(|| here("the schema does not describe this element".into()))?;
    if kind != Kind::Object {
        if let Some(child) = el.children.first() {
            return Err(violation(
                &format!("{path}/{}", child.name),
                Some(child.line),
                format!("`{}` holds a value, not elements", el.name),
            ));
        }
    } else if !el.text.trim().is_empty() {
        return Err(here(format!("`{}` holds elements, not text", el.name)));
    }
    let t = el.text.as_str();
    match kind {
        Kind::String => Ok(Value::String(t.to_owned())),
        Kind::Boolean => match t.trim() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(here(format!("`{t}` is not true or false"))),
        },
        Kind::Integer => {
            let t = t.trim();
            t.parse::<u64>()
                .map(Number::from)
                .or_else(|_| t.parse::<i64>().map(Number::from))
                .map(Value::Number)
                .map_err(|_| here(format!("`{t}` is not a whole number")))
        }
        Kind::Number => t
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| here(format!("`{t}` is not a finite number"))),
        Kind::Array => Err(here("a list is a repeated element, not an element".into())),
        Kind::Object => {
            let mut map = Map::new();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for child in &el.children {
                let name = child.name.as_str();
                let Some(prop) = shape.property(name) else {
                    return Err(violation(
                        &format!("{path}/{name}"),
                        Some(child.line),
                        format!("unexpected element `{name}` in `{}`", el.name),
                    ));
                };
                let n = counts.entry(name).or_insert(0);
                *n += 1;
                let key = escape_pointer(name);
                if prop.kind() == Some(Kind::Array) {
                    let items = prop
                        .items()
                        .ok_or_else(|| here("a list without items".into()))?;
                    let index = *n - 1;
                    // The list itself is where its first element is.
                    origins
                        .0
                        .entry(format!("{pointer}/{key}"))
                        .or_insert_with(|| (format!("{path}/{name}"), child.line));
                    let item = convert(
                        child,
                        items,
                        &format!("{pointer}/{key}/{index}"),
                        &format!("{path}/{name}[{}]", *n),
                        origins,
                    )?;
                    if let Value::Array(list) = map
                        .entry(name.to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()))
                    {
                        list.push(item);
                    }
                } else if *n > 1 {
                    return Err(violation(
                        &format!("{path}/{name}"),
                        Some(child.line),
                        format!("`{name}` appears more than once"),
                    ));
                } else {
                    let v = convert(
                        child,
                        prop,
                        &format!("{pointer}/{key}"),
                        &format!("{path}/{name}"),
                        origins,
                    )?;
                    map.insert(name.to_owned(), v);
                }
            }
            // A required list with no items has no element.
            for name in shape.required() {
                if !map.contains_key(name)
                    && shape.property(name).and_then(|p| p.kind()) == Some(Kind::Array)
                {
                    map.insert(name.to_owned(), Value::Array(Vec::new()));
                }
            }
            Ok(Value::Object(map))
        }
    }
}

/// A JSON pointer's escaping of one key.
pub(crate) fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Writes the JSON form `value` of a message as XML: root element `root` in namespace `ns`;
/// `pretty` puts each element of an object on its own line, indented (the text of values is
/// never touched, so both forms read back the same).
///
/// # Errors
/// A [`Violation`] at a value XML cannot hold: a control character, a list of lists, a list or
/// scalar at the root.
pub(crate) fn from_json(
    value: &Value,
    root: &str,
    ns: &str,
    pretty: bool,
) -> Result<String, Violation> {
    if !value.is_object() {
        return Err(violation("", None, "a message is an object"));
    }
    let mut out = String::with_capacity(256);
    write_element(&mut out, root, value, "", Some(ns), pretty.then_some(0))?;
    if pretty {
        out.push('\n');
    }
    Ok(out)
}

/// A line break and the indentation of `level`, when pretty.
fn newline(out: &mut String, level: Option<usize>) {
    if let Some(level) = level {
        out.push('\n');
        for _ in 0..level {
            out.push_str("  ");
        }
    }
}

fn write_element(
    out: &mut String,
    name: &str,
    value: &Value,
    pointer: &str,
    ns: Option<&str>,
    level: Option<usize>,
) -> Result<(), Violation> {
    let inner = level.map(|l| l + 1);
    let open = |out: &mut String| {
        out.push('<');
        out.push_str(name);
        if let Some(ns) = ns {
            out.push_str(" xmlns=\"");
            escape(out, ns);
            out.push('"');
        }
    };
    match value {
        Value::Null => Ok(()),
        Value::Object(map) => {
            open(out);
            if map.is_empty() {
                out.push_str("/>");
                return Ok(());
            }
            out.push('>');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let child = &map[key.as_str()];
                let child_pointer = format!("{pointer}/{}", escape_pointer(key));
                check_name(key, &child_pointer)?;
                match child {
                    Value::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let item_pointer = format!("{child_pointer}/{i}");
                            if item.is_array() {
                                return Err(violation(
                                    &item_pointer,
                                    None,
                                    "a list of lists has no XML form",
                                ));
                            }
                            newline(out, inner);
                            write_element(out, key, item, &item_pointer, None, inner)?;
                        }
                    }
                    Value::Null => {}
                    _ => {
                        newline(out, inner);
                        write_element(out, key, child, &child_pointer, None, inner)?;
                    }
                }
            }
            newline(out, level);
            let _ = write!(out, "</{name}>");
            Ok(())
        }
        Value::Array(_) => Err(violation(pointer, None, "a list has no XML form here")),
        Value::Bool(b) => {
            open(out);
            let _ = write!(out, ">{b}</{name}>");
            Ok(())
        }
        Value::Number(n) => {
            open(out);
            let _ = write!(out, ">{n}</{name}>");
            Ok(())
        }
        Value::String(s) => {
            if let Some(c) = s.chars().find(|&c| !xml_char(c)) {
                return Err(violation(
                    pointer,
                    None,
                    format!(
                        "the character U+{:04X} cannot be written in XML 1.0",
                        u32::from(c)
                    ),
                ));
            }
            open(out);
            out.push('>');
            escape(out, s);
            let _ = write!(out, "</{name}>");
            Ok(())
        }
    }
}

/// Member names become element names: they must be XML names (the types' names always are).
fn check_name(name: &str, pointer: &str) -> Result<(), Violation> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(violation(
            pointer,
            None,
            format!("`{name}` cannot be an element name"),
        ))
    }
}

/// The characters XML 1.0 documents may hold.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text: markup characters, and `\r`, which parsers would otherwise normalize away.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

impl Element {
    /// Calls `f` with the element path of this element and of each one inside it, in document
    /// order (positions from 1 for repeated names).
    pub(crate) fn walk(&self, f: &mut dyn FnMut(&str, &Element)) {
        self.walk_at(&format!("/{}", self.name), f);
    }

    fn walk_at(&self, path: &str, f: &mut dyn FnMut(&str, &Element)) {
        f(path, self);
        let mut totals: HashMap<&str, usize> = HashMap::new();
        for child in &self.children {
            *totals.entry(child.name.as_str()).or_insert(0) += 1;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for child in &self.children {
            let total = totals.get(child.name.as_str()).copied().unwrap_or(1);
            let n = seen.entry(child.name.as_str()).or_insert(0);
            *n += 1;
            let child_path = if total > 1 {
                format!("{path}/{}[{}]", child.name, n)
            } else {
                format!("{path}/{}", child.name)
            };
            child.walk_at(&child_path, f);
        }
    }
}
