//! The comune's municipal police office (`mobilita.contravvenzioni`), a back office role of a
//! comune entity: it notifies fines with their notices (reduced and ordinary debt positions at
//! the payment provider), answers lookups with the amount due on the day, takes the provider's
//! receipts, issues the increased notice once 60 days pass unpaid and unappealed (an agenda on
//! the clock), receives appeals — refusing late or inadmissible ones with the reason, forwarding
//! those to the Prefect — and applies the Prefect's decision. Each change of state reaches the
//! portal.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Elenco, Importo, Istante, Targa};
use snodo_schemas::services::dati::{Motivo, Protocollo, Soggetto};
use snodo_schemas::services::mobilita_contravvenzioni::{
    Autorita, AvvisoVerbale, Criterio, DatiVerbale, Decisione, EsitoDecisione, Ricerca,
    RicercaEsito, Ricorso, RicorsoRicevuta, RicorsoTrasmissione, SERVICE, Stato, StatoVerbale,
    TipoAvviso, Verbale,
};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneAnnulla, PosizioneCrea, PosizioneCreata, PosizioneStato, Ricevuta, Trasferimento,
};
use time::Date;

use super::importi::{self, Sanzione};
use crate::HubClient;
use crate::agenda::Agenda;
use crate::back_office::{dopo, giorno, istante, mezzanotte, motivo};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};

/// The police office's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// The comune.
    pub comune: CodiceIstat,
    /// Its name, printed on the notices.
    pub denominazione: String,
    /// Its codice fiscale, as creditor.
    pub codice_fiscale: CodiceFiscale,
    /// The account fines are paid into.
    pub iban: String,
    /// The payment provider.
    pub nodo: EntityId,
    /// The portal that acts for citizens.
    pub portale: EntityId,
    /// The prefecture that decides appeals to the Prefect.
    pub prefettura: EntityId,
}

/// A fine to notify, as the officer wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NuovoVerbale {
    /// The fine's number, from the officer's form.
    pub numero: String,
    /// When the violation happened.
    pub il: Istante,
    /// Where.
    pub luogo: String,
    /// The rule broken.
    pub norma: String,
    /// What happened.
    pub descrizione: String,
    /// The vehicle.
    pub targa: Targa,
    /// The person liable.
    pub trasgressore: Soggetto,
    /// The rule's minimum.
    pub minimo: Importo,
    /// The rule's maximum.
    pub massimo: Importo,
    /// Notification and procedure costs.
    pub spese: Importo,
    /// Licence points deducted.
    pub punti: Option<u8>,
    /// Confiscation or licence suspension applies.
    pub sanzione_accessoria: bool,
}

/// A payment the provider's receipt recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagamento {
    /// The notice paid.
    pub tipo: TipoAvviso,
    /// How much.
    pub importo: Importo,
    /// The day paid.
    pub il: Data,
}

/// An appeal the office received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RicorsoRicevuto {
    /// The appeal.
    pub ricorso: Ricorso,
    /// The office's protocol of it.
    pub protocollo: Protocollo,
}

/// A fine's file: the fine as notified (with its notices) and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fascicolo {
    /// The fine; its `dovuto` is left empty here (it depends on the day asked).
    pub verbale: DatiVerbale,
    /// The notices' positions at the provider, by IUPD.
    pub posizioni: Vec<(String, TipoAvviso)>,
    /// Its payment, once the receipt came.
    #[serde(default)]
    pub pagamento: Option<Pagamento>,
    /// The appeals received (to the Prefect, then perhaps to the Justice of the Peace).
    #[serde(default)]
    pub ricorsi: Vec<RicorsoRicevuto>,
    /// The Prefect's decision.
    #[serde(default)]
    pub decisione: Option<Decisione>,
}

/// Why an office operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreComando {
    /// The fine cannot be notified as written.
    #[error("{0}")]
    Verbale(String),
    /// The store, the hub or the provider failed; trying again may work.
    #[error("{0}")]
    Sistema(String),
}

impl ErroreComando {
    /// True when trying again may work.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErroreComando::Sistema(_))
    }
}

/// The amounts of `v`.
#[must_use]
pub fn sanzione(v: &DatiVerbale) -> Sanzione {
    Sanzione {
        minimo: v.minimo,
        massimo: v.massimo,
        spese: v.spese,
        accessoria: v.sanzione_accessoria,
    }
}

