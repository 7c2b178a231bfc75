//! The comune's tax office (`tributi.imu`), a back office role of a comune entity: the tax
//! position of each taxpayer (properties with their periods, notices, payments), calculations
//! on the comune's rates of the year, variation declarations, discrepancy reports by e-mail,
//! and instalments and assessed violations paid through the payment provider.
//!
//! The year's tax is issued either one instalment at a time ([`Ufficio::emetti_avviso`]: a
//! debt position per instalment) or as one notice of the year in two instalments
//! ([`Ufficio::emetti_anno`]: one debt position whose instalments, June and December, each
//! have their own NAV and are paid and receipted on their own). The provider tells the office
//! when a position becomes partially paid, paid or expired (`posizione-stato`); the tax
//! position lists every instalment's notice and every payment either way.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use snodo_envelopes::{EntityId, Profile};
use snodo_schemas::formats::{
    CodiceFiscale, CodiceIstat, Data, Elenco, Importo, ImportoRelativo, Istante, Nav,
};
use snodo_schemas::services::dati::{Motivo, Periodo, Protocollo, Soggetto};
use snodo_schemas::services::pagamenti::{
    Iban, PosizioneAnnulla, PosizioneCrea, PosizioneCreata, PosizioneEsito, PosizioneStato,
    RataPosizione, Rendicontazione, Ricevuta, StatoPosizione, Trasferimento,
};
use snodo_schemas::services::tributi_imu::{
    Accertamento, AvvisoEmesso, AvvisoPagamento, Calcolo, CalcoloEsito, CalcoloRichiesta, Immobile,
    ImmobileAnno, ImmobileCalcolo, Posizione, PosizioneRichiesta, Rata, Segnalazione,
    SegnalazioneEsito, TipoVariazione, Variazione, VariazioneEsito, Versamento,
};
use time::Date;

use super::calcolo::{self, Aliquote};
use crate::clock::SharedClock;
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::{BoxFuture, Inbound};
use crate::mail::{Mail, MailConfig, Mailer};
use crate::service;
use crate::store::{Store, StoreError, Tree};
use crate::typed::{self, Answers, Route, Sender};
use crate::{Handler, HubClient};

/// The service's name.
pub const SERVICE: &str = "tributi.imu";

/// The rates of one year.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliquoteAnno {
    /// The year.
    pub anno: u16,
    /// Its rates.
    pub aliquote: Aliquote,
}

/// The tax office's settings (`[adapter.data]` of `snodo-connector`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impostazioni {
    /// The comune.
    pub comune: CodiceIstat,
    /// Its name.
    pub denominazione: String,
    /// Its codice fiscale, as creditor.
    pub codice_fiscale: CodiceFiscale,
    /// The account the tax is paid into.
    pub iban: String,
    /// The payment provider.
    pub nodo: EntityId,
    /// The portal that acts for citizens.
    pub portale: EntityId,
    /// The tax office's address, where discrepancy reports go.
    pub email_ufficio: String,
    /// How mail is sent (a relative `posta.directory` is relative to the configuration file).
    pub posta: MailConfig,
    /// The rates deliberated, by year (a year without is on the ordinary defaults).
    #[serde(default)]
    pub aliquote: Vec<AliquoteAnno>,
}

/// A property held by a taxpayer over a period (the tax position's unit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Titolarita {
    /// The property and the share.
    pub immobile: Immobile,
    /// From when.
    pub dal: Data,
    /// Until when (inclusive); open when none.
    pub al: Option<Data>,
    /// The protocol of the declaration that recorded it.
    pub protocollo: Option<Protocollo>,
}

/// One instalment of a notice of the year, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RataAvviso {
    /// Which instalment of the year.
    pub rata: Rata,
    /// How much.
    pub importo: Importo,
    /// The last day.
    pub scadenza: Data,
    /// What for.
    pub causale: String,
    /// Its notice number, once the provider gave one.
    pub nav: Option<Nav>,
    /// Its payment, once the provider's receipt came.
    pub versamento: Option<Versamento>,
    /// True once a settlement flow reported it.
    #[serde(default)]
    pub rendicontato: bool,
}

/// A notice the office issued, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avviso {
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The tax year.
    pub anno: u16,
    /// The instalment; none for an assessment or a notice of the year in instalments.
    pub rata: Option<Rata>,
    /// The assessment, when it is one.
    pub accertamento: Option<Accertamento>,
    /// How much.
    pub importo: Importo,
    /// The last day (in instalments, the last instalment's).
    pub scadenza: Data,
    /// What for.
    pub causale: String,
    /// The notice number, once the provider gave one (in instalments, the first's).
    pub nav: Option<Nav>,
    /// The payment, once the provider's receipt came (in instalments, each has its own).
    pub versamento: Option<Versamento>,
    /// True once a settlement flow reported it (in instalments, all of them).
    #[serde(default)]
    pub rendicontato: bool,
    /// Its instalments, for a notice of the year paid in instalments, each with its own
    /// notice number and payment; none for a single notice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate: Vec<RataAvviso>,
    /// The position's state as the provider last told it (`posizione-stato`), and when.
    #[serde(default)]
    pub stato: Option<(StatoPosizione, Istante)>,
}

impl Avviso {
    /// True once every payment it asks for was made (its receipts came).
    #[must_use]
    pub fn pagato(&self) -> bool {
        if self.rate.is_empty() {
            self.versamento.is_some()
        } else {
            self.rate.iter().all(|r| r.versamento.is_some())
        }
    }

