//! `tributi.imu`: property tax — the tax position, declared variations of a property, reports
//! of a discrepancy, payment notices and assessments.
//!
//! The portal asks a comune for a citizen's position ([`PosizioneRichiesta`] → [`Posizione`]),
//! declares a variation ([`Variazione`] → [`VariazioneEsito`]) or reports a discrepancy, which
//! reaches the tax office by e-mail ([`Segnalazione`] → [`SegnalazioneEsito`]). The comune sends
//! the instalment notices ([`AvvisoPagamento`], paid through `pagamenti`) and the assessments of
//! violations ([`Accertamento`]). The portal asks the comune to calculate the tax of a year
//! ([`CalcoloRichiesta`] → [`CalcoloEsito`]) on properties it lists, or on the citizen's tax
//! position when it lists none.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dati::{Motivo, Periodo, Protocollo, RiferimentoCatastale};
use crate::formats::{
    CodiceFiscale, CodiceIstat, Data, Elenco, Importo, ImportoRelativo, Nav, PuntiBase,
};

/// The service's name in envelopes.
pub const SERVICE: &str = "tributi.imu";

/// A cadastral category: group and class, `A/1` to `F/7`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Categoria(
    #[schemars(
        regex(pattern = r"^(A/([1-9]|1[01])|B/[1-8]|C/[1-7]|D/([1-9]|10)|E/[1-9]|F/[1-7])$"),
        extend("examples" = ["A/2"])
    )]
    pub String,
);

/// Why the base is halved, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Riduzione {
    /// A historic building.
    Storico,
    /// Unfit and unused.
    Inagibile,
    /// A home lent free to a parent or child who lives there.
    ComodatoParenti,
}

/// A property as the tax office holds it, with the owner's share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Immobile {
    /// Where it is in the cadastre.
    pub catasto: RiferimentoCatastale,
    /// Category, for buildings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categoria: Option<Categoria>,
    /// Cadastral income (rendita) for buildings, or agricultural income (reddito dominicale)
    /// for land.
    pub rendita: Importo,
    /// The owner's share.
    pub quota: PuntiBase,
    /// True when it is the owner's main residence.
    pub abitazione_principale: bool,
    /// Why the base is halved, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub riduzione: Option<Riduzione>,
}

/// A property in a tax year: how long it was held and what it owes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImmobileAnno {
    /// The property.
    pub immobile: Immobile,
    /// Months of possession that count (more than half the days).
    #[schemars(range(min = 0, max = 12))]
    pub mesi: u8,
    /// The rate that applies.
    pub aliquota: PuntiBase,
    /// The tax due for the year, after deductions, rounded to the euro.
    pub imposta: Importo,
    /// The days the property was held in the year, when the tax office knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possesso: Option<Periodo>,
}

/// The instalments of a tax year.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rata {
    /// 16 June, on the previous year's rates.
    Acconto,
    /// 16 December, the balance.
    Saldo,
    /// Both at once.
    Unica,
}

/// A payment made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Versamento {
    /// The day paid.
    pub data: Data,
    /// How much.
    pub importo: Importo,
    /// For which instalment; none for the payment of an assessment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rata: Option<Rata>,
    /// The assessment paid, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accertamento: Option<Protocollo>,
    /// The notice paid, when paid through the payment provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nav: Option<Nav>,
}

/// A notice the comune issued: an instalment or an assessment, paid or still due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvvisoEmesso {
    /// What it asks for (`IMU 2026 acconto`).
    pub causale: String,
    /// The notice number.
    pub nav: Nav,
    /// How much.
    pub importo: Importo,
    /// The last day to pay.
    pub scadenza: Data,
    /// True once the payment provider's receipt came.
    pub pagato: bool,
}

/// `posizione` (request, portal → comune): a citizen's tax position for a year.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PosizioneRichiesta {
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax year.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
}

/// `posizione-esito` (response, comune → portal): properties with their cadastral data and share,
/// the tax due and the payments made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Posizione {
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax year.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
    /// The properties held in the year.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immobili: Vec<ImmobileAnno>,
    /// Tax due for the year (nothing below €12).
    pub dovuto: Importo,
    /// Payments made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versamenti: Vec<Versamento>,
    /// The notices issued for the year, paid or due.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avvisi: Vec<AvvisoEmesso>,
    /// Due minus paid: negative for a credit.
    pub saldo: ImportoRelativo,
}

/// A property to calculate: the property, and how long it was held in the year — as a number
/// of months, or as the days held (the more-than-half-month rule then counts the months), or
/// the whole year when neither is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImmobileCalcolo {
    /// The property and the taxpayer's share.
    pub immobile: Immobile,
    /// Months held (more than half their days); not with `possesso`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 12))]
    pub mesi: Option<u8>,
    /// The days held; not with `mesi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possesso: Option<Periodo>,
    /// For a main residence: how many co-owners live there, the taxpayer included, who share
    /// the deduction (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub residenti: Option<u8>,
}

/// `calcolo` (request, portal → comune): calculate a taxpayer's tax for a year, on the
/// properties listed, or on the tax position the comune holds when none are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalcoloRichiesta {
    /// The portal's identifier of the calculation.
    pub pratica: String,
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax year.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
    /// The properties; none: those of the tax position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immobili: Vec<ImmobileCalcolo>,
}

