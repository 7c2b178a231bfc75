//! The reference motor registry: the address on each driving licence and vehicle follows its
//! holder's registry position, as ANPR reports it; the ZTL offices' vehicle checks are
//! answered from the vehicles' registrations (its `ztl` submodule).

mod ztl;

pub use ztl::{DatiMotorizzazione, Immatricolazione};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::{Data, Targa};
use snodo_schemas::services::dati::Indirizzo;
use snodo_schemas::services::residenza_cambio::{AggiornamentoMotorizzazione, Patente};

use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{Committer, Outcome, retry};
use crate::store::{StoreError, Tree};

/// A licence holder or vehicle owner, and the address the registry has for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intestatario {
    /// The licence, if they hold one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patente: Option<Patente>,
    /// Their vehicles.
    #[serde(default)]
    pub veicoli: Vec<Targa>,
    /// The address on their documents.
    pub indirizzo: Indirizzo,
    /// Since when.
    pub dal: Data,
    /// The practice that set it.
    pub pratica: String,
}

/// A vehicle and its owner's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Veicolo {
    /// The owner's codice fiscale.
    pub proprietario: String,
    /// The address on the registration document.
    pub indirizzo: Indirizzo,
}

/// The reference motor registry.
pub struct Motorizzazione {
    /// Signs as `mctc:…`.
    committer: Committer,
    /// Holders by codice fiscale.
    intestatari: Tree<Intestatario>,
    /// Vehicles by plate.
    veicoli: Tree<Veicolo>,
    /// Registrations (owner, kind, class, fuel) by plate, for the ZTL offices' checks.
    immatricolazioni: Tree<snodo_schemas::services::mobilita_ztl::Veicolo>,
}

impl std::fmt::Debug for Motorizzazione {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Motorizzazione").finish_non_exhaustive()
    }
}

impl Motorizzazione {
    /// The motor registry acting as `committer`'s entity.
    ///
    /// # Errors
    /// The store's, as a message.
    pub fn new(committer: Committer) -> Result<Arc<Motorizzazione>, String> {
        let store = committer.store().clone();
        Ok(Arc::new(Motorizzazione {
            intestatari: store.tree("mctc.intestatari").map_err(|e| e.to_string())?,
            veicoli: store.tree("mctc.veicoli").map_err(|e| e.to_string())?,
            immatricolazioni: store
                .tree("mctc.immatricolazioni")
                .map_err(|e| e.to_string())?,
            committer,
        }))
    }

    /// Routes the motor registry's messages on `builder`.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let m: Arc<dyn crate::residenza_cambio::Motorizzazione> = self.clone();
        let builder =
            crate::residenza_cambio::install_motorizzazione(&m, self.committer.client(), builder);
        self.install_ztl(builder)
    }

    /// What the registry holds for `cf`.
    ///
    /// # Errors
    /// The store's.
    pub fn intestatario(&self, cf: &str) -> Result<Option<Intestatario>, StoreError> {
        self.intestatari.get(cf)
    }

    /// The vehicle with plate `targa`.
    ///
    /// # Errors
    /// The store's.
    pub fn veicolo(&self, targa: &str) -> Result<Option<Veicolo>, StoreError> {
        self.veicoli.get(targa)
    }
}

impl crate::residenza_cambio::Motorizzazione for Motorizzazione {
    fn aggiornamento(
        &self,
        m: &Inbound,
        a: AggiornamentoMotorizzazione,
    ) -> crate::residenza_cambio::Result {
        if !m.sender().to_string().starts_with("anpr:") {
            return Err(HandlerError::Reject(format!(
                "an address update from {}: only the population registry sends them",
                m.sender()
            )));
        }
        let mut o = Outcome::new();
        for c in a.conducenti.iter() {
            let cf = c.codice_fiscale.as_str();
            let before = self.intestatari.get(cf).map_err(retry)?;
            let patente = c
                .patente
                .clone()
                .or_else(|| before.as_ref().and_then(|b| b.patente.clone()));
            let mut veicoli = before.map(|b| b.veicoli).unwrap_or_default();
            for v in &c.veicoli {
                if !veicoli.contains(v) {
                    veicoli.push(v.clone());
                }
                o.update
                    .put(
                        &self.veicoli,
                        v.as_str(),
                        &Veicolo {
                            proprietario: cf.to_owned(),
                            indirizzo: a.indirizzo.clone(),
                        },
                    )
                    .map_err(retry)?;
            }
            o.update
                .put(
                    &self.intestatari,
                    cf,
                    &Intestatario {
                        patente,
                        veicoli,
                        indirizzo: a.indirizzo.clone(),
                        dal: a.decorrenza,
                        pratica: a.pratica.clone(),
                    },
                )
                .map_err(retry)?;
        }
        Ok(o)
    }
}
