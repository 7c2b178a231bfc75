//! The catalog of message types a connector can check before sending: for each service and
//! action, a function that tells whether a body is that message.
//!
//! Services register their messages here ([`Catalog::json`] for a serde type implementing
//! [`Message`], [`Catalog::with`] for any check, an XML form included). [`Catalog::builtin`]
//! holds the messages of the services this build implements.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use snodo_envelopes::{Body, Limits};

/// A message type of a service: its payload type names its service and action.
pub trait Message: DeserializeOwned {
    /// The service, such as `residenza.cambio`.
    const SERVICE: &'static str;
    /// The action, such as `richiesta`.
    const ACTION: &'static str;
}

/// Checks that a body is one message: `Err` says what is wrong with it.
pub type Check = Arc<dyn Fn(&Body) -> Result<(), String> + Send + Sync>;

/// Why a body is not the message it claims to be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No message type is registered for this service and action.
    #[error("no message type is known for {service}/{action}")]
    Unknown {
        /// The service.
        service: String,
        /// The action.
        action: String,
    },
    /// The body is not well-formed JSON or XML.
    #[error("the body is not well-formed {format}: {detail}")]
    Malformed {
        /// `JSON` or `XML`.
        format: &'static str,
        /// The parser's words.
        detail: String,
    },
    /// The body is well-formed but not the message.
    #[error("the body is not a {service}/{action} message: {detail}")]
    Invalid {
        /// The service.
        service: String,
        /// The action.
        action: String,
        /// What is wrong.
        detail: String,
    },
}

/// What to do with a message the catalog does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unknown {
    /// Refuse it.
    #[default]
    Refuse,
    /// Accept it if it is well-formed JSON or XML (the hub validates bodies against the
    /// registry's schemas in any case).
    WellFormed,
}

/// Message types by service and action.
#[derive(Clone, Default)]
pub struct Catalog {
    checks: BTreeMap<(String, String), Check>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.checks.keys().map(|(s, a)| format!("{s}/{a}")))
            .finish()
    }
}

impl Catalog {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Every message of `snodo-schemas`' catalog, in both forms: a JSON body is checked
    /// against the message's JSON Schema, an XML body against its service's XSD, and either
    /// is then read into its Rust type — the same checks the hub makes.
    #[must_use]
    pub fn builtin() -> Self {
        let mut c = Catalog::new();
        for m in snodo_schemas::Catalog::global().messages() {
            let (service, action) = (m.service(), m.action());
            c = c.with(
                service,
                action,
                Arc::new(move |body: &Body| {
                    let schemas = snodo_schemas::Catalog::global();
                    match body {
                        Body::Json(v) => schemas.validate_json(service, action, v),
                        Body::Xml(x) => schemas.validate_xml(service, action, x),
                    }
                    .map_err(|e| e.to_string())
                }),
            );
        }
        c
    }

    /// Registers `M` in its JSON form: a JSON body must deserialize as `M`; an XML body is
    /// refused until an XML form is registered with [`Catalog::with`].
    #[must_use]
    pub fn json<M: Message + 'static>(self) -> Self {
        self.with(
            M::SERVICE,
            M::ACTION,
            Arc::new(|body: &Body| match body {
                Body::Json(v) => M::deserialize(v).map(|_| ()).map_err(|e| e.to_string()),
                Body::Xml(_) => Err("only the JSON form of this message is known".into()),
            }),
        )
    }

    /// Registers a check for `service`/`action`, replacing any earlier one.
    #[must_use]
    pub fn with(mut self, service: &str, action: &str, check: Check) -> Self {
        self.checks
            .insert((service.to_owned(), action.to_owned()), check);
        self
    }

    /// Whether a message type is known for `service`/`action`.
    #[must_use]
    pub fn knows(&self, service: &str, action: &str) -> bool {
        self.checks
            .contains_key(&(service.to_owned(), action.to_owned()))
    }

    /// Checks a body given as text (`xml` says which form) as the message `service`/`action`,
    /// and returns it as an envelope body.
    ///
    /// # Errors
    /// [`CatalogError`] naming what is wrong.
    pub fn parse(
        &self,
        service: &str,
        action: &str,
        text: &str,
        xml: bool,
        unknown: Unknown,
    ) -> Result<Body, CatalogError> {
        let body = if xml {
            snodo_envelopes::xml::check_fragment(text, &Limits::default()).map_err(|e| {
                CatalogError::Malformed {
                    format: "XML",
                    detail: e.to_string(),
                }
            })?;
            Body::Xml(text.to_owned())
        } else {
            Body::Json(
                serde_json::from_str(text).map_err(|e| CatalogError::Malformed {
                    format: "JSON",
                    detail: e.to_string(),
                })?,
            )
        };
        self.check(service, action, &body, unknown)?;
        Ok(body)
    }

    /// Checks `body` as the message `service`/`action`.
    ///
    /// # Errors
    /// [`CatalogError::Unknown`] for an unknown message when `unknown` says refuse;
    /// [`CatalogError::Invalid`] when the body is not the message.
    pub fn check(
        &self,
        service: &str,
        action: &str,
        body: &Body,
        unknown: Unknown,
    ) -> Result<(), CatalogError> {
        match self.checks.get(&(service.to_owned(), action.to_owned())) {
            Some(check) => check(body).map_err(|detail| CatalogError::Invalid {
                service: service.to_owned(),
                action: action.to_owned(),
                detail,
            }),
            None if unknown == Unknown::WellFormed => Ok(()),
            None => Err(CatalogError::Unknown {
                service: service.to_owned(),
                action: action.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Notice {
        practice: String,
        days: u32,
    }

    impl Message for Notice {
        const SERVICE: &'static str = "prova.servizio";
        const ACTION: &'static str = "avviso";
    }

    #[test]
    fn a_registered_message_must_parse_as_its_type() {
        let c = Catalog::new().json::<Notice>();
        assert!(c.knows("prova.servizio", "avviso"));
        let ok = c.parse(
            "prova.servizio",
            "avviso",
            r#"{"practice": "p-1", "days": 2}"#,
            false,
            Unknown::Refuse,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = c
            .parse(
                "prova.servizio",
                "avviso",
                r#"{"practice": "p-1", "days": -2}"#,
                false,
                Unknown::Refuse,
            )
            .unwrap_err();
        assert!(matches!(e, CatalogError::Invalid { .. }), "{e}");
        let e = c
            .parse(
                "prova.servizio",
                "avviso",
                "<a xmlns='urn:x'/>",
                true,
                Unknown::Refuse,
            )
            .unwrap_err();
        assert!(e.to_string().contains("only the JSON form"), "{e}");
    }

    #[test]
    fn unknown_messages_are_refused_unless_well_formed_is_allowed() {
        let c = Catalog::builtin();
        let e = c
            .parse("x.y", "z", "{}", false, Unknown::Refuse)
            .unwrap_err();
        assert_eq!(e.to_string(), "no message type is known for x.y/z");
        assert!(
            c.parse("x.y", "z", "{}", false, Unknown::WellFormed)
                .is_ok()
        );
        let e = c
            .parse("x.y", "z", "{\"a\": ", false, Unknown::WellFormed)
            .unwrap_err();
        assert!(matches!(e, CatalogError::Malformed { format: "JSON", .. }));
        let e = c
            .parse("x.y", "z", "<a><b></a>", true, Unknown::WellFormed)
            .unwrap_err();
        assert!(
            matches!(e, CatalogError::Malformed { format: "XML", .. }),
            "{e}"
        );
    }
}
