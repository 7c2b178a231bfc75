//! The motor registry's answers in `mobilita.ztl`: the vehicle with a plate (owner, kind,
//! emission class, fuel) for a comune's ZTL office, from the registrations the registry holds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::Targa;
use snodo_schemas::services::mobilita_ztl::{Veicolo, VerificaVeicolo, VerificaVeicoloEsito};

use super::Motorizzazione;
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{self, Invio, Outcome, ServiceError, retry};
use crate::store::{StoreError, Update};

/// A vehicle's registration: its plate and what the registry knows of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Immatricolazione {
    /// The plate.
    pub targa: Targa,
    /// The vehicle.
    pub veicolo: Veicolo,
}

/// What the motor registry is told before it starts: `[adapter.data]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatiMotorizzazione {
    /// The registrations held at the start (loaded on the first start only).
    #[serde(default)]
    pub veicoli: Vec<Immatricolazione>,
}

impl Motorizzazione {
    /// Routes the ZTL offices' vehicle checks on `builder`.
    pub(super) fn install_ztl(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let me = self.clone();
        let client = self.committer.client().clone();
        service::route::<VerificaVeicolo>(builder, &client, None, move |m, q| {
            me.verifica_veicolo(m, q)
        })
    }

    /// Loads `dati`'s registrations, each plate the registry does not hold yet.
    ///
    /// # Errors
    /// The store's.
    pub fn carica(&self, dati: &DatiMotorizzazione) -> Result<(), StoreError> {
        let mut u = Update::new();
        for i in &dati.veicoli {
            if self.immatricolazioni.get(i.targa.as_str())?.is_none() {
                u.put(&self.immatricolazioni, i.targa.as_str(), &i.veicolo)?;
            }
        }
        self.committer.store().apply(u)
    }

    /// Registers vehicle `targa` (a new registration, or a change of owner).
    ///
    /// # Errors
    /// [`ServiceError::Store`] when the store fails.
    pub async fn immatricola(&self, targa: &Targa, veicolo: &Veicolo) -> Result<(), ServiceError> {
        let mut o = Outcome::new();
        o.update
            .put(&self.immatricolazioni, targa.as_str(), veicolo)?;
        self.committer.commit(o).await.map(|_| ())
    }

    /// The registration of `targa`.
    ///
    /// # Errors
    /// The store's.
    pub fn immatricolazione(&self, targa: &str) -> Result<Option<Veicolo>, StoreError> {
        self.immatricolazioni.get(targa)
    }

    fn verifica_veicolo(&self, m: &Inbound, q: VerificaVeicolo) -> Result<Outcome, HandlerError> {
        if !m.sender().to_string().starts_with("comune:") {
            return Err(HandlerError::Reject(format!(
                "a vehicle check from {}: only comuni ask them",
                m.sender()
            )));
        }
        let veicolo = self.immatricolazioni.get(q.targa.as_str()).map_err(retry)?;
        let esito = VerificaVeicoloEsito {
            pratica: q.pratica,
            targa: q.targa,
            veicolo,
        };
        let mut o = Outcome::new();
        o.send(Invio::new(m.sender(), &m.envelope.header.conversation, &esito)?.reply_to(m.id()));
        Ok(o)
    }
}
