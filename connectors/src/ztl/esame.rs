//! The examination of an application: from what ANPR, the motor registry, the applicant and
//! the payment provider answered, what is wrong (a reason to reject), what is still awaited,
//! and which documents are missing.

use snodo_schemas::formats::{CodiceFiscale, CodiceIstat, Importo};
use snodo_schemas::services::dati::Motivo;
use snodo_schemas::services::mobilita_ztl::{Categoria, Domanda};

use super::pratica::Esito;
use crate::back_office::motivo;

/// Whether the vehicles of a permit of `categoria` must be the applicant's own. A disabled
/// person's badge goes with the person, in whatever car carries them, and a temporary need may
/// be met with a hired car: those vehicles need only exist.
#[must_use]
pub fn intestati(categoria: Categoria) -> bool {
    !matches!(categoria, Categoria::Disabile | Categoria::Temporaneo)
}

/// Whether the applicant's residence in the comune is checked: residents' permits only.
#[must_use]
pub fn residenza_richiesta(categoria: Categoria) -> bool {
    categoria == Categoria::Residente
}

/// A name compared without regard to case and spacing (`Via  roma` is `via roma`).
#[must_use]
pub fn normalizza(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the office expects of an application, from its settings.
#[derive(Clone, Copy, Debug)]
pub struct Attese<'a> {
    /// The comune the applicant must live in (residents).
    pub comune: &'a CodiceIstat,
    /// The streets of the sectors asked for; empty when those sectors list none.
    pub vie: &'a [String],
    /// The documents the category needs (by kind).
    pub documenti: &'a [String],
    /// The fee.
    pub tariffa: Importo,
}

/// The state of an application's checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Esame {
    /// What is wrong: each a reason to reject.
    pub difformi: Vec<Motivo>,
    /// The checks still unanswered (ANPR, the motor registry), each as the reason a decision
    /// taken now would give.
    pub senza_risposta: Vec<Motivo>,
    /// The fee is not paid yet: the reason a decision taken now would give.
    pub non_pagata: Option<Motivo>,
    /// The documents neither the application nor an answer brought.
    pub documenti_mancanti: Vec<String>,
}

impl Esame {
    /// Whether the permit can be issued.
    #[must_use]
    pub fn completo(&self) -> bool {
        self.difformi.is_empty()
            && self.senza_risposta.is_empty()
            && self.non_pagata.is_none()
            && self.documenti_mancanti.is_empty()
    }

    /// Whether the application is to be rejected now: something is wrong and every check has
    /// answered (so that the rejection gives every reason), or its last day has come.
    #[must_use]
    pub fn da_rigettare(&self, ultimo_giorno: bool) -> bool {
        !self.difformi.is_empty() && (self.senza_risposta.is_empty() || ultimo_giorno)
    }

    /// Every reason not to issue, as a rejection at the term gives them.
    #[must_use]
    pub fn motivi(&self) -> Vec<Motivo> {
        let mut out = self.difformi.clone();
        out.extend(self.senza_risposta.iter().cloned());
        out.extend(self.non_pagata.iter().cloned());
        if !self.documenti_mancanti.is_empty() {
            out.push(motivo(
                "integrazione-mancante",
                format!(
                    "the documents asked for did not come: {}",
                    self.documenti_mancanti.join(", ")
                ),
            ));
        }
        out
    }
}

