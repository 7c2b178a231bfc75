//! `mobilita.contravvenzioni`: traffic fines — lookup by plate and period or by fine number,
//! notification with its two payment notices, appeals to the Prefect or the Justice of the
//! Peace, the Prefect's decision, and every change of state.
//!
//! The portal looks fines up ([`Ricerca`] → [`RicercaEsito`]); the comune notifies each fine
//! ([`Verbale`], with a reduced notice for 5 days and an ordinary one for 60); the citizen
//! appeals ([`Ricorso`] → [`RicorsoRicevuta`]); an appeal to the Prefect is forwarded by the
//! office ([`RicorsoTrasmissione`]) and decided ([`Decisione`]: silence for 120 days accepts
//! it; a rejection orders at least twice the minimum); each change of state reaches the portal
//! as [`Stato`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Documento, Motivo, Protocollo, Soggetto};
use crate::Violation;
use crate::formats::{CodiceFiscale, CodiceIstat, Data, Elenco, Importo, Istante, Nav, Targa};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "mobilita.contravvenzioni";

/// How the portal looks fines up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Criterio {
    /// Every fine of a plate in a period.
    Targa {
        /// The plate.
        targa: Targa,
        /// The first day.
        dal: Data,
        /// The last day.
        al: Data,
    },
    /// One fine by its number, plate and date.
    Verbale {
        /// The fine's number.
        numero: String,
        /// The plate.
        targa: Targa,
        /// The day of the violation.
        data: Data,
    },
}

/// `ricerca` (request, portal → comune): look fines up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ricerca {
    /// The comune whose police issued them.
    pub comune: CodiceIstat,
    /// By plate and period, or by number.
    pub criterio: Criterio,
}

/// The kinds of payment notice a fine carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoAvviso {
    /// 30% less, within 5 days of notification.
    Ridotto,
    /// The minimum, within 60 days.
    Ordinario,
    /// Half the maximum plus costs, after 60 days unpaid and unappealed.
    Maggiorato,
    /// What the Prefect ordered on rejecting an appeal: at least twice the minimum, plus costs.
    Ingiunzione,
}

/// A payment notice of a fine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvvisoVerbale {
    /// Which notice.
    pub tipo: TipoAvviso,
    /// The creditor body, as the notice prints it (the comune; the prefecture for an
    /// injunction): a payment names it with the notice number.
    pub ente: CodiceFiscale,
    /// The notice number.
    pub nav: Nav,
    /// The amount, costs included.
    pub importo: Importo,
    /// The last day to pay it.
    pub scadenza: Data,
}

/// The states of a fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatoVerbale {
    /// Notified, payable.
    Notificato,
    /// Paid with the reduction.
    PagatoRidotto,
    /// Paid.
    Pagato,
    /// Appealed to the Prefect.
    RicorsoPrefetto,
    /// Archived: the appeal was accepted (or the Prefect was silent).
    Archiviato,
    /// The Prefect rejected the appeal: an injunction to pay.
    Ingiunzione,
    /// Appealed to the Justice of the Peace.
    RicorsoGiudice,
    /// Unpaid and unappealed past its terms: enforceable.
    Esecutivo,
}

/// A fine as the comune holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatiVerbale {
    /// The fine's number.
    pub numero: String,
    /// The comune whose police issued it.
    pub comune: CodiceIstat,
    /// When the violation happened.
    pub il: Istante,
    /// Where.
    pub luogo: String,
    /// The rule broken (`art. 142 c. 8 CdS`).
    pub norma: String,
    /// What happened.
    pub descrizione: String,
    /// The vehicle.
    pub targa: Targa,
    /// The person liable (owner, or driver when identified).
    pub trasgressore: Soggetto,
    /// The day it was notified; none before notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notificato_il: Option<Data>,
    /// The minimum amount.
    pub minimo: Importo,
    /// The maximum amount.
    pub massimo: Importo,
    /// Notification and procedure costs.
    pub spese: Importo,
    /// Licence points deducted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punti: Option<u8>,
    /// True when confiscation or licence suspension applies: no reduced payment then.
    #[schemars(extend("examples" = [false]))]
    pub sanzione_accessoria: bool,
    /// The notices to pay with: reduced (unless excluded) and ordinary, and later the
    /// increased one or the Prefect's injunction.
    pub avvisi: Elenco<AvvisoVerbale, 1, 3>,
    /// The notice that fits the day of the message, with the amount due that day; none when
    /// nothing is payable (paid, under appeal, archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dovuto: Option<AvvisoVerbale>,
    /// Its state.
    pub stato: StatoVerbale,
}

/// `ricerca-esito` (response, comune → portal): the fines found (possibly none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RicercaEsito {
    /// The fines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbali: Vec<DatiVerbale>,
}

/// `verbale` (oneway, comune → portal): a fine is notified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verbale {
    /// The fine.
    pub verbale: DatiVerbale,
}

