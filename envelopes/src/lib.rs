//! The snodo envelope: the message every body of the federation exchanges through the hub.
//!
//! - [`Envelope`] is the model (a [`Header`] and a [`Body`]), built with [`Envelope::builder`].
//! - [`xml`] and [`json`] encode the same model; [`sign`] signs it as XML-DSig or JWS.
//! - [`Verifier`] checks a signed envelope end to end against a [`TrustStore`].
//! - [`pki`] creates and manages the federation's keys, certificates and revocation list.
//!
//! Parsing is hardened: no DTDs, no entity expansion, no network or file access, bounded size
//! and depth ([`Limits`]), exactly one signature that covers the whole document.

pub mod digest;
pub mod entity;
pub mod envelope;
pub mod error;
pub mod header;
pub mod json;
pub mod jws;
pub mod limits;
pub mod pki;
pub mod signer;
pub mod trust;
pub mod verify;
pub mod xml;
pub mod xmldsig;

pub use digest::sha256;
pub use entity::{EntityId, Recipient};
pub use envelope::{Body, Envelope, EnvelopeBuilder};
pub use error::{Error, Result};
pub use header::{ContentType, Header, Profile};
pub use limits::Limits;
pub use signer::{Algorithm, Signer};
pub use trust::{Identity, TrustStore, VerifiedCert};
pub use verify::{Format, Verified, Verifier, sign};
