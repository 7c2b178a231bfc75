//! `mobilita.contravvenzioni`: a comune's police notify a fine to a citizen's car; the
//! citizen looks it up on the portal by plate and period, then pays it reduced (within 5
//! days), at the minimum (within 60) or late (once enforceable), or appeals to the Prefect —
//! who rejects it with an injunction (paid, or opposed before the Justice of the Peace),
//! accepts it, or lets 120 days of silence accept it — or directly to the Justice of the
//! Peace. At the end the police office, the prefecture, the payment provider and the portal
//! must agree on the fine's final state.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};
use snodo_connectors::Clock as _;
use snodo_connectors::back_office::{dopo, giorno, istante, mezzanotte};
use snodo_connectors::contravvenzioni::comando::{Fascicolo, NuovoVerbale};
use snodo_connectors::contravvenzioni::importi;
use snodo_connectors::contravvenzioni::portale::ErrorePagamento;
use snodo_connectors::contravvenzioni::prefettura::{Prefettura, Scelta};
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Data, Importo, Nav};
use snodo_schemas::services::dati::Soggetto;
use snodo_schemas::services::mobilita_contravvenzioni::{
    Autorita, Criterio, DatiVerbale, EsitoDecisione, Ricorso, StatoVerbale, TipoAvviso,
};
use snodo_schemas::services::pagamenti::{Canale, StatoPosizione};

use super::Shared;
use crate::population::Citizen;
use crate::world::Municipio;

/// The service's name in the figures.
pub const SERVICE: &str = "mobilita.contravvenzioni";

/// What the citizen does about the fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condotta {
    /// Pays at once: reduced, unless a licence suspension excludes it.
    PagaSubito,
    /// Pays once the reduced notice expired: the minimum.
    PagaMinimo,
    /// Pays once the fine became enforceable: half the maximum plus costs.
    PagaTardi,
    /// Appeals to the Prefect, who decides as said.
    Prefetto(Prefetto),
    /// Appeals to the Justice of the Peace.
    Giudice,
}

/// What the Prefect does with an appeal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefetto {
    /// Nothing: after 120 days silence accepts it.
    Silenzio,
    /// Accepts it.
    Accoglie,
    /// Rejects it; the citizen pays the injunction.
    RespingePagata,
    /// Rejects it; the citizen opposes the injunction before the Justice of the Peace.
    RespingeOpposta,
}

/// A fine being followed: where it is and what was paid.
struct Pratica<'a> {
    ctx: &'a Shared,
    m: &'a Municipio,
    istat: CodiceIstat,
    verbale: DatiVerbale,
    id: String,
}