/// The tax of one property in one year, step by step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImmobileCalcolato {
    /// The property and the share.
    pub immobile: Immobile,
    /// Months that count.
    #[schemars(range(min = 0, max = 12))]
    pub mesi: u8,
    /// The multiplier of its category (135 for land, whose income is raised by 25%).
    pub moltiplicatore: u16,
    /// The taxable base of the whole property for a whole year (halved where a reduction
    /// applies), in cents.
    pub base: Importo,
    /// The rate of the year.
    pub aliquota: PuntiBase,
    /// The main-residence deduction granted to this taxpayer.
    pub detrazione: Importo,
    /// The tax of the year, to the cent, after the deduction.
    pub imposta: Importo,
    /// The first instalment's part, to the cent, on the previous year's rates.
    pub acconto: Importo,
}

/// A calculation: per property, per instalment, rounded to the euro.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Calcolo {
    /// Each property.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immobili: Vec<ImmobileCalcolato>,
    /// The tax of the year, rounded to the euro; zero below the minimum.
    pub imposta: Importo,
    /// Due by 16 June, rounded to the euro.
    pub acconto: Importo,
    /// Due by 16 December: the tax of the year minus the first instalment.
    pub saldo: Importo,
    /// The first instalment's last day.
    pub scadenza_acconto: Data,
    /// The balance's last day.
    pub scadenza_saldo: Data,
    /// True when the tax, below the minimum, is not due.
    pub sotto_minimo: bool,
}

/// `calcolo-esito` (response, comune → portal): the calculation, or why it cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalcoloEsito {
    /// The calculation asked for.
    pub pratica: String,
    /// The calculation; none when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calcolo: Option<Calcolo>,
    /// Why it was refused; none when calculated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
}

/// Kinds of variation of a property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TipoVariazione {
    /// Bought or inherited.
    Acquisto,
    /// Sold or given away.
    Cessione,
    /// A change of use or of category.
    CambioUso,
    /// Became, or stopped being, the main residence.
    AbitazionePrincipale,
    /// A reduction starts or ends.
    Riduzione,
}

/// `variazione` (request, portal → comune): the citizen declares a variation of a property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variazione {
    /// The portal's identifier of the declaration.
    pub pratica: String,
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// What changed.
    pub tipo: TipoVariazione,
    /// The day of the change (the day of a transfer counts for the buyer).
    pub data: Data,
    /// The property after the change.
    pub immobile: Immobile,
    /// A note for the tax office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nota: Option<String>,
}

/// `variazione-esito` (response, comune → portal): the declaration is recorded or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariazioneEsito {
    /// The declaration.
    pub pratica: String,
    /// The tax office's protocol, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocollo: Option<Protocollo>,
    /// Why it was refused; none when recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub motivi: Vec<Motivo>,
}

/// `segnalazione` (request, portal → comune): the citizen reports a discrepancy in the tax
/// position; it reaches the tax office by e-mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Segnalazione {
    /// The portal's identifier of the report.
    pub pratica: String,
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax year concerned.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
    /// The property concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immobile: Option<RiferimentoCatastale>,
    /// What is wrong, in the citizen's words.
    pub testo: String,
    /// Where to answer.
    pub email: String,
}

/// `segnalazione-esito` (response, comune → portal): the report is in the tax office's protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegnalazioneEsito {
    /// The report.
    pub pratica: String,
    /// The tax office's protocol.
    pub protocollo: Protocollo,
}

/// `avviso-pagamento` (oneway, comune → portal): an instalment to pay, with its notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AvvisoPagamento {
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax year.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
    /// Which instalment.
    pub rata: Rata,
    /// How much, rounded to the euro.
    pub importo: Importo,
    /// The last day to pay.
    pub scadenza: Data,
    /// The notice number to pay with.
    pub nav: Nav,
}

/// `accertamento` (oneway, comune → portal): a violation assessed by the comune, paid like a
/// notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accertamento {
    /// The taxpayer.
    pub contribuente: CodiceFiscale,
    /// The comune.
    pub comune: CodiceIstat,
    /// The tax office's protocol of the assessment.
    pub protocollo: Protocollo,
    /// The tax year assessed.
    #[schemars(range(min = 2012, max = 2100))]
    pub anno: u16,
    /// Tax not paid.
    pub imposta: Importo,
    /// Penalties.
    pub sanzioni: Importo,
    /// Interest.
    pub interessi: Importo,
    /// The total to pay.
    pub totale: Importo,
    /// Why.
    pub motivi: Elenco<Motivo, 1, 20>,
    /// The notice number to pay with.
    pub nav: Nav,
    /// The last day to pay.
    pub scadenza: Data,
}

crate::catalog::messages! {
    "calcolo" => CalcoloRichiesta,
    "calcolo-esito" => CalcoloEsito,
    "posizione" => PosizioneRichiesta,
    "posizione-esito" => Posizione,
    "variazione" => Variazione,
    "variazione-esito" => VariazioneEsito,
    "segnalazione" => Segnalazione,
    "segnalazione-esito" => SegnalazioneEsito,
    "avviso-pagamento" => AvvisoPagamento,
    "accertamento" => Accertamento,
}
