//! The prefecture's reference back office (entity `prefettura:XX`) in traffic fines: it takes
//! the appeals the comuni's police offices forward, and the Prefect decides each within 120
//! days — accepting it (the fine is archived) or rejecting it with an injunction of at least
//! twice the minimum plus costs, a debt position of the prefecture at the payment provider.
//! Silence accepts: the 121st day is in a durable agenda, and when it comes on the clock the
//! appeal is recorded as accepted and the comune told so. An injunction paid is told to the
//! comune too (a `stato`), whose office keeps the fine.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::formats::{CodiceFiscale, Data, Elenco, Importo};
use snodo_schemas::services::dati::Protocollo;
use snodo_schemas::services::mobilita_contravvenzioni::{
    Decisione, EsitoDecisione, RicorsoTrasmissione, SERVICE, Stato, StatoVerbale, TipoAvviso,
};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneCrea, PosizioneCreata, PosizioneStato, Ricevuta, Trasferimento,
};

use super::comando::sanzione;
use super::importi;
use crate::HubClient;
use crate::agenda::Agenda;
use crate::back_office::{dopo, giorno, mezzanotte};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// The prefecture's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// Its name, printed on injunctions.
    pub denominazione: String,
    /// Its codice fiscale, as creditor of injunctions.
    pub codice_fiscale: CodiceFiscale,
    /// The account injunctions are paid into.
    pub iban: String,
    /// The payment provider.
    pub nodo: EntityId,
}

/// An appeal before the Prefect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pratica {
    /// The police office that forwarded it.
    pub da: EntityId,
    /// The forwarding request, which the decision answers.
    pub richiesta: uuid::Uuid,
    /// Its conversation.
    pub conversazione: String,
    /// The appeal, the fine and the office's protocol.
    pub trasmissione: RicorsoTrasmissione,
    /// The day it reached the prefecture: the 120 days run from it.
    pub ricevuto_il: Data,
    /// The decision, once taken (or silence's).
    #[serde(default)]
    pub decisione: Option<Decisione>,
    /// The injunction's position, when one was ordered.
    #[serde(default)]
    pub iupd: Option<String>,
    /// The day the injunction was paid.
    #[serde(default)]
    pub pagato_il: Option<Data>,
}

/// Why a decision cannot be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorePrefettura {
    /// No such appeal.
    #[error("no appeal {0} before the Prefect")]
    Sconosciuta(String),
    /// Already decided.
    #[error("appeal {0} is already decided")]
    GiaDecisa(String),
    /// The 120 days passed: silence accepted the appeal.
    #[error("appeal {0} was received on {1}: after 120 days silence accepted it")]
    TermineScaduto(String, Data),
    /// An injunction below twice the minimum plus costs.
    #[error(
        "an injunction orders at least {minimo} (twice the minimum, plus costs); {importo} is less"
    )]
    SottoIlMinimo {
        /// The least allowed.
        minimo: Importo,
        /// What was asked.
        importo: Importo,
    },
    /// The store, the hub or the provider failed; trying again may work.
    #[error("{0}")]
    Sistema(String),
}

impl ErrorePrefettura {
    /// True when trying again may work.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorePrefettura::Sistema(_))
    }
}

fn sys(e: impl std::fmt::Display) -> ErrorePrefettura {
    ErrorePrefettura::Sistema(e.to_string())
}

/// The Prefect's choice on an appeal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scelta {
    /// Accepted: the fine is archived.
    Accoglie,
    /// Rejected: an injunction of `importo` (costs included), or when none of twice the
    /// minimum plus costs.
    Respinge {
        /// The amount ordered, costs included.
        importo: Option<Importo>,
    },
}

/// The prefecture.
pub struct Prefettura {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    /// `OFFICE/FINE` → the appeal.
    pratiche: Tree<Pratica>,
    /// IUPD → the appeal's key, to take receipts.
    iupd: Tree<String>,
    /// Counters: `protocollo/YEAR`.
    contatori: Tree<u64>,
    /// Answers that reached the inbox, by request id.
    risposte: Tree<Value>,
    /// The day silence accepts each appeal (key and value: the appeal's key).
    silenzi: Agenda<String>,
    /// Held while an appeal is decided (by the Prefect or by silence), across the provider's
    /// answer: one decision per appeal, never two.
    decidendo: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Prefettura {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefettura")
            .field("entity", self.sender.client().entity())
            .finish_non_exhaustive()
    }
}

