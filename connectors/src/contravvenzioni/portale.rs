//! The portal's role in traffic fines: it acts for the citizen — looks fines up at the
//! comune's police office (by plate and period, or by number), pays the notice that fits the
//! day at the payment provider (verify, activate, outcome), appeals — and keeps the fines
//! notified and every change of state that reaches it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::Payload;
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Importo, Istante, Nav};
use snodo_schemas::services::mobilita_contravvenzioni::{
    AvvisoVerbale, Criterio, DatiVerbale, Ricerca, RicercaEsito, Ricorso, RicorsoRicevuta, SERVICE,
    Stato, Verbale,
};
use snodo_schemas::services::pagamenti::{
    Attiva, Canale, ErroreAvviso, EsitoAttivazione, EsitoPagamento, EsitoPagamentoEsito,
    EsitoRegistrato, Risultato,
};

use crate::HubClient;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// The psp the portal reports itself as.
const PSP: &str = "portale-comunefacile";

/// Why a payment did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorePagamento {
    /// Nothing is payable on the fine today (paid, under appeal, archived).
    #[error("nothing is payable on fine {0} today")]
    NienteDovuto(String),
    /// No fine matches.
    #[error("no fine {0} found")]
    Sconosciuto(String),
    /// The provider refused the notice.
    #[error("the provider refused notice {nav}: {errore:?}")]
    Avviso {
        /// The notice.
        nav: Nav,
        /// Why.
        errore: ErroreAvviso,
    },
    /// The hub or the provider failed; trying again may work.
    #[error("{0}")]
    Sistema(String),
}

