//! `mobilita.viabilita`: roads and mobility news — comuni and provinces publish events
//! (roadworks, closures, public events, traffic) with place, period and severity; the portal,
//! neighbouring comuni and the province subscribe by topic.
//!
//! An [`Evento`] is published when an event is known and again, with a higher version, when it
//! changes; a [`FineEvento`] says it is over or withdrawn.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::Intervallo;
use crate::Violation;
use crate::formats::{CodiceIstat, Elenco, Istante};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "mobilita.viabilita";

/// Kinds of event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoEvento {
    /// Roadworks.
    Lavori,
    /// A road closed.
    Chiusura,
    /// A public event (market, race, demonstration).
    Manifestazione,
    /// Heavy traffic.
    Traffico,
    /// An accident.
    Incidente,
    /// Weather (snow, flood).
    Meteo,
}

/// How much it disrupts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Gravita {
    /// Minor delays.
    Bassa,
    /// Noticeable delays or a lane closed.
    Media,
    /// A road closed, detours.
    Alta,
    /// Danger: avoid the area.
    Critica,
}

/// A point, WGS 84 degrees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Coordinate {
    /// Latitude.
    #[schemars(range(min = -90.0, max = 90.0))]
    pub lat: f64,
    /// Longitude.
    #[schemars(range(min = -180.0, max = 180.0))]
    pub lon: f64,
}

/// Where it happens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Luogo {
    /// The comune.
    pub comune: CodiceIstat,
    /// The road (`Corso Vittorio Emanuele II`, `SP 24`).
    pub strada: String,
    /// From where along it, if a stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub da: Option<String>,
    /// To where along it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// A point on the map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinate: Option<Coordinate>,
}

/// `evento` (event, comune or province → subscribers): an event, new or changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evento {
    /// The publisher's identifier of the event; later versions keep it.
    pub id: String,
    /// 1 for a new event, one more for each change.
    #[schemars(range(min = 1))]
    pub versione: u32,
    /// What kind.
    pub tipo: TipoEvento,
    /// A headline.
    pub titolo: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descrizione: Option<String>,
    /// Where.
    pub luoghi: Elenco<Luogo, 1, 50>,
    /// When.
    pub periodo: Intervallo,
    /// How much it disrupts.
    pub gravita: Gravita,
    /// When this version was published.
    pub pubblicato_il: Istante,
}

/// Why an event ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MotivoFine {
    /// It is over.
    Concluso,
    /// It will not happen, or was published by mistake.
    Annullato,
}

/// `fine-evento` (event, comune or province → subscribers): an event is over or withdrawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FineEvento {
    /// The event.
    pub id: String,
    /// Over or withdrawn.
    pub motivo: MotivoFine,
    /// When.
    pub il: Istante,
}

impl Evento {
    fn regole(&self) -> Vec<Violation> {
        match &self.periodo.fine {
            Some(fine) if *fine < self.periodo.inizio => vec![rules::at(
                "/periodo/fine",
                format!("{fine} is before the start, {}", self.periodo.inizio),
            )],
            _ => Vec::new(),
        }
    }
}

crate::catalog::messages! {
    "evento" => Evento with Evento::regole,
    "fine-evento" => FineEvento,
}
