//! `residenza.cambio`: change of residence — the declaration from the portal, the comune's
//! answer, registration at ANPR and its notices, the waste-tax positions, the police check, the
//! rejection notice, the citizen's observations, the annulment and every change of state.
//!
//! The exchange: the portal sends a [`Dichiarazione`] to the comune of arrival, which answers
//! with an [`Esito`] (refused, or registered within 2 working days) and, once registered, sends a
//! [`Registrazione`] to ANPR; ANPR answers with [`RegistrazioneEsito`] and informs the comune of
//! departure ([`Cancellazione`]) and the motor registry ([`AggiornamentoMotorizzazione`]). The
//! TARI offices open a position at arrival ([`TariApertura`]) and close it at departure
//! ([`TariChiusura`]). The police send the [`Accertamento`] within 45 days; a negative one gives
//! a [`PreavvisoRigetto`], the citizen may answer with [`Osservazioni`] within 10 days, then the
//! comune confirms or sends [`Annullamento`] to ANPR, which answers [`AnnullamentoEsito`] and
//! tells the comune of departure that its people are back ([`Ripristino`]). Every change of
//! state reaches the portal as [`Stato`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Contatti, Documento, DocumentoIdentita, Indirizzo, Motivo, Persona, Protocollo};
use crate::Violation;
use crate::formats::{CodiceFiscalePersona, CodiceIstat, Data, Elenco, Istante, Targa};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "residenza.cambio";

/// Where the people who move come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Provenienza {
    /// From another Italian comune.
    AltroComune {
        /// The comune of departure.
        comune: CodiceIstat,
    },
    /// From abroad.
    Estero {
        /// The state of departure, ISO 3166-1 alpha-2.
        #[schemars(regex(pattern = r"^[A-Z]{2}$"), extend("examples" = ["FR"]))]
        stato: String,
        /// True for Italian citizens registered abroad (AIRE) coming back.
        rimpatrio: bool,
    },
    /// A move within the same comune.
    StessoComune {},
}

/// The relation of a person to the head of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relazione {
    /// The head of the family (intestatario della scheda).
    Intestatario,
    /// Spouse or civil partner.
    Coniuge,
    /// Son or daughter.
    Figlio,
    /// Father or mother.
    Genitore,
    /// Brother or sister.
    Fratello,
    /// Another relative.
    AltroParente,
    /// Cohabitant, not a relative.
    Convivente,
}

/// A driving licence, for the motor registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Patente {
    /// The licence number.
    pub numero: String,
    /// Categories (`B`, `A2`).
    pub categorie: Elenco<String, 1, 16>,
}

/// One person who moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonaTrasferita {
    /// Who.
    pub persona: Persona,
    /// Relation to the head of the family.
    pub relazione: Relazione,
    /// Driving licence, so the motor registry updates its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patente: Option<Patente>,
    /// Plates of the vehicles the person owns, for the motor registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub veicoli: Vec<Targa>,
}

/// The title by which the family occupies the dwelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TitoloOccupazione {
    /// Owner.
    Proprieta,
    /// Tenant under a registered lease.
    Locazione,
    /// Free loan (comodato).
    Comodato,
    /// Usufruct.
    Usufrutto,
    /// Public housing.
    EdiliziaPubblica,
    /// Guest of the holder of another title.
    Ospite,
}

/// The occupancy of the new dwelling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Occupazione {
    /// By which title.
    pub titolo: TitoloOccupazione,
    /// The registration of the deed or lease, where there is one (office, year, number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estremi: Option<String>,
}

/// `dichiarazione` (request, portal → comune of arrival): the citizen's declaration of a new
/// residence, within 20 days of moving.
///
/// The comune refuses an incomplete one (unsigned, without identity document, at an address
/// that does not exist), so those parts may be absent here: the hub checks the shape, the comune
/// the substance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dichiarazione {
    /// The portal's identifier of the practice; every later message names it.
    pub pratica: String,
    /// The comune of arrival.
    pub comune: CodiceIstat,
    /// The day of the declaration: registration takes effect from it.
    pub data_dichiarazione: Data,
    /// The day of the move.
    pub data_trasferimento: Data,
    /// Where the family comes from.
    pub provenienza: Provenienza,
    /// The new address.
    pub indirizzo: Indirizzo,
    /// Everyone who moves, the declarant first.
    pub persone: Elenco<PersonaTrasferita, 1, 30>,
    /// Codice fiscale of the declarant (one of `persone`).
    pub dichiarante: CodiceFiscalePersona,
    /// The occupancy of the dwelling.
    pub occupazione: Occupazione,
    /// The declarant's identity document; a declaration without one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documento_identita: Option<DocumentoIdentita>,
    /// True when the declarant signed it; an unsigned declaration is refused.
    pub firmata: bool,
    /// How to reach the declarant.
    pub contatti: Contatti,
    /// Attached documents (lease, identity documents of the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allegati: Vec<Documento>,
}

