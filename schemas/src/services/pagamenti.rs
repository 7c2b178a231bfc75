//! `pagamenti`: the payment provider — debt positions of creditor bodies, and the payment of a
//! notice: verify, activate, outcome, receipt, reporting.
//!
//! A creditor creates a debt position ([`PosizioneCrea`] → [`PosizioneCreata`], which carries the
//! NAV), may change or cancel it while unpaid ([`PosizioneAggiorna`], [`PosizioneAnnulla`] →
//! [`PosizioneEsito`]) and hears of each change of state ([`PosizioneStato`]). A position has one
//! payment option, or is paid in 2 to 12 instalments ([`RataPosizione`]), each with its own
//! notice, amount and due date, each paid on its own; paying some makes it partially paid, paying
//! all makes it paid. A payer's channel
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

/// One instalment of a position paid in instalments: a payment option of its own, with its own
/// notice (the provider gives it a NAV), amount and due date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RataPosizione {
    /// How much (more than nothing).
    pub importo: Importo,
    /// Its due date, after the previous instalment's.
    pub scadenza: Data,
    /// Until when it may still be paid (it expires after it); when absent, the position's
    /// `validita`, else its due date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validita: Option<Data>,
    /// What its notice prints; the position's `causale` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causale: Option<String>,
    /// Its transfers, summing to its amount, each the part of the position's transfer of the
    /// same number; when absent, the position's only transfer for the instalment's amount (a
    /// position of several transfers lists them in every instalment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trasferimenti: Option<Elenco<Trasferimento, 1, 5>>,
}

/// `posizione-crea` (request, creditor → payment provider): a debt position to publish; the
/// transfers' amounts sum to the total; the instalments, if any, too.
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
    /// The due date (with instalments, the last instalment's).
    #[schemars(extend("examples" = ["2026-12-16"]))]
    pub scadenza: Data,
    /// Until when it may still be paid (the position expires after it); the due date when absent.
    /// With instalments, the last day of each instalment that gives none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["2026-12-31"]))]
    pub validita: Option<Data>,
    /// What is paid, as the notice prints it.
    pub causale: String,
    /// 1 to 5 transfers whose amounts sum to `importo`.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
    /// 2 to 12 instalments, by increasing due date, whose amounts sum to `importo`; when absent,
    /// the position has one payment option, its own notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [[
        {"importo": 40400, "scadenza": "2026-06-16", "causale": "IMU 2026 acconto"},
        {"importo": 40400, "scadenza": "2026-12-16", "causale": "IMU 2026 saldo"}
    ]]))]
    pub rate: Option<Elenco<RataPosizione, 2, 12>>,
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
    /// Some of its instalments are paid, not all: it can no longer change.
    ParzialmentePagata,
    /// Paid: it can no longer change.
    Pagata,
    /// Paid and reported to the creditor in a settlement flow.
    Rendicontata,
    /// Cancelled by the creditor.
    Invalida,
    /// Past its validity, unpaid (in instalments: none paid, and every one past its validity).
    Scaduta,
}

/// The notice of one instalment of a created position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RataCreata {
    /// Its number in the position, 1 to 12, in order of due date.
    #[schemars(range(min = 1, max = 12))]
    pub numero: u8,
    /// Its notice number.
    pub nav: Nav,
    /// Its payment's unique identifier.
    pub iuv: Iuv,
    /// How much.
    pub importo: Importo,
    /// Its due date.
    pub scadenza: Data,
}

/// `posizione-creata` (response, payment provider → creditor): the position exists and has a
/// notice number (one per instalment, when paid in instalments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneCreata {
    /// The creditor's identifier.
    pub iupd: String,
    /// The notice number (with instalments, the first instalment's).
    pub nav: Nav,
    /// The payment's unique identifier (with instalments, the first instalment's).
    pub iuv: Iuv,
    /// Its state.
    pub stato: StatoPosizione,
    /// The instalments' notices, in order; none for a position of one payment option.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("examples" = [[
        {"numero": 1, "nav": "301000000000000144", "iuv": "01000000000000144", "importo": 40400, "scadenza": "2026-06-16"},
        {"numero": 2, "nav": "301000000000000245", "iuv": "01000000000000245", "importo": 40400, "scadenza": "2026-12-16"}
    ]]))]
    pub rate: Vec<RataCreata>,
}

