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
