//! `pagamenti`: the payment provider's reference back office (entity `pagopa:nodo`).
//!
//! Creditor bodies create **debt positions** (`posizione-crea`): the provider gives each a
//! notice number (NAV: aux digit 3, the creditor's segregation code, a 13-digit base from the
//! creditor's own counter, mod-93 check digits) and takes it through the states of `DOMAIN.md`:
//! draft → published → valid at creation; paid on an OK outcome; reported when a settlement
//! flow names it; invalid when the creditor cancels it; expired past its validity (the due date
//! unless the creditor gave a later `validita`). A paid position cannot change or be cancelled.
//!
//! A position may instead be paid in **instalments** (`rate`, 2 to 12): each is a payment option
//! of its own, with its own NAV (numbers taken from the same counter), amount, due date, last
//! day and transfers, paid through the same flow below, and each paid instalment sends its own
//! receipt. Paying one of several makes the position **partially paid**, paying the last makes
//! it paid; each change is told to the creditor in a `posizione-stato` (a position of one
//! option is closed by its receipt alone, as before). A partially paid position can no longer
//! be changed or cancelled (`parzialmente_pagato`). Expiry is per instalment: an unpaid
//! instalment past its last day is refused as expired; the position itself expires only when
//! none is paid and every instalment is past its last day — a partially paid position never
//! expires (what was paid stays paid; the creditor collects the rest by other means, an
//! assessment). A settlement flow reports every paid, unreported instalment, partially paid
//! position or not; the position becomes reported once paid and all its instalments reported.
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
use snodo_schemas::formats::{CodiceFiscale, Data, Elenco, Importo, Istante, Nav};
use snodo_schemas::services::pagamenti::{
    Attiva, AttivaEsito, Attivazione, AvvisoPagabile, Canale, ErroreAvviso, EsitoAttivazione,
    EsitoPagamento, EsitoPagamentoEsito, EsitoRegistrato, EsitoVerifica, PagamentoRendicontato,
    PosizioneAggiorna, PosizioneAnnulla, PosizioneCrea, PosizioneCreata, PosizioneEsito,
    PosizioneStato, RataCreata, RataPosizione, Rendicontazione, Ricevuta, Risultato,
    StatoPosizione, Trasferimento, Verifica, VerificaEsito, trasferimenti_della_rata,
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
    /// The position is now this; the answer; the receipt to send, if any; the change of state
    /// to tell the creditor, if any.
    Cambiata {
        posizione: Box<Posizione>,
        risposta: EsitoPagamentoEsito,
        ricevuta: Option<Box<Ricevuta>>,
        annuncio: Option<Box<PosizioneStato>>,
    },
}

/// One way to pay a position: its only notice, or one of its instalments. The provider keeps
/// a position's instalments as these ([`Posizione::rate`]); a position of one payment option
/// keeps its payment in its own fields, and [`Posizione::opzioni`] shows it as one of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opzione {
    /// The instalment's number, 1 to n; none for a position's only payment option.
    #[serde(default)]
    pub rata: Option<u8>,
    /// Its notice.
    pub nav: Nav,
    /// How much.
    pub importo: Importo,
    /// Its due date.
    pub scadenza: Data,
    /// The last day it can be paid (its own `validita`, the position's, or its due date).
    pub ultimo_giorno: Data,
    /// What its notice prints.
    pub causale: String,
    /// Its transfers, summing to its amount.
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
    /// The activation holding it, if any.
    #[serde(default)]
    pub attivo: Option<Attivo>,
    /// Its payment, once paid.
    #[serde(default)]
    pub pagamento: Option<Pagamento>,
    /// Attempts that did not pay.
    #[serde(default)]
    pub tentativi: Vec<Tentativo>,
    /// True once a settlement flow reported its payment.
    #[serde(default)]
    pub rendicontata: bool,
}

impl Opzione {
    /// Instalment `numero` of notice `nav`, as `r` plans it in a position of `causale`, last
    /// day `validita` and transfers `trasferimenti`.
    fn della_rata(
        numero: u8,
        nav: Nav,
        r: &RataPosizione,
        causale: &str,
        validita: Option<Data>,
        trasferimenti: &Elenco<Trasferimento, 1, 5>,
    ) -> Opzione {
        Opzione {
            rata: Some(numero),
            nav,
            importo: r.importo,
            scadenza: r.scadenza,
            ultimo_giorno: r.validita.or(validita).unwrap_or(r.scadenza),
            causale: r.causale.clone().unwrap_or_else(|| causale.to_owned()),
            // The catalog's rules refuse a plan whose instalments have no transfers of their
            // own when the position has several; the position's would not sum here.
            trasferimenti: trasferimenti_della_rata(r, trasferimenti)
                .unwrap_or_else(|| trasferimenti.clone()),
            attivo: None,
            pagamento: None,
            tentativi: Vec::new(),
            rendicontata: false,
        }
    }

    /// True while an activation whose token has not ended holds it.
    fn trattenuta(&self, now: &Istante) -> bool {
        self.attivo
            .as_ref()
            .is_some_and(|a| a.fino.datetime() > now.datetime())
    }

    /// True when `now` is past its last day.
    fn oltre(&self, now: &Istante) -> bool {
        now.datetime().date() > self.ultimo_giorno.date()
    }
}

/// A debt position as the provider keeps it (key: its NAV; in instalments, the first's).
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
    /// Its instalments, for a position paid in instalments (its own `attivo`, `pagamento` and
    /// `tentativi` then stay empty); none for a position of one payment option.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate: Vec<Opzione>,
}

