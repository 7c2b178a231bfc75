//! The reference population registry (ANPR): registrations applied and the comune of
//! departure and the motor registry informed; annulments that restore each person's previous
//! position; the registry feed of every comune applied in sequence, with gaps asked again,
//! duplicates ignored, and full initial loads; the ZTL offices' residence checks (its `ztl`
//! submodule).

mod ztl;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceIstat, Data, Elenco, Istante};
use snodo_schemas::services::anagrafe_variazioni::{
    CaricamentoEsito, CaricamentoIniziale, EsitoLotto, Lotto, LottoEsito, RichiestaReinvio,
    TipoVariazione,
};
use snodo_schemas::services::dati::{Indirizzo, Motivo, Persona};
use snodo_schemas::services::residenza_cambio::{
    AggiornamentoMotorizzazione, Annullamento, AnnullamentoEsito, Cancellazione, Conducente,
    EsitoAnpr, PersonaTrasferita, Provenienza, Registrazione, RegistrazioneEsito, Ripristino,
};

use crate::back_office::{istante, motivo};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{Committer, Invio, Outcome, retry};
use crate::store::{StoreError, Tree};

/// What the registry is told before it starts: `[adapter.data]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatiAnpr {
    /// The motor registry informed of new addresses.
    #[serde(default = "default_motorizzazione")]
    pub motorizzazione: String,
}

impl Default for DatiAnpr {
    fn default() -> Self {
        DatiAnpr {
            motorizzazione: default_motorizzazione(),
        }
    }
}

fn default_motorizzazione() -> String {
    "mctc:motorizzazione".into()
}

/// A person's registry position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posizione {
    /// Who.
    pub persona: Persona,
    /// The comune of residence.
    pub comune: CodiceIstat,
    /// The address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirizzo: Option<Indirizzo>,
    /// The registry family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub famiglia: Option<String>,
    /// Since when.
    pub dal: Data,
    /// The practice that set it, if a change of residence did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pratica: Option<String>,
    /// Why the position ended (death, emigration), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cessata: Option<String>,
}

/// A registration applied, kept to annul it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iscrizione {
    /// The registration.
    pub registrazione: Registrazione,
    /// Each person's position before it (none for someone new to the registry).
    pub precedenti: Vec<(String, Option<Posizione>)>,
    /// Annulled.
    pub annullata: bool,
}

/// The feed of one comune.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatoFeed {
    /// The next batch to apply.
    pub prossimo: u64,
    /// Batches applied.
    pub applicati: u64,
    /// The highest batch a resend was asked up to.
    pub richiesto_fino: u64,
    /// The full load under way or done: its time, parts and parts received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caricamento: Option<Caricamento>,
}

/// A full initial load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caricamento {
    /// The state of the comune's registry it reflects.
    pub al: Istante,
    /// Its parts.
    pub parti: u32,
    /// Parts received.
    pub ricevute: BTreeSet<u32>,
    /// The batch that follows it.
    pub prossima_sequenza: u64,
}

/// The reference ANPR.
pub struct Anpr {
    /// Commits and signs as `anpr:…`.
    committer: Committer,
    /// The motor registry.
    motorizzazione: EntityId,
    /// The clock.
    clock: SharedClock,
    /// Positions by codice fiscale.
    posizioni: Tree<Posizione>,
    /// Who may reside in each comune, `comune/cf`: every position's comune has its key here
    /// (a key may outlive a move; the position is the truth). A comune's initial load
    /// replaces its residents by walking this index, not every position of the country.
    residenti: Tree<()>,
    /// Registrations by `comune/practice`.
    iscrizioni: Tree<Iscrizione>,
    /// The feed of each comune.
    feed: Tree<StatoFeed>,
    /// Batches ahead of a gap, `comune/NNN…` (20 digits).
    sospesi: Tree<Lotto>,
}

impl std::fmt::Debug for Anpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anpr").finish_non_exhaustive()
    }
}

fn comune_di(m: &Inbound) -> Option<CodiceIstat> {
    m.sender()
        .to_string()
        .strip_prefix("comune:")
        .and_then(|c| CodiceIstat::parse(c).ok())
}

