//! The JSON encoding of an envelope: `{"header": {...}, "body": ...}` (the JWS payload).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{Body, Envelope};
use crate::error::{Error, Result};
use crate::header::{ContentType, Header};
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
    header: Header,
    body: Value,
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
/// [`Error::TooLarge`], [`Error::TooDeep`], [`Error::Malformed`], a header field error, or
/// [`Error::InvalidBody`].
pub fn decode(input: &[u8], limits: &Limits) -> Result<Envelope> {
    limits.check_size(input.len())?;
    check_depth(input, limits.max_depth)?;
    let parsed: In = serde_json::from_slice(input).map_err(|e| {
        // Header field errors carry their own message through serde's custom errors.
        Error::malformed_json(e)
    })?;
    let body = match (parsed.header.content_type, parsed.body) {
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
    Ok(Envelope {
        header: parsed.header,
        body,
    })
}

/// Refuses JSON text that nests arrays and objects deeper than `max_depth`, in one linear pass
/// before any parser allocates for it.
///
/// # Errors
/// [`Error::TooDeep`].
pub fn check_depth(input: &[u8], max_depth: usize) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
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
                    return Err(Error::TooDeep { limit: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert!(check_depth(br#"{"a":"[[[[[[[["}"#, 2).is_ok());
        assert!(check_depth(br#"[[["\"[["]]]"#, 3).is_ok());
        assert!(matches!(
            check_depth(b"[[[[]]]]", 3),
            Err(Error::TooDeep { limit: 3 })
        ));
    }
}
