//! The comune's side of `residenza.cambio`: a declaration checked and refused or registered
//! within 2 working days, the TARI positions opened and closed, the police check within 45
//! days (silence confirms), the rejection notice with 10 days for observations, the
//! annulment; and, as comune of departure, people leaving and coming back.

use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceFiscalePersona, Data, Elenco};
use snodo_schemas::services::dati::{Indirizzo, Motivo};
use snodo_schemas::services::residenza_cambio::{
    Accertamento, Annullamento, AnnullamentoEsito, Cancellazione, Dichiarazione, Esito,
    EsitoAccertamento, EsitoAnpr, EsitoDichiarazione, Osservazioni, PreavvisoRigetto, Provenienza,
    Registrazione, RegistrazioneEsito, Relazione, Ripristino, Stato, StatoPratica,
};

use super::{Comune, Emigrazione, Passo, PosizioneTari, Posta, Pratica, Residente, Termine};
use crate::back_office::{dopo, elenco_motivi, giorno, istante, mezzanotte, motivo};
use crate::dispatch::HandlerError;
use crate::inbound::Inbound;
use crate::service::{Invio, Outcome, ServiceError, retry};
use crate::working_days::add_working_days;

/// Days the police have for the check.
pub const GIORNI_ACCERTAMENTO: i64 = 45;
/// Days the citizen has for observations on a rejection notice.
pub const GIORNI_OSSERVAZIONI: i64 = 10;
/// Working days the comune has to register a declaration.
pub const GIORNI_LAVORATIVI_REGISTRAZIONE: u32 = 2;

