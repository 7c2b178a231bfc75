//! What the ZTL office keeps: each application (its state and history, what it asked of
//! others), the answers others gave about it, and each permit with the applications that
//! issued and renewed it.

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::{CodiceFiscale, Data, Elenco, Importo, Istante, Targa};
use snodo_schemas::services::dati::{Motivo, Protocollo};
use snodo_schemas::services::mobilita_ztl::{
    Categoria, Domanda, Integrazione, StatoPermesso, VerificaResidenzaEsito, VerificaVeicoloEsito,
};
use snodo_schemas::services::pagamenti::PosizioneCreata;
use uuid::Uuid;

/// A step in an application's or a permit's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passo {
    /// The state entered.
    pub stato: StatoPermesso,
    /// When, on the office's clock.
    pub il: Istante,
    /// A note (the reasons of a rejection, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

/// An application for a permit or its renewal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pratica {
    /// The application as the portal sent it.
    pub domanda: Domanda,
    /// The office's protocol: its number is the application's key and the `pratica` of the
    /// office's requests to ANPR, the motor registry and the payment provider.
    pub protocollo: Protocollo,
    /// The portal that sent it, told of every change.
    pub portale: String,
    /// The application's envelope, answered by `domanda-ricevuta`.
    pub richiesta: Uuid,
    /// The envelopes' conversation.
    pub conversazione: String,
    /// Its state now.
    pub stato: StatoPermesso,
    /// Every state it went through.
    pub storia: Vec<Passo>,
    /// The last day of the office's answer (30 days).
    pub termine: Data,
    /// The fee.
    pub tariffa: Importo,
    /// The fee's debt position at the payment provider, when there is a fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iupd: Option<String>,
    /// The documents asked for, once more information was asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub richieste: Vec<String>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
    /// The permit issued or renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permesso: Option<String>,
}

impl Pratica {
    /// Enters `stato` at `il`.
    pub fn passa(&mut self, stato: StatoPermesso, il: Istante, nota: Option<String>) {
        self.stato = stato;
        self.storia.push(Passo { stato, il, nota });
    }

    /// Whether the office has answered for good (issued or rejected).
    #[must_use]
    pub fn decisa(&self) -> bool {
        matches!(
            self.stato,
            StatoPermesso::Rilasciato | StatoPermesso::Rigettata
        )
    }
}

/// What others answered about an application, kept apart from the [`Pratica`], which only
/// the office's own acts change, so that an answer taken while an act is under way is never
/// overwritten by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Esito {
    /// ANPR on the applicant's residence.
    Residenza(VerificaResidenzaEsito),
    /// The motor registry on one vehicle.
    Veicolo(VerificaVeicoloEsito),
    /// The applicant's answer to a request for more information.
    Integrazione(Integrazione),
    /// The payment provider's notice for the fee.
    Posizione(PosizioneCreata),
    /// The fee is paid: the provider's receipt.
    Pagamento {
        /// The receipt.
        ricevuta: String,
        /// How much.
        importo: Importo,
        /// When.
        il: Istante,
    },
}

/// A permit, from its issue through its renewals to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permesso {
    /// Its number, the same across renewals.
    pub numero: String,
    /// Who holds it.
    pub richiedente: CodiceFiscale,
    /// For whom it is.
    pub categoria: Categoria,
    /// The vehicles.
    pub targhe: Elenco<Targa, 1, 3>,
    /// The sectors.
    pub settori: Elenco<String, 1, 10>,
    /// Valid from (the first issue).
    pub dal: Data,
    /// Valid until (the latest renewal's).
    pub al: Data,
    /// Issued, expired or revoked.
    pub stato: StatoPermesso,
    /// Every state it went through.
    pub storia: Vec<Passo>,
    /// The protocols of the applications that issued and renewed it.
    pub pratiche: Vec<String>,
    /// The portal told of its changes, and the portal's id of the latest application.
    pub portale: String,
    /// The portal's id of the latest application.
    pub pratica: String,
    /// The conversation of the latest application.
    pub conversazione: String,
}
