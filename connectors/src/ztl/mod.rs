//! `mobilita.ztl`: limited-traffic-zone permits — the comune's ZTL office ([`ufficio`], a back
//! office role of a comune entity) with what it keeps ([`pratica`]), how it examines an
//! application ([`esame`]) and when permits expire ([`scadenze`]); the portal's role for the
//! citizen ([`portale`]). Residence is checked with ANPR and vehicles with the motor registry
//! (their answers are in [`crate::back_office::anpr`] and
//! [`crate::back_office::motorizzazione`]); the fee is paid through the payment provider
//! ([`crate::pagamenti`]).

pub mod esame;
pub mod portale;
pub mod pratica;
pub mod scadenze;
pub mod ufficio;

pub use snodo_schemas::services::mobilita_ztl::SERVICE;
