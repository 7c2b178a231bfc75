//! `pagamenti`: the payment provider — debt positions of creditor bodies, and the payment of a
//! notice: verify, activate, outcome, receipt, reporting.
//!
//! A creditor creates a debt position ([`PosizioneCrea`] → [`PosizioneCreata`], which carries the
//! NAV), may change or cancel it while unpaid ([`PosizioneAggiorna`], [`PosizioneAnnulla`] →
//! [`PosizioneEsito`]) and hears of each change of state ([`PosizioneStato`]). A payer's channel
//! verifies the notice ([`Verifica`] → [`VerificaEsito`]: the current amount), activates it
//! ([`Attiva`] → [`AttivaEsito`]: amount and transfers; parallel payments of one notice are
//! blocked) and reports the outcome ([`EsitoPagamento`] → [`EsitoPagamentoEsito`]: taken or
//! refused); on success the creditor receives the
//! [`Ricevuta`], and only the receipt closes the position. Settlements are reported in
//! [`Rendicontazione`] flows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::Soggetto;
use crate::Violation;
use crate::formats::{CodiceFiscale, Data, Elenco, Importo, Istante, Iuv, Nav};
use crate::rules;

/// The service's name in envelopes.
pub const SERVICE: &str = "pagamenti";

/// An IBAN: country, check digits, account (15 to 34 characters, uppercase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Iban(
    #[schemars(
        regex(pattern = r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"),
        extend("examples" = ["IT60X0542811101000000123456"])
    )]
    pub String,
);

/// One transfer of a position: part of the amount to one creditor's account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trasferimento {
    /// Its number in the position, 1 to 5.
    #[schemars(range(min = 1, max = 5))]
    pub indice: u8,
    /// The body credited (codice fiscale of the entity).
    pub ente: CodiceFiscale,
    /// The account credited.
    pub iban: Iban,
    /// How much.
    pub importo: Importo,
    /// What for.
    pub causale: String,
    /// The revenue's category in the provider's taxonomy (`9/0101101IM/`).
    pub tassonomia: String,
}

/// `posizione-crea` (request, creditor → payment provider): a debt position to publish; the
/// transfers' amounts sum to the total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneCrea {
    /// The creditor's identifier of the position (IUPD), unique for the creditor.
    pub iupd: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// Who owes.
    pub debitore: Soggetto,
    /// The total.
    pub importo: Importo,
    /// The due date.
    pub scadenza: Data,
    /// Until when it may still be paid (the position expires after it); the due date when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validita: Option<Data>,
    /// What is paid, as the notice prints it.
    pub causale: String,
    /// 1 to 5 transfers whose amounts sum to `importo`.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026 saldo",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
}

/// The states of a debt position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatoPosizione {
    /// Created, not yet visible to payers.
    Bozza,
    /// Published, valid from a future day.
    Pubblicata,
    /// Payable.
    Valida,
    /// Some of its instalments are paid.
    ParzialmentePagata,
    /// Paid: it can no longer change.
    Pagata,
    /// Paid and reported to the creditor in a settlement flow.
    Rendicontata,
    /// Cancelled by the creditor.
    Invalida,
    /// Past its validity, unpaid.
    Scaduta,
}

/// `posizione-creata` (response, payment provider → creditor): the position exists and has a
/// notice number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneCreata {
    /// The creditor's identifier.
    pub iupd: String,
    /// The notice number.
    pub nav: Nav,
    /// The payment's unique identifier.
    pub iuv: Iuv,
    /// Its state.
    pub stato: StatoPosizione,
}

/// `posizione-aggiorna` (request, creditor → payment provider): new amount, due date or
/// transfers of an unpaid position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneAggiorna {
    /// The position.
    pub iupd: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// The new total.
    pub importo: Importo,
    /// The new due date.
    pub scadenza: Data,
    /// The new transfers, summing to `importo`.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026 saldo",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
}

/// `posizione-annulla` (request, creditor → payment provider): cancel an unpaid position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneAnnulla {
    /// The position.
    pub iupd: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// Why.
    pub motivo: String,
}