/// `posizione-aggiorna` (request, creditor → payment provider): new amount, due date or
/// transfers of an unpaid position; a position in instalments gets as many new instalments,
/// each keeping its notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneAggiorna {
    /// The position.
    pub iupd: String,
    /// The creditor body.
    pub ente: CodiceFiscale,
    /// The new total.
    pub importo: Importo,
    /// The new due date (with instalments, the last instalment's).
    #[schemars(extend("examples" = ["2026-12-16"]))]
    pub scadenza: Data,
    /// The new transfers, summing to `importo`.
    #[schemars(extend("examples" = [[{
        "indice": 1,
        "ente": "00514490010",
        "iban": "IT60X0542811101000000123456",
        "importo": 80800,
        "causale": "IMU 2026",
        "tassonomia": "9/0101101IM/"
    }]]))]
    pub trasferimenti: Elenco<Trasferimento, 1, 5>,
    /// The new instalments, as many as the position has, summing to `importo`; absent for a
    /// position of one payment option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [[
        {"importo": 40400, "scadenza": "2026-06-16", "causale": "IMU 2026 acconto"},
        {"importo": 40400, "scadenza": "2026-12-16", "causale": "IMU 2026 saldo"}
    ]]))]
    pub rate: Option<Elenco<RataPosizione, 2, 12>>,
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
    /// Some of its instalments are paid: it can no longer be changed or cancelled.
    ParzialmentePagato,
    /// A change that gives a position in instalments another number of instalments, or
    /// instalments to a position of one payment option (each instalment keeps its notice:
    /// cancel the position and create another).
    RateDiverse,
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
    /// Its notice (the instalment's, when an instalment's payment moved it).
    pub nav: Nav,
    /// The new state.
    pub stato: StatoPosizione,
    /// When.
    pub il: Istante,
    /// The instalment whose payment moved it (1 to 12), for a position in instalments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 12))]
    pub rata: Option<u8>,
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
/// position on this, and only on this (one receipt per instalment, for a position in
/// instalments).
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
    /// The instalment paid (1 to 12), for a position in instalments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 12))]
    pub rata: Option<u8>,
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

/// The transfers of instalment `rata` of a position whose transfers are `posizione`: its own,
/// or the position's only transfer for the instalment's amount; none when the position has
/// several transfers and the instalment lists none.
#[must_use]
pub fn trasferimenti_della_rata(
    rata: &RataPosizione,
    posizione: &Elenco<Trasferimento, 1, 5>,
) -> Option<Elenco<Trasferimento, 1, 5>> {
    if let Some(own) = &rata.trasferimenti {
        return Some(own.clone());
    }
    match posizione.as_slice() {
        [only] => Elenco::new(vec![Trasferimento {
            importo: rata.importo,
            ..only.clone()
        }]),
        _ => None,
    }
}

