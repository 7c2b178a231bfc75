//! A message type in either form: JSON and XML written from, and read into, its Rust type,
//! always through the catalog's checks.

use serde_json::Value;

use crate::catalog::{Catalog, MessageSchema, Payload};
use crate::error::{Error, Form, Violation};

/// Checks `value` against its schema and types and returns it as JSON.
///
/// # Errors
/// [`Error::Invalid`] when the value breaks its schema (a value built in code can, where a
/// schema is stricter than its Rust type: a pattern on free text, a bound on a number).
pub fn to_json<T: Payload>(value: &T) -> Result<Value, Error> {
    let schema = catalog_entry::<T>()?;
    let json = serde_json::to_value(value).map_err(|e| {
        schema.invalid(
            Form::Json,
            vec![Violation {
                at: String::new(),
                line: None,
                problem: e.to_string(),
            }],
        )
    })?;
    schema.validate_json(&json)?;
    Ok(json)
}

/// Reads a JSON body as `T`, after checking it against its schema.
///
/// # Errors
/// [`Error::Invalid`] naming the fields at fault.
pub fn from_json<T: Payload>(body: &Value) -> Result<T, Error> {
    let schema = catalog_entry::<T>()?;
    schema.validate_json(body)?;
    serde_json::from_value(body.clone()).map_err(|e| {
        schema.invalid(
            Form::Json,
            vec![Violation {
                at: String::new(),
                line: None,
                problem: e.to_string(),
            }],
        )
    })
}

/// Writes `value` in its XML form: one root element, the action, in the service's namespace.
///
/// # Errors
/// [`Error::Invalid`] when the value breaks its schema; [`Error::Unrepresentable`] for a
/// character XML 1.0 cannot hold.
pub fn to_xml<T: Payload>(value: &T) -> Result<String, Error> {
    let schema = catalog_entry::<T>()?;
    let json = to_json(value)?;
    schema.json_to_xml(&json)
}

/// Reads an XML body as `T`, after checking it against the service's XSD.
///
/// # Errors
/// [`Error::Invalid`] naming the elements at fault and their lines.
pub fn from_xml<T: Payload>(body: &str) -> Result<T, Error> {
    let schema = catalog_entry::<T>()?;
    let json = schema.xml_to_json(body)?;
    from_json(&json)
}

fn catalog_entry<T: Payload>() -> Result<&'static MessageSchema, Error> {
    Catalog::global().require(T::SERVICE, T::ACTION)
}
