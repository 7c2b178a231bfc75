//! The news a traffic office declares in its configuration (`[[adapter.data.annunci]]` of
//! `snodo-connector`), brought in line with what it published when the connector starts: a
//! code seen for the first time is published, a changed one becomes the next revision, one
//! marked ended is ended. Each declared event carries the office's own code, which the office
//! keeps with the event id, so a restart publishes nothing twice.

use serde::{Deserialize, Serialize};
use snodo_schemas::services::mobilita_viabilita::MotivoFine;

use super::ufficio::{Bozza, Ufficio};
use crate::service::ServiceError;

/// One event the office declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annuncio {
    /// The office's own code of the event (a protocol number, an ordinance), stable across
    /// changes.
    pub codice: String,
    /// The event as it stands.
    pub evento: Bozza,
    /// Set once it is over or withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminato: Option<MotivoFine>,
}

/// What bringing one declared event in line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Azione {
    /// Published as event `id`, revision 1.
    Pubblicato(String),
    /// Event `id` published again as revision `versione`.
    Aggiornato(String, u32),
    /// Event `id` ended.
    Terminato(String),
    /// Nothing to do: it is as declared (or ended, or declared ended before it was published).
    Invariato,
}

/// The office's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// The events the office declares.
    #[serde(default)]
    pub annunci: Vec<Annuncio>,
}

impl Impostazioni {
    /// Checks what the message schema cannot: codes present and unique, periods in order.
    ///
    /// # Errors
    /// A message naming the declared event at fault, as `annunci[N].FIELD: what`.
    pub fn controlla(&self) -> Result<(), String> {
        for (i, a) in self.annunci.iter().enumerate() {
            if a.codice.trim().is_empty() {
                return Err(format!("annunci[{i}].codice: empty"));
            }
            if self.annunci[..i].iter().any(|b| b.codice == a.codice) {
                return Err(format!(
                    "annunci[{i}].codice: `{}` is declared twice",
                    a.codice
                ));
            }
            if let Some(fine) = &a.evento.periodo.fine
                && *fine < a.evento.periodo.inizio
            {
                return Err(format!(
                    "annunci[{i}].evento.periodo.fine: {fine} is before the start, {}",
                    a.evento.periodo.inizio
                ));
            }
        }
        Ok(())
    }
}

/// Brings `annuncio` in line with what `ufficio` published.
///
/// # Errors
/// [`ServiceError`] from the office (the hub refusing, the store failing); a message that
/// waits in the outbox for the hub is [`ServiceError::Unreachable`].
pub async fn allinea(ufficio: &Ufficio, annuncio: &Annuncio) -> Result<Azione, ServiceError> {
    let Some(id) = ufficio.id_di(&annuncio.codice)? else {
        if annuncio.terminato.is_some() {
            return Ok(Azione::Invariato);
        }
        let e = ufficio
            .pubblica_come(Some(&annuncio.codice), annuncio.evento.clone())
            .await?;
        return Ok(Azione::Pubblicato(e.id));
    };
    let Some(held) = ufficio.evento(&id)? else {
        return Err(ServiceError::Refused(format!(
            "{}: event {id} is recorded for it but not held",
            annuncio.codice
        )));
    };
    if held.fine.is_some() {
        return Ok(Azione::Invariato);
    }
    if let Some(motivo) = annuncio.terminato {
        ufficio.termina(&id, motivo).await?;
        return Ok(Azione::Terminato(id));
    }
    if annuncio.evento.uguale(&held.evento) {
        return Ok(Azione::Invariato);
    }
    let e = ufficio.aggiorna(&id, annuncio.evento.clone()).await?;
    Ok(Azione::Aggiornato(id, e.versione))
}

/// Brings every declared event in line, in order, logging what each did; one that fails
/// does not stop the others.
pub async fn allinea_tutti(ufficio: &Ufficio, annunci: &[Annuncio]) -> Vec<Result<Azione, String>> {
    let mut out = Vec::with_capacity(annunci.len());
    for a in annunci {
        let r = allinea(ufficio, a).await;
        match &r {
            Ok(azione) => {
                tracing::info!(codice = %a.codice, ?azione, "Declared mobility news in line.");
            }
            Err(e) => {
                tracing::error!(codice = %a.codice, error = %e, "Declared mobility news not in line.");
            }
        }
        out.push(r.map_err(|e| e.to_string()));
    }
    out
}
