//! `residenza.cambio`: a family moves from one comune to another (weighted by population);
//! the destination registers it at once or on its term, its police confirm or deny the
//! dwelling, the family may answer a rejection notice, or 45 days of silence confirm it.
//! At the end every body must agree on where each family lives.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng, SeedableRng as _};
use serde_json::json;
use snodo_schemas::services::residenza_cambio::{EsitoAccertamento, StatoPratica};

use snodo_connectors::Clock as _;

use super::Shared;
use crate::population::{HOUSE_NUMBERS, STREETS};

/// The service's name in the figures.
pub const SERVICE: &str = "residenza.cambio";

/// Where a family should live once its practice is final.
#[derive(Debug, Clone)]
pub struct Move {
    /// The practice.
    pub pratica: String,
    /// Its members' codici fiscali.
    pub persone: Vec<String>,
    /// Where they came from.
    pub da: String,
    /// Where they asked to go.
    pub a: String,
    /// Where they live now, by the final state.
    pub esito: String,
}

/// One move, from declaration to its final state. `None` when no family was free to move.
pub async fn trasloco(ctx: Shared, seed: u64) -> Option<Move> {
    let mut rng = StdRng::seed_from_u64(seed);
    let da = ctx.weighted_comune(&mut rng, None)?;
    let a = ctx.weighted_comune(&mut rng, Some(&da))?;
    let mut families: Vec<&str> = ctx
        .citizens
        .iter()
        .filter(|c| c.comune == da)
        .map(|c| c.famiglia.as_str())
        .collect();
    families.dedup();
    let famiglia = (*families.choose(&mut rng)?).to_owned();
    let members: Vec<_> = ctx
        .citizens
        .iter()
        .filter(|c| c.comune == da && c.famiglia == famiglia)
        .cloned()
        .collect();
    let persone: Vec<String> = members.iter().map(|m| m.cf.clone()).collect();
    if !ctx.claim(&persone) {
        return None;
    }
    let pratica = format!("SIM-{}", uuid::Uuid::now_v7().simple());
    let incompleta = rng.random_bool(0.1);
    let oggi = snodo_connectors::back_office::giorno(ctx.world.clock.now()).ok()?;
    let ieri_l_altro = snodo_connectors::back_office::dopo(oggi, -2).ok()?;
    let persone_json: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({"persona": m.persona(),
                   "relazione": if i == 0 { "intestatario" } else { "figlio" }})
        })
        .collect();
    let mut modulo = json!({
        "pratica": pratica,
        "comune": a,
        "data_dichiarazione": oggi.as_str(),
        "data_trasferimento": ieri_l_altro.as_str(),
        "provenienza": {"altro_comune": {"comune": da}},
        "indirizzo": {"comune": a, "via": STREETS.choose(&mut rng).copied().unwrap_or(STREETS[0]),
                      "civico": rng.random_range(1..=HOUSE_NUMBERS).to_string()},
        "persone": persone_json,
        "dichiarante": members[0].cf,
        "occupazione": {"titolo": "locazione"},
        "documento_identita": {"tipo": "carta_identita", "numero": "CA00000AA",
                               "rilasciato_da": "Comune di partenza", "scadenza": "2035-01-01"},
        "firmata": !incompleta,
        "contatti": {"email": "cittadino@example.it"},
    });
    if incompleta && let Some(o) = modulo.as_object_mut() {
        o.remove("documento_identita");
    }
    let log = &ctx.log;
    let started = Instant::now();
    log.start(SERVICE, &pratica);
    let mut mv = Move {
        pratica: pratica.clone(),
        persone,
        da: da.clone(),
        a: a.clone(),
        esito: da.clone(),
    };
    if let Err(e) = ctx.world.portale.dichiara(&modulo).await {
        log.violation(format!(
            "practice {pratica}: the portal could not submit it: {e}"
        ));
        return Some(mv);
    }
    let stato = |ctx: &Shared| {
        ctx.world
            .portale
            .pratica(&pratica)
            .ok()
            .flatten()
            .and_then(|p| p.stato())
    };
    let reached = |want: &'static [StatoPratica]| {
        let ctx = ctx.clone();
        async move { ctx.until(|| stato(&ctx).filter(|s| want.contains(s))).await }
    };
    if incompleta {
        // Received, then refused with its reasons.
        match reached(&[StatoPratica::Rifiutata]).await {
            Some(_) => log.finish(SERVICE, &pratica, started),
            None => log.violation(format!(
                "practice {pratica}: incomplete, yet not refused (at {:?})",
                stato(&ctx)
            )),
        }
        return Some(mv);
    }
    // Received: told to the portal, whatever came after it (on a busy machine the fast clock
    // may have moved the practice on before this looks).
    let received = |ctx: &Shared| {
        ctx.world
            .portale
            .pratica(&pratica)
            .ok()
            .flatten()
            .filter(|p| p.stati.iter().any(|s| s.stato == StatoPratica::Ricevuta))
    };
    if ctx.until(|| received(&ctx)).await.is_none() {
        log.violation(format!(
            "practice {pratica}: complete, yet not received (at {:?})",
            stato(&ctx)
        ));
        return Some(mv);
    }
    let comune = &ctx.world.comuni.get(&a)?.anagrafe;
    if rng.random_bool(0.5) {
        // The official registers it now; the term may have done it first.
        let _ = comune.registra_ora(&pratica).await;
    }
    // On a busy machine the fast clock may pass the 45 days before the police act: then
    // silence has confirmed the practice, a path DOMAIN.md allows.
    let confirmed_by_silence = |ctx: &Shared| stato(ctx) == Some(StatoPratica::Confermata);
    match reached(&[StatoPratica::InAccertamento, StatoPratica::Confermata]).await {
        Some(StatoPratica::InAccertamento) => {}
        Some(_) => {
            mv.esito = a;
            log.finish(SERVICE, &pratica, started);
            return Some(mv);
        }
        None => {
            log.violation(format!(
                "practice {pratica}: never under check (stuck at {:?})",
                stato(&ctx)
            ));
            return Some(mv);
        }
    }
    let roll: f64 = rng.random();
    let expected = if roll < 0.6 {
        if let Err(e) = comune
            .accertamento(&pratica, EsitoAccertamento::Positivo, None)
            .await
            && !confirmed_by_silence(&ctx)
        {
            log.violation(format!(
                "practice {pratica}: the police check was refused: {e}"
            ));
            return Some(mv);
        }
        StatoPratica::Confermata
    } else if roll < 0.8 {
        let verbale = Some("Nessuno al civico".to_owned());
        if let Err(e) = comune
            .accertamento(&pratica, EsitoAccertamento::Negativo, verbale)
            .await
        {
            if confirmed_by_silence(&ctx) {
                mv.esito = a;
                log.finish(SERVICE, &pratica, started);
            } else {
                log.violation(format!(
                    "practice {pratica}: the police check was refused: {e}"
                ));
            }
            return Some(mv);
        }
        if reached(&[StatoPratica::PreavvisoRigetto]).await.is_none() {
            log.violation(format!(
                "practice {pratica}: no rejection notice after a negative check"
            ));
            return Some(mv);
        }
        if rng.random_bool(0.5) {
            if let Err(e) = ctx.world.portale.osservazioni(&pratica, "Abito qui.").await {
                log.violation(format!("practice {pratica}: observations refused: {e}"));
                return Some(mv);
            }
            let arrived = ctx
                .until(|| comune.risposte(&pratica).ok().and_then(|r| r.osservazioni))
                .await;
            if arrived.is_none() {
                log.violation(format!(
                    "practice {pratica}: observations never reached the comune"
                ));
                return Some(mv);
            }
            let accolte = rng.random_bool(0.5);
            if let Err(e) = comune.esamina_osservazioni(&pratica, accolte).await {
                log.violation(format!(
                    "practice {pratica}: deciding the observations: {e}"
                ));
                return Some(mv);
            }
            if accolte {
                StatoPratica::Confermata
            } else {
                StatoPratica::Annullata
            }
        } else {
            // No observations: the notice's 10 days pass and the practice is annulled.
            StatoPratica::Annullata
        }
    } else {
        // Silence: 45 days after the declaration the practice is confirmed.
        StatoPratica::Confermata
    };
    match reached(&[StatoPratica::Confermata, StatoPratica::Annullata]).await {
        Some(s) if s == expected => {
            if s == StatoPratica::Confermata {
                mv.esito = a;
            }
            log.finish(SERVICE, &pratica, started);
        }
        Some(s) => log.violation(format!(
            "practice {pratica}: ended {s:?}, expected {expected:?}"
        )),
        None => log.violation(format!(
            "practice {pratica}: never final (at {:?}, expected {expected:?})",
            stato(&ctx)
        )),
    }
    Some(mv)
}