impl Posizione {
    /// A new position of `creditore` as `dati` asks, valid from `now`: notice `nav`, and for
    /// its instalments `nav` then `altre` in order.
    fn nuova(
        creditore: EntityId,
        dati: PosizioneCrea,
        nav: Nav,
        altre: &[Nav],
        now: &Istante,
    ) -> Posizione {
        let rate = dati.rate.as_ref().map_or_else(Vec::new, |rate| {
            rate.iter()
                .zip(std::iter::once(&nav).chain(altre))
                .zip(1u8..)
                .map(|((r, nav), numero)| {
                    Opzione::della_rata(
                        numero,
                        nav.clone(),
                        r,
                        &dati.causale,
                        dati.validita,
                        &dati.trasferimenti,
                    )
                })
                .collect()
        });
        let mut p = Posizione {
            creditore,
            dati,
            nav,
            stato: StatoPosizione::Bozza,
            storia: Vec::new(),
            attivo: None,
            pagamento: None,
            tentativi: Vec::new(),
            rate,
        };
        p.passa(StatoPosizione::Bozza, now);
        p.passa(StatoPosizione::Pubblicata, now);
        p.passa(StatoPosizione::Valida, now);
        p
    }

    /// The last day it can be paid.
    fn ultimo_giorno(&self) -> &Data {
        self.dati.validita.as_ref().unwrap_or(&self.dati.scadenza)
    }

    fn passa(&mut self, stato: StatoPosizione, il: &Istante) {
        self.stato = stato;
        self.storia.push((stato, il.clone()));
    }

    /// Its ways to pay: its instalments in order, or its only notice.
    #[must_use]
    pub fn opzioni(&self) -> Vec<Opzione> {
        if !self.rate.is_empty() {
            return self.rate.clone();
        }
        vec![Opzione {
            rata: None,
            nav: self.nav.clone(),
            importo: self.dati.importo,
            scadenza: self.dati.scadenza,
            ultimo_giorno: *self.ultimo_giorno(),
            causale: self.dati.causale.clone(),
            trasferimenti: self.dati.trasferimenti.clone(),
            attivo: self.attivo.clone(),
            pagamento: self.pagamento.clone(),
            tentativi: self.tentativi.clone(),
            rendicontata: self.stato == StatoPosizione::Rendicontata,
        }]
    }

    /// The way to pay of notice `nav`, if it is one of this position's.
    #[must_use]
    pub fn opzione(&self, nav: &Nav) -> Option<Opzione> {
        self.opzioni().into_iter().find(|o| &o.nav == nav)
    }

    /// Writes back `o`, one of its ways to pay.
    fn poni(&mut self, o: Opzione) {
        if o.rata.is_none() {
            self.attivo = o.attivo;
            self.pagamento = o.pagamento;
            self.tentativi = o.tentativi;
        } else if let Some(r) = self.rate.iter_mut().find(|r| r.nav == o.nav) {
            *r = o;
        }
    }

    /// Why option `o` cannot be paid now, if it cannot: the position's state, then the
    /// option's payment, an activation whose token has not ended, and for an instalment its
    /// last day (a position of one option expires as a whole, in [`Posizione::scade`]).
    fn impedimento(&self, o: &Opzione, now: &Istante) -> Option<ErroreAvviso> {
        match self.stato {
            StatoPosizione::Pagata | StatoPosizione::Rendicontata => Some(ErroreAvviso::GiaPagato),
            StatoPosizione::Invalida => Some(ErroreAvviso::Annullato),
            StatoPosizione::Scaduta => Some(ErroreAvviso::Scaduto),
            _ if o.pagamento.is_some() => Some(ErroreAvviso::GiaPagato),
            _ if o.trattenuta(now) => Some(ErroreAvviso::PagamentoInCorso),
            _ if o.rata.is_some() && o.oltre(now) => Some(ErroreAvviso::Scaduto),
            _ => None,
        }
    }

    /// Holds the way to pay of notice `nav` for `attivo`, if it can be paid now for `importo`;
    /// returns it.
    ///
    /// # Errors
    /// Why not: unknown notice, the position's state, the option paid, held or past its last
    /// day, another amount.
    fn trattieni(
        &mut self,
        nav: &Nav,
        importo: Importo,
        attivo: &Attivo,
        now: &Istante,
    ) -> Result<Opzione, ErroreAvviso> {
        let mut o = self.opzione(nav).ok_or(ErroreAvviso::Sconosciuto)?;
        if let Some(e) = self.impedimento(&o, now) {
            return Err(e);
        }
        if o.importo != importo {
            return Err(ErroreAvviso::ImportoDiverso);
        }
        o.attivo = Some(attivo.clone());
        self.poni(o.clone());
        Ok(o)
    }

    /// Releases the way to pay that activation `token` holds, noting the attempt as ended at
    /// `il`; true when one was held.
    fn rilascia(&mut self, token: &str, il: &Istante) -> bool {
        let held = self
            .opzioni()
            .into_iter()
            .find(|o| o.attivo.as_ref().is_some_and(|a| a.token == token));
        let Some(mut o) = held else {
            return false;
        };
        o.attivo = None;
        o.tentativi.push(Tentativo {
            token: token.to_owned(),
            esito: "scaduto".into(),
            il: il.clone(),
        });
        self.poni(o);
        true
    }

    /// Why it cannot be changed or cancelled now, if it cannot: paid, partially paid,
    /// cancelled, expired, or one of its notices being paid.
    fn impedimento_modifica(&self, now: &Istante) -> Option<ErroreAvviso> {
        match self.stato {
            StatoPosizione::Pagata | StatoPosizione::Rendicontata => Some(ErroreAvviso::GiaPagato),
            StatoPosizione::ParzialmentePagata => Some(ErroreAvviso::ParzialmentePagato),
            StatoPosizione::Invalida => Some(ErroreAvviso::Annullato),
            StatoPosizione::Scaduta => Some(ErroreAvviso::Scaduto),
            _ if self.opzioni().iter().any(|o| o.trattenuta(now)) => {
                Some(ErroreAvviso::PagamentoInCorso)
            }
            _ => None,
        }
    }

    /// Expires it if it is valid, nothing holds or paid any of its notices, and every one is
    /// past its last day; true when it did.
    fn scade(&mut self, now: &Istante) -> bool {
        let scaduta = self.stato == StatoPosizione::Valida
            && self
                .opzioni()
                .iter()
                .all(|o| o.attivo.is_none() && o.pagamento.is_none() && o.oltre(now));
        if scaduta {
            self.passa(StatoPosizione::Scaduta, now);
        }
        scaduta
    }

