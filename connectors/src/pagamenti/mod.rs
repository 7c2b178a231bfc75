//! `pagamenti`: the payment provider's reference back office (entity `pagopa:nodo`).
//!
//! Creditor bodies create **debt positions** (`posizione-crea`): the provider gives each a
//! notice number (NAV: aux digit 3, the creditor's segregation code, a 13-digit base from the
//! creditor's own counter, mod-93 check digits) and takes it through the states of `DOMAIN.md`:
//! draft → published → valid at creation; paid on an OK outcome; reported when a settlement
//! flow names it; invalid when the creditor cancels it; expired past its validity (the due date
//! unless the creditor gave a later `validita`). A paid position cannot change or be cancelled.
//! Positions here have a single payment option, so "partially paid" is never reached.
//!
//! Paying: `verifica` (the current amount) → `attiva` (a token; any other activation of the
//! notice is refused with "payment in progress" until the outcome or the token's end) →
//! `esito-pagamento` OK or KO → on OK a signed `ricevuta` envelope to the creditor, who closes
//! the position on it. Refusals by state: unknown, expired, cancelled, already paid, payment in
//! progress (and a wrong amount, an unknown token).
//!
//! An activation that gets no outcome is **resolved** when its token ends (an agenda on the
//! clock): the provider releases it — the notice is payable again and the creditor, who never
//! saw it, still has it open. An OK outcome that arrives later (a counter payment settles after
//! the token, possibly after the due date) still completes the payment, unless someone else
//! paid the notice meanwhile (refused: already paid) or the creditor cancelled it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::formats::{CodiceFiscale, Data, Istante, Nav};
use snodo_schemas::services::pagamenti::{
    Attiva, AttivaEsito, Attivazione, AvvisoPagabile, Canale, ErroreAvviso, EsitoAttivazione,
    EsitoPagamento, EsitoPagamentoEsito, EsitoRegistrato, EsitoVerifica, PagamentoRendicontato,
    PosizioneAggiorna, PosizioneAnnulla, PosizioneCrea, PosizioneCreata, PosizioneEsito,
    Rendicontazione, Ricevuta, Risultato, StatoPosizione, Verifica, VerificaEsito,
};

use crate::agenda::Agenda;
use crate::client::HubClient;
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Route, Sender};

/// The service's name.
pub const SERVICE: &str = "pagamenti";

/// A creditor body known to the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creditore {
    /// Its entity in the federation (`comune:001272`).
    pub entity: EntityId,
    /// Its codice fiscale, printed on its notices.
    pub codice_fiscale: CodiceFiscale,
    /// Its name, shown to payers.
    pub denominazione: String,
    /// Its segregation code (0 to 99), the NAV's digits 2–3.
    pub segregazione: u8,
}

/// The provider's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// The creditor bodies and their segregation codes.
    pub creditori: Vec<Creditore>,
    /// How long an activation by card or bank debit holds the notice, in seconds (30 minutes).
    #[serde(default = "default_token_secondi")]
    pub token_secondi: u64,
    /// How long an activation at a counter holds it, in seconds (3 days: the counter's
    /// outcome comes later).
    #[serde(default = "default_token_sportello_secondi")]
    pub token_sportello_secondi: u64,
}

impl Impostazioni {
    /// Checks what the shape cannot: segregation codes 0 to 99, one per creditor.
    ///
    /// # Errors
    /// A message naming the creditors at fault.
    pub fn valida(&self) -> Result<(), String> {
        let impostazioni = self;
        let mut seen = BTreeMap::new();
        for c in &impostazioni.creditori {
            if c.segregazione > 99 {
                return Err(format!(
                    "creditor {}: segregation code {} is above 99",
                    c.entity, c.segregazione
                ));
            }
            if let Some(other) = seen.insert(c.segregazione, c.entity.clone()) {
                return Err(format!(
                    "creditors {other} and {} share segregation code {:02}",
                    c.entity, c.segregazione
                ));
            }
        }
        Ok(())
    }
}

