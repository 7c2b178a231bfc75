//! The catalog: every message of every service with its JSON Schema and XSD, and the validation
//! the hub runs on each envelope body.
//!
//! A body is checked in two steps, and refused at the first that fails:
//! 1. against the published schema — JSON Schema (draft 2020-12) for a JSON body, the service's
//!    XSD through libxml2 for an XML body — which checks structure, types, required and unknown
//!    members, patterns and bounds;
//! 2. by deserializing it into the Rust type, which also checks what a schema cannot say: check
//!    characters (codice fiscale, NAV), real calendar dates, codes that are never zero, and the
//!    rules that tie a message's fields together ([`Payload::rules`]).
//!
//! Both steps name the failing field: a JSON pointer (`/persone/0/persona/codice_fiscale`), or an
//! element path and line for XML (`/dichiarazione/persone[1]/persona/codice_fiscale`, line 7).
//!
//! Schemas are compiled once, on first use: JSON Schema validators once per process, XSDs once
//! per thread that validates XML (libxml2's compiled schemas are not shared between threads by
//! its Rust binding).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::OnceLock;

use libxml::parser::{Parser, ParserOptions};
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Form, MAX_VIOLATIONS, Violation};
use crate::{schema, services, xml, xsd};

/// A message type of the catalog: its service and action name it in envelopes.
pub trait Payload: Serialize + DeserializeOwned + JsonSchema {
    /// The service (`residenza.cambio`).
    const SERVICE: &'static str;
    /// The action (`dichiarazione`).
    const ACTION: &'static str;

    /// What is wrong with this message beyond its fields' own formats: rules that tie fields
    /// together (transfers that sum to the total, a period that ends after it starts). Each
    /// violation's `at` is a JSON pointer. None by default.
    fn rules(&self) -> Vec<Violation> {
        Vec::new()
    }
}

/// One message as a service module declares it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Message {
    service: &'static str,
    action: &'static str,
    schema: fn() -> Value,
    check: fn(&Value) -> Result<(), Violation>,
    canonical: fn(&Value) -> Result<Value, String>,
}

impl Message {
    /// The message of type `T`.
    pub(crate) const fn of<T: Payload>() -> Message {
        Message {
            service: T::SERVICE,
            action: T::ACTION,
            schema: schema::of::<T>,
            check: check_as::<T>,
            canonical: canonical_as::<T>,
        }
    }
}

/// Deserializes `value` as `T` and applies its rules, naming the field of the first error as a
/// JSON pointer.
fn check_as<T: Payload>(value: &Value) -> Result<(), Violation> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(typed) => match typed.rules().into_iter().next() {
            None => Ok(()),
            Some(v) => Err(v),
        },
        Err(e) => {
            let mut pointer = String::new();
            for segment in e.path().iter() {
                use serde_path_to_error::Segment;
                match segment {
                    Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                    Segment::Map { key } => {
                        pointer.push('/');
                        pointer.push_str(&xml::escape_pointer(key));
                    }
                    Segment::Enum { variant } => {
                        pointer.push('/');
                        pointer.push_str(&xml::escape_pointer(variant));
                    }
                    Segment::Unknown => {}
                }
            }
            Err(Violation {
                at: pointer,
                line: None,
                problem: e.into_inner().to_string(),
            })
        }
    }
}

