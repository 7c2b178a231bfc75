//! Incoming envelopes: verified before anything else sees them, and the [`Sink`] that takes
//! them (the connector runtime's dispatcher, or a program of its own).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use snodo_envelopes::{EntityId, Envelope, Format, Recipient, Verifier};
use uuid::Uuid;

/// A boxed future, for the object-safe async traits of this crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An envelope whose signature, certificate chain and header were verified against the
/// federation CA, addressed to this entity (or to everyone, for an event).
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The envelope, exactly as signed.
    pub envelope: Envelope,
    /// The signed bytes as received: the evidence, and what an adapter keeps.
    pub raw: Bytes,
    /// The encoding it arrived in.
    pub format: Format,
}

impl Inbound {
    /// Verifies `raw` as an envelope for `me`.
    ///
    /// # Errors
    /// [`Refusal`] naming the failed check: a signature or certificate problem (with the
    /// envelope crate's code), or an envelope addressed to someone else.
    pub fn verify(verifier: &Verifier, me: &EntityId, raw: Bytes) -> Result<Inbound, Refusal> {
        let verified = verifier.verify(&raw).map_err(|e| Refusal {
            code: e.code(),
            detail: e.to_string(),
        })?;
        match &verified.envelope.header.recipient {
            Recipient::Entity(to) if to == me => {}
            Recipient::Broadcast => {}
            Recipient::Entity(to) => {
                return Err(Refusal {
                    code: "recipient-not-me",
                    detail: format!("the envelope is for {to}, not {me}"),
                });
            }
        }
        Ok(Inbound {
            envelope: verified.envelope,
            raw,
            format: verified.format,
        })
    }

    /// The envelope's id.
    #[must_use]
    pub fn id(&self) -> Uuid {
        self.envelope.header.id
    }

    /// Its sender.
    #[must_use]
    pub fn sender(&self) -> &EntityId {
        &self.envelope.header.sender
    }

    /// The key that names this envelope among everything received: ids are unique per sender.
    #[must_use]
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.envelope.header.sender, self.envelope.header.id
        )
    }
}

/// Why an incoming envelope was refused before reaching any handler.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    /// A stable code: the envelope crate's (`signature-invalid`, `certificate-revoked`…), or
    /// `recipient-not-me`.
    pub code: &'static str,
    /// What was wrong.
    pub detail: String,
}

/// Why a [`Sink`] could not take an envelope; the envelope stays with the hub and comes back.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Takes verified envelopes. Returning `Ok` means the envelope's effect is durable: the hub is
/// then told it was delivered (an ack, or a 2xx to a push), and it will not come back.
pub trait Sink: Send + Sync + 'static {
    /// Takes one envelope.
    fn accept(&self, inbound: Inbound) -> BoxFuture<'_, Result<(), SinkError>>;
}