/// Checks the provider's `[adapter.data]` when the configuration is loaded.
///
/// # Errors
/// A message naming the field or the creditors at fault.
pub fn controlla(data: &serde_json::Value) -> Result<(), String> {
    crate::back_office::data::<Impostazioni>(data)?.valida()
}

fn default_token_secondi() -> u64 {
    30 * 60
}

fn default_token_sportello_secondi() -> u64 {
    3 * 24 * 3600
}

/// An activation holding the notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attivo {
    /// The token naming it.
    pub token: String,
    /// Who activated (the payer's channel).
    pub canale_entity: EntityId,
    /// The channel.
    pub canale: Canale,
    /// The payer's attempt.
    pub id_tentativo: String,
    /// When the token ends.
    pub fino: Istante,
}

/// What became of an attempt that did not pay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tentativo {
    /// Its token.
    pub token: String,
    /// `ko` (the channel said so) or `scaduto` (released when the token ended).
    pub esito: String,
    /// When.
    pub il: Istante,
}

/// A paid position's payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagamento {
    /// The token that paid.
    pub token: String,
    /// The receipt's id.
    pub ricevuta: String,
    /// When paid (as the channel says).
    pub il: Istante,
    /// The channel.
    pub canale: Canale,
    /// The receipt sent to the creditor, to send again exactly.
    #[serde(default)]
    pub documento: Option<Ricevuta>,
}

/// What an outcome does.
enum Decisione {
    /// Nothing changes; this is the answer.
    Risposta(EsitoPagamentoEsito),
    /// The position is now this; the answer; the receipt to send, if any.
    Cambiata {
        posizione: Box<Posizione>,
        risposta: EsitoPagamentoEsito,
        ricevuta: Option<Box<Ricevuta>>,
    },
}

/// A debt position as the provider keeps it (key: its NAV).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posizione {
    /// The creditor's entity.
    pub creditore: EntityId,
    /// The position as last created or changed.
    pub dati: PosizioneCrea,
    /// Its notice.
    pub nav: Nav,
    /// Its state.
    pub stato: StatoPosizione,
    /// Every state it went through, with when.
    pub storia: Vec<(StatoPosizione, Istante)>,
    /// The activation holding it, if any.
    #[serde(default)]
    pub attivo: Option<Attivo>,
    /// Its payment, once paid.
    #[serde(default)]
    pub pagamento: Option<Pagamento>,
    /// Attempts that did not pay.
    #[serde(default)]
    pub tentativi: Vec<Tentativo>,
}

impl Posizione {
    /// The last day it can be paid.
    fn ultimo_giorno(&self) -> &Data {
        self.dati.validita.as_ref().unwrap_or(&self.dati.scadenza)
    }

    fn passa(&mut self, stato: StatoPosizione, il: &Istante) {
        self.stato = stato;
        self.storia.push((stato, il.clone()));
    }
}

/// The payment provider's reference back office.
pub struct Nodo {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    /// NAV → position.
    posizioni: Tree<Posizione>,
    /// `creditor/iupd` → NAV.
    iupd: Tree<String>,
    /// token → NAV.
    token: Tree<String>,
    /// segregation code → the next IUV base.
    contatori: Tree<u64>,
    /// Token ends, keyed by token, valued by NAV.
    agenda: Agenda<String>,
}

impl std::fmt::Debug for Nodo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodo")
            .field("entity", self.sender.client().entity())
            .finish_non_exhaustive()
    }
}