/// Street names compare without regard to case and spacing.
fn normale(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The same dwelling: street, number, stair and flat.
fn stessa_abitazione(a: &Indirizzo, b: &Indirizzo) -> bool {
    let o = |x: &Option<String>| x.as_deref().map(normale);
    a.comune == b.comune
        && normale(&a.via) == normale(&b.via)
        && normale(&a.civico) == normale(&b.civico)
        && o(&a.scala) == o(&b.scala)
        && o(&a.interno) == o(&b.interno)
}

impl Comune {
    /// What is wrong with a declaration, each reason with its code; none when it can be
    /// registered.
    fn verifica(&self, d: &Dichiarazione, oggi: Data) -> Result<Vec<Motivo>, HandlerError> {
        let mut m = Vec::new();
        if !d.firmata {
            m.push(motivo("firma-mancante", "La dichiarazione non è firmata."));
        }
        match &d.documento_identita {
            None => m.push(motivo(
                "documento-mancante",
                "Manca il documento d'identità del dichiarante.",
            )),
            Some(doc) if doc.scadenza < oggi => m.push(motivo(
                "documento-scaduto",
                format!("Il documento d'identità è scaduto il {}.", doc.scadenza),
            )),
            Some(_) => {}
        }
        if d.comune != self.codice {
            m.push(motivo(
                "comune-errato",
                format!(
                    "La dichiarazione è per il comune {}, non per il comune {}.",
                    d.comune, self.codice
                ),
            ));
        }
        if d.data_dichiarazione > oggi {
            m.push(motivo(
                "data-futura",
                format!(
                    "La data della dichiarazione ({}) è futura.",
                    d.data_dichiarazione
                ),
            ));
        }
        let i = &d.indirizzo;
        if i.comune != self.codice {
            m.push(motivo(
                "indirizzo-inesistente",
                format!(
                    "L'indirizzo è nel comune {}, non in questo comune.",
                    i.comune
                ),
            ));
        } else {
            match self
                .dati
                .stradario
                .iter()
                .find(|v| normale(&v.nome) == normale(&i.via))
            {
                None => m.push(motivo(
                    "indirizzo-inesistente",
                    format!("«{}» non risulta nello stradario comunale.", i.via),
                )),
                Some(via) => {
                    let numero: Option<u32> = i
                        .civico
                        .trim()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse().ok());
                    match (numero, via.civici) {
                        (None | Some(0), _) => m.push(motivo(
                            "civico-inesistente",
                            format!("«{}» non è un numero civico.", i.civico),
                        )),
                        (Some(n), Some(max)) if n > max => m.push(motivo(
                            "civico-inesistente",
                            format!(
                                "{} non ha il civico {} (l'ultimo è {max}).",
                                via.nome, i.civico
                            ),
                        )),
                        _ => {}
                    }
                }
            }
        }
        match &d.provenienza {
            Provenienza::AltroComune { comune } if *comune == self.codice => m.push(motivo(
                "provenienza-errata",
                "La provenienza è questo stesso comune: è un cambio di indirizzo.",
            )),
            Provenienza::AltroComune { comune }
                if !self.dati.comuni.is_empty() && !self.dati.comuni.contains(comune) =>
            {
                m.push(motivo(
                    "comune-sconosciuto",
                    format!("Il comune di provenienza {comune} non esiste."),
                ));
            }
            Provenienza::StessoComune {} => {
                for p in d.persone.iter() {
                    let cf = p.persona.codice_fiscale.as_str();
                    match self.residenti.get(cf).map_err(retry)? {
                        Some(r) if r.emigrato.is_none() => {
                            if stessa_abitazione(&r.indirizzo, i) {
                                m.push(motivo(
                                    "stesso-indirizzo",
                                    format!(
                                        "{cf} risiede già in {} {}.",
                                        r.indirizzo.via, r.indirizzo.civico
                                    ),
                                ));
                            }
                        }
                        _ => m.push(motivo(
                            "non-residente",
                            format!(
                                "{cf} non risiede in questo comune: non è un cambio di indirizzo."
                            ),
                        )),
                    }
                }
            }
            _ => {}
        }
        if self.pratiche.contains(&d.pratica).map_err(retry)? {
            m.push(motivo(
                "pratica-esistente",
                format!("La pratica {} esiste già.", d.pratica),
            ));
        }
        Ok(m)
    }

    fn portale(p: &Pratica) -> Result<EntityId, HandlerError> {
        p.portale
            .parse()
            .map_err(|e| HandlerError::Reject(format!("portal {}: {e}", p.portale)))
    }

    /// Moves `p` to `stato`, records it and tells the portal.
    fn passa(
        &self,
        p: &mut Pratica,
        stato: StatoPratica,
        nota: Option<String>,
        o: &mut Outcome,
    ) -> Result<(), HandlerError> {
        let now = self.clock.now();
        let il = istante(now)?;
        p.stato = stato;
        p.storia.push(Passo {
            stato,
            il: il.as_str().to_owned(),
            nota: nota.clone(),
        });
        o.send(Invio::new(
            &Self::portale(p)?,
            &p.conversazione,
            &Stato {
                pratica: p.pratica.clone(),
                stato,
                il,
                nota,
            },
        )?);
        Ok(())
    }

    fn salva(&self, p: &Pratica, o: &mut Outcome) -> Result<(), HandlerError> {
        o.update.put(&self.pratiche, &p.pratica, p).map_err(retry)
    }

    fn persone(p: &Pratica) -> Result<Elenco<CodiceFiscalePersona, 1, 30>, HandlerError> {
        Elenco::new(
            p.dichiarazione
                .persone
                .iter()
                .map(|x| x.persona.codice_fiscale.clone())
                .collect(),
        )
        .ok_or_else(|| HandlerError::Reject("a practice without people".into()))
    }

    /// Who holds the household's TARI position: the head of the family, else the declarant.
    fn intestatario(d: &Dichiarazione) -> CodiceFiscalePersona {
        d.persone
            .iter()
            .find(|p| p.relazione == Relazione::Intestatario)
            .map_or_else(
                || d.dichiarante.clone(),
                |p| p.persona.codice_fiscale.clone(),
            )
    }

    /// Registers a received practice: the registry, TARI, ANPR, the portal, and the police
    /// check begins.
    fn registra(&self, p: &mut Pratica, o: &mut Outcome) -> Result<(), HandlerError> {
        let d = p.dichiarazione.clone();
        let decorrenza = d.data_dichiarazione;
        let termine = dopo(decorrenza, GIORNI_ACCERTAMENTO)?;
        let vigilia = dopo(decorrenza, -1)?;
        // The registry office: each person now lives here.
        for x in d.persone.iter() {
            let cf = x.persona.codice_fiscale.as_str();
            if let Some(prev) = self.residenti.get(cf).map_err(retry)?
                && prev.emigrato.is_none()
            {
                p.precedenti.push(prev);
            }
            o.update
                .put(
                    &self.residenti,
                    cf,
                    &Residente {
                        persona: x.persona.clone(),
                        indirizzo: d.indirizzo.clone(),
                        famiglia: p.pratica.clone(),
                        dal: decorrenza,
                        pratica: Some(p.pratica.clone()),
                        emigrato: None,
                    },
                )
                .map_err(retry)?;
        }
        // The TARI office: a move within the comune closes the old position; the new one opens.
        if matches!(d.provenienza, Provenienza::StessoComune {}) {
            for x in d.persone.iter() {
                let cf = x.persona.codice_fiscale.as_str();
                for (key, mut pos) in self.tari.scan(&format!("{cf}/")).map_err(retry)? {
                    if pos.al.is_none() {
                        pos.al = Some(vigilia);
                        pos.chiusa_da = Some(p.pratica.clone());
                        o.update.put(&self.tari, &key, &pos).map_err(retry)?;
                    }
                }
            }
        }
        let intestatario = Self::intestatario(&d);
        o.update
            .put(
                &self.tari,
                &format!("{}/{}", intestatario.as_str(), p.pratica),
                &PosizioneTari {
                    intestatario,
                    indirizzo: d.indirizzo.clone(),
                    componenti: u8::try_from(d.persone.len()).unwrap_or(u8::MAX),
                    dal: decorrenza,
                    al: None,
                    aperta_da: Some(p.pratica.clone()),
                    chiusa_da: None,
                    annullata: false,
                },
            )
            .map_err(retry)?;
        // ANPR, then the portal.
        o.send(
            Invio::new(
                &self.anpr,
                &p.conversazione,
                &Registrazione {
                    pratica: p.pratica.clone(),
                    comune: self.codice.clone(),
                    decorrenza,
                    provenienza: d.provenienza.clone(),
                    indirizzo: d.indirizzo.clone(),
                    persone: d.persone.clone(),
                },
            )?
            .request(),
        );
        o.send(
            Invio::new(
                &Self::portale(p)?,
                &p.conversazione,
                &Esito {
                    pratica: p.pratica.clone(),
                    protocollo: p.protocollo.clone(),
                    esito: EsitoDichiarazione::Registrata {
                        decorrenza,
                        termine_accertamento: termine,
                    },
                },
            )?
            .reply_to(p.richiesta),
        );
        p.termine_accertamento = Some(termine);
        self.passa(
            p,
            StatoPratica::Registrata,
            Some(format!("Iscrizione con decorrenza dal {decorrenza}.")),
            o,
        )?;
        self.passa(
            p,
            StatoPratica::InAccertamento,
            Some(format!(
                "Accertamento della polizia municipale entro il {termine}."
            )),
            o,
        )?;
        self.termini
            .schedule(
                &mut o.update,
                mezzanotte(dopo(termine, 1)?),
                &p.pratica,
                &Termine::Accertamento,
            )
            .map_err(retry)?;
        Ok(())
    }

    /// Confirms a practice under check or after a rejection notice.
    fn conferma(&self, p: &mut Pratica, nota: &str, o: &mut Outcome) -> Result<(), HandlerError> {
        self.passa(p, StatoPratica::Confermata, Some(nota.to_owned()), o)?;
        self.termini
            .cancel(&mut o.update, &p.pratica)
            .map_err(retry)
    }

    /// Annuls a registration: ANPR restores the previous positions; here the people added
    /// leave the registry (or go back to their previous address), the TARI position opened
    /// never applied and the one closed is open again.
    fn annulla(&self, p: &mut Pratica, o: &mut Outcome) -> Result<(), HandlerError> {
        let oggi = giorno(self.clock.now())?;
        let motivi = Elenco::new(p.motivi.clone()).unwrap_or_else(|| {
            Elenco::new(vec![motivo(
                "dimora-non-abituale",
                "L'accertamento ha escluso la dimora abituale.",
            )])
            .unwrap_or_else(unreachable_motivi)
        });
        for x in p.dichiarazione.persone.iter() {
            let cf = x.persona.codice_fiscale.as_str();
            match p
                .precedenti
                .iter()
                .find(|r| r.persona.codice_fiscale == x.persona.codice_fiscale)
            {
                Some(prev) => o.update.put(&self.residenti, cf, prev).map_err(retry)?,
                None => o.update.remove(&self.residenti, cf),
            }
            for (key, mut pos) in self.tari.scan(&format!("{cf}/")).map_err(retry)? {
                if pos.aperta_da.as_deref() == Some(p.pratica.as_str()) {
                    pos.al = Some(dopo(pos.dal, -1)?);
                    pos.annullata = true;
                    o.update.put(&self.tari, &key, &pos).map_err(retry)?;
                } else if pos.chiusa_da.as_deref() == Some(p.pratica.as_str()) {
                    pos.al = None;
                    pos.chiusa_da = None;
                    o.update.put(&self.tari, &key, &pos).map_err(retry)?;
                }
            }
        }
        o.send(
            Invio::new(
                &self.anpr,
                &p.conversazione,
                &Annullamento {
                    pratica: p.pratica.clone(),
                    comune: self.codice.clone(),
                    data: oggi,
                    persone: Self::persone(p)?,
                    motivi: motivi.clone(),
                },
            )?
            .request(),
        );
        p.motivi = motivi.into_vec();
        let nota = format!("Iscrizione annullata: {}", elenco_motivi(&p.motivi));
        self.passa(p, StatoPratica::Annullata, Some(nota), o)?;
        self.termini
            .cancel(&mut o.update, &p.pratica)
            .map_err(retry)
    }

    /// A term of the agenda fell due for practice `pratica`.
    pub(super) fn scadenza(
        &self,
        pratica: &str,
        termine: Termine,
    ) -> Result<Outcome, HandlerError> {
        let mut o = Outcome::new();
        self.termini.cancel(&mut o.update, pratica).map_err(retry)?;
        let Some(mut p) = self.pratiche.get(pratica).map_err(retry)? else {
            return Ok(o);
        };
        match (termine, p.stato) {
            (Termine::Registrazione, StatoPratica::Ricevuta) => self.registra(&mut p, &mut o)?,
            (Termine::Accertamento, StatoPratica::InAccertamento) => self.conferma(
                &mut p,
                "Confermata per silenzio: nessun accertamento negativo entro 45 giorni.",
                &mut o,
            )?,
            (Termine::Osservazioni, StatoPratica::PreavvisoRigetto) => {
                if self.osservazioni.contains(pratica).map_err(retry)? {
                    // The official decides; remind them.
                    o.update
                        .put(
                            &self.posta,
                            &format!("{pratica}/osservazioni-scadute"),
                            &Posta {
                                oggetto: format!("Pratica {pratica}: osservazioni da esaminare"),
                                testo: format!(
                                    "Il termine per le osservazioni sulla pratica {pratica} è scaduto: \
                                     decidere se accoglierle o annullare l'iscrizione."
                                ),
                            },
                        )
                        .map_err(retry)?;
                } else {
                    p.motivi = p
                        .preavviso
                        .as_ref()
                        .map(|x| x.motivi.as_slice().to_vec())
                        .unwrap_or_default();
                    self.annulla(&mut p, &mut o)?;
                }
            }
            // The practice moved on before the term: nothing to do.
            _ => return Ok(o),
        }
        self.salva(&p, &mut o)?;
        Ok(o)
    }

    /// The official registers a received practice now, before its term.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an unknown practice or one not waiting for registration.
    pub async fn registra_ora(&self, pratica: &str) -> Result<(), ServiceError> {
        let _act = self.atti.lock().await;
        let mut p = self.attesa(pratica, StatoPratica::Ricevuta)?;
        let mut o = Outcome::new();
        self.registra(&mut p, &mut o).map_err(handler)?;
        self.salva(&p, &mut o).map_err(handler)?;
        self.commit(o).await
    }

    /// The municipal police report their check of the habitual dwelling: positive confirms
    /// the practice; negative sends the rejection notice, with 10 days for observations.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an unknown practice or one not under check.
    pub async fn accertamento(
        &self,
        pratica: &str,
        esito: EsitoAccertamento,
        verbale: Option<String>,
    ) -> Result<(), ServiceError> {
        let _act = self.atti.lock().await;
        let mut p = self.attesa(pratica, StatoPratica::InAccertamento)?;
        let oggi = giorno(self.clock.now()).map_err(handler)?;
        p.accertamento = Some(Accertamento {
            pratica: pratica.to_owned(),
            data: oggi,
            esito,
            verbale: verbale.clone(),
        });
        let mut o = Outcome::new();
        match esito {
            EsitoAccertamento::Positivo => self
                .conferma(
                    &mut p,
                    "Dimora abituale accertata dalla polizia municipale.",
                    &mut o,
                )
                .map_err(handler)?,
            EsitoAccertamento::Negativo => {
                let termine = dopo(oggi, GIORNI_OSSERVAZIONI).map_err(handler)?;
                let motivi = vec![motivo(
                    "dimora-non-abituale",
                    verbale.map_or_else(
                        || "La polizia municipale non ha accertato la dimora abituale.".to_owned(),
                        |v| {
                            format!(
                                "La polizia municipale non ha accertato la dimora abituale: {v}"
                            )
                        },
                    ),
                )];
                let preavviso = PreavvisoRigetto {
                    pratica: pratica.to_owned(),
                    protocollo: self.protocollo(oggi).map_err(Self::refused)?,
                    motivi: Elenco::new(motivi.clone()).unwrap_or_else(unreachable_motivi),
                    termine_osservazioni: termine,
                };
                o.send(
                    Invio::new(
                        &Self::portale(&p).map_err(handler)?,
                        &p.conversazione,
                        &preavviso,
                    )
                    .map_err(|e| ServiceError::Message(e.to_string()))?,
                );
                p.motivi = motivi;
                p.preavviso = Some(preavviso);
                self.passa(
                    &mut p,
                    StatoPratica::PreavvisoRigetto,
                    Some(format!("Osservazioni entro il {termine}.")),
                    &mut o,
                )
                .map_err(handler)?;
                self.termini
                    .schedule(
                        &mut o.update,
                        mezzanotte(dopo(termine, 1).map_err(handler)?),
                        pratica,
                        &Termine::Osservazioni,
                    )
                    .map_err(Self::refused)?;
            }
        }
        self.salva(&p, &mut o).map_err(handler)?;
        self.commit(o).await
    }

    /// The official decides on the citizen's observations: accepted confirms the practice,
    /// rejected annuls it.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an unknown practice, one without a rejection notice, or
    /// one without observations.
    pub async fn esamina_osservazioni(
        &self,
        pratica: &str,
        accolte: bool,
    ) -> Result<(), ServiceError> {
        let _act = self.atti.lock().await;
        let mut p = self.attesa(pratica, StatoPratica::PreavvisoRigetto)?;
        if !self.osservazioni.contains(pratica).map_err(Self::refused)? {
            return Err(ServiceError::Refused(format!(
                "practice {pratica} has no observations to decide on"
            )));
        }
        let mut o = Outcome::new();
        if accolte {
            self.conferma(
                &mut p,
                "Osservazioni accolte: iscrizione confermata.",
                &mut o,
            )
            .map_err(handler)?;
        } else {
            self.annulla(&mut p, &mut o).map_err(handler)?;
        }
        self.salva(&p, &mut o).map_err(handler)?;
        self.commit(o).await
    }

    /// Records ANPR's answer `esito` about practice `pratica` (`kind`: registrazione or
    /// annullamento).
    fn esito_anpr(
        &self,
        pratica: &str,
        kind: &str,
        esito: EsitoAnpr,
    ) -> crate::residenza_cambio::Result {
        if !self.pratiche.contains(pratica).map_err(retry)? {
            return Err(HandlerError::Reject(format!("no practice {pratica}")));
        }
        if let EsitoAnpr::Respinta { motivi } = &esito {
            tracing::error!(%pratica, %kind, reasons = %elenco_motivi(motivi.as_slice()), "ANPR did not apply a change of residence.");
        }
        let mut o = Outcome::new();
        o.update
            .put(&self.esiti_anpr, &format!("{pratica}/{kind}"), &esito)
            .map_err(retry)?;
        Ok(o)
    }

    /// The practice `pratica`, which must be in state `stato`.
    fn attesa(&self, pratica: &str, stato: StatoPratica) -> Result<Pratica, ServiceError> {
        let p = self
            .pratiche
            .get(pratica)
            .map_err(Self::refused)?
            .ok_or_else(|| ServiceError::Refused(format!("no practice {pratica}")))?;
        if p.stato != stato {
            return Err(ServiceError::Refused(format!(
                "practice {pratica} is {:?}, not {stato:?}",
                p.stato
            )));
        }
        Ok(p)
    }

    async fn commit(&self, o: Outcome) -> Result<(), ServiceError> {
        let r = self.committer.commit(o).await.map(|_| ());
        self.svegli();
        r
    }
}

