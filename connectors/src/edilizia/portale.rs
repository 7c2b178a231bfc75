//! The portal's role in building permits: it acts for the citizen — submits the application
//! with its documents, answers a request for integrations, pays the fees at the payment
//! provider as the citizen's channel (verify, activate, outcome) — and keeps what the comune
//! sends about each practice, so the citizen sees its state.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::Payload;
use snodo_schemas::services::edilizia_permessi::{
    ControlloScia, Integrazione, Istanza, Oneri, ProtocolloIstanza, Provvedimento,
    RichiestaIntegrazione, Stato, StatoIstanza,
};
use snodo_schemas::services::pagamenti::{
    Attiva, AttivaEsito, Canale, EsitoAttivazione, EsitoPagamento, EsitoPagamentoEsito,
    EsitoVerifica, Risultato, Verifica, VerificaEsito,
};

use super::SERVICE;
use crate::HubClient;
use crate::back_office::istante;
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// A practice as the portal shows it to the citizen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PraticaPortale {
    /// The comune's answer to the submission: its protocol, or why it was refused.
    pub protocollo: Option<ProtocolloIstanza>,
    /// The latest state the comune gave, by its time (not by arrival).
    pub stato: Option<StatoIstanza>,
    /// Every change of state, with the comune's notes, in time order.
    pub stati: Vec<Stato>,
    /// The requests for integrations.
    pub richieste: Vec<RichiestaIntegrazione>,
    /// The fees and their notice.
    pub oneri: Option<Oneri>,
    /// The receipt of the fees' payment, once paid here.
    pub ricevuta: Option<String>,
    /// The decision.
    pub provvedimento: Option<Provvedimento>,
    /// The check of a SCIA.
    pub controllo: Option<ControlloScia>,
}

/// Why a payment of fees did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorePagamento {
    /// The comune has not sent fees for the practice (yet).
    #[error("no fees to pay for practice {0}")]
    NessunOnere(String),
    /// The provider refused (the notice unknown, expired, paid, being paid…).
    #[error("the payment provider refused: {0}")]
    Rifiutato(String),
    /// The hub or the store failed.
    #[error("{0}")]
    Sistema(String),
}