fn entita_comune(c: &CodiceIstat) -> Result<EntityId, HandlerError> {
    format!("comune:{c}")
        .parse()
        .map_err(|e| HandlerError::Reject(format!("comune {c}: {e}")))
}

fn motivi(m: Motivo) -> Elenco<Motivo, 1, 20> {
    Elenco::new(vec![m]).unwrap_or_else(|| unreachable!("one reason is a valid list"))
}

fn conducenti(persone: &[PersonaTrasferita]) -> Option<Elenco<Conducente, 1, 30>> {
    Elenco::new(
        persone
            .iter()
            .filter(|p| p.patente.is_some() || !p.veicoli.is_empty())
            .map(|p| Conducente {
                codice_fiscale: p.persona.codice_fiscale.clone(),
                patente: p.patente.clone(),
                veicoli: p.veicoli.clone(),
            })
            .collect(),
    )
}

impl Anpr {
    /// The registry acting as `committer`'s entity.
    ///
    /// # Errors
    /// A message naming what is wrong (the motor registry's id, the store).
    pub fn new(
        committer: Committer,
        dati: DatiAnpr,
        clock: SharedClock,
    ) -> Result<Arc<Anpr>, String> {
        let store = committer.store().clone();
        let s = |e: StoreError| e.to_string();
        let posizioni: Tree<Posizione> = store.tree("anpr.posizioni").map_err(s)?;
        let residenti: Tree<()> = store.tree("anpr.residenti").map_err(s)?;
        if residenti.is_empty() {
            // A store written before the index existed: build it once.
            for (cf, p) in posizioni.scan("").map_err(s)? {
                residenti.put(&residente(&p.comune, &cf), &()).map_err(s)?;
            }
        }
        Ok(Arc::new(Anpr {
            motorizzazione: dati
                .motorizzazione
                .parse()
                .map_err(|e| format!("adapter.data.motorizzazione: {e}"))?,
            clock,
            posizioni,
            residenti,
            iscrizioni: store.tree("anpr.iscrizioni").map_err(s)?,
            feed: store.tree("anpr.feed").map_err(s)?,
            sospesi: store.tree("anpr.sospesi").map_err(s)?,
            committer,
        }))
    }

    /// Routes the registry's messages of both services on `builder`.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let client = self.committer.client().clone();
        let r: Arc<dyn crate::residenza_cambio::Anpr> = self.clone();
        let builder = crate::residenza_cambio::install_anpr(&r, &client, builder);
        let v: Arc<dyn crate::anagrafe_variazioni::Registro> = self.clone();
        let builder = crate::anagrafe_variazioni::install_registro(&v, &client, builder);
        self.install_ztl(builder)
    }

    /// The position of `cf`.
    ///
    /// # Errors
    /// The store's.
    pub fn posizione(&self, cf: &str) -> Result<Option<Posizione>, StoreError> {
        self.posizioni.get(cf)
    }

    /// The feed state of comune `comune`.
    ///
    /// # Errors
    /// The store's.
    pub fn feed(&self, comune: &str) -> Result<Option<StatoFeed>, StoreError> {
        self.feed.get(comune)
    }

    /// The registration `pratica` of `comune`.
    ///
    /// # Errors
    /// The store's.
    pub fn iscrizione(
        &self,
        comune: &str,
        pratica: &str,
    ) -> Result<Option<Iscrizione>, StoreError> {
        self.iscrizioni.get(&format!("{comune}/{pratica}"))
    }

    /// Writes `cf`'s position `p` in `o`, with its key in the residents' index.
    fn scrivi(&self, o: &mut Outcome, cf: &str, p: &Posizione) -> Result<(), HandlerError> {
        o.update.put(&self.posizioni, cf, p).map_err(retry)?;
        o.update
            .put(&self.residenti, &residente(&p.comune, cf), &())
            .map_err(retry)
    }

    /// Applies batch `l`; `staged` holds the positions this same update already changed.
    fn applica(
        &self,
        l: &Lotto,
        o: &mut Outcome,
        staged: &mut HashMap<String, Posizione>,
    ) -> Result<(), HandlerError> {
        for v in l.variazioni.iter() {
            let cf = v.persona.codice_fiscale.as_str();
            let prev = match staged.get(cf) {
                Some(p) => Some(p.clone()),
                None => self.posizioni.get(cf).map_err(retry)?,
            };
            let mut p = prev.unwrap_or(Posizione {
                persona: v.persona.clone(),
                comune: l.comune.clone(),
                indirizzo: None,
                famiglia: None,
                dal: v.data,
                pratica: None,
                cessata: None,
            });
            p.persona = v.persona.clone();
            match v.tipo {
                TipoVariazione::Morte => p.cessata = Some(format!("morte dal {}", v.data)),
                TipoVariazione::Emigrazione => {
                    p.cessata = Some(format!("emigrazione dal {}", v.data));
                }
                _ => {
                    p.comune = l.comune.clone();
                    p.cessata = None;
                    if matches!(
                        v.tipo,
                        TipoVariazione::Nascita
                            | TipoVariazione::Immigrazione
                            | TipoVariazione::CambioIndirizzo
                    ) {
                        p.dal = v.data;
                    }
                }
            }
            if let Some(i) = &v.indirizzo {
                p.indirizzo = Some(i.clone());
            }
            if let Some(f) = &v.famiglia {
                p.famiglia = Some(f.clone());
            }
            self.scrivi(o, cf, &p)?;
            staged.insert(cf.to_owned(), p);
        }
        Ok(())
    }
}