fn handler(e: HandlerError) -> ServiceError {
    match e {
        HandlerError::Retry(m) => ServiceError::Unreachable(m),
        HandlerError::Reject(m) | HandlerError::Decline(m) => ServiceError::Refused(m),
    }
}

/// A one-reason list, for the places where the list is known not to be empty.
fn unreachable_motivi() -> Elenco<Motivo, 1, 20> {
    Elenco::new(vec![motivo("annullata", "Iscrizione annullata.")])
        .unwrap_or_else(|| unreachable!("one reason is a valid list"))
}

impl crate::residenza_cambio::Comune for Comune {
    fn dichiarazione(&self, m: &Inbound, d: Dichiarazione) -> crate::residenza_cambio::Result {
        let now = self.clock.now();
        let oggi = giorno(now)?;
        let motivi = self.verifica(&d, oggi)?;
        let h = &m.envelope.header;
        let mut o = Outcome::new();
        if motivi.iter().any(|x| x.codice == "pratica-esistente") {
            // Never overwrite a practice: answer, record nothing.
            o.send(
                Invio::new(
                    &h.sender,
                    &h.conversation,
                    &Esito {
                        pratica: d.pratica.clone(),
                        protocollo: self.protocollo(oggi).map_err(retry)?,
                        esito: EsitoDichiarazione::Rifiutata {
                            motivi: Elenco::new(motivi).unwrap_or_else(unreachable_motivi),
                        },
                    },
                )?
                .reply_to(h.id),
            );
            return Ok(o);
        }
        let mut p = Pratica {
            pratica: d.pratica.clone(),
            stato: StatoPratica::Ricevuta,
            storia: Vec::new(),
            protocollo: self.protocollo(oggi).map_err(retry)?,
            dichiarazione: d,
            portale: h.sender.to_string(),
            richiesta: h.id,
            conversazione: h.conversation.clone(),
            motivi: Vec::new(),
            termine_accertamento: None,
            accertamento: None,
            preavviso: None,
            precedenti: Vec::new(),
        };
        let nota = format!("Protocollo {}.", p.protocollo.numero);
        self.passa(&mut p, StatoPratica::Ricevuta, Some(nota), &mut o)?;
        if let Some(lista) = Elenco::new(motivi) {
            let nota = elenco_motivi(lista.as_slice());
            o.send(
                Invio::new(
                    &h.sender,
                    &h.conversation,
                    &Esito {
                        pratica: p.pratica.clone(),
                        protocollo: p.protocollo.clone(),
                        esito: EsitoDichiarazione::Rifiutata {
                            motivi: lista.clone(),
                        },
                    },
                )?
                .reply_to(h.id),
            );
            p.motivi = lista.into_vec();
            self.passa(&mut p, StatoPratica::Rifiutata, Some(nota), &mut o)?;
        } else {
            let entro = add_working_days(oggi.date(), GIORNI_LAVORATIVI_REGISTRAZIONE)
                .ok()
                .and_then(Data::from_date)
                .ok_or_else(|| {
                    HandlerError::Reject("the registration term is past the calendar".into())
                })?;
            self.termini
                .schedule(
                    &mut o.update,
                    mezzanotte(entro),
                    &p.pratica,
                    &Termine::Registrazione,
                )
                .map_err(retry)?;
            let d = &p.dichiarazione;
            o.update
                .put(
                    &self.posta,
                    &format!("{}/nuova", p.pratica),
                    &Posta {
                        oggetto: format!(
                            "Nuova pratica di residenza {} (protocollo {})",
                            p.pratica, p.protocollo.numero
                        ),
                        testo: format!(
                            "Dichiarazione di residenza del {} da {}: {} persone, in {} {}.\n\
                             Da registrare entro il {entro}.\n",
                            d.data_dichiarazione,
                            d.dichiarante,
                            d.persone.len(),
                            d.indirizzo.via,
                            d.indirizzo.civico
                        ),
                    },
                )
                .map_err(retry)?;
        }
        self.salva(&p, &mut o)?;
        Ok(o)
    }

