//! `anagrafe.variazioni`: the registry feed — each comune sends its registry variations to the
//! normalized registry as numbered batches, in order, with gap detection, resends and a full
//! initial load.
//!
//! A comune sends [`Lotto`]s numbered 1, 2, 3… (a sequence per comune); the receiver answers each
//! with [`LottoEsito`]: applied, already applied (a duplicate, ignored) or out of sequence, in
//! which case it sends a [`RichiestaReinvio`] for the missing numbers. A full initial load comes
//! as [`CaricamentoIniziale`] parts, each answered by [`CaricamentoEsito`]; after it the batches
//! continue from the number the load names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Indirizzo, Motivo, Persona};
use crate::Violation;
use crate::formats::{CodiceIstat, Data, Elenco, Istante};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "anagrafe.variazioni";

/// Kinds of registry variation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoVariazione {
    /// A birth registered in the comune.
    Nascita,
    /// A death.
    Morte,
    /// Arrival from another comune or from abroad.
    Immigrazione,
    /// Departure to another comune or abroad.
    Emigrazione,
    /// A new address within the comune.
    CambioIndirizzo,
    /// A change of family composition.
    CambioFamiglia,
    /// Marriage or civil union.
    Matrimonio,
    /// Divorce or dissolution.
    Divorzio,
    /// A change of citizenship.
    Cittadinanza,
    /// A correction of personal data.
    Rettifica,
}

/// One variation of one person's registry position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variazione {
    /// What happened.
    pub tipo: TipoVariazione,
    /// The day it takes effect.
    pub data: Data,
    /// The person, with their data after the variation.
    pub persona: Persona,
    /// The address after the variation, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirizzo: Option<Indirizzo>,
    /// The family (registry family number) after the variation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub famiglia: Option<String>,
}

/// `lotto` (oneway, comune → normalized registry): a numbered batch of variations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lotto {
    /// The comune whose variations these are.
    pub comune: CodiceIstat,
    /// The batch number in the comune's sequence, from 1.
    #[schemars(range(min = 1))]
    pub sequenza: u64,
    /// When the comune extracted it.
    pub estratto_il: Istante,
    /// The variations, in the order they happened.
    pub variazioni: Elenco<Variazione, 0, 10000>,
}

/// What the receiver did with a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoLotto {
    /// Applied.
    Applicato {},
    /// Applied before: ignored.
    GiaApplicato {},
    /// Not the next in sequence: kept aside until the gap is filled.
    FuoriSequenza {
        /// The number the receiver expects next.
        #[schemars(range(min = 1))]
        atteso: u64,
    },
    /// Refused.
    Rifiutato {
        /// Why.
        motivi: Elenco<Motivo, 1, 20>,
    },
}

/// `lotto-esito` (oneway, normalized registry → comune): the receiver's answer to a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LottoEsito {
    /// The comune.
    pub comune: CodiceIstat,
    /// The batch answered.
    #[schemars(range(min = 1))]
    pub sequenza: u64,
    /// What was done.
    pub esito: EsitoLotto,
}

/// `richiesta-reinvio` (oneway, normalized registry → comune): send these batches again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RichiestaReinvio {
    /// The comune.
    pub comune: CodiceIstat,
    /// The first missing batch.
    #[schemars(range(min = 1))]
    pub da: u64,
    /// The last missing batch (at least `da`).
    #[schemars(range(min = 1))]
    pub a: u64,
}

/// A person's whole registry position, for the initial load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneAnagrafica {
    /// The person.
    pub persona: Persona,
    /// The address.
    pub indirizzo: Indirizzo,
    /// The registry family number.
    pub famiglia: String,
    /// Registered in the comune since.
    pub iscritto_dal: Data,
}

/// `caricamento-iniziale` (oneway, comune → normalized registry): one part of a full load of
/// the comune's registry, which replaces what the receiver holds for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaricamentoIniziale {
    /// The comune.
    pub comune: CodiceIstat,
    /// The state of the registry the load reflects.
    pub al: Istante,
    /// This part's number, from 1.
    #[schemars(range(min = 1))]
    pub parte: u32,
    /// How many parts the load has.
    #[schemars(range(min = 1))]
    pub parti: u32,
    /// The number of the first batch that follows the load.
    #[schemars(range(min = 1))]
    pub prossima_sequenza: u64,
    /// The positions in this part.
    pub posizioni: Elenco<PosizioneAnagrafica, 0, 10000>,
}

/// `caricamento-esito` (oneway, normalized registry → comune): a part of the load was applied
/// or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaricamentoEsito {
    /// The comune.
    pub comune: CodiceIstat,
    /// The part answered.
    #[schemars(range(min = 1))]
    pub parte: u32,
    /// True when the load is now complete.
    pub completato: bool,
    /// Why the part was refused; none when it was applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
}

impl RichiestaReinvio {
    fn regole(&self) -> Vec<Violation> {
        if self.a < self.da {
            vec![rules::at(
                "/a",
                format!(
                    "the range ends at {} before it starts at {}",
                    self.a, self.da
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

impl CaricamentoIniziale {
    fn regole(&self) -> Vec<Violation> {
        if self.parte > self.parti {
            vec![rules::at(
                "/parte",
                format!("part {} of a load of {} parts", self.parte, self.parti),
            )]
        } else {
            Vec::new()
        }
    }
}

crate::catalog::messages! {
    "lotto" => Lotto,
    "lotto-esito" => LottoEsito,
    "richiesta-reinvio" => RichiestaReinvio with RichiestaReinvio::regole,
    "caricamento-iniziale" => CaricamentoIniziale with CaricamentoIniziale::regole,
    "caricamento-esito" => CaricamentoEsito,
}
