//! The comune's building office (sportello unico edilizia, `edilizia.permessi`), a back office
//! role of a comune entity: submissions with their documents checked against their digests,
//! the protocol (sequential per year), the fees as a debt position at the payment provider
//! (closed by its receipt), one request for integrations that interrupts the term, the
//! decision within 90 days with silence-assent outside constrained areas, the check of a SCIA
//! within 30 days, and a CILA registered at once. Terms are deadlines of an [`Agenda`] on the
//! clock.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::Payload;
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Elenco, Istante, Nav};
use snodo_schemas::services::dati::{Documento, Motivo, Protocollo, Soggetto};
use snodo_schemas::services::edilizia_permessi::{
    ControlloScia, EsitoControllo, EsitoProvvedimento, Integrazione, Istanza, Oneri,
    ProtocolloIstanza, Provvedimento, RichiestaIntegrazione, Stato, StatoIstanza, Titolo,
};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneCrea, PosizioneCreata, PosizioneStato, Ricevuta, Trasferimento,
};
use time::OffsetDateTime;

use super::SERVICE;
use super::documenti::{self, Allegato};
use super::oneri::{self, Calcolo, TariffeAnno};
use super::termini::{GIORNI_CONTROLLO_SCIA, GIORNI_DECISIONE, Termine};
use crate::HubClient;
use crate::agenda::Agenda;
use crate::back_office::{dopo, elenco_motivi, giorno, istante, mezzanotte, motivo};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, Tree, Update};
use crate::typed::{self, Route, Sender};

/// The building office's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// The comune.
    pub comune: CodiceIstat,
    /// Its name.
    pub denominazione: String,
    /// Its codice fiscale, as creditor of the fees.
    pub codice_fiscale: CodiceFiscale,
    /// The account the fees are paid into.
    pub iban: String,
    /// The payment provider.
    pub nodo: EntityId,
    /// The official in charge of the practices.
    pub responsabile: String,
    /// Days the applicant has to answer a request for integrations (then the practice is
    /// archived).
    #[serde(default = "default_giorni_integrazione")]
    pub giorni_integrazione: u16,
    /// Days to pay the fees.
    #[serde(default = "default_giorni_pagamento")]
    pub giorni_pagamento: u16,
    /// The rates deliberated, by year (a year without is on the latest before it).
    pub tariffe: Vec<TariffeAnno>,
}

fn default_giorni_integrazione() -> u16 {
    30
}

fn default_giorni_pagamento() -> u16 {
    30
}

impl Impostazioni {
    /// Checks what the shape cannot: rates for at least one year, one entry per year.
    ///
    /// # Errors
    /// A message naming the field at fault.
    pub fn valida(&self) -> Result<(), String> {
        if self.tariffe.is_empty() {
            return Err("tariffe: the comune's rates of at least one year are needed".into());
        }
        for (i, t) in self.tariffe.iter().enumerate() {
            if self.tariffe[..i].iter().any(|o| o.anno == t.anno) {
                return Err(format!("tariffe[{i}].anno: {} is given twice", t.anno));
            }
        }
        Ok(())
    }
}

/// Checks the office's `[adapter.data]` when the configuration is loaded.
///
/// # Errors
/// A message naming the field at fault.
pub fn controlla(data: &serde_json::Value) -> Result<(), String> {
    crate::back_office::data::<Impostazioni>(data)?.valida()
}

/// The fees of a practice and their notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneriPratica {
    /// The amounts.
    pub calcolo: Calcolo,
    /// The debt position's id at the provider.
    pub iupd: String,
    /// The last day to pay.
    pub scadenza: Data,
    /// The notice, once the provider gave it.
    pub nav: Option<Nav>,
    /// When paid, once the provider's receipt came.
    pub pagato_il: Option<Istante>,
}

/// A practice as the office keeps it (key: `portal/pratica`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pratica {
    /// The portal that submitted it, where every message about it goes.
    pub portale: EntityId,
    /// The conversation of its messages.
    pub conversazione: String,
    /// The application (its attached contents are kept apart).
    pub istanza: Istanza,
    /// Its protocol.
    pub protocollo: Protocollo,
    /// Its state.
    pub stato: StatoIstanza,
    /// Every state it went through, with when.
    pub storia: Vec<(StatoIstanza, Istante)>,
    /// The term of the decision (a permit) or of the check (a SCIA); none for a CILA.
    pub termine: Option<Termine>,
    /// The requests for integrations made.
    pub richieste: Vec<RichiestaIntegrazione>,
    /// The documents the integrations brought.
    pub integrazioni: Vec<Documento>,
    /// The decision, once taken.
    pub provvedimento: Option<Provvedimento>,
    /// The day silence assented, when it did.
    pub silenzio_assenso: Option<Data>,
    /// The check of a SCIA, once made.
    pub controllo: Option<ControlloScia>,
}

impl Pratica {
    fn passa(&mut self, stato: StatoIstanza, il: &Istante) {
        self.stato = stato;
        self.storia.push((stato, il.clone()));
    }

    /// True once decided, archived or (a CILA) registered: nothing more happens to it.
    #[must_use]
    pub fn conclusa(&self) -> bool {
        matches!(
            self.stato,
            StatoIstanza::Rilasciata | StatoIstanza::Negata | StatoIstanza::Archiviata
        ) || (self.istanza.titolo == Titolo::Cila && self.stato == StatoIstanza::Istruttoria)
    }
}

/// What falls due on the agenda.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scadenza {
    /// The 90 days of a permit: silence assents, unless the area is under constraints.
    Decisione,
    /// The 30 days of the check of a SCIA: unchecked, the SCIA stands.
    Controllo,
    /// The days to answer a request for integrations: unanswered, the practice is archived.
    Integrazione,
}

