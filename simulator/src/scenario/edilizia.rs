//! `edilizia.permessi`: a citizen's technician submits, through the portal, a building permit
//! with its documents to the comune's building office; the office protocols it and computes
//! the fees, asks for an integration (which interrupts the 90-day term), the citizen pays the
//! fees through the payment provider and sends the integration, and 90 simulated days later
//! silence assents — or the office denies it first. Some submissions are a SCIA (works start
//! at once; unchecked for 30 days, it stands) or a CILA (registered at once). At the end the
//! office, the portal and the provider must agree.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};
use serde_json::json;
use snodo_connectors::edilizia::documenti::sha256;
use snodo_connectors::edilizia::portale::PraticaPortale;
use snodo_connectors::edilizia::sportello::{Pratica, Scadenza, chiave};
use snodo_schemas::formats::Importo;
use snodo_schemas::services::dati::Motivo;
use snodo_schemas::services::edilizia_permessi::{
    EsitoProvvedimento, Integrazione, Istanza, StatoIstanza, Titolo,
};
use snodo_schemas::services::pagamenti::{Canale, StatoPosizione};

use super::Shared;
use crate::federation::PORTAL;
use crate::population::STREETS;

/// The service's name in the figures.
pub const SERVICE: &str = "edilizia.permessi";

/// A document by reference: its name, kind and digest.
fn documento(tipo: &str, nome: &str) -> serde_json::Value {
    let bytes = format!("%PDF-1.7 {tipo} {nome}");
    json!({"tipo": tipo, "nome": nome, "media_type": "application/pdf",
           "sha256": sha256(bytes.as_bytes()), "dimensione": bytes.len()})
}

/// How the office ends a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fine {
    /// Silence assents 90 days after the integration.
    Silenzio,
    /// The office denies it.
    Diniego,
}