impl Pratica<'_> {
    fn violation(&self, what: String) {
        self.ctx
            .log
            .violation(format!("fine {}: {what}", self.verbale.numero));
    }

    /// Waits until the police office's file satisfies `ok`, up to `term` then the step
    /// timeout.
    async fn fascicolo(
        &self,
        term: Option<time::OffsetDateTime>,
        ok: impl Fn(&Fascicolo) -> bool,
    ) -> Option<Fascicolo> {
        let polizia = &self.m.polizia;
        let numero = &self.verbale.numero;
        let check = || polizia.fascicolo(numero).ok().flatten().filter(|f| ok(f));
        match term {
            Some(t) => self.ctx.until_term(t, check).await,
            None => self.ctx.until(check).await,
        }
    }

    fn criterio(&self) -> Option<Criterio> {
        Some(Criterio::Verbale {
            numero: self.verbale.numero.clone(),
            targa: self.verbale.targa.clone(),
            data: Data::from_date(self.verbale.il.datetime().date())?,
        })
    }

    /// Pays what is due today through the portal; a notice that expired between the lookup
    /// and the payment is looked up again, once. Returns the notice paid.
    async fn paga(&self) -> Option<(TipoAvviso, Nav, Importo)> {
        let portale = &self.ctx.world.portale_contravvenzioni;
        for attempt in 0..2 {
            let il = istante(self.ctx.world.clock.now()).ok()?;
            match portale
                .paga(
                    &self.m.entity,
                    &self.istat,
                    self.criterio()?,
                    Canale::Carta,
                    il,
                )
                .await
            {
                Ok((a, _)) => return Some((a.tipo, a.nav, a.importo)),
                Err(ErrorePagamento::Avviso { .. }) if attempt == 0 => {}
                Err(e) => {
                    self.violation(format!("paying: {e}"));
                    return None;
                }
            }
        }
        self.violation("the notice due was refused twice by the provider".into());
        None
    }

    async fn ricorre(&self, autorita: Autorita, ricorrente: &CodiceFiscale) -> bool {
        let Ok(oggi) = giorno(self.ctx.world.clock.now()) else {
            return false;
        };
        let r = Ricorso {
            pratica: format!("RIC-{}-{autorita:?}", self.verbale.numero),
            numero_verbale: self.verbale.numero.clone(),
            comune: self.istat.clone(),
            autorita,
            ricorrente: ricorrente.clone(),
            motivi: "La segnaletica non era visibile.".into(),
            allegati: Vec::new(),
            presentato_il: oggi,
        };
        match self
            .ctx
            .world
            .portale_contravvenzioni
            .ricorri(&self.m.entity, &r)
            .await
        {
            Ok(x) if x.protocollo.is_some() && x.motivi.is_empty() => true,
            Ok(x) => {
                self.violation(format!("appeal to {autorita:?} refused: {:?}", x.motivi));
                false
            }
            Err(e) => {
                self.violation(format!("appeal to {autorita:?}: {e}"));
                false
            }
        }
    }
}

/// One fine, from notification to its final state. Returns nothing: the checks are logged.
pub async fn verbale(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(istat) = ctx.weighted_comune(&mut rng, None) else {
        return;
    };
    let Some(m) = ctx.world.comuni.get(&istat) else {
        return;
    };
    // Fines are paid to the comune: only a creditor at the provider issues them.
    if !m.creditore {
        return;
    }
    let Some(c) = ctx.free_citizen(&mut rng, None, false) else {
        return;
    };
    let roll: f64 = rng.random();
    let scelta = match roll {
        x if x < 0.30 => Condotta::PagaSubito,
        x if x < 0.45 => Condotta::PagaMinimo,
        x if x < 0.55 => Condotta::PagaTardi,
        x if x < 0.65 => Condotta::Prefetto(Prefetto::Silenzio),
        x if x < 0.72 => Condotta::Prefetto(Prefetto::Accoglie),
        x if x < 0.82 => Condotta::Prefetto(Prefetto::RespingePagata),
        x if x < 0.90 => Condotta::Prefetto(Prefetto::RespingeOpposta),
        _ => Condotta::Giudice,
    };
    let sospensione = rng.random_bool(0.1);
    let giorni_prima = rng.random_range(1..=3);
    segui(&ctx, m, &c, scelta, sospensione, giorni_prima).await;
}