impl crate::residenza_cambio::Anpr for Anpr {
    fn registrazione(&self, m: &Inbound, r: Registrazione) -> crate::residenza_cambio::Result {
        let h = &m.envelope.header;
        let mut o = Outcome::new();
        let rispondi = |o: &mut Outcome, esito: EsitoAnpr| -> Result<(), HandlerError> {
            o.send(
                Invio::new(
                    &h.sender,
                    &h.conversation,
                    &RegistrazioneEsito {
                        pratica: r.pratica.clone(),
                        esito,
                    },
                )?
                .reply_to(h.id),
            );
            Ok(())
        };
        let il = istante(self.clock.now())?;
        if comune_di(m).as_ref() != Some(&r.comune) {
            rispondi(
                &mut o,
                EsitoAnpr::Respinta {
                    motivi: motivi(motivo(
                        "comune-mittente",
                        format!("{} registers for comune {}", m.sender(), r.comune),
                    )),
                },
            )?;
            return Ok(o);
        }
        let key = format!("{}/{}", r.comune, r.pratica);
        if self.iscrizioni.contains(&key).map_err(retry)? {
            rispondi(&mut o, EsitoAnpr::Applicata { il })?;
            return Ok(o);
        }
        let mut precedenti = Vec::new();
        let mut partenze: Vec<CodiceIstat> = Vec::new();
        for p in r.persone.iter() {
            let cf = p.persona.codice_fiscale.as_str();
            let prev = self.posizioni.get(cf).map_err(retry)?;
            if let Some(prev) = &prev
                && prev.comune != r.comune
                && !partenze.contains(&prev.comune)
            {
                partenze.push(prev.comune.clone());
            }
            precedenti.push((cf.to_owned(), prev.clone()));
            self.scrivi(
                &mut o,
                cf,
                &Posizione {
                    persona: p.persona.clone(),
                    comune: r.comune.clone(),
                    indirizzo: Some(r.indirizzo.clone()),
                    famiglia: prev.and_then(|x| x.famiglia),
                    dal: r.decorrenza,
                    pratica: Some(r.pratica.clone()),
                    cessata: None,
                },
            )?;
        }
        if let Provenienza::AltroComune { comune } = &r.provenienza
            && !partenze.contains(comune)
        {
            partenze.push(comune.clone());
        }
        for c in &partenze {
            let persone: Vec<_> = r
                .persone
                .iter()
                .map(|p| p.persona.codice_fiscale.clone())
                .collect();
            o.send(Invio::new(
                &entita_comune(c)?,
                &h.conversation,
                &Cancellazione {
                    pratica: r.pratica.clone(),
                    comune: c.clone(),
                    comune_arrivo: r.comune.clone(),
                    decorrenza: r.decorrenza,
                    persone: Elenco::new(persone)
                        .ok_or_else(|| HandlerError::Reject("no people".into()))?,
                },
            )?);
        }
        if let Some(conducenti) = conducenti(r.persone.as_slice()) {
            o.send(Invio::new(
                &self.motorizzazione,
                &h.conversation,
                &AggiornamentoMotorizzazione {
                    pratica: r.pratica.clone(),
                    decorrenza: r.decorrenza,
                    indirizzo: r.indirizzo.clone(),
                    conducenti,
                },
            )?);
        }
        o.update
            .put(
                &self.iscrizioni,
                &key,
                &Iscrizione {
                    registrazione: r.clone(),
                    precedenti,
                    annullata: false,
                },
            )
            .map_err(retry)?;
        rispondi(&mut o, EsitoAnpr::Applicata { il })?;
        Ok(o)
    }