/// Whom an appeal goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Autorita {
    /// The Prefect, within 60 days of notification (through the office).
    Prefetto,
    /// The Justice of the Peace, within 30 days.
    GiudiceDiPace,
}

/// `ricorso` (request, portal → comune): the citizen appeals; an appeal excludes the reduced
/// payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ricorso {
    /// The portal's identifier of the appeal.
    pub pratica: String,
    /// The fine.
    pub numero_verbale: String,
    /// The comune.
    pub comune: CodiceIstat,
    /// To whom.
    pub autorita: Autorita,
    /// Who appeals.
    pub ricorrente: CodiceFiscale,
    /// The grounds.
    pub motivi: String,
    /// Supporting documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allegati: Vec<Documento>,
    /// The day it was lodged.
    pub presentato_il: Data,
}

/// `ricorso-ricevuta` (response, comune → portal): the appeal is in the protocol, or refused
/// (out of term, already paid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RicorsoRicevuta {
    /// The appeal.
    pub pratica: String,
    /// The comune's protocol, when received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocollo: Option<Protocollo>,
    /// Why it is inadmissible; none when received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
}

/// `ricorso-trasmissione` (request, comune → prefecture): the office forwards an appeal with
/// the fine and its own counter-arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RicorsoTrasmissione {
    /// The appeal.
    pub ricorso: Ricorso,
    /// The fine.
    pub verbale: DatiVerbale,
    /// The office's protocol of the appeal.
    pub protocollo: Protocollo,
    /// The office's counter-arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controdeduzioni: Option<String>,
}

/// The Prefect's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoDecisione {
    /// Accepted: the fine is archived.
    Accolto {},
    /// Rejected: an injunction to pay at least twice the minimum, which may be opposed before
    /// the Justice of the Peace within 30 days.
    Respinto {
        /// The creditor of the injunction's notice (the prefecture).
        ente: CodiceFiscale,
        /// The amount ordered, costs included.
        importo: Importo,
        /// Its notice.
        nav: Nav,
        /// The last day to pay.
        scadenza: Data,
    },
}

/// `decisione` (response, prefecture → comune): the Prefect decides, within 120 days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decisione {
    /// The appeal.
    pub pratica: String,
    /// The fine.
    pub numero_verbale: String,
    /// The prefecture's protocol of the decision.
    pub protocollo: Protocollo,
    /// Accepted or rejected.
    pub esito: EsitoDecisione,
    /// The reasons.
    pub motivazione: String,
}

/// `stato` (oneway, comune → portal): a fine changed state; also prefecture → comune when the
/// Prefect's injunction is paid (the prefecture is its creditor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stato {
    /// The fine.
    pub numero_verbale: String,
    /// The comune.
    pub comune: CodiceIstat,
    /// The new state.
    pub stato: StatoVerbale,
    /// When.
    pub il: Istante,
    /// A note for the citizen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

impl DatiVerbale {
    /// The minimum is not above the maximum, and no reduced notice where an accessory
    /// sanction applies; `pointer` is where the fine is in its message.
    fn regole(&self, pointer: &str) -> Vec<Violation> {
        let mut v = Vec::new();
        if self.minimo > self.massimo {
            v.push(rules::at(
                format!("{pointer}/minimo"),
                format!(
                    "the minimum {} is above the maximum {}",
                    self.minimo, self.massimo
                ),
            ));
        }
        if self.sanzione_accessoria {
            for (i, a) in self.avvisi.iter().enumerate() {
                if a.tipo == TipoAvviso::Ridotto {
                    v.push(rules::at(
                        format!("{pointer}/avvisi/{i}/tipo"),
                        "no reduced payment where confiscation or licence suspension applies",
                    ));
                }
            }
            if self
                .dovuto
                .as_ref()
                .is_some_and(|a| a.tipo == TipoAvviso::Ridotto)
            {
                v.push(rules::at(
                    format!("{pointer}/dovuto/tipo"),
                    "no reduced payment where confiscation or licence suspension applies",
                ));
            }
        }
        v
    }
}

impl RicercaEsito {
    fn regole(&self) -> Vec<Violation> {
        self.verbali
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.regole(&format!("/verbali/{i}")))
            .collect()
    }
}

impl Verbale {
    fn regole(&self) -> Vec<Violation> {
        self.verbale.regole("/verbale")
    }
}

impl RicorsoTrasmissione {
    fn regole(&self) -> Vec<Violation> {
        self.verbale.regole("/verbale")
    }
}

crate::catalog::messages! {
    "ricerca" => Ricerca,
    "ricerca-esito" => RicercaEsito with RicercaEsito::regole,
    "verbale" => Verbale with Verbale::regole,
    "ricorso" => Ricorso,
    "ricorso-ricevuta" => RicorsoRicevuta,
    "ricorso-trasmissione" => RicorsoTrasmissione with RicorsoTrasmissione::regole,
    "decisione" => Decisione,
    "stato" => Stato,
}