/// Checks that ANPR and both comuni agree with the final state of `mv`, waiting for the
/// registry's messages to arrive.
pub async fn consistent(ctx: &Shared, mv: &Move) {
    let w = &ctx.world;
    for cf in &mv.persone {
        let (Some(da), Some(a)) = (w.comuni.get(&mv.da), w.comuni.get(&mv.a)) else {
            return;
        };
        let moved = mv.esito == mv.a;
        let agreed = ctx
            .until(|| {
                let anpr = w.anpr.posizione(cf).ok()??;
                let origin = da.anagrafe.residente(cf).ok()??;
                let dest = a.anagrafe.residente(cf).ok()?;
                let dest_here = dest.is_some_and(|r| r.emigrato.is_none());
                (anpr.comune.as_str() == mv.esito
                    && origin.emigrato.is_some() == moved
                    && dest_here == moved)
                    .then_some(())
            })
            .await;
        if agreed.is_none() {
            ctx.log.violation(format!(
                "practice {}: {cf} should live in {} but ANPR says {:?}, {} says emigrated {:?}, {} says resident {:?}",
                mv.pratica,
                mv.esito,
                w.anpr.posizione(cf).ok().flatten().map(|p| p.comune.as_str().to_owned()),
                mv.da,
                da.anagrafe.residente(cf).ok().flatten().map(|r| r.emigrato.is_some()),
                mv.a,
                a.anagrafe.residente(cf).ok().flatten().map(|r| r.emigrato.is_none()),
            ));
        }
    }
}