impl Nodo {
    /// The provider for `client`'s entity, keeping its state in `store`.
    ///
    /// # Errors
    /// A message when two creditors share a segregation code or the store fails.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        impostazioni: Impostazioni,
    ) -> Result<Arc<Self>, String> {
        impostazioni.valida()?;
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Nodo {
            posizioni: store.tree("pagamenti.posizioni").map_err(s)?,
            iupd: store.tree("pagamenti.iupd").map_err(s)?,
            token: store.tree("pagamenti.token").map_err(s)?,
            contatori: store.tree("pagamenti.contatori").map_err(s)?,
            agenda: Agenda::open(&store, "pagamenti.token-fine").map_err(s)?,
            sender: Sender::new(client, store).map_err(s)?,
            clock,
            impostazioni,
        }))
    }

    /// Routes the service's requests to this back office.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        builder
            .route(SERVICE, "posizione-crea", Route::handler(self, Nodo::crea))
            .route(
                SERVICE,
                "posizione-aggiorna",
                Route::handler(self, Nodo::aggiorna),
            )
            .route(
                SERVICE,
                "posizione-annulla",
                Route::handler(self, Nodo::annulla),
            )
            .route(SERVICE, "verifica", Route::handler(self, Nodo::verifica))
            .route(
                SERVICE,
                "attiva",
                Route::handler_then(self, Nodo::attiva, Nodo::sveglia),
            )
            .route(
                SERVICE,
                "esito-pagamento",
                Route::handler(self, Nodo::esito),
            )
    }

    /// The position of notice `nav`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn posizione(&self, nav: &Nav) -> Result<Option<Posizione>, StoreError> {
        self.posizioni.get(nav.as_str())
    }

    fn now(&self) -> Result<Istante, HandlerError> {
        crate::back_office::istante(self.clock.now())
    }

    fn creditore_di(&self, entity: &EntityId) -> Option<&Creditore> {
        self.impostazioni
            .creditori
            .iter()
            .find(|c| &c.entity == entity)
    }

    fn creditore_cf(&self, cf: &CodiceFiscale) -> Option<&Creditore> {
        self.impostazioni
            .creditori
            .iter()
            .find(|c| &c.codice_fiscale == cf)
    }

    /// Brings `p` up to date with the calendar: a valid position past its last day expires
    /// (staged in `effects`, with a `posizione-stato` to the creditor).
    fn aggiorna_scadenza(
        &self,
        p: &mut Posizione,
        effects: &mut Effects,
        now: &Istante,
    ) -> Result<(), HandlerError> {
        if p.stato == StatoPosizione::Valida
            && p.attivo.is_none()
            && now.datetime().date() > p.ultimo_giorno().date()
        {
            p.passa(StatoPosizione::Scaduta, now);
            let stato = snodo_schemas::services::pagamenti::PosizioneStato {
                iupd: p.dati.iupd.clone(),
                nav: p.nav.clone(),
                stato: StatoPosizione::Scaduta,
                il: now.clone(),
                rata: None,
            };
            effects.send(
                typed::message(
                    self.sender.client(),
                    &p.creditore,
                    Profile::Oneway,
                    None,
                    None,
                    &stato,
                )
                .map_err(HandlerError::Reject)?,
            );
            effects
                .update
                .put(&self.posizioni, p.nav.as_str(), p)
                .map_err(service::retry)?;
        }
        Ok(())
    }

    /// Why `p` cannot be paid or changed now, if it cannot; an activation whose token ended
    /// no longer holds it.
    fn impedimento(p: &Posizione, now: &Istante) -> Option<ErroreAvviso> {
        match p.stato {
            StatoPosizione::Pagata | StatoPosizione::Rendicontata => Some(ErroreAvviso::GiaPagato),
            StatoPosizione::Invalida => Some(ErroreAvviso::Annullato),
            StatoPosizione::Scaduta => Some(ErroreAvviso::Scaduto),
            _ if p
                .attivo
                .as_ref()
                .is_some_and(|a| a.fino.datetime() > now.datetime()) =>
            {
                Some(ErroreAvviso::PagamentoInCorso)
            }
            _ => None,
        }
    }

    fn crea(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: PosizioneCrea = service::read(inbound)?;
        let sender = inbound.sender();
        let creditore = self.creditore_di(sender).ok_or_else(|| {
            HandlerError::Reject(format!("{sender} is not a creditor body of this provider"))
        })?;
        if creditore.codice_fiscale != req.ente {
            return Err(HandlerError::Reject(format!(
                "{sender} creates positions as {}, not {}",
                creditore.codice_fiscale, req.ente
            )));
        }
        let key = format!("{sender}/{}", req.iupd);
        // The IUPD's NAV: one taken before (a retry), or a new number. Numbers and the IUPD's
        // claim are taken at once in the store (compare-and-swap), not staged, so that two
        // creations handled at the same time (push delivery is concurrent) never share a NAV
        // nor give one IUPD two; a crash before the commit leaves a gap in the numbers, or a
        // claimed NAV that the creditor's retry then gets its position under.
        let nav = match self.iupd.get(&key).map_err(service::retry)? {
            Some(nav) => nav,
            None => {
                let seg = creditore.segregazione;
                let next = self
                    .contatori
                    .update(&seg.to_string(), |n| Some(n.unwrap_or(1) + 1))
                    .map_err(service::retry)?
                    .unwrap_or(2);
                let nav = Nav::new(seg, next - 1).ok_or_else(|| {
                    HandlerError::Reject(format!(
                        "segregation code {seg:02} has used all its notice numbers"
                    ))
                })?;
                self.iupd
                    .update(&key, |old| old.or_else(|| Some(nav.as_str().to_owned())))
                    .map_err(service::retry)?
                    .unwrap_or_else(|| nav.as_str().to_owned())
            }
        };
        let p = match self.posizioni.get(&nav).map_err(service::retry)? {
            Some(p) => p,
            None => {
                let now = self.now()?;
                let nav = Nav::parse(&nav).map_err(|e| HandlerError::Reject(e.to_string()))?;
                let mut p = Posizione {
                    creditore: sender.clone(),
                    dati: req,
                    nav: nav.clone(),
                    stato: StatoPosizione::Bozza,
                    storia: Vec::new(),
                    attivo: None,
                    pagamento: None,
                    tentativi: Vec::new(),
                };
                p.passa(StatoPosizione::Bozza, &now);
                p.passa(StatoPosizione::Pubblicata, &now);
                p.passa(StatoPosizione::Valida, &now);
                effects
                    .update
                    .put(&self.posizioni, nav.as_str(), &p)
                    .map_err(service::retry)?;
                tracing::info!(%nav, creditor = %sender, "Debt position created.");
                p
            }
        };
        let answer = PosizioneCreata {
            iupd: p.dati.iupd.clone(),
            iuv: p.nav.iuv(),
            nav: p.nav.clone(),
            stato: p.stato,
            rate: Vec::new(),
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    /// The position `iupd` of the sender, for a change: its NAV and record, or the refusal.
    fn della_richiesta(
        &self,
        inbound: &Inbound,
        iupd: &str,
    ) -> Result<Option<Posizione>, HandlerError> {
        let key = format!("{}/{iupd}", inbound.sender());
        match self.iupd.get(&key).map_err(service::retry)? {
            Some(nav) => self.posizioni.get(&nav).map_err(service::retry),
            None => Ok(None),
        }
    }

    fn aggiorna(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: PosizioneAggiorna = service::read(inbound)?;
        let now = self.now()?;
        let (stato, errore) = match self.della_richiesta(inbound, &req.iupd)? {
            None => (StatoPosizione::Invalida, Some(ErroreAvviso::Sconosciuto)),
            Some(mut p) => {
                self.aggiorna_scadenza(&mut p, effects, &now)?;
                match Nodo::impedimento(&p, &now) {
                    // An expired position can be given a new due date.
                    Some(e) if e != ErroreAvviso::Scaduto => (p.stato, Some(e)),
                    _ => {
                        p.dati.importo = req.importo;
                        p.dati.scadenza = req.scadenza;
                        p.dati.trasferimenti = req.trasferimenti;
                        p.dati.validita = None;
                        p.attivo = None;
                        if p.stato == StatoPosizione::Scaduta {
                            p.passa(StatoPosizione::Valida, &now);
                        }
                        effects
                            .update
                            .put(&self.posizioni, p.nav.as_str(), &p)
                            .map_err(service::retry)?;
                        (p.stato, None)
                    }
                }
            }
        };
        let answer = PosizioneEsito {
            iupd: req.iupd,
            stato,
            errore,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    fn annulla(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: PosizioneAnnulla = service::read(inbound)?;
        let now = self.now()?;
        let (stato, errore) = match self.della_richiesta(inbound, &req.iupd)? {
            None => (StatoPosizione::Invalida, Some(ErroreAvviso::Sconosciuto)),
            Some(mut p) => match Nodo::impedimento(&p, &now) {
                Some(e @ (ErroreAvviso::GiaPagato | ErroreAvviso::PagamentoInCorso)) => {
                    (p.stato, Some(e))
                }
                Some(ErroreAvviso::Annullato) => (p.stato, None),
                _ => {
                    p.passa(StatoPosizione::Invalida, &now);
                    effects
                        .update
                        .put(&self.posizioni, p.nav.as_str(), &p)
                        .map_err(service::retry)?;
                    (p.stato, None)
                }
            },
        };
        let answer = PosizioneEsito {
            iupd: req.iupd,
            stato,
            errore,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    /// The position of a payer's notice, brought up to date, or why not.
    fn del_pagatore(
        &self,
        ente: &CodiceFiscale,
        nav: &Nav,
        effects: &mut Effects,
        now: &Istante,
    ) -> Result<Result<Posizione, ErroreAvviso>, HandlerError> {
        let Some(mut p) = self.posizioni.get(nav.as_str()).map_err(service::retry)? else {
            return Ok(Err(ErroreAvviso::Sconosciuto));
        };
        if &p.dati.ente != ente {
            return Ok(Err(ErroreAvviso::Sconosciuto));
        }
        self.aggiorna_scadenza(&mut p, effects, now)?;
        Ok(match Nodo::impedimento(&p, now) {
            Some(e) => Err(e),
            None => Ok(p),
        })
    }

    fn verifica(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: Verifica = service::read(inbound)?;
        let now = self.now()?;
        let esito = match self.del_pagatore(&req.ente, &req.nav, effects, &now)? {
            Err(errore) => EsitoVerifica::Errore { errore },
            Ok(p) => EsitoVerifica::Pagabile(AvvisoPagabile {
                importo: p.dati.importo,
                scadenza: p.dati.scadenza,
                causale: p.dati.causale.clone(),
                ente_denominazione: self
                    .creditore_cf(&p.dati.ente)
                    .map(|c| c.denominazione.clone())
                    .unwrap_or_default(),
            }),
        };
        let answer = VerificaEsito {
            nav: req.nav,
            esito,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    fn attiva(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: Attiva = service::read(inbound)?;
        let now = self.now()?;
        let esito = match self.del_pagatore(&req.ente, &req.nav, effects, &now)? {
            Err(errore) => EsitoAttivazione::Errore { errore },
            Ok(p) if p.dati.importo != req.importo => EsitoAttivazione::Errore {
                errore: ErroreAvviso::ImportoDiverso,
            },
            Ok(p) => {
                let token = uuid::Uuid::now_v7().to_string();
                let secondi = match req.canale {
                    Canale::Sportello => self.impostazioni.token_sportello_secondi,
                    Canale::Carta | Canale::Addebito => self.impostazioni.token_secondi,
                };
                let fine = self.clock.now() + Duration::from_secs(secondi);
                let fino = crate::back_office::istante(fine)?;
                let attivo = Attivo {
                    token: token.clone(),
                    canale_entity: inbound.sender().clone(),
                    canale: req.canale,
                    id_tentativo: req.id_tentativo.clone(),
                    fino: fino.clone(),
                };
                // The notice is claimed in the store at once (compare-and-swap), so that of
                // two activations handled at the same time only one holds it. A crash before
                // the commit leaves a claim that lapses with its token.
                let mut claimed: Result<Posizione, ErroreAvviso> = Err(ErroreAvviso::Sconosciuto);
                self.posizioni
                    .update(p.nav.as_str(), |cur| {
                        let mut cur = cur?;
                        claimed = match Nodo::impedimento(&cur, &now) {
                            Some(e) => Err(e),
                            None if cur.dati.importo != req.importo => {
                                Err(ErroreAvviso::ImportoDiverso)
                            }
                            None => {
                                cur.attivo = Some(attivo.clone());
                                Ok(cur.clone())
                            }
                        };
                        Some(cur)
                    })
                    .map_err(service::retry)?;
                match claimed {
                    Err(errore) => EsitoAttivazione::Errore { errore },
                    Ok(p) => {
                        let u = &mut effects.update;
                        u.put(&self.posizioni, p.nav.as_str(), &p)
                            .map_err(service::retry)?;
                        u.put(&self.token, &token, &p.nav.as_str().to_owned())
                            .map_err(service::retry)?;
                        self.agenda
                            .schedule(u, fine, &token, &p.nav.as_str().to_owned())
                            .map_err(service::retry)?;
                        tracing::info!(nav = %p.nav, %token, "Notice activated.");
                        EsitoAttivazione::Attivato(Box::new(Attivazione {
                            token,
                            importo: p.dati.importo,
                            debitore: p.dati.debitore.clone(),
                            trasferimenti: p.dati.trasferimenti.clone(),
                            valido_fino: fino,
                        }))
                    }
                }
            }
        };
        let answer = AttivaEsito {
            nav: req.nav,
            id_tentativo: req.id_tentativo,
            esito,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    /// Wakes the task that releases ended activations: a new token's end is in the agenda
    /// (called once the activation is durable, not before, or the task would look too soon).
    fn sveglia(&self) {
        self.agenda.wake();
    }

    /// What an outcome does to position `p` (a pure function: it runs inside the store's
    /// compare-and-swap, perhaps more than once).
    fn decidi(
        mut p: Posizione,
        req: &EsitoPagamento,
        now: &Istante,
        ricevuta_id: &str,
    ) -> (Posizione, Decisione) {
        let answer = |stato, ricevuta, errore| EsitoPagamentoEsito {
            token: req.token.clone(),
            nav: req.nav.clone(),
            stato,
            ricevuta,
            errore,
        };
        let rifiuto = |e| Decisione::Risposta(answer(EsitoRegistrato::Rifiutato, None, Some(e)));
        if let Some(pagato) = &p.pagamento {
            if pagato.token != req.token {
                return (p, rifiuto(ErroreAvviso::GiaPagato));
            }
            // The same outcome again (or again after a crash): the same answer, and the same
            // receipt sent again, which the creditor takes once.
            let risposta = answer(EsitoRegistrato::Pagato, Some(pagato.ricevuta.clone()), None);
            let ricevuta = pagato.documento.clone();
            return (
                p.clone(),
                Decisione::Cambiata {
                    posizione: Box::new(p),
                    risposta,
                    ricevuta: ricevuta.map(Box::new),
                },
            );
        }
        match req.risultato {
            Risultato::Ko => {
                if p.attivo.as_ref().is_none_or(|a| a.token != req.token) {
                    return (
                        p,
                        Decisione::Risposta(answer(EsitoRegistrato::Rilasciato, None, None)),
                    );
                }
                p.attivo = None;
                p.tentativi.push(Tentativo {
                    token: req.token.clone(),
                    esito: "ko".into(),
                    il: now.clone(),
                });
                (
                    p.clone(),
                    Decisione::Cambiata {
                        posizione: Box::new(p),
                        risposta: answer(EsitoRegistrato::Rilasciato, None, None),
                        ricevuta: None,
                    },
                )
            }
            Risultato::Ok if p.stato == StatoPosizione::Invalida => {
                (p, rifiuto(ErroreAvviso::Annullato))
            }
            Risultato::Ok if req.importo.is_some_and(|i| i != p.dati.importo) => {
                (p, rifiuto(ErroreAvviso::ImportoDiverso))
            }
            Risultato::Ok => {
                let ricevuta = Ricevuta {
                    id: ricevuta_id.to_owned(),
                    iupd: p.dati.iupd.clone(),
                    ente: p.dati.ente.clone(),
                    nav: p.nav.clone(),
                    rata: None,
                    iuv: p.nav.iuv(),
                    importo: p.dati.importo,
                    debitore: p.dati.debitore.clone(),
                    pagatore: None,
                    canale: req.canale,
                    psp: req.psp.clone(),
                    pagato_il: req.il.clone(),
                    trasferimenti: p.dati.trasferimenti.clone(),
                };
                if p.attivo.as_ref().is_some_and(|a| a.token == req.token) {
                    p.attivo = None;
                }
                p.pagamento = Some(Pagamento {
                    token: req.token.clone(),
                    ricevuta: ricevuta_id.to_owned(),
                    il: req.il.clone(),
                    canale: req.canale,
                    documento: Some(ricevuta.clone()),
                });
                p.passa(StatoPosizione::Pagata, now);
                (
                    p.clone(),
                    Decisione::Cambiata {
                        posizione: Box::new(p),
                        risposta: answer(
                            EsitoRegistrato::Pagato,
                            Some(ricevuta_id.to_owned()),
                            None,
                        ),
                        ricevuta: Some(Box::new(ricevuta)),
                    },
                )
            }
        }
    }

    fn esito(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: EsitoPagamento = service::read(inbound)?;
        let now = self.now()?;
        let known = self
            .token
            .get(&req.token)
            .map_err(service::retry)?
            .is_some_and(|nav| nav == req.nav.as_str());
        let ricevuta_id = uuid::Uuid::now_v7().to_string();
        let mut decisione = None;
        if known {
            // Decided and written at once (compare-and-swap): of two outcomes handled at the
            // same time, one pays and the other finds the notice paid. A crash before the
            // commit leaves the payment recorded; the channel's retry of the outcome sends
            // the receipt then.
            self.posizioni
                .update(req.nav.as_str(), |cur| {
                    let (next, d) = Nodo::decidi(cur?, &req, &now, &ricevuta_id);
                    decisione = Some(d);
                    Some(next)
                })
                .map_err(service::retry)?;
        }
        let out = match decisione {
            None => EsitoPagamentoEsito {
                token: req.token.clone(),
                nav: req.nav.clone(),
                stato: EsitoRegistrato::Rifiutato,
                ricevuta: None,
                errore: Some(ErroreAvviso::TokenSconosciuto),
            },
            Some(Decisione::Risposta(r)) => r,
            Some(Decisione::Cambiata {
                posizione,
                risposta,
                ricevuta,
            }) => {
                effects
                    .update
                    .put(&self.posizioni, posizione.nav.as_str(), &posizione)
                    .map_err(service::retry)?;
                self.agenda
                    .cancel(&mut effects.update, &req.token)
                    .map_err(service::retry)?;
                if let Some(r) = ricevuta {
                    effects.send(
                        typed::message(
                            self.sender.client(),
                            &posizione.creditore,
                            Profile::Oneway,
                            Some(&posizione.dati.iupd),
                            None,
                            r.as_ref(),
                        )
                        .map_err(HandlerError::Reject)?,
                    );
                    tracing::info!(nav = %posizione.nav, receipt = %r.id, "Notice paid; receipt sent to the creditor.");
                }
                risposta
            }
        };
        effects.send(typed::reply(self.sender.client(), inbound, &out)?);
        Ok(())
    }

    /// Releases every activation whose token ended by now with no outcome: the notice is
    /// payable again. Returns the tokens released.
    ///
    /// # Errors
    /// A message when the store fails.
    pub async fn rilascia_scaduti(&self) -> Result<Vec<String>, String> {
        let now = self.clock.now();
        let due = self.agenda.due(now).map_err(|e| e.to_string())?;
        let mut released = Vec::new();
        for d in due {
            let il = crate::back_office::istante(self.clock.now()).map_err(|e| e.to_string())?;
            // Compare-and-swap on the position: an outcome committed meanwhile wins.
            let mut did = false;
            self.posizioni
                .update(&d.value, |p| {
                    did = false;
                    let mut p = p?;
                    if p.attivo.as_ref().is_some_and(|a| a.token == d.key) {
                        p.attivo = None;
                        p.tentativi.push(Tentativo {
                            token: d.key.clone(),
                            esito: "scaduto".into(),
                            il: il.clone(),
                        });
                        did = true;
                    }
                    Some(p)
                })
                .map_err(|e| e.to_string())?;
            let mut effects = Effects::default();
            self.agenda
                .cancel(&mut effects.update, &d.key)
                .map_err(|e| e.to_string())?;
            self.sender.commit(effects).await?;
            if did {
                tracing::info!(nav = %d.value, token = %d.key, "Activation ended without an outcome; notice released.");
                released.push(d.key);
            }
        }
        Ok(released)
    }

    /// Sends `creditor` a settlement flow of every paid, unreported position, dated `data`;
    /// they become reported. Returns the flow, if there was anything to report.
    ///
    /// # Errors
    /// A message when the store fails or the creditor is unknown.
    pub async fn rendiconta(
        &self,
        creditor: &EntityId,
        data: Data,
    ) -> Result<Option<Rendicontazione>, String> {
        let c = self
            .creditore_di(creditor)
            .ok_or_else(|| format!("{creditor} is not a creditor of this provider"))?
            .clone();
        let now = crate::back_office::istante(self.clock.now()).map_err(|e| e.to_string())?;
        let mut effects = Effects::default();
        let mut pagamenti = Vec::new();
        let mut totale = snodo_schemas::formats::Importo::ZERO;
        for (_, mut p) in self.posizioni.scan("").map_err(|e| e.to_string())? {
            if &p.creditore != creditor || p.stato != StatoPosizione::Pagata {
                continue;
            }
            let giorno = p
                .pagamento
                .as_ref()
                .and_then(|x| Data::from_date(x.il.datetime().date()))
                .unwrap_or(data);
            for t in p.dati.trasferimenti.iter() {
                totale = totale
                    .checked_add(t.importo)
                    .ok_or("the flow's total overflows")?;
                pagamenti.push(PagamentoRendicontato {
                    iuv: p.nav.iuv(),
                    indice_trasferimento: t.indice,
                    importo: t.importo,
                    data: giorno,
                });
            }
            p.passa(StatoPosizione::Rendicontata, &now);
            effects
                .update
                .put(&self.posizioni, p.nav.as_str(), &p)
                .map_err(|e| e.to_string())?;
        }
        let Some(pagamenti) = snodo_schemas::formats::Elenco::new(pagamenti) else {
            return Ok(None);
        };
        let flow = Rendicontazione {
            id_flusso: format!("{}-{}", data.as_str(), uuid::Uuid::now_v7()),
            ente: c.codice_fiscale,
            data_regolamento: data,
            totale,
            pagamenti,
        };
        effects.send(typed::message(
            self.sender.client(),
            creditor,
            Profile::Oneway,
            None,
            None,
            &flow,
        )?);
        self.sender.commit(effects).await?;
        Ok(Some(flow))
    }

    /// Releases ended activations as their tokens end, on the clock, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            match self
                .agenda
                .next_due(self.clock.as_ref(), shutdown.clone())
                .await
            {
                Ok(None) => break,
                Ok(Some(_)) => {
                    if let Err(e) = self.rilascia_scaduti().await {
                        tracing::warn!(error = %e, "Ended activations not released yet.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the agenda of activations.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// What a payer's role needs in `[adapter.data]` (each of the portal's roles that pays
/// notices): which payment provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagatore {
    /// The payment provider (`pagopa:nodo` when absent).
    #[serde(default = "default_nodo")]
    pub nodo: String,
}

fn default_nodo() -> String {
    "pagopa:nodo".into()
}

impl Pagatore {
    /// The provider named by a payer's `[adapter.data]`.
    ///
    /// # Errors
    /// A message naming the field at fault.
    pub fn nodo_da(data: &serde_json::Value) -> Result<EntityId, String> {
        let p: Pagatore = crate::back_office::data(data)?;
        p.nodo.parse().map_err(|e| format!("nodo: {e}"))
    }
}

/// `snodo-connector`'s entry: the provider with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]), and its task releasing ended activations.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let nodo = Nodo::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        impostazioni,
    )?;
    let task = tokio::spawn(nodo.clone().run(ctx.shutdown.clone()));
    Ok((nodo.install(builder), vec![task]))
}
