//! `edilizia.permessi`: building permits — the comune's building office ([`sportello`], a back
//! office role of a comune entity) and the portal's role for citizens ([`portale`]), with the
//! fees on the comune's rates ([`oneri`]), the terms and their one interruption ([`termini`])
//! and the check of attached documents against their digests ([`documenti`]); fees are paid
//! through the payment provider ([`crate::pagamenti`]).

pub mod documenti;
pub mod oneri;
pub mod portale;
pub mod sportello;
pub mod termini;

/// The service's name.
pub const SERVICE: &str = "edilizia.permessi";
