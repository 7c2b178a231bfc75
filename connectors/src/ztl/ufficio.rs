//! The comune's ZTL office (`mobilita.ztl`), a back office role of a comune entity: it takes
//! applications for permits and renewals, checks residence with ANPR, vehicles with the motor
//! registry and the fee with the payment provider, asks for more information, and decides
//! within 30 days on the clock; permits expire on schedule and can be revoked.
//!
//! Handlers only record what others answer and put a term "look again now" on the agenda;
//! the office's own acts (examining, deciding, expiring, revoking) run one at a time in its
//! term loop, so that no answer is lost to an act under way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::EntityId;
use snodo_schemas::formats::TipoSoggetto;
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Elenco, Importo};
use snodo_schemas::services::dati::{Motivo, Protocollo, Soggetto};
use snodo_schemas::services::mobilita_ztl::{
    Categoria, Domanda, DomandaRicevuta, Integrazione, RichiestaIntegrazione, Rigetto, Rilascio,
    Stato, StatoPermesso, TipoDomanda, VerificaResidenza, VerificaResidenzaEsito, VerificaVeicolo,
    VerificaVeicoloEsito,
};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneAnnulla, PosizioneCrea, PosizioneCreata, Ricevuta, Trasferimento,
};
use time::OffsetDateTime;

use super::esame::{self, Attese, Esame};
use super::pratica::{Esito, Passo, Permesso, Pratica};
use super::scadenze::{self, GIORNI_MASSIMI};
use crate::agenda::{Agenda, Deadline};
use crate::back_office::{dopo, elenco_motivi, giorno, istante, mezzanotte, motivo};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::mail::{Mail, MailConfig, Mailer};
use crate::service::{self, Committer, Invio, Outcome, ServiceError, retry};
use crate::shutdown::{Shutdown, stopped};
use crate::store::{StoreError, Tree};
use crate::typed::{self, Answers, Route};

/// The days within which the office answers an application.
pub const GIORNI_DECISIONE: i64 = 30;
/// The days the applicant has to bring what was asked for (never past the decision's term).
pub const GIORNI_INTEGRAZIONE: i64 = 15;
/// How many days before its expiry a permit can be renewed.
pub const GIORNI_RINNOVO: i64 = 90;

/// A sector of the zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settore {
    /// Its code, as applications name it (`A`, `centro`).
    pub codice: String,
    /// Its streets, where its residents live; none: residents anywhere in the comune.
    #[serde(default)]
    pub vie: Vec<String>,
}

/// What the comune deliberated for one category of permit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegolaCategoria {
    /// The category; a category without a rule is not issued.
    pub categoria: Categoria,
    /// The fee, in cents (0: free).
    #[schemars(with = "u64")]
    pub tariffa: Importo,
    /// The documents it needs, by kind (`contrassegno disabili`); compared without regard to
    /// case and spacing with the kind of each document brought.
    #[serde(default)]
    pub documenti: Vec<String>,
    /// The longest permit, in days (residents' run to 31 December of the second year
    /// whatever this says); two years when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub giorni_massimi: Option<u32>,
}

/// The ZTL office's settings (`[adapter.data]` of `snodo-connector`).
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
    #[serde(default = "default_nodo")]
    pub nodo: EntityId,
    /// The population registry, asked about residence.
    #[serde(default = "default_anpr")]
    pub anpr: EntityId,
    /// The motor registry, asked about vehicles.
    #[serde(default = "default_motorizzazione")]
    pub motorizzazione: EntityId,
    /// The sectors of the zone.
    pub settori: Vec<Settore>,
    /// The categories issued, with their fees and documents.
    pub categorie: Vec<RegolaCategoria>,
    /// How requests for more information are mailed to applicants; without it, only logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posta: Option<MailConfig>,
}

fn entity(s: &str) -> EntityId {
    s.parse()
        .unwrap_or_else(|e| unreachable!("{s} is a valid entity id: {e}"))
}

fn default_nodo() -> EntityId {
    entity("pagopa:nodo")
}

fn default_anpr() -> EntityId {
    entity("anpr:ministero")
}

fn default_motorizzazione() -> EntityId {
    entity("mctc:motorizzazione")
}

/// What a term of the office's agenda is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termine {
    /// An answer came about application `pratica` (its protocol number): examine it again.
    Valuta {
        /// The application.
        pratica: String,
    },
    /// The last day of application `pratica`: decide, whatever is still awaited.
    Decisione {
        /// The application.
        pratica: String,
    },
    /// Permit `permesso` has reached its expiry.
    Scadenza {
        /// The permit.
        permesso: String,
    },
}

/// A mail to an applicant waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posta {
    /// To whom.
    pub a: String,
    /// Subject.
    pub oggetto: String,
    /// Body.
    pub testo: String,
}

