//! `tributi.imu` and `pagamenti`: a citizen asks the portal for the property tax of the
//! year (the comune's tax office calculates it, and must agree with its own roll), or pays
//! the June instalment on a second home: the office issues the notice through the payment
//! provider, the citizen verifies, activates and pays by card, and the office closes the
//! notice on the provider's receipt.

use std::time::Instant;

use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use snodo_schemas::formats::{CodiceFiscale, CodiceIstat};
use snodo_schemas::services::pagamenti::{
    Canale, EsitoAttivazione, EsitoRegistrato, EsitoVerifica, Risultato, StatoPosizione,
};
use snodo_schemas::services::tributi_imu::{CalcoloEsito, CalcoloRichiesta, ImmobileCalcolo, Rata};

use snodo_connectors::Clock as _;

use super::Shared;
use crate::population::Citizen;
use crate::world::immobile;

/// The calculation's name in the figures.
pub const CALCOLO: &str = "tributi.imu.calcolo";
/// The payment's name in the figures.
pub const PAGAMENTO: &str = "pagamenti.imu";
/// The tax year of the simulation.
pub const ANNO: u16 = 2027;

fn citizen(ctx: &Shared, rng: &mut StdRng, creditori: bool) -> Option<Citizen> {
    let comune = ctx.weighted_comune(rng, None)?;
    if creditori && !ctx.world.comuni.get(&comune)?.creditore {
        return None;
    }
    let here: Vec<&Citizen> = ctx
        .citizens
        .iter()
        .filter(|c| c.comune == comune && (!creditori || ctx.second_homes.contains(&c.cf)))
        .collect();
    here.choose(rng).map(|c| (*c).clone())
}

/// The property-tax calculation of a citizen's homes.
pub async fn calcolo(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(c) = citizen(&ctx, &mut rng, false) else {
        return;
    };
    let Some(m) = ctx.world.comuni.get(&c.comune) else {
        return;
    };
    let (Ok(cf), Ok(istat)) = (CodiceFiscale::parse(&c.cf), CodiceIstat::parse(&c.comune)) else {
        return;
    };
    let mut immobili = Vec::new();
    for (principale, owned) in [(true, true), (false, ctx.second_homes.contains(&c.cf))] {
        if !owned {
            continue;
        }
        // The rendita is the office's: read it from its roll.
        let roll = m.tributi.titolarita(&cf).unwrap_or_default();
        let Some((_, t)) = roll
            .into_iter()
            .find(|(_, t)| t.immobile.abitazione_principale == principale)
        else {
            continue;
        };
        let Some(i) = immobile(
            &c,
            &m.info.belfiore,
            principale,
            t.immobile.rendita.in_centesimi() / 100,
        ) else {
            continue;
        };
        immobili.push(ImmobileCalcolo {
            immobile: i,
            mesi: Some(12),
            possesso: None,
            residenti: None,
        });
    }
    let pratica = format!("CALC-{}", uuid::Uuid::now_v7().simple());
    let started = Instant::now();
    ctx.log.start(CALCOLO, &pratica);
    let req = CalcoloRichiesta {
        pratica: pratica.clone(),
        contribuente: cf.clone(),
        comune: istat,
        anno: ANNO,
        immobili,
    };
    let answer = ctx
        .world
        .portale_tributi
        .al_comune::<CalcoloRichiesta, CalcoloEsito>(&m.entity, &req)
        .await;
    match answer {
        Ok(CalcoloEsito { calcolo: Some(got), .. }) => {
            match m.tributi.calcola(&cf, ANNO, &[]) {
                Ok(own) if own.imposta == got.imposta => ctx.log.finish(CALCOLO, &pratica, started),
                Ok(own) => ctx.log.violation(format!(
                    "calculation {pratica} for {}: the portal was told {:?}, the office's roll says {:?}",
                    c.cf, got.imposta, own.imposta
                )),
                Err(e) => ctx.log.violation(format!("calculation {pratica}: the office's own: {e}")),
            }
        }
        Ok(other) => ctx.log.violation(format!("calculation {pratica} refused: {:?}", other.motivi)),
        Err(e) => ctx.log.violation(format!("calculation {pratica}: {e}")),
    }
}

