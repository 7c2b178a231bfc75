//! `mobilita.ztl`: limited-traffic-zone permits — application (issue or renewal), the comune's
//! checks with the registry and the motor registry, requests for more information, the permit
//! or the rejection, and every change of state (expiry, revocation).
//!
//! The portal applies ([`Domanda`] → [`DomandaRicevuta`]); the comune checks residence with
//! ANPR ([`VerificaResidenza`] → [`VerificaResidenzaEsito`]) and the vehicle with the motor
//! registry ([`VerificaVeicolo`] → [`VerificaVeicoloEsito`]), may ask for more
//! ([`RichiestaIntegrazione`] → [`Integrazione`]) and answers within 30 days with a
//! [`Rilascio`] or a [`Rigetto`]; later changes (expiry, revocation) come as [`Stato`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Documento, Indirizzo, Motivo, Periodo, Protocollo};
use crate::Violation;
use crate::formats::{
    CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Elenco, Importo, Istante, Nav, Targa,
};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "mobilita.ztl";

/// Who the permit is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Categoria {
    /// Residents of the zone (permits expire every 2 years, on 31 December).
    Residente,
    /// Non-residents with a garage in the zone.
    Garage,
    /// Businesses in the zone.
    Impresa,
    /// Disabled people.
    Disabile,
    /// Health workers.
    OperatoreSanitario,
    /// A temporary need.
    Temporaneo,
}

/// Issue or renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoDomanda {
    /// A new permit.
    Rilascio,
    /// Renewal of a permit before it expires.
    Rinnovo,
}

/// `domanda` (request, portal → comune): an application for a permit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Domanda {
    /// The portal's identifier of the application.
    pub pratica: String,
    /// The comune.
    pub comune: CodiceIstat,
    /// Issue or renewal.
    pub tipo: TipoDomanda,
    /// The permit renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permesso_precedente: Option<String>,
    /// Who the permit is for.
    pub categoria: Categoria,
    /// The applicant (a person, or a business for `impresa`).
    pub richiedente: CodiceFiscale,
    /// The applicant's address in the zone, or the garage's, or the business's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirizzo: Option<Indirizzo>,
    /// The vehicles.
    pub targhe: Elenco<Targa, 1, 3>,
    /// The sectors of the zone.
    pub settori: Elenco<String, 1, 10>,
    /// The period asked for.
    pub periodo: Periodo,
    /// Documents (garage deed, disability badge, employer's statement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allegati: Vec<Documento>,
    /// Where to write to the applicant.
    pub email: String,
}

/// `domanda-ricevuta` (response, comune → portal): the application is in the protocol; the
/// fee to pay, and the last day of the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomandaRicevuta {
    /// The application.
    pub pratica: String,
    /// The comune's protocol.
    pub protocollo: Protocollo,
    /// The fee.
    pub tariffa: Importo,
    /// Its notice, when there is a fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nav: Option<Nav>,
    /// The last day for the comune's answer (30 days).
    pub termine: Data,
}

/// `verifica-residenza` (request, comune → ANPR): does this person live at this address?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificaResidenza {
    /// The application.
    pub pratica: String,
    /// The person.
    pub codice_fiscale: CodiceFiscalePersona,
    /// On which day.
    pub alla_data: Data,
}

/// `verifica-residenza-esito` (response, ANPR → comune).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificaResidenzaEsito {
    /// The application.
    pub pratica: String,
    /// The person.
    pub codice_fiscale: CodiceFiscalePersona,
    /// Their residence on that day; none when the registry does not know them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residenza: Option<Indirizzo>,
}

/// `verifica-veicolo` (request, comune → motor registry): who owns this vehicle, what is it?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificaVeicolo {
    /// The application.
    pub pratica: String,
    /// The plate.
    pub targa: Targa,
}

/// A vehicle as the motor registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Veicolo {
    /// The owner.
    pub intestatario: CodiceFiscale,
    /// Kind of vehicle (`autovettura`, `motociclo`).
    pub tipo: String,
    /// Emission class, 0 to 6.
    #[schemars(range(min = 0, max = 6))]
    pub classe_euro: u8,
    /// Fuel or power (`benzina`, `elettrica`).
    pub alimentazione: String,
}

/// `verifica-veicolo-esito` (response, motor registry → comune).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificaVeicoloEsito {
    /// The application.
    pub pratica: String,
    /// The plate.
    pub targa: Targa,
    /// The vehicle; none when no such plate is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veicolo: Option<Veicolo>,
}

/// `richiesta-integrazione` (oneway, comune → portal): more information is needed (also sent
/// to the applicant by e-mail).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RichiestaIntegrazione {
    /// The application.
    pub pratica: String,
    /// What is missing.
    pub richieste: Elenco<String, 1, 20>,
    /// The last day to answer.
    pub termine: Data,
}

/// `integrazione` (oneway, portal → comune): the applicant's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Integrazione {
    /// The application.
    pub pratica: String,
    /// What the applicant says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
    /// The documents asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allegati: Vec<Documento>,
}

/// `rilascio` (oneway, comune → portal): the permit is issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rilascio {
    /// The application.
    pub pratica: String,
    /// The permit's number.
    pub permesso: String,
    /// For whom.
    pub categoria: Categoria,
    /// The vehicles.
    pub targhe: Elenco<Targa, 1, 3>,
    /// The sectors.
    pub settori: Elenco<String, 1, 10>,
    /// Valid from.
    pub dal: Data,
    /// Valid until (residents: 31 December of the second year).
    pub al: Data,
}

/// `rigetto` (oneway, comune → portal): the application is rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rigetto {
    /// The application.
    pub pratica: String,
    /// Why.
    pub motivi: Elenco<Motivo, 1, 20>,
}

/// The states of an application and its permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatoPermesso {
    /// Submitted.
    Presentata,
    /// Being checked.
    InVerifica,
    /// More information asked for.
    Integrazione,
    /// Issued.
    Rilasciato,
    /// Rejected.
    Rigettata,
    /// Expired.
    Scaduto,
    /// Revoked.
    Revocato,
}

/// `stato` (oneway, comune → portal): the application or permit changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stato {
    /// The application.
    pub pratica: String,
    /// The permit, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permesso: Option<String>,
    /// The new state.
    pub stato: StatoPermesso,
    /// When.
    pub il: Istante,
    /// Why (a revocation's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motivo: Option<Motivo>,
}

impl Domanda {
    fn regole(&self) -> Vec<Violation> {
        self.periodo
            .al
            .as_ref()
            .and_then(|al| rules::not_before(&self.periodo.dal, al, "/periodo/al"))
            .into_iter()
            .collect()
    }
}

impl Rilascio {
    fn regole(&self) -> Vec<Violation> {
        rules::not_before(&self.dal, &self.al, "/al")
            .into_iter()
            .collect()
    }
}

crate::catalog::messages! {
    "domanda" => Domanda with Domanda::regole,
    "domanda-ricevuta" => DomandaRicevuta,
    "verifica-residenza" => VerificaResidenza,
    "verifica-residenza-esito" => VerificaResidenzaEsito,
    "verifica-veicolo" => VerificaVeicolo,
    "verifica-veicolo-esito" => VerificaVeicoloEsito,
    "richiesta-integrazione" => RichiestaIntegrazione,
    "integrazione" => Integrazione,
    "rilascio" => Rilascio with Rilascio::regole,
    "rigetto" => Rigetto,
    "stato" => Stato,
}
