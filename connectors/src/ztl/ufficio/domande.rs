//! What the ZTL office does with the messages it receives: an application is checked on its
//! face and registered, with its checks asked of ANPR, the motor registry and the payment
//! provider; every answer (a check, more information, the fee's notice and receipt) is kept
//! for the office's term loop to examine.

use snodo_envelopes::EntityId;
use snodo_schemas::formats::{Elenco, Importo, TipoSoggetto};
use snodo_schemas::services::dati::{Motivo, Protocollo, Soggetto};
use snodo_schemas::services::mobilita_ztl::{
    Domanda, Integrazione, Rigetto, StatoPermesso, TipoDomanda, VerificaResidenza,
    VerificaResidenzaEsito, VerificaVeicolo, VerificaVeicoloEsito,
};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneCrea, PosizioneCreata, Ricevuta, Trasferimento,
};

use super::{GIORNI_DECISIONE, GIORNI_RINNOVO, Termine, Ufficio, elenco};
use crate::back_office::{dopo, elenco_motivi, giorno, istante, mezzanotte, motivo};
use crate::dispatch::{Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service::{self, Invio, ServiceError, retry};
use crate::typed;
use crate::ztl::esame;
use crate::ztl::pratica::{Esito, Passo, Permesso, Pratica};
use crate::ztl::scadenze::{self, GIORNI_MASSIMI};

impl Ufficio {
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

    pub(super) fn on_domanda(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
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
            rate: None,
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

    pub(super) fn on_residenza(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let r: VerificaResidenzaEsito = service::read(inbound)?;
        self.da(inbound, &self.impostazioni.anpr, "the population registry")?;
        self.pratica_nota(&r.pratica)?;
        let numero = r.pratica.clone();
        self.registra(&numero, "residenza", &Esito::Residenza(r), effects)
    }

    pub(super) fn on_veicolo(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
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

    pub(super) fn on_integrazione(
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

    /// The application whose fee is position `iupd`; another office's position (of the
    /// same comune) is declined.
    fn numero_di(&self, iupd: &str) -> Result<String, HandlerError> {
        self.posizioni.get(iupd).map_err(retry)?.ok_or_else(|| {
            HandlerError::Decline(format!("position {iupd} is not one of the ZTL office's"))
        })
    }

    /// Takes the part of a settlement flow that lists this office's fees.
    pub(super) fn on_rendicontazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let mut own = std::collections::HashSet::new();
        for (_, e) in self.esiti.scan("").map_err(retry)? {
            if let Esito::Posizione(c) = e {
                own.insert(c.iuv.as_str().to_owned());
            }
        }
        crate::typed::rendicontazione(
            inbound,
            &self.impostazioni.nodo,
            &own,
            &self.rendicontati,
            effects,
            "ZTL office",
        )
        .map(|_| ())
    }

    pub(super) fn on_creata(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let c: PosizioneCreata = service::read(inbound)?;
        let numero = self.numero_di(&c.iupd)?;
        self.da(inbound, &self.impostazioni.nodo, "the payment provider")?;
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

    pub(super) fn on_ricevuta(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        let numero = self.numero_di(&r.iupd)?;
        self.da(inbound, &self.impostazioni.nodo, "the payment provider")?;
        tracing::info!(pratica = %numero, nav = %r.nav, "ZTL fee paid.");
        let esito = Esito::Pagamento {
            ricevuta: r.id,
            importo: r.importo,
            il: r.pagato_il,
        };
        self.registra(&numero, "pagamento", &esito, effects)
    }
}