async fn segui(
    ctx: &Shared,
    m: &Municipio,
    c: &Citizen,
    scelta: Condotta,
    sospensione: bool,
    giorni_prima: i64,
) {
    let log = &ctx.log;
    let (Some(targa), Ok(cf), Ok(istat)) = (
        ctx.world.targhe.get(&c.cf).cloned(),
        CodiceFiscale::parse(&c.cf),
        CodiceIstat::parse(&m.info.istat),
    ) else {
        return;
    };
    let now = ctx.world.clock.now();
    let (Ok(oggi), Ok(il)) = (
        giorno(now),
        istante(now - time::Duration::days(giorni_prima)),
    ) else {
        return;
    };
    let numero = format!("V-{}", uuid::Uuid::now_v7().simple());
    // The citizen acts within days of notification; long waits let the prompt go.
    let mut prompt = Some(ctx.prompt());
    let started = Instant::now();
    log.start(SERVICE, &numero);
    // Speeding: €173 to €695 and €14.70 of costs.
    let nuovo = NuovoVerbale {
        numero: numero.clone(),
        il,
        luogo: format!("Via Roma, Comune di {}", m.info.name),
        norma: "art. 142 c. 8 CdS".into(),
        descrizione: "Velocità superiore di oltre 10 km/h al limite".into(),
        targa: targa.clone(),
        trasgressore: Soggetto {
            codice_fiscale: cf.clone(),
            denominazione: format!("{} {}", c.nome, c.cognome),
            indirizzo: None,
            email: None,
        },
        minimo: Importo::centesimi(17_300),
        massimo: Importo::centesimi(69_500),
        spese: Importo::centesimi(1_470),
        punti: Some(3),
        sanzione_accessoria: sospensione,
    };
    // The officer tries again when the provider or the hub did not answer (notifying a number
    // again is safe: it returns the fine as first notified).
    let mut tentativi = 0;
    let verbale = loop {
        match m.polizia.notifica(nuovo.clone(), oggi).await {
            Ok(v) => break v,
            Err(e) if e.is_retryable() && tentativi < 3 => tentativi += 1,
            Err(e) => return log.violation(format!("fine {numero}: not notified: {e}")),
        }
    };
    let p = Pratica {
        ctx,
        m,
        istat: istat.clone(),
        verbale,
        id: numero.clone(),
    };
    let portale = &ctx.world.portale_contravvenzioni;
    let arrived = ctx
        .until(|| {
            portale
                .verbali(&cf)
                .ok()?
                .into_iter()
                .find(|v| v.numero == numero)
        })
        .await;
    if arrived.is_none() {
        return p.violation("never reached the portal".into());
    }
    // The citizen looks the car's fines up by plate and period.
    let Some(dal) = Data::from_date(p.verbale.il.datetime().date() - time::Duration::days(7))
    else {
        return;
    };
    let Ok(al) = giorno(ctx.world.clock.now()) else {
        return;
    };
    match portale
        .cerca(
            &m.entity,
            &istat,
            Criterio::Targa {
                targa: targa.clone(),
                dal,
                al,
            },
        )
        .await
    {
        Ok(found) => match found.iter().find(|v| v.numero == numero) {
            Some(v) if v.dovuto.is_some() => {}
            Some(_) => return p.violation("looked up, yet nothing is due".into()),
            None => {
                return p.violation(format!(
                    "a lookup by plate {} and period missed it",
                    targa.as_str()
                ));
            }
        },
        Err(e) => return p.violation(format!("lookup by plate: {e}")),
    }
    let Some(notificato) = p.verbale.notificato_il else {
        return p.violation("notified without a day".into());
    };
    let giorno_n = |n: i64| dopo(notificato, n).ok().map(mezzanotte);
    // What the fine should end as, the notice paid, and whether the Prefect decided.
    let mut pagato: Option<(TipoAvviso, Nav, Importo)> = None;
    let mut decisione: Option<bool> = None;
    let atteso = match scelta {
        Condotta::PagaSubito => {
            let Some(x) = p.paga().await else { return };
            let s = if x.0 == TipoAvviso::Ridotto {
                StatoVerbale::PagatoRidotto
            } else {
                StatoVerbale::Pagato
            };
            if sospensione && x.0 == TipoAvviso::Ridotto {
                return p.violation("paid reduced despite a licence suspension".into());
            }
            pagato = Some(x);
            s
        }
        Condotta::PagaMinimo => {
            // Past the reduced notice's 5 days.
            let Some(t) = giorno_n(importi::GIORNI_RIDOTTO + 1) else {
                return;
            };
            ctx.until_term(t, || (ctx.world.clock.now() >= t).then_some(()))
                .await;
            let Some(x) = p.paga().await else { return };
            if x.0 == TipoAvviso::Ridotto {
                return p.violation("paid reduced after 5 days".into());
            }
            pagato = Some(x);
            StatoVerbale::Pagato
        }
        Condotta::PagaTardi => {
            let Some(t) = giorno_n(importi::GIORNI_ORDINARIO + 1) else {
                return;
            };
            drop(prompt.take());
            if p.fascicolo(Some(t), |f| f.verbale.stato == StatoVerbale::Esecutivo)
                .await
                .is_none()
            {
                return p.violation("unpaid after 60 days, yet never enforceable".into());
            }
            prompt.replace(ctx.prompt());
            let Some(x) = p.paga().await else { return };
            if x.0 != TipoAvviso::Maggiorato {
                return p.violation(format!("paid late with the {:?} notice", x.0));
            }
            pagato = Some(x);
            StatoVerbale::Pagato
        }
        Condotta::Giudice => {
            if !p.ricorre(Autorita::GiudiceDiPace, &cf).await {
                return;
            }
            StatoVerbale::RicorsoGiudice
        }
        Condotta::Prefetto(come) => {
            if !p.ricorre(Autorita::Prefetto, &cf).await {
                return;
            }
            let Some(prov) = ctx.world.province.get(&m.info.province) else {
                return p.violation(format!("no prefecture for {}", m.info.province));
            };
            let chiave = Prefettura::chiave(&m.entity, &numero);
            let arrived = ctx
                .until(|| prov.prefettura.pratica(&chiave).ok().flatten())
                .await;
            let Some(arrived) = arrived else {
                return p.violation("the appeal never reached the prefecture".into());
            };
            let silenzio = dopo(arrived.ricevuto_il, importi::GIORNI_DECISIONE + 1)
                .ok()
                .map(mezzanotte);
            match come {
                Prefetto::Silenzio => {
                    decisione = Some(true);
                    let Some(t) = silenzio else { return };
                    drop(prompt.take());
                    if p.fascicolo(Some(t), |f| f.verbale.stato == StatoVerbale::Archiviato)
                        .await
                        .is_none()
                    {
                        return p.violation("120 days of silence did not archive it".into());
                    }
                    StatoVerbale::Archiviato
                }
                Prefetto::Accoglie => {
                    decisione = Some(true);
                    if let Err(e) = prov
                        .prefettura
                        .decidi(&chiave, Scelta::Accoglie, "Segnaletica non conforme.")
                        .await
                    {
                        return p.violation(format!("the Prefect could not accept: {e}"));
                    }
                    StatoVerbale::Archiviato
                }
                Prefetto::RespingePagata | Prefetto::RespingeOpposta => {
                    decisione = Some(false);
                    if let Err(e) = prov
                        .prefettura
                        .decidi(
                            &chiave,
                            Scelta::Respinge { importo: None },
                            "Il limite era regolarmente segnalato.",
                        )
                        .await
                    {
                        return p.violation(format!("the Prefect could not reject: {e}"));
                    }
                    if p.fascicolo(None, |f| f.verbale.stato == StatoVerbale::Ingiunzione)
                        .await
                        .is_none()
                    {
                        return p.violation("rejected, yet no injunction at the office".into());
                    }
                    if come == Prefetto::RespingeOpposta {
                        if !p.ricorre(Autorita::GiudiceDiPace, &cf).await {
                            return;
                        }
                        StatoVerbale::RicorsoGiudice
                    } else {
                        let Some(x) = p.paga().await else { return };
                        if x.0 != TipoAvviso::Ingiunzione {
                            return p.violation(format!(
                                "the injunction due, yet the {:?} notice was paid",
                                x.0
                            ));
                        }
                        pagato = Some(x);
                        StatoVerbale::Pagato
                    }
                }
            }
        }
    };
    drop(prompt);
    if consistent(&p, atteso, pagato.as_ref(), decisione).await {
        log.finish(SERVICE, &p.id, started);
    }
}