/// The comune's ZTL office.
pub struct Ufficio {
    /// Commits the office's acts with what they send.
    committer: Committer,
    /// The clock terms run on.
    clock: SharedClock,
    /// Its settings.
    impostazioni: Impostazioni,
    /// Sends requests for more information to applicants.
    mailer: Option<Mailer>,
    /// Applications by protocol number.
    pratiche: Tree<Pratica>,
    /// `portal/pratica` → protocol number: the portal's ids of applications.
    domande: Tree<String>,
    /// What others answered, `PROTOCOL/residenza`, `PROTOCOL/veicolo/PLATE`,
    /// `PROTOCOL/integrazione/ENVELOPE`, `PROTOCOL/posizione`, `PROTOCOL/pagamento`.
    esiti: Tree<Esito>,
    /// Permits by number.
    permessi: Tree<Permesso>,
    /// IUPD of a fee → protocol number.
    posizioni: Tree<String>,
    /// Counters: `protocollo/YEAR`, `permesso/YEAR`.
    contatori: Tree<u64>,
    /// Mail to send, by a key unique to its cause.
    posta: Tree<Posta>,
    /// The payment provider's answers to cancellations, by request id.
    risposte: Tree<Value>,
    /// Terms: examinations due, decisions' last days, expiries.
    termini: Agenda<Termine>,
    /// Serialises the office's own acts (terms, revocations).
    atti: tokio::sync::Mutex<()>,
    /// Woken when mail may be waiting.
    posta_pronta: tokio::sync::Notify,
}

impl std::fmt::Debug for Ufficio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ufficio")
            .field("comune", &self.impostazioni.comune)
            .finish_non_exhaustive()
    }
}

fn elenco<T>(items: Vec<T>, what: &str) -> Result<Elenco<T, 1, 20>, ServiceError> {
    Elenco::new(items).ok_or_else(|| ServiceError::Message(format!("{what}: 1 to 20 of them")))
}

/// A helper's refusal (a clock or a day past the calendar) inside the office's own acts.
fn atto_err(e: HandlerError) -> ServiceError {
    ServiceError::Refused(e.to_string())
}

fn entita(s: &str) -> Result<EntityId, ServiceError> {
    s.parse()
        .map_err(|e| ServiceError::Refused(format!("{s}: {e}")))
}

