//! Data that several services share: a person, an address, contacts, a document, a protocol
//! reference, a reason for a refusal, a period.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::formats::{
    Cap, CodiceBelfiore, CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Istante,
};

/// Sex as the registry records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Sesso {
    /// Male.
    M,
    /// Female.
    F,
}

/// A person as the registry knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    /// The person's codice fiscale: the key every body uses.
    pub codice_fiscale: CodiceFiscalePersona,
    /// Surname(s).
    #[schemars(extend("examples" = ["Rossi"]))]
    pub cognome: String,
    /// Given name(s).
    #[schemars(extend("examples" = ["Mario"]))]
    pub nome: String,
    /// Sex.
    pub sesso: Sesso,
    /// Date of birth.
    #[schemars(extend("examples" = ["1985-12-10"]))]
    pub data_nascita: Data,
    /// Place of birth: the Belfiore code of the comune, or `Z###` of the foreign state.
    #[schemars(extend("examples" = ["A562"]))]
    pub luogo_nascita: CodiceBelfiore,
    /// Citizenship, ISO 3166-1 alpha-2 (`IT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{2}$"), extend("examples" = ["IT"]))]
    pub cittadinanza: Option<String>,
}

/// An address in an Italian comune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Indirizzo {
    /// The comune (ISTAT code).
    pub comune: CodiceIstat,
    /// The street as the comune's street register names it (`Via Garibaldi`).
    #[schemars(extend("examples" = ["Via Giuseppe Garibaldi"]))]
    pub via: String,
    /// The house number, with its suffix if any (`12`, `12/B`).
    #[schemars(extend("examples" = ["12/B"]))]
    pub civico: String,
    /// The stair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["A"]))]
    pub scala: Option<String>,
    /// The floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["3"]))]
    pub piano: Option<String>,
    /// The flat number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["8"]))]
    pub interno: Option<String>,
    /// The postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
}

/// How to reach a citizen or an office.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contatti {
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["mario.rossi@example.it"]))]
    pub email: Option<String>,
    /// Certified e-mail (PEC) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["mario.rossi@pec.example.it"]))]
    pub pec: Option<String>,
    /// Telephone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["+39 011 555 0123"]))]
    pub telefono: Option<String>,
}

/// A document attached to a practice: described here, its content kept by the sender and
/// identified by its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Documento {
    /// What the document is (`planimetria`, `contratto di locazione`, `relazione tecnica`).
    #[schemars(extend("examples" = ["contratto di locazione"]))]
    pub tipo: String,
    /// The file name.
    #[schemars(extend("examples" = ["contratto.pdf"]))]
    pub nome: String,
    /// Its media type (`application/pdf`).
    #[schemars(extend("examples" = ["application/pdf"]))]
    pub media_type: String,
    /// SHA-256 of its content, 64 lowercase hex digits: the document is the one with this digest.
    #[schemars(
        regex(pattern = r"^[0-9a-f]{64}$"),
        extend("examples" = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    )]
    pub sha256: String,
    /// Its size in bytes.
    #[schemars(extend("examples" = [48213]))]
    pub dimensione: u64,
}

/// An identity document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentoIdentita {
    /// The kind of document.
    pub tipo: TipoDocumentoIdentita,
    /// Its number.
    pub numero: String,
    /// Who issued it (`Comune di Torino`).
    pub rilasciato_da: String,
    /// When it expires.
    pub scadenza: Data,
}

/// Kinds of identity document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoDocumentoIdentita {
    /// Electronic or paper identity card.
    CartaIdentita,
    /// Passport.
    Passaporto,
    /// Driving licence.
    Patente,
}

/// A registration in an office's protocol: number and date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protocollo {
    /// The protocol number, as the office writes it.
    #[schemars(extend("examples" = ["2026/0012345"]))]
    pub numero: String,
    /// The day of registration.
    pub data: Data,
}

/// A reason: a stable code for programs and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Motivo {
    /// A stable code (`indirizzo-inesistente`, `firma-mancante`).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*$"), extend("examples" = ["indirizzo-inesistente"]))]
    pub codice: String,
    /// What a person reads.
    #[schemars(extend("examples" = ["L'indirizzo dichiarato non risulta nello stradario comunale."]))]
    pub descrizione: String,
}

/// A span of days, the end included; open when it has no end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Periodo {
    /// The first day.
    pub dal: Data,
    /// The last day; none for an open period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub al: Option<Data>,
}

/// A span of time to the second; open when it has no end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intervallo {
    /// When it starts.
    pub inizio: Istante,
    /// When it ends; none when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine: Option<Istante>,
}

/// A subject as a payment or a fine names them: a person or a legal entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Soggetto {
    /// Codice fiscale of the person (16 characters) or of the legal entity (11 digits).
    pub codice_fiscale: CodiceFiscale,
    /// Full name, or a legal entity's name.
    pub denominazione: String,
    /// Where to write to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirizzo: Option<Indirizzo>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Cadastral identification of a property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiferimentoCatastale {
    /// The comune whose cadastre holds it (Belfiore code).
    pub comune: CodiceBelfiore,
    /// Which register: buildings or land.
    pub catasto: Catasto,
    /// Section, where the comune has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sezione: Option<String>,
    /// Sheet (foglio).
    pub foglio: String,
    /// Parcel (particella).
    pub particella: String,
    /// Unit (subalterno), for buildings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subalterno: Option<String>,
}

/// The cadastral registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Catasto {
    /// Buildings (catasto fabbricati).
    Fabbricati,
    /// Land (catasto terreni).
    Terreni,
}