/// Why the provider refuses an operation on a notice or a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErroreAvviso {
    /// No such notice or position.
    Sconosciuto,
    /// Past its validity.
    Scaduto,
    /// Cancelled by the creditor.
    Annullato,
    /// Already paid: it cannot change.
    GiaPagato,
    /// A payment of it is in progress.
    PagamentoInCorso,
    /// The amount to pay is not the notice's current amount (verify it again).
    ImportoDiverso,
    /// No activation has this token (or it belongs to another notice).
    TokenSconosciuto,
}

/// `posizione-esito` (response, payment provider → creditor): the change or cancellation is
/// done, or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneEsito {
    /// The position.
    pub iupd: String,
    /// Its state now.
    pub stato: StatoPosizione,
    /// Why the operation was refused; none when it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errore: Option<ErroreAvviso>,
}

/// `posizione-stato` (oneway, payment provider → creditor): the position changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneStato {
    /// The position.
    pub iupd: String,
    /// Its notice.
    pub nav: Nav,
    /// The new state.
    pub stato: StatoPosizione,
    /// When.
    pub il: Istante,
}

/// `verifica` (request, payer's channel → payment provider): what does this notice ask now?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verifica {
    /// The creditor body printed on the notice.
    pub ente: CodiceFiscale,
    /// The notice number.
    pub nav: Nav,
}

/// What a payer sees of a payable notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvvisoPagabile {
    /// The current amount.
    pub importo: Importo,
    /// The due date.
    pub scadenza: Data,
    /// What is paid.
    pub causale: String,
    /// The creditor's name.
    pub ente_denominazione: String,
}

/// The answer to a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoVerifica {
    /// Payable.
    Pagabile(AvvisoPagabile),
    /// Not payable.
    Errore {
        /// Why.
        errore: ErroreAvviso,
    },
}

/// `verifica-esito` (response, payment provider → payer's channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificaEsito {
    /// The notice.
    pub nav: Nav,
    /// Payable, or why not.
    pub esito: EsitoVerifica,
}

/// How a notice is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Canale {
    /// Payment card.
    Carta,
    /// Bank debit.
    Addebito,
    /// The printed notice paid at a counter.
    Sportello,
}

/// `attiva` (request, payer's channel → payment provider): start paying a notice; other
/// payments of it are blocked until the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attiva {
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// The notice number.
    pub nav: Nav,
    /// The amount the payer expects to pay (from the verification).
    pub importo: Importo,
    /// The channel.
    pub canale: Canale,
    /// The payer's identifier of this attempt, unique for the payer's channel.
    pub id_tentativo: String,
}

/// An activated payment: what to pay and to whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attivazione {
    /// The token that names this payment in the outcome.
    pub token: String,
    /// The amount.
    pub importo: Importo,
    /// Who owes.
    pub debitore: Soggetto,
    /// Its transfers.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026 saldo",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
    /// Until when the token is valid.
    pub valido_fino: Istante,
}

/// The answer to an activation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EsitoAttivazione {
    /// Activated.
    Attivato(Box<Attivazione>),
    /// Not activated.
    Errore {
        /// Why.
        errore: ErroreAvviso,
    },
}

/// `attiva-esito` (response, payment provider → payer's channel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttivaEsito {
    /// The notice.
    pub nav: Nav,
    /// The payer's attempt.
    pub id_tentativo: String,
    /// Activated, or why not.
    pub esito: EsitoAttivazione,
}

/// OK or KO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Risultato {
    /// The money moved.
    Ok,
    /// It did not: the notice is payable again.
    Ko,
}

/// `esito-pagamento` (request, payer's channel → payment provider): the outcome of an activated
/// payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EsitoPagamento {
    /// The activation's token.
    pub token: String,
    /// The notice.
    pub nav: Nav,
    /// OK or KO.
    pub risultato: Risultato,
    /// The channel used.
    pub canale: Canale,
    /// The payment service provider (its identifier).
    pub psp: String,
    /// When the payment was made.
    pub il: Istante,
    /// The amount paid (OK only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importo: Option<Importo>,
}

/// What the provider made of an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EsitoRegistrato {
    /// Paid: the receipt went to the creditor.
    Pagato,
    /// Not paid: the notice is payable again.
    Rilasciato,
    /// Refused: see the error (money taken must go back to the payer).
    Rifiutato,
}

/// `esito-pagamento-esito` (response, payment provider → payer's channel): the outcome was
/// taken, or refused and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EsitoPagamentoEsito {
    /// The activation's token.
    pub token: String,
    /// The notice.
    pub nav: Nav,
    /// What became of the payment.
    pub stato: EsitoRegistrato,
    /// The receipt's identifier, when paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ricevuta: Option<String>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errore: Option<ErroreAvviso>,
}