    /// Takes the provider's word that its position is now `stato` at `il`, unless it told a
    /// later state already (messages may cross): true when taken.
    fn prende_stato(&mut self, stato: StatoPosizione, il: &Istante) -> bool {
        // How far along the payments a state is, for states told at the same instant.
        let avanzamento = |s: StatoPosizione| match s {
            StatoPosizione::ParzialmentePagata => 1,
            StatoPosizione::Pagata => 2,
            StatoPosizione::Rendicontata => 3,
            _ => 0,
        };
        let nuovo = match &self.stato {
            None => true,
            Some((s, quando)) => {
                il.datetime() > quando.datetime()
                    || (il.datetime() == quando.datetime() && avanzamento(stato) >= avanzamento(*s))
            }
        };
        if nuovo {
            self.stato = Some((stato, il.clone()));
        }
        nuovo
    }
}

/// Why an office operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreUfficio {
    /// The calculation cannot be made (each reason given).
    #[error("{}", .0.iter().map(|m| m.descrizione.as_str()).collect::<Vec<_>>().join("; "))]
    Calcolo(Vec<Motivo>),
    /// Nothing is due for that instalment.
    #[error("nothing is due for the {0:?} instalment of {1}")]
    NienteDovuto(Rata, u16),
    /// The year's tax was issued already another way (an instalment alone, or the notice of
    /// the year in instalments): this notice would ask for it twice.
    #[error("the tax of {1} is already asked for by notice {0}")]
    GiaEmesso(String, u16),
    /// The store, the hub or the provider failed.
    #[error("{0}")]
    Sistema(String),
}

/// The comune's tax office.
pub struct Ufficio {
    sender: Sender,
    clock: SharedClock,
    impostazioni: Impostazioni,
    mailer: Mailer,
    /// `CF/NNNNNN` → a holding.
    titolarita: Tree<Titolarita>,
    /// IUPD → notice.
    avvisi: Tree<Avviso>,
    /// Counters: `protocollo/YEAR`, `titolarita/CF`.
    contatori: Tree<u64>,
    /// Answers that reached the inbox, by request id.
    risposte: Tree<Value>,
    /// Declarations and reports, by `portal/pratica`: their protocol.
    pratiche: Tree<Protocollo>,
}

impl std::fmt::Debug for Ufficio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ufficio")
            .field("comune", &self.impostazioni.comune)
            .finish_non_exhaustive()
    }
}

fn motivo(codice: &str, descrizione: String) -> Motivo {
    Motivo {
        codice: codice.into(),
        descrizione,
    }
}

impl Ufficio {
    /// The tax office for `client`'s entity.
    ///
    /// # Errors
    /// A message when the mail settings or the store cannot be used.
    pub fn open(
        client: HubClient,
        store: Store,
        clock: SharedClock,
        impostazioni: Impostazioni,
    ) -> Result<Arc<Self>, String> {
        let mailer = Mailer::new(&impostazioni.posta).map_err(|e| e.to_string())?;
        let s = |e: StoreError| e.to_string();
        Ok(Arc::new(Ufficio {
            titolarita: store.tree("tributi.titolarita").map_err(s)?,
            avvisi: store.tree("tributi.avvisi").map_err(s)?,
            contatori: store.tree("tributi.contatori").map_err(s)?,
            risposte: store.tree("tributi.risposte").map_err(s)?,
            pratiche: store.tree("tributi.pratiche").map_err(s)?,
            sender: Sender::new(client, store).map_err(s)?,
            clock,
            impostazioni,
            mailer,
        }))
    }