/// The comune's answer to a declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoDichiarazione {
    /// Registered: effective from the declaration date.
    Registrata {
        /// The day the registration takes effect.
        decorrenza: Data,
        /// The last day of the police check (45 days); silence confirms.
        termine_accertamento: Data,
    },
    /// Refused as incomplete or inadmissible.
    Rifiutata {
        /// Why.
        motivi: Elenco<Motivo, 1, 20>,
    },
}

/// `esito` (response, comune of arrival → portal): the declaration is registered or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Esito {
    /// The practice.
    pub pratica: String,
    /// The comune's protocol of the declaration.
    pub protocollo: Protocollo,
    /// Registered or refused.
    pub esito: EsitoDichiarazione,
}

/// `registrazione` (request, comune of arrival → ANPR): the registry position of the people
/// who moved, effective from the declaration date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registrazione {
    /// The practice.
    pub pratica: String,
    /// The comune that registers.
    pub comune: CodiceIstat,
    /// The day it takes effect (the declaration date).
    pub decorrenza: Data,
    /// Where they come from.
    pub provenienza: Provenienza,
    /// The new address.
    pub indirizzo: Indirizzo,
    /// The people registered.
    pub persone: Elenco<PersonaTrasferita, 1, 30>,
}

/// ANPR's answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoAnpr {
    /// Applied.
    Applicata {
        /// When ANPR applied it.
        il: Istante,
    },
    /// Not applied.
    Respinta {
        /// Why.
        motivi: Elenco<Motivo, 1, 20>,
    },
}

/// `registrazione-esito` (response, ANPR → comune of arrival).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrazioneEsito {
    /// The practice.
    pub pratica: String,
    /// Applied or not.
    pub esito: EsitoAnpr,
}

/// `cancellazione` (oneway, ANPR → comune of departure): these people now live elsewhere;
/// their position in the comune of departure ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancellazione {
    /// The practice of the comune of arrival.
    pub pratica: String,
    /// The comune of departure.
    pub comune: CodiceIstat,
    /// The comune of arrival.
    pub comune_arrivo: CodiceIstat,
    /// The day the move takes effect.
    pub decorrenza: Data,
    /// Who left.
    pub persone: Elenco<CodiceFiscalePersona, 1, 30>,
}

/// A person whose licence and vehicles follow them to the new address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conducente {
    /// Who.
    pub codice_fiscale: CodiceFiscalePersona,
    /// The licence, if they hold one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patente: Option<Patente>,
    /// Their vehicles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub veicoli: Vec<Targa>,
}

/// `aggiornamento-motorizzazione` (oneway, ANPR → motor registry): new address of licence
/// holders and vehicle owners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggiornamentoMotorizzazione {
    /// The practice.
    pub pratica: String,
    /// The day the new address takes effect.
    pub decorrenza: Data,
    /// The new address.
    pub indirizzo: Indirizzo,
    /// Licences and vehicles to update.
    pub conducenti: Elenco<Conducente, 1, 30>,
}

/// `tari-apertura` (oneway, registry office → TARI office of the comune of arrival): open a
/// waste-tax position for the household.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TariApertura {
    /// The practice.
    pub pratica: String,
    /// The comune.
    pub comune: CodiceIstat,
    /// Who is liable (the head of the family).
    pub intestatario: CodiceFiscalePersona,
    /// The dwelling.
    pub indirizzo: Indirizzo,
    /// How many people live there.
    pub componenti: u8,
    /// From when.
    pub decorrenza: Data,
}

/// `tari-chiusura` (oneway, comune of departure → its TARI office): close the household's
/// waste-tax position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TariChiusura {
    /// The practice.
    pub pratica: String,
    /// The comune of departure.
    pub comune: CodiceIstat,
    /// Who was liable.
    pub intestatario: CodiceFiscalePersona,
    /// Until when (the day before the move takes effect).
    pub cessazione: Data,
}

/// What the police found at the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EsitoAccertamento {
    /// The family lives there habitually.
    Positivo,
    /// It does not.
    Negativo,
}