/// The notice of `v` that fits `oggi`, if anything is payable: by the calendar while notified,
/// the increased one once enforceable, the injunction until its last day.
#[must_use]
pub fn dovuto(v: &DatiVerbale, oggi: Date) -> Option<AvvisoVerbale> {
    let tipo = match v.stato {
        StatoVerbale::Notificato => {
            importi::tipo_il(&sanzione(v), v.notificato_il.as_ref()?.date(), oggi).ok()?
        }
        StatoVerbale::Esecutivo => TipoAvviso::Maggiorato,
        StatoVerbale::Ingiunzione => TipoAvviso::Ingiunzione,
        _ => return None,
    };
    v.avvisi
        .iter()
        .find(|a| a.tipo == tipo && a.scadenza.date() >= oggi)
        .cloned()
}

fn sys(e: impl std::fmt::Display) -> ErroreComando {
    ErroreComando::Sistema(e.to_string())
}

fn nome(tipo: TipoAvviso) -> &'static str {
    match tipo {
        TipoAvviso::Ridotto => "ridotto",
        TipoAvviso::Ordinario => "ordinario",
        TipoAvviso::Maggiorato => "maggiorato",
        TipoAvviso::Ingiunzione => "ingiunzione",
    }
}

/// The comune's municipal police office.
pub struct Comando {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    /// Fine number → its file.
    fascicoli: Tree<Fascicolo>,
    /// IUPD → fine number, to take receipts (and to know the provider's messages about
    /// this office's positions from the other offices' of the comune).
    iupd: Tree<String>,
    /// IUV → the settlement flow that reported it.
    rendicontati: Tree<String>,
    /// Counters: `protocollo/YEAR`.
    contatori: Tree<u64>,
    /// Answers that reached the inbox, by request id.
    risposte: Tree<Value>,
    /// Appeals answered, by `portal/pratica`: the same answer to a retry.
    pratiche: Tree<RicorsoRicevuta>,
    /// The 61st day of each notified fine (key and value: its number): unpaid and unappealed,
    /// it becomes enforceable at half the maximum.
    scadenze: Agenda<String>,
}

impl std::fmt::Debug for Comando {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Comando")
            .field("comune", &self.impostazioni.comune)
            .finish_non_exhaustive()
    }
}