impl Ufficio {
    /// The ZTL office acting as `committer`'s entity, with `impostazioni`, on `clock`.
    ///
    /// # Errors
    /// A message naming what is wrong: the mail settings, the store.
    pub fn new(
        committer: Committer,
        impostazioni: Impostazioni,
        clock: SharedClock,
    ) -> Result<Arc<Self>, String> {
        let mailer = match &impostazioni.posta {
            Some(c) => Some(Mailer::new(c).map_err(|e| format!("adapter.data.posta: {e}"))?),
            None => None,
        };
        let store = committer.store().clone();
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Ufficio {
            pratiche: store.tree("ztl.pratiche").map_err(s)?,
            domande: store.tree("ztl.domande").map_err(s)?,
            esiti: store.tree("ztl.esiti").map_err(s)?,
            permessi: store.tree("ztl.permessi").map_err(s)?,
            posizioni: store.tree("ztl.posizioni").map_err(s)?,
            contatori: store.tree("ztl.contatori").map_err(s)?,
            posta: store.tree("ztl.posta").map_err(s)?,
            risposte: store.tree("ztl.risposte").map_err(s)?,
            termini: Agenda::open(&store, "ztl.termini").map_err(s)?,
            atti: tokio::sync::Mutex::new(()),
            posta_pronta: tokio::sync::Notify::new(),
            committer,
            clock,
            impostazioni,
            mailer,
        }))
    }

    /// Routes the portal's, the registries' and the payment provider's messages to this
    /// office.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let answers = Answers::handler(self.risposte.clone());
        let s = super::SERVICE;
        builder
            .route(
                s,
                "domanda",
                Route::handler_then(self, Ufficio::on_domanda, Ufficio::svegli),
            )
            .route(
                s,
                "verifica-residenza-esito",
                Route::handler_then(self, Ufficio::on_residenza, Ufficio::svegli),
            )
            .route(
                s,
                "verifica-veicolo-esito",
                Route::handler_then(self, Ufficio::on_veicolo, Ufficio::svegli),
            )
            .route(
                s,
                "integrazione",
                Route::handler_then(self, Ufficio::on_integrazione, Ufficio::svegli),
            )
            .route(
                "pagamenti",
                "posizione-creata",
                Route::handler(self, Ufficio::on_creata),
            )
            .route(
                "pagamenti",
                "ricevuta",
                Route::handler_then(self, Ufficio::on_ricevuta, Ufficio::svegli),
            )
            .route("pagamenti", "posizione-esito", answers.clone())
            .route("pagamenti", "posizione-stato", answers)
    }

    /// Runs the office's terms and its mail until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: &Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let terms = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.run_terms(shutdown).await })
        };
        let mail = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.run_mail(shutdown).await })
        };
        vec![terms, mail]
    }

    /// Tells the term loop that the agenda changed.
    fn svegli(&self) {
        self.termini.wake();
    }

    /// The application with protocol number `numero`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica(&self, numero: &str) -> Result<Option<Pratica>, StoreError> {
        self.pratiche.get(numero)
    }

    /// The application `pratica` of `portale`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica_di(&self, portale: &str, pratica: &str) -> Result<Option<Pratica>, StoreError> {
        match self.domande.get(&format!("{portale}/{pratica}"))? {
            Some(n) => self.pratiche.get(&n),
            None => Ok(None),
        }
    }

    /// The permit `numero`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn permesso(&self, numero: &str) -> Result<Option<Permesso>, StoreError> {
        self.permessi.get(numero)
    }

    /// The rule of `categoria`, if the comune issues it.
    #[must_use]
    pub fn regola(&self, categoria: Categoria) -> Option<&RegolaCategoria> {
        self.impostazioni
            .categorie
            .iter()
            .find(|r| r.categoria == categoria)
    }

    /// The next number of counter `key`, taken at once (compare-and-swap): a crash before
    /// the commit leaves a gap, never a duplicate.
    fn next(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .contatori
            .update(key, |n| Some(n.unwrap_or(0) + 1))?
            .unwrap_or(1))
    }

    fn ora(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The streets of `settori`, where residents asking for them must live; empty when any
    /// of them lists none.
    fn vie(&self, settori: &[String]) -> Vec<String> {
        let mut vie = Vec::new();
        for s in settori {
            match self.impostazioni.settori.iter().find(|x| x.codice == *s) {
                Some(x) if x.vie.is_empty() => return Vec::new(),
                Some(x) => vie.extend(x.vie.iter().cloned()),
                None => {}
            }
        }
        vie
    }

    /// What is wrong with application `d` on its face, on day `oggi`: each a reason to reject
    /// it at once.
    fn controlla(&self, d: &Domanda, oggi: time::Date) -> Result<Vec<Motivo>, HandlerError> {
        let mut motivi = Vec::new();
        if d.comune != self.impostazioni.comune {
            motivi.push(motivo(
                "comune-diverso",
                format!(
                    "this is the ZTL office of comune {}, not of {}",
                    self.impostazioni.comune, d.comune
                ),
            ));
        }
        let Some(regola) = self.regola(d.categoria) else {
            motivi.push(motivo(
                "categoria-non-prevista",
                format!("the comune issues no {:?} permits", d.categoria),
            ));
            return Ok(motivi);
        };
        for s in d.settori.iter() {
            if !self.impostazioni.settori.iter().any(|x| x.codice == *s) {
                motivi.push(motivo(
                    "settore-sconosciuto",
                    format!("the zone has no sector {s}"),
                ));
            }
        }
        if esame::residenza_richiesta(d.categoria) && d.richiedente.tipo() != TipoSoggetto::Persona
        {
            motivi.push(motivo(
                "richiedente-non-persona",
                format!(
                    "{} is not a person's codice fiscale",
                    d.richiedente.as_str()
                ),
            ));
        }
        let mut precedente = None;
        if d.tipo == TipoDomanda::Rinnovo {
            match self.rinnovabile(d, oggi)? {
                Ok(p) => precedente = Some(p.al.date()),
                Err(m) => motivi.push(m),
            }
        }
        if let Err(e) = scadenze::validita(
            d.categoria,
            &d.periodo,
            oggi,
            precedente,
            regola.giorni_massimi.unwrap_or(GIORNI_MASSIMI),
        ) {
            motivi.push(e.motivo());
        }
        Ok(motivi)
    }

    /// The permit renewal `d` continues, or why it cannot be renewed on `oggi`.
    fn rinnovabile(
        &self,
        d: &Domanda,
        oggi: time::Date,
    ) -> Result<Result<Permesso, Motivo>, HandlerError> {
        let Some(numero) = &d.permesso_precedente else {
            return Ok(Err(motivo(
                "permesso-mancante",
                "a renewal names the permit it renews",
            )));
        };
        let Some(p) = self.permessi.get(numero).map_err(retry)? else {
            return Ok(Err(motivo(
                "permesso-sconosciuto",
                format!("the office never issued permit {numero}"),
            )));
        };
        if p.richiedente != d.richiedente || p.categoria != d.categoria {
            return Ok(Err(motivo(
                "permesso-diverso",
                format!(
                    "permit {numero} is a {:?} permit of {}",
                    p.categoria,
                    p.richiedente.as_str()
                ),
            )));
        }
        if p.stato != StatoPermesso::Rilasciato || p.al.date() < oggi {
            return Ok(Err(motivo(
                "permesso-non-rinnovabile",
                format!(
                    "permit {numero} is {:?} since {}: apply for a new one",
                    p.stato, p.al
                ),
            )));
        }
        let apre = dopo(p.al, -GIORNI_RINNOVO)?;
        if oggi < apre.date() {
            return Ok(Err(motivo(
                "rinnovo-anticipato",
                format!("permit {numero} can be renewed from {apre}"),
            )));
        }
        Ok(Ok(p))
    }

    fn ricevuta(p: &Pratica, nav: Option<snodo_schemas::formats::Nav>) -> DomandaRicevuta {
        DomandaRicevuta {
            pratica: p.domanda.pratica.clone(),
            protocollo: p.protocollo.clone(),
            tariffa: p.tariffa,
            nav,
            termine: p.termine,
        }
    }

    /// The envelope answering `p`'s application with its receipt.
    fn risposta(
        &self,
        p: &Pratica,
        nav: Option<snodo_schemas::formats::Nav>,
    ) -> Result<snodo_envelopes::Envelope, ServiceError> {
        Invio::new(
            &entita(&p.portale)?,
            &p.conversazione,
            &Ufficio::ricevuta(p, nav),
        )?
        .reply_to(p.richiesta)
        .envelope(self.committer.client())
    }

    fn stato(
        p: &Pratica,
        stato: StatoPermesso,
        motivo: Option<Motivo>,
    ) -> Result<Stato, ServiceError> {
        Ok(Stato {
            pratica: p.domanda.pratica.clone(),
            permesso: p.permesso.clone(),
            stato,
            il: p
                .storia
                .last()
                .map(|s| s.il.clone())
                .ok_or_else(|| ServiceError::Refused("an application without history".into()))?,
            motivo,
        })
    }

    fn on_domanda(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let d: Domanda = service::read(inbound)?;
        let portale = inbound.sender().to_string();
        let chiave = format!("{portale}/{}", d.pratica);
        let client = self.committer.client();
        if let Some(n) = self.domande.get(&chiave).map_err(retry)? {
            // The same application again: the same receipt, with its notice if it has one.
            let p =
                self.pratiche.get(&n).map_err(retry)?.ok_or_else(|| {
                    HandlerError::Retry(format!("application {n} not yet stored"))
                })?;
            let nav = match self.esiti.get(&format!("{n}/posizione")).map_err(retry)? {
                Some(Esito::Posizione(c)) => Some(c.nav),
                _ => None,
            };
            effects.send(typed::reply(client, inbound, &Ufficio::ricevuta(&p, nav))?);
            return Ok(());
        }
        let now = self.ora();
        let (oggi, il) = (giorno(now)?, istante(now)?);
        let anno = oggi.date().year();
        let numero = format!(
            "ZTL/{anno}/{:06}",
            self.next(&format!("protocollo/{anno}")).map_err(retry)?
        );
        let regola = self.regola(d.categoria);
        let tariffa = regola.map_or(Importo::ZERO, |r| r.tariffa);
        let motivi = self.controlla(&d, oggi.date())?;
        let mut p = Pratica {
            domanda: d.clone(),
            protocollo: Protocollo {
                numero: numero.clone(),
                data: oggi,
            },
            portale: portale.clone(),
            richiesta: inbound.id(),
            conversazione: inbound.envelope.header.conversation.clone(),
            stato: StatoPermesso::Presentata,
            storia: vec![Passo {
                stato: StatoPermesso::Presentata,
                il: il.clone(),
                nota: None,
            }],
            termine: dopo(oggi, GIORNI_DECISIONE)?,
            tariffa,
            iupd: None,
            richieste: Vec::new(),
            motivi: Vec::new(),
            permesso: None,
        };
        let u = &mut effects.update;
        u.put(&self.domande, &chiave, &numero).map_err(retry)?;
        if !motivi.is_empty() {
            // Wrong on its face: rejected at once, nothing asked of anyone.
            p.passa(StatoPermesso::Rigettata, il, Some(elenco_motivi(&motivi)));
            p.motivi.clone_from(&motivi);
            u.put(&self.pratiche, &numero, &p).map_err(retry)?;
            effects.send(typed::reply(client, inbound, &Ufficio::ricevuta(&p, None))?);
            let rigetto = Rigetto {
                pratica: d.pratica.clone(),
                motivi: elenco(motivi, "reasons")?,
            };
            effects
                .send(Invio::new(inbound.sender(), &p.conversazione, &rigetto)?.envelope(client)?);
            tracing::info!(pratica = %numero, "ZTL application rejected on receipt.");
            return Ok(());
        }
        let conv = p.conversazione.clone();
        if esame::residenza_richiesta(d.categoria) {
            let cf = snodo_schemas::formats::CodiceFiscalePersona::parse(d.richiedente.as_str())
                .map_err(|e| HandlerError::Reject(e.to_string()))?;
            let q = VerificaResidenza {
                pratica: numero.clone(),
                codice_fiscale: cf,
                alla_data: oggi,
            };
            effects.send(
                Invio::new(&self.impostazioni.anpr, &conv, &q)?
                    .request()
                    .envelope(client)?,
            );
        }
        for targa in d.targhe.iter() {
            let q = VerificaVeicolo {
                pratica: numero.clone(),
                targa: targa.clone(),
            };
            effects.send(
                Invio::new(&self.impostazioni.motorizzazione, &conv, &q)?
                    .request()
                    .envelope(client)?,
            );
        }
        if tariffa > Importo::ZERO {
            let iupd = format!(
                "ZTL-{}-{}",
                self.impostazioni.comune,
                numero.replace('/', "-")
            );
            effects.send(
                Invio::new(&self.impostazioni.nodo, &conv, &self.posizione(&p, &iupd)?)?
                    .request()
                    .envelope(client)?,
            );
            effects
                .update
                .put(&self.posizioni, &iupd, &numero)
                .map_err(retry)?;
            p.iupd = Some(iupd);
        } else {
            // Nothing to pay: the receipt now; with a fee it waits for the notice.
            effects.send(typed::reply(client, inbound, &Ufficio::ricevuta(&p, None))?);
        }
        let u = &mut effects.update;
        self.termini
            .schedule(
                u,
                mezzanotte(p.termine),
                &format!("decisione/{numero}"),
                &Termine::Decisione {
                    pratica: numero.clone(),
                },
            )
            .map_err(retry)?;
        // Examined at once by the office's term loop, which puts it in verification and asks
        // for the documents it lacks without waiting: its messages to the portal come in the
        // order of the office's acts.
        self.termini
            .schedule(
                u,
                now,
                &format!("valuta/{numero}/domanda"),
                &Termine::Valuta {
                    pratica: numero.clone(),
                },
            )
            .map_err(retry)?;
        u.put(&self.pratiche, &numero, &p).map_err(retry)?;
        tracing::info!(pratica = %numero, categoria = ?d.categoria, "ZTL application received.");
        Ok(())
    }

    /// The debt position of `p`'s fee.
    fn posizione(&self, p: &Pratica, iupd: &str) -> Result<PosizioneCrea, ServiceError> {
        let i = &self.impostazioni;
        let causale = format!("Permesso ZTL {} {}", p.protocollo.numero, i.denominazione);
        let trasferimento = Trasferimento {
            indice: 1,
            ente: i.codice_fiscale.clone(),
            iban: Iban(i.iban.clone()),
            importo: p.tariffa,
            causale: causale.clone(),
            tassonomia: "9/0301109AP/".into(),
        };
        Ok(PosizioneCrea {
            iupd: iupd.to_owned(),
            ente: i.codice_fiscale.clone(),
            debitore: Soggetto {
                codice_fiscale: p.domanda.richiedente.clone(),
                denominazione: p.domanda.richiedente.as_str().to_owned(),
                indirizzo: None,
                email: Some(p.domanda.email.clone()),
            },
            importo: p.tariffa,
            scadenza: p.termine,
            validita: None,
            causale,
            trasferimenti: Elenco::new(vec![trasferimento])
                .ok_or_else(|| ServiceError::Message("a position needs a transfer".into()))?,
        })
    }

    /// Records answer `esito` about application `numero` under `chiave`, and has the
    /// application examined again.
    fn registra(
        &self,
        numero: &str,
        chiave: &str,
        esito: &Esito,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        effects
            .update
            .put(&self.esiti, &format!("{numero}/{chiave}"), esito)
            .map_err(retry)?;
        self.termini
            .schedule(
                &mut effects.update,
                self.ora(),
                &format!("valuta/{numero}/{chiave}"),
                &Termine::Valuta {
                    pratica: numero.to_owned(),
                },
            )
            .map_err(retry)
    }

    fn pratica_nota(&self, numero: &str) -> Result<Pratica, HandlerError> {
        self.pratiche
            .get(numero)
            .map_err(retry)?
            .ok_or_else(|| HandlerError::Reject(format!("the office has no application {numero}")))
    }

    fn da(&self, inbound: &Inbound, atteso: &EntityId, chi: &str) -> Result<(), HandlerError> {
        if inbound.sender() == atteso {
            Ok(())
        } else {
            Err(HandlerError::Reject(format!(
                "{} answered in place of {chi} ({atteso})",
                inbound.sender()
            )))
        }
    }

    fn on_residenza(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: VerificaResidenzaEsito = service::read(inbound)?;
        self.da(inbound, &self.impostazioni.anpr, "the population registry")?;
        self.pratica_nota(&r.pratica)?;
        let numero = r.pratica.clone();
        self.registra(&numero, "residenza", &Esito::Residenza(r), effects)
    }

    fn on_veicolo(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let v: VerificaVeicoloEsito = service::read(inbound)?;
        self.da(
            inbound,
            &self.impostazioni.motorizzazione,
            "the motor registry",
        )?;
        let p = self.pratica_nota(&v.pratica)?;
        if !p.domanda.targhe.iter().any(|t| *t == v.targa) {
            return Err(HandlerError::Reject(format!(
                "application {} has no vehicle {}",
                v.pratica,
                v.targa.as_str()
            )));
        }
        let chiave = format!("veicolo/{}", v.targa.as_str());
        let numero = v.pratica.clone();
        self.registra(&numero, &chiave, &Esito::Veicolo(v), effects)
    }

    fn on_integrazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let i: Integrazione = service::read(inbound)?;
        let Some(numero) = self
            .domande
            .get(&format!("{}/{}", inbound.sender(), i.pratica))
            .map_err(retry)?
        else {
            return Err(HandlerError::Reject(format!(
                "{} sent no application {}",
                inbound.sender(),
                i.pratica
            )));
        };
        let chiave = format!("integrazione/{}", inbound.id());
        self.registra(&numero, &chiave, &Esito::Integrazione(i), effects)
    }

    fn numero_di(&self, iupd: &str) -> Result<String, HandlerError> {
        self.posizioni.get(iupd).map_err(retry)?.ok_or_else(|| {
            HandlerError::Reject(format!("the office never created position {iupd}"))
        })
    }

    fn on_creata(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let c: PosizioneCreata = service::read(inbound)?;
        self.da(inbound, &self.impostazioni.nodo, "the payment provider")?;
        let numero = self.numero_di(&c.iupd)?;
        let chiave = format!("{numero}/posizione");
        if self.esiti.get(&chiave).map_err(retry)?.is_some() {
            return Ok(());
        }
        let p = self.pratica_nota(&numero)?;
        // The receipt the application waited for, with the notice to pay.
        effects.send(self.risposta(&p, Some(c.nav.clone()))?);
        effects
            .update
            .put(&self.esiti, &chiave, &Esito::Posizione(c))
            .map_err(retry)?;
        Ok(())
    }

    fn on_ricevuta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        self.da(inbound, &self.impostazioni.nodo, "the payment provider")?;
        let numero = self.numero_di(&r.iupd)?;
        tracing::info!(pratica = %numero, nav = %r.nav, "ZTL fee paid.");
        let esito = Esito::Pagamento {
            ricevuta: r.id,
            importo: r.importo,
            il: r.pagato_il,
        };
        self.registra(&numero, "pagamento", &esito, effects)
    }

    async fn run_terms(&self, shutdown: Shutdown) {
        loop {
            let due = match self.termini.next_due(&*self.clock, shutdown.clone()).await {
                Ok(Some(due)) => due,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the ZTL office's terms.");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        () = stopped(shutdown.clone()) => return,
                    }
                }
            };
            for d in due {
                let act = self.atti.lock().await;
                let outcome = match self.atto(&d) {
                    Ok(o) => o,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(termine = %d.key, error = %e, "A term could not be applied yet.");
                        drop(act);
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => break,
                            () = stopped(shutdown.clone()) => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(termine = %d.key, error = %e, "A term could not be applied; dropped.");
                        let mut o = Outcome::new();
                        if let Err(e) = self.termini.cancel(&mut o.update, &d.key) {
                            tracing::error!(error = %e, "Cannot drop the term.");
                        }
                        o
                    }
                };
                match self.committer.commit(outcome).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(termine = %d.key, error = %e, "Term applied; its messages wait in the outbox.");
                    }
                    Err(e) => {
                        tracing::error!(termine = %d.key, error = %e, "Term applied; a message was refused.");
                    }
                }
                drop(act);
                self.posta_pronta.notify_one();
            }
        }
    }

    /// What term `d` does, as an outcome that also cancels it.
    fn atto(&self, d: &Deadline<Termine>) -> Result<Outcome, ServiceError> {
        let mut o = Outcome::new();
        self.termini.cancel(&mut o.update, &d.key)?;
        match &d.value {
            Termine::Valuta { pratica } => self.valuta(pratica, false, &mut o)?,
            Termine::Decisione { pratica } => self.valuta(pratica, true, &mut o)?,
            Termine::Scadenza { permesso } => self.scade(permesso, &mut o)?,
        }
        Ok(o)
    }

    /// The answers about application `numero`.
    fn esiti_di(&self, numero: &str) -> Result<Vec<Esito>, StoreError> {
        Ok(self
            .esiti
            .scan(&format!("{numero}/"))?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Examines application `numero` and acts: issue, reject, ask for more information, or
    /// wait; at its last day (`definitiva`) it issues or rejects.
    fn valuta(&self, numero: &str, definitiva: bool, o: &mut Outcome) -> Result<(), ServiceError> {
        let Some(mut p) = self.pratiche.get(numero)? else {
            return Err(ServiceError::Refused(format!("no application {numero}")));
        };
        if p.decisa() {
            return Ok(());
        }
        let esiti = self.esiti_di(numero)?;
        let regola = self.regola(p.domanda.categoria);
        let vie = self.vie(p.domanda.settori.as_slice());
        let attese = Attese {
            comune: &self.impostazioni.comune,
            vie: &vie,
            documenti: regola.map_or(&[][..], |r| &r.documenti[..]),
            tariffa: p.tariffa,
        };
        let esame = esame::esamina(&p.domanda, &esiti, &attese);
        let now = self.ora();
        let mut cambiata = false;
        if p.stato == StatoPermesso::Presentata {
            self.passa(&mut p, StatoPermesso::InVerifica, now, o)?;
            cambiata = true;
        }
        if esame.da_rigettare(definitiva) {
            return self.rigetta(&mut p, esame.difformi, &esiti, o);
        }
        if esame.completo() {
            return self.rilascia(&mut p, &esiti, o);
        }
        if definitiva {
            tracing::info!(pratica = %numero, "The 30 days are over: the application is decided on what came.");
            return self.rigetta(&mut p, esame.motivi(), &esiti, o);
        }
        if !esame.difformi.is_empty() {
            // Wrong already: rejected once the other checks have answered.
            return Ok(());
        }
        let integrata = esiti.iter().any(|e| matches!(e, Esito::Integrazione(_)));
        if !esame.documenti_mancanti.is_empty() && p.richieste.is_empty() {
            return self.chiedi_integrazione(&mut p, &esame, now, o);
        }
        if integrata && p.stato == StatoPermesso::Integrazione {
            self.passa(&mut p, StatoPermesso::InVerifica, now, o)?;
            cambiata = true;
        }
        if cambiata {
            o.update.put(&self.pratiche, numero, &p)?;
        }
        Ok(())
    }

    /// `p` enters `stato` at `now`, and the portal is told.
    fn passa(
        &self,
        p: &mut Pratica,
        stato: StatoPermesso,
        now: OffsetDateTime,
        o: &mut Outcome,
    ) -> Result<(), ServiceError> {
        p.passa(stato, istante(now).map_err(atto_err)?, None);
        let st = Ufficio::stato(p, stato, None)?;
        o.send(Invio::new(&entita(&p.portale)?, &p.conversazione, &st)?);
        Ok(())
    }

    fn chiedi_integrazione(
        &self,
        p: &mut Pratica,
        esame: &Esame,
        now: OffsetDateTime,
        o: &mut Outcome,
    ) -> Result<(), ServiceError> {
        let oggi = giorno(now).map_err(atto_err)?;
        let termine = dopo(oggi, GIORNI_INTEGRAZIONE)
            .map_err(atto_err)?
            .min(dopo(p.termine, -1).map_err(atto_err)?);
        p.richieste.clone_from(&esame.documenti_mancanti);
        p.passa(
            StatoPermesso::Integrazione,
            istante(now).map_err(atto_err)?,
            Some(format!("asked for: {}", p.richieste.join(", "))),
        );
        let richiesta = RichiestaIntegrazione {
            pratica: p.domanda.pratica.clone(),
            richieste: elenco(p.richieste.clone(), "documents asked for")?,
            termine,
        };
        o.send(Invio::new(
            &entita(&p.portale)?,
            &p.conversazione,
            &richiesta,
        )?);
        o.update.put(
            &self.posta,
            &format!("{}/integrazione", p.protocollo.numero),
            &Posta {
                a: p.domanda.email.clone(),
                oggetto: format!(
                    "Permesso ZTL, domanda {}: documenti da integrare",
                    p.protocollo.numero
                ),
                testo: format!(
                    "La domanda di permesso ZTL protocollo {} del {} richiede:\n{}\n\nRispondere dal portale entro il {termine}.\n",
                    p.protocollo.numero,
                    p.protocollo.data,
                    p.richieste
                        .iter()
                        .map(|r| format!("- {r}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            },
        )?;
        o.update.put(&self.pratiche, &p.protocollo.numero, p)?;
        tracing::info!(pratica = %p.protocollo.numero, "More information asked for.");
        Ok(())
    }

    fn pagata(esiti: &[Esito]) -> bool {
        esiti.iter().any(|e| matches!(e, Esito::Pagamento { .. }))
    }

    fn rigetta(
        &self,
        p: &mut Pratica,
        motivi: Vec<Motivo>,
        esiti: &[Esito],
        o: &mut Outcome,
    ) -> Result<(), ServiceError> {
        let numero = p.protocollo.numero.clone();
        p.passa(
            StatoPermesso::Rigettata,
            istante(self.ora()).map_err(atto_err)?,
            Some(elenco_motivi(&motivi)),
        );
        p.motivi.clone_from(&motivi);
        let rigetto = Rigetto {
            pratica: p.domanda.pratica.clone(),
            motivi: elenco(motivi, "reasons")?,
        };
        o.send(Invio::new(
            &entita(&p.portale)?,
            &p.conversazione,
            &rigetto,
        )?);
        if let Some(iupd) = &p.iupd {
            if Ufficio::pagata(esiti) {
                tracing::warn!(pratica = %numero, %iupd, "Rejected after the fee was paid: the fee is due back to the applicant.");
            } else {
                // Nothing is owed for a rejected application: the notice is withdrawn.
                let annulla = PosizioneAnnulla {
                    iupd: iupd.clone(),
                    ente: self.impostazioni.codice_fiscale.clone(),
                    motivo: format!("domanda ZTL {numero} rigettata"),
                };
                o.send(Invio::new(&self.impostazioni.nodo, &p.conversazione, &annulla)?.request());
            }
        }
        self.termini
            .cancel(&mut o.update, &format!("decisione/{numero}"))?;
        o.update.put(&self.pratiche, &numero, p)?;
        tracing::info!(pratica = %numero, motivi = %elenco_motivi(&p.motivi), "ZTL application rejected.");
        Ok(())
    }

    fn rilascia(
        &self,
        p: &mut Pratica,
        esiti: &[Esito],
        o: &mut Outcome,
    ) -> Result<(), ServiceError> {
        let now = self.ora();
        let (oggi, il) = (
            giorno(now).map_err(atto_err)?,
            istante(now).map_err(atto_err)?,
        );
        let d = p.domanda.clone();
        let massimi = self
            .regola(d.categoria)
            .and_then(|r| r.giorni_massimi)
            .unwrap_or(GIORNI_MASSIMI);
        let numero_pratica = p.protocollo.numero.clone();
        let rinnovato = match (&d.tipo, &d.permesso_precedente) {
            (TipoDomanda::Rinnovo, Some(n)) => match self.permessi.get(n)? {
                Some(x) if x.stato == StatoPermesso::Rilasciato => Some(x),
                _ => {
                    let m = motivo(
                        "permesso-non-rinnovabile",
                        format!("permit {n} expired or was revoked before the renewal was decided"),
                    );
                    return self.rigetta(p, vec![m], esiti, o);
                }
            },
            _ => None,
        };
        let (dal, al) = match scadenze::validita(
            d.categoria,
            &d.periodo,
            oggi.date(),
            rinnovato.as_ref().map(|x| x.al.date()),
            massimi,
        ) {
            Ok(v) => v,
            Err(e) => return self.rigetta(p, vec![e.motivo()], esiti, o),
        };
        let giorno_di = |x: time::Date| {
            Data::from_date(x)
                .ok_or_else(|| ServiceError::Refused(format!("{x} is past the calendar")))
        };
        let (dal, al) = (giorno_di(dal)?, giorno_di(al)?);
        let permesso = match rinnovato {
            Some(mut x) => {
                x.al = al;
                x.targhe = d.targhe.clone();
                x.settori = d.settori.clone();
                x.pratiche.push(numero_pratica.clone());
                x.pratica = d.pratica.clone();
                x.portale = p.portale.clone();
                x.conversazione = p.conversazione.clone();
                x.storia.push(Passo {
                    stato: StatoPermesso::Rilasciato,
                    il: il.clone(),
                    nota: Some(format!("renewed until {al} by {numero_pratica}")),
                });
                x
            }
            None => {
                let anno = oggi.date().year();
                let n = self.next(&format!("permesso/{anno}"))?;
                Permesso {
                    numero: format!("ZTL-{}-{anno}-{n:06}", self.impostazioni.comune),
                    richiedente: d.richiedente.clone(),
                    categoria: d.categoria,
                    targhe: d.targhe.clone(),
                    settori: d.settori.clone(),
                    dal,
                    al,
                    stato: StatoPermesso::Rilasciato,
                    storia: vec![Passo {
                        stato: StatoPermesso::Rilasciato,
                        il: il.clone(),
                        nota: Some(format!("issued by {numero_pratica}")),
                    }],
                    pratiche: vec![numero_pratica.clone()],
                    portale: p.portale.clone(),
                    pratica: d.pratica.clone(),
                    conversazione: p.conversazione.clone(),
                }
            }
        };
        p.permesso = Some(permesso.numero.clone());
        p.passa(StatoPermesso::Rilasciato, il, None);
        let rilascio = Rilascio {
            pratica: d.pratica.clone(),
            permesso: permesso.numero.clone(),
            categoria: d.categoria,
            targhe: d.targhe.clone(),
            settori: d.settori.clone(),
            dal,
            al,
        };
        o.send(Invio::new(
            &entita(&p.portale)?,
            &p.conversazione,
            &rilascio,
        )?);
        // It expires when its last day is over.
        self.termini.schedule(
            &mut o.update,
            mezzanotte(dopo(al, 1).map_err(atto_err)?),
            &format!("scadenza/{}", permesso.numero),
            &Termine::Scadenza {
                permesso: permesso.numero.clone(),
            },
        )?;
        self.termini
            .cancel(&mut o.update, &format!("decisione/{numero_pratica}"))?;
        o.update.put(&self.permessi, &permesso.numero, &permesso)?;
        o.update.put(&self.pratiche, &numero_pratica, p)?;
        tracing::info!(pratica = %numero_pratica, permesso = %permesso.numero, %al, "ZTL permit issued.");
        Ok(())
    }

    /// Permit `numero` expires, unless a renewal moved its expiry.
    fn scade(&self, numero: &str, o: &mut Outcome) -> Result<(), ServiceError> {
        let Some(mut x) = self.permessi.get(numero)? else {
            return Err(ServiceError::Refused(format!("no permit {numero}")));
        };
        let now = self.ora();
        if x.stato != StatoPermesso::Rilasciato
            || now < mezzanotte(dopo(x.al, 1).map_err(atto_err)?)
        {
            return Ok(());
        }
        let il = istante(now).map_err(atto_err)?;
        x.stato = StatoPermesso::Scaduto;
        x.storia.push(Passo {
            stato: StatoPermesso::Scaduto,
            il: il.clone(),
            nota: None,
        });
        let stato = Stato {
            pratica: x.pratica.clone(),
            permesso: Some(x.numero.clone()),
            stato: StatoPermesso::Scaduto,
            il,
            motivo: None,
        };
        o.send(Invio::new(&entita(&x.portale)?, &x.conversazione, &stato)?);
        o.update.put(&self.permessi, numero, &x)?;
        tracing::info!(permesso = %numero, al = %x.al, "ZTL permit expired.");
        Ok(())
    }

    /// Revokes permit `numero` for `motivo` (the official's act): the portal is told.
    /// Returns the permit.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an unknown permit or one no longer valid; the store's
    /// and the hub's errors as [`Committer::commit`] gives them.
    pub async fn revoca(&self, numero: &str, motivo: Motivo) -> Result<Permesso, ServiceError> {
        let _act = self.atti.lock().await;
        let Some(mut x) = self.permessi.get(numero)? else {
            return Err(ServiceError::Refused(format!("no permit {numero}")));
        };
        if x.stato != StatoPermesso::Rilasciato {
            return Err(ServiceError::Refused(format!(
                "permit {numero} is {:?}, not in force",
                x.stato
            )));
        }
        let il = istante(self.ora()).map_err(atto_err)?;
        x.stato = StatoPermesso::Revocato;
        x.storia.push(Passo {
            stato: StatoPermesso::Revocato,
            il: il.clone(),
            nota: Some(format!("{}: {}", motivo.codice, motivo.descrizione)),
        });
        let mut o = Outcome::new();
        let stato = Stato {
            pratica: x.pratica.clone(),
            permesso: Some(x.numero.clone()),
            stato: StatoPermesso::Revocato,
            il,
            motivo: Some(motivo),
        };
        o.send(Invio::new(&entita(&x.portale)?, &x.conversazione, &stato)?);
        o.update.put(&self.permessi, numero, &x)?;
        self.termini
            .cancel(&mut o.update, &format!("scadenza/{numero}"))?;
        self.committer.commit(o).await?;
        tracing::info!(permesso = %numero, "ZTL permit revoked.");
        Ok(x)
    }

    async fn run_mail(&self, shutdown: Shutdown) {
        loop {
            match self.posta.scan("") {
                Ok(items) => {
                    for (key, p) in items {
                        if self.invia(&p).await {
                            let _ = self
                                .posta
                                .remove(&key)
                                .and_then(|()| self.committer.store().flush());
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "Cannot read the mail to send."),
            }
            tokio::select! {
                () = self.posta_pronta.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                () = stopped(shutdown.clone()) => return,
            }
        }
    }

    /// Sends one mail; `true` when it is gone (or there is no mail to send it by).
    async fn invia(&self, p: &Posta) -> bool {
        let Some(mailer) = &self.mailer else {
            tracing::info!(to = %p.a, subject = %p.oggetto, "Mail for an applicant (no mail configured).");
            return true;
        };
        let mail = Mail {
            to: vec![p.a.clone()],
            subject: p.oggetto.clone(),
            body: p.testo.clone(),
        };
        match mailer.send(&mail).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(subject = %p.oggetto, error = %e, "Mail not sent; retried later.");
                !e.is_retryable()
            }
        }
    }
}

/// `snodo-connector`'s entry: the ZTL office with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]), its terms and mail running.
///
/// # Errors
/// A message naming what is wrong with the data, the mail or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let committer =
        Committer::new(ctx.client.clone(), ctx.store.clone()).map_err(|e| e.to_string())?;
    let u = Ufficio::new(committer, impostazioni, ctx.clock.clone())?;
    let tasks = u.start(&ctx.shutdown);
    Ok((u.install(builder), tasks))
}
