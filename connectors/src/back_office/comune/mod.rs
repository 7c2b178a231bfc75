//! The reference comune: its registry office (declarations of residence, arrival and
//! departure), its TARI office (waste-tax positions), its municipal police (the check of the
//! habitual dwelling), its official (mailed about each new practice) and its registry feed to
//! ANPR; the state in the connector's store, the terms on the injected clock.

mod residenza;
mod variazioni;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceFiscalePersona, CodiceIstat, Data};
use snodo_schemas::services::anagrafe_variazioni::{
    CaricamentoEsito, LottoEsito, PosizioneAnagrafica,
};
use snodo_schemas::services::dati::{Indirizzo, Motivo, Persona, Protocollo};
use snodo_schemas::services::residenza_cambio::{
    Accertamento, Dichiarazione, EsitoAnpr, Osservazioni, PreavvisoRigetto, StatoPratica,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::agenda::Agenda;
use crate::clock::SharedClock;
use crate::dispatch::DispatcherBuilder;
use crate::mail::{Mail, MailConfig, Mailer};
use crate::service::{Committer, ServiceError};
use crate::shutdown::{Shutdown, stopped};
use crate::store::{StoreError, Tree, Update};

pub use residenza::{GIORNI_ACCERTAMENTO, GIORNI_LAVORATIVI_REGISTRAZIONE, GIORNI_OSSERVAZIONI};
pub use variazioni::LottoInviato;

/// What a comune knows before it starts: `[adapter.data]` of its configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatiComune {
    /// The street register: an address on a street not listed does not exist.
    pub stradario: Vec<Via>,
    /// The comuni of the federation (ISTAT codes): a declaration coming from one not listed
    /// is refused. Empty: not checked.
    #[serde(default)]
    pub comuni: Vec<CodiceIstat>,
    /// The registry official's address, mailed about each new practice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufficiale: Option<String>,
    /// How mail is sent (SMTP, or `.eml` files in a directory). Without it, mail is only
    /// logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posta: Option<MailConfig>,
    /// The registry at the start: residents, by family. Each family's first person holds its
    /// waste-tax position.
    #[serde(default)]
    pub residenti: Vec<PosizioneAnagrafica>,
    /// The population registry (`anpr:ministero`).
    #[serde(default = "default_anpr")]
    pub anpr: String,
}

fn default_anpr() -> String {
    "anpr:ministero".into()
}

/// A street of the register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Via {
    /// Its name (`Via Roma`); compared without regard to case and spacing.
    pub nome: String,
    /// The highest house number; absent, any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub civici: Option<u32>,
}

/// A step in a practice's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passo {
    /// The state entered.
    pub stato: StatoPratica,
    /// When (the clock's time, RFC 3339).
    pub il: String,
    /// A note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

/// A practice of change of residence at the comune of arrival.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pratica {
    /// The portal's id of the practice.
    pub pratica: String,
    /// Its state now.
    pub stato: StatoPratica,
    /// Every state it went through, in order.
    pub storia: Vec<Passo>,
    /// The comune's protocol of the declaration.
    pub protocollo: Protocollo,
    /// The declaration.
    pub dichiarazione: Dichiarazione,
    /// Who sent it (the portal), answered with every change.
    pub portale: String,
    /// The declaration's envelope, which `esito` answers.
    pub richiesta: Uuid,
    /// The envelopes' conversation.
    pub conversazione: String,
    /// Why it was refused or annulled.
    #[serde(default)]
    pub motivi: Vec<Motivo>,
    /// The police check's last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termine_accertamento: Option<Data>,
    /// The police check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accertamento: Option<Accertamento>,
    /// The rejection notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preavviso: Option<PreavvisoRigetto>,
    /// Residents' positions in this comune before a move within it, restored on annulment.
    #[serde(default)]
    pub precedenti: Vec<Residente>,
}

/// What others answered about a practice. Kept apart from [`Pratica`], which only the
/// comune's own acts change, so that an answer processed while an act is under way is never
/// overwritten by it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Risposte {
    /// ANPR's answer to the registration.
    pub anpr: Option<EsitoAnpr>,
    /// ANPR's answer to the annulment.
    pub anpr_annullamento: Option<EsitoAnpr>,
    /// The citizen's observations on the rejection notice.
    pub osservazioni: Option<Osservazioni>,
}