/// `ricevuta` (oneway, payment provider → creditor): a notice was paid; the creditor closes the
/// position on this, and only on this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ricevuta {
    /// The receipt's identifier.
    pub id: String,
    /// The creditor's position.
    pub iupd: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// The notice paid.
    pub nav: Nav,
    /// Its IUV.
    pub iuv: Iuv,
    /// The amount paid.
    pub importo: Importo,
    /// Who owed.
    pub debitore: Soggetto,
    /// Who paid, when not the debtor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagatore: Option<Soggetto>,
    /// The channel.
    pub canale: Canale,
    /// The payment service provider.
    pub psp: String,
    /// When it was paid.
    pub pagato_il: Istante,
    /// The transfers paid.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026 saldo",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
}

/// One payment in a settlement flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagamentoRendicontato {
    /// The payment.
    pub iuv: Iuv,
    /// The transfer settled.
    #[schemars(range(min = 1, max = 5))]
    pub indice_trasferimento: u8,
    /// The amount settled.
    pub importo: Importo,
    /// The day paid.
    pub data: Data,
}

/// `rendicontazione` (oneway, payment provider → creditor): a settlement flow; its payments'
/// positions become reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rendicontazione {
    /// The flow's identifier.
    pub id_flusso: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// The day of settlement.
    pub data_regolamento: Data,
    /// The total of the flow.
    pub totale: Importo,
    /// The payments settled.
    pub pagamenti: Elenco<PagamentoRendicontato, 1, 10000>,
}

/// Transfers numbered 1 to n, each once, whose amounts sum to `total`.
fn trasferimenti(list: &[Trasferimento], total: Importo, pointer: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut seen = [false; 6];
    for (i, t) in list.iter().enumerate() {
        let n = usize::from(t.indice);
        match seen.get_mut(n) {
            Some(slot) if n >= 1 && n <= list.len() && !*slot => *slot = true,
            _ => violations.push(rules::at(
                format!("{pointer}/{i}/indice"),
                format!(
                    "transfer {n}: the {} transfers are numbered 1 to {}, each once",
                    list.len(),
                    list.len()
                ),
            )),
        }
    }
    violations.extend(rules::sum_is(list, |t| t.importo, total, pointer));
    violations
}

impl PosizioneCrea {
    fn regole(&self) -> Vec<Violation> {
        trasferimenti(
            self.trasferimenti.as_slice(),
            self.importo,
            "/trasferimenti",
        )
    }
}

impl PosizioneAggiorna {
    fn regole(&self) -> Vec<Violation> {
        trasferimenti(
            self.trasferimenti.as_slice(),
            self.importo,
            "/trasferimenti",
        )
    }
}

impl AttivaEsito {
    fn regole(&self) -> Vec<Violation> {
        match &self.esito {
            EsitoAttivazione::Attivato(a) => trasferimenti(
                a.trasferimenti.as_slice(),
                a.importo,
                "/esito/attivato/trasferimenti",
            ),
            EsitoAttivazione::Errore { .. } => Vec::new(),
        }
    }
}

impl Ricevuta {
    fn regole(&self) -> Vec<Violation> {
        trasferimenti(
            self.trasferimenti.as_slice(),
            self.importo,
            "/trasferimenti",
        )
    }
}

crate::catalog::messages! {
    "posizione-crea" => PosizioneCrea with PosizioneCrea::regole,
    "posizione-creata" => PosizioneCreata,
    "posizione-aggiorna" => PosizioneAggiorna with PosizioneAggiorna::regole,
    "posizione-annulla" => PosizioneAnnulla,
    "posizione-esito" => PosizioneEsito,
    "posizione-stato" => PosizioneStato,
    "verifica" => Verifica,
    "verifica-esito" => VerificaEsito,
    "attiva" => Attiva,
    "attiva-esito" => AttivaEsito with AttivaEsito::regole,
    "esito-pagamento" => EsitoPagamento,
    "esito-pagamento-esito" => EsitoPagamentoEsito,
    "ricevuta" => Ricevuta with Ricevuta::regole,
    "rendicontazione" => Rendicontazione,
}