/// An instalment plan: amounts of more than nothing summing to `total`, due dates increasing to
/// the position's `scadenza`, last days not before the due dates, and transfers that sum to
/// each instalment's amount and, number by number, to the position's transfers.
fn piano(
    rate: &[RataPosizione],
    total: Importo,
    scadenza: &Data,
    validita: Option<&Data>,
    posizione: &Elenco<Trasferimento, 1, 5>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (i, r) in rate.iter().enumerate() {
        let n = i + 1;
        if r.importo == Importo::ZERO {
            violations.push(rules::at(
                format!("/rate/{i}/importo"),
                format!("instalment {n} asks for nothing"),
            ));
        }
        if let Some(prev) = i.checked_sub(1).and_then(|p| rate.get(p))
            && r.scadenza <= prev.scadenza
        {
            violations.push(rules::at(
                format!("/rate/{i}/scadenza"),
                format!(
                    "instalment {n} is due on {}, not after instalment {i}'s {}",
                    r.scadenza, prev.scadenza
                ),
            ));
        }
        if let Some(v) = &r.validita
            && v < &r.scadenza
        {
            violations.push(rules::at(
                format!("/rate/{i}/validita"),
                format!(
                    "instalment {n} would stop being payable on {v}, before its due date {}",
                    r.scadenza
                ),
            ));
        }
    }
    violations.extend(rules::sum_is(rate, |r| r.importo, total, "/rate"));
    if let Some(last) = rate.last()
        && &last.scadenza != scadenza
    {
        violations.push(rules::at(
            "/scadenza",
            format!(
                "{scadenza}: a position in instalments is due on its last instalment's due date, {}",
                last.scadenza
            ),
        ));
    }
    if let Some(v) = validita
        && v < scadenza
    {
        violations.push(rules::at(
            "/validita",
            format!("{v} is before the last instalment's due date, {scadenza}"),
        ));
    }
    // Number by number, the instalments' transfers make up the position's.
    let mut per_indice = [Importo::ZERO; 6];
    for (i, r) in rate.iter().enumerate() {
        let Some(list) = trasferimenti_della_rata(r, posizione) else {
            violations.push(rules::at(
                format!("/rate/{i}"),
                format!(
                    "instalment {}: the position has {} transfers, so each instalment lists its own",
                    i + 1,
                    posizione.len()
                ),
            ));
            continue;
        };
        let pointer = format!("/rate/{i}/trasferimenti");
        violations.extend(trasferimenti(list.as_slice(), r.importo, &pointer));
        for (j, t) in list.iter().enumerate() {
            let Some(of) = posizione.iter().find(|p| p.indice == t.indice) else {
                violations.push(rules::at(
                    format!("{pointer}/{j}/indice"),
                    format!("the position has no transfer {}", t.indice),
                ));
                continue;
            };
            if of.ente != t.ente || of.iban != t.iban {
                violations.push(rules::at(
                    format!("{pointer}/{j}"),
                    format!(
                        "transfer {} credits {} on {}, as the position's does, not {} on {}",
                        t.indice, of.ente, of.iban.0, t.ente, t.iban.0
                    ),
                ));
            }
            if let Some(slot) = per_indice.get_mut(usize::from(t.indice)) {
                *slot = slot.checked_add(t.importo).unwrap_or(*slot);
            }
        }
    }
    if violations.is_empty() {
        for t in posizione {
            let given = per_indice
                .get(usize::from(t.indice))
                .copied()
                .unwrap_or(Importo::ZERO);
            if given != t.importo {
                violations.push(rules::at(
                    "/rate",
                    format!(
                        "the instalments give transfer {} {given}, the position {}",
                        t.indice, t.importo
                    ),
                ));
            }
        }
    }
    violations
}

impl PosizioneCrea {
    fn regole(&self) -> Vec<Violation> {
        let mut violations = trasferimenti(
            self.trasferimenti.as_slice(),
            self.importo,
            "/trasferimenti",
        );
        if let Some(rate) = &self.rate {
            violations.extend(piano(
                rate.as_slice(),
                self.importo,
                &self.scadenza,
                self.validita.as_ref(),
                &self.trasferimenti,
            ));
        }
        violations
    }
}

impl PosizioneAggiorna {
    fn regole(&self) -> Vec<Violation> {
        let mut violations = trasferimenti(
            self.trasferimenti.as_slice(),
            self.importo,
            "/trasferimenti",
        );
        if let Some(rate) = &self.rate {
            violations.extend(piano(
                rate.as_slice(),
                self.importo,
                &self.scadenza,
                None,
                &self.trasferimenti,
            ));
        }
        violations
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