    fn annullamento(&self, m: &Inbound, a: Annullamento) -> crate::residenza_cambio::Result {
        let h = &m.envelope.header;
        let mut o = Outcome::new();
        let il = istante(self.clock.now())?;
        let key = format!("{}/{}", a.comune, a.pratica);
        let iscrizione = if comune_di(m).as_ref() == Some(&a.comune) {
            self.iscrizioni.get(&key).map_err(retry)?
        } else {
            None
        };
        let esito = match iscrizione {
            None => EsitoAnpr::Respinta {
                motivi: motivi(motivo(
                    "pratica-sconosciuta",
                    format!(
                        "No registration {} of comune {} from {}.",
                        a.pratica,
                        a.comune,
                        m.sender()
                    ),
                )),
            },
            Some(i) if i.annullata => EsitoAnpr::Applicata { il },
            Some(mut i) => {
                let mut partenze: Vec<CodiceIstat> = Vec::new();
                let mut ritorni: Vec<(PersonaTrasferita, Indirizzo)> = Vec::new();
                for (cf, prev) in &i.precedenti {
                    match prev {
                        Some(p) => {
                            self.scrivi(&mut o, cf, p)?;
                            if p.comune != a.comune && !partenze.contains(&p.comune) {
                                partenze.push(p.comune.clone());
                            }
                            if let (Some(t), Some(ind)) = (
                                i.registrazione
                                    .persone
                                    .iter()
                                    .find(|x| x.persona.codice_fiscale.as_str() == cf),
                                &p.indirizzo,
                            ) {
                                ritorni.push((t.clone(), ind.clone()));
                            }
                        }
                        None => o.update.remove(&self.posizioni, cf),
                    }
                }
                for c in &partenze {
                    let persone: Vec<_> = i
                        .precedenti
                        .iter()
                        .filter(|(_, p)| p.as_ref().is_some_and(|p| p.comune == *c))
                        .filter_map(|(cf, _)| cf.parse().ok())
                        .collect();
                    if let Some(persone) = Elenco::new(persone) {
                        o.send(Invio::new(
                            &entita_comune(c)?,
                            &h.conversation,
                            &Ripristino {
                                pratica: a.pratica.clone(),
                                comune: c.clone(),
                                comune_arrivo: a.comune.clone(),
                                data: a.data,
                                persone,
                            },
                        )?);
                    }
                }
                // The motor registry goes back to each person's previous address.
                for (t, indirizzo) in ritorni {
                    if let Some(conducenti) = conducenti(std::slice::from_ref(&t)) {
                        o.send(Invio::new(
                            &self.motorizzazione,
                            &h.conversation,
                            &AggiornamentoMotorizzazione {
                                pratica: a.pratica.clone(),
                                decorrenza: a.data,
                                indirizzo,
                                conducenti,
                            },
                        )?);
                    }
                }
                i.annullata = true;
                o.update.put(&self.iscrizioni, &key, &i).map_err(retry)?;
                EsitoAnpr::Applicata { il }
            }
        };
        o.send(
            Invio::new(
                &h.sender,
                &h.conversation,
                &AnnullamentoEsito {
                    pratica: a.pratica.clone(),
                    esito,
                },
            )?
            .reply_to(h.id),
        );
        Ok(o)
    }
}

