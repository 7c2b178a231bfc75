//! `edilizia.permessi`: building permits — the application with its documents, the protocol
//! number, one request for integrations that interrupts the term, the fees, the decision within
//! 90 days, and the check of a SCIA within 30 days.
//!
//! The portal submits an [`Istanza`]; the comune answers with its [`ProtocolloIstanza`] (and the last day
//! of the decision), may ask once for integrations ([`RichiestaIntegrazione`] →
//! [`Integrazione`]), computes the fees ([`Oneri`], paid through `pagamenti`) and decides
//! ([`Provvedimento`]: granted, denied or archived; silence assents unless the area is under
//! constraints). A SCIA or CILA starts works at once; the comune checks a SCIA within 30 days
//! ([`ControlloScia`]). Every change of state reaches the portal as [`Stato`].
//!
//! A document travels in one of two ways: as a reference (its [`Documento`] alone: name, size
//! and SHA-256, the content kept by the sender), or attached to the message as a
//! [`Contenuto`] in base64, which the comune checks against the digest and size its
//! [`Documento`] declares.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Documento, Indirizzo, Motivo, Protocollo, RiferimentoCatastale};
use crate::Violation;
use crate::formats::{
    CodiceFiscale, CodiceFiscalePersona, CodiceIstat, Data, Elenco, Importo, Istante, Nav,
};

/// The service's name in envelopes.
pub const SERVICE: &str = "edilizia.permessi";

/// The kind of title asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Titolo {
    /// Permesso di costruire: decided within 90 days.
    PermessoDiCostruire,
    /// SCIA: works start at once, the comune checks within 30 days.
    Scia,
    /// CILA: works start at once.
    Cila,
}

/// The technician who signs the project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tecnico {
    /// Codice fiscale.
    pub codice_fiscale: CodiceFiscalePersona,
    /// Name.
    pub nome: String,
    /// Professional register and number (`Ordine degli Architetti di Torino n. 1234`).
    pub albo: String,
    /// Certified e-mail.
    pub pec: String,
}

/// The works, with the quantities the fees are computed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Intervento {
    /// What will be done.
    pub descrizione: String,
    /// New or changed floor area, square metres.
    pub superficie_mq: u32,
    /// New volume, cubic metres.
    pub volume_mc: u32,
    /// The declared construction cost.
    pub costo_costruzione: Importo,
}

/// `istanza` (request, portal → comune's building office): an application with its documents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Istanza {
    /// The portal's identifier of the application.
    pub pratica: String,
    /// The comune.
    pub comune: CodiceIstat,
    /// The title asked for.
    pub titolo: Titolo,
    /// Who applies.
    pub richiedente: CodiceFiscale,
    /// The designer.
    pub tecnico: Tecnico,
    /// Where.
    pub indirizzo: Indirizzo,
    /// The property in the cadastre.
    pub catasto: Elenco<RiferimentoCatastale, 1, 20>,
    /// The works.
    pub intervento: Intervento,
    /// True when the area is under landscape, historic or hydro-geological constraints: no
    /// silence-assent then.
    pub area_vincolata: bool,
    /// The project's documents.
    pub allegati: Elenco<Documento, 1, 200>,
    /// The contents of the documents attached to this message (the others are references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contenuti: Vec<Contenuto>,
}

/// The content of a document attached to the message: it must have the SHA-256 and the size
/// that its [`Documento`] (the one of the same file name) declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contenuto {
    /// The file name of its document.
    #[schemars(extend("examples" = ["relazione.pdf"]))]
    pub nome: String,
    /// The bytes, in base64 (RFC 4648, with padding).
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9+/]*={0,2}$"),
        extend("examples" = ["JVBERi0xLjcK"])
    )]
    pub base64: String,
}

/// `protocollo` (response, comune → portal): the application is in the protocol, or refused
/// with its reasons (an attachment that is not the document it declares, another comune).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtocolloIstanza {
    /// The application.
    pub pratica: String,
    /// The protocol number and date; none when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocollo: Option<Protocollo>,
    /// The official in charge; none when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsabile: Option<String>,
    /// Why it was refused; none when protocolled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
    /// The last day of the decision (90 days; 30 for the check of a SCIA); none for a CILA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termine: Option<Data>,
}