    fn registrazione_esito(
        &self,
        _m: &Inbound,
        e: RegistrazioneEsito,
    ) -> crate::residenza_cambio::Result {
        self.esito_anpr(&e.pratica, "registrazione", e.esito)
    }

    fn annullamento_esito(
        &self,
        _m: &Inbound,
        e: AnnullamentoEsito,
    ) -> crate::residenza_cambio::Result {
        self.esito_anpr(&e.pratica, "annullamento", e.esito)
    }

    fn osservazioni(&self, m: &Inbound, os: Osservazioni) -> crate::residenza_cambio::Result {
        let mut o = Outcome::new();
        let Some(p) = self.pratiche.get(&os.pratica).map_err(retry)? else {
            return Err(HandlerError::Reject(format!("no practice {}", os.pratica)));
        };
        if p.portale != m.sender().to_string() {
            return Err(HandlerError::Reject(format!(
                "observations on practice {} from {}, not from its portal",
                os.pratica,
                m.sender()
            )));
        }
        if p.stato != StatoPratica::PreavvisoRigetto {
            return Err(HandlerError::Reject(format!(
                "observations on practice {}, which is {:?} and awaits none",
                os.pratica, p.stato
            )));
        }
        o.update
            .put(
                &self.posta,
                &format!("{}/osservazioni", p.pratica),
                &Posta {
                    oggetto: format!("Pratica {}: osservazioni del cittadino", p.pratica),
                    testo: format!("Osservazioni del {}:\n{}\n", os.data, os.testo),
                },
            )
            .map_err(retry)?;
        o.update
            .put(&self.osservazioni, &p.pratica, &os)
            .map_err(retry)?;
        Ok(o)
    }

