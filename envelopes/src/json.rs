//! The JSON encoding of an envelope: `{"header": {...}, "body": ...}` (the JWS payload).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{Body, Envelope};
use crate::error::{Error, Result};
use crate::header::{ContentType, Header, HeaderFields};
use crate::limits::Limits;

#[derive(Serialize)]
struct Out<'a> {
    header: &'a Header,
    body: BodyOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum BodyOut<'a> {
    Json(&'a Value),
    Xml(&'a str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct In {
    header: Strict,
    body: Strict,
}

/// A JSON value with no object holding the same key twice. Parsers disagree on which of two
/// equal keys wins (serde_json keeps the last, others the first), so a signed payload that
/// holds any could mean one thing to the hub and another to the recipient.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text, refusing any object that holds a key twice.
pub(crate) fn parse_strict(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// The header object, field by field through the same checks as the XML encoding, so that a
/// wrong field is named the same way in both.
fn header(value: Value) -> Result<Header> {
    let Value::Object(map) = value else {
        return Err(Error::malformed_json("`header` is not an object"));
    };
    let mut fields = HeaderFields::default();
    for (name, value) in map {
        let text = match (name.as_str(), value) {
            // Optional fields may be written as null.
            ("in_reply_to" | "expires_at" | "sequence", Value::Null) => continue,
            ("sequence", Value::Number(n)) => n.to_string(),
            ("sequence", _) => {
                return Err(Error::invalid("sequence", "must be a non-negative integer"));
            }
            (_, Value::String(s)) => s,
            (field, _) => {
                let field = HeaderFields::static_name(field).ok_or_else(|| {
                    Error::malformed_json(format!("unknown header field `{field}`"))
                })?;
                return Err(Error::invalid(field, "must be a string"));
            }
        };
        fields.set("JSON", &name, text)?;
    }
    fields.into_header()
}

/// Encodes an envelope as JSON; an XML body becomes a JSON string.
#[must_use]
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let body = match &envelope.body {
        Body::Json(v) => BodyOut::Json(v),
        Body::Xml(x) => BodyOut::Xml(x),
    };
    // Serializing a tree of strings, numbers and maps cannot fail.
    serde_json::to_vec(&Out {
        header: &envelope.header,
        body,
    })
    .unwrap_or_default()
}

/// Decodes a JSON envelope within `limits` and checks that the body fits `content_type`.
///
/// # Errors
/// [`Error::TooLarge`], [`Error::TooDeep`], [`Error::Malformed`] (also for an object holding a
/// key twice), [`Error::MissingField`] or [`Error::InvalidField`] naming the header field as the
/// XML codec does, or [`Error::InvalidBody`].
pub fn decode(input: &[u8], limits: &Limits) -> Result<Envelope> {
    limits.check_size(input.len())?;
    check_depth(input, limits.max_depth)?;
    let parsed: In = serde_json::from_slice(input).map_err(Error::malformed_json)?;
    let header = header(parsed.header.0)?;
    let body = match (header.content_type, parsed.body.0) {
        (ContentType::Json, v) => Body::Json(v),
        (ContentType::Xml, Value::String(x)) => {
            crate::xml::check_fragment(&x, limits)?;
            Body::Xml(x)
        }
        (ContentType::Xml, _) => {
            return Err(Error::InvalidBody(
                "an application/xml body must be a JSON string".into(),
            ));
        }
    };
    Ok(Envelope { header, body })
}

/// Refuses JSON text that nests arrays and objects deeper than `max_depth`, in one linear pass
/// before any parser allocates for it.
///
/// # Errors
/// [`Error::TooDeep`].
pub fn check_depth(input: &[u8], max_depth: usize) -> Result<()> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(at) = memchr::memchr3(b'"', b'[', b'{', &input[i..]).map(|p| p + i) {
        // Closing brackets between here and the last stop only lower the depth.
        let closes = bytecount(&input[i..at]);
        depth = depth.saturating_sub(closes);
        if input[at] == b'"' {
            // Skip the string: to its closing quote, past any escaped character.
            let mut j = at + 1;
            loop {
                let Some(rest) = input.get(j..) else {
                    return Ok(()); // an unterminated string: the parser refuses it
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(p) if input[j + p] == b'\\' => j += p + 2,
                    Some(p) => {
                        j += p + 1;
                        break;
                    }
                    None => return Ok(()), // an unterminated string: the parser refuses it
                }
            }
            i = j.min(input.len());
        } else {
            depth += 1;
            if depth > max_depth {
                return Err(Error::TooDeep { limit: max_depth });
            }
            i = at + 1;
        }
    }
    Ok(())
}

/// How many `]` and `}` a stretch of JSON outside strings holds.
fn bytecount(s: &[u8]) -> usize {
    memchr::memchr2_iter(b']', b'}', s).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time definition the fast version must agree with.
    fn reference_depth_ok(input: &[u8], max_depth: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in input {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    proptest::proptest! {
        #[test]
        fn fast_depth_check_agrees_with_the_definition(
            text in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\a,".to_vec()), 0..200),
            max in 0usize..8,
        ) {
            proptest::prop_assert_eq!(check_depth(&text, max).is_ok(), reference_depth_ok(&text, max));
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert!(check_depth(br#"{"a":"[[[[[[[["}"#, 2).is_ok());
        assert!(check_depth(br#"[[["\"[["]]]"#, 3).is_ok());
        assert!(check_depth(br#"[[1],[2],[3],[[4]]]"#, 3).is_ok());
        assert!(check_depth(br#"{"a\\":[{"b":"\\\"]["}]}"#, 3).is_ok());
        assert!(matches!(
            check_depth(b"[[[[]]]]", 3),
            Err(Error::TooDeep { limit: 3 })
        ));
    }
}