/// The portal acting for citizens in `mobilita.contravvenzioni`.
pub struct Portale {
    sender: Sender,
    /// The payment provider.
    nodo: EntityId,
    /// `COMUNE/NUMBER` → the fine as notified.
    verbali: Tree<Verbale>,
    /// `COMUNE/NUMBER/SEQ` → each change of state, in order.
    stati: Tree<Stato>,
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

impl Portale {
    /// The portal for `client`'s entity, paying at `nodo`.
    ///
    /// # Errors
    /// [`StoreError`] when its trees cannot be opened.
    pub fn open(client: HubClient, store: Store, nodo: EntityId) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Portale {
            verbali: store.tree("portale.contravvenzioni.verbali")?,
            stati: store.tree("portale.contravvenzioni.stati")?,
            risposte: store.tree("portale.contravvenzioni.risposte")?,
            sender: Sender::new(client, store)?,
            nodo,
        }))
    }

    /// Routes the fines, the changes of state and the answers that reach the inbox.
    #[must_use]
    pub fn install(self: &Arc<Self>, mut builder: DispatcherBuilder) -> DispatcherBuilder {
        builder = builder
            .route(
                SERVICE,
                "verbale",
                Route::handler(self, Portale::on_verbale),
            )
            .route(SERVICE, "stato", Route::handler(self, Portale::on_stato));
        for (service, action) in [
            (SERVICE, "ricerca-esito"),
            (SERVICE, "ricorso-ricevuta"),
            ("pagamenti", "verifica-esito"),
            ("pagamenti", "attiva-esito"),
            ("pagamenti", "esito-pagamento-esito"),
        ] {
            builder = builder.route(service, action, Answers::handler(self.risposte.clone()));
        }
        builder
    }

    fn on_verbale(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let v: Verbale = service::read(inbound)?;
        let key = format!("{}/{}", v.verbale.comune, v.verbale.numero);
        effects
            .update
            .put(&self.verbali, &key, &v)
            .map_err(service::retry)
    }

    fn on_stato(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let s: Stato = service::read(inbound)?;
        // Keyed by the envelope's id (a UUIDv7, in sending order): a redelivery overwrites.
        let key = format!("{}/{}/{}", s.comune, s.numero_verbale, inbound.id());
        effects
            .update
            .put(&self.stati, &key, &s)
            .map_err(service::retry)
    }

    /// The fines notified to `cf`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn verbali(&self, cf: &CodiceFiscale) -> Result<Vec<DatiVerbale>, StoreError> {
        Ok(self
            .verbali
            .scan("")?
            .into_iter()
            .map(|(_, v)| v.verbale)
            .filter(|v| &v.trasgressore.codice_fiscale == cf)
            .collect())
    }

    /// The changes of state of fine `numero` of `comune`, in order.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn stati(&self, comune: &CodiceIstat, numero: &str) -> Result<Vec<Stato>, StoreError> {
        Ok(self
            .stati
            .scan(&format!("{comune}/{numero}/"))?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// Sends `request` to `to` and returns its answer, read as `R`.
    ///
    /// # Errors
    /// A message when the hub refuses it (its code and detail) or no answer came.
    pub async fn chiedi<Q: Payload, R: Payload>(
        &self,
        to: &EntityId,
        request: &Q,
    ) -> Result<R, String> {
        let env = typed::message(
            self.sender.client(),
            to,
            Profile::Request,
            None,
            None,
            request,
        )?;
        self.sender
            .ask::<R>(&env, &self.risposte, Duration::from_secs(10))
            .await
    }

    /// The fines of comune `comune` (its entity `to`) matching `criterio`, with what is due
    /// today.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn cerca(
        &self,
        to: &EntityId,
        comune: &CodiceIstat,
        criterio: Criterio,
    ) -> Result<Vec<DatiVerbale>, String> {
        let r: RicercaEsito = self
            .chiedi(
                to,
                &Ricerca {
                    comune: comune.clone(),
                    criterio,
                },
            )
            .await?;
        Ok(r.verbali)
    }

    /// Lodges `ricorso` with the police office `to`: its protocol, or why it is refused.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn ricorri(
        &self,
        to: &EntityId,
        ricorso: &Ricorso,
    ) -> Result<RicorsoRicevuta, String> {
        self.chiedi(to, ricorso).await
    }

    /// Pays notice `avviso` for `importo` by `canale`, paid at `il`: activates it at the
    /// provider and reports the outcome OK.
    ///
    /// # Errors
    /// [`ErrorePagamento::Avviso`] when the provider refuses the notice (expired, cancelled,
    /// already paid, a different amount…); [`ErrorePagamento::Sistema`] when the hub fails.
    pub async fn paga_avviso(
        &self,
        avviso: &AvvisoVerbale,
        importo: Importo,
        canale: Canale,
        il: Istante,
    ) -> Result<EsitoPagamentoEsito, ErrorePagamento> {
        let nodo = self.nodo.clone();
        let rifiuto = |errore| ErrorePagamento::Avviso {
            nav: avviso.nav.clone(),
            errore,
        };
        let attiva = Attiva {
            ente: avviso.ente.clone(),
            nav: avviso.nav.clone(),
            importo,
            canale,
            id_tentativo: uuid::Uuid::now_v7().to_string(),
        };
        let a: snodo_schemas::services::pagamenti::AttivaEsito = self
            .chiedi(&nodo, &attiva)
            .await
            .map_err(ErrorePagamento::Sistema)?;
        let token = match a.esito {
            EsitoAttivazione::Attivato(x) => x.token,
            EsitoAttivazione::Errore { errore } => return Err(rifiuto(errore)),
        };
        let esito = EsitoPagamento {
            token,
            nav: avviso.nav.clone(),
            risultato: Risultato::Ok,
            canale,
            psp: PSP.into(),
            il,
            importo: Some(importo),
        };
        let e: EsitoPagamentoEsito = self
            .chiedi(&nodo, &esito)
            .await
            .map_err(ErrorePagamento::Sistema)?;
        match (e.stato, e.errore) {
            (EsitoRegistrato::Pagato, _) => Ok(e),
            (_, Some(errore)) => Err(rifiuto(errore)),
            (stato, None) => Err(ErrorePagamento::Sistema(format!(
                "the provider registered the outcome as {stato:?}"
            ))),
        }
    }

    /// Pays fine `criterio` (by number, plate and date) of comune `comune` today: looks it up
    /// and pays the notice that fits the day, for the amount due. Returns the notice paid and
    /// the provider's answer.
    ///
    /// # Errors
    /// [`ErrorePagamento`]: no such fine, nothing payable, the notice refused, the hub failing.
    pub async fn paga(
        &self,
        to: &EntityId,
        comune: &CodiceIstat,
        criterio: Criterio,
        canale: Canale,
        il: Istante,
    ) -> Result<(AvvisoVerbale, EsitoPagamentoEsito), ErrorePagamento> {
        let nome = match &criterio {
            Criterio::Verbale { numero, .. } => numero.clone(),
            Criterio::Targa { targa, .. } => targa.as_str().to_owned(),
        };
        let trovati = self
            .cerca(to, comune, criterio)
            .await
            .map_err(ErrorePagamento::Sistema)?;
        let [v] = &trovati[..] else {
            return Err(ErrorePagamento::Sconosciuto(nome));
        };
        let avviso = v
            .dovuto
            .clone()
            .ok_or_else(|| ErrorePagamento::NienteDovuto(v.numero.clone()))?;
        let e = self
            .paga_avviso(&avviso, avviso.importo, canale, il)
            .await?;
        Ok((avviso, e))
    }
}

/// The portal's settings in `[adapter.data]`: the payment provider.
pub type Impostazioni = crate::pagamenti::Pagatore;

/// `snodo-connector`'s entry: the portal's role in traffic fines with the data of its
/// configuration.
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
