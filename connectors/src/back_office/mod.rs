//! The reference back offices: a comune (arrival and departure, its TARI office and municipal
//! police, and its registry feed), ANPR, the motor registry and the portal, applying
//! `DOMAIN.md`'s rules with durable state in the connector's store and terms on an injected
//! clock, so that a federation runs without any real municipal system.
//!
//! Each implements its role's traits of [`crate::residenza_cambio`] and
//! [`crate::anagrafe_variazioni`]; a real system can replace it by implementing the same traits.
//! They are registered in [`crate::adapter::reference::AVAILABLE`] for `snodo-connector`.

pub mod anpr;
pub mod comune;
pub mod motorizzazione;
pub mod portale;

use serde::de::DeserializeOwned;
use snodo_schemas::formats::{Data, Istante};
use snodo_schemas::services::dati::Motivo;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::dispatch::HandlerError;

/// Reads a back office's data (the `[adapter.data]` table) as `T`.
///
/// # Errors
/// A message naming the field at fault, as `FIELD: what`.
pub fn data<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    let value = if value.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        value.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

/// The day of `now`, as messages write it.
///
/// # Errors
/// [`HandlerError::Retry`] outside the years 0–9999 (a clock gone wrong).
pub fn giorno(now: OffsetDateTime) -> Result<Data, HandlerError> {
    Data::from_date(now.date()).ok_or_else(|| HandlerError::Retry(format!("the clock says {now}")))
}

/// The instant `now`, as messages write it.
///
/// # Errors
/// [`HandlerError::Retry`] outside the years 0–9999.
pub fn istante(now: OffsetDateTime) -> Result<Istante, HandlerError> {
    Istante::from_datetime(PrimitiveDateTime::new(now.date(), now.time()))
        .ok_or_else(|| HandlerError::Retry(format!("the clock says {now}")))
}

/// `days` days after `d` (before, when negative).
///
/// # Errors
/// [`HandlerError::Reject`] past the calendar.
pub fn dopo(d: Data, days: i64) -> Result<Data, HandlerError> {
    crate::working_days::add_calendar_days(d.date(), days)
        .and_then(Data::from_date)
        .ok_or_else(|| HandlerError::Reject(format!("{d} + {days} days is past the calendar")))
}

/// Midnight UTC starting `d`: when a term that ends on the day before falls due.
#[must_use]
pub fn mezzanotte(d: Data) -> OffsetDateTime {
    d.date().midnight().assume_utc()
}

/// A reason with its code.
#[must_use]
pub fn motivo(codice: &str, descrizione: impl Into<String>) -> Motivo {
    Motivo {
        codice: codice.to_owned(),
        descrizione: descrizione.into(),
    }
}

/// The reasons as one line, `code: sentence; …`.
#[must_use]
pub fn elenco_motivi(motivi: &[Motivo]) -> String {
    motivi
        .iter()
        .map(|m| format!("{}: {}", m.codice, m.descrizione))
        .collect::<Vec<_>>()
        .join("; ")
}