/// Someone the comune's registry holds (or held: an emigrant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residente {
    /// Who.
    pub persona: Persona,
    /// Where they live.
    pub indirizzo: Indirizzo,
    /// Their registry family.
    pub famiglia: String,
    /// Resident since.
    pub dal: Data,
    /// The practice that registered them here, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pratica: Option<String>,
    /// Set when they moved to another comune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emigrato: Option<Emigrazione>,
}

/// A resident's departure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emigrazione {
    /// To which comune.
    pub comune: CodiceIstat,
    /// From when.
    pub dal: Data,
    /// The practice of the comune of arrival.
    pub pratica: String,
}

/// A waste-tax (TARI) position of the comune's TARI office.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosizioneTari {
    /// Who is liable.
    pub intestatario: CodiceFiscalePersona,
    /// The dwelling.
    pub indirizzo: Indirizzo,
    /// How many people live there.
    pub componenti: u8,
    /// From when.
    pub dal: Data,
    /// Until when; open when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub al: Option<Data>,
    /// The practice that opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aperta_da: Option<String>,
    /// The practice that closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chiusa_da: Option<String>,
    /// Opened by a registration later annulled: it never applied.
    #[serde(default)]
    pub annullata: bool,
}

/// A mail waiting to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posta {
    /// Subject.
    pub oggetto: String,
    /// Body.
    pub testo: String,
}

/// What a term of the comune's agenda is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termine {
    /// 2 working days after the declaration: register it.
    Registrazione,
    /// 45 days after it, no check came: silence confirms.
    Accertamento,
    /// 10 days after the rejection notice: annul, unless observations wait for the official.
    Osservazioni,
}

/// The reference comune.
pub struct Comune {
    /// This comune's ISTAT code.
    codice: CodiceIstat,
    /// Its entity, `comune:<code>`.
    entity: EntityId,
    /// The registry it registers with.
    anpr: EntityId,
    /// Its data (streets, comuni, official).
    dati: DatiComune,
    /// The clock terms run on.
    clock: SharedClock,
    /// Commits work no envelope started, with what it sends.
    committer: Committer,
    /// Practices by id.
    pratiche: Tree<Pratica>,
    /// ANPR's answers, `practice/registrazione` and `practice/annullamento`.
    esiti_anpr: Tree<EsitoAnpr>,
    /// The citizen's observations, by practice.
    osservazioni: Tree<Osservazioni>,
    /// Serialises the comune's own acts (terms, the official, the police): each reads a
    /// practice and commits its change before the next reads it.
    atti: tokio::sync::Mutex<()>,
    /// The registry, by codice fiscale.
    residenti: Tree<Residente>,
    /// TARI positions, `CF/practice` (or `CF/iniziale`).
    tari: Tree<PosizioneTari>,
    /// Mail to send, by a key unique to its cause.
    posta: Tree<Posta>,
    /// Counters: protocol numbers, the feed's sequence.
    contatori: Tree<u64>,
    /// Batches of the feed, by number (20 digits).
    lotti: Tree<LottoInviato>,
    /// The registry's answers to batches, by number.
    esiti_lotti: Tree<LottoEsito>,
    /// The registry's answers to the parts of the initial load, by part.
    esiti_caricamento: Tree<CaricamentoEsito>,
    /// Terms by practice.
    termini: Agenda<Termine>,
    /// Sends the official's mail.
    mailer: Option<Mailer>,
    /// Woken when mail may be waiting.
    posta_pronta: Arc<Notify>,
    /// Notified by the handlers once their changes are durable: terms and mail look again.
    cambiato: Arc<Notify>,
}

impl std::fmt::Debug for Comune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comune")
            .field("entity", &self.entity)
            .finish_non_exhaustive()
    }
}