    fn cancellazione(&self, _m: &Inbound, c: Cancellazione) -> crate::residenza_cambio::Result {
        if c.comune != self.codice {
            return Err(HandlerError::Reject(format!(
                "a departure from comune {}, not this one ({})",
                c.comune, self.codice
            )));
        }
        let mut o = Outcome::new();
        let vigilia = dopo(c.decorrenza, -1)?;
        for cf in c.persone.iter() {
            let key = cf.as_str();
            if let Some(mut r) = self.residenti.get(key).map_err(retry)? {
                r.emigrato = Some(Emigrazione {
                    comune: c.comune_arrivo.clone(),
                    dal: c.decorrenza,
                    pratica: c.pratica.clone(),
                });
                o.update.put(&self.residenti, key, &r).map_err(retry)?;
            } else {
                tracing::warn!(codice_fiscale = %key, pratica = %c.pratica, "A departure of someone this registry does not hold.");
            }
            // The TARI office of departure closes the positions the leavers held.
            for (k, mut pos) in self.tari.scan(&format!("{key}/")).map_err(retry)? {
                if pos.al.is_none() {
                    pos.al = Some(vigilia);
                    pos.chiusa_da = Some(c.pratica.clone());
                    o.update.put(&self.tari, &k, &pos).map_err(retry)?;
                }
            }
        }
        Ok(o)
    }

