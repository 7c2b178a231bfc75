//! The comune's ZTL office (`mobilita.ztl`), a back office role of a comune entity: it takes
//! applications for permits and renewals, checks residence with ANPR, vehicles with the motor
//! registry and the fee with the payment provider, asks for more information, and decides
//! within 30 days on the clock; permits expire on schedule and can be revoked.
//!
//! Handlers only record what others answer and put a term "look again now" on the agenda;
//! the office's own acts (examining, deciding, expiring, revoking) run one at a time in its
//! term loop (`atti`), so that no answer is lost to an act under way; `domande` holds
//! what the office does with the messages it receives.

mod atti;
mod domande;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Elenco, Importo, Nav};
use snodo_schemas::services::dati::Motivo;
use snodo_schemas::services::mobilita_ztl::{Categoria, DomandaRicevuta, Stato, StatoPermesso};
use time::OffsetDateTime;

use super::pratica::{Esito, Permesso, Pratica};
use crate::agenda::Agenda;
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::mail::{MailConfig, Mailer};
use crate::service::{Committer, Invio, ServiceError};
use crate::shutdown::Shutdown;
use crate::store::{StoreError, Tree};
use crate::typed::{Answers, Route};

/// The days within which the office answers an application.
pub const GIORNI_DECISIONE: i64 = 30;
/// The days the applicant has to bring what was asked for (never past the decision's term).
pub const GIORNI_INTEGRAZIONE: i64 = 15;
/// How many days before its expiry a permit can be renewed.
pub const GIORNI_RINNOVO: i64 = 90;

/// A sector of the zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settore {
    /// Its code, as applications name it (`A`, `centro`).
    pub codice: String,
    /// Its streets, where its residents live; none: residents anywhere in the comune.
    #[serde(default)]
    pub vie: Vec<String>,
}

/// What the comune deliberated for one category of permit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegolaCategoria {
    /// The category; a category without a rule is not issued.
    pub categoria: Categoria,
    /// The fee, in cents (0: free).
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
    /// IUPD of a fee → protocol number (what tells the provider's messages about this
    /// office's positions from the other offices' of the comune).
    posizioni: Tree<String>,
    /// IUV of a fee → the settlement flow that reported it.
    rendicontati: Tree<String>,
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
            rendicontati: store.tree("ztl.rendicontati").map_err(s)?,
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
        let posizioni = self.posizioni.clone();
        let answers = Answers::for_positions(self.risposte.clone(), move |i| posizioni.contains(i));
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
            .route(
                "pagamenti",
                "rendicontazione",
                Route::handler(self, Ufficio::on_rendicontazione),
            )
            .route("pagamenti", "posizione-esito", answers.clone())
            .route("pagamenti", "posizione-stato", answers)
    }

    /// The settlement flow that reported the fee whose notice is `nav`, if one did.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn rendicontato(&self, nav: &Nav) -> Result<Option<String>, StoreError> {
        self.rendicontati.get(nav.iuv().as_str())
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

    fn ricevuta(p: &Pratica, nav: Option<Nav>) -> DomandaRicevuta {
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
        nav: Option<Nav>,
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