/// Reads `value` as `T` and writes it back.
fn canonical_as<T: Serialize + DeserializeOwned>(value: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Declares the messages of a service module: `"action" => Type, …`, or `"action" => Type
/// with function` for a type whose [`Payload::rules`] is `function(&self)`. Implements
/// [`Payload`] for each type and lists them in `MESSAGES` for the catalog.
macro_rules! messages {
    ($($action:literal => $t:ident $(with $rules:path)?),+ $(,)?) => {
        $(
            impl $crate::catalog::Payload for $t {
                const SERVICE: &'static str = SERVICE;
                const ACTION: &'static str = $action;
                $(
                    fn rules(&self) -> Vec<$crate::Violation> {
                        $rules(self)
                    }
                )?
            }
        )+

        /// The messages of this service, for the catalog.
        pub(crate) const MESSAGES: &[$crate::catalog::Message] =
            &[$($crate::catalog::Message::of::<$t>()),+];
    };
}
pub(crate) use messages;

/// The services of the catalog, and their messages.
const SERVICES: [&[Message]; 8] = [
    services::residenza_cambio::MESSAGES,
    services::anagrafe_variazioni::MESSAGES,
    services::tributi_imu::MESSAGES,
    services::pagamenti::MESSAGES,
    services::mobilita_contravvenzioni::MESSAGES,
    services::mobilita_ztl::MESSAGES,
    services::edilizia_permessi::MESSAGES,
    services::mobilita_viabilita::MESSAGES,
];

/// The schemas of one message, compiled on first use.
#[derive(Debug)]
pub struct MessageSchema {
    message: Message,
    /// Its namespace in XML.
    namespace: String,
    /// Its JSON Schema, generated on first use.
    json_schema: OnceLock<Value>,
    /// Its compiled JSON Schema, on first validation; an error is a defect of this crate.
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

/// Every message of every service.
#[derive(Debug)]
pub struct Catalog {
    /// Messages by service, then action.
    messages: HashMap<&'static str, HashMap<&'static str, MessageSchema>>,
    /// Each service's actions, in name order.
    services: BTreeMap<&'static str, Vec<&'static str>>,
    /// Each service's XSD, generated on first use.
    xsds: HashMap<&'static str, OnceLock<Result<String, String>>>,
}

impl Catalog {
    /// The catalog of the services of this crate, built on first use.
    #[must_use]
    pub fn global() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(Catalog::build)
    }

    fn build() -> Catalog {
        let mut messages = HashMap::new();
        let mut services: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
        let mut xsds = HashMap::new();
        for message in SERVICES.iter().flat_map(|s| s.iter()) {
            messages
                .entry(message.service)
                .or_insert_with(HashMap::new)
                .insert(
                    message.action,
                    MessageSchema {
                        message: *message,
                        namespace: xml::namespace(message.service),
                        json_schema: OnceLock::new(),
                        validator: OnceLock::new(),
                    },
                );
            services
                .entry(message.service)
                .or_default()
                .push(message.action);
            xsds.entry(message.service).or_insert_with(OnceLock::new);
        }
        for actions in services.values_mut() {
            actions.sort_unstable();
        }
        Catalog {
            messages,
            services,
            xsds,
        }
    }

    /// The schemas of `service`/`action`, if the catalog has that message.
    #[must_use]
    pub fn get(&self, service: &str, action: &str) -> Option<&MessageSchema> {
        self.messages.get(service)?.get(action)
    }

    /// The schemas of `"service/action"`, as a configuration names them.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&MessageSchema> {
        let (service, action) = name.rsplit_once('/')?;
        self.get(service, action)
    }

    /// The services, in name order.
    pub fn services(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.keys().copied()
    }

    /// The actions of `service`, in name order; empty for an unknown service.
    #[must_use]
    pub fn actions(&self, service: &str) -> &[&'static str] {
        self.services.get(service).map_or(&[], Vec::as_slice)
    }

    /// Every message, by service then action.
    pub fn messages(&self) -> impl Iterator<Item = &MessageSchema> + '_ {
        self.services.iter().flat_map(move |(service, actions)| {
            actions
                .iter()
                .filter_map(move |action| self.get(service, action))
        })
    }

    /// The XSD of `service`.
    ///
    /// # Errors
    /// [`Error::UnknownMessage`] for a service the catalog does not have; [`Error::Schema`] when
    /// the XSD cannot be generated (a defect of this crate, which its tests rule out).
    pub fn xsd(&self, service: &str) -> Result<&str, Error> {
        let cell = self
            .xsds
            .get(service)
            .ok_or_else(|| Error::UnknownMessage {
                service: service.to_owned(),
                action: String::new(),
            })?;
        cell.get_or_init(|| {
            let schemas: Vec<(&str, &Value)> = self
                .actions(service)
                .iter()
                .filter_map(|a| self.get(service, a))
                .map(|m| (m.action(), m.json_schema()))
                .collect();
            xsd::generate(service, &xml::namespace(service), &schemas)
        })
        .as_deref()
        .map_err(|reason| Error::Schema {
            service: service.to_owned(),
            reason: reason.clone(),
        })
    }

    /// The files this crate publishes, as `(path, content)`: `json/<service>/<action>.json` for
    /// each message (pretty, keys in order), `xsd/<service>.xsd` for each service, and a sample
    /// document of each message in both forms, `samples/<service>/<action>.json` and `.xml`;
    /// paths relative to the crate's directory, in path order. They are checked in under
    /// `schemas/`; `cargo run -p snodo-schemas --example generate` writes them.
    ///
    /// # Errors
    /// [`Error::Schema`] when an XSD cannot be generated; [`Error::Invalid`] when a sample is
    /// not valid (both defects of this crate, which its tests rule out).
    pub fn generated_files(&self) -> Result<Vec<(String, String)>, Error> {
        let mut files = Vec::new();
        for message in self.messages() {
            files.push((
                format!("json/{}/{}.json", message.service(), message.action()),
                message.json_schema_file(),
            ));
        }
        for service in self.services() {
            files.push((format!("xsd/{service}.xsd"), self.xsd(service)?.to_owned()));
        }
        for message in self.messages() {
            let Some(example) = message.examples().into_iter().next() else {
                continue;
            };
            let stem = format!("samples/{}/{}", message.service(), message.action());
            let mut json = serde_json::to_string_pretty(&sorted(&example))
                .map_err(|e| message.schema_error(e.to_string()))?;
            json.push('\n');
            files.push((format!("{stem}.json"), json));
            files.push((format!("{stem}.xml"), message.json_to_xml_pretty(&example)?));
        }
        files.sort();
        Ok(files)
    }

    /// Validates a JSON body of `service`/`action` (schema, then types).
    ///
    /// # Errors
    /// [`Error::UnknownMessage`], or [`Error::Invalid`] naming each field at fault.
    pub fn validate_json(&self, service: &str, action: &str, body: &Value) -> Result<(), Error> {
        self.require(service, action)?.validate_json(body)
    }

    /// Validates an XML body (one root element) of `service`/`action` (XSD, then types).
    ///
    /// # Errors
    /// [`Error::UnknownMessage`], or [`Error::Invalid`] naming each element at fault and its line.
    pub fn validate_xml(&self, service: &str, action: &str, body: &str) -> Result<(), Error> {
        self.require(service, action)?.validate_xml(body)
    }

    pub(crate) fn require(&self, service: &str, action: &str) -> Result<&MessageSchema, Error> {
        self.get(service, action)
            .ok_or_else(|| Error::UnknownMessage {
                service: service.to_owned(),
                action: action.to_owned(),
            })
    }
}