    fn ripristino(&self, _m: &Inbound, r: Ripristino) -> crate::residenza_cambio::Result {
        if r.comune != self.codice {
            return Err(HandlerError::Reject(format!(
                "a restoration in comune {}, not this one ({})",
                r.comune, self.codice
            )));
        }
        let mut o = Outcome::new();
        for cf in r.persone.iter() {
            let key = cf.as_str();
            if let Some(mut res) = self.residenti.get(key).map_err(retry)?
                && res
                    .emigrato
                    .as_ref()
                    .is_some_and(|e| e.pratica == r.pratica)
            {
                res.emigrato = None;
                o.update.put(&self.residenti, key, &res).map_err(retry)?;
            }
            for (k, mut pos) in self.tari.scan(&format!("{key}/")).map_err(retry)? {
                if pos.chiusa_da.as_deref() == Some(r.pratica.as_str()) {
                    pos.al = None;
                    pos.chiusa_da = None;
                    o.update.put(&self.tari, &k, &pos).map_err(retry)?;
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_schemas::formats::CodiceIstat;

    fn ind(via: &str, civico: &str, interno: Option<&str>) -> Indirizzo {
        Indirizzo {
            comune: CodiceIstat::parse("001272").unwrap(),
            via: via.into(),
            civico: civico.into(),
            scala: None,
            piano: None,
            interno: interno.map(Into::into),
            cap: None,
        }
    }

    #[test]
    fn street_names_compare_without_regard_to_case_and_spacing() {
        assert_eq!(
            normale("  Via   Giuseppe GARIBALDI "),
            "via giuseppe garibaldi"
        );
        assert_eq!(normale("Via Roma"), normale("via roma"));
        assert_ne!(normale("Via Roma"), normale("Viale Roma"));
    }

    #[test]
    fn the_same_dwelling_is_the_same_street_number_and_flat() {
        let a = ind("Via Roma", "10", Some("3"));
        assert!(stessa_abitazione(&a, &ind("via  roma", "10", Some("3"))));
        assert!(!stessa_abitazione(&a, &ind("Via Roma", "10", Some("4"))));
        assert!(!stessa_abitazione(&a, &ind("Via Roma", "10", None)));
        assert!(!stessa_abitazione(&a, &ind("Via Roma", "12", Some("3"))));
        let mut altrove = a.clone();
        altrove.comune = CodiceIstat::parse("004078").unwrap();
        assert!(!stessa_abitazione(&a, &altrove));
    }
}
