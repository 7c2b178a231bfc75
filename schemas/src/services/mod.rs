//! The messages of every service, one module per service, and the data they share.

pub mod anagrafe_variazioni;
pub mod dati;
pub mod edilizia_permessi;
pub mod mobilita_contravvenzioni;
pub mod mobilita_viabilita;
pub mod mobilita_ztl;
pub mod pagamenti;
pub mod residenza_cambio;
pub mod tributi_imu;