/// `accertamento` (oneway, municipal police → registry office): the check of the habitual
/// dwelling, within 45 days of the declaration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accertamento {
    /// The practice.
    pub pratica: String,
    /// The day of the check.
    pub data: Data,
    /// Found or not.
    pub esito: EsitoAccertamento,
    /// What the officers wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbale: Option<String>,
}

/// `preavviso-rigetto` (oneway, comune → portal): notice of rejection after a negative check;
/// the citizen has 10 days for observations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreavvisoRigetto {
    /// The practice.
    pub pratica: String,
    /// The comune's protocol of the notice.
    pub protocollo: Protocollo,
    /// Why the registration would be rejected.
    pub motivi: Elenco<Motivo, 1, 20>,
    /// The last day for observations.
    pub termine_osservazioni: Data,
}

/// `osservazioni` (oneway, portal → comune): the citizen's answer to a rejection notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Osservazioni {
    /// The practice.
    pub pratica: String,
    /// The day they were sent.
    pub data: Data,
    /// What the citizen says.
    pub testo: String,
    /// Supporting documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allegati: Vec<Documento>,
}

/// `annullamento` (request, comune → ANPR): the registration is annulled and the previous
/// registry position of each person restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Annullamento {
    /// The practice.
    pub pratica: String,
    /// The comune that annuls.
    pub comune: CodiceIstat,
    /// The day of the annulment.
    pub data: Data,
    /// Whose registration is annulled.
    pub persone: Elenco<CodiceFiscalePersona, 1, 30>,
    /// Why.
    pub motivi: Elenco<Motivo, 1, 20>,
}

/// `annullamento-esito` (response, ANPR → comune): the previous positions are restored, or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnullamentoEsito {
    /// The practice.
    pub pratica: String,
    /// Applied or not.
    pub esito: EsitoAnpr,
}

/// `ripristino` (oneway, ANPR → comune of departure): a registration was annulled; these
/// people are again residents of the comune of departure, at their previous position, as if
/// they had never left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ripristino {
    /// The annulled practice of the comune of arrival.
    pub pratica: String,
    /// The comune of departure, where they are restored.
    pub comune: CodiceIstat,
    /// The comune whose registration was annulled.
    pub comune_arrivo: CodiceIstat,
    /// The day of the annulment.
    pub data: Data,
    /// Who is restored.
    pub persone: Elenco<CodiceFiscalePersona, 1, 30>,
}

/// The states of a practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatoPratica {
    /// Received by the comune.
    Ricevuta,
    /// Refused as incomplete.
    Rifiutata,
    /// Registered, effective from the declaration date.
    Registrata,
    /// The police check is under way.
    InAccertamento,
    /// The check was negative: a rejection notice was sent.
    PreavvisoRigetto,
    /// Confirmed, by a positive check or by silence.
    Confermata,
    /// Annulled: the previous position is restored.
    Annullata,
}

/// `stato` (oneway, comune → portal): the practice changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stato {
    /// The practice.
    pub pratica: String,
    /// The new state.
    pub stato: StatoPratica,
    /// When it changed.
    pub il: Istante,
    /// A note for the citizen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

impl Dichiarazione {
    fn regole(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if !self
            .persone
            .iter()
            .any(|p| p.persona.codice_fiscale == self.dichiarante)
        {
            v.push(rules::at(
                "/dichiarante",
                format!("{} is not one of the people who move", self.dichiarante),
            ));
        }
        if self.data_dichiarazione < self.data_trasferimento {
            v.push(rules::at(
                "/data_dichiarazione",
                format!(
                    "the declaration ({}) comes before the move ({})",
                    self.data_dichiarazione, self.data_trasferimento
                ),
            ));
        }
        v
    }
}

crate::catalog::messages! {
    "dichiarazione" => Dichiarazione with Dichiarazione::regole,
    "esito" => Esito,
    "registrazione" => Registrazione,
    "registrazione-esito" => RegistrazioneEsito,
    "cancellazione" => Cancellazione,
    "aggiornamento-motorizzazione" => AggiornamentoMotorizzazione,
    "tari-apertura" => TariApertura,
    "tari-chiusura" => TariChiusura,
    "accertamento" => Accertamento,
    "preavviso-rigetto" => PreavvisoRigetto,
    "osservazioni" => Osservazioni,
    "annullamento" => Annullamento,
    "annullamento-esito" => AnnullamentoEsito,
    "ripristino" => Ripristino,
    "stato" => Stato,
}