impl Comune {
    /// The comune acting as `committer`'s entity (`comune:<ISTAT>`), with `dati`, on `clock`.
    /// On a first start its registry and TARI positions are loaded from `dati.residenti`.
    ///
    /// # Errors
    /// A message naming what is wrong: an entity that is not a comune, a bad address, the
    /// mail configuration, the store.
    pub fn new(
        committer: Committer,
        dati: DatiComune,
        clock: SharedClock,
    ) -> Result<Arc<Comune>, String> {
        let entity = committer.client().entity().clone();
        let codice = entity
            .to_string()
            .strip_prefix("comune:")
            .and_then(|c| CodiceIstat::parse(c).ok())
            .ok_or_else(|| format!("{entity} is not a comune (comune:<ISTAT code>)"))?;
        let anpr: EntityId = dati
            .anpr
            .parse()
            .map_err(|e| format!("adapter.data.anpr: {e}"))?;
        let mailer = match &dati.posta {
            Some(c) => Some(Mailer::new(c).map_err(|e| format!("adapter.data.posta: {e}"))?),
            None => None,
        };
        let store = committer.store().clone();
        let s = |e: StoreError| e.to_string();
        let comune = Comune {
            codice,
            entity,
            anpr,
            clock,
            pratiche: store.tree("comune.pratiche").map_err(s)?,
            esiti_anpr: store.tree("comune.esiti_anpr").map_err(s)?,
            osservazioni: store.tree("comune.osservazioni").map_err(s)?,
            atti: tokio::sync::Mutex::new(()),
            residenti: store.tree("comune.residenti").map_err(s)?,
            tari: store.tree("comune.tari").map_err(s)?,
            posta: store.tree("comune.posta").map_err(s)?,
            contatori: store.tree("comune.contatori").map_err(s)?,
            lotti: store.tree("comune.lotti").map_err(s)?,
            esiti_lotti: store.tree("comune.lotti.esiti").map_err(s)?,
            esiti_caricamento: store.tree("comune.caricamento.esiti").map_err(s)?,
            termini: Agenda::open(&store, "comune.termini").map_err(s)?,
            committer,
            dati,
            mailer,
            posta_pronta: Arc::new(Notify::new()),
            cambiato: Arc::new(Notify::new()),
        };
        comune.carica_residenti().map_err(s)?;
        Ok(Arc::new(comune))
    }

    /// Loads `dati.residenti` once, on the first start.
    fn carica_residenti(&self) -> Result<(), StoreError> {
        if self.contatori.get("caricato")?.is_some() {
            return Ok(());
        }
        let mut u = Update::new();
        let mut famiglie: Vec<&str> = Vec::new();
        for p in &self.dati.residenti {
            let cf = p.persona.codice_fiscale.as_str();
            u.put(
                &self.residenti,
                cf,
                &Residente {
                    persona: p.persona.clone(),
                    indirizzo: p.indirizzo.clone(),
                    famiglia: p.famiglia.clone(),
                    dal: p.iscritto_dal,
                    pratica: None,
                    emigrato: None,
                },
            )?;
            if !famiglie.contains(&p.famiglia.as_str()) {
                famiglie.push(&p.famiglia);
                let componenti = self
                    .dati
                    .residenti
                    .iter()
                    .filter(|o| o.famiglia == p.famiglia)
                    .count();
                u.put(
                    &self.tari,
                    &format!("{cf}/iniziale"),
                    &PosizioneTari {
                        intestatario: p.persona.codice_fiscale.clone(),
                        indirizzo: p.indirizzo.clone(),
                        componenti: u8::try_from(componenti).unwrap_or(u8::MAX),
                        dal: p.iscritto_dal,
                        al: None,
                        aperta_da: None,
                        chiusa_da: None,
                        annullata: false,
                    },
                )?;
            }
        }
        u.put(&self.contatori, "caricato", &1)?;
        self.committer.store().apply(u)
    }