    /// Routes the portal's requests and the provider's messages to this office.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        let avvisi = self.avvisi.clone();
        let answers =
            Answers::for_positions(self.risposte.clone(), move |iupd| avvisi.contains(iupd));
        builder
            .route(
                SERVICE,
                "calcolo",
                Route::handler(self, Ufficio::on_calcolo),
            )
            .route(
                SERVICE,
                "posizione",
                Route::handler(self, Ufficio::on_posizione),
            )
            .route(
                SERVICE,
                "variazione",
                Route::handler(self, Ufficio::on_variazione),
            )
            .route(
                SERVICE,
                "segnalazione",
                Arc::new(Segnalazioni(self.clone())) as Arc<dyn Handler>,
            )
            .route(
                "pagamenti",
                "ricevuta",
                Route::handler(self, Ufficio::on_ricevuta),
            )
            .route(
                "pagamenti",
                "rendicontazione",
                Route::handler(self, Ufficio::on_rendicontazione),
            )
            .route(
                "pagamenti",
                "posizione-creata",
                Route::handler(self, Ufficio::on_creata),
            )
            .route(
                "pagamenti",
                "posizione-stato",
                Route::handler(self, Ufficio::on_stato),
            )
            .route("pagamenti", "posizione-esito", answers)
    }

    /// The rates of `anno`: deliberated, or the ordinary defaults.
    #[must_use]
    pub fn aliquote(&self, anno: u16) -> Aliquote {
        self.impostazioni
            .aliquote
            .iter()
            .find(|a| a.anno == anno)
            .map_or_else(Aliquote::default, |a| a.aliquote)
    }

    fn oggi(&self) -> Date {
        self.clock.today()
    }

    /// The next number of counter `key`, taken at once in the store (compare-and-swap), so
    /// that handlers and calls running together never share one; a crash before the caller's
    /// commit leaves a gap, never a duplicate.
    fn next(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .contatori
            .update(key, |n| Some(n.unwrap_or(0) + 1))?
            .unwrap_or(1))
    }

    fn protocollo(&self) -> Result<Protocollo, HandlerError> {
        let oggi = self.oggi();
        let data = Data::from_date(oggi)
            .ok_or_else(|| HandlerError::Retry(format!("the clock says {oggi}, outside 0–9999")))?;
        let n = self
            .next(&format!("protocollo/{}", oggi.year()))
            .map_err(service::retry)?;
        Ok(Protocollo {
            numero: format!("IMU/{}/{n:06}", oggi.year()),
            data,
        })
    }

    /// The holdings of `cf`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn titolarita(&self, cf: &CodiceFiscale) -> Result<Vec<(String, Titolarita)>, StoreError> {
        self.titolarita.scan(&format!("{}/", cf.as_str()))
    }

    /// Records that `cf` holds `immobile` from `dal` (an initial load of the tax roll).
    ///
    /// # Errors
    /// A message when the store fails.
    pub async fn registra(
        &self,
        cf: &CodiceFiscale,
        immobile: Immobile,
        dal: Data,
    ) -> Result<(), String> {
        let mut effects = Effects::default();
        let n = self
            .next(&format!("titolarita/{}", cf.as_str()))
            .map_err(|e| e.to_string())?;
        effects
            .update
            .put(
                &self.titolarita,
                &format!("{}/{n:06}", cf.as_str()),
                &Titolarita {
                    immobile,
                    dal,
                    al: None,
                    protocollo: None,
                },
            )
            .map_err(|e| e.to_string())?;
        self.sender.commit(effects).await
    }

    /// The properties of `cf`'s tax position in `anno`, to calculate.
    fn da_calcolare(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
    ) -> Result<Vec<ImmobileCalcolo>, StoreError> {
        let inizio = Date::from_calendar_date(i32::from(anno), time::Month::January, 1).ok();
        let fine = Date::from_calendar_date(i32::from(anno), time::Month::December, 31).ok();
        let (Some(inizio), Some(fine)) = (inizio, fine) else {
            return Ok(Vec::new());
        };
        Ok(self
            .titolarita(cf)?
            .into_iter()
            .filter(|(_, t)| {
                t.dal.date() <= fine && t.al.as_ref().is_none_or(|a| a.date() >= inizio)
            })
            .map(|(_, t)| ImmobileCalcolo {
                immobile: t.immobile,
                mesi: None,
                possesso: Some(Periodo {
                    dal: t.dal,
                    al: t.al,
                }),
                residenti: None,
            })
            .collect())
    }

    /// Calculates `cf`'s tax of `anno`, on `immobili` or, when empty, on the tax position.
    ///
    /// # Errors
    /// [`ErroreUfficio::Calcolo`] with every reason a property cannot be calculated.
    pub fn calcola(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
        immobili: &[ImmobileCalcolo],
    ) -> Result<Calcolo, ErroreUfficio> {
        let dalla_posizione;
        let immobili = if immobili.is_empty() {
            dalla_posizione = self
                .da_calcolare(cf, anno)
                .map_err(|e| ErroreUfficio::Sistema(e.to_string()))?;
            &dalla_posizione[..]
        } else {
            immobili
        };
        calcolo::calcola(
            anno,
            immobili,
            &self.aliquote(anno),
            &self.aliquote(anno.saturating_sub(1)),
        )
        .map_err(|e| ErroreUfficio::Calcolo(e.iter().map(calcolo::ErroreCalcolo::motivo).collect()))
    }

    fn on_calcolo(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: CalcoloRichiesta = service::read(inbound)?;
        let (calcolo, motivi) = if req.comune != self.impostazioni.comune {
            (None, vec![self.altro_comune(&req.comune)])
        } else {
            match self.calcola(&req.contribuente, req.anno, &req.immobili) {
                Ok(c) => (Some(c), Vec::new()),
                Err(ErroreUfficio::Calcolo(m)) => (None, m),
                Err(e) => return Err(HandlerError::Retry(e.to_string())),
            }
        };
        let answer = CalcoloEsito {
            pratica: req.pratica,
            calcolo,
            motivi,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    fn altro_comune(&self, comune: &CodiceIstat) -> Motivo {
        motivo(
            "comune-diverso",
            format!(
                "this is the tax office of comune {}, not of {comune}",
                self.impostazioni.comune
            ),
        )
    }

    /// `cf`'s tax position in `anno`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn posizione(&self, cf: &CodiceFiscale, anno: u16) -> Result<Posizione, StoreError> {
        let da = self.da_calcolare(cf, anno)?;
        let r = self.aliquote(anno);
        let calcolo = calcolo::calcola(anno, &da, &r, &self.aliquote(anno.saturating_sub(1))).ok();
        let mut immobili = Vec::new();
        for (i, item) in da.iter().enumerate() {
            let row = calcolo.as_ref().and_then(|c| c.immobili.get(i));
            immobili.push(ImmobileAnno {
                immobile: item.immobile.clone(),
                mesi: row.map_or(0, |r| r.mesi),
                aliquota: row.map_or(r.ordinaria, |r| r.aliquota),
                imposta: Importo::centesimi(
                    row.map_or(0, |r| calcolo::all_euro(r.imposta.in_centesimi())),
                ),
                possesso: item.possesso.clone(),
            });
        }
        let mut versamenti = Vec::new();
        let mut avvisi = Vec::new();
        let mut accertato = 0u64;
        for (_, a) in self.avvisi.scan("")? {
            if a.contribuente != *cf || a.anno != anno {
                continue;
            }
            if let Some(acc) = &a.accertamento {
                accertato = accertato.saturating_add(acc.totale.in_centesimi());
            }
            if let Some(v) = &a.versamento {
                versamenti.push(v.clone());
            }
            if a.rate.is_empty()
                && let Some(nav) = &a.nav
            {
                avvisi.push(AvvisoEmesso {
                    causale: a.causale.clone(),
                    nav: nav.clone(),
                    importo: a.importo,
                    scadenza: a.scadenza,
                    pagato: a.versamento.is_some(),
                });
            }
            // A notice of the year: each instalment is a notice of its own, paid or due.
            for r in &a.rate {
                if let Some(v) = &r.versamento {
                    versamenti.push(v.clone());
                }
                if let Some(nav) = &r.nav {
                    avvisi.push(AvvisoEmesso {
                        causale: r.causale.clone(),
                        nav: nav.clone(),
                        importo: r.importo,
                        scadenza: r.scadenza,
                        pagato: r.versamento.is_some(),
                    });
                }
            }
        }
        let dovuto = calcolo
            .as_ref()
            .map_or(0, |c| c.imposta.in_centesimi())
            .saturating_add(accertato);
        let pagato: u64 = versamenti.iter().map(|v| v.importo.in_centesimi()).sum();
        let saldo =
            i64::try_from(dovuto).unwrap_or(i64::MAX) - i64::try_from(pagato).unwrap_or(i64::MAX);
        Ok(Posizione {
            contribuente: cf.clone(),
            comune: self.impostazioni.comune.clone(),
            anno,
            immobili,
            dovuto: Importo::centesimi(dovuto),
            versamenti,
            avvisi,
            saldo: ImportoRelativo::centesimi(saldo),
        })
    }

    fn on_posizione(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let req: PosizioneRichiesta = service::read(inbound)?;
        if req.comune != self.impostazioni.comune {
            return Err(HandlerError::Reject(
                self.altro_comune(&req.comune).descrizione,
            ));
        }
        let p = self
            .posizione(&req.contribuente, req.anno)
            .map_err(service::retry)?;
        effects.send(typed::reply(self.sender.client(), inbound, &p)?);
        Ok(())
    }

    fn on_variazione(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let v: Variazione = service::read(inbound)?;
        let key = format!("{}/{}", inbound.sender(), v.pratica);
        let mut motivi = Vec::new();
        if let Some(p) = self.pratiche.get(&key).map_err(service::retry)? {
            // Declared before: the same protocol again.
            let answer = VariazioneEsito {
                pratica: v.pratica,
                protocollo: Some(p),
                motivi,
            };
            effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
            return Ok(());
        }
        if v.comune != self.impostazioni.comune {
            motivi.push(self.altro_comune(&v.comune));
        }
        // The property must be one the tax can calculate.
        let prova = ImmobileCalcolo {
            immobile: v.immobile.clone(),
            mesi: Some(12),
            possesso: None,
            residenti: None,
        };
        let r = Aliquote::default();
        let anno = u16::try_from(v.data.date().year())
            .unwrap_or(2012)
            .clamp(2012, 2100);
        if let Err(errs) = calcolo::calcola(anno, &[prova], &r, &r) {
            motivi.extend(errs.iter().map(calcolo::ErroreCalcolo::motivo));
        }
        let cf = &v.contribuente;
        let stesso = |t: &Titolarita| t.immobile.catasto == v.immobile.catasto && t.al.is_none();
        let aperte: Vec<(String, Titolarita)> = self
            .titolarita(cf)
            .map_err(service::retry)?
            .into_iter()
            .filter(|(_, t)| stesso(t))
            .collect();
        let giorno_prima = v.data.date().previous_day().and_then(Data::from_date);
        match v.tipo {
            TipoVariazione::Acquisto if !aperte.is_empty() => motivi.push(motivo(
                "gia-posseduto",
                format!("the taxpayer already holds the property (foglio {}, particella {}) from {}", v.immobile.catasto.foglio, v.immobile.catasto.particella, aperte[0].1.dal),
            )),
            TipoVariazione::Cessione | TipoVariazione::CambioUso | TipoVariazione::AbitazionePrincipale | TipoVariazione::Riduzione if aperte.is_empty() => motivi.push(motivo(
                "non-posseduto",
                format!("the taxpayer holds no property at foglio {}, particella {} in the tax position", v.immobile.catasto.foglio, v.immobile.catasto.particella),
            )),
            _ => {}
        }
        if !motivi.is_empty() {
            let answer = VariazioneEsito {
                pratica: v.pratica,
                protocollo: None,
                motivi,
            };
            effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
            return Ok(());
        }
        let protocollo = self.protocollo()?;
        // Close the holdings the variation ends (the day before: the transfer day is the buyer's).
        for (k, mut t) in aperte {
            if t.dal.date() >= v.data.date() {
                effects.update.remove(&self.titolarita, &k);
            } else {
                t.al.clone_from(&giorno_prima);
                effects
                    .update
                    .put(&self.titolarita, &k, &t)
                    .map_err(service::retry)?;
            }
        }
        if v.tipo != TipoVariazione::Cessione {
            let n = self
                .next(&format!("titolarita/{}", cf.as_str()))
                .map_err(service::retry)?;
            effects
                .update
                .put(
                    &self.titolarita,
                    &format!("{}/{n:06}", cf.as_str()),
                    &Titolarita {
                        immobile: v.immobile.clone(),
                        dal: v.data,
                        al: None,
                        protocollo: Some(protocollo.clone()),
                    },
                )
                .map_err(service::retry)?;
        }
        effects
            .update
            .put(&self.pratiche, &key, &protocollo)
            .map_err(service::retry)?;
        tracing::info!(protocol = %protocollo.numero, taxpayer = %cf, kind = ?v.tipo, "Variation declared.");
        let answer = VariazioneEsito {
            pratica: v.pratica,
            protocollo: Some(protocollo),
            motivi,
        };
        effects.send(typed::reply(self.sender.client(), inbound, &answer)?);
        Ok(())
    }

    fn on_ricevuta(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let r: Ricevuta = service::read(inbound)?;
        let own = self.avvisi.contains(&r.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &r.iupd, "tax office")?;
        if inbound.sender() != &self.impostazioni.nodo {
            return Err(HandlerError::Reject(format!(
                "a receipt from {}, not from the payment provider",
                inbound.sender()
            )));
        }
        let Some(mut a) = self.avvisi.get(&r.iupd).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!(
                "a receipt for position {}, which this office never created",
                r.iupd
            )));
        };
        let data = Data::from_date(r.pagato_il.datetime().date())
            .ok_or_else(|| HandlerError::Reject("a payment day outside 0–9999".into()))?;
        if !a.rate.is_empty() {
            // A notice of the year: the receipt closes the instalment it names.
            let Some(rata) = a.rate.iter_mut().find(|x| x.nav.as_ref() == Some(&r.nav)) else {
                return Err(HandlerError::Reject(format!(
                    "a receipt for notice {}, which is none of position {}'s instalments",
                    r.nav, r.iupd
                )));
            };
            if rata.versamento.is_none() {
                rata.versamento = Some(Versamento {
                    data,
                    importo: r.importo,
                    rata: Some(rata.rata),
                    accertamento: None,
                    nav: Some(r.nav.clone()),
                });
                let tutte = a.pagato();
                effects
                    .update
                    .put(&self.avvisi, &r.iupd, &a)
                    .map_err(service::retry)?;
                tracing::info!(iupd = %r.iupd, nav = %r.nav, all_paid = tutte, "Receipt taken; the instalment is closed.");
            }
            return Ok(());
        }
        if a.versamento.is_none() {
            a.versamento = Some(Versamento {
                data,
                importo: r.importo,
                rata: a.rata,
                accertamento: a.accertamento.as_ref().map(|x| x.protocollo.clone()),
                nav: Some(r.nav.clone()),
            });
            effects
                .update
                .put(&self.avvisi, &r.iupd, &a)
                .map_err(service::retry)?;
            tracing::info!(iupd = %r.iupd, nav = %r.nav, "Receipt taken; the notice is closed.");
        }
        Ok(())
    }

    fn on_rendicontazione(
        &self,
        inbound: &Inbound,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let flow: Rendicontazione = service::read(inbound)?;
        let mut own = 0usize;
        let listed = |nav: Option<&Nav>| {
            nav.is_some_and(|n| flow.pagamenti.iter().any(|p| p.iuv == n.iuv()))
        };
        for (k, mut a) in self.avvisi.scan("").map_err(service::retry)? {
            if a.rate.is_empty() {
                if !listed(a.nav.as_ref()) {
                    continue;
                }
                own += 1;
                a.rendicontato = true;
            } else {
                // A notice of the year: each instalment is reported as its payment settles.
                let mut any = false;
                for r in a.rate.iter_mut().filter(|r| listed(r.nav.as_ref())) {
                    own += 1;
                    r.rendicontato = true;
                    any = true;
                }
                if !any {
                    continue;
                }
                a.rendicontato = a.rate.iter().all(|r| r.rendicontato);
            }
            effects
                .update
                .put(&self.avvisi, &k, &a)
                .map_err(service::retry)?;
        }
        if own == 0 {
            return Err(HandlerError::Decline(format!(
                "flow {} lists no notice of the tax office",
                flow.id_flusso
            )));
        }
        // The flow may list other offices' positions too: they are offered theirs.
        effects.take_part();
        tracing::info!(flow = %flow.id_flusso, notices = own, "Settlement flow: the tax office's notices reported.");
        Ok(())
    }

    /// Takes the provider's `posizione-creata`: the notice gets its NAV and goes to the portal.
    fn creata(&self, c: &PosizioneCreata, effects: &mut Effects) -> Result<(), HandlerError> {
        let Some(mut a) = self.avvisi.get(&c.iupd).map_err(service::retry)? else {
            return Err(HandlerError::Reject(format!(
                "position {} was never asked for",
                c.iupd
            )));
        };
        if a.nav.is_some() {
            return Ok(());
        }
        a.nav = Some(c.nav.clone());
        let portale = &self.impostazioni.portale;
        if !a.rate.is_empty() {
            // A notice of the year: each instalment's NAV, and a notice per instalment to the
            // portal (the printed notice's slips).
            for (r, numero) in a.rate.iter_mut().zip(1u8..) {
                let Some(creata) = c
                    .rate
                    .iter()
                    .find(|x| x.numero == numero && x.importo == r.importo)
                else {
                    return Err(HandlerError::Reject(format!(
                        "position {}: the provider gave no notice for the {:?} instalment",
                        c.iupd, r.rata
                    )));
                };
                r.nav = Some(creata.nav.clone());
                let avviso = AvvisoPagamento {
                    contribuente: a.contribuente.clone(),
                    comune: self.impostazioni.comune.clone(),
                    anno: a.anno,
                    rata: r.rata,
                    importo: r.importo,
                    scadenza: r.scadenza,
                    nav: creata.nav.clone(),
                };
                effects.send(
                    typed::message(
                        self.sender.client(),
                        portale,
                        Profile::Oneway,
                        Some(&c.iupd),
                        None,
                        &avviso,
                    )
                    .map_err(HandlerError::Reject)?,
                );
            }
            effects
                .update
                .put(&self.avvisi, &c.iupd, &a)
                .map_err(service::retry)?;
            return Ok(());
        }
        effects
            .update
            .put(&self.avvisi, &c.iupd, &a)
            .map_err(service::retry)?;
        let env = if let Some(mut acc) = a.accertamento.clone() {
            acc.nav = c.nav.clone();
            typed::message(
                self.sender.client(),
                portale,
                Profile::Oneway,
                Some(&c.iupd),
                None,
                &acc,
            )
        } else {
            let avviso = AvvisoPagamento {
                contribuente: a.contribuente.clone(),
                comune: self.impostazioni.comune.clone(),
                anno: a.anno,
                rata: a.rata.unwrap_or(Rata::Unica),
                importo: a.importo,
                scadenza: a.scadenza,
                nav: c.nav.clone(),
            };
            typed::message(
                self.sender.client(),
                portale,
                Profile::Oneway,
                Some(&c.iupd),
                None,
                &avviso,
            )
        };
        effects.send(env.map_err(HandlerError::Reject)?);
        Ok(())
    }

    /// Takes the provider's `posizione-stato`: the notice's position became partially paid,
    /// paid or expired (what is paid is recorded from the receipts, not from this).
    fn on_stato(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let s: PosizioneStato = service::read(inbound)?;
        let own = self.avvisi.contains(&s.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &s.iupd, "tax office")?;
        if inbound.sender() != &self.impostazioni.nodo {
            return Err(HandlerError::Reject(format!(
                "a position's state from {}, not from the payment provider",
                inbound.sender()
            )));
        }
        let Some(mut a) = self.avvisi.get(&s.iupd).map_err(service::retry)? else {
            return Ok(());
        };
        if a.prende_stato(s.stato, &s.il) {
            effects
                .update
                .put(&self.avvisi, &s.iupd, &a)
                .map_err(service::retry)?;
            tracing::info!(iupd = %s.iupd, nav = %s.nav, state = ?s.stato, "The notice's position changed state at the provider.");
        }
        Ok(())
    }

    fn on_creata(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let c: PosizioneCreata = service::read(inbound)?;
        let own = self.avvisi.contains(&c.iupd).map_err(service::retry)?;
        typed::solo_proprie(own, &c.iupd, "tax office")?;
        self.creata(&c, effects)
    }

    /// Asks the provider for the position of notice `a` (key `iupd`) and, once it has its
    /// NAV, sends the notice to the portal. Returns the notice.
    async fn pubblica(&self, iupd: String, a: Avviso) -> Result<Avviso, ErroreUfficio> {
        let sys = |e: String| ErroreUfficio::Sistema(e);
        if let Some(old) = self.avvisi.get(&iupd).map_err(|e| sys(e.to_string()))? {
            if old.nav.is_some() {
                return Ok(old);
            }
        } else {
            let mut effects = Effects::default();
            effects
                .update
                .put(&self.avvisi, &iupd, &a)
                .map_err(|e| sys(e.to_string()))?;
            self.sender.commit(effects).await.map_err(sys)?;
        }
        let debitore = Soggetto {
            codice_fiscale: a.contribuente.clone(),
            denominazione: a.contribuente.as_str().to_owned(),
            indirizzo: None,
            email: None,
        };
        let trasferimento = Trasferimento {
            indice: 1,
            ente: self.impostazioni.codice_fiscale.clone(),
            iban: Iban(self.impostazioni.iban.clone()),
            importo: a.importo,
            causale: a.causale.clone(),
            tassonomia: "9/0101101IM/".into(),
        };
        let req = PosizioneCrea {
            iupd: iupd.clone(),
            ente: self.impostazioni.codice_fiscale.clone(),
            debitore,
            importo: a.importo,
            scadenza: a.scadenza,
            validita: None,
            causale: a.causale.clone(),
            trasferimenti: Elenco::new(vec![trasferimento])
                .ok_or_else(|| sys("no transfer".into()))?,
            // A notice of the year: its instalments, each of the one transfer's part.
            rate: Elenco::new(
                a.rate
                    .iter()
                    .map(|r| RataPosizione {
                        importo: r.importo,
                        scadenza: r.scadenza,
                        validita: None,
                        causale: Some(r.causale.clone()),
                        trasferimenti: None,
                    })
                    .collect(),
            ),
        };
        let env = typed::message(
            self.sender.client(),
            &self.impostazioni.nodo,
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
        let mut effects = Effects::default();
        self.creata(&creata, &mut effects)
            .map_err(|e| sys(e.to_string()))?;
        self.sender.commit(effects).await.map_err(sys)?;
        self.avvisi
            .get(&iupd)
            .map_err(|e| sys(e.to_string()))?
            .ok_or_else(|| sys(format!("notice {iupd} vanished")))
    }

    /// The IUPD of `cf`'s notice of `anno` for `rata` (`None`: the notice of the year in
    /// instalments).
    fn iupd_imu(&self, cf: &CodiceFiscale, anno: u16, rata: Option<Rata>) -> String {
        let nome = match rata {
            Some(Rata::Acconto) => "acconto",
            Some(Rata::Saldo) => "saldo",
            Some(Rata::Unica) => "unica",
            None => "rate",
        };
        format!(
            "IMU-{}-{anno}-{nome}-{}",
            self.impostazioni.comune,
            cf.as_str()
        )
    }

    /// Refuses to issue `iupd` when another notice already asks for the same tax: an
    /// instalment alone against the notice of the year in instalments, or the reverse.
    fn nessun_altro(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
        iupd: &str,
        altri: &[Option<Rata>],
    ) -> Result<(), ErroreUfficio> {
        if self
            .avvisi
            .contains(iupd)
            .map_err(|e| ErroreUfficio::Sistema(e.to_string()))?
        {
            // Issued before: the same notice again.
            return Ok(());
        }
        for altro in altri {
            let other = self.iupd_imu(cf, anno, *altro);
            if self
                .avvisi
                .contains(&other)
                .map_err(|e| ErroreUfficio::Sistema(e.to_string()))?
            {
                return Err(ErroreUfficio::GiaEmesso(other, anno));
            }
        }
        Ok(())
    }

    /// Issues `cf`'s `rata` of `anno` on the tax position: a debt position at the provider
    /// and the notice to the portal. Returns the notice with its NAV.
    ///
    /// # Errors
    /// [`ErroreUfficio`]: the calculation refused, nothing due, the year already issued as a
    /// notice in instalments, the provider unreachable.
    pub async fn emetti_avviso(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
        rata: Rata,
    ) -> Result<Avviso, ErroreUfficio> {
        self.nessun_altro(cf, anno, &self.iupd_imu(cf, anno, Some(rata)), &[None])?;
        let c = self.calcola(cf, anno, &[])?;
        let (importo, scadenza) = match rata {
            Rata::Acconto => (c.acconto, c.scadenza_acconto),
            Rata::Saldo => (c.saldo, c.scadenza_saldo),
            Rata::Unica => (c.imposta, c.scadenza_acconto),
        };
        if importo == Importo::ZERO {
            return Err(ErroreUfficio::NienteDovuto(rata, anno));
        }
        let nome = match rata {
            Rata::Acconto => "acconto",
            Rata::Saldo => "saldo",
            Rata::Unica => "unica",
        };
        let iupd = self.iupd_imu(cf, anno, Some(rata));
        let a = Avviso {
            contribuente: cf.clone(),
            anno,
            rata: Some(rata),
            accertamento: None,
            importo,
            scadenza,
            causale: format!("IMU {anno} {nome} {}", self.impostazioni.denominazione),
            nav: None,
            versamento: None,
            rendicontato: false,
            rate: Vec::new(),
            stato: None,
        };
        self.pubblica(iupd, a).await
    }

    /// Issues `cf`'s tax of `anno` on the tax position as one notice in two instalments: one
    /// debt position at the provider whose June and December instalments each have their
    /// own NAV, and a notice per instalment to the portal. When one instalment is nothing
    /// (the June one on a property bought late in the year, say), the other alone is issued,
    /// as [`Ufficio::emetti_avviso`] does. Returns the notice, its instalments with their NAVs.
    ///
    /// # Errors
    /// [`ErroreUfficio`]: the calculation refused, nothing due, an instalment of the year
    /// already issued alone, the provider unreachable.
    pub async fn emetti_anno(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
    ) -> Result<Avviso, ErroreUfficio> {
        let c = self.calcola(cf, anno, &[])?;
        if c.imposta == Importo::ZERO {
            return Err(ErroreUfficio::NienteDovuto(Rata::Unica, anno));
        }
        if c.acconto == Importo::ZERO {
            return self.emetti_avviso(cf, anno, Rata::Saldo).await;
        }
        if c.saldo == Importo::ZERO {
            return self.emetti_avviso(cf, anno, Rata::Acconto).await;
        }
        let iupd = self.iupd_imu(cf, anno, None);
        self.nessun_altro(
            cf,
            anno,
            &iupd,
            &[Some(Rata::Acconto), Some(Rata::Saldo), Some(Rata::Unica)],
        )?;
        let comune = &self.impostazioni.denominazione;
        let rata = |rata, nome: &str, importo, scadenza| RataAvviso {
            rata,
            importo,
            scadenza,
            causale: format!("IMU {anno} {nome} {comune}"),
            nav: None,
            versamento: None,
            rendicontato: false,
        };
        let a = Avviso {
            contribuente: cf.clone(),
            anno,
            rata: None,
            accertamento: None,
            importo: c.imposta,
            scadenza: c.scadenza_saldo,
            causale: format!("IMU {anno} {comune}"),
            nav: None,
            versamento: None,
            rendicontato: false,
            rate: vec![
                rata(Rata::Acconto, "acconto", c.acconto, c.scadenza_acconto),
                rata(Rata::Saldo, "saldo", c.saldo, c.scadenza_saldo),
            ],
            stato: None,
        };
        self.pubblica(iupd, a).await
    }

    /// Assesses a violation of `cf` for `anno` and has it paid like a notice. Returns it.
    ///
    /// # Errors
    /// [`ErroreUfficio`]: amounts that overflow, the provider unreachable.
    #[allow(clippy::too_many_arguments)]
    pub async fn accerta(
        &self,
        cf: &CodiceFiscale,
        anno: u16,
        imposta: Importo,
        sanzioni: Importo,
        interessi: Importo,
        motivi: Vec<Motivo>,
        scadenza: Data,
    ) -> Result<Avviso, ErroreUfficio> {
        let sys = |e: String| ErroreUfficio::Sistema(e);
        let totale = imposta
            .checked_add(sanzioni)
            .and_then(|t| t.checked_add(interessi))
            .ok_or_else(|| sys("the assessment's total overflows".into()))?;
        let motivi =
            Elenco::new(motivi).ok_or_else(|| sys("an assessment gives 1 to 20 reasons".into()))?;
        let protocollo = self.protocollo().map_err(|e| sys(e.to_string()))?;
        let acc = Accertamento {
            contribuente: cf.clone(),
            comune: self.impostazioni.comune.clone(),
            protocollo: protocollo.clone(),
            anno,
            imposta,
            sanzioni,
            interessi,
            totale,
            motivi,
            // Replaced by the provider's NAV before it is sent.
            nav: Nav::new(0, 0).ok_or_else(|| sys("NAV".into()))?,
            scadenza,
        };
        let iupd = format!(
            "ACC-{}-{}",
            self.impostazioni.comune,
            protocollo.numero.replace('/', "-")
        );
        let a = Avviso {
            contribuente: cf.clone(),
            anno,
            rata: None,
            accertamento: Some(acc),
            importo: totale,
            scadenza,
            causale: format!("IMU {anno} accertamento {}", protocollo.numero),
            nav: None,
            versamento: None,
            rendicontato: false,
            rate: Vec::new(),
            stato: None,
        };
        self.pubblica(iupd, a).await
    }

    /// Cancels notice `iupd` at the provider (an instalment issued in error, a violation
    /// annulled): the provider's answer, which refuses a paid position (`gia_pagato`) or one
    /// being paid (`pagamento_in_corso`).
    ///
    /// # Errors
    /// [`ErroreUfficio::Sistema`] when the provider cannot be reached or does not answer.
    pub async fn annulla(&self, iupd: &str, motivo: &str) -> Result<PosizioneEsito, ErroreUfficio> {
        let sys = |e: String| ErroreUfficio::Sistema(e);
        let req = PosizioneAnnulla {
            iupd: iupd.to_owned(),
            ente: self.impostazioni.codice_fiscale.clone(),
            motivo: motivo.to_owned(),
        };
        let env = typed::message(
            self.sender.client(),
            &self.impostazioni.nodo,
            Profile::Request,
            Some(iupd),
            None,
            &req,
        )
        .map_err(sys)?;
        let esito = self
            .sender
            .ask::<PosizioneEsito>(&env, &self.risposte, Duration::from_secs(10))
            .await
            .map_err(sys)?;
        Ok(esito)
    }

    /// The notice `iupd`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn avviso(&self, iupd: &str) -> Result<Option<Avviso>, StoreError> {
        self.avvisi.get(iupd)
    }

    /// Every notice, by IUPD.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn avvisi(&self) -> Result<Vec<(String, Avviso)>, StoreError> {
        self.avvisi.scan("")
    }
}