/// One submission, to its final state.
pub async fn pratica(ctx: Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Some(istat) = ctx.weighted_comune(&mut rng, None) else {
        return;
    };
    let Some(m) = ctx.world.comuni.get(&istat) else {
        return;
    };
    // The fees are paid to the comune: only a creditor at the provider takes submissions.
    if !m.creditore {
        return;
    }
    let Some(c) = ctx.free_citizen(&mut rng, None, false) else {
        return;
    };
    let roll: f64 = rng.random();
    let titolo = match roll {
        x if x < 0.7 => Titolo::PermessoDiCostruire,
        x if x < 0.85 => Titolo::Scia,
        _ => Titolo::Cila,
    };
    let fine = if rng.random_bool(0.2) {
        Fine::Diniego
    } else {
        Fine::Silenzio
    };
    let pratica = format!("EDI-{}", uuid::Uuid::now_v7().simple());
    let volume: u32 = rng.random_range(50..400);
    let istanza: Istanza = match serde_json::from_value(json!({
        "pratica": pratica,
        "comune": istat,
        "titolo": titolo,
        "richiedente": c.cf,
        "tecnico": {"codice_fiscale": "MRTMTT25D09F205Z", "nome": "Matteo Martini",
                    "albo": "Ordine degli Architetti n. 1234",
                    "pec": "matteo.martini@pec.example.it"},
        "indirizzo": {"comune": istat, "via": STREETS[rng.random_range(0..STREETS.len())],
                      "civico": rng.random_range(1..200).to_string()},
        "catasto": [{"comune": m.info.belfiore, "catasto": "fabbricati", "foglio": "12",
                     "particella": c.cf[..6].to_owned(), "subalterno": "6"}],
        "intervento": {"descrizione": "Ampliamento di un edificio residenziale",
                       "superficie_mq": volume / 3, "volume_mc": volume,
                       "costo_costruzione": Importo::centesimi(u64::from(volume) * 60_000)},
        "area_vincolata": false,
        "allegati": [documento("relazione tecnica", "relazione.pdf"),
                     documento("elaborato di progetto", "tavole.pdf")],
    })) {
        Ok(i) => i,
        Err(e) => {
            return ctx
                .log
                .violation(format!("building practice {pratica}: not well formed: {e}"));
        }
    };
    let log = &ctx.log;
    let violation = |what: String| log.violation(format!("building practice {pratica}: {what}"));
    let started = Instant::now();
    // The citizen pays and integrates within the office's terms; the 90 and 30 days of
    // silence are waited without the prompt.
    let mut prompt = Some(ctx.prompt());
    log.start(SERVICE, &pratica);
    let portale = &ctx.world.portale_edilizia;
    let key = match PORTAL.parse() {
        Ok(p) => chiave(&p, &pratica),
        Err(e) => return violation(format!("the portal's entity: {e}")),
    };
    match portale.presenta(&m.entity, &istanza).await {
        Ok(p) if p.protocollo.is_some() && p.motivi.is_empty() => {}
        Ok(p) => return violation(format!("refused: {:?}", p.motivi)),
        Err(e) => return violation(format!("not submitted: {e}")),
    }
    let al_portale = |ok: &dyn Fn(&PraticaPortale) -> bool| {
        portale.pratica(&pratica).ok().flatten().filter(|p| ok(p))
    };
    let Some(p) = ctx.until(|| al_portale(&|p| p.oneri.is_some())).await else {
        return violation("the fees never reached the portal".into());
    };
    let totale = p.oneri.as_ref().map_or(Importo::ZERO, |o| o.totale);
    let sportello = &m.edilizia;
    if titolo == Titolo::PermessoDiCostruire {
        if let Err(e) = sportello
            .richiedi_integrazioni(&key, vec!["Relazione paesaggistica".into()])
            .await
        {
            return violation(format!("no integration could be asked: {e}"));
        }
        let asked = ctx
            .until(|| {
                al_portale(&|p| {
                    p.stato == Some(StatoIstanza::Integrazione) && !p.richieste.is_empty()
                })
            })
            .await;
        if asked.is_none() {
            return violation("the request for integrations never reached the portal".into());
        }
    }
    if let Err(e) = portale.paga(&pratica, Canale::Carta).await {
        return violation(format!("the fees were not paid: {e}"));
    }
    let closed = ctx
        .until(|| {
            sportello
                .oneri(&key)
                .ok()
                .flatten()
                .filter(|o| o.pagato_il.is_some())
        })
        .await;
    let Some(oneri) = closed else {
        return violation("paid, yet the office never had the receipt".into());
    };
    let atteso = match titolo {
        Titolo::PermessoDiCostruire => {
            let integrazione: Integrazione = match serde_json::from_value(json!({
                "pratica": pratica,
                "allegati": [documento("relazione paesaggistica", "paesaggistica.pdf")],
                "nota": "Integrazioni richieste.",
            })) {
                Ok(i) => i,
                Err(e) => return violation(format!("the integration is not well formed: {e}")),
            };
            if let Err(e) = portale.integra(&m.entity, &integrazione).await {
                return violation(format!("the integration was not sent: {e}"));
            }
            let taken = ctx
                .until(|| {
                    sportello
                        .pratica(&key)
                        .ok()
                        .flatten()
                        .filter(|p| p.stato == StatoIstanza::Istruttoria)
                })
                .await;
            if taken.is_none() {
                return violation("the integration was never taken".into());
            }
            drop(prompt.take());
            match fine {
                Fine::Diniego => {
                    let motivo = Motivo {
                        codice: "distanze".into(),
                        descrizione: "L'ampliamento non rispetta le distanze dai confini.".into(),
                    };
                    if let Err(e) = sportello
                        .decidi(&key, EsitoProvvedimento::Negato, vec![motivo], Vec::new())
                        .await
                    {
                        return violation(format!("the office could not deny it: {e}"));
                    }
                    StatoIstanza::Negata
                }
                Fine::Silenzio => {
                    let Some(term) = sportello.scadenza(&key, Scadenza::Decisione).ok().flatten()
                    else {
                        return violation("no term of decision after the integration".into());
                    };
                    let granted = ctx
                        .until_term(term, || {
                            sportello
                                .pratica(&key)
                                .ok()
                                .flatten()
                                .filter(|p| p.stato == StatoIstanza::Rilasciata)
                        })
                        .await;
                    match granted {
                        Some(p) if p.silenzio_assenso.is_some() => {}
                        Some(p) => {
                            return violation(format!(
                                "granted, but not by silence: {:?}",
                                p.provvedimento
                            ));
                        }
                        None => return violation("90 days of silence did not grant it".into()),
                    }
                    StatoIstanza::Rilasciata
                }
            }
        }
        Titolo::Scia => {
            drop(prompt.take());
            // Unchecked for 30 days, the SCIA stands.
            let Some(term) = sportello.scadenza(&key, Scadenza::Controllo).ok().flatten() else {
                return violation("no term of check for a SCIA".into());
            };
            let stands = ctx
                .until_term(term, || {
                    sportello
                        .pratica(&key)
                        .ok()
                        .flatten()
                        .filter(|p| p.stato == StatoIstanza::Rilasciata)
                })
                .await;
            if stands.is_none() {
                return violation("unchecked for 30 days, yet the SCIA does not stand".into());
            }
            StatoIstanza::Rilasciata
        }
        _ => StatoIstanza::Istruttoria,
    };
    drop(prompt);
    // The office, the portal and the provider agree.
    let ufficio: Option<Pratica> = sportello.pratica(&key).ok().flatten();
    let Some(u) = ufficio.filter(|u| u.stato == atteso && u.conclusa()) else {
        return violation(format!(
            "expected {atteso:?}, the office holds {:?}",
            sportello.pratica(&key).ok().flatten().map(|p| p.stato)
        ));
    };
    let agreed = ctx
        .until(|| al_portale(&|p| p.stato == Some(atteso) && p.provvedimento == u.provvedimento))
        .await;
    if agreed.is_none() {
        return violation(format!(
            "the office holds {atteso:?}, the portal {:?}",
            portale.pratica(&pratica).ok().flatten().map(|p| p.stato)
        ));
    }
    if oneri.calcolo.totale != totale {
        return violation(format!(
            "the portal was asked {totale}, the office computed {}",
            oneri.calcolo.totale
        ));
    }
    let Some(nav) = oneri.nav else {
        return violation("paid fees without a notice".into());
    };
    match ctx.world.nodo.posizione(&nav) {
        Ok(Some(x))
            if matches!(
                x.stato,
                StatoPosizione::Pagata | StatoPosizione::Rendicontata
            ) => {}
        other => {
            return violation(format!(
                "the fees are paid at the office, the provider's notice {nav} is {:?}",
                other.map(|p| p.map(|p| p.stato))
            ));
        }
    }
    log.finish(SERVICE, &pratica, started);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_by_reference_carries_its_digest() {
        let d = documento("relazione tecnica", "relazione.pdf");
        assert_eq!(d["sha256"].as_str().map(str::len), Some(64));
    }
}