/// `richiesta-integrazione` (oneway, comune → portal): documents or changes needed; the term
/// stops once, and starts again on the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RichiestaIntegrazione {
    /// The application.
    pub pratica: String,
    /// What is needed.
    pub richieste: Elenco<String, 1, 50>,
    /// The last day to answer.
    pub termine: Data,
}

/// `integrazione` (oneway, portal → comune): the applicant's integrations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Integrazione {
    /// The application.
    pub pratica: String,
    /// The documents.
    pub allegati: Elenco<Documento, 1, 200>,
    /// A note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
    /// The contents of the documents attached to this message (the others are references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contenuti: Vec<Contenuto>,
}

/// `oneri` (oneway, comune → portal): the fees computed and their notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Oneri {
    /// The application.
    pub pratica: String,
    /// Primary urbanization charges.
    pub urbanizzazione_primaria: Importo,
    /// Secondary urbanization charges.
    pub urbanizzazione_secondaria: Importo,
    /// The share of the construction cost.
    pub costo_costruzione: Importo,
    /// Secretariat fees.
    pub diritti_segreteria: Importo,
    /// The total.
    pub totale: Importo,
    /// The comune's codice fiscale: the creditor of the notice, which the payer names to the
    /// payment provider.
    pub ente: CodiceFiscale,
    /// The notice to pay it with.
    pub nav: Nav,
    /// The last day to pay.
    pub scadenza: Data,
}

/// The comune's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EsitoProvvedimento {
    /// Granted.
    Rilasciato,
    /// Denied.
    Negato,
    /// Archived (withdrawn, or integrations never came).
    Archiviato,
}

/// `provvedimento` (oneway, comune → portal): the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provvedimento {
    /// The application.
    pub pratica: String,
    /// Granted, denied or archived.
    pub esito: EsitoProvvedimento,
    /// The decision's number and date.
    pub protocollo: Protocollo,
    /// The reasons (for a denial, at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
    /// Conditions of a permit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prescrizioni: Vec<String>,
}

/// The outcome of the check of a SCIA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EsitoControllo {
    /// In order.
    Regolare,
    /// Works must be brought into conformity.
    Conformazione,
    /// Works must stop.
    Divieto,
}

/// `controllo-scia` (oneway, comune → portal): the check of a SCIA, within 30 days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlloScia {
    /// The application.
    pub pratica: String,
    /// The outcome.
    pub esito: EsitoControllo,
    /// What must change, or why works stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
}

/// The states of an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatoIstanza {
    /// Submitted.
    Presentata,
    /// In the protocol.
    Protocollata,
    /// Under examination.
    Istruttoria,
    /// Waiting for integrations (the term is stopped).
    Integrazione,
    /// Granted (or assented by silence).
    Rilasciata,
    /// Denied.
    Negata,
    /// Archived.
    Archiviata,
}

/// `stato` (oneway, comune → portal): the application changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stato {
    /// The application.
    pub pratica: String,
    /// The new state.
    pub stato: StatoIstanza,
    /// When.
    pub il: Istante,
    /// A note for the applicant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

impl ProtocolloIstanza {
    fn regole(&self) -> Vec<Violation> {
        if self.protocollo.is_none() && self.motivi.is_empty() {
            vec![crate::rules::at(
                "/protocollo",
                "an application is either in the protocol or refused with its reasons",
            )]
        } else {
            Vec::new()
        }
    }
}

impl Provvedimento {
    fn regole(&self) -> Vec<Violation> {
        if self.esito == EsitoProvvedimento::Negato && self.motivi.is_empty() {
            vec![crate::rules::at("/motivi", "a denial states its reasons")]
        } else {
            Vec::new()
        }
    }
}

crate::catalog::messages! {
    "istanza" => Istanza,
    "protocollo" => ProtocolloIstanza with ProtocolloIstanza::regole,
    "richiesta-integrazione" => RichiestaIntegrazione,
    "integrazione" => Integrazione,
    "oneri" => Oneri,
    "provvedimento" => Provvedimento with Provvedimento::regole,
    "controllo-scia" => ControlloScia,
    "stato" => Stato,
}