/// The residents' index key of `cf` in `comune` (with `cf` empty: the comune's prefix).
fn residente(comune: &CodiceIstat, cf: &str) -> String {
    format!("{comune}/{cf}")
}

fn chiave(comune: &CodiceIstat, seq: u64) -> String {
    format!("{comune}/{seq:020}")
}

impl crate::anagrafe_variazioni::Registro for Anpr {
    fn lotto(&self, m: &Inbound, l: Lotto) -> crate::residenza_cambio::Result {
        let h = &m.envelope.header;
        let mut o = Outcome::new();
        let rispondi =
            |o: &mut Outcome, sequenza: u64, esito: EsitoLotto| -> Result<(), HandlerError> {
                o.send(Invio::new(
                    &h.sender,
                    &h.conversation,
                    &LottoEsito {
                        comune: l.comune.clone(),
                        sequenza,
                        esito,
                    },
                )?);
                Ok(())
            };
        if comune_di(m).as_ref() != Some(&l.comune) {
            rispondi(
                &mut o,
                l.sequenza,
                EsitoLotto::Rifiutato {
                    motivi: motivi(motivo(
                        "comune-mittente",
                        format!("{} sent a batch of comune {}", m.sender(), l.comune),
                    )),
                },
            )?;
            return Ok(o);
        }
        let c = l.comune.as_str();
        let mut st = self.feed.get(c).map_err(retry)?.unwrap_or(StatoFeed {
            prossimo: 1,
            ..StatoFeed::default()
        });
        if st
            .caricamento
            .as_ref()
            .is_some_and(|k| k.ricevute.len() < k.parti as usize)
        {
            // A load under way: the batch waits until it completes.
            o.update
                .put(&self.sospesi, &chiave(&l.comune, l.sequenza), &l)
                .map_err(retry)?;
            rispondi(
                &mut o,
                l.sequenza,
                EsitoLotto::FuoriSequenza {
                    atteso: st.prossimo,
                },
            )?;
            return Ok(o);
        }
        if l.sequenza < st.prossimo {
            rispondi(&mut o, l.sequenza, EsitoLotto::GiaApplicato {})?;
            return Ok(o);
        }
        if l.sequenza > st.prossimo {
            let held = self
                .sospesi
                .contains(&chiave(&l.comune, l.sequenza))
                .map_err(retry)?;
            if !held {
                o.update
                    .put(&self.sospesi, &chiave(&l.comune, l.sequenza), &l)
                    .map_err(retry)?;
            }
            rispondi(
                &mut o,
                l.sequenza,
                EsitoLotto::FuoriSequenza {
                    atteso: st.prossimo,
                },
            )?;
            // Ask once for what is missing before this batch (up to the first one held).
            let first_held = self
                .sospesi
                .scan(&format!("{c}/"))
                .map_err(retry)?
                .into_iter()
                .map(|(_, x)| x.sequenza)
                .filter(|s| *s > st.prossimo)
                .min()
                .unwrap_or(l.sequenza)
                .min(l.sequenza);
            let a = first_held - 1;
            if a > st.richiesto_fino || st.richiesto_fino < st.prossimo {
                o.send(Invio::new(
                    &h.sender,
                    &h.conversation,
                    &RichiestaReinvio {
                        comune: l.comune.clone(),
                        da: st.prossimo,
                        a,
                    },
                )?);
                st.richiesto_fino = a;
                o.update.put(&self.feed, c, &st).map_err(retry)?;
            }
            return Ok(o);
        }
        // The next one: apply it, then whatever was held behind it.
        let mut staged = HashMap::new();
        self.applica(&l, &mut o, &mut staged)?;
        rispondi(&mut o, l.sequenza, EsitoLotto::Applicato {})?;
        st.prossimo += 1;
        st.applicati += 1;
        while let Some(next) = self
            .sospesi
            .get(&chiave(&l.comune, st.prossimo))
            .map_err(retry)?
        {
            self.applica(&next, &mut o, &mut staged)?;
            o.update
                .remove(&self.sospesi, &chiave(&l.comune, st.prossimo));
            rispondi(&mut o, st.prossimo, EsitoLotto::Applicato {})?;
            st.prossimo += 1;
            st.applicati += 1;
        }
        o.update.put(&self.feed, c, &st).map_err(retry)?;
        Ok(o)
    }