    /// Cancels it; `Ok(false)` when it was cancelled already.
    ///
    /// # Errors
    /// Why it cannot be: paid, partially paid, being paid.
    fn annulla(&mut self, now: &Istante) -> Result<bool, ErroreAvviso> {
        match self.impedimento_modifica(now) {
            Some(
                e @ (ErroreAvviso::GiaPagato
                | ErroreAvviso::ParzialmentePagato
                | ErroreAvviso::PagamentoInCorso),
            ) => Err(e),
            Some(ErroreAvviso::Annullato) => Ok(false),
            _ => {
                self.passa(StatoPosizione::Invalida, now);
                Ok(true)
            }
        }
    }

    /// Takes the new amount, due date, transfers and instalments of `req` (an expired position
    /// becomes valid again); each instalment keeps its notice and its attempts.
    ///
    /// # Errors
    /// Why it cannot change: paid, partially paid, cancelled, being paid, or another number
    /// of instalments.
    fn cambia(&mut self, req: &PosizioneAggiorna, now: &Istante) -> Result<(), ErroreAvviso> {
        match self.impedimento_modifica(now) {
            // An expired position can be given a new due date.
            Some(e) if e != ErroreAvviso::Scaduto => return Err(e),
            _ => {}
        }
        let rate = req.rate.as_ref().map_or(&[][..], Elenco::as_slice);
        if rate.len() != self.rate.len() {
            return Err(ErroreAvviso::RateDiverse);
        }
        self.dati.importo = req.importo;
        self.dati.scadenza = req.scadenza;
        self.dati.trasferimenti = req.trasferimenti.clone();
        self.dati.validita = None;
        self.dati.rate = req.rate.clone();
        self.attivo = None;
        for (old, r) in self.rate.iter_mut().zip(rate) {
            let mut new = Opzione::della_rata(
                old.rata.unwrap_or_default(),
                old.nav.clone(),
                r,
                &self.dati.causale,
                None,
                &self.dati.trasferimenti,
            );
            new.tentativi = std::mem::take(&mut old.tentativi);
            *old = new;
        }
        if self.stato == StatoPosizione::Scaduta {
            self.passa(StatoPosizione::Valida, now);
        }
        Ok(())
    }

    /// Marks its paid, unreported ways to pay reported and returns them; once paid and every
    /// one reported, it becomes reported.
    fn rendiconta(&mut self, now: &Istante) -> Vec<Opzione> {
        if !matches!(
            self.stato,
            StatoPosizione::Pagata | StatoPosizione::ParzialmentePagata
        ) {
            return Vec::new();
        }
        if self.rate.is_empty() {
            let unica = self.opzioni();
            self.passa(StatoPosizione::Rendicontata, now);
            return unica;
        }
        let mut nuove = Vec::new();
        for r in &mut self.rate {
            if r.pagamento.is_some() && !r.rendicontata {
                r.rendicontata = true;
                nuove.push(r.clone());
            }
        }
        if self.stato == StatoPosizione::Pagata && self.rate.iter().all(|r| r.rendicontata) {
            self.passa(StatoPosizione::Rendicontata, now);
        }
        nuove
    }
}

/// The payment provider's reference back office.
pub struct Nodo {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    /// NAV → position (a position in instalments under its first instalment's NAV).
    posizioni: Tree<Posizione>,
    /// The NAV of a later instalment → the NAV its position is kept under.
    rate: Tree<String>,
    /// `creditor/iupd` → NAV.
    iupd: Tree<String>,
    /// token → the NAV it pays.
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
            rate: store.tree("pagamenti.rate").map_err(s)?,
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

    /// The position of notice `nav` (its only notice, or one of its instalments').
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn posizione(&self, nav: &Nav) -> Result<Option<Posizione>, StoreError> {
        match self.chiave(nav.as_str())? {
            Some(key) => self.posizioni.get(&key),
            None => Ok(None),
        }
    }