/// Checks that the police office, the portal, the provider and (after an appeal to the
/// Prefect) the prefecture agree that the fine ended `atteso`, with `pagato` paid; `decisione`
/// is whether the Prefect accepted the appeal.
async fn consistent(
    p: &Pratica<'_>,
    atteso: StatoVerbale,
    pagato: Option<&(TipoAvviso, Nav, Importo)>,
    decisione: Option<bool>,
) -> bool {
    let ctx = p.ctx;
    let Some(f) = p.fascicolo(None, |f| f.verbale.stato == atteso).await else {
        p.violation(format!(
            "the police office holds it {:?}, not {atteso:?}",
            p.m.polizia
                .fascicolo(&p.verbale.numero)
                .ok()
                .flatten()
                .map(|f| f.verbale.stato)
        ));
        return false;
    };
    if let Some((tipo, _, importo)) = pagato {
        match &f.pagamento {
            Some(x) if x.tipo == *tipo && x.importo == *importo => {}
            other => {
                p.violation(format!(
                    "paid {importo} ({tipo:?}), the police office recorded {other:?}"
                ));
                return false;
            }
        }
    } else if f.pagamento.is_some() {
        p.violation(format!("never paid, yet recorded {:?}", f.pagamento));
        return false;
    }
    // The portal's last word on it is the same state.
    let portale = &ctx.world.portale_contravvenzioni;
    let seen = ctx
        .until(|| {
            portale
                .stati(&p.istat, &p.verbale.numero)
                .ok()?
                .last()
                .filter(|s| s.stato == atteso)
                .map(|_| ())
        })
        .await;
    if seen.is_none() {
        p.violation(format!(
            "the portal last saw {:?}, not {atteso:?}",
            portale
                .stati(&p.istat, &p.verbale.numero)
                .ok()
                .and_then(|s| s.last().map(|s| s.stato))
        ));
        return false;
    }
    // The provider: the notice paid is paid, no other one is.
    let nodo = &ctx.world.nodo;
    let paid =
        |s: StatoPosizione| matches!(s, StatoPosizione::Pagata | StatoPosizione::Rendicontata);
    for a in f.verbale.avvisi.iter() {
        let stato = nodo.posizione(&a.nav).ok().flatten().map(|x| x.stato);
        let is_paid = pagato.is_some_and(|(_, nav, _)| *nav == a.nav);
        if stato.is_some_and(paid) != is_paid {
            p.violation(format!(
                "notice {} ({:?}) is {stato:?} at the provider, paid here: {is_paid}",
                a.nav, a.tipo
            ));
            return false;
        }
    }
    // The prefecture's decision agrees with the office's.
    if let Some(accolto) = decisione {
        let Some(prov) = ctx.world.province.get(&p.m.info.province) else {
            return false;
        };
        let chiave = Prefettura::chiave(&p.m.entity, &p.verbale.numero);
        let injunction_paid = pagato.is_some_and(|(t, _, _)| *t == TipoAvviso::Ingiunzione);
        let agreed = ctx
            .until(|| {
                let pr = prov.prefettura.pratica(&chiave).ok()??;
                let d = pr.decisione.as_ref()?;
                let ok = matches!(d.esito, EsitoDecisione::Accolto {}) == accolto
                    && f.decisione.as_ref() == Some(d)
                    && pr.pagato_il.is_some() == injunction_paid;
                ok.then_some(())
            })
            .await;
        if agreed.is_none() {
            p.violation(format!(
                "the prefecture's appeal disagrees with the office (accepted: {accolto}, injunction paid: {injunction_paid}): {:?}",
                prov.prefettura
                    .pratica(&chiave)
                    .ok()
                    .flatten()
                    .map(|x| (x.decisione, x.pagato_il))
            ));
            return false;
        }
    }
    true
}
