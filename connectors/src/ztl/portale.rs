//! The portal's role in ZTL permits: it applies for the citizen, answers the office's
//! requests for more information, pays the fee at the payment provider as the citizen's
//! payment channel (verify, activate, outcome), and keeps what the office said about each
//! application for the citizen to see.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::Payload;
use snodo_schemas::formats::{CodiceFiscale, Istante};
use snodo_schemas::services::mobilita_ztl::{
    Domanda, DomandaRicevuta, Integrazione, RichiestaIntegrazione, Rigetto, Rilascio, Stato,
    StatoPermesso,
};
use snodo_schemas::services::pagamenti::{
    Attiva, AttivaEsito, Canale, EsitoAttivazione, EsitoPagamento, EsitoPagamentoEsito,
    EsitoVerifica, Risultato, Verifica, VerificaEsito,
};

use crate::HubClient;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service::{self, retry};
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// The psp the portal reports itself as.
const PSP: &str = "portale-comunefacile";

/// How long the portal waits for an answer that did not come within the hub's wait.
const PAZIENZA: Duration = Duration::from_secs(10);

/// An application as the citizen sees it on the portal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vista {
    /// The comune's office it was sent to.
    pub comune: EntityId,
    /// Its conversation.
    pub conversazione: String,
    /// The application.
    pub domanda: Domanda,
    /// Its state, as the office last said.
    pub stato: StatoPermesso,
    /// The request for more information, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrazione: Option<RichiestaIntegrazione>,
    /// The permit, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rilascio: Option<Rilascio>,
    /// The rejection, if it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rigetto: Option<Rigetto>,
    /// Every change of state the office sent, in time order (not of arrival).
    #[serde(default)]
    pub stati: Vec<Stato>,
}

/// Why the portal could not do what the citizen asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorePortale {
    /// The portal holds no such application.
    #[error("no application {0} on the portal")]
    Sconosciuta(String),
    /// The application has nothing to pay (no fee, or its notice not yet come).
    #[error("application {0} has no notice to pay")]
    NienteDaPagare(String),
    /// The payment provider refused a step: what it said.
    #[error("the payment provider refused: {0}")]
    Pagamento(String),
    /// The store, the hub or an answer failed.
    #[error("{0}")]
    Sistema(String),
}

/// The portal acting for citizens in `mobilita.ztl`.
pub struct Portale {
    sender: Sender,
    /// The payment provider.
    nodo: EntityId,
    /// The applications, by the portal's id.
    domande: Tree<Vista>,
    /// The office's receipts, by the portal's id (kept apart from the [`Vista`], which only
    /// the office's messages change once it is sent).
    ricevute: Tree<DomandaRicevuta>,
    /// Answers that reached the inbox, by request id.
    risposte: Tree<Value>,
}

impl std::fmt::Debug for Portale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portale")
            .field("nodo", &self.nodo)
            .finish_non_exhaustive()
    }
}

fn sistema(e: impl std::fmt::Display) -> ErrorePortale {
    ErrorePortale::Sistema(e.to_string())
}