    /// The key of the position of notice `nav`: the NAV itself, or for a later instalment its
    /// position's first NAV.
    fn chiave(&self, nav: &str) -> Result<Option<String>, StoreError> {
        if self.posizioni.contains(nav)? {
            return Ok(Some(nav.to_owned()));
        }
        self.rate.get(nav)
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

    /// Brings `p` up to date with the calendar: a valid position past its last day (in
    /// instalments: none paid, every one past its last day) expires (staged in `effects`, with
    /// a `posizione-stato` to the creditor).
    fn aggiorna_scadenza(
        &self,
        p: &mut Posizione,
        effects: &mut Effects,
        now: &Istante,
    ) -> Result<(), HandlerError> {
        if p.scade(now) {
            let stato = PosizioneStato {
                iupd: p.dati.iupd.clone(),
                nav: p.nav.clone(),
                stato: StatoPosizione::Scaduta,
                il: now.clone(),
                rata: None,
            };
            self.annuncia(&p.creditore, &stato, effects)?;
            effects
                .update
                .put(&self.posizioni, p.nav.as_str(), p)
                .map_err(service::retry)?;
        }
        Ok(())
    }

    /// Stages `stato` to `creditore`.
    fn annuncia(
        &self,
        creditore: &EntityId,
        stato: &PosizioneStato,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        effects.send(
            typed::message(
                self.sender.client(),
                creditore,
                Profile::Oneway,
                None,
                None,
                stato,
            )
            .map_err(HandlerError::Reject)?,
        );
        Ok(())
    }

    /// `k` new notice numbers of segregation code `seg`, taken at once in the store.
    fn numeri(&self, seg: u8, k: u64) -> Result<Vec<Nav>, HandlerError> {
        let next = self
            .contatori
            .update(&seg.to_string(), |n| Some(n.unwrap_or(1) + k))
            .map_err(service::retry)?
            .unwrap_or(1 + k);
        (next - k..next)
            .map(|base| {
                Nav::new(seg, base).ok_or_else(|| {
                    HandlerError::Reject(format!(
                        "segregation code {seg:02} has used all its notice numbers"
                    ))
                })
            })
            .collect()
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
        let seg = creditore.segregazione;
        let nav = match self.iupd.get(&key).map_err(service::retry)? {
            Some(nav) => nav,
            None => {
                let nav = self.numeri(seg, 1)?.remove(0);
                self.iupd
                    .update(&key, |old| old.or_else(|| Some(nav.as_str().to_owned())))
                    .map_err(service::retry)?
                    .unwrap_or_else(|| nav.as_str().to_owned())
            }
        };
        // The position is written at once too (compare-and-swap), with the numbers of its
        // later instalments: of two creations of one IUPD handled at the same time, one
        // position stands and the other's numbers are a gap. The index of the instalments'
        // NAVs is staged, again on a retry, so a crash before the commit leaves no notice
        // unreachable.
        let p = match self.posizioni.get(&nav).map_err(service::retry)? {
            Some(p) => p,
            None => {
                let now = self.now()?;
                let nav = Nav::parse(&nav).map_err(|e| HandlerError::Reject(e.to_string()))?;
                let altre = match &req.rate {
                    Some(rate) => self.numeri(seg, rate.len() as u64 - 1)?,
                    None => Vec::new(),
                };
                let nuova = Posizione::nuova(sender.clone(), req, nav.clone(), &altre, &now);
                let mut fresh = false;
                let p = self
                    .posizioni
                    .update(nav.as_str(), |cur| {
                        fresh = cur.is_none();
                        Some(cur.unwrap_or_else(|| nuova.clone()))
                    })
                    .map_err(service::retry)?
                    .unwrap_or(nuova);
                if fresh {
                    tracing::info!(%nav, creditor = %sender, instalments = p.rate.len(), "Debt position created.");
                }
                p
            }
        };
        for r in p.rate.iter().filter(|r| r.nav != p.nav) {
            effects
                .update
                .put(&self.rate, r.nav.as_str(), &p.nav.as_str().to_owned())
                .map_err(service::retry)?;
        }
        let answer = PosizioneCreata {
            iupd: p.dati.iupd.clone(),
            iuv: p.nav.iuv(),
            nav: p.nav.clone(),
            stato: p.stato,
            rate: p
                .rate
                .iter()
                .map(|r| RataCreata {
                    numero: r.rata.unwrap_or_default(),
                    nav: r.nav.clone(),
                    iuv: r.nav.iuv(),
                    importo: r.importo,
                    scadenza: r.scadenza,
                })
                .collect(),
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
                match p.cambia(&req, &now) {
                    Err(e) => (p.stato, Some(e)),
                    Ok(()) => {
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
            Some(mut p) => match p.annulla(&now) {
                Err(e) => (p.stato, Some(e)),
                Ok(false) => (p.stato, None),
                Ok(true) => {
                    effects
                        .update
                        .put(&self.posizioni, p.nav.as_str(), &p)
                        .map_err(service::retry)?;
                    tracing::info!(nav = %p.nav, iupd = %req.iupd, "Debt position cancelled.");
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

    /// The position of a payer's notice, brought up to date, and the way to pay it names; or
    /// why it cannot be paid.
    fn del_pagatore(
        &self,
        ente: &CodiceFiscale,
        nav: &Nav,
        effects: &mut Effects,
        now: &Istante,
    ) -> Result<Result<(Posizione, Opzione), ErroreAvviso>, HandlerError> {
        let Some(mut p) = self.posizione(nav).map_err(service::retry)? else {
            return Ok(Err(ErroreAvviso::Sconosciuto));
        };
        if &p.dati.ente != ente {
            return Ok(Err(ErroreAvviso::Sconosciuto));
        }
        self.aggiorna_scadenza(&mut p, effects, now)?;
        let Some(o) = p.opzione(nav) else {
            return Ok(Err(ErroreAvviso::Sconosciuto));
        };
        Ok(match p.impedimento(&o, now) {
            Some(e) => Err(e),
            None => Ok((p, o)),
        })
    }

    fn verifica(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: Verifica = service::read(inbound)?;
        let now = self.now()?;
        let esito = match self.del_pagatore(&req.ente, &req.nav, effects, &now)? {
            Err(errore) => EsitoVerifica::Errore { errore },
            Ok((p, o)) => EsitoVerifica::Pagabile(AvvisoPagabile {
                importo: o.importo,
                scadenza: o.scadenza,
                causale: o.causale,
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
            Ok((_, o)) if o.importo != req.importo => EsitoAttivazione::Errore {
                errore: ErroreAvviso::ImportoDiverso,
            },
            Ok((p, _)) => {
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
                let mut claimed: Result<(Posizione, Opzione), ErroreAvviso> =
                    Err(ErroreAvviso::Sconosciuto);
                self.posizioni
                    .update(p.nav.as_str(), |cur| {
                        let mut cur = cur?;
                        claimed = cur
                            .trattieni(&req.nav, req.importo, &attivo, &now)
                            .map(|o| (cur.clone(), o));
                        Some(cur)
                    })
                    .map_err(service::retry)?;
                match claimed {
                    Err(errore) => EsitoAttivazione::Errore { errore },
                    Ok((p, o)) => {
                        let u = &mut effects.update;
                        u.put(&self.posizioni, p.nav.as_str(), &p)
                            .map_err(service::retry)?;
                        u.put(&self.token, &token, &o.nav.as_str().to_owned())
                            .map_err(service::retry)?;
                        self.agenda
                            .schedule(u, fine, &token, &o.nav.as_str().to_owned())
                            .map_err(service::retry)?;
                        tracing::info!(nav = %o.nav, %token, "Notice activated.");
                        EsitoAttivazione::Attivato(Box::new(Attivazione {
                            token,
                            importo: o.importo,
                            debitore: p.dati.debitore.clone(),
                            trasferimenti: o.trasferimenti,
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
    /// compare-and-swap, perhaps more than once): the way to pay of the outcome's notice is
    /// paid or released; a payment makes the position paid when every way to pay is, partially
    /// paid when some are; a position in instalments tells its creditor of such a change.
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
        let Some(mut o) = p.opzione(&req.nav) else {
            return (p, rifiuto(ErroreAvviso::Sconosciuto));
        };
        // The state of a position in instalments, as its creditor hears it.
        let annuncio = |p: &Posizione, o: &Opzione| {
            (!p.rate.is_empty()).then(|| {
                Box::new(PosizioneStato {
                    iupd: p.dati.iupd.clone(),
                    nav: o.nav.clone(),
                    stato: p.stato,
                    il: now.clone(),
                    rata: o.rata,
                })
            })
        };
        if let Some(pagato) = &o.pagamento {
            if pagato.token != req.token {
                return (p, rifiuto(ErroreAvviso::GiaPagato));
            }
            // The same outcome again (or again after a crash): the same answer, and the same
            // receipt (and state) sent again, which the creditor takes once.
            let risposta = answer(EsitoRegistrato::Pagato, Some(pagato.ricevuta.clone()), None);
            let ricevuta = pagato.documento.clone();
            let annuncio = annuncio(&p, &o);
            return (
                p.clone(),
                Decisione::Cambiata {
                    posizione: Box::new(p),
                    risposta,
                    ricevuta: ricevuta.map(Box::new),
                    annuncio,
                },
            );
        }
        match req.risultato {
            Risultato::Ko => {
                if o.attivo.as_ref().is_none_or(|a| a.token != req.token) {
                    return (
                        p,
                        Decisione::Risposta(answer(EsitoRegistrato::Rilasciato, None, None)),
                    );
                }
                o.attivo = None;
                o.tentativi.push(Tentativo {
                    token: req.token.clone(),
                    esito: "ko".into(),
                    il: now.clone(),
                });
                p.poni(o);
                (
                    p.clone(),
                    Decisione::Cambiata {
                        posizione: Box::new(p),
                        risposta: answer(EsitoRegistrato::Rilasciato, None, None),
                        ricevuta: None,
                        annuncio: None,
                    },
                )
            }
            Risultato::Ok if p.stato == StatoPosizione::Invalida => {
                (p, rifiuto(ErroreAvviso::Annullato))
            }
            Risultato::Ok if req.importo.is_some_and(|i| i != o.importo) => {
                (p, rifiuto(ErroreAvviso::ImportoDiverso))
            }
            Risultato::Ok => {
                let ricevuta = Ricevuta {
                    id: ricevuta_id.to_owned(),
                    iupd: p.dati.iupd.clone(),
                    ente: p.dati.ente.clone(),
                    nav: o.nav.clone(),
                    rata: o.rata,
                    iuv: o.nav.iuv(),
                    importo: o.importo,
                    debitore: p.dati.debitore.clone(),
                    pagatore: None,
                    canale: req.canale,
                    psp: req.psp.clone(),
                    pagato_il: req.il.clone(),
                    trasferimenti: o.trasferimenti.clone(),
                };
                if o.attivo.as_ref().is_some_and(|a| a.token == req.token) {
                    o.attivo = None;
                }
                o.pagamento = Some(Pagamento {
                    token: req.token.clone(),
                    ricevuta: ricevuta_id.to_owned(),
                    il: req.il.clone(),
                    canale: req.canale,
                    documento: Some(ricevuta.clone()),
                });
                p.poni(o.clone());
                let stato = if p.opzioni().iter().all(|x| x.pagamento.is_some()) {
                    StatoPosizione::Pagata
                } else {
                    StatoPosizione::ParzialmentePagata
                };
                let annuncio = if p.stato == stato {
                    None
                } else {
                    p.passa(stato, now);
                    annuncio(&p, &o)
                };
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
                        annuncio,
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
        let key = if known {
            self.chiave(req.nav.as_str()).map_err(service::retry)?
        } else {
            None
        };
        if let Some(key) = key {
            // Decided and written at once (compare-and-swap): of two outcomes handled at the
            // same time, one pays and the other finds the notice paid. A crash before the
            // commit leaves the payment recorded; the channel's retry of the outcome sends
            // the receipt then.
            self.posizioni
                .update(&key, |cur| {
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
                annuncio,
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
                    tracing::info!(nav = %r.nav, receipt = %r.id, "Notice paid; receipt sent to the creditor.");
                }
                if let Some(a) = annuncio {
                    self.annuncia(&posizione.creditore, &a, effects)?;
                    tracing::info!(nav = %a.nav, state = ?a.stato, "A payment changed the position's state; the creditor told.");
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
            let key = self
                .chiave(&d.value)
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| d.value.clone());
            self.posizioni
                .update(&key, |p| {
                    let mut p = p?;
                    did = p.rilascia(&d.key, &il);
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

    /// Sends `creditor` a settlement flow of every paid, unreported position or instalment,
    /// dated `data`; they become reported (a position in instalments once all are). Returns
    /// the flow, if there was anything to report.
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
        let mut totale = Importo::ZERO;
        for (_, mut p) in self.posizioni.scan("").map_err(|e| e.to_string())? {
            if &p.creditore != creditor {
                continue;
            }
            let pagate = p.rendiconta(&now);
            if pagate.is_empty() {
                continue;
            }
            for o in pagate {
                let giorno = o
                    .pagamento
                    .as_ref()
                    .and_then(|x| Data::from_date(x.il.datetime().date()))
                    .unwrap_or(data);
                for t in o.trasferimenti.iter() {
                    totale = totale
                        .checked_add(t.importo)
                        .ok_or("the flow's total overflows")?;
                    pagamenti.push(PagamentoRendicontato {
                        iuv: o.nav.iuv(),
                        indice_trasferimento: t.indice,
                        importo: t.importo,
                        data: giorno,
                    });
                }
            }
            effects
                .update
                .put(&self.posizioni, p.nav.as_str(), &p)
                .map_err(|e| e.to_string())?;
        }
        let Some(pagamenti) = Elenco::new(pagamenti) else {
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

#[cfg(test)]
mod tests {
    //! The provider's state machine of a position, without a store or a hub: activations,
    //! outcomes, cancellations, changes, the calendar and settlement flows on positions of
    //! one payment option and in instalments.

    use proptest::prelude::*;
    use snodo_schemas::services::dati::Soggetto;
    use snodo_schemas::services::pagamenti::Iban;
    use time::macros::datetime;

    use super::*;

    /// `minuti` minutes after 1 June 2026, 09:00 UTC.
    fn il(minuti: i64) -> Istante {
        Istante::from_datetime(datetime!(2026-06-01 09:00) + time::Duration::minutes(minuti))
            .unwrap()
    }

    fn giorno(s: &str) -> Data {
        Data::parse(s).unwrap()
    }

    fn euro(e: u64) -> Importo {
        Importo::euro(e).unwrap()
    }

    fn trasferimento(importo: Importo) -> Trasferimento {
        Trasferimento {
            indice: 1,
            ente: CodiceFiscale::parse("00514490010").unwrap(),
            iban: Iban("IT60X0542811101000000123456".into()),
            importo,
            causale: "IMU 2026".into(),
            tassonomia: "9/0101101IM/".into(),
        }
    }

    /// A position of `importi` (one: a single payment option; more: instalments due on the
    /// 16th of June, then of each month after), the last due on its due date.
    fn posizione(importi: &[u64]) -> Posizione {
        let totale = euro(importi.iter().sum());
        let scadenze: Vec<Data> = (0..importi.len())
            .map(|i| giorno(&format!("2026-{:02}-16", 6 + i)))
            .collect();
        let rate = (importi.len() > 1).then(|| {
            Elenco::new(
                importi
                    .iter()
                    .zip(&scadenze)
                    .map(|(e, s)| RataPosizione {
                        importo: euro(*e),
                        scadenza: *s,
                        validita: None,
                        causale: None,
                        trasferimenti: None,
                    })
                    .collect(),
            )
            .unwrap()
        });
        let dati = PosizioneCrea {
            iupd: "IMU-2026".into(),
            ente: CodiceFiscale::parse("00514490010").unwrap(),
            debitore: Soggetto {
                codice_fiscale: CodiceFiscale::parse("RSSMRA85T10A562S").unwrap(),
                denominazione: "Mario Rossi".into(),
                indirizzo: None,
                email: None,
            },
            importo: totale,
            scadenza: *scadenze.last().unwrap(),
            validita: None,
            causale: "IMU 2026".into(),
            trasferimenti: Elenco::new(vec![trasferimento(totale)]).unwrap(),
            rate,
        };
        let navs: Vec<Nav> = (1..=importi.len() as u64)
            .map(|b| Nav::new(1, b).unwrap())
            .collect();
        Posizione::nuova(
            "comune:001272".parse().unwrap(),
            dati,
            navs[0].clone(),
            &navs[1..],
            &il(0),
        )
    }

    fn attivo(token: &str, now: &Istante) -> Attivo {
        Attivo {
            token: token.into(),
            canale_entity: "portale:comunefacile".parse().unwrap(),
            canale: Canale::Carta,
            id_tentativo: token.into(),
            fino: Istante::from_datetime(now.datetime() + time::Duration::minutes(30)).unwrap(),
        }
    }

    fn esito(token: &str, nav: &Nav, risultato: Risultato, importo: Importo) -> EsitoPagamento {
        EsitoPagamento {
            token: token.into(),
            nav: nav.clone(),
            risultato,
            canale: Canale::Carta,
            psp: "psp".into(),
            il: il(0),
            importo: (risultato == Risultato::Ok).then_some(importo),
        }
    }

    /// Activates and pays notice `nav` at `now`: the position, the receipt, the state told.
    fn paga(
        p: Posizione,
        nav: &Nav,
        token: &str,
        now: &Istante,
    ) -> (
        Posizione,
        Option<Box<Ricevuta>>,
        Option<Box<PosizioneStato>>,
    ) {
        let mut p = p;
        let o = p.trattieni(
            nav,
            p.opzione(nav).unwrap().importo,
            &attivo(token, now),
            now,
        );
        let o = o.unwrap();
        let req = esito(token, nav, Risultato::Ok, o.importo);
        match Nodo::decidi(p, &req, now, &format!("R-{token}")) {
            (
                p,
                Decisione::Cambiata {
                    ricevuta, annuncio, ..
                },
            ) => (p, ricevuta, annuncio),
            (_, Decisione::Risposta(r)) => panic!("not paid: {r:?}"),
        }
    }

    fn aggiorna(p: &Posizione, importi: &[u64]) -> PosizioneAggiorna {
        let q = posizione(importi);
        PosizioneAggiorna {
            iupd: p.dati.iupd.clone(),
            ente: p.dati.ente.clone(),
            importo: q.dati.importo,
            scadenza: q.dati.scadenza,
            trasferimenti: q.dati.trasferimenti,
            rate: q.dati.rate,
        }
    }

    #[test]
    fn two_instalments_make_the_position_partially_paid_then_paid_then_reported() {
        let p = posizione(&[404, 404]);
        let navs: Vec<Nav> = p.opzioni().into_iter().map(|o| o.nav).collect();
        assert_eq!(navs.len(), 2);
        assert_eq!(p.opzione(&navs[1]).unwrap().rata, Some(2));
        assert_eq!(p.stato, StatoPosizione::Valida);

        let (mut p, ricevuta, annuncio) = paga(p, &navs[0], "t1", &il(1));
        let r = ricevuta.unwrap();
        assert_eq!(
            (r.nav.clone(), r.rata, r.importo),
            (navs[0].clone(), Some(1), euro(404))
        );
        assert_eq!(r.trasferimenti.as_slice()[0].importo, euro(404));
        let a = annuncio.unwrap();
        assert_eq!(
            (a.stato, a.rata, a.nav.clone()),
            (StatoPosizione::ParzialmentePagata, Some(1), navs[0].clone())
        );
        assert_eq!(p.stato, StatoPosizione::ParzialmentePagata);
        // Paid once: the first instalment is refused as paid, the second is payable.
        let o1 = p.opzione(&navs[0]).unwrap();
        assert_eq!(p.impedimento(&o1, &il(2)), Some(ErroreAvviso::GiaPagato));
        let o2 = p.opzione(&navs[1]).unwrap();
        assert_eq!(p.impedimento(&o2, &il(2)), None);
        // Partially paid: neither cancelled nor changed.
        assert_eq!(p.annulla(&il(2)), Err(ErroreAvviso::ParzialmentePagato));
        let change = aggiorna(&p, &[400, 408]);
        assert_eq!(
            p.cambia(&change, &il(2)),
            Err(ErroreAvviso::ParzialmentePagato)
        );
        // The flow reports the paid instalment; the position is not reported yet.
        let reported = p.rendiconta(&il(3));
        assert_eq!(reported.len(), 1);
        assert_eq!(p.stato, StatoPosizione::ParzialmentePagata);
        assert!(p.rendiconta(&il(3)).is_empty(), "reported once");

        let (mut p, ricevuta, annuncio) = paga(p, &navs[1], "t2", &il(4));
        assert_eq!(ricevuta.unwrap().rata, Some(2));
        assert_eq!(annuncio.unwrap().stato, StatoPosizione::Pagata);
        assert_eq!(p.stato, StatoPosizione::Pagata);
        assert_eq!(p.annulla(&il(5)), Err(ErroreAvviso::GiaPagato));
        assert_eq!(p.rendiconta(&il(5)).len(), 1);
        assert_eq!(p.stato, StatoPosizione::Rendicontata);
        let stati: Vec<_> = p.storia.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            stati,
            [
                StatoPosizione::Bozza,
                StatoPosizione::Pubblicata,
                StatoPosizione::Valida,
                StatoPosizione::ParzialmentePagata,
                StatoPosizione::Pagata,
                StatoPosizione::Rendicontata
            ]
        );
    }

    #[test]
    fn a_position_of_one_option_is_closed_by_its_receipt_alone() {
        let p = posizione(&[808]);
        assert!(p.rate.is_empty());
        let nav = p.nav.clone();
        let (mut p, ricevuta, annuncio) = paga(p, &nav, "t1", &il(1));
        let r = ricevuta.unwrap();
        assert_eq!((r.rata, r.importo), (None, euro(808)));
        assert!(
            annuncio.is_none(),
            "no posizione-stato for a paid single notice"
        );
        assert_eq!(p.stato, StatoPosizione::Pagata);
        assert!(p.pagamento.is_some());
        assert_eq!(p.annulla(&il(2)), Err(ErroreAvviso::GiaPagato));
        assert_eq!(p.rendiconta(&il(3)).len(), 1);
        assert_eq!(p.stato, StatoPosizione::Rendicontata);
    }

    #[test]
    fn an_instalment_past_its_last_day_is_refused_and_the_position_expires_only_if_none_is_paid() {
        // Due 16 June and 16 July; on 17 June the first is expired, the second payable.
        let mut p = posizione(&[404, 404]);
        let navs: Vec<Nav> = p.opzioni().into_iter().map(|o| o.nav).collect();
        let june17 = Istante::parse("2026-06-17T08:00:00Z").unwrap();
        let o1 = p.opzione(&navs[0]).unwrap();
        assert_eq!(p.impedimento(&o1, &june17), Some(ErroreAvviso::Scaduto));
        assert!(!p.scade(&june17));
        assert_eq!(p.stato, StatoPosizione::Valida);
        // Nothing paid and both past: the position expires; it can be cancelled.
        let july17 = Istante::parse("2026-07-17T08:00:00Z").unwrap();
        assert!(p.scade(&july17));
        assert_eq!(p.stato, StatoPosizione::Scaduta);
        let o2 = p.opzione(&navs[1]).unwrap();
        assert_eq!(p.impedimento(&o2, &july17), Some(ErroreAvviso::Scaduto));

        // The first paid, the second let expire: still partially paid, never expired; the
        // second refused as expired.
        let p = posizione(&[404, 404]);
        let (mut p, _, _) = paga(p, &navs[0], "t1", &il(1));
        assert!(!p.scade(&july17));
        assert_eq!(p.stato, StatoPosizione::ParzialmentePagata);
        let o2 = p.opzione(&navs[1]).unwrap();
        assert_eq!(p.impedimento(&o2, &july17), Some(ErroreAvviso::Scaduto));
        assert_eq!(p.annulla(&july17), Err(ErroreAvviso::ParzialmentePagato));
    }

    #[test]
    fn a_change_keeps_the_instalments_notices_and_refuses_another_number() {
        let mut p = posizione(&[404, 404]);
        let navs: Vec<Nav> = p.opzioni().into_iter().map(|o| o.nav).collect();
        p.cambia(&aggiorna(&p, &[400, 408]), &il(1)).unwrap();
        let after: Vec<(Nav, Importo)> = p
            .opzioni()
            .into_iter()
            .map(|o| (o.nav, o.importo))
            .collect();
        assert_eq!(
            after,
            [(navs[0].clone(), euro(400)), (navs[1].clone(), euro(408))]
        );
        assert_eq!(
            p.cambia(&aggiorna(&p, &[200, 200, 408]), &il(1)),
            Err(ErroreAvviso::RateDiverse)
        );
        assert_eq!(
            p.cambia(&aggiorna(&p, &[808]), &il(1)),
            Err(ErroreAvviso::RateDiverse)
        );
        let mut single = posizione(&[808]);
        assert_eq!(
            single.cambia(&aggiorna(&single, &[404, 404]), &il(1)),
            Err(ErroreAvviso::RateDiverse)
        );
        // Being paid: neither changed nor cancelled.
        let nav = navs[1].clone();
        p.trattieni(&nav, euro(408), &attivo("t", &il(2)), &il(2))
            .unwrap();
        assert_eq!(p.annulla(&il(3)), Err(ErroreAvviso::PagamentoInCorso));
        assert!(p.rilascia("t", &il(40)));
        assert_eq!(p.annulla(&il(40)), Ok(true));
        assert_eq!(p.stato, StatoPosizione::Invalida);
    }

    /// What happens to a position in the property test.
    #[derive(Clone, Debug)]
    enum Evento {
        /// Activate option `i` (modulo their number) with a new token.
        Attiva(usize),
        /// OK of the last token of option `i`.
        Ok(usize),
        /// KO of the last token of option `i`.
        Ko(usize),
        /// The creditor cancels.
        Annulla,
        /// The creditor changes the amounts (the same split).
        Cambia,
        /// `n` days pass (tokens end, instalments fall due).
        Giorni(i64),
        /// A settlement flow.
        Rendiconta,
    }

    fn evento() -> impl Strategy<Value = Evento> {
        prop_oneof![
            3 => (0usize..4).prop_map(Evento::Attiva),
            3 => (0usize..4).prop_map(Evento::Ok),
            1 => (0usize..4).prop_map(Evento::Ko),
            1 => Just(Evento::Annulla),
            1 => Just(Evento::Cambia),
            2 => (0i64..40).prop_map(Evento::Giorni),
            1 => Just(Evento::Rendiconta),
        ]
    }

    proptest! {
        /// Whatever the plan (one option to four instalments) and whatever happens to it: the
        /// state says how many ways to pay are paid (none: valid, expired or cancelled; some:
        /// partially paid; all: paid or reported), each is paid once with one receipt, a
        /// position with a payment is never cancelled nor expired, the creditor is told of a
        /// change of state of a position in instalments and of nothing for a single notice,
        /// and the state never repeats in its history.
        #[test]
        fn the_state_follows_the_instalments_paid(
            importi in prop::collection::vec(1u64..1000, 1..=4),
            eventi in prop::collection::vec(evento(), 0..40),
        ) {
            let mut p = posizione(&importi);
            let navs: Vec<Nav> = p.opzioni().into_iter().map(|o| o.nav).collect();
            let n = navs.len();
            let mut minuti = 0i64;
            let mut tokens: Vec<Option<String>> = vec![None; n];
            let mut ricevute = std::collections::BTreeSet::new();
            for (k, e) in eventi.into_iter().enumerate() {
                let now = il(minuti);
                let pagate_prima = p.opzioni().iter().filter(|o| o.pagamento.is_some()).count();
                let stato_prima = p.stato;
                match e {
                    Evento::Attiva(i) => {
                        let i = i % n;
                        let token = format!("t{k}");
                        let importo = p.opzioni()[i].importo;
                        p.scade(&now);
                        if p.trattieni(&navs[i], importo, &attivo(&token, &now), &now).is_ok() {
                            tokens[i] = Some(token);
                        }
                    }
                    Evento::Ok(i) | Evento::Ko(i) => {
                        let i = i % n;
                        let Some(token) = tokens[i].clone() else { continue };
                        let ok = matches!(e, Evento::Ok(_));
                        let importo = p.opzioni()[i].importo;
                        let risultato = if ok { Risultato::Ok } else { Risultato::Ko };
                        let req = esito(&token, &navs[i], risultato, importo);
                        let (next, d) = Nodo::decidi(p, &req, &now, &format!("R-{k}"));
                        p = next;
                        if let Decisione::Cambiata { ricevuta, annuncio, .. } = d {
                            if let Some(r) = ricevuta {
                                prop_assert_eq!(&r.nav, &navs[i]);
                                prop_assert_eq!(r.importo, importo);
                                ricevute.insert(r.id.clone());
                            }
                            match annuncio {
                                Some(a) => {
                                    prop_assert!(n > 1, "a single notice is closed by its receipt");
                                    prop_assert_eq!(a.stato, p.stato);
                                    prop_assert_eq!(a.rata, Some(u8::try_from(i + 1).unwrap()));
                                }
                                None => prop_assert!(
                                    n == 1 || p.stato == stato_prima || !ok,
                                    "a change of state untold"
                                ),
                            }
                        }
                    }
                    Evento::Annulla => {
                        if p.annulla(&now) == Ok(true) {
                            prop_assert_eq!(pagate_prima, 0);
                        }
                    }
                    Evento::Cambia => {
                        let req = aggiorna(&p, &importi);
                        if p.cambia(&req, &now).is_ok() {
                            prop_assert_eq!(pagate_prima, 0);
                            tokens = vec![None; n];
                        }
                    }
                    Evento::Giorni(d) => {
                        minuti += d * 24 * 60;
                        let later = il(minuti);
                        for t in tokens.iter().flatten() {
                            p.rilascia(t, &later);
                        }
                        p.scade(&later);
                    }
                    Evento::Rendiconta => {
                        for o in p.rendiconta(&now) {
                            prop_assert!(o.pagamento.is_some());
                        }
                    }
                }
                let opzioni = p.opzioni();
                let pagate = opzioni.iter().filter(|o| o.pagamento.is_some()).count();
                prop_assert!(pagate >= pagate_prima, "a payment undone");
                prop_assert_eq!(ricevute.len(), pagate, "one receipt per option paid");
                let atteso: &[StatoPosizione] = if pagate == 0 {
                    &[StatoPosizione::Valida, StatoPosizione::Scaduta, StatoPosizione::Invalida]
                } else if pagate < n {
                    &[StatoPosizione::ParzialmentePagata]
                } else {
                    &[StatoPosizione::Pagata, StatoPosizione::Rendicontata]
                };
                prop_assert!(atteso.contains(&p.stato), "{:?} with {}/{} paid", p.stato, pagate, n);
                if p.stato == StatoPosizione::Rendicontata {
                    prop_assert!(opzioni.iter().all(|o| o.rendicontata));
                }
                let pagato: u64 = opzioni
                    .iter()
                    .filter(|o| o.pagamento.is_some())
                    .map(|o| o.importo.in_centesimi())
                    .sum();
                prop_assert!(pagato <= p.dati.importo.in_centesimi());
                prop_assert!(p.storia.windows(2).all(|w| w[0].0 != w[1].0), "{:?}", p.storia);
            }
        }
    }
}
