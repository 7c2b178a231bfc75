//! The portal's role in property tax and payments: it acts for the citizen — asks the comune
//! for calculations and the tax position, declares variations, reports discrepancies — keeps
//! the notices the comune sends (instalments, assessments), and pays them at the payment
//! provider as the citizen's payment channel (verify, activate, outcome).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::Payload;
use snodo_schemas::formats::{CodiceFiscale, Importo, Istante, Nav};
use snodo_schemas::services::pagamenti::{
    Attiva, AttivaEsito, Canale, EsitoPagamento, EsitoPagamentoEsito, Risultato, Verifica,
    VerificaEsito,
};
use snodo_schemas::services::tributi_imu::{Accertamento, AvvisoPagamento};

use crate::HubClient;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// A notice the portal holds for a citizen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Notifica {
    /// An instalment.
    Avviso(AvvisoPagamento),
    /// An assessed violation.
    Accertamento(Accertamento),
}

impl Notifica {
    /// Its notice number.
    #[must_use]
    pub fn nav(&self) -> &Nav {
        match self {
            Notifica::Avviso(a) => &a.nav,
            Notifica::Accertamento(a) => &a.nav,
        }
    }
    /// Its amount.
    #[must_use]
    pub fn importo(&self) -> Importo {
        match self {
            Notifica::Avviso(a) => a.importo,
            Notifica::Accertamento(a) => a.totale,
        }
    }
    /// Its taxpayer.
    #[must_use]
    pub fn contribuente(&self) -> &CodiceFiscale {
        match self {
            Notifica::Avviso(a) => &a.contribuente,
            Notifica::Accertamento(a) => &a.contribuente,
        }
    }
}

/// The portal acting for citizens in `tributi.imu` and `pagamenti`.
pub struct Portale {
    sender: Sender,
    /// The payment provider.
    nodo: EntityId,
    /// NAV → the notice.
    notifiche: Tree<Notifica>,
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
    pub fn open(client: HubClient, store: Store, nodo: EntityId) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Portale {
            notifiche: store.tree("portale.tributi.notifiche")?,
            risposte: store.tree("portale.tributi.risposte")?,
            sender: Sender::new(client, store)?,
            nodo,
        }))
    }

    /// Routes the notices and the answers that reach the inbox.
    #[must_use]
    pub fn install(self: &Arc<Self>, mut builder: DispatcherBuilder) -> DispatcherBuilder {
        builder = builder
            .route(
                "tributi.imu",
                "avviso-pagamento",
                Route::handler(self, Portale::on_avviso),
            )
            .route(
                "tributi.imu",
                "accertamento",
                Route::handler(self, Portale::on_accertamento),
            );
        for (service, action) in [
            ("tributi.imu", "calcolo-esito"),
            ("tributi.imu", "posizione-esito"),
            ("tributi.imu", "variazione-esito"),
            ("tributi.imu", "segnalazione-esito"),
            ("pagamenti", "verifica-esito"),
            ("pagamenti", "attiva-esito"),
            ("pagamenti", "esito-pagamento-esito"),
        ] {
            builder = builder.route(service, action, Answers::handler(self.risposte.clone()));
        }
        builder
    }

    fn on_avviso(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let a: AvvisoPagamento = service::read(inbound)?;
        effects
            .update
            .put(
                &self.notifiche,
                a.nav.as_str(),
                &Notifica::Avviso(a.clone()),
            )
            .map_err(service::retry)
    }

    fn on_accertamento(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let a: Accertamento = service::read(inbound)?;
        effects
            .update
            .put(
                &self.notifiche,
                a.nav.as_str(),
                &Notifica::Accertamento(a.clone()),
            )
            .map_err(service::retry)
    }

    /// The notices held for `cf`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn notifiche(&self, cf: &CodiceFiscale) -> Result<Vec<Notifica>, StoreError> {
        Ok(self
            .notifiche
            .scan("")?
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| n.contribuente() == cf)
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
        let r = self
            .sender
            .ask::<R>(&env, &self.risposte, Duration::from_secs(10))
            .await?;
        Ok(r)
    }

    /// Verifies notice `nav` of creditor `ente` at the provider.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn verifica(&self, ente: &CodiceFiscale, nav: &Nav) -> Result<VerificaEsito, String> {
        let nodo = self.nodo.clone();
        self.chiedi(
            &nodo,
            &Verifica {
                ente: ente.clone(),
                nav: nav.clone(),
            },
        )
        .await
    }

    /// Activates notice `nav` for `importo` by `canale`.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn attiva(
        &self,
        ente: &CodiceFiscale,
        nav: &Nav,
        importo: Importo,
        canale: Canale,
    ) -> Result<AttivaEsito, String> {
        let nodo = self.nodo.clone();
        let req = Attiva {
            ente: ente.clone(),
            nav: nav.clone(),
            importo,
            canale,
            id_tentativo: uuid::Uuid::now_v7().to_string(),
        };
        self.chiedi(&nodo, &req).await
    }

    /// Reports the outcome of activation `token` of notice `nav`, paid (OK) or not (KO) at
    /// `il` by `canale`.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn esito(
        &self,
        token: &str,
        nav: &Nav,
        risultato: Risultato,
        canale: Canale,
        importo: Option<Importo>,
        il: Istante,
    ) -> Result<EsitoPagamentoEsito, String> {
        let nodo = self.nodo.clone();
        let req = EsitoPagamento {
            token: token.to_owned(),
            nav: nav.clone(),
            risultato,
            canale,
            psp: PSP.into(),
            il,
            importo: if risultato == Risultato::Ok {
                importo
            } else {
                None
            },
        };
        self.chiedi(&nodo, &req).await
    }

    /// The comune `to` (its tax office) answers `request`.
    ///
    /// # Errors
    /// As [`Portale::chiedi`].
    pub async fn al_comune<Q: Payload, R: Payload>(
        &self,
        to: &EntityId,
        request: &Q,
    ) -> Result<R, String> {
        self.chiedi(to, request).await
    }
}

/// The portal's settings in `[adapter.data]`: the payment provider.
pub type Impostazioni = crate::pagamenti::Pagatore;

/// `snodo-connector`'s entry: the portal's tax role with the data of its configuration.
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