impl Prefettura {
    /// The prefecture for `client`'s entity, keeping its state in `store`.
    ///
    /// # Errors
    /// A message when the store cannot be used.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        impostazioni: Impostazioni,
    ) -> Result<Arc<Self>, String> {
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Prefettura {
            pratiche: store.tree("prefettura.pratiche").map_err(s)?,
            iupd: store.tree("prefettura.iupd").map_err(s)?,
            contatori: store.tree("prefettura.contatori").map_err(s)?,
            risposte: store.tree("prefettura.risposte").map_err(s)?,
            silenzi: Agenda::open(&store, "prefettura.silenzi").map_err(s)?,
            decidendo: tokio::sync::Mutex::new(()),
            sender: Sender::new(client, store).map_err(s)?,
            clock,
            impostazioni,
        }))
    }

    /// Routes the forwarded appeals and the provider's messages.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let iupd = self.iupd.clone();
        let answers = Answers::for_positions(self.risposte.clone(), move |i| iupd.contains(i));
        builder
            .route(
                SERVICE,
                "ricorso-trasmissione",
                Route::handler_then(self, Prefettura::on_trasmissione, Prefettura::sveglia),
            )
            .route(
                "pagamenti",
                "ricevuta",
                Route::handler(self, Prefettura::on_ricevuta),
            )
            .route(
                "pagamenti",
                "posizione-stato",
                Route::handler(self, Prefettura::on_posizione_stato),
            )
            .route("pagamenti", "posizione-creata", answers.clone())
            .route("pagamenti", "posizione-esito", answers)
    }

    /// The key of the appeal on fine `numero` forwarded by `da`.
    #[must_use]
    pub fn chiave(da: &EntityId, numero: &str) -> String {
        format!("{da}/{numero}")
    }

    /// The appeal `chiave`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica(&self, chiave: &str) -> Result<Option<Pratica>, StoreError> {
        self.pratiche.get(chiave)
    }

    fn sveglia(&self) {
        self.silenzi.wake();
    }

    fn on_trasmissione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let t: RicorsoTrasmissione = service::read(inbound)?;
        let key = Prefettura::chiave(inbound.sender(), &t.verbale.numero);
        if self.pratiche.get(&key).map_err(service::retry)?.is_some() {
            return Ok(());
        }
        let oggi = giorno(self.clock.now())?;
        let silenzio = mezzanotte(dopo(oggi, importi::GIORNI_DECISIONE + 1)?);
        let h = &inbound.envelope.header;
        let p = Pratica {
            da: h.sender.clone(),
            richiesta: h.id,
            conversazione: h.conversation.clone(),
            trasmissione: t,
            ricevuto_il: oggi,
            decisione: None,
            iupd: None,
            pagato_il: None,
        };
        effects
            .update
            .put(&self.pratiche, &key, &p)
            .map_err(service::retry)?;
        self.silenzi
            .schedule(&mut effects.update, silenzio, &key, &key)
            .map_err(service::retry)?;
        tracing::info!(appeal = %key, "Appeal to the Prefect received.");
        Ok(())
    }

    fn protocollo(&self, data: Data) -> Result<Protocollo, ErrorePrefettura> {
        let anno = data.date().year();
        let n = self
            .contatori
            .update(&format!("protocollo/{anno}"), |n| Some(n.unwrap_or(0) + 1))
            .map_err(sys)?
            .unwrap_or(1);
        Ok(Protocollo {
            numero: format!("PREF/{anno}/{n:06}"),
            data,
        })
    }

    /// The injunction's debt position at the provider: its notice.
    async fn ingiunzione(
        &self,
        p: &Pratica,
        importo: Importo,
        scadenza: Data,
    ) -> Result<(String, PosizioneCreata), ErrorePrefettura> {
        let v = &p.trasmissione.verbale;
        let iupd = format!("ING-{}-{}", v.comune, v.numero);
        let i = &self.impostazioni;
        let causale = format!(
            "Ordinanza-ingiunzione verbale {} {}",
            v.numero, i.denominazione
        );
        let req = PosizioneCrea {
            iupd: iupd.clone(),
            ente: i.codice_fiscale.clone(),
            debitore: v.trasgressore.clone(),
            importo,
            scadenza,
            validita: None,
            causale: causale.clone(),
            trasferimenti: Elenco::new(vec![Trasferimento {
                indice: 1,
                ente: i.codice_fiscale.clone(),
                iban: Iban(i.iban.clone()),
                importo,
                causale,
                tassonomia: "9/0201102IM/".into(),
            }])
            .ok_or_else(|| sys("no transfer"))?,
            rate: None,
        };
        let env = typed::message(
            self.sender.client(),
            &i.nodo,
            Profile::Request,
            Some(&iupd),
            None,
            &req,
        )
        .map_err(sys)?;
        let creata = self
            .sender
            .ask::<PosizioneCreata>(&env, &self.risposte, Duration::from_secs(10))
            .await
            .map_err(sys)?;
        Ok((iupd, creata))
    }

    /// Sends `decisione` on appeal `p` (key `key`) to the office, recording it.
    async fn comunica(
        &self,
        key: &str,
        mut p: Pratica,
        decisione: Decisione,
        iupd: Option<String>,
    ) -> Result<Decisione, ErrorePrefettura> {
        let mut effects = Effects::default();
        effects.send(
            typed::message(
                self.sender.client(),
                &p.da,
                Profile::Response,
                Some(&p.conversazione),
                Some(p.richiesta),
                &decisione,
            )
            .map_err(sys)?,
        );
        if let Some(iupd) = &iupd {
            effects
                .update
                .put(&self.iupd, iupd, &key.to_owned())
                .map_err(sys)?;
        }
        p.decisione = Some(decisione.clone());
        p.iupd = iupd;
        effects.update.put(&self.pratiche, key, &p).map_err(sys)?;
        self.silenzi.cancel(&mut effects.update, key).map_err(sys)?;
        self.sender.commit(effects).await.map_err(sys)?;
        tracing::info!(appeal = %key, protocol = %decisione.protocollo.numero, "The Prefect decided.");
        Ok(decisione)
    }

    /// The Prefect decides appeal `chiave`: accepts it, or rejects it with an injunction (at
    /// least twice the minimum plus costs, payable for 30 days at the provider).
    ///
    /// # Errors
    /// [`ErrorePrefettura`]: no such appeal, already decided, past the 120 days (silence
    /// accepted it), an amount below the least, the provider or the store failing.
    pub async fn decidi(
        &self,
        chiave: &str,
        scelta: Scelta,
        motivazione: &str,
    ) -> Result<Decisione, ErrorePrefettura> {
        let _one = self.decidendo.lock().await;
        let p = self
            .pratiche
            .get(chiave)
            .map_err(sys)?
            .ok_or_else(|| ErrorePrefettura::Sconosciuta(chiave.to_owned()))?;
        if p.decisione.is_some() {
            return Err(ErrorePrefettura::GiaDecisa(chiave.to_owned()));
        }
        let oggi = giorno(self.clock.now()).map_err(sys)?;
        if importi::giorni(p.ricevuto_il.date(), oggi.date()) > importi::GIORNI_DECISIONE {
            return Err(ErrorePrefettura::TermineScaduto(
                chiave.to_owned(),
                p.ricevuto_il,
            ));
        }
        let v = &p.trasmissione.verbale;
        let (esito, iupd) = match scelta {
            Scelta::Accoglie => (EsitoDecisione::Accolto {}, None),
            Scelta::Respinge { importo } => {
                let minimo =
                    importi::importo(&sanzione(v), TipoAvviso::Ingiunzione).map_err(sys)?;
                let importo = importo.unwrap_or(minimo);
                if importo < minimo {
                    return Err(ErrorePrefettura::SottoIlMinimo { minimo, importo });
                }
                let scadenza = dopo(oggi, importi::GIORNI_INGIUNZIONE).map_err(sys)?;
                let (iupd, creata) = self.ingiunzione(&p, importo, scadenza).await?;
                (
                    EsitoDecisione::Respinto {
                        ente: self.impostazioni.codice_fiscale.clone(),
                        importo,
                        nav: creata.nav,
                        scadenza,
                    },
                    Some(iupd),
                )
            }
        };
        let decisione = Decisione {
            pratica: p.trasmissione.ricorso.pratica.clone(),
            numero_verbale: v.numero.clone(),
            protocollo: self.protocollo(oggi)?,
            esito,
            motivazione: motivazione.to_owned(),
        };
        self.comunica(chiave, p, decisione, iupd).await
    }

    /// Appeal `chiave` reached its 121st day undecided: silence accepts it. Returns the
    /// decision recorded, if it was still undecided.
    ///
    /// # Errors
    /// [`ErrorePrefettura::Sistema`] when the hub or the store fail (the deadline stays).
    pub async fn silenzio(&self, chiave: &str) -> Result<Option<Decisione>, ErrorePrefettura> {
        let _one = self.decidendo.lock().await;
        let Some(p) = self
            .pratiche
            .get(chiave)
            .map_err(sys)?
            .filter(|p| p.decisione.is_none())
        else {
            let mut effects = Effects::default();
            self.silenzi
                .cancel(&mut effects.update, chiave)
                .map_err(sys)?;
            self.sender.commit(effects).await.map_err(sys)?;
            return Ok(None);
        };
        let oggi = giorno(self.clock.now()).map_err(sys)?;
        let decisione = Decisione {
            pratica: p.trasmissione.ricorso.pratica.clone(),
            numero_verbale: p.trasmissione.verbale.numero.clone(),
            protocollo: self.protocollo(oggi)?,
            esito: EsitoDecisione::Accolto {},
            motivazione: format!(
                "Ricorso ricevuto il {}: nessuna decisione entro {} giorni, il ricorso si intende accolto.",
                p.ricevuto_il,
                importi::GIORNI_DECISIONE
            ),
        };
        self.comunica(chiave, p, decisione, None).await.map(Some)
    }

    fn on_ricevuta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        let own = self.iupd.contains(&r.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &r.iupd, "prefecture")?;
        if inbound.sender() != &self.impostazioni.nodo {
            return Err(HandlerError::Reject(format!(
                "a receipt from {}, not from the payment provider",
                inbound.sender()
            )));
        }
        let Some(key) = self.iupd.get(&r.iupd).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!(
                "a receipt for position {}, which the prefecture never created",
                r.iupd
            )));
        };
        let Some(mut p) = self.pratiche.get(&key).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!("appeal {key} vanished")));
        };
        if p.pagato_il.is_none() {
            p.pagato_il = Data::from_date(r.pagato_il.datetime().date());
            effects
                .update
                .put(&self.pratiche, &key, &p)
                .map_err(service::retry)?;
            // The comune's office keeps the fine: it learns that it is paid.
            let v = &p.trasmissione.verbale;
            let stato = Stato {
                numero_verbale: v.numero.clone(),
                comune: v.comune.clone(),
                stato: StatoVerbale::Pagato,
                il: r.pagato_il.clone(),
                nota: Some(format!("ordinanza-ingiunzione pagata: {}", r.importo)),
            };
            effects.send(
                typed::message(
                    self.sender.client(),
                    &p.da,
                    Profile::Oneway,
                    Some(&p.conversazione),
                    None,
                    &stato,
                )
                .map_err(HandlerError::Reject)?,
            );
            tracing::info!(appeal = %key, "Injunction paid.");
        }
        Ok(())
    }

    fn on_posizione_stato(
        &self,
        inbound: &Inbound,
        _effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let s: PosizioneStato = service::read(inbound)?;
        let own = self.iupd.contains(&s.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &s.iupd, "prefecture")?;
        tracing::debug!(iupd = %s.iupd, state = ?s.stato, "Position changed state at the provider.");
        Ok(())
    }

    /// Accepts appeals by silence as their 121st day comes, on the clock, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        self.silenzi
            .serve(
                self.clock.as_ref(),
                shutdown,
                "appeals due for silence",
                |d| {
                    let p = self.clone();
                    async move { p.silenzio(&d.key).await }
                },
            )
            .await;
    }
}

/// `snodo-connector`'s entry: the prefecture with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]), and its task accepting appeals by silence.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let p = Prefettura::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        impostazioni,
    )?;
    let task = tokio::spawn(p.clone().run(ctx.shutdown.clone()));
    Ok((p.install(builder), vec![task]))
}
