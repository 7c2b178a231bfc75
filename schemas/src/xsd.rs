//! The XSD of a service, generated from the JSON Schemas of its messages so that both describe
//! the same documents: one global element per action, one named type per shared definition,
//! object members as a sequence of elements in name order, lists as repeated elements, formats as
//! patterns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::schema::{Kind, Shape};

/// The XSD of `service`, whose messages are `(action, root JSON Schema)` pairs.
///
/// # Errors
/// A message naming a construct the generator does not translate, or two different definitions
/// with the same name; both are defects of the types, found by the tests.
pub(crate) fn generate(
    service: &str,
    namespace: &str,
    messages: &[(&str, &Value)],
) -> Result<String, String> {
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns=\"{namespace}\" targetNamespace=\"{namespace}\" elementFormDefault=\"qualified\">"
    );
    let _ = writeln!(
        out,
        "  <xs:annotation><xs:documentation>The XML form of the messages of {service}: one root element per action. Generated from the JSON Schemas of snodo-schemas.</xs:documentation></xs:annotation>"
    );
    // Definitions shared by the messages, by name; roots take the name of their type.
    let mut defs: BTreeMap<String, (&Value, &Value)> = BTreeMap::new();
    let mut roots: BTreeMap<&str, String> = BTreeMap::new();
    for (action, root) in messages {
        if let Some(Value::Object(d)) = root.get("$defs") {
            for (name, schema) in d {
                match defs.get(name) {
                    Some((_, existing)) if *existing != schema => {
                        return Err(format!(
                            "two different definitions are named `{name}` in {service}"
                        ));
                    }
                    _ => {
                        defs.insert(name.clone(), (root, schema));
                    }
                }
            }
        }
        let title = root
            .get("title")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the schema of `{action}` has no title"))?;
        roots.insert(action, title.to_owned());
    }
    for (action, root) in messages {
        let title = &roots[action];
        if let Some((_, def)) = defs.get(title)
            && **def != without_root_keys(root)
        {
            return Err(format!(
                "message type `{title}` of `{action}` has the name of another definition in {service}"
            ));
        }
        let _ = writeln!(out, "  <xs:element name=\"{action}\" type=\"{title}\"/>");
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for (action, root) in messages {
        let title = roots[action].clone();
        if defs.contains_key(&title) {
            // A message that is also part of another: one type serves both.
            continue;
        }
        let shape = Shape::root(root);
        let mut body = String::new();
        named_type(&mut body, &title, shape, 1)?;
        types.insert(title, body);
    }
    for (name, (root, schema)) in &defs {
        let shape = Shape::root(root).at(schema);
        let mut body = String::new();
        named_type(&mut body, name, shape, 1)?;
        types.insert(name.clone(), body);
    }
    for body in types.values() {
        out.push_str(body);
    }
    out.push_str("</xs:schema>\n");
    Ok(out)
}