thread_local! {
    /// This thread's compiled XSDs, by service.
    static XSD_CONTEXTS: RefCell<HashMap<&'static str, Rc<RefCell<SchemaValidationContext>>>> =
        RefCell::new(HashMap::new());
}

impl MessageSchema {
    /// The service (`residenza.cambio`).
    #[must_use]
    pub fn service(&self) -> &'static str {
        self.message.service
    }

    /// The action (`dichiarazione`).
    #[must_use]
    pub fn action(&self) -> &'static str {
        self.message.action
    }

    /// `service/action`, the name a configuration gives it.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}/{}", self.service(), self.action())
    }

    /// The namespace of its XML form (`urn:snodo:service:residenza.cambio:1`).
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its JSON Schema (draft 2020-12).
    #[must_use]
    pub fn json_schema(&self) -> &Value {
        self.json_schema.get_or_init(self.message.schema)
    }

    /// Its JSON Schema as the published file holds it: pretty, keys in order, a final newline.
    #[must_use]
    pub fn json_schema_file(&self) -> String {
        let mut text = serde_json::to_string_pretty(&sorted(self.json_schema()))
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    }

    /// Example documents of this message, valid, built from its schema: every member present,
    /// lists of two where allowed, format values from the schema's `examples`; one document per
    /// alternative of its widest choice, so that each variant of each choice appears.
    #[must_use]
    pub fn examples(&self) -> Vec<Value> {
        crate::example::documents(self.json_schema())
    }

    /// A valid JSON body read into its Rust type and written back: what any sender of this value
    /// would write.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the body is not valid.
    pub fn canonical_json(&self, body: &Value) -> Result<Value, Error> {
        self.validate_json(body)?;
        (self.message.canonical)(body).map_err(|problem| {
            self.invalid(
                Form::Json,
                vec![Violation {
                    at: String::new(),
                    line: None,
                    problem,
                }],
            )
        })
    }

    pub(crate) fn invalid(&self, form: Form, mut violations: Vec<Violation>) -> Error {
        violations.truncate(MAX_VIOLATIONS);
        Error::Invalid {
            service: self.service(),
            action: self.action(),
            form,
            violations,
        }
    }

    fn schema_error(&self, reason: impl Into<String>) -> Error {
        Error::Schema {
            service: self.service().to_owned(),
            reason: reason.into(),
        }
    }

    /// Validates a JSON body: its JSON Schema, then its Rust type.
    ///
    /// # Errors
    /// [`Error::Invalid`] with each violation's JSON pointer.
    pub fn validate_json(&self, body: &Value) -> Result<(), Error> {
        let validator = self
            .validator
            .get_or_init(|| {
                jsonschema::validator_for(self.json_schema()).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| self.schema_error(e.clone()))?;
        let violations: Vec<Violation> = validator
            .iter_errors(body)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                at: e.instance_path().to_string(),
                line: None,
                problem: shorten(&e.to_string()),
            })
            .collect();
        if !violations.is_empty() {
            return Err(self.invalid(Form::Json, violations));
        }
        (self.message.check)(body).map_err(|v| self.invalid(Form::Json, vec![v]))
    }

    /// Validates an XML body (one root element, the action, in the service's namespace): the
    /// service's XSD, then its Rust type.
    ///
    /// # Errors
    /// [`Error::Invalid`] with each violation's element path and line.
    pub fn validate_xml(&self, body: &str) -> Result<(), Error> {
        self.xml_to_json(body).map(|_| ())
    }

    /// The JSON form of a valid XML body (validated as [`MessageSchema::validate_xml`] does).
    ///
    /// # Errors
    /// As [`MessageSchema::validate_xml`].
    pub fn xml_to_json(&self, body: &str) -> Result<Value, Error> {
        let invalid = |v: Violation| self.invalid(Form::Xml, vec![v]);
        let tree = xml::parse(body, &self.namespace).map_err(invalid)?;
        if tree.name != self.action() {
            return Err(invalid(Violation {
                at: format!("/{}", tree.name),
                line: Some(tree.line),
                problem: format!(
                    "the root element is `{}`, but the action is `{}`",
                    tree.name,
                    self.action()
                ),
            }));
        }
        self.check_xsd(body, &tree)?;
        let (value, origins) = xml::to_json(&tree, self.json_schema()).map_err(invalid)?;
        // The XSD and the JSON Schema describe the same documents; the types check the rest.
        (self.message.check)(&value).map_err(|v| {
            let (at, line) = origins.locate(&v.at);
            invalid(Violation {
                at,
                line,
                problem: v.problem,
            })
        })?;
        Ok(value)
    }

    /// The XML form of a JSON body, which must be valid.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the JSON body is not valid; [`Error::Unrepresentable`] for a
    /// character XML 1.0 cannot hold.
    pub fn json_to_xml(&self, body: &Value) -> Result<String, Error> {
        self.write_xml(body, false)
    }

    /// The XML form of a JSON body, which must be valid, one element per line and indented;
    /// it reads back as [`MessageSchema::json_to_xml`]'s does.
    ///
    /// # Errors
    /// As [`MessageSchema::json_to_xml`].
    pub fn json_to_xml_pretty(&self, body: &Value) -> Result<String, Error> {
        self.write_xml(body, true)
    }

    fn write_xml(&self, body: &Value, pretty: bool) -> Result<String, Error> {
        self.validate_json(body)?;
        xml::from_json(body, self.action(), &self.namespace, pretty).map_err(|violation| {
            Error::Unrepresentable {
                service: self.service(),
                action: self.action(),
                form: Form::Xml,
                violation,
            }
        })
    }

    fn check_xsd(&self, body: &str, tree: &xml::Element) -> Result<(), Error> {
        let context = XSD_CONTEXTS.with(|contexts| {
            if let Some(c) = contexts.borrow().get(self.service()) {
                return Ok(c.clone());
            }
            let xsd = Catalog::global().xsd(self.service())?;
            let mut parser = SchemaParserContext::from_buffer(xsd);
            let context = SchemaValidationContext::from_parser(&mut parser).map_err(|errors| {
                self.schema_error(
                    errors
                        .iter()
                        .filter_map(|e| e.message.as_deref())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            let context = Rc::new(RefCell::new(context));
            contexts
                .borrow_mut()
                .insert(self.service(), context.clone());
            Ok::<_, Error>(context)
        })?;
        let options = ParserOptions {
            recover: false,
            no_net: true,
            ..ParserOptions::default()
        };
        let document = Parser::default()
            .parse_string_with_options(body, options)
            .map_err(|_| {
                self.invalid(
                    Form::Xml,
                    vec![Violation {
                        at: String::new(),
                        line: None,
                        problem: "libxml2 could not parse the body".into(),
                    }],
                )
            })?;
        let mut context = context.borrow_mut();
        match context.validate_document(&document) {
            Ok(()) => Ok(()),
            Err(errors) => {
                let violations = errors
                    .iter()
                    .take(MAX_VIOLATIONS)
                    .map(|e| {
                        let message = e.message.as_deref().unwrap_or("invalid").trim();
                        let line = e.line.and_then(|l| u32::try_from(l).ok());
                        Violation {
                            at: element_path(tree, message, line),
                            line,
                            problem: shorten(&strip_namespace(message)),
                        }
                    })
                    .collect();
                Err(self.invalid(Form::Xml, violations))
            }
        }
    }
}

/// libxml2 names elements `{namespace}name`; the namespace is the service's, so it goes.
fn strip_namespace(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The path of the element a libxml2 message is about: the one it names (`Element
/// '{ns}codice_fiscale'`) on the line it gives, found in the parsed tree.
fn element_path(tree: &xml::Element, message: &str, line: Option<u32>) -> String {
    let named = message
        .strip_prefix("Element '")
        .and_then(|m| m.split('\'').next())
        .map(|n| n.rsplit('}').next().unwrap_or(n));
    let mut best: Option<String> = None;
    tree.walk(&mut |path, el| {
        let name_ok = named.is_none_or(|n| el.name == n);
        let line_ok = line.is_none_or(|l| el.line == l);
        if name_ok && line_ok && best.is_none() {
            best = Some(path.to_owned());
        }
    });
    best.unwrap_or_else(|| format!("/{}", tree.name))
}

/// `v` with the members of every object in name order, whatever the map type preserves.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k.as_str()])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Cuts a message to a readable length.
fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}
