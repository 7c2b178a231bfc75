//! Step 5 of acceptance: the body validates against the schema the registry names for its
//! service and action (snodo-schemas' catalog: JSON Schema then the Rust types for a JSON body,
//! the service's XSD then the Rust types for an XML body).
//!
//! Which schema an action's bodies must match is [`SchemaSetting`], the `schema` field of
//! `[[services.actions]]`: absent, the catalog's message of the same service and action when
//! the catalog has one (else the body is not checked); `"none"`, not checked; `"service/action"`,
//! that message of the catalog.

use std::borrow::Cow;
use std::fmt;

use axum::http::StatusCode;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use snodo_envelopes::Body;
use snodo_schemas::{Catalog, Form, MessageSchema};

use crate::api::error::{ApiError, FieldProblem};

/// Bodies up to this size are validated on the request's worker thread, bigger ones on the
/// blocking pool (as signatures are verified).
const INLINE_VALIDATE_BYTES: usize = 16 * 1024;

/// The stable code of a body that breaks its schema.
pub const BODY_SCHEMA_INVALID: &str = "body-schema-invalid";

/// The `schema` of an action: which catalog message its bodies must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaSetting {
    /// `"none"`: bodies are not checked.
    None,
    /// `"service/action"`: bodies must be that message of the catalog.
    Named(String),
}

impl SchemaSetting {
    /// The catalog message that the bodies of `service`/`action` must be, under `setting` (the
    /// field's value, absent when `None`): the named one, none, or by default the catalog's
    /// message of the same service and action, if it has one.
    ///
    /// # Errors
    /// A sentence for the configuration when the named message is not in the catalog.
    pub fn resolve(
        setting: Option<&SchemaSetting>,
        service: &str,
        action: &str,
    ) -> Result<Option<&'static MessageSchema>, String> {
        let catalog = Catalog::global();
        match setting {
            None => Ok(catalog.get(service, action)),
            Some(SchemaSetting::None) => Ok(None),
            Some(SchemaSetting::Named(name)) => match catalog.by_name(name) {
                Some(m) => Ok(Some(m)),
                None => {
                    let service_part = name.rsplit_once('/').map_or(name.as_str(), |(s, _)| s);
                    let actions = catalog.actions(service_part);
                    Err(if actions.is_empty() {
                        format!(
                            "the catalog has no schema `{name}`: name one as `service/action` (services: {}), or \"none\"",
                            catalog.services().collect::<Vec<_>>().join(", ")
                        )
                    } else {
                        format!(
                            "the catalog has no schema `{name}`; {service_part} has {}",
                            actions.join(", ")
                        )
                    })
                }
            },
        }
    }
}

impl fmt::Display for SchemaSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaSetting::None => f.write_str("none"),
            SchemaSetting::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for SchemaSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SchemaSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            Ok(SchemaSetting::None)
        } else if s.contains('/') {
            Ok(SchemaSetting::Named(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{s}` is neither \"none\" nor a catalog message named `service/action`"
            )))
        }
    }
}

impl JsonSchema for SchemaSetting {
    fn schema_name() -> Cow<'static, str> {
        "SchemaSetting".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A message of the schema catalog, `service/action`, or \"none\".",
            "pattern": "^(none|[a-z][a-z0-9_.-]*/[a-z][a-z0-9_-]*)$",
            "examples": ["residenza.cambio/dichiarazione", "none"]
        })
    }
}

/// Validates `body` against `schema` (nothing to do without one); `size` is the envelope's, to
/// choose between this thread and the blocking pool.
///
/// # Errors
/// `body-schema-invalid` (422) naming each field at fault; `internal` (500) if a schema of the
/// catalog cannot be compiled.
pub async fn body(
    schema: Option<&'static MessageSchema>,
    body: &Body,
    size: usize,
) -> Result<(), ApiError> {
    let Some(schema) = schema else {
        return Ok(());
    };
    if size <= INLINE_VALIDATE_BYTES {
        check(schema, body)
    } else {
        let body = body.clone();
        tokio::task::spawn_blocking(move || check(schema, &body))
            .await
            .map_err(|e| ApiError::internal(&e))?
    }
}

fn check(schema: &MessageSchema, body: &Body) -> Result<(), ApiError> {
    let result = match body {
        Body::Json(v) => schema.validate_json(v),
        Body::Xml(x) => schema.validate_xml(x),
    };
    result.map_err(|e| {
        if !e.is_invalid_body() {
            return ApiError::internal(&e);
        }
        let form = match e {
            snodo_schemas::Error::Invalid { form, .. } => form,
            _ => Form::Json,
        };
        let fields = e
            .violations()
            .iter()
            .map(|v| match form {
                Form::Json => FieldProblem {
                    pointer: Some(v.at.clone()),
                    path: None,
                    line: None,
                    detail: v.problem.clone(),
                },
                Form::Xml => FieldProblem {
                    pointer: None,
                    path: Some(v.at.clone()),
                    line: v.line,
                    detail: v.problem.clone(),
                },
            })
            .collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            BODY_SCHEMA_INVALID,
            e.to_string(),
        )
        .with_errors(fields)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(toml_value: &str) -> Result<SchemaSetting, String> {
        #[derive(Deserialize)]
        struct T {
            schema: SchemaSetting,
        }
        toml::from_str::<T>(&format!("schema = {toml_value}"))
            .map(|t| t.schema)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_the_catalog_message_of_the_same_name_if_any() {
        let m = SchemaSetting::resolve(None, "residenza.cambio", "dichiarazione").unwrap();
        assert_eq!(m.unwrap().name(), "residenza.cambio/dichiarazione");
        assert!(
            SchemaSetting::resolve(None, "residenza.cambio", "richiesta")
                .unwrap()
                .is_none()
        );
        assert!(
            SchemaSetting::resolve(None, "anpr.feed", "variazione")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn none_and_names() {
        let none = setting("\"none\"").unwrap();
        assert_eq!(none, SchemaSetting::None);
        assert!(
            SchemaSetting::resolve(Some(&none), "residenza.cambio", "dichiarazione")
                .unwrap()
                .is_none()
        );
        let named = setting("\"pagamenti/ricevuta\"").unwrap();
        let m = SchemaSetting::resolve(Some(&named), "pagopa.ricevute", "inoltro").unwrap();
        assert_eq!(m.unwrap().name(), "pagamenti/ricevuta");
        assert!(
            setting("\"ricevuta\"")
                .unwrap_err()
                .contains("service/action")
        );
        assert!(setting("true").is_err());
        let unknown = setting("\"pagamenti/ricevute\"").unwrap();
        let e = SchemaSetting::resolve(Some(&unknown), "x", "y").unwrap_err();
        assert!(e.contains("pagamenti has") && e.contains("ricevuta"), "{e}");
        let unknown = setting("\"pagamento/ricevuta\"").unwrap();
        let e = SchemaSetting::resolve(Some(&unknown), "x", "y").unwrap_err();
        assert!(e.contains("services: ") && e.contains("pagamenti"), "{e}");
    }
}