    /// Routes this comune's messages of both services on `builder`.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let client = self.committer.client().clone();
        let r: Arc<dyn crate::residenza_cambio::Comune> = self.clone();
        let builder = crate::residenza_cambio::install_comune(
            &r,
            &client,
            Some(self.cambiato.clone()),
            builder,
        );
        let v: Arc<dyn crate::anagrafe_variazioni::Mittente> = self.clone();
        crate::anagrafe_variazioni::install_mittente(&v, &client, None, builder)
    }

    /// Runs the comune's terms and its mail until `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
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
        let changes = {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = me.cambiato.notified() => me.svegli(),
                        () = stopped(shutdown.clone()) => return,
                    }
                }
            })
        };
        vec![terms, mail, changes]
    }

    /// Tells the terms and the mail that the state changed.
    fn svegli(&self) {
        self.termini.wake();
        self.posta_pronta.notify_one();
    }

    async fn run_terms(&self, shutdown: Shutdown) {
        loop {
            let due = match self.termini.next_due(&*self.clock, shutdown.clone()).await {
                Ok(Some(due)) => due,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read the comune's terms.");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        () = stopped(shutdown.clone()) => return,
                    }
                }
            };
            for d in due {
                let _act = self.atti.lock().await;
                let outcome = match self.scadenza(&d.key, d.value) {
                    Ok(o) => o,
                    Err(e) if e.is_retryable() => {
                        // The store failed: the term stays, and is tried again shortly.
                        tracing::warn!(pratica = %d.key, error = %e, "A term could not be applied yet.");
                        drop(_act);
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => break,
                            () = stopped(shutdown.clone()) => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(pratica = %d.key, error = %e, "A term could not be applied; dropped.");
                        let mut o = crate::service::Outcome::new();
                        if let Err(e) = self.termini.cancel(&mut o.update, &d.key) {
                            tracing::error!(error = %e, "Cannot drop the term.");
                        }
                        o
                    }
                };
                match self.committer.commit(outcome).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(pratica = %d.key, error = %e, "Term applied; its messages wait in the outbox.");
                    }
                    Err(e) => {
                        tracing::error!(pratica = %d.key, error = %e, "Term applied; a message was refused.")
                    }
                }
                self.posta_pronta.notify_one();
            }
        }
    }

    async fn run_mail(&self, shutdown: Shutdown) {
        loop {
            match self.posta.scan("") {
                Ok(items) => {
                    for (key, p) in items {
                        if self.invia_posta(&p).await {
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

    /// Sends one mail; `true` when it is gone (or there is nowhere to send it).
    async fn invia_posta(&self, p: &Posta) -> bool {
        let (Some(mailer), Some(to)) = (&self.mailer, &self.dati.ufficiale) else {
            tracing::info!(subject = %p.oggetto, "Mail for the official (no mail configured).");
            return true;
        };
        let mail = Mail {
            to: vec![to.clone()],
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

    /// The practice `pratica`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn pratica(&self, pratica: &str) -> Result<Option<Pratica>, StoreError> {
        self.pratiche.get(pratica)
    }

    /// What ANPR and the citizen answered about practice `pratica`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn risposte(&self, pratica: &str) -> Result<Risposte, StoreError> {
        Ok(Risposte {
            anpr: self.esiti_anpr.get(&format!("{pratica}/registrazione"))?,
            anpr_annullamento: self.esiti_anpr.get(&format!("{pratica}/annullamento"))?,
            osservazioni: self.osservazioni.get(pratica)?,
        })
    }

    /// The registry's record of `cf`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn residente(&self, cf: &str) -> Result<Option<Residente>, StoreError> {
        self.residenti.get(cf)
    }

    /// The TARI positions held by `cf`, by key.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn posizioni_tari(&self, cf: &str) -> Result<Vec<(String, PosizioneTari)>, StoreError> {
        self.tari.scan(&format!("{cf}/"))
    }

    /// The next protocol number, `YEAR/NNNNNNN`.
    fn protocollo(&self, oggi: Data) -> Result<Protocollo, StoreError> {
        let n = self
            .contatori
            .update("protocollo", |v| Some(v.unwrap_or(0) + 1))?
            .unwrap_or(1);
        Ok(Protocollo {
            numero: format!("{}/{n:07}", oggi.date().year()),
            data: oggi,
        })
    }

    fn refused(e: StoreError) -> ServiceError {
        ServiceError::Store(e)
    }
}
