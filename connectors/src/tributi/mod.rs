//! `tributi.imu`: property tax — the calculator ([`calcolo`]), the comune's tax office
//! ([`ufficio`], a back office role of a comune entity) and the portal's role for citizens
//! ([`portale`]); payments go through the payment provider ([`crate::pagamenti`]).

pub mod calcolo;
pub mod portale;
pub mod ufficio;