/// The June instalment on a second home, issued, verified, activated, paid and closed.
pub async fn pagamento(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(c) = citizen(&ctx, &mut rng, true) else {
        return;
    };
    if !ctx.claim(&[format!("imu-{ANNO}-acconto:{}", c.cf)]) {
        return;
    }
    let Some(m) = ctx.world.comuni.get(&c.comune) else {
        return;
    };
    let Ok(cf) = CodiceFiscale::parse(&c.cf) else {
        return;
    };
    let id = format!("IMU-{}-{}", c.cf, ANNO);
    let started = Instant::now();
    ctx.log.start(PAGAMENTO, &id);
    let log = &ctx.log;
    let avviso = match m.tributi.emetti_avviso(&cf, ANNO, Rata::Acconto).await {
        Ok(a) => a,
        Err(e) => return log.violation(format!("{id}: the notice was not issued: {e}")),
    };
    let Some(nav) = avviso.nav.clone() else {
        return log.violation(format!("{id}: the notice has no NAV"));
    };
    let portal = &ctx.world.portale_tributi;
    let arrived = ctx
        .until(|| {
            portal
                .notifiche(&cf)
                .ok()?
                .into_iter()
                .find(|n| *n.nav() == nav)
        })
        .await;
    if arrived.is_none() {
        return log.violation(format!("{id}: notice {nav} never reached the portal"));
    }
    let importo = match portal.verifica(&m.codice_fiscale, &nav).await {
        Ok(v) => match v.esito {
            EsitoVerifica::Pagabile(p) => p.importo,
            EsitoVerifica::Errore { errore } => {
                return log.violation(format!("{id}: notice {nav} not payable: {errore:?}"));
            }
        },
        Err(e) => return log.violation(format!("{id}: verifying {nav}: {e}")),
    };
    if importo != avviso.importo {
        return log.violation(format!(
            "{id}: the provider asks {importo:?}, the office issued {:?}",
            avviso.importo
        ));
    }
    let token = match portal
        .attiva(&m.codice_fiscale, &nav, importo, Canale::Carta)
        .await
    {
        Ok(a) => match a.esito {
            EsitoAttivazione::Attivato(x) => x.token,
            EsitoAttivazione::Errore { errore } => {
                return log.violation(format!("{id}: activation refused: {errore:?}"));
            }
        },
        Err(e) => return log.violation(format!("{id}: activating {nav}: {e}")),
    };
    let Ok(il) = snodo_connectors::back_office::istante(ctx.world.clock.now()) else {
        return;
    };
    match portal
        .esito(
            &token,
            &nav,
            Risultato::Ok,
            Canale::Carta,
            Some(importo),
            il,
        )
        .await
    {
        Ok(e) if e.stato == EsitoRegistrato::Pagato => {}
        Ok(e) => return log.violation(format!("{id}: payment recorded as {:?}", e.stato)),
        Err(e) => return log.violation(format!("{id}: paying {nav}: {e}")),
    }
    let closed = ctx
        .until(|| {
            m.tributi
                .avvisi()
                .ok()?
                .into_iter()
                .find(|(_, a)| a.nav.as_ref() == Some(&nav) && a.versamento.is_some())
        })
        .await;
    if closed.is_none() {
        return log.violation(format!(
            "{id}: the office never closed notice {nav} (no receipt)"
        ));
    }
    match ctx.world.nodo.posizione(&nav) {
        Ok(Some(p))
            if matches!(
                p.stato,
                StatoPosizione::Pagata | StatoPosizione::Rendicontata
            ) =>
        {
            log.finish(PAGAMENTO, &id, started);
        }
        Ok(p) => log.violation(format!(
            "{id}: the office closed {nav} but the provider's position is {:?}",
            p.map(|p| p.stato)
        )),
        Err(e) => log.violation(format!("{id}: reading the provider's position: {e}")),
    }
}