/// A root schema as it would be a definition: without `$schema`, `title` and `$defs`.
fn without_root_keys(root: &Value) -> Value {
    let mut v = root.clone();
    if let Value::Object(map) = &mut v {
        map.remove("$schema");
        map.remove("title");
        map.remove("$defs");
    }
    v
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn documentation(out: &mut String, shape: Shape<'_>, level: usize) {
    if let Some(d) = shape.text("description") {
        indent(out, level);
        out.push_str("<xs:annotation><xs:documentation>");
        escape(out, d);
        out.push_str("</xs:documentation></xs:annotation>\n");
    }
}

/// A global type named `name`.
fn named_type(out: &mut String, name: &str, shape: Shape<'_>, level: usize) -> Result<(), String> {
    type_body(out, Some(name), shape, level)
}

/// A simple or complex type for `shape`, named or anonymous.
fn type_body(
    out: &mut String,
    name: Option<&str>,
    shape: Shape<'_>,
    level: usize,
) -> Result<(), String> {
    let name_attr = name.map(|n| format!(" name=\"{n}\"")).unwrap_or_default();
    let kind = shape
        .kind()
        .ok_or_else(|| format!("no XSD for the schema {}", shape.schema))?;
    match kind {
        Kind::Object => {
            indent(out, level);
            let _ = writeln!(out, "<xs:complexType{name_attr}>");
            if name.is_some() {
                documentation(out, shape, level + 1);
            }
            if let Some(alternatives) = shape.alternatives() {
                // An enum with data: exactly one of its variants' elements.
                indent(out, level + 1);
                out.push_str("<xs:choice>\n");
                for a in alternatives {
                    let alt = shape.at(a);
                    let props = alt
                        .properties()
                        .filter(|p| p.len() == 1)
                        .ok_or_else(|| "a oneOf of objects with one member each".to_owned())?;
                    for (prop, schema) in props {
                        element(
                            out,
                            prop,
                            shape.at(schema),
                            schema,
                            true,
                            level + 2,
                            Some(alt),
                        )?;
                    }
                }
                indent(out, level + 1);
                out.push_str("</xs:choice>\n");
            } else {
                indent(out, level + 1);
                out.push_str("<xs:sequence>\n");
                let required: Vec<&str> = shape.required().collect();
                if let Some(props) = shape.properties() {
                    let mut names: Vec<&String> = props.keys().collect();
                    names.sort();
                    for prop in names {
                        let schema = &props[prop.as_str()];
                        element(
                            out,
                            prop,
                            shape.at(schema),
                            schema,
                            required.contains(&prop.as_str()),
                            level + 2,
                            None,
                        )?;
                    }
                }
                indent(out, level + 1);
                out.push_str("</xs:sequence>\n");
            }
            indent(out, level);
            out.push_str("</xs:complexType>\n");
        }
        Kind::Array => return Err("a list directly inside a list".into()),
        scalar => {
            indent(out, level);
            let _ = writeln!(out, "<xs:simpleType{name_attr}>");
            if name.is_some() {
                documentation(out, shape, level + 1);
            }
            let base = match scalar {
                Kind::String => "xs:string",
                Kind::Integer => "xs:integer",
                Kind::Number => "xs:double",
                _ => "xs:boolean",
            };
            indent(out, level + 1);
            let _ = writeln!(out, "<xs:restriction base=\"{base}\">");
            facets(out, shape, level + 2);
            indent(out, level + 1);
            out.push_str("</xs:restriction>\n");
            indent(out, level);
            out.push_str("</xs:simpleType>\n");
        }
    }
    Ok(())
}

/// The facets of a scalar: enumeration, pattern, lengths, bounds.
fn facets(out: &mut String, shape: Shape<'_>, level: usize) {
    let mut values: Vec<(&str, Option<&str>)> = Vec::new();
    if let Some(alternatives) = shape.alternatives() {
        for a in alternatives {
            let alt = shape.at(a);
            if let Some(c) = alt.text("const") {
                values.push((c, alt.text("description")));
            }
            if let Some(Value::Array(e)) = alt.schema.get("enum") {
                values.extend(e.iter().filter_map(Value::as_str).map(|v| (v, None)));
            }
        }
    }
    if let Some(c) = shape.text("const") {
        values.push((c, None));
    }
    if let Some(Value::Array(e)) = shape.schema.get("enum") {
        values.extend(e.iter().filter_map(Value::as_str).map(|v| (v, None)));
    }
    for (v, doc) in values {
        indent(out, level);
        out.push_str("<xs:enumeration value=\"");
        escape(out, v);
        match doc {
            Some(d) => {
                out.push_str("\"><xs:annotation><xs:documentation>");
                escape(out, d);
                out.push_str("</xs:documentation></xs:annotation></xs:enumeration>\n");
            }
            None => out.push_str("\"/>\n"),
        }
    }
    if let Some(p) = shape.text("pattern") {
        // XSD patterns are anchored: the JSON Schema's ^ and $ go.
        let p = p.strip_prefix('^').unwrap_or(p);
        let p = p.strip_suffix('$').unwrap_or(p);
        indent(out, level);
        out.push_str("<xs:pattern value=\"");
        escape(out, p);
        out.push_str("\"/>\n");
    }
    for (json, xsd) in [
        ("minLength", "minLength"),
        ("maxLength", "maxLength"),
        ("minimum", "minInclusive"),
        ("maximum", "maxInclusive"),
        ("exclusiveMinimum", "minExclusive"),
        ("exclusiveMaximum", "maxExclusive"),
    ] {
        if let Some(n) = shape.number(json) {
            indent(out, level);
            let _ = writeln!(out, "<xs:{xsd} value=\"{n}\"/>");
        }
    }
}

/// An element for member `name`: `raw` is its schema as written (a `$ref` names the type).
fn element(
    out: &mut String,
    name: &str,
    shape: Shape<'_>,
    raw: &Value,
    required: bool,
    level: usize,
    variant: Option<Shape<'_>>,
) -> Result<(), String> {
    let (item_raw, item, min, max) = if shape.kind() == Some(Kind::Array) {
        let items_raw = shape
            .schema
            .get("items")
            .ok_or_else(|| format!("list `{name}` without items"))?;
        let min_items = shape
            .number("minItems")
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        let max = match shape.number("maxItems").and_then(|n| n.as_u64()) {
            Some(m) if m < u64::from(u32::MAX) => m.to_string(),
            _ => "unbounded".to_owned(),
        };
        let min = if required { min_items } else { 0 };
        (items_raw, shape.at(items_raw), min, max)
    } else {
        (raw, shape, u64::from(required), "1".to_owned())
    };
    let mut occurs = String::new();
    if min != 1 {
        let _ = write!(occurs, " minOccurs=\"{min}\"");
    }
    if max != "1" {
        let _ = write!(occurs, " maxOccurs=\"{max}\"");
    }
    // The description of the member, or of the variant it stands for.
    let doc_shape = match variant {
        Some(v) if v.text("description").is_some() => v,
        _ => shape.at(raw),
    };
    let doc = raw
        .get("description")
        .and_then(Value::as_str)
        .or_else(|| doc_shape.text("description"));
    let named = Shape::ref_name(item_raw);
    let builtin = match (named, item.kind()) {
        (Some(_), _) => None,
        (None, Some(k)) if plain(item) => Some(match k {
            Kind::String => "xs:string",
            Kind::Integer => "xs:integer",
            Kind::Number => "xs:double",
            Kind::Boolean => "xs:boolean",
            _ => "",
        })
        .filter(|b| !b.is_empty()),
        _ => None,
    };
    indent(out, level);
    let _ = write!(out, "<xs:element name=\"{name}\"");
    match (named, builtin) {
        (Some(t), _) | (None, Some(t)) => {
            let _ = write!(out, " type=\"{t}\"{occurs}");
            match doc {
                Some(d) => {
                    out.push_str(">\n");
                    indent(out, level + 1);
                    out.push_str("<xs:annotation><xs:documentation>");
                    escape(out, d);
                    out.push_str("</xs:documentation></xs:annotation>\n");
                    indent(out, level);
                    out.push_str("</xs:element>\n");
                }
                None => out.push_str("/>\n"),
            }
        }
        (None, None) => {
            let _ = writeln!(out, "{occurs}>");
            if let Some(d) = doc {
                indent(out, level + 1);
                out.push_str("<xs:annotation><xs:documentation>");
                escape(out, d);
                out.push_str("</xs:documentation></xs:annotation>\n");
            }
            type_body(out, None, item, level + 1)?;
            indent(out, level);
            out.push_str("</xs:element>\n");
        }
    }
    Ok(())
}

/// True for a scalar with no facet: it is an XSD built-in type as it is.
fn plain(shape: Shape<'_>) -> bool {
    const FACETS: [&str; 10] = [
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "enum",
        "const",
        "oneOf",
    ];
    !FACETS.iter().any(|f| shape.schema.get(*f).is_some())
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}
