//! `mobilita.ztl`: a resident asks the portal for a ZTL permit for the car registered in
//! their name; the comune's office checks residence with ANPR and the car with the motor
//! registry, asks for the registration papers when they are missing (answered through the
//! portal), takes the fee through the payment provider and issues the permit. Some applicants
//! live elsewhere and are refused as not resident, their fee's notice withdrawn. At the end
//! the office, the portal and the provider must agree.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};
use serde_json::json;
use snodo_connectors::Clock as _;
use snodo_connectors::back_office::{giorno, istante};
use snodo_connectors::ztl::portale::{ErrorePortale, Vista};
use snodo_schemas::services::mobilita_ztl::{Domanda, Integrazione, StatoPermesso};
use snodo_schemas::services::pagamenti::{Canale, StatoPosizione};

use super::Shared;
use crate::federation::PORTAL;
use crate::world::{ZTL_DOCUMENT, ZTL_SECTOR};

/// The service's name in the figures.
pub const SERVICE: &str = "mobilita.ztl";

fn documento(tipo: &str) -> serde_json::Value {
    json!({"tipo": tipo, "nome": "documento.pdf", "media_type": "application/pdf",
           "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
           "dimensione": 48213})
}

/// One application for a resident's permit, to its decision.
pub async fn permesso(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(istat) = ctx.weighted_comune(&mut rng, None) else {
        return;
    };
    let Some(m) = ctx.world.comuni.get(&istat) else {
        return;
    };
    // The fee is paid to the comune: only a creditor at the provider takes applications.
    if !m.creditore {
        return;
    }
    let altrove = rng.random_bool(0.15) && ctx.world.comuni.len() > 1;
    let residenti_altrove = altrove
        .then(|| ctx.weighted_comune(&mut rng, Some(&istat)))
        .flatten();
    let da = residenti_altrove.as_deref().unwrap_or(&istat);
    // The applicant must not move meanwhile: residence is what the office checks.
    let Some(c) = ctx.free_citizen(&mut rng, Some(da), true) else {
        return;
    };
    let non_residente = c.comune != istat;
    let senza_carta = rng.random_bool(0.5);
    let Some(targa) = ctx.world.targhe.get(&c.cf) else {
        return;
    };
    let Ok(oggi) = giorno(ctx.world.clock.now()) else {
        return;
    };
    let pratica = format!("ZTL-{}", uuid::Uuid::now_v7().simple());
    let allegati: Vec<_> = if senza_carta {
        Vec::new()
    } else {
        vec![documento(ZTL_DOCUMENT)]
    };
    let domanda: Domanda = match serde_json::from_value(json!({
        "pratica": pratica,
        "comune": istat,
        "tipo": "rilascio",
        "categoria": "residente",
        "richiedente": c.cf,
        "targhe": [targa.as_str()],
        "settori": [ZTL_SECTOR],
        "periodo": {"dal": oggi.as_str()},
        "allegati": allegati,
        "email": format!("{}@example.it", c.cf.to_lowercase()),
    })) {
        Ok(d) => d,
        Err(e) => {
            return ctx
                .log
                .violation(format!("ZTL application {pratica}: not well formed: {e}"));
        }
    };
    let log = &ctx.log;
    let violation = |what: String| log.violation(format!("ZTL application {pratica}: {what}"));
    let started = Instant::now();
    // The applicant answers and pays within the office's 30 days.
    let prompt = ctx.prompt();
    log.start(SERVICE, &pratica);
    let portale = &ctx.world.portale_ztl;
    let ricevuta = match portale.domanda(&m.entity, domanda).await {
        Ok(r) => r,
        // The receipt comes once the provider gave the fee's notice: a busy federation may
        // take longer than the portal waits, and the portal keeps it when it comes.
        Err(ErrorePortale::Sistema(e)) => {
            match ctx
                .until(|| portale.ricevuta(&pratica).ok().flatten())
                .await
            {
                Some(r) => r,
                None => return violation(format!("never received: {e}")),
            }
        }
        Err(e) => return violation(format!("not received: {e}")),
    };
    let vista = |want: &'static [StatoPermesso]| {
        let ctx = ctx.clone();
        let pratica = pratica.clone();
        async move {
            ctx.until(|| {
                ctx.world
                    .portale_ztl
                    .vista(&pratica)
                    .ok()
                    .flatten()
                    .filter(|v| want.contains(&v.stato))
            })
            .await
        }
    };
    let stato = || portale.vista(&pratica).ok().flatten().map(|v| v.stato);
    if non_residente {
        let Some(v) = vista(&[StatoPermesso::Rigettata, StatoPermesso::Rilasciato]).await else {
            return violation(format!("never decided (at {:?})", stato()));
        };
        if !codici(&v).iter().any(|c| c == "non-residente") {
            return violation(format!(
                "the applicant lives in {}, yet it ended {:?} ({:?})",
                c.comune,
                v.stato,
                codici(&v)
            ));
        }
    } else {
        if senza_carta {
            let Some(v) = vista(&[StatoPermesso::Integrazione]).await else {
                return violation(format!(
                    "the registration papers are missing, yet no request came (at {:?})",
                    stato()
                ));
            };
            let asked = v
                .integrazione
                .as_ref()
                .is_some_and(|r| r.richieste.iter().any(|x| x == ZTL_DOCUMENT));
            if !asked {
                return violation(format!("the request asks for {:?}", v.integrazione));
            }
            let integrazione: Integrazione = match serde_json::from_value(json!({
                "pratica": pratica,
                "nota": "allego la carta di circolazione",
                "allegati": [documento(ZTL_DOCUMENT)],
            })) {
                Ok(i) => i,
                Err(e) => return violation(format!("the answer is not well formed: {e}")),
            };
            if let Err(e) = portale.integra(&integrazione).await {
                return violation(format!("the answer was not sent: {e}"));
            }
            if vista(&[StatoPermesso::InVerifica]).await.is_none() {
                return violation(format!("answered, yet not verifying (at {:?})", stato()));
            }
        }
        let Ok(il) = istante(ctx.world.clock.now()) else {
            return;
        };
        if let Err(e) = portale
            .paga(&pratica, &m.codice_fiscale, Canale::Carta, il)
            .await
        {
            return violation(format!("the fee was not paid: {e}"));
        }
        if vista(&[StatoPermesso::Rilasciato]).await.is_none() {
            return violation(format!("paid, yet not issued (at {:?})", stato()));
        }
    }
    drop(prompt);
    // The office, the portal and the provider agree.
    let Some(v) = portale.vista(&pratica).ok().flatten() else {
        return violation("vanished from the portal".into());
    };
    let ufficio = ctx
        .until(|| {
            m.ztl
                .pratica_di(PORTAL, &pratica)
                .ok()
                .flatten()
                .filter(|p| p.stato == v.stato)
        })
        .await;
    let Some(u) = ufficio else {
        return violation(format!(
            "the portal says {:?}, the office {:?}",
            v.stato,
            m.ztl
                .pratica_di(PORTAL, &pratica)
                .ok()
                .flatten()
                .map(|p| p.stato)
        ));
    };
    if let Some(r) = &v.rilascio {
        match m.ztl.permesso(&r.permesso) {
            Ok(Some(p))
                if p.stato == StatoPermesso::Rilasciato
                    && p.targhe.iter().any(|t| t == targa)
                    && u.permesso.as_ref() == Some(&r.permesso) => {}
            other => {
                return violation(format!(
                    "issued permit {} is, at the office, {:?}",
                    r.permesso,
                    other.map(|p| p.map(|p| p.stato))
                ));
            }
        }
    }
    if let Some(nav) = &ricevuta.nav {
        let want = |s: StatoPosizione| match v.stato {
            StatoPermesso::Rilasciato => {
                matches!(s, StatoPosizione::Pagata | StatoPosizione::Rendicontata)
            }
            _ => s == StatoPosizione::Invalida,
        };
        let settled = ctx
            .until(|| {
                ctx.world
                    .nodo
                    .posizione(nav)
                    .ok()
                    .flatten()
                    .filter(|p| want(p.stato))
            })
            .await;
        if settled.is_none() {
            return violation(format!(
                "{:?}, yet its fee's notice {nav} is {:?} at the provider",
                v.stato,
                ctx.world
                    .nodo
                    .posizione(nav)
                    .ok()
                    .flatten()
                    .map(|p| p.stato)
            ));
        }
    }
    log.finish(SERVICE, &pratica, started);
}

fn codici(v: &Vista) -> Vec<String> {
    v.rigetto
        .as_ref()
        .map(|r| r.motivi.iter().map(|m| m.codice.clone()).collect())
        .unwrap_or_default()
}
