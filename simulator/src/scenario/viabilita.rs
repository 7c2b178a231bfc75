//! `mobilita.viabilita`: a comune's or a province's traffic office publishes an event
//! (roadworks, a closure, a public event, traffic) with place, period and severity, may
//! update it, and may end it (over, or withdrawn); the hub fans each message out to the
//! subscribers — the portal, the comuni, the provinces. A conversation ends when the portal's
//! board shows the event as its publisher last left it; at the end of the run every
//! subscriber's board must equal the publishers' current events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};
use snodo_connectors::Clock as _;
use snodo_connectors::back_office::istante;
use snodo_connectors::viabilita::abbonato::Abbonato;
use snodo_connectors::viabilita::bacheca::Filtro;
use snodo_connectors::viabilita::ufficio::{Bozza, Ufficio};
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceIstat, Elenco};
use snodo_schemas::services::dati::Intervallo;
use snodo_schemas::services::mobilita_viabilita::{Gravita, Luogo, MotivoFine, TipoEvento};

use super::Shared;
use crate::federation::PORTAL;
use crate::population::STREETS;

/// The service's name in the figures.
pub const SERVICE: &str = "mobilita.viabilita";

/// A publisher: its entity and traffic office.
fn publisher(ctx: &Shared, rng: &mut StdRng) -> Option<(EntityId, Arc<Ufficio>, CodiceIstat)> {
    let istat = ctx.weighted_comune(rng, None)?;
    let m = ctx.world.comuni.get(&istat)?;
    let luogo = CodiceIstat::parse(&istat).ok()?;
    if rng.random_bool(0.25) {
        let p = ctx.world.province.get(&m.info.province)?;
        Some((p.entity.clone(), p.viabilita.clone(), luogo))
    } else {
        Some((m.entity.clone(), m.viabilita.clone(), luogo))
    }
}

fn bozza(rng: &mut StdRng, comune: &CodiceIstat, now: time::OffsetDateTime) -> Option<Bozza> {
    const TIPI: [(TipoEvento, &str); 4] = [
        (
            TipoEvento::Lavori,
            "Lavori di rifacimento del manto stradale",
        ),
        (TipoEvento::Chiusura, "Chiusura al traffico"),
        (TipoEvento::Manifestazione, "Mercato straordinario"),
        (TipoEvento::Traffico, "Traffico intenso"),
    ];
    const GRAVITA: [Gravita; 4] = [
        Gravita::Bassa,
        Gravita::Media,
        Gravita::Alta,
        Gravita::Critica,
    ];
    let (tipo, titolo) = TIPI[rng.random_range(0..TIPI.len())];
    let strada = STREETS[rng.random_range(0..STREETS.len())];
    let inizio = istante(now + time::Duration::days(rng.random_range(0..5))).ok()?;
    let fine = istante(now + time::Duration::days(rng.random_range(6..40))).ok()?;
    Some(Bozza {
        tipo,
        titolo: format!("{titolo} in {strada}"),
        descrizione: None,
        luoghi: Elenco::new(vec![Luogo {
            comune: comune.clone(),
            strada: strada.to_owned(),
            da: None,
            a: None,
            coordinate: None,
        }])?,
        periodo: Intervallo {
            inizio,
            fine: Some(fine),
        },
        gravita: GRAVITA[rng.random_range(0..GRAVITA.len())],
    })
}