/// A deadline's value: the practice and what falls due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evento {
    /// The practice's key.
    pub pratica: String,
    /// What falls due.
    pub scadenza: Scadenza,
}

fn chiave_agenda(pratica: &str, s: Scadenza) -> String {
    let s = match s {
        Scadenza::Decisione => "decisione",
        Scadenza::Controllo => "controllo",
        Scadenza::Integrazione => "integrazione",
    };
    format!("{s}/{pratica}")
}

/// Integrations received, waiting to be applied to their practice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrivo {
    /// The practice's key.
    pub pratica: String,
    /// The integrations (their attached contents already kept).
    pub integrazione: Integrazione,
    /// The day they came: the term restarts from it.
    pub il: Data,
}

/// Why an official's operation on a practice failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreSportello {
    /// No practice has that key.
    #[error("no practice {0}")]
    Sconosciuta(String),
    /// The operation does not apply to the practice as it is (its title, its state, a term
    /// passed, fees unpaid).
    #[error("{0}")]
    NonAmmessa(String),
    /// The store or the hub failed.
    #[error("{0}")]
    Sistema(String),
}

impl ErroreSportello {
    /// Whether the same operation may succeed later unchanged.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErroreSportello::Sistema(_))
    }
}

fn sistema(e: impl std::fmt::Display) -> ErroreSportello {
    ErroreSportello::Sistema(e.to_string())
}

/// The comune's building office.
pub struct Sportello {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    /// `portal/pratica` → practice.
    pratiche: Tree<Pratica>,
    /// `portal/pratica` → its fees: apart from the practice, so that the provider's messages
    /// (handled as they come) never write the record the terms and the officials change.
    oneri: Tree<OneriPratica>,
    /// IUPD → the practice's key.
    posizioni: Tree<String>,
    /// IUV of a practice's fees → the settlement flow that reported it.
    rendicontati: Tree<String>,
    /// `portal/pratica/file` → the bytes of an attached document.
    documenti: Tree<Vec<u8>>,
    /// `portal/pratica/envelope` → integrations received, waiting to be applied.
    arrivi: Tree<Arrivo>,
    /// Woken when integrations arrive.
    arrivato: tokio::sync::Notify,
    /// Counters: `protocollo/YEAR`.
    contatori: Tree<u64>,
    /// The terms.
    agenda: Agenda<Evento>,
    /// Serializes what changes a practice once it exists — the officials' operations, the
    /// terms falling due, the integrations applied —, each reading it and committing its
    /// change while holding this.
    lavori: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Sportello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sportello")
            .field("comune", &self.impostazioni.comune)
            .finish_non_exhaustive()
    }
}

/// The key of practice `pratica` submitted by `portale`.
#[must_use]
pub fn chiave(portale: &EntityId, pratica: &str) -> String {
    format!("{portale}/{pratica}")
}

