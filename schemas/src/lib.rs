//! Payload types of every snodo service, their JSON Schemas and XSDs, and the catalog that
//! validates message bodies against them.
//!
//! - [`formats`]: shared formats as types that cannot hold an invalid value (codice fiscale,
//!   ISTAT and Belfiore codes, NAV and IUV, plates, money in cents, dates);
//! - [`services`]: one module per service, one type per message;
//! - [`Catalog`]: every message by service and action, with its JSON Schema and its service's
//!   XSD, and the validation of JSON and XML bodies the hub runs;
//! - [`to_json`], [`from_json`], [`to_xml`], [`from_xml`]: a message in either form.
//!
//! The generated files are checked in under `schemas/json/<service>/<action>.json` and
//! `schemas/xsd/<service>.xsd`; `cargo run -p snodo-schemas --example generate` rewrites them,
//! and a test fails while they differ from the types.

mod catalog;
mod codec;
mod error;
mod example;
pub mod formats;
mod rules;
mod schema;
pub mod services;
mod xml;
mod xsd;

pub use catalog::{Catalog, MessageSchema, Payload};
pub use codec::{from_json, from_xml, to_json, to_xml};
pub use error::{Error, Form, Violation};
pub use xml::namespace;