/// Examines application `domanda` against what `esiti` answered and what `attese` asks.
#[must_use]
pub fn esamina(domanda: &Domanda, esiti: &[Esito], attese: &Attese<'_>) -> Esame {
    let mut e = Esame::default();
    if residenza_richiesta(domanda.categoria) {
        residenza(domanda, esiti, attese, &mut e);
    }
    for targa in domanda.targhe.iter() {
        let esito = esiti.iter().find_map(|x| match x {
            Esito::Veicolo(v) if v.targa == *targa => Some(v),
            _ => None,
        });
        match esito {
            None => e.senza_risposta.push(motivo(
                "verifica-veicolo-senza-risposta",
                format!(
                    "the motor registry has not answered about {}",
                    targa.as_str()
                ),
            )),
            Some(v) => match &v.veicolo {
                None => e.difformi.push(motivo(
                    "veicolo-sconosciuto",
                    format!("no vehicle with plate {} is registered", targa.as_str()),
                )),
                Some(veicolo)
                    if intestati(domanda.categoria)
                        && !stesso(&veicolo.intestatario, &domanda.richiedente) =>
                {
                    e.difformi.push(motivo(
                        "veicolo-non-intestato",
                        format!(
                            "the vehicle {} is not registered to {}",
                            targa.as_str(),
                            domanda.richiedente.as_str()
                        ),
                    ));
                }
                Some(_) => {}
            },
        }
    }
    let portati: Vec<String> = domanda
        .allegati
        .iter()
        .chain(esiti.iter().flat_map(|x| match x {
            Esito::Integrazione(i) => i.allegati.iter(),
            _ => [].iter(),
        }))
        .map(|d| normalizza(&d.tipo))
        .collect();
    e.documenti_mancanti = attese
        .documenti
        .iter()
        .filter(|d| !portati.contains(&normalizza(d)))
        .cloned()
        .collect();
    if attese.tariffa > Importo::ZERO {
        let pagato = esiti
            .iter()
            .any(|x| matches!(x, Esito::Pagamento { importo, .. } if *importo >= attese.tariffa));
        if !pagato {
            e.non_pagata = Some(motivo(
                "tariffa-non-pagata",
                format!(
                    "the fee of {} cents has not been paid",
                    attese.tariffa.in_centesimi()
                ),
            ));
        }
    }
    e
}

fn stesso(a: &CodiceFiscale, b: &CodiceFiscale) -> bool {
    a.as_str().eq_ignore_ascii_case(b.as_str())
}