impl Sportello {
    /// The building office for `client`'s entity.
    ///
    /// # Errors
    /// A message when the settings are wrong or the store cannot be used.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        impostazioni: Impostazioni,
    ) -> Result<Arc<Self>, String> {
        impostazioni.valida()?;
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Sportello {
            pratiche: store.tree("edilizia.pratiche").map_err(s)?,
            oneri: store.tree("edilizia.oneri").map_err(s)?,
            posizioni: store.tree("edilizia.posizioni").map_err(s)?,
            rendicontati: store.tree("edilizia.rendicontati").map_err(s)?,
            documenti: store.tree("edilizia.documenti").map_err(s)?,
            contatori: store.tree("edilizia.contatori").map_err(s)?,
            arrivi: store.tree("edilizia.arrivi").map_err(s)?,
            arrivato: tokio::sync::Notify::new(),
            agenda: Agenda::open(&store, "edilizia.termini").map_err(s)?,
            sender: Sender::new(client, store).map_err(s)?,
            clock,
            impostazioni,
            lavori: tokio::sync::Mutex::new(()),
        }))
    }

    /// Routes the portal's messages and the provider's to this office.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        builder
            .route(
                SERVICE,
                "istanza",
                Route::handler_then(self, Sportello::on_istanza, Sportello::sveglia),
            )
            .route(
                SERVICE,
                "integrazione",
                Route::handler_then(self, Sportello::on_integrazione, Sportello::arrivate),
            )
            .route(
                "pagamenti",
                "posizione-creata",
                Route::handler(self, Sportello::on_creata),
            )
            .route(
                "pagamenti",
                "ricevuta",
                Route::handler(self, Sportello::on_ricevuta),
            )
            .route(
                "pagamenti",
                "posizione-stato",
                Route::handler(self, Sportello::on_posizione_stato),
            )
            .route(
                "pagamenti",
                "rendicontazione",
                Route::handler(self, Sportello::on_rendicontazione),
            )
    }

    /// The settlement flow that reported the fees whose notice is `nav`, if one did.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn rendicontato(&self, nav: &Nav) -> Result<Option<String>, StoreError> {
        self.rendicontati.get(nav.iuv().as_str())
    }

    /// Takes the part of a settlement flow that lists this office's fees.
    fn on_rendicontazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let own = self
            .oneri
            .scan("")
            .map_err(service::retry)?
            .into_iter()
            .filter_map(|(_, o)| o.nav.map(|n| n.iuv().as_str().to_owned()))
            .collect();
        typed::rendicontazione(
            inbound,
            &self.impostazioni.nodo,
            &own,
            &self.rendicontati,
            effects,
            "building office",
        )
        .map(|_| ())
    }

    /// Notes that one of this office's positions changed state at the provider (expired):
    /// what is due is read from the practice, not from this.
    fn on_posizione_stato(
        &self,
        inbound: &Inbound,
        _effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let s: PosizioneStato = service::read(inbound)?;
        let own = self.posizioni.contains(&s.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &s.iupd, "building office")?;
        self.da_nodo(inbound)?;
        tracing::info!(iupd = %s.iupd, state = ?s.stato, "Fees' position changed state at the provider.");
        Ok(())
    }

    fn sveglia(&self) {
        self.agenda.wake();
    }

    /// The practice `chiave`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica(&self, chiave: &str) -> Result<Option<Pratica>, StoreError> {
        self.pratiche.get(chiave)
    }

    /// The fees of practice `chiave`, once computed.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn oneri(&self, chiave: &str) -> Result<Option<OneriPratica>, StoreError> {
        self.oneri.get(chiave)
    }

    /// Every practice, by key.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratiche(&self) -> Result<Vec<(String, Pratica)>, StoreError> {
        self.pratiche.scan("")
    }

    /// The bytes of document `nome` attached to practice `chiave`, if it came attached.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn documento(&self, chiave: &str, nome: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.documenti.get(&format!("{chiave}/{nome}"))
    }

    /// When the term `s` of practice `chiave` falls due, if it is set.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn scadenza(
        &self,
        chiave: &str,
        s: Scadenza,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.agenda.get(&chiave_agenda(chiave, s))?.map(|d| d.due))
    }

    /// The next protocol number of the current year, taken at once in the store
    /// (compare-and-swap): never shared, and a crash before the commit leaves a gap.
    fn protocollo(&self) -> Result<Protocollo, HandlerError> {
        let oggi = giorno(self.clock.now())?;
        let anno = oggi.date().year();
        let n = self
            .contatori
            .update(&format!("protocollo/{anno}"), |n| Some(n.unwrap_or(0) + 1))
            .map_err(service::retry)?
            .unwrap_or(1);
        Ok(Protocollo {
            numero: format!("EDI/{anno}/{n:06}"),
            data: oggi,
        })
    }

    fn messaggio<T: Payload>(
        &self,
        p: &Pratica,
        value: &T,
    ) -> Result<snodo_envelopes::Envelope, HandlerError> {
        typed::message(
            self.sender.client(),
            &p.portale,
            Profile::Oneway,
            Some(&p.conversazione),
            None,
            value,
        )
        .map_err(HandlerError::Reject)
    }

    /// Stages the change of `p` to `stato` and its `stato` message to the portal.
    fn cambia(
        &self,
        p: &mut Pratica,
        stato: StatoIstanza,
        nota: Option<String>,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let il = istante(self.clock.now())?;
        if p.stato != stato {
            p.passa(stato, &il);
        }
        let msg = Stato {
            pratica: p.istanza.pratica.clone(),
            stato,
            il,
            nota,
        };
        effects.send(self.messaggio(p, &msg)?);
        Ok(())
    }

    fn metti(&self, key: &str, p: &Pratica, update: &mut Update) -> Result<(), HandlerError> {
        update.put(&self.pratiche, key, p).map_err(service::retry)
    }

    fn on_istanza(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let mut istanza: Istanza = service::read(inbound)?;
        let portale = inbound.sender().clone();
        let key = chiave(&portale, &istanza.pratica);
        if let Some(p) = self.pratiche.get(&key).map_err(service::retry)? {
            // Submitted before: the same protocol again.
            let answer = ProtocolloIstanza {
                pratica: istanza.pratica,
                protocollo: Some(p.protocollo.clone()),
                responsabile: Some(self.impostazioni.responsabile.clone()),
                motivi: Vec::new(),
                termine: p
                    .termine
                    .as_ref()
                    .map(Termine::ultimo_giorno)
                    .transpose()?
                    .flatten(),
            };
            effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
            return Ok(());
        }
        let mut motivi = Vec::new();
        if istanza.comune != self.impostazioni.comune {
            motivi.push(motivo(
                "comune-diverso",
                format!(
                    "this is the building office of comune {}, not of {}",
                    self.impostazioni.comune, istanza.comune
                ),
            ));
        }
        let allegati = match documenti::verifica(istanza.allegati.as_slice(), &istanza.contenuti) {
            Ok(a) => a,
            Err(m) => {
                motivi.extend(m);
                Vec::new()
            }
        };
        if !motivi.is_empty() {
            tracing::info!(practice = %key, reasons = %elenco_motivi(&motivi), "Submission refused.");
            let answer = ProtocolloIstanza {
                pratica: istanza.pratica,
                protocollo: None,
                responsabile: None,
                motivi,
                termine: None,
            };
            effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
            return Ok(());
        }
        istanza.contenuti.clear();
        let protocollo = self.protocollo()?;
        let il = istante(self.clock.now())?;
        let termine = match istanza.titolo {
            Titolo::PermessoDiCostruire => Some(Termine::nuovo(GIORNI_DECISIONE, protocollo.data)),
            Titolo::Scia => Some(Termine::nuovo(GIORNI_CONTROLLO_SCIA, protocollo.data)),
            Titolo::Cila => None,
        };
        let mut p = Pratica {
            portale,
            conversazione: inbound.envelope.header.conversation.clone(),
            istanza,
            protocollo: protocollo.clone(),
            stato: StatoIstanza::Presentata,
            storia: vec![(StatoIstanza::Presentata, il.clone())],
            termine: termine.clone(),
            richieste: Vec::new(),
            integrazioni: Vec::new(),
            provvedimento: None,
            silenzio_assenso: None,
            controllo: None,
        };
        p.passa(StatoIstanza::Protocollata, &il);
        let ultimo = termine
            .as_ref()
            .map(Termine::ultimo_giorno)
            .transpose()?
            .flatten();
        let answer = ProtocolloIstanza {
            pratica: p.istanza.pratica.clone(),
            protocollo: Some(protocollo.clone()),
            responsabile: Some(self.impostazioni.responsabile.clone()),
            motivi: Vec::new(),
            termine: ultimo,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        let nota = match (p.istanza.titolo, &ultimo) {
            (Titolo::PermessoDiCostruire, Some(u)) => format!(
                "Protocollo {}: istruttoria avviata, provvedimento entro il {u}.",
                protocollo.numero
            ),
            (Titolo::Scia, Some(u)) => format!(
                "Protocollo {}: SCIA efficace, i lavori possono iniziare; controllo entro il {u}.",
                protocollo.numero
            ),
            _ => format!(
                "Protocollo {}: CILA registrata, i lavori possono iniziare.",
                protocollo.numero
            ),
        };
        self.cambia(&mut p, StatoIstanza::Istruttoria, Some(nota), effects)?;
        if let Some(t) = &termine {
            let s = if p.istanza.titolo == Titolo::Scia {
                Scadenza::Controllo
            } else {
                Scadenza::Decisione
            };
            self.programma(&key, t, s, &mut effects.update)?;
        }
        for a in &allegati {
            self.conserva(&key, a, &mut effects.update)?;
        }
        self.calcola_oneri(&key, &p, effects)?;
        self.metti(&key, &p, &mut effects.update)?;
        tracing::info!(practice = %key, protocol = %protocollo.numero, title = ?p.istanza.titolo, "Submission protocolled.");
        Ok(())
    }

    fn conserva(&self, key: &str, a: &Allegato, update: &mut Update) -> Result<(), HandlerError> {
        update
            .put(
                &self.documenti,
                &format!("{key}/{}", a.documento.nome),
                &a.contenuto,
            )
            .map_err(service::retry)
    }

    /// Stages the deadline `s` of practice `key` at the end of term `t` (none while stopped).
    fn programma(
        &self,
        key: &str,
        t: &Termine,
        s: Scadenza,
        update: &mut Update,
    ) -> Result<(), HandlerError> {
        if let Some(due) = t.scade()? {
            let evento = Evento {
                pratica: key.to_owned(),
                scadenza: s,
            };
            self.agenda
                .schedule(update, due, &chiave_agenda(key, s), &evento)
                .map_err(service::retry)?;
        }
        Ok(())
    }

    /// Computes the fees of `p` on the rates in force and stages the request of their debt
    /// position to the provider; the notice goes to the portal once the provider answers.
    fn calcola_oneri(
        &self,
        key: &str,
        p: &Pratica,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let anno = u16::try_from(p.protocollo.data.date().year()).unwrap_or(u16::MAX);
        let Some(tariffe) = oneri::in_vigore(&self.impostazioni.tariffe, anno) else {
            tracing::warn!(practice = %key, anno, "No rates in force: fees not computed.");
            return Ok(());
        };
        let calcolo = oneri::calcola(p.istanza.titolo, &p.istanza.intervento, tariffe)
            .map_err(|e| HandlerError::Reject(e.to_string()))?;
        if calcolo.totale == snodo_schemas::formats::Importo::ZERO {
            return Ok(());
        }
        let iupd = format!(
            "EDI-{}-{}",
            self.impostazioni.comune,
            p.protocollo.numero.replace('/', "-")
        );
        let scadenza = dopo(
            giorno(self.clock.now())?,
            i64::from(self.impostazioni.giorni_pagamento),
        )?;
        let causale = format!(
            "Oneri {} pratica {} {}",
            match p.istanza.titolo {
                Titolo::PermessoDiCostruire => "permesso di costruire",
                Titolo::Scia => "SCIA",
                Titolo::Cila => "CILA",
            },
            p.protocollo.numero,
            self.impostazioni.denominazione
        );
        let trasferimento = Trasferimento {
            indice: 1,
            ente: self.impostazioni.codice_fiscale.clone(),
            iban: Iban(self.impostazioni.iban.clone()),
            importo: calcolo.totale,
            causale: causale.clone(),
            tassonomia: "9/0301109AP/".into(),
        };
        let req = PosizioneCrea {
            iupd: iupd.clone(),
            ente: self.impostazioni.codice_fiscale.clone(),
            debitore: Soggetto {
                codice_fiscale: p.istanza.richiedente.clone(),
                denominazione: p.istanza.richiedente.as_str().to_owned(),
                indirizzo: None,
                email: None,
            },
            importo: calcolo.totale,
            scadenza,
            validita: None,
            causale,
            trasferimenti: Elenco::new(vec![trasferimento])
                .ok_or_else(|| HandlerError::Reject("a position needs a transfer".into()))?,
            rate: None,
        };
        effects.send(
            typed::message(
                self.sender.client(),
                &self.impostazioni.nodo,
                Profile::Request,
                Some(&iupd),
                None,
                &req,
            )
            .map_err(HandlerError::Reject)?,
        );
        effects
            .update
            .put(&self.posizioni, &iupd, &key.to_owned())
            .map_err(service::retry)?;
        let o = OneriPratica {
            calcolo,
            iupd,
            scadenza,
            nav: None,
            pagato_il: None,
        };
        effects
            .update
            .put(&self.oneri, key, &o)
            .map_err(service::retry)
    }

    /// The practice whose debt position is `iupd`, with its key and its fees.
    fn della_posizione(&self, iupd: &str) -> Result<(String, Pratica, OneriPratica), HandlerError> {
        let key = self
            .posizioni
            .get(iupd)
            .map_err(service::retry)?
            .ok_or_else(|| {
                HandlerError::Decline(format!(
                    "position {iupd} is not one of the building office's"
                ))
            })?;
        let p = self
            .pratiche
            .get(&key)
            .map_err(service::retry)?
            .ok_or_else(|| HandlerError::Retry(format!("practice {key} not stored yet")))?;
        let o = self
            .oneri
            .get(&key)
            .map_err(service::retry)?
            .ok_or_else(|| HandlerError::Retry(format!("the fees of {key} not stored yet")))?;
        Ok((key, p, o))
    }

    fn on_creata(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let c: PosizioneCreata = service::read(inbound)?;
        let (key, p, mut o) = self.della_posizione(&c.iupd)?;
        self.da_nodo(inbound)?;
        if o.nav.is_some() {
            return Ok(());
        }
        o.nav = Some(c.nav.clone());
        let msg = Oneri {
            pratica: p.istanza.pratica.clone(),
            urbanizzazione_primaria: o.calcolo.urbanizzazione_primaria,
            urbanizzazione_secondaria: o.calcolo.urbanizzazione_secondaria,
            costo_costruzione: o.calcolo.costo_costruzione,
            diritti_segreteria: o.calcolo.diritti_segreteria,
            totale: o.calcolo.totale,
            ente: self.impostazioni.codice_fiscale.clone(),
            nav: c.nav.clone(),
            scadenza: o.scadenza,
        };
        effects.send(self.messaggio(&p, &msg)?);
        effects
            .update
            .put(&self.oneri, &key, &o)
            .map_err(service::retry)?;
        tracing::info!(practice = %key, nav = %c.nav, "Fees notified.");
        Ok(())
    }

    fn da_nodo(&self, inbound: &Inbound) -> Result<(), HandlerError> {
        if inbound.sender() == &self.impostazioni.nodo {
            Ok(())
        } else {
            Err(HandlerError::Reject(format!(
                "{} is not the payment provider",
                inbound.sender()
            )))
        }
    }

    fn on_ricevuta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        let (key, mut p, mut o) = self.della_posizione(&r.iupd)?;
        self.da_nodo(inbound)?;
        if o.pagato_il.is_some() {
            return Ok(());
        }
        o.pagato_il = Some(r.pagato_il.clone());
        effects
            .update
            .put(&self.oneri, &key, &o)
            .map_err(service::retry)?;
        // The same state, with a note: the practice's record is not written.
        let nota = format!("Oneri versati: {} (ricevuta {}).", r.importo, r.id);
        let stato = p.stato;
        self.cambia(&mut p, stato, Some(nota), effects)?;
        tracing::info!(practice = %key, receipt = %r.id, "Fees paid.");
        Ok(())
    }

    /// Takes integrations: their attached contents are checked (a mismatch is told to the
    /// portal and nothing else happens) and kept, and the integrations wait in `arrivi` for
    /// the office's task, which applies them to the practice in turn with the officials'
    /// operations and the terms (only that task changes a practice once it exists).
    fn on_integrazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let mut i: Integrazione = service::read(inbound)?;
        let key = chiave(inbound.sender(), &i.pratica);
        let Some(mut p) = self.pratiche.get(&key).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!("no practice {key}")));
        };
        let allegati = match documenti::verifica(i.allegati.as_slice(), &i.contenuti) {
            Ok(a) => a,
            Err(motivi) => {
                // Told with the practice's state, which is not written here.
                let nota = format!("Integrazione respinta: {}", elenco_motivi(&motivi));
                let stato = p.stato;
                self.cambia(&mut p, stato, Some(nota), effects)?;
                return Ok(());
            }
        };
        for a in &allegati {
            self.conserva(&key, a, &mut effects.update)?;
        }
        i.contenuti.clear();
        let arrivo = Arrivo {
            pratica: key.clone(),
            integrazione: i,
            il: giorno(self.clock.now())?,
        };
        effects
            .update
            .put(&self.arrivi, &format!("{key}/{}", inbound.id()), &arrivo)
            .map_err(service::retry)?;
        tracing::info!(practice = %key, "Integrations received.");
        Ok(())
    }

    /// Wakes the task that applies integrations (once they are durable).
    fn arrivate(&self) {
        self.arrivato.notify_one();
    }

    /// Applies every integration received, in turn with the officials' operations and the
    /// terms. Returns the keys of the practices concerned.
    ///
    /// # Errors
    /// A message when the store or the hub fails (the integrations wait and are taken again).
    pub async fn integrazioni(&self) -> Result<Vec<String>, String> {
        let _lavoro = self.lavori.lock().await;
        self.applica_arrivi().await
    }

    /// [`Sportello::integrazioni`], the caller holding `lavori`.
    async fn applica_arrivi(&self) -> Result<Vec<String>, String> {
        let mut fatte = Vec::new();
        for (k, a) in self.arrivi.scan("").map_err(|e| e.to_string())? {
            let mut effects = Effects::default();
            effects.update.remove(&self.arrivi, &k);
            if let Some(p) = self.pratiche.get(&a.pratica).map_err(|e| e.to_string())? {
                match self.integra(&a, p, &mut effects) {
                    Ok(()) => {}
                    Err(HandlerError::Reject(e)) => {
                        tracing::error!(practice = %a.pratica, error = %e, "Integrations cannot be applied; dropped.");
                        effects = Effects::default();
                        effects.update.remove(&self.arrivi, &k);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            self.sender.commit(effects).await?;
            self.agenda.wake();
            fatte.push(a.pratica);
        }
        Ok(fatte)
    }

    /// Stages integrations `a` on practice `p`: the term restarts from the day they came if
    /// their request interrupted it, and the examination goes on.
    fn integra(
        &self,
        a: &Arrivo,
        mut p: Pratica,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let key = &a.pratica;
        if p.stato != StatoIstanza::Integrazione {
            let nota = format!(
                "Integrazioni del {} non prese: la pratica non le attende.",
                a.il
            );
            let stato = p.stato;
            tracing::info!(practice = %key, state = ?stato, "Integrations not awaited.");
            return self.cambia(&mut p, stato, Some(nota), effects);
        }
        p.integrazioni
            .extend(a.integrazione.allegati.iter().cloned());
        self.agenda
            .cancel(
                &mut effects.update,
                &chiave_agenda(key, Scadenza::Integrazione),
            )
            .map_err(service::retry)?;
        let mut nota = "Integrazioni ricevute.".to_owned();
        if let Some(t) = p.termine.as_mut() {
            let fermo = t.fermo;
            t.integrazione(a.il);
            let t = t.clone();
            if fermo {
                self.programma(key, &t, Scadenza::Decisione, &mut effects.update)?;
                if let Some(u) = t.ultimo_giorno()? {
                    nota = format!(
                        "Integrazioni ricevute: il termine riparte, provvedimento entro il {u}."
                    );
                }
            }
        }
        self.cambia(&mut p, StatoIstanza::Istruttoria, Some(nota), effects)?;
        self.metti(key, &p, &mut effects.update)?;
        tracing::info!(practice = %key, "Integrations applied.");
        Ok(())
    }

    /// The practice `chiave`, for an official's operation.
    fn da_lavorare(&self, chiave: &str) -> Result<Pratica, ErroreSportello> {
        self.pratiche
            .get(chiave)
            .map_err(sistema)?
            .ok_or_else(|| ErroreSportello::Sconosciuta(chiave.to_owned()))
    }

    async fn applica(&self, effects: Effects) -> Result<(), ErroreSportello> {
        self.sender.commit(effects).await.map_err(sistema)?;
        self.agenda.wake();
        Ok(())
    }

    /// Asks the applicant of permit `chiave` for integrations (`richieste`), to come within
    /// the office's days. The first request interrupts the term of the decision (true); a later
    /// one does not (false).
    ///
    /// # Errors
    /// [`ErroreSportello::NonAmmessa`] for a SCIA or a CILA, or a permit not under examination;
    /// [`ErroreSportello::Sistema`] when the store or the hub fails.
    pub async fn richiedi_integrazioni(
        &self,
        chiave: &str,
        richieste: Vec<String>,
    ) -> Result<bool, ErroreSportello> {
        let _lavoro = self.lavori.lock().await;
        let mut p = self.da_lavorare(chiave)?;
        if p.istanza.titolo != Titolo::PermessoDiCostruire || p.stato != StatoIstanza::Istruttoria {
            return Err(ErroreSportello::NonAmmessa(format!(
                "integrations are asked for a permit under examination; {chiave} is a {:?} {:?}",
                p.istanza.titolo, p.stato
            )));
        }
        let richieste = Elenco::new(richieste).ok_or_else(|| {
            ErroreSportello::NonAmmessa("a request asks for 1 to 50 integrations".into())
        })?;
        let oggi = giorno(self.clock.now()).map_err(sistema)?;
        let entro =
            dopo(oggi, i64::from(self.impostazioni.giorni_integrazione)).map_err(sistema)?;
        let msg = RichiestaIntegrazione {
            pratica: p.istanza.pratica.clone(),
            richieste,
            termine: entro,
        };
        let mut effects = Effects::default();
        let interrompe = p
            .termine
            .as_mut()
            .is_some_and(Termine::richiesta_integrazione);
        if interrompe {
            self.agenda
                .cancel(
                    &mut effects.update,
                    &chiave_agenda(chiave, Scadenza::Decisione),
                )
                .map_err(sistema)?;
        }
        let risposta = Evento {
            pratica: chiave.to_owned(),
            scadenza: Scadenza::Integrazione,
        };
        self.agenda
            .schedule(
                &mut effects.update,
                mezzanotte(dopo(entro, 1).map_err(sistema)?),
                &chiave_agenda(chiave, Scadenza::Integrazione),
                &risposta,
            )
            .map_err(sistema)?;
        effects.send(self.messaggio(&p, &msg).map_err(sistema)?);
        p.richieste.push(msg);
        let nota = if interrompe {
            format!(
                "Richiesta di integrazioni: il termine è interrotto; rispondere entro il {entro}."
            )
        } else {
            format!(
                "Nuova richiesta di integrazioni: il termine non si interrompe; rispondere entro il {entro}."
            )
        };
        self.cambia(&mut p, StatoIstanza::Integrazione, Some(nota), &mut effects)
            .map_err(sistema)?;
        self.metti(chiave, &p, &mut effects.update)
            .map_err(sistema)?;
        self.applica(effects).await?;
        tracing::info!(practice = %chiave, interrupts = interrompe, "Integrations asked for.");
        Ok(interrompe)
    }

    /// Decides permit `chiave`: granted (only once its fees are paid), denied (with its
    /// reasons) or archived. Returns the decision sent to the portal.
    ///
    /// # Errors
    /// [`ErroreSportello::NonAmmessa`] for a SCIA or a CILA, a practice already concluded, a
    /// grant with fees unpaid, a denial without reasons; [`ErroreSportello::Sistema`].
    pub async fn decidi(
        &self,
        chiave: &str,
        esito: EsitoProvvedimento,
        motivi: Vec<Motivo>,
        prescrizioni: Vec<String>,
    ) -> Result<Provvedimento, ErroreSportello> {
        let _lavoro = self.lavori.lock().await;
        let p = self.da_lavorare(chiave)?;
        if p.istanza.titolo != Titolo::PermessoDiCostruire || p.conclusa() {
            return Err(ErroreSportello::NonAmmessa(format!(
                "only a permit not yet concluded is decided; {chiave} is a {:?} {:?}",
                p.istanza.titolo, p.stato
            )));
        }
        if esito == EsitoProvvedimento::Rilasciato
            && self
                .oneri
                .get(chiave)
                .map_err(sistema)?
                .is_some_and(|o| o.pagato_il.is_none())
        {
            return Err(ErroreSportello::NonAmmessa(format!(
                "the fees of {chiave} are not paid: the permit is granted once they are"
            )));
        }
        if esito == EsitoProvvedimento::Negato && motivi.is_empty() {
            return Err(ErroreSportello::NonAmmessa(
                "a denial states its reasons".into(),
            ));
        }
        let mut effects = Effects::default();
        let prov = self
            .provvedimento(chiave, p, esito, motivi, prescrizioni, None, &mut effects)
            .map_err(sistema)?;
        self.applica(effects).await?;
        Ok(prov)
    }

    /// Stages decision `esito` on `p`: its protocol, the end of its terms, its state.
    #[allow(clippy::too_many_arguments)]
    fn provvedimento(
        &self,
        chiave: &str,
        mut p: Pratica,
        esito: EsitoProvvedimento,
        motivi: Vec<Motivo>,
        prescrizioni: Vec<String>,
        silenzio: Option<Data>,
        effects: &mut Effects,
    ) -> Result<Provvedimento, HandlerError> {
        let prov = Provvedimento {
            pratica: p.istanza.pratica.clone(),
            esito,
            protocollo: self.protocollo()?,
            motivi,
            prescrizioni,
        };
        for s in [
            Scadenza::Decisione,
            Scadenza::Controllo,
            Scadenza::Integrazione,
        ] {
            self.agenda
                .cancel(&mut effects.update, &chiave_agenda(chiave, s))
                .map_err(service::retry)?;
        }
        let (stato, nota) = match (esito, &silenzio) {
            (EsitoProvvedimento::Rilasciato, Some(d)) => (
                StatoIstanza::Rilasciata,
                format!("Permesso formato per silenzio-assenso il {d}."),
            ),
            (EsitoProvvedimento::Rilasciato, None) => (
                StatoIstanza::Rilasciata,
                format!(
                    "Permesso rilasciato, provvedimento {}.",
                    prov.protocollo.numero
                ),
            ),
            (EsitoProvvedimento::Negato, _) => (
                StatoIstanza::Negata,
                format!("Permesso negato: {}", elenco_motivi(&prov.motivi)),
            ),
            (EsitoProvvedimento::Archiviato, _) => (
                StatoIstanza::Archiviata,
                format!("Pratica archiviata: {}", elenco_motivi(&prov.motivi)),
            ),
        };
        effects.send(self.messaggio(&p, &prov)?);
        p.provvedimento = Some(prov.clone());
        p.silenzio_assenso = silenzio;
        self.cambia(&mut p, stato, Some(nota), effects)?;
        self.metti(chiave, &p, &mut effects.update)?;
        tracing::info!(practice = %chiave, outcome = ?esito, protocol = %prov.protocollo.numero, "Decision taken.");
        Ok(prov)
    }

    /// Checks SCIA `chiave` within its 30 days: in order (it stands), to be brought into
    /// conformity (with what, it stays under examination) or works must stop (with why).
    ///
    /// # Errors
    /// [`ErroreSportello::NonAmmessa`] for another title, a SCIA already checked or past its
    /// term, a check but in order without reasons; [`ErroreSportello::Sistema`].
    pub async fn controlla_scia(
        &self,
        chiave: &str,
        esito: EsitoControllo,
        motivi: Vec<Motivo>,
    ) -> Result<ControlloScia, ErroreSportello> {
        let _lavoro = self.lavori.lock().await;
        let mut p = self.da_lavorare(chiave)?;
        if p.istanza.titolo != Titolo::Scia || p.conclusa() || p.controllo.is_some() {
            return Err(ErroreSportello::NonAmmessa(format!(
                "only a SCIA not yet checked is checked; {chiave} is a {:?} {:?}",
                p.istanza.titolo, p.stato
            )));
        }
        let ultimo = p
            .termine
            .as_ref()
            .map(Termine::ultimo_giorno)
            .transpose()
            .map_err(sistema)?
            .flatten();
        let oggi = giorno(self.clock.now()).map_err(sistema)?;
        if let Some(u) = ultimo
            && oggi > u
        {
            return Err(ErroreSportello::NonAmmessa(format!(
                "the 30 days to check {chiave} ended on {u}"
            )));
        }
        if esito != EsitoControllo::Regolare && motivi.is_empty() {
            return Err(ErroreSportello::NonAmmessa(
                "an order to conform or to stop states its reasons".into(),
            ));
        }
        let msg = ControlloScia {
            pratica: p.istanza.pratica.clone(),
            esito,
            motivi,
        };
        let mut effects = Effects::default();
        self.agenda
            .cancel(
                &mut effects.update,
                &chiave_agenda(chiave, Scadenza::Controllo),
            )
            .map_err(sistema)?;
        effects.send(self.messaggio(&p, &msg).map_err(sistema)?);
        p.controllo = Some(msg.clone());
        let (stato, nota) = match esito {
            EsitoControllo::Regolare => (
                StatoIstanza::Rilasciata,
                "Controllo della SCIA: regolare.".to_owned(),
            ),
            EsitoControllo::Conformazione => (
                StatoIstanza::Istruttoria,
                format!(
                    "Controllo della SCIA: conformare i lavori: {}",
                    elenco_motivi(&msg.motivi)
                ),
            ),
            EsitoControllo::Divieto => (
                StatoIstanza::Negata,
                format!(
                    "Controllo della SCIA: divieto di prosecuzione dei lavori: {}",
                    elenco_motivi(&msg.motivi)
                ),
            ),
        };
        self.cambia(&mut p, stato, Some(nota), &mut effects)
            .map_err(sistema)?;
        self.metti(chiave, &p, &mut effects.update)
            .map_err(sistema)?;
        self.applica(effects).await?;
        tracing::info!(practice = %chiave, outcome = ?esito, "SCIA checked.");
        Ok(msg)
    }

    /// Applies every term due by now: silence assents to a permit outside constrained areas
    /// (and only notes the term passed inside one), an unchecked SCIA stands, unanswered
    /// integrations archive the practice. Returns the keys of the practices concerned.
    ///
    /// # Errors
    /// A message when the store or the hub fails (the terms stay due and are taken again).
    pub async fn scadenze(&self) -> Result<Vec<String>, String> {
        let _lavoro = self.lavori.lock().await;
        // Integrations that came before the terms are taken first.
        self.applica_arrivi().await?;
        let due = self
            .agenda
            .due(self.clock.now())
            .map_err(|e| e.to_string())?;
        let mut fatte = Vec::new();
        let mut errori = Vec::new();
        for d in due {
            let mut effects = Effects::default();
            self.agenda
                .cancel(&mut effects.update, &d.key)
                .map_err(|e| e.to_string())?;
            let applicata = match self.pratiche.get(&d.value.pratica) {
                Err(e) => Err(HandlerError::Retry(e.to_string())),
                Ok(Some(p)) if !p.conclusa() => self.scaduta(&d.value, p, &mut effects),
                Ok(_) => Ok(()),
            };
            match applicata {
                Ok(()) => {}
                // Never applicable (a defect, a date past the calendar): dropped, said loudly.
                Err(HandlerError::Reject(e)) => {
                    tracing::error!(term = %d.key, error = %e, "Term cannot be applied; dropped.");
                    effects = Effects::default();
                    self.agenda
                        .cancel(&mut effects.update, &d.key)
                        .map_err(|e| e.to_string())?;
                }
                // Taken again on the next pass; the others go on.
                Err(e) => {
                    errori.push(format!("{}: {e}", d.key));
                    continue;
                }
            }
            self.sender.commit(effects).await?;
            fatte.push(d.value.pratica.clone());
        }
        if errori.is_empty() {
            Ok(fatte)
        } else {
            Err(errori.join("; "))
        }
    }

    /// Stages what term `e` of practice `p` does now that it passed.
    fn scaduta(
        &self,
        e: &Evento,
        mut p: Pratica,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let key = &e.pratica;
        let ultimo = p
            .termine
            .as_ref()
            .map(Termine::ultimo_giorno)
            .transpose()?
            .flatten();
        match e.scadenza {
            Scadenza::Decisione if p.istanza.area_vincolata => {
                let nota = format!(
                    "Termine del provvedimento scaduto{}: l'area è vincolata, il silenzio non vale assenso; si attende il provvedimento espresso.",
                    ultimo.map(|u| format!(" il {u}")).unwrap_or_default()
                );
                let stato = p.stato;
                self.cambia(&mut p, stato, Some(nota), effects)?;
                self.metti(key, &p, &mut effects.update)?;
                tracing::info!(practice = %key, "Term passed in a constrained area: no silence-assent.");
            }
            Scadenza::Decisione => {
                let il = giorno(self.clock.now())?;
                let mut prescrizioni = vec![format!(
                    "Assenso formato per silenzio: nessun provvedimento entro il termine{}.",
                    ultimo.map(|u| format!(" del {u}")).unwrap_or_default()
                )];
                let oneri = self.oneri.get(key).map_err(service::retry)?;
                if let Some(o) = oneri.filter(|o| o.pagato_il.is_none()) {
                    prescrizioni.push(format!(
                        "Restano dovuti gli oneri di {}{}.",
                        o.calcolo.totale,
                        o.nav
                            .as_ref()
                            .map(|n| format!(" (avviso {n})"))
                            .unwrap_or_default()
                    ));
                }
                self.provvedimento(
                    key,
                    p,
                    EsitoProvvedimento::Rilasciato,
                    Vec::new(),
                    prescrizioni,
                    Some(il),
                    effects,
                )?;
            }
            Scadenza::Controllo => {
                let nota = "Nessun provvedimento nei 30 giorni: la SCIA è consolidata.".to_owned();
                self.cambia(&mut p, StatoIstanza::Rilasciata, Some(nota), effects)?;
                self.metti(key, &p, &mut effects.update)?;
                tracing::info!(practice = %key, "SCIA unchecked in 30 days: it stands.");
            }
            Scadenza::Integrazione if p.stato == StatoIstanza::Integrazione => {
                let entro = p.richieste.last().map(|r| r.termine);
                self.provvedimento(
                    key,
                    p,
                    EsitoProvvedimento::Archiviato,
                    vec![motivo(
                        "integrazioni-mancanti",
                        format!(
                            "le integrazioni richieste non sono pervenute{}",
                            entro.map(|d| format!(" entro il {d}")).unwrap_or_default()
                        ),
                    )],
                    Vec::new(),
                    None,
                    effects,
                )?;
            }
            Scadenza::Integrazione => {}
        }
        Ok(())
    }

    /// Applies integrations as they arrive and terms as they fall due, on the clock, until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        // Integrations left waiting by a stop.
        self.arrivato.notify_one();
        loop {
            let fatto = tokio::select! {
                due = self.agenda.next_due(self.clock.as_ref(), shutdown.clone()) => match due {
                    Ok(None) => break,
                    Ok(Some(_)) => self.scadenze().await.map(|_| ()),
                    Err(e) => Err(format!("cannot read the agenda of terms: {e}")),
                },
                () = self.arrivato.notified() => self.integrazioni().await.map(|_| ()),
            };
            if let Err(e) = fatto {
                tracing::warn!(error = %e, "Integrations or terms not applied yet.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = crate::shutdown::stopped(shutdown.clone()) => break,
                }
                self.arrivato.notify_one();
            }
        }
    }
}

/// `snodo-connector`'s entry: the building office with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]), and its task applying the terms.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let s = Sportello::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        impostazioni,
    )?;
    let task = tokio::spawn(s.clone().run(ctx.shutdown.clone()));
    Ok((s.install(builder), vec![task]))
}
