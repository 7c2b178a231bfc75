//! The ZTL office's own acts, one at a time in its term loop: examining an application when
//! an answer came, asking for more information, issuing or renewing the permit, rejecting,
//! deciding on the last of the 30 days, expiring permits; revocations by the official; and the
//! mail to applicants.

use snodo_schemas::formats::Data;
use snodo_schemas::services::dati::Motivo;
use snodo_schemas::services::mobilita_ztl::{
    RichiestaIntegrazione, Rigetto, Rilascio, Stato, StatoPermesso, TipoDomanda,
};
use snodo_schemas::services::pagamenti::PosizioneAnnulla;
use time::OffsetDateTime;

use super::{GIORNI_INTEGRAZIONE, Posta, Termine, Ufficio, atto_err, elenco, entita};
use crate::agenda::Deadline;
use crate::back_office::{dopo, elenco_motivi, giorno, istante, mezzanotte, motivo};
use crate::mail::Mail;
use crate::service::{Invio, Outcome, ServiceError};
use crate::shutdown::{Shutdown, stopped};
use crate::store::StoreError;
use crate::ztl::esame::{self, Attese, Esame};
use crate::ztl::pratica::{Esito, Passo, Permesso, Pratica};
use crate::ztl::scadenze::{self, GIORNI_MASSIMI};

impl Ufficio {
    pub(super) async fn run_terms(&self, shutdown: Shutdown) {
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
    /// and the hub's errors as [`crate::service::Committer::commit`] gives them.
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

    pub(super) async fn run_mail(&self, shutdown: Shutdown) {
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