fn residenza(domanda: &Domanda, esiti: &[Esito], attese: &Attese<'_>, e: &mut Esame) {
    let esito = esiti.iter().find_map(|x| match x {
        Esito::Residenza(r) => Some(r),
        _ => None,
    });
    let Some(esito) = esito else {
        e.senza_risposta.push(motivo(
            "verifica-residenza-senza-risposta",
            "the population registry has not answered about the applicant's residence",
        ));
        return;
    };
    match &esito.residenza {
        Some(ind) if ind.comune == *attese.comune => {
            let via = normalizza(&ind.via);
            if !attese.vie.is_empty() && !attese.vie.iter().any(|v| normalizza(v) == via) {
                e.difformi.push(motivo(
                    "fuori-settore",
                    format!(
                        "the applicant lives in {}, outside the sectors asked for ({})",
                        ind.via,
                        domanda
                            .settori
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Some(ind) => e.difformi.push(motivo(
            "non-residente",
            format!(
                "{} lives in comune {}, not in {}",
                domanda.richiedente.as_str(),
                ind.comune,
                attese.comune
            ),
        )),
        None => e.difformi.push(motivo(
            "non-residente",
            format!(
                "the population registry has no residence for {}",
                domanda.richiedente.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use snodo_schemas::services::mobilita_ztl::{
        Integrazione, VerificaResidenzaEsito, VerificaVeicoloEsito,
    };

    const ROSSI: &str = "RSSMRA85T10A562S";
    const ALTRO: &str = "MRTMTT25D09F205Z";

    fn domanda(categoria: &str, targhe: &[&str]) -> Domanda {
        serde_json::from_value(json!({
            "pratica": "P-1", "comune": "001272", "tipo": "rilascio", "categoria": categoria,
            "richiedente": ROSSI, "targhe": targhe, "settori": ["A"],
            "periodo": {"dal": "2026-03-02"}, "email": "a@example.it",
        }))
        .unwrap()
    }

    fn residenza(comune: Option<&str>, via: &str) -> Esito {
        Esito::Residenza(
            serde_json::from_value::<VerificaResidenzaEsito>(json!({
                "pratica": "ZTL/2026/000001", "codice_fiscale": ROSSI,
                "residenza": comune.map(|c| json!({"comune": c, "via": via, "civico": "1"})),
            }))
            .unwrap(),
        )
    }

    fn veicolo(targa: &str, intestatario: Option<&str>) -> Esito {
        Esito::Veicolo(
            serde_json::from_value::<VerificaVeicoloEsito>(json!({
                "pratica": "ZTL/2026/000001", "targa": targa,
                "veicolo": intestatario.map(|i| json!({"intestatario": i, "tipo": "autovettura",
                                                      "classe_euro": 6, "alimentazione": "benzina"})),
            }))
            .unwrap(),
        )
    }

    fn pagato(euro: u64) -> Esito {
        Esito::Pagamento {
            ricevuta: "R-1".into(),
            importo: Importo::euro(euro).unwrap(),
            il: snodo_schemas::formats::Istante::parse("2026-03-03T10:00:00Z").unwrap(),
        }
    }

    fn codici(m: &[Motivo]) -> Vec<&str> {
        m.iter().map(|m| m.codice.as_str()).collect()
    }

    #[test]
    fn a_resident_with_his_car_papers_and_the_fee_paid_is_complete() {
        let comune = CodiceIstat::parse("001272").unwrap();
        let vie = vec!["Via  Roma".to_owned()];
        let documenti = vec!["Carta di circolazione".to_owned()];
        let attese = Attese {
            comune: &comune,
            vie: &vie,
            documenti: &documenti,
            tariffa: Importo::euro(30).unwrap(),
        };
        let d = domanda("residente", &["AB123CD"]);
        // Nothing answered yet: two checks awaited, the papers and the fee missing.
        let e = esamina(&d, &[], &attese);
        assert_eq!(
            codici(&e.senza_risposta),
            [
                "verifica-residenza-senza-risposta",
                "verifica-veicolo-senza-risposta"
            ]
        );
        assert_eq!(e.documenti_mancanti, documenti);
        assert!(e.non_pagata.is_some() && !e.completo() && !e.da_rigettare(true));
        let integrazione: Integrazione = serde_json::from_value(json!({
            "pratica": "P-1",
            "allegati": [{"tipo": "carta di  CIRCOLAZIONE", "nome": "c.pdf",
                          "media_type": "application/pdf", "dimensione": 1,
                          "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}],
        }))
        .unwrap();
        let esiti = [
            residenza(Some("001272"), "via roma"),
            veicolo("AB123CD", Some(ROSSI)),
            Esito::Integrazione(integrazione),
            pagato(30),
        ];
        let e = esamina(&d, &esiti, &attese);
        assert!(e.completo(), "{e:?}");
        // Less than the fee is not the fee.
        let e = esamina(
            &d,
            &[
                esiti[0].clone(),
                esiti[1].clone(),
                esiti[2].clone(),
                pagato(20),
            ],
            &attese,
        );
        assert_eq!(e.non_pagata.unwrap().codice, "tariffa-non-pagata");
    }

    #[test]
    fn wrong_residence_and_vehicles_are_each_a_reason_to_reject() {
        let comune = CodiceIstat::parse("001272").unwrap();
        let vie = vec!["Via Roma".to_owned()];
        let attese = Attese {
            comune: &comune,
            vie: &vie,
            documenti: &[],
            tariffa: Importo::ZERO,
        };
        let d = domanda("residente", &["AB123CD", "EF456GH"]);
        let esiti = [
            residenza(Some("004078"), "Corso Nizza"),
            veicolo("AB123CD", None),
        ];
        let e = esamina(&d, &esiti, &attese);
        assert_eq!(
            codici(&e.difformi),
            ["non-residente", "veicolo-sconosciuto"]
        );
        // One check is still unanswered: rejected only then, or on the last day.
        assert!(!e.da_rigettare(false) && e.da_rigettare(true));
        let esiti = [
            residenza(Some("001272"), "Via Po"),
            veicolo("AB123CD", Some(ROSSI)),
            veicolo("EF456GH", Some(ALTRO)),
        ];
        let e = esamina(&d, &esiti, &attese);
        assert_eq!(
            codici(&e.difformi),
            ["fuori-settore", "veicolo-non-intestato"]
        );
        assert!(e.da_rigettare(false));
        // Unknown to the registry: not resident.
        let e = esamina(&d, &[residenza(None, "")], &attese);
        assert_eq!(codici(&e.difformi), ["non-residente"]);
    }

    #[test]
    fn a_disabled_persons_permit_checks_no_residence_and_no_ownership() {
        let comune = CodiceIstat::parse("001272").unwrap();
        let attese = Attese {
            comune: &comune,
            vie: &[],
            documenti: &[],
            tariffa: Importo::ZERO,
        };
        let d = domanda("disabile", &["EF456GH"]);
        let e = esamina(&d, &[veicolo("EF456GH", Some(ALTRO))], &attese);
        assert!(e.completo(), "{e:?}");
        assert!(!intestati(Categoria::Temporaneo) && intestati(Categoria::Garage));
        assert_eq!(
            normalizza("  Via\tGiuseppe  GARIBALDI "),
            "via giuseppe garibaldi"
        );
    }
}
