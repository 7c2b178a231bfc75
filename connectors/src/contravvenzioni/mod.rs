//! `mobilita.contravvenzioni`: traffic fines — the amounts by the day paid and the terms
//! ([`importi`]), the comune's municipal police office ([`comando`], a back office role of a
//! comune entity), the prefecture that decides appeals ([`prefettura`]) and the portal's role
//! for citizens ([`portale`]); fines are paid through the payment provider
//! ([`crate::pagamenti`]).

pub mod comando;
pub mod importi;
pub mod portale;
pub mod prefettura;