/// One event's life at its publisher, until the portal's board shows its last state.
pub async fn evento(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some((da, ufficio, comune)) = publisher(&ctx, &mut rng) else {
        return;
    };
    let Some(prima) = bozza(&mut rng, &comune, ctx.world.clock.now()) else {
        return;
    };
    let log = &ctx.log;
    let started = Instant::now();
    let evento = match ufficio.pubblica(prima).await {
        Ok(e) => e,
        Err(e) => return log.violation(format!("{da}: an event was not published: {e}")),
    };
    let id = evento.id.clone();
    log.start(SERVICE, &format!("{da}/{id}"));
    let violation = |what: String| log.violation(format!("event {id} of {da}: {what}"));
    let mut versione = evento.versione;
    for _ in 0..rng.random_range(0..3) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        let Some(b) = bozza(&mut rng, &comune, ctx.world.clock.now()) else {
            return;
        };
        match ufficio.aggiorna(&id, b).await {
            Ok(e) => versione = e.versione,
            Err(e) => return violation(format!("not updated: {e}")),
        }
    }
    let finito = rng.random_bool(0.6);
    if finito {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        let motivo = if rng.random_bool(0.7) {
            MotivoFine::Concluso
        } else {
            MotivoFine::Annullato
        };
        if let Err(e) = ufficio.termina(&id, motivo).await {
            return violation(format!("not ended: {e}"));
        }
    }
    // The portal's board shows it as the publisher left it.
    let bacheca = &ctx.world.bacheca;
    let shown = ctx
        .until(|| {
            let s = bacheca.scheda(&da, &id).ok()??;
            let ok = if finito {
                s.fine.is_some()
            } else {
                s.attivo().is_some_and(|e| e.versione == versione)
            };
            ok.then_some(())
        })
        .await;
    match shown {
        Some(()) => log.finish(SERVICE, &format!("{da}/{id}"), started),
        None => violation(format!(
            "the portal's board never showed it {} (version {versione})",
            if finito { "ended" } else { "active" }
        )),
    }
}

/// The active events, `(publisher, id, version)`, that every board must show.
fn current(ctx: &Shared) -> Result<BTreeSet<(String, String, u32)>, String> {
    let w = &ctx.world;
    let mut offices: Vec<(&EntityId, &Ufficio)> = Vec::new();
    for m in w.comuni.values() {
        offices.push((&m.entity, &m.viabilita));
    }
    for p in w.province.values() {
        offices.push((&p.entity, &p.viabilita));
    }
    let mut out = BTreeSet::new();
    for (e, u) in offices {
        for p in u.eventi().map_err(|x| format!("{e}'s events: {x}"))? {
            if p.fine.is_none() {
                out.insert((e.to_string(), p.evento.id, p.evento.versione));
            }
        }
    }
    Ok(out)
}

/// What `board` shows, `(publisher, id, version)`.
fn shown(board: &Abbonato) -> Result<BTreeSet<(String, String, u32)>, String> {
    Ok(board
        .attivi(&Filtro::tutti())
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|v| (v.pubblicato_da.to_string(), v.evento.id, v.evento.versione))
        .collect())
}

/// Checks that every subscriber's board (the portal's, each following comune's, each province's)
/// equals the publishers' current events, a subscriber's own aside, waiting for the hub's
/// fan-out to arrive.
pub async fn consistent(ctx: &Shared) {
    let w = &ctx.world;
    let mut boards: Vec<(String, &Abbonato)> = vec![(PORTAL.to_owned(), w.bacheca.as_ref())];
    for m in w.comuni.values() {
        if let Some(b) = &m.bacheca {
            boards.push((m.entity.to_string(), b.as_ref()));
        }
    }
    for p in w.province.values() {
        boards.push((p.entity.to_string(), p.bacheca.as_ref()));
    }
    let want = match current(ctx) {
        Ok(w) => w,
        Err(e) => return ctx.log.violation(format!("mobility news: {e}")),
    };
    for (who, board) in boards {
        let mine = |s: &BTreeSet<(String, String, u32)>| -> BTreeSet<(String, String, u32)> {
            s.iter().filter(|(p, _, _)| *p != who).cloned().collect()
        };
        let expected = mine(&want);
        let same = ctx
            .until(|| shown(board).ok().filter(|s| mine(s) == expected))
            .await;
        if same.is_none() {
            let got = shown(board).map(|s| mine(&s)).unwrap_or_default();
            let missing: Vec<_> = expected.difference(&got).take(3).collect();
            let extra: Vec<_> = got.difference(&expected).take(3).collect();
            ctx.log.violation(format!(
                "mobility news: {who}'s board differs from the publishers' ({} shown, {} current; missing {missing:?}, extra {extra:?})",
                got.len(),
                expected.len()
            ));
        }
    }
}
