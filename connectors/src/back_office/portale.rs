//! The reference portal: submits citizens' declarations (checked against their schema first,
//! so that a wrong codice fiscale is refused with the field named, before anything is sent),
//! sends their observations, and records every answer and state the comuni tell it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{Data, Istante};
use snodo_schemas::services::residenza_cambio::{
    Dichiarazione, Esito, EsitoDichiarazione, Osservazioni, PreavvisoRigetto, Stato, StatoPratica,
};
use uuid::Uuid;

use crate::back_office::comune::Passo;
use crate::back_office::giorno;
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{Committer, Invio, Outcome, ServiceError, retry};
use crate::store::{StoreError, Tree, Update};

/// A practice as the portal follows it for the citizen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PraticaPortale {
    /// Its id.
    pub pratica: String,
    /// The comune it was sent to.
    pub comune: String,
    /// The declaration's envelope, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inviata: Option<Uuid>,
    /// Every state the comune told, in time order (not of arrival).
    #[serde(default)]
    pub stati: Vec<Passo>,
    /// The comune's answer to the declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esito: Option<EsitoDichiarazione>,
    /// A rejection notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preavviso: Option<PreavvisoRigetto>,
    /// Observations sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osservazioni: Option<String>,
    /// Why the declaration never reached the comune (the portal's check, or the hub's refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rifiuto: Option<String>,
}

impl PraticaPortale {
    /// The last state the comune told.
    #[must_use]
    pub fn stato(&self) -> Option<StatoPratica> {
        self.stati.last().map(|p| p.stato)
    }
}

/// The reference portal.
pub struct Portale {
    /// Signs as `portale:…`.
    committer: Committer,
    /// The clock.
    clock: SharedClock,
    /// Practices by id.
    pratiche: Tree<PraticaPortale>,
}

impl std::fmt::Debug for Portale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portale").finish_non_exhaustive()
    }
}

impl Portale {
    /// The portal acting as `committer`'s entity.
    ///
    /// # Errors
    /// The store's, as a message.
    pub fn new(committer: Committer, clock: SharedClock) -> Result<Arc<Portale>, String> {
        Ok(Arc::new(Portale {
            pratiche: committer
                .store()
                .tree("portale.pratiche")
                .map_err(|e| e.to_string())?,
            committer,
            clock,
        }))
    }