/// The discrepancy reports: an e-mail to the tax office, then the protocol to the portal.
struct Segnalazioni(Arc<Ufficio>);

impl Handler for Segnalazioni {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let u = &self.0;
            let s: Segnalazione = service::read(inbound)?;
            let key = format!("{}/{}", inbound.sender(), s.pratica);
            let protocollo = match u.pratiche.get(&key).map_err(service::retry)? {
                Some(p) => p,
                None => {
                    let protocollo = u.protocollo()?;
                    let immobile = s.immobile.as_ref().map_or_else(String::new, |r| {
                        format!(
                            "Immobile: {} foglio {} particella {}{}\n",
                            r.comune,
                            r.foglio,
                            r.particella,
                            r.subalterno
                                .as_ref()
                                .map_or_else(String::new, |x| format!(" sub {x}"))
                        )
                    });
                    let mail = Mail {
                        to: vec![u.impostazioni.email_ufficio.clone()],
                        subject: format!(
                            "Segnalazione IMU {} — protocollo {}",
                            s.contribuente, protocollo.numero
                        ),
                        body: format!(
                            "Protocollo: {}\nContribuente: {}\nComune: {}\nAnno: {}\n{immobile}Rispondere a: {}\n\n{}\n\n(pratica {} del portale, busta {})\n",
                            protocollo.numero,
                            s.contribuente,
                            s.comune,
                            s.anno,
                            s.email,
                            s.testo,
                            s.pratica,
                            inbound.id()
                        ),
                    };
                    // Sent before the commit: a crash in between sends it again on redelivery
                    // (the same protocol is not kept then; the body names the envelope).
                    u.mailer.send(&mail).await.map_err(|e| {
                        if e.is_retryable() {
                            HandlerError::Retry(e.to_string())
                        } else {
                            HandlerError::Reject(e.to_string())
                        }
                    })?;
                    effects
                        .update
                        .put(&u.pratiche, &key, &protocollo)
                        .map_err(service::retry)?;
                    protocollo
                }
            };
            let answer = SegnalazioneEsito {
                pratica: s.pratica,
                protocollo,
            };
            effects.send(typed::reply(u.sender.client(), inbound, &answer)?);
            Ok(())
        })
    }
}

/// `snodo-connector`'s entry: the tax office with the data of its configuration
/// (`[adapter.data]`: [`Impostazioni`]).
///
/// # Errors
/// A message naming what is wrong with the data, the mail or the store.
pub fn install(
    ctx: &crate::adapter::reference::Context,
    builder: DispatcherBuilder,
) -> Result<crate::adapter::reference::Installed, String> {
    let impostazioni: Impostazioni = crate::back_office::data(&ctx.data)?;
    let u = Ufficio::open(
        ctx.client.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
        impostazioni,
    )?;
    Ok((u.install(builder), Vec::new()))
}