    fn caricamento_iniziale(
        &self,
        m: &Inbound,
        k: CaricamentoIniziale,
    ) -> crate::residenza_cambio::Result {
        let h = &m.envelope.header;
        let mut o = Outcome::new();
        if comune_di(m).as_ref() != Some(&k.comune) {
            o.send(Invio::new(
                &h.sender,
                &h.conversation,
                &CaricamentoEsito {
                    comune: k.comune.clone(),
                    parte: k.parte,
                    completato: false,
                    motivi: vec![motivo(
                        "comune-mittente",
                        format!("{} sent a load of comune {}", m.sender(), k.comune),
                    )],
                },
            )?);
            return Ok(o);
        }
        let c = k.comune.as_str();
        let mut st = self.feed.get(c).map_err(retry)?.unwrap_or(StatoFeed {
            prossimo: 1,
            ..StatoFeed::default()
        });
        let nuovo = st.caricamento.as_ref().is_none_or(|x| x.al != k.al);
        if nuovo {
            // A new load replaces what the registry holds for the comune.
            let prefisso = residente(&k.comune, "");
            for (key, ()) in self.residenti.scan(&prefisso).map_err(retry)? {
                let cf = &key[prefisso.len()..];
                if self
                    .posizioni
                    .get(cf)
                    .map_err(retry)?
                    .is_some_and(|p| p.comune == k.comune)
                {
                    o.update.remove(&self.posizioni, cf);
                }
                o.update.remove(&self.residenti, &key);
            }
            st.caricamento = Some(Caricamento {
                al: k.al.clone(),
                parti: k.parti,
                ricevute: BTreeSet::new(),
                prossima_sequenza: k.prossima_sequenza,
            });
        }
        let Some(car) = st.caricamento.as_mut() else {
            return Err(HandlerError::Retry("the load vanished".into()));
        };
        let mut staged = HashMap::new();
        if car.ricevute.insert(k.parte) {
            for p in k.posizioni.iter() {
                let cf = p.persona.codice_fiscale.as_str();
                let posizione = Posizione {
                    persona: p.persona.clone(),
                    comune: k.comune.clone(),
                    indirizzo: Some(p.indirizzo.clone()),
                    famiglia: Some(p.famiglia.clone()),
                    dal: p.iscritto_dal,
                    pratica: None,
                    cessata: None,
                };
                self.scrivi(&mut o, cf, &posizione)?;
                staged.insert(cf.to_owned(), posizione);
            }
        }
        let completato = car.ricevute.len() >= car.parti as usize;
        if completato {
            st.prossimo = car.prossima_sequenza;
            st.richiesto_fino = 0;
            // Batches held during the load: those it covers go, the next ones apply.
            for (key, held) in self.sospesi.scan(&format!("{c}/")).map_err(retry)? {
                if held.sequenza < st.prossimo {
                    o.update.remove(&self.sospesi, &key);
                }
            }
            while let Some(next) = self
                .sospesi
                .get(&chiave(&k.comune, st.prossimo))
                .map_err(retry)?
            {
                self.applica(&next, &mut o, &mut staged)?;
                o.update
                    .remove(&self.sospesi, &chiave(&k.comune, st.prossimo));
                st.prossimo += 1;
                st.applicati += 1;
            }
        }
        o.send(Invio::new(
            &h.sender,
            &h.conversation,
            &CaricamentoEsito {
                comune: k.comune.clone(),
                parte: k.parte,
                completato,
                motivi: Vec::new(),
            },
        )?);
        o.update.put(&self.feed, c, &st).map_err(retry)?;
        Ok(o)
    }
}