impl Comando {
    /// The police office for `client`'s entity, keeping its state in `store`.
    ///
    /// # Errors
    /// A message when the store cannot be used.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        impostazioni: Impostazioni,
    ) -> Result<Arc<Self>, String> {
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Comando {
            fascicoli: store.tree("contravvenzioni.fascicoli").map_err(s)?,
            iupd: store.tree("contravvenzioni.iupd").map_err(s)?,
            rendicontati: store.tree("contravvenzioni.rendicontati").map_err(s)?,
            contatori: store.tree("contravvenzioni.contatori").map_err(s)?,
            risposte: store.tree("contravvenzioni.risposte").map_err(s)?,
            pratiche: store.tree("contravvenzioni.pratiche").map_err(s)?,
            scadenze: Agenda::open(&store, "contravvenzioni.scadenze").map_err(s)?,
            sender: Sender::new(client, store).map_err(s)?,
            clock,
            impostazioni,
        }))
    }

    /// Routes the portal's requests, the prefecture's decisions and the provider's messages.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let iupd = self.iupd.clone();
        let answers = Answers::for_positions(self.risposte.clone(), move |i| iupd.contains(i));
        builder
            .route(
                SERVICE,
                "ricerca",
                Route::handler(self, Comando::on_ricerca),
            )
            .route(
                SERVICE,
                "ricorso",
                Route::handler(self, Comando::on_ricorso),
            )
            .route(
                SERVICE,
                "decisione",
                Route::handler(self, Comando::on_decisione),
            )
            .route(
                SERVICE,
                "stato",
                Route::handler(self, Comando::on_ingiunzione_pagata),
            )
            .route(
                "pagamenti",
                "ricevuta",
                Route::handler(self, Comando::on_ricevuta),
            )
            .route(
                "pagamenti",
                "posizione-stato",
                Route::handler(self, Comando::on_posizione_stato),
            )
            .route(
                "pagamenti",
                "rendicontazione",
                Route::handler(self, Comando::on_rendicontazione),
            )
            .route("pagamenti", "posizione-creata", answers.clone())
            .route("pagamenti", "posizione-esito", answers)
    }

    /// The settlement flow that reported the notice `nav` of this office, if one did.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn rendicontato(
        &self,
        nav: &snodo_schemas::formats::Nav,
    ) -> Result<Option<String>, StoreError> {
        self.rendicontati.get(nav.iuv().as_str())
    }

    /// Takes the part of a settlement flow that lists this office's notices.
    fn on_rendicontazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let cf = &self.impostazioni.codice_fiscale;
        let mut own = std::collections::HashSet::new();
        for (_, f) in self.fascicoli.scan("").map_err(service::retry)? {
            own.extend(
                f.verbale
                    .avvisi
                    .iter()
                    .filter(|a| &a.ente == cf)
                    .map(|a| a.nav.iuv().as_str().to_owned()),
            );
        }
        typed::rendicontazione(
            inbound,
            &self.impostazioni.nodo,
            &own,
            &self.rendicontati,
            effects,
            "municipal police",
        )
        .map(|_| ())
    }

    fn oggi(&self) -> Result<Data, HandlerError> {
        giorno(self.clock.now())
    }

    /// The file of fine `numero`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn fascicolo(&self, numero: &str) -> Result<Option<Fascicolo>, StoreError> {
        self.fascicoli.get(numero)
    }

    fn protocollo(&self) -> Result<Protocollo, HandlerError> {
        let data = self.oggi()?;
        let anno = data.date().year();
        let n = self
            .contatori
            .update(&format!("protocollo/{anno}"), |n| Some(n.unwrap_or(0) + 1))
            .map_err(service::retry)?
            .unwrap_or(1);
        Ok(Protocollo {
            numero: format!("PL/{anno}/{n:06}"),
            data,
        })
    }

    fn iupd_di(&self, numero: &str, tipo: TipoAvviso) -> String {
        format!("CDS-{}-{numero}-{}", self.impostazioni.comune, nome(tipo))
    }

    /// Asks the provider for the position of `tipo` of the fine `numero` of `il`, owed by
    /// `debitore`, and returns its notice.
    async fn posizione(
        &self,
        (numero, il, debitore): (&str, &Istante, &Soggetto),
        s: &Sanzione,
        tipo: TipoAvviso,
        scadenza: Data,
    ) -> Result<(String, AvvisoVerbale), ErroreComando> {
        let importo =
            importi::importo(s, tipo).map_err(|e| ErroreComando::Verbale(e.to_string()))?;
        let iupd = self.iupd_di(numero, tipo);
        let causale = format!(
            "Verbale {numero} del {} ({}) {}",
            il.datetime().date(),
            nome(tipo),
            self.impostazioni.denominazione
        );
        let i = &self.impostazioni;
        let req = PosizioneCrea {
            iupd: iupd.clone(),
            ente: i.codice_fiscale.clone(),
            debitore: debitore.clone(),
            importo,
            scadenza,
            validita: None,
            causale: causale.clone(),
            trasferimenti: Elenco::new(vec![Trasferimento {
                indice: 1,
                ente: i.codice_fiscale.clone(),
                iban: Iban(i.iban.clone()),
                importo,
                causale,
                tassonomia: "9/0201102IM/".into(),
            }])
            .ok_or_else(|| sys("no transfer"))?,
            rate: None,
        };
        let env = typed::message(
            self.sender.client(),
            &i.nodo,
            Profile::Request,
            Some(&iupd),
            None,
            &req,
        )
        .map_err(sys)?;
        let creata = self
            .sender
            .ask::<PosizioneCreata>(&env, &self.risposte, Duration::from_secs(10))
            .await
            .map_err(sys)?;
        Ok((
            iupd,
            AvvisoVerbale {
                tipo,
                ente: i.codice_fiscale.clone(),
                nav: creata.nav,
                importo,
                scadenza,
            },
        ))
    }

    /// Notifies fine `n` on `notificato_il`: its reduced notice (unless an accessory sanction
    /// excludes it, payable for 5 days) and ordinary one (60 days) become debt positions at
    /// the provider, the fine goes to the portal, and its 61st day goes in the agenda.
    /// Notifying the same number again returns the fine as first notified.
    ///
    /// # Errors
    /// [`ErroreComando::Verbale`] when the amounts are inconsistent; [`ErroreComando::Sistema`]
    /// when the provider, the hub or the store fail (trying again is safe).
    pub async fn notifica(
        &self,
        n: NuovoVerbale,
        notificato_il: Data,
    ) -> Result<DatiVerbale, ErroreComando> {
        // The number keys the fine's file, its positions and its deadline.
        if n.numero.is_empty()
            || n.numero.len() > 35
            || !n
                .numero
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ErroreComando::Verbale(format!(
                "a fine's number is 1 to 35 letters, digits, `-` or `_`; `{}` is not",
                n.numero
            )));
        }
        if let Some(f) = self.fascicoli.get(&n.numero).map_err(sys)? {
            return Ok(f.verbale);
        }
        if n.minimo > n.massimo {
            return Err(ErroreComando::Verbale(format!(
                "the minimum {} is above the maximum {}",
                n.minimo, n.massimo
            )));
        }
        if notificato_il.date() < n.il.datetime().date() {
            return Err(ErroreComando::Verbale(format!(
                "notified on {notificato_il}, before the violation of {}",
                n.il
            )));
        }
        let d = |days| dopo(notificato_il, days).map_err(|e| ErroreComando::Verbale(e.to_string()));
        let mut tipi = vec![(TipoAvviso::Ordinario, d(importi::GIORNI_ORDINARIO)?)];
        if !n.sanzione_accessoria {
            tipi.insert(0, (TipoAvviso::Ridotto, d(importi::GIORNI_RIDOTTO)?));
        }
        let s = Sanzione {
            minimo: n.minimo,
            massimo: n.massimo,
            spese: n.spese,
            accessoria: n.sanzione_accessoria,
        };
        let mut avvisi = Vec::new();
        let mut posizioni = Vec::new();
        for (tipo, scadenza) in tipi {
            let (iupd, a) = self
                .posizione((&n.numero, &n.il, &n.trasgressore), &s, tipo, scadenza)
                .await?;
            posizioni.push((iupd, tipo));
            avvisi.push(a);
        }
        let verbale = DatiVerbale {
            numero: n.numero,
            comune: self.impostazioni.comune.clone(),
            il: n.il,
            luogo: n.luogo,
            norma: n.norma,
            descrizione: n.descrizione,
            targa: n.targa,
            trasgressore: n.trasgressore,
            notificato_il: Some(notificato_il),
            minimo: n.minimo,
            massimo: n.massimo,
            spese: n.spese,
            punti: n.punti,
            sanzione_accessoria: n.sanzione_accessoria,
            avvisi: Elenco::new(avvisi).ok_or_else(|| sys("a fine carries 1 to 3 notices"))?,
            dovuto: None,
            stato: StatoVerbale::Notificato,
        };
        let mut effects = Effects::default();
        let u = &mut effects.update;
        for (iupd, _) in &posizioni {
            u.put(&self.iupd, iupd, &verbale.numero).map_err(sys)?;
        }
        u.put(
            &self.fascicoli,
            &verbale.numero,
            &Fascicolo {
                verbale: verbale.clone(),
                posizioni,
                pagamento: None,
                ricorsi: Vec::new(),
                decisione: None,
            },
        )
        .map_err(sys)?;
        self.scadenze
            .schedule(
                u,
                mezzanotte(d(importi::GIORNI_ORDINARIO + 1)?),
                &verbale.numero,
                &verbale.numero,
            )
            .map_err(sys)?;
        let oggi = giorno(self.clock.now()).map_err(sys)?;
        let notificato = Verbale {
            verbale: DatiVerbale {
                dovuto: dovuto(&verbale, oggi.date()),
                ..verbale.clone()
            },
        };
        effects.send(
            typed::message(
                self.sender.client(),
                &self.impostazioni.portale,
                Profile::Oneway,
                Some(&verbale.numero),
                None,
                &notificato,
            )
            .map_err(sys)?,
        );
        self.sender.commit(effects).await.map_err(sys)?;
        self.scadenze.wake();
        tracing::info!(fine = %verbale.numero, plate = %verbale.targa.as_str(), "Fine notified.");
        Ok(verbale)
    }

    /// Stages a `stato` of `v` to the portal.
    fn stato(
        &self,
        effects: &mut Effects,
        v: &DatiVerbale,
        nota: Option<String>,
    ) -> Result<(), HandlerError> {
        let s = Stato {
            numero_verbale: v.numero.clone(),
            comune: v.comune.clone(),
            stato: v.stato,
            il: istante(self.clock.now())?,
            nota,
        };
        effects.send(
            typed::message(
                self.sender.client(),
                &self.impostazioni.portale,
                Profile::Oneway,
                Some(&v.numero),
                None,
                &s,
            )
            .map_err(HandlerError::Reject)?,
        );
        Ok(())
    }

    /// Stages the cancellation at the provider of every position of `f` but `tranne`.
    fn annulla(
        &self,
        effects: &mut Effects,
        f: &Fascicolo,
        tranne: Option<TipoAvviso>,
        motivo: &str,
    ) -> Result<(), HandlerError> {
        for (iupd, tipo) in &f.posizioni {
            if Some(*tipo) == tranne {
                continue;
            }
            let req = PosizioneAnnulla {
                iupd: iupd.clone(),
                ente: self.impostazioni.codice_fiscale.clone(),
                motivo: motivo.to_owned(),
            };
            effects.send(
                typed::message(
                    self.sender.client(),
                    &self.impostazioni.nodo,
                    Profile::Request,
                    Some(iupd),
                    None,
                    &req,
                )
                .map_err(HandlerError::Reject)?,
            );
        }
        Ok(())
    }

    /// The fines matching `criterio`, with what is due on `oggi`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn cerca(&self, criterio: &Criterio, oggi: Date) -> Result<Vec<DatiVerbale>, StoreError> {
        let trovato = |v: &DatiVerbale| match criterio {
            Criterio::Targa { targa, dal, al } => {
                let giorno = v.il.datetime().date();
                &v.targa == targa && dal.date() <= giorno && giorno <= al.date()
            }
            Criterio::Verbale {
                numero,
                targa,
                data,
            } => &v.numero == numero && &v.targa == targa && v.il.datetime().date() == data.date(),
        };
        let mut out: Vec<DatiVerbale> = self
            .fascicoli
            .scan("")?
            .into_iter()
            .map(|(_, f)| f.verbale)
            .filter(trovato)
            .map(|v| DatiVerbale {
                dovuto: dovuto(&v, oggi),
                ..v
            })
            .collect();
        out.sort_by(|a, b| a.il.cmp(&b.il).then_with(|| a.numero.cmp(&b.numero)));
        Ok(out)
    }

    fn on_ricerca(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricerca = service::read(inbound)?;
        let verbali = if r.comune == self.impostazioni.comune {
            self.cerca(&r.criterio, self.oggi()?.date())
                .map_err(service::retry)?
        } else {
            Vec::new()
        };
        effects.send(typed::reply(
            self.sender.client(),
            inbound,
            &RicercaEsito { verbali },
        )?);
        Ok(())
    }

    /// Why appeal `r` cannot be received, if it cannot, for fine `f` on `oggi`.
    fn inammissibile(r: &Ricorso, f: &Fascicolo, oggi: Date) -> Option<Motivo> {
        let v = &f.verbale;
        let presentato = r.presentato_il.date();
        if presentato > oggi {
            return Some(motivo(
                "data-futura",
                format!("the appeal is dated {}, after today", r.presentato_il),
            ));
        }
        if r.ricorrente != v.trasgressore.codice_fiscale {
            return Some(motivo(
                "ricorrente-diverso",
                format!(
                    "{} is not the person liable for fine {}",
                    r.ricorrente, v.numero
                ),
            ));
        }
        let fuori = |giorni: i64, termine: i64, da: &str, chi: &str| {
            motivo(
                "fuori-termine",
                format!(
                    "an appeal to {chi} is lodged within {termine} days of {da}; {} is day {giorni}",
                    r.presentato_il
                ),
            )
        };
        match (v.stato, r.autorita) {
            (StatoVerbale::Notificato | StatoVerbale::Esecutivo, autorita) => {
                let notificato = v.notificato_il.as_ref()?;
                let n = importi::giorni(notificato.date(), presentato);
                let (termine, chi) = match autorita {
                    Autorita::Prefetto => (importi::GIORNI_RICORSO_PREFETTO, "the Prefect"),
                    Autorita::GiudiceDiPace => {
                        (importi::GIORNI_RICORSO_GIUDICE, "the Justice of the Peace")
                    }
                };
                (n > termine)
                    .then(|| fuori(n, termine, &format!("notification on {notificato}"), chi))
            }
            (StatoVerbale::Ingiunzione, Autorita::GiudiceDiPace) => {
                let d = f.decisione.as_ref()?.protocollo.data;
                let n = importi::giorni(d.date(), presentato);
                (n > importi::GIORNI_RICORSO_GIUDICE).then(|| {
                    fuori(
                        n,
                        importi::GIORNI_RICORSO_GIUDICE,
                        &format!("the Prefect's injunction on {d}"),
                        "the Justice of the Peace",
                    )
                })
            }
            (StatoVerbale::Ingiunzione, Autorita::Prefetto) => Some(motivo(
                "gia-deciso",
                "the Prefect already decided; the injunction may be opposed before the Justice of the Peace",
            )),
            (StatoVerbale::Pagato | StatoVerbale::PagatoRidotto, _) => Some(motivo(
                "gia-pagato",
                format!("fine {} is paid: paying accepted it", v.numero),
            )),
            (StatoVerbale::RicorsoPrefetto | StatoVerbale::RicorsoGiudice, _) => Some(motivo(
                "ricorso-gia-presentato",
                format!("fine {} is already under appeal", v.numero),
            )),
            (StatoVerbale::Archiviato, _) => Some(motivo(
                "archiviato",
                format!("fine {} is archived", v.numero),
            )),
        }
    }

    fn on_ricorso(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricorso = service::read(inbound)?;
        let key = format!("{}/{}", inbound.sender(), r.pratica);
        if let Some(answer) = self.pratiche.get(&key).map_err(service::retry)? {
            effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
            return Ok(());
        }
        let oggi = self.oggi()?;
        let fascicolo = if r.comune == self.impostazioni.comune {
            self.fascicoli
                .get(&r.numero_verbale)
                .map_err(service::retry)?
        } else {
            None
        };
        let esito = match fascicolo {
            None => Err(motivo(
                "verbale-sconosciuto",
                format!(
                    "the police of comune {} issued no fine {}",
                    r.comune, r.numero_verbale
                ),
            )),
            Some(f) => match Comando::inammissibile(&r, &f, oggi.date()) {
                Some(m) => Err(m),
                None => Ok(f),
            },
        };
        let answer = match esito {
            Err(m) => {
                tracing::info!(fine = %r.numero_verbale, reason = %m.codice, "Appeal refused.");
                RicorsoRicevuta {
                    pratica: r.pratica.clone(),
                    protocollo: None,
                    motivi: vec![m],
                }
            }
            Ok(mut f) => {
                let protocollo = self.protocollo()?;
                let opposizione = f.verbale.stato == StatoVerbale::Ingiunzione;
                f.verbale.stato = match r.autorita {
                    Autorita::Prefetto => StatoVerbale::RicorsoPrefetto,
                    Autorita::GiudiceDiPace => StatoVerbale::RicorsoGiudice,
                };
                // An appeal excludes the reduced payment, and suspends the others: the
                // comune's notices are withdrawn (an injunction is the prefecture's).
                if !opposizione {
                    self.annulla(effects, &f, None, "ricorso presentato")?;
                }
                self.scadenze
                    .cancel(&mut effects.update, &f.verbale.numero)
                    .map_err(service::retry)?;
                if r.autorita == Autorita::Prefetto {
                    let t = RicorsoTrasmissione {
                        ricorso: r.clone(),
                        verbale: f.verbale.clone(),
                        protocollo: protocollo.clone(),
                        controdeduzioni: None,
                    };
                    effects.send(
                        typed::message(
                            self.sender.client(),
                            &self.impostazioni.prefettura,
                            Profile::Request,
                            Some(&f.verbale.numero),
                            None,
                            &t,
                        )
                        .map_err(HandlerError::Reject)?,
                    );
                }
                f.ricorsi.push(RicorsoRicevuto {
                    ricorso: r.clone(),
                    protocollo: protocollo.clone(),
                });
                self.stato(
                    effects,
                    &f.verbale,
                    Some(format!("ricorso protocollo {}", protocollo.numero)),
                )?;
                effects
                    .update
                    .put(&self.fascicoli, &f.verbale.numero, &f)
                    .map_err(service::retry)?;
                tracing::info!(fine = %f.verbale.numero, authority = ?r.autorita, protocol = %protocollo.numero, "Appeal received.");
                RicorsoRicevuta {
                    pratica: r.pratica.clone(),
                    protocollo: Some(protocollo),
                    motivi: Vec::new(),
                }
            }
        };
        effects
            .update
            .put(&self.pratiche, &key, &answer)
            .map_err(service::retry)?;
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    fn on_decisione(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let d: Decisione = service::read(inbound)?;
        if inbound.sender() != &self.impostazioni.prefettura {
            return Err(HandlerError::Reject(format!(
                "a decision from {}, not from the prefecture {}",
                inbound.sender(),
                self.impostazioni.prefettura
            )));
        }
        let Some(mut f) = self
            .fascicoli
            .get(&d.numero_verbale)
            .map_err(service::retry)?
        else {
            return Err(HandlerError::Reject(format!(
                "a decision on fine {}, which this office never issued",
                d.numero_verbale
            )));
        };
        if f.verbale.stato != StatoVerbale::RicorsoPrefetto {
            // Applied before (a redelivery).
            return Ok(());
        }
        match &d.esito {
            EsitoDecisione::Accolto {} => f.verbale.stato = StatoVerbale::Archiviato,
            EsitoDecisione::Respinto {
                ente,
                importo,
                nav,
                scadenza,
            } => {
                let mut avvisi = f.verbale.avvisi.clone().into_vec();
                avvisi.retain(|a| a.tipo != TipoAvviso::Maggiorato);
                avvisi.push(AvvisoVerbale {
                    tipo: TipoAvviso::Ingiunzione,
                    ente: ente.clone(),
                    nav: nav.clone(),
                    importo: *importo,
                    scadenza: *scadenza,
                });
                f.verbale.avvisi = Elenco::new(avvisi).ok_or_else(|| {
                    HandlerError::Reject("a fine carries at most 3 notices".into())
                })?;
                f.verbale.stato = StatoVerbale::Ingiunzione;
            }
        }
        self.stato(
            effects,
            &f.verbale,
            Some(format!("{} — {}", d.protocollo.numero, d.motivazione)),
        )?;
        f.decisione = Some(d);
        effects
            .update
            .put(&self.fascicoli, &f.verbale.numero, &f)
            .map_err(service::retry)?;
        tracing::info!(fine = %f.verbale.numero, state = ?f.verbale.stato, "The Prefect's decision applied.");
        Ok(())
    }

    /// The prefecture's `stato`: the injunction it is creditor of was paid.
    fn on_ingiunzione_pagata(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let s: Stato = service::read(inbound)?;
        if inbound.sender() != &self.impostazioni.prefettura {
            return Err(HandlerError::Reject(format!(
                "a change of state from {}; only the prefecture {} tells this office one",
                inbound.sender(),
                self.impostazioni.prefettura
            )));
        }
        if s.stato != StatoVerbale::Pagato {
            return Err(HandlerError::Reject(format!(
                "the prefecture tells only of injunctions paid, not {:?}",
                s.stato
            )));
        }
        let Some(mut f) = self
            .fascicoli
            .get(&s.numero_verbale)
            .map_err(service::retry)?
        else {
            return Err(HandlerError::Reject(format!(
                "fine {} was never issued by this office",
                s.numero_verbale
            )));
        };
        if f.verbale.stato != StatoVerbale::Ingiunzione || f.pagamento.is_some() {
            // Applied before, or opposed meanwhile: recorded as it stands.
            tracing::info!(fine = %s.numero_verbale, state = ?f.verbale.stato, "Injunction paid; the fine's state stays.");
            return Ok(());
        }
        let il = Data::from_date(s.il.datetime().date())
            .ok_or_else(|| HandlerError::Reject("a payment day outside 0–9999".into()))?;
        let importo = f
            .verbale
            .avvisi
            .iter()
            .find(|a| a.tipo == TipoAvviso::Ingiunzione)
            .map_or(Importo::ZERO, |a| a.importo);
        f.pagamento = Some(Pagamento {
            tipo: TipoAvviso::Ingiunzione,
            importo,
            il,
        });
        f.verbale.stato = StatoVerbale::Pagato;
        self.stato(effects, &f.verbale, s.nota.clone())?;
        effects
            .update
            .put(&self.fascicoli, &s.numero_verbale, &f)
            .map_err(service::retry)?;
        tracing::info!(fine = %s.numero_verbale, "The Prefect's injunction paid.");
        Ok(())
    }

    fn on_ricevuta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        let own = self.iupd.contains(&r.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &r.iupd, "municipal police")?;
        if inbound.sender() != &self.impostazioni.nodo {
            return Err(HandlerError::Reject(format!(
                "a receipt from {}, not from the payment provider",
                inbound.sender()
            )));
        }
        let Some(numero) = self.iupd.get(&r.iupd).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!(
                "a receipt for position {}, which this office never created",
                r.iupd
            )));
        };
        let Some(mut f) = self.fascicoli.get(&numero).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!("fine {numero} vanished")));
        };
        if f.pagamento.is_some() {
            return Ok(());
        }
        let tipo = f
            .posizioni
            .iter()
            .find(|(i, _)| i == &r.iupd)
            .map_or(TipoAvviso::Ordinario, |(_, t)| *t);
        let il = Data::from_date(r.pagato_il.datetime().date())
            .ok_or_else(|| HandlerError::Reject("a payment day outside 0–9999".into()))?;
        f.pagamento = Some(Pagamento {
            tipo,
            importo: r.importo,
            il,
        });
        match f.verbale.stato {
            StatoVerbale::Notificato | StatoVerbale::Esecutivo => {
                f.verbale.stato = if tipo == TipoAvviso::Ridotto {
                    StatoVerbale::PagatoRidotto
                } else {
                    StatoVerbale::Pagato
                };
                self.annulla(effects, &f, Some(tipo), "verbale pagato")?;
                self.scadenze
                    .cancel(&mut effects.update, &numero)
                    .map_err(service::retry)?;
                self.stato(
                    effects,
                    &f.verbale,
                    Some(format!("pagato {} il {il}", r.importo)),
                )?;
            }
            other => {
                tracing::warn!(fine = %numero, state = ?other, "A payment came for a fine no longer payable; recorded.");
            }
        }
        effects
            .update
            .put(&self.fascicoli, &numero, &f)
            .map_err(service::retry)?;
        tracing::info!(fine = %numero, notice = nome(tipo), "Fine paid.");
        Ok(())
    }

    fn on_posizione_stato(
        &self,
        inbound: &Inbound,
        _effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let s: PosizioneStato = service::read(inbound)?;
        let own = self.iupd.contains(&s.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &s.iupd, "municipal police")?;
        // A notice past its term expires at the provider: expected (the reduced one after 5
        // days); what is due is read from the calendar, not from this.
        tracing::debug!(iupd = %s.iupd, state = ?s.stato, "Position changed state at the provider.");
        Ok(())
    }

    /// Fine `numero` reached its 61st day: still notified (unpaid and unappealed), it becomes
    /// enforceable with a notice for half the maximum plus costs. Returns whether it did.
    ///
    /// # Errors
    /// [`ErroreComando`] when the provider, the hub or the store fail (the deadline stays).
    pub async fn aggrava(&self, numero: &str) -> Result<bool, ErroreComando> {
        let mut effects = Effects::default();
        let f = self.fascicoli.get(numero).map_err(sys)?;
        let Some(mut f) = f.filter(|f| f.verbale.stato == StatoVerbale::Notificato) else {
            self.scadenze
                .cancel(&mut effects.update, numero)
                .map_err(sys)?;
            self.sender.commit(effects).await.map_err(sys)?;
            return Ok(false);
        };
        let oggi = giorno(self.clock.now()).map_err(sys)?;
        let scadenza = dopo(oggi, importi::GIORNI_PAGAMENTO).map_err(sys)?;
        let v = &f.verbale;
        let (iupd, avviso) = self
            .posizione(
                (&v.numero, &v.il, &v.trasgressore),
                &sanzione(v),
                TipoAvviso::Maggiorato,
                scadenza,
            )
            .await?;
        // Decided and written at once (compare-and-swap): a receipt or an appeal taken
        // meanwhile wins, and the new notice is withdrawn.
        let mut avvisi = f.verbale.avvisi.clone().into_vec();
        avvisi.push(avviso);
        let avvisi: Elenco<AvvisoVerbale, 1, 3> =
            Elenco::new(avvisi).ok_or_else(|| sys("a fine carries at most 3 notices"))?;
        let mut esecutivo = None;
        self.fascicoli
            .update(numero, |cur| {
                let mut cur = cur?;
                esecutivo = None;
                if cur.verbale.stato == StatoVerbale::Notificato {
                    cur.verbale.avvisi = avvisi.clone();
                    cur.verbale.stato = StatoVerbale::Esecutivo;
                    cur.posizioni.push((iupd.clone(), TipoAvviso::Maggiorato));
                    esecutivo = Some(cur.clone());
                }
                Some(cur)
            })
            .map_err(sys)?;
        self.scadenze
            .cancel(&mut effects.update, numero)
            .map_err(sys)?;
        let Some(g) = esecutivo else {
            f.posizioni = vec![(iupd, TipoAvviso::Maggiorato)];
            self.annulla(&mut effects, &f, None, "verbale non più dovuto")
                .map_err(sys)?;
            self.sender.commit(effects).await.map_err(sys)?;
            return Ok(false);
        };
        f = g;
        effects
            .update
            .put(&self.iupd, &iupd, &numero.to_owned())
            .map_err(sys)?;
        self.stato(
            &mut effects,
            &f.verbale,
            Some(
                "60 giorni senza pagamento né ricorso: dovuta la metà del massimo più le spese"
                    .into(),
            ),
        )
        .map_err(sys)?;
        self.sender.commit(effects).await.map_err(sys)?;
        tracing::info!(fine = %numero, "Fine unpaid after 60 days: enforceable.");
        Ok(true)
    }

    /// Makes fines enforceable as their 61st day comes, on the clock, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        self.scadenze
            .serve(
                self.clock.as_ref(),
                shutdown,
                "fines due for enforcement",
                |d| {
                    let c = self.clone();
                    async move { c.aggrava(&d.key).await }
                },
            )
            .await;
    }
}

/// `snodo-connector`'s entry: the police office with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]), and its task making unpaid fines enforceable.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let c = Comando::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        impostazioni,
    )?;
    let task = tokio::spawn(c.clone().run(ctx.shutdown.clone()));
    Ok((c.install(builder), vec![task]))
}