    /// Routes the portal's messages on `builder`.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let p: Arc<dyn crate::residenza_cambio::Portale> = self.clone();
        crate::residenza_cambio::install_portale(&p, self.committer.client(), builder)
    }

    /// The practice `pratica`.
    ///
    /// # Errors
    /// The store's.
    pub fn pratica(&self, pratica: &str) -> Result<Option<PraticaPortale>, StoreError> {
        self.pratiche.get(pratica)
    }

    /// Submits a citizen's declaration, as the form gave it (JSON), to the comune it names.
    /// Returns the envelope's id.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] naming each field at fault when the declaration breaks its
    /// schema (a codice fiscale whose check letter is wrong, say); [`ServiceError::Hub`] with
    /// the hub's code when the hub refuses it (an unknown comune: `unknown-recipient`). Either
    /// way the refusal is recorded on the practice when its id can be read.
    pub async fn dichiara(&self, modulo: &serde_json::Value) -> Result<Uuid, ServiceError> {
        let pratica = modulo
            .get("pratica")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let d = match snodo_schemas::from_json::<Dichiarazione>(modulo) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("declaration refused by the portal: {e}");
                self.rifiutata(&pratica, modulo, &reason)?;
                return Err(ServiceError::Refused(reason));
            }
        };
        if self.pratiche.contains(&d.pratica)? {
            return Err(ServiceError::Refused(format!(
                "practice {} was already submitted",
                d.pratica
            )));
        }
        let comune: EntityId = format!("comune:{}", d.comune)
            .parse()
            .map_err(|e| ServiceError::Refused(format!("comune {}: {e}", d.comune)))?;
        let conversazione = format!("residenza:{}", d.pratica);
        let invio = Invio::new(&comune, &conversazione, &d)?.request();
        let mut o = Outcome::new();
        o.update.put(
            &self.pratiche,
            &d.pratica,
            &PraticaPortale {
                pratica: d.pratica.clone(),
                comune: d.comune.to_string(),
                ..PraticaPortale::default()
            },
        )?;
        o.send(invio);
        match self.committer.commit(o).await {
            Ok(ids) => {
                let id = ids.first().copied().unwrap_or_default();
                self.pratiche.update(&d.pratica, |p| {
                    p.map(|mut p| {
                        p.inviata = Some(id);
                        p
                    })
                })?;
                Ok(id)
            }
            Err(e @ ServiceError::Hub { .. }) => {
                let reason = format!("declaration refused by the hub: {e}");
                self.pratiche.update(&d.pratica, |p| {
                    p.map(|mut p| {
                        p.rifiuto = Some(reason.clone());
                        p
                    })
                })?;
                self.committer.store().flush()?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn rifiutata(
        &self,
        pratica: &str,
        modulo: &serde_json::Value,
        reason: &str,
    ) -> Result<(), StoreError> {
        if pratica.is_empty() || self.pratiche.contains(pratica)? {
            return Ok(());
        }
        let mut u = Update::new();
        u.put(
            &self.pratiche,
            pratica,
            &PraticaPortale {
                pratica: pratica.to_owned(),
                comune: modulo
                    .get("comune")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                rifiuto: Some(reason.to_owned()),
                ..PraticaPortale::default()
            },
        )?;
        self.committer.store().apply(u)
    }

    /// Sends the citizen's observations on a rejection notice.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an unknown practice or one without a notice; the hub's.
    pub async fn osservazioni(&self, pratica: &str, testo: &str) -> Result<(), ServiceError> {
        let mut p = self
            .pratiche
            .get(pratica)?
            .ok_or_else(|| ServiceError::Refused(format!("no practice {pratica}")))?;
        if p.preavviso.is_none() {
            return Err(ServiceError::Refused(format!(
                "practice {pratica} has no rejection notice to answer"
            )));
        }
        let comune: EntityId = format!("comune:{}", p.comune)
            .parse()
            .map_err(|e| ServiceError::Refused(format!("comune {}: {e}", p.comune)))?;
        let oggi: Data =
            giorno(self.clock.now()).map_err(|e| ServiceError::Refused(e.to_string()))?;
        let mut o = Outcome::new();
        o.send(Invio::new(
            &comune,
            &format!("residenza:{pratica}"),
            &Osservazioni {
                pratica: pratica.to_owned(),
                data: oggi,
                testo: testo.to_owned(),
                allegati: Vec::new(),
            },
        )?);
        p.osservazioni = Some(testo.to_owned());
        o.update.put(&self.pratiche, pratica, &p)?;
        self.committer.commit(o).await.map(|_| ())
    }

    fn aggiorna(
        &self,
        m: &Inbound,
        pratica: &str,
        f: impl FnOnce(&mut PraticaPortale),
    ) -> crate::residenza_cambio::Result {
        let Some(mut p) = self.pratiche.get(pratica).map_err(retry)? else {
            return Err(HandlerError::Reject(format!(
                "no practice {pratica} was submitted here"
            )));
        };
        if m.sender().to_string() != format!("comune:{}", p.comune) {
            return Err(HandlerError::Reject(format!(
                "{} writes about practice {pratica}, which went to comune {}",
                m.sender(),
                p.comune
            )));
        }
        f(&mut p);
        let mut o = Outcome::new();
        o.update.put(&self.pratiche, pratica, &p).map_err(retry)?;
        Ok(o)
    }
}

impl crate::residenza_cambio::Portale for Portale {
    fn esito(&self, m: &Inbound, e: Esito) -> crate::residenza_cambio::Result {
        self.aggiorna(m, &e.pratica.clone(), |p| p.esito = Some(e.esito))
    }

    fn stato(&self, m: &Inbound, s: Stato) -> crate::residenza_cambio::Result {
        self.aggiorna(m, &s.pratica.clone(), |p| {
            let passo = Passo {
                stato: s.stato,
                il: s.il.as_str().to_owned(),
                nota: s.nota,
            };
            crate::storia::in_ordine(&mut p.stati, passo, |p| Istante::parse(&p.il).ok());
        })
    }

    fn preavviso_rigetto(
        &self,
        m: &Inbound,
        r: PreavvisoRigetto,
    ) -> crate::residenza_cambio::Result {
        self.aggiorna(m, &r.pratica.clone(), |p| p.preavviso = Some(r))
    }
}