impl Portale {
    /// The portal for `client`'s entity, paying at `nodo`.
    ///
    /// # Errors
    /// [`StoreError`] when its trees cannot be opened.
    pub fn open(client: HubClient, store: Store, nodo: EntityId) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Portale {
            domande: store.tree("portale.ztl.domande")?,
            ricevute: store.tree("portale.ztl.ricevute")?,
            risposte: store.tree("portale.ztl.risposte")?,
            sender: Sender::new(client, store)?,
            nodo,
        }))
    }

    /// Routes the office's messages and the answers that reach the inbox.
    #[must_use]
    pub fn install(self: &Arc<Self>, mut builder: DispatcherBuilder) -> DispatcherBuilder {
        let s = super::SERVICE;
        builder = builder
            .route(
                s,
                "richiesta-integrazione",
                Route::handler(self, Portale::on_richiesta),
            )
            .route(s, "rilascio", Route::handler(self, Portale::on_rilascio))
            .route(s, "rigetto", Route::handler(self, Portale::on_rigetto))
            .route(s, "stato", Route::handler(self, Portale::on_stato));
        for (service, action) in [
            (s, "domanda-ricevuta"),
            ("pagamenti", "verifica-esito"),
            ("pagamenti", "attiva-esito"),
            ("pagamenti", "esito-pagamento-esito"),
        ] {
            builder = builder.route(service, action, Answers::handler(self.risposte.clone()));
        }
        builder
    }

    /// Changes application `pratica` as `f` says, when the message comes from its office.
    fn aggiorna(
        &self,
        inbound: &Inbound,
        pratica: &str,
        effects: &mut Effects,
        f: impl FnOnce(&mut Vista),
    ) -> Result<(), HandlerError> {
        let Some(mut v) = self.domande.get(pratica).map_err(retry)? else {
            return Err(HandlerError::Reject(format!(
                "the portal sent no application {pratica}"
            )));
        };
        if *inbound.sender() != v.comune {
            return Err(HandlerError::Reject(format!(
                "{} wrote about application {pratica}, which went to {}",
                inbound.sender(),
                v.comune
            )));
        }
        f(&mut v);
        effects
            .update
            .put(&self.domande, pratica, &v)
            .map_err(retry)
    }

    fn on_richiesta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: RichiestaIntegrazione = service::read(inbound)?;
        let pratica = r.pratica.clone();
        self.aggiorna(inbound, &pratica, effects, |v| {
            v.stato = StatoPermesso::Integrazione;
            v.integrazione = Some(r);
        })
    }

    fn on_rilascio(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Rilascio = service::read(inbound)?;
        let pratica = r.pratica.clone();
        self.aggiorna(inbound, &pratica, effects, |v| {
            v.stato = StatoPermesso::Rilasciato;
            v.rilascio = Some(r);
        })
    }

    fn on_rigetto(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Rigetto = service::read(inbound)?;
        let pratica = r.pratica.clone();
        self.aggiorna(inbound, &pratica, effects, |v| {
            v.stato = StatoPermesso::Rigettata;
            v.rigetto = Some(r);
        })
    }

    fn on_stato(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let s: Stato = service::read(inbound)?;
        let pratica = s.pratica.clone();
        self.aggiorna(inbound, &pratica, effects, |v| {
            // A late "verifying" never hides a decision already taken, and no state hides
            // one of a later time.
            let decisa = matches!(
                v.stato,
                StatoPermesso::Rilasciato | StatoPermesso::Rigettata
            );
            let ultimo = v.stati.last().is_none_or(|l| l.il <= s.il);
            if ultimo && !(decisa && s.stato == StatoPermesso::InVerifica) {
                v.stato = s.stato;
            }
            crate::storia::in_ordine(&mut v.stati, s, |s| s.il.clone());
        })
    }

    /// Sends `request` to `to` and returns its answer, read as `R`.
    async fn chiedi<Q: Payload, R: Payload>(
        &self,
        to: &EntityId,
        conversation: Option<&str>,
        request: &Q,
    ) -> Result<R, ErrorePortale> {
        let env = typed::message(
            self.sender.client(),
            to,
            Profile::Request,
            conversation,
            None,
            request,
        )
        .map_err(sistema)?;
        self.sender
            .ask::<R>(&env, &self.risposte, PAZIENZA)
            .await
            .map_err(ErrorePortale::Sistema)
    }

    /// Applies to `comune`'s ZTL office with `domanda` (its `pratica` the portal's id of it)
    /// and returns the office's receipt: the protocol, the fee, its notice, the last day.
    ///
    /// # Errors
    /// [`ErrorePortale::Sistema`] when the hub refuses it or no receipt came in time (it is
    /// kept when it comes).
    pub async fn domanda(
        &self,
        comune: &EntityId,
        domanda: Domanda,
    ) -> Result<DomandaRicevuta, ErrorePortale> {
        let pratica = domanda.pratica.clone();
        let env = typed::message(
            self.sender.client(),
            comune,
            Profile::Request,
            None,
            None,
            &domanda,
        )
        .map_err(sistema)?;
        let vista = Vista {
            comune: comune.clone(),
            conversazione: env.header.conversation.clone(),
            domanda,
            stato: StatoPermesso::Presentata,
            integrazione: None,
            rilascio: None,
            rigetto: None,
            stati: Vec::new(),
        };
        self.domande.put(&pratica, &vista).map_err(sistema)?;
        let ricevuta: DomandaRicevuta = self
            .sender
            .ask(&env, &self.risposte, PAZIENZA)
            .await
            .map_err(ErrorePortale::Sistema)?;
        self.ricevute.put(&pratica, &ricevuta).map_err(sistema)?;
        Ok(ricevuta)
    }

    /// Answers the office's request for more information on application `integrazione.pratica`.
    ///
    /// # Errors
    /// [`ErrorePortale::Sconosciuta`] for an application the portal did not send;
    /// [`ErrorePortale::Sistema`] when it cannot be sent.
    pub async fn integra(&self, integrazione: &Integrazione) -> Result<(), ErrorePortale> {
        let v = self.vista_di(&integrazione.pratica)?;
        let env = typed::message(
            self.sender.client(),
            &v.comune,
            Profile::Oneway,
            Some(&v.conversazione),
            None,
            integrazione,
        )
        .map_err(sistema)?;
        let mut effects = Effects::default();
        effects.send(env);
        self.sender
            .commit(effects)
            .await
            .map_err(ErrorePortale::Sistema)
    }

    /// Pays the fee of application `pratica` by `canale` at `il`: the notice of creditor
    /// `ente` is verified, activated and reported paid. Returns the provider's answer to the
    /// outcome, with the receipt's id.
    ///
    /// # Errors
    /// [`ErrorePortale::NienteDaPagare`] without a notice; [`ErrorePortale::Pagamento`] when
    /// the provider refuses a step (already paid, payment in progress…).
    pub async fn paga(
        &self,
        pratica: &str,
        ente: &CodiceFiscale,
        canale: Canale,
        il: Istante,
    ) -> Result<EsitoPagamentoEsito, ErrorePortale> {
        let nav = self
            .ricevuta(pratica)?
            .and_then(|r| r.nav)
            .ok_or_else(|| ErrorePortale::NienteDaPagare(pratica.to_owned()))?;
        let nodo = self.nodo.clone();
        let v: VerificaEsito = self
            .chiedi(
                &nodo,
                None,
                &Verifica {
                    ente: ente.clone(),
                    nav: nav.clone(),
                },
            )
            .await?;
        let importo = match v.esito {
            EsitoVerifica::Pagabile(p) => p.importo,
            EsitoVerifica::Errore { errore } => {
                return Err(ErrorePortale::Pagamento(format!("{errore:?}")));
            }
        };
        let a: AttivaEsito = self
            .chiedi(
                &nodo,
                None,
                &Attiva {
                    ente: ente.clone(),
                    nav: nav.clone(),
                    importo,
                    canale,
                    id_tentativo: uuid::Uuid::now_v7().to_string(),
                },
            )
            .await?;
        let token = match a.esito {
            EsitoAttivazione::Attivato(x) => x.token,
            EsitoAttivazione::Errore { errore } => {
                return Err(ErrorePortale::Pagamento(format!("{errore:?}")));
            }
        };
        let esito = EsitoPagamento {
            token,
            nav,
            risultato: Risultato::Ok,
            canale,
            psp: PSP.into(),
            il,
            importo: Some(importo),
        };
        let e: EsitoPagamentoEsito = self.chiedi(&nodo, None, &esito).await?;
        match e.errore {
            Some(errore) => Err(ErrorePortale::Pagamento(format!("{errore:?}"))),
            None => Ok(e),
        }
    }

    fn vista_di(&self, pratica: &str) -> Result<Vista, ErrorePortale> {
        self.domande
            .get(pratica)
            .map_err(sistema)?
            .ok_or_else(|| ErrorePortale::Sconosciuta(pratica.to_owned()))
    }

    /// Application `pratica` as the citizen sees it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn vista(&self, pratica: &str) -> Result<Option<Vista>, StoreError> {
        self.domande.get(pratica)
    }

    /// The office's receipt of application `pratica`: taken by [`Portale::domanda`], or from
    /// the inbox when it came late.
    ///
    /// # Errors
    /// [`ErrorePortale::Sistema`] when the store fails.
    pub fn ricevuta(&self, pratica: &str) -> Result<Option<DomandaRicevuta>, ErrorePortale> {
        if let Some(r) = self.ricevute.get(pratica).map_err(sistema)? {
            return Ok(Some(r));
        }
        for (_, v) in self.risposte.scan("").map_err(sistema)? {
            if let Ok(r) = snodo_schemas::from_json::<DomandaRicevuta>(&v)
                && r.pratica == pratica
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// The portal's settings in `[adapter.data]`: the payment provider.
pub type Impostazioni = crate::pagamenti::Pagatore;

/// `snodo-connector`'s entry: the portal's ZTL role with the data of its configuration.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let nodo = crate::pagamenti::Pagatore::nodo_da(&ctx.data)?;
    let p =
        Portale::open(ctx.client.clone(), ctx.store.clone(), nodo).map_err(|e| e.to_string())?;
    Ok((p.install(builder), Vec::new()))
}