/// The portal acting for citizens in `edilizia.permessi`.
pub struct Portale {
    sender: Sender,
    clock: SharedClock,
    /// The payment provider.
    nodo: EntityId,
    /// The practice's id → what the comune sent (written by the handlers only).
    pratiche: Tree<PraticaPortale>,
    /// The practice's id → the answer to its submission (written by [`Portale::presenta`]
    /// only, so that it never races the handlers).
    protocolli: Tree<ProtocolloIstanza>,
    /// The practice's id → the receipt of its fees (written by [`Portale::paga`] only).
    ricevute: Tree<String>,
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

/// The psp the portal reports itself as.
const PSP: &str = "portale-comunefacile";

impl Portale {
    /// The portal for `client`'s entity, paying at `nodo`.
    ///
    /// # Errors
    /// [`StoreError`] when its trees cannot be opened.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        nodo: EntityId,
    ) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Portale {
            pratiche: store.tree("portale.edilizia.pratiche")?,
            protocolli: store.tree("portale.edilizia.protocolli")?,
            ricevute: store.tree("portale.edilizia.ricevute")?,
            risposte: store.tree("portale.edilizia.risposte")?,
            sender: Sender::new(client, store)?,
            clock,
            nodo,
        }))
    }

    /// Routes what the comune sends and the answers that reach the inbox.
    #[must_use]
    pub fn install(self: &Arc<Self>, mut builder: DispatcherBuilder) -> DispatcherBuilder {
        builder = builder
            .route(SERVICE, "stato", Route::handler(self, Portale::on_stato))
            .route(
                SERVICE,
                "richiesta-integrazione",
                Route::handler(self, Portale::on_richiesta),
            )
            .route(SERVICE, "oneri", Route::handler(self, Portale::on_oneri))
            .route(
                SERVICE,
                "provvedimento",
                Route::handler(self, Portale::on_provvedimento),
            )
            .route(
                SERVICE,
                "controllo-scia",
                Route::handler(self, Portale::on_controllo),
            );
        for (service, action) in [
            (SERVICE, "protocollo"),
            ("pagamenti", "verifica-esito"),
            ("pagamenti", "attiva-esito"),
            ("pagamenti", "esito-pagamento-esito"),
        ] {
            builder = builder.route(service, action, Answers::handler(self.risposte.clone()));
        }
        builder
    }

    /// Stages `change` on practice `pratica` (created on its first message).
    fn aggiorna(
        &self,
        pratica: &str,
        effects: &mut Effects,
        change: impl FnOnce(&mut PraticaPortale),
    ) -> Result<(), HandlerError> {
        let mut p = self
            .pratiche
            .get(pratica)
            .map_err(service::retry)?
            .unwrap_or_default();
        change(&mut p);
        effects
            .update
            .put(&self.pratiche, pratica, &p)
            .map_err(service::retry)
    }

    fn on_stato(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let s: Stato = service::read(inbound)?;
        let pratica = s.pratica.clone();
        self.aggiorna(&pratica, effects, |p| {
            crate::storia::in_ordine(&mut p.stati, s, |s| s.il.clone());
            p.stato = p.stati.last().map(|s| s.stato);
        })
    }

    fn on_richiesta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: RichiestaIntegrazione = service::read(inbound)?;
        let pratica = r.pratica.clone();
        self.aggiorna(&pratica, effects, |p| {
            if !p.richieste.contains(&r) {
                p.richieste.push(r);
            }
        })
    }

    fn on_oneri(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let o: Oneri = service::read(inbound)?;
        let pratica = o.pratica.clone();
        self.aggiorna(&pratica, effects, |p| p.oneri = Some(o))
    }

    fn on_provvedimento(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let d: Provvedimento = service::read(inbound)?;
        let pratica = d.pratica.clone();
        self.aggiorna(&pratica, effects, |p| p.provvedimento = Some(d))
    }

    fn on_controllo(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let c: ControlloScia = service::read(inbound)?;
        let pratica = c.pratica.clone();
        self.aggiorna(&pratica, effects, |p| p.controllo = Some(c))
    }

    /// Practice `pratica` as the comune last told it, if the portal knows it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica(&self, pratica: &str) -> Result<Option<PraticaPortale>, StoreError> {
        let protocollo = self.protocolli.get(pratica)?;
        let ricevuta = self.ricevute.get(pratica)?;
        let comune = self.pratiche.get(pratica)?;
        if comune.is_none() && protocollo.is_none() {
            return Ok(None);
        }
        let mut p = comune.unwrap_or_default();
        p.protocollo = protocollo;
        p.ricevuta = ricevuta;
        Ok(Some(p))
    }

    /// Sends `request` to `to` and returns its answer, read as `R`.
    async fn chiedi<Q: Payload, R: Payload>(
        &self,
        to: &EntityId,
        conversation: Option<&str>,
        request: &Q,
    ) -> Result<R, String> {
        let env = typed::message(
            self.sender.client(),
            to,
            Profile::Request,
            conversation,
            None,
            request,
        )?;
        self.sender
            .ask::<R>(&env, &self.risposte, Duration::from_secs(10))
            .await
    }

    /// Submits `istanza` to `comune`'s building office: its answer, the protocol or the
    /// reasons of refusal, kept with the practice.
    ///
    /// # Errors
    /// A message when the hub refuses the application (its code and detail) or no answer came.
    pub async fn presenta(
        &self,
        comune: &EntityId,
        istanza: &Istanza,
    ) -> Result<ProtocolloIstanza, String> {
        let answer: ProtocolloIstanza =
            self.chiedi(comune, Some(&istanza.pratica), istanza).await?;
        let mut effects = Effects::default();
        effects
            .update
            .put(&self.protocolli, &istanza.pratica, &answer)
            .map_err(|e| e.to_string())?;
        self.sender.commit(effects).await?;
        Ok(answer)
    }

    /// Sends the applicant's integrations to `comune`.
    ///
    /// # Errors
    /// A message when the envelope cannot be built or stored; a hub that does not receipt it
    /// yet is not an error (the outbox sends it again).
    pub async fn integra(
        &self,
        comune: &EntityId,
        integrazione: &Integrazione,
    ) -> Result<(), String> {
        let env = typed::message(
            self.sender.client(),
            comune,
            Profile::Oneway,
            Some(&integrazione.pratica),
            None,
            integrazione,
        )?;
        let mut effects = Effects::default();
        effects.send(env);
        self.sender.commit(effects).await
    }

    /// Pays the fees of practice `pratica` by `canale` at the provider: verify the notice,
    /// activate it for the amount it asks, report the outcome OK. Returns the provider's
    /// answer to the outcome (with the receipt's id); the comune learns of the payment from
    /// the provider's receipt.
    ///
    /// # Errors
    /// [`ErrorePagamento`]: no fees yet, a refusal by the provider, the hub unreachable.
    pub async fn paga(
        &self,
        pratica: &str,
        canale: Canale,
    ) -> Result<EsitoPagamentoEsito, ErrorePagamento> {
        let sys = ErrorePagamento::Sistema;
        let oneri = self
            .pratiche
            .get(pratica)
            .map_err(|e| sys(e.to_string()))?
            .and_then(|p| p.oneri)
            .ok_or_else(|| ErrorePagamento::NessunOnere(pratica.to_owned()))?;
        let nodo = self.nodo.clone();
        let v: VerificaEsito = self
            .chiedi(
                &nodo,
                None,
                &Verifica {
                    ente: oneri.ente.clone(),
                    nav: oneri.nav.clone(),
                },
            )
            .await
            .map_err(sys)?;
        let importo = match v.esito {
            EsitoVerifica::Pagabile(a) => a.importo,
            EsitoVerifica::Errore { errore } => {
                return Err(ErrorePagamento::Rifiutato(format!("{errore:?}")));
            }
        };
        let a: AttivaEsito = self
            .chiedi(
                &nodo,
                None,
                &Attiva {
                    ente: oneri.ente.clone(),
                    nav: oneri.nav.clone(),
                    importo,
                    canale,
                    id_tentativo: uuid::Uuid::now_v7().to_string(),
                },
            )
            .await
            .map_err(sys)?;
        let token = match a.esito {
            EsitoAttivazione::Attivato(x) => x.token,
            EsitoAttivazione::Errore { errore } => {
                return Err(ErrorePagamento::Rifiutato(format!("{errore:?}")));
            }
        };
        let il = istante(self.clock.now()).map_err(|e| sys(e.to_string()))?;
        let esito: EsitoPagamentoEsito = self
            .chiedi(
                &nodo,
                None,
                &EsitoPagamento {
                    token,
                    nav: oneri.nav.clone(),
                    risultato: Risultato::Ok,
                    canale,
                    psp: PSP.into(),
                    il,
                    importo: Some(importo),
                },
            )
            .await
            .map_err(sys)?;
        if let Some(errore) = esito.errore {
            return Err(ErrorePagamento::Rifiutato(format!("{errore:?}")));
        }
        if let Some(r) = &esito.ricevuta {
            let mut effects = Effects::default();
            effects
                .update
                .put(&self.ricevute, pratica, r)
                .map_err(|e| sys(e.to_string()))?;
            self.sender.commit(effects).await.map_err(sys)?;
        }
        Ok(esito)
    }
}

/// The portal's settings in `[adapter.data]`: the payment provider.
pub type Impostazioni = crate::pagamenti::Pagatore;

/// `snodo-connector`'s entry: the portal's building-permit role with the data of its
/// configuration.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let nodo = crate::pagamenti::Pagatore::nodo_da(&ctx.data)?;
    let p = Portale::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        nodo,
    )
    .map_err(|e| e.to_string())?;
    Ok((p.install(builder), Vec::new()))
}
