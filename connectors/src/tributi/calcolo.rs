//! The property-tax calculator (`DOMAIN.md`, "Property tax"): base, rate, months, share,
//! deduction, instalments, minimum and rounding, in integer cents.
//!
//! Per property, exactly: `rendita × 1.05 × multiplier` (land: `income × 1.25 × 135`), halved
//! for historic or unfit buildings and homes lent free to a parent or child, `× rate × months/12
//! × share`, rounded to the cent once; then minus the main-residence deduction (A/1, A/8, A/9
//! only: €200 of the year's rates, `× months/12`, split equally among the resident co-owners,
//! never more than the tax). Other main residences (and their appurtenances C/2, C/6, C/7) owe
//! nothing. The first instalment (16 June) is half the year's tax on the previous year's
//! rates; the balance (16 December) is the year's tax minus it. The year's total is rounded to
//! the euro (50 cents and more up), the first instalment too, and nothing is due when the
//! total is below €12.

use snodo_schemas::formats::{Data, Importo, PuntiBase};
use snodo_schemas::services::dati::{Catasto, Motivo};
use snodo_schemas::services::tributi_imu::{Calcolo, Immobile, ImmobileCalcolato, ImmobileCalcolo};
use time::{Date, Month};

/// The rates a comune deliberated for a year (data per comune and year, never constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aliquote {
    /// The ordinary rate (0.86% by default, up to 1.06%).
    pub ordinaria: PuntiBase,
    /// The reduced rate of main residences of category A/1, A/8, A/9.
    pub abitazione_principale: PuntiBase,
    /// The rate of land.
    pub terreni: PuntiBase,
    /// The main-residence deduction for a whole year (€200).
    pub detrazione: Importo,
}

impl Default for Aliquote {
    /// The ordinary defaults: 0.86%, 0.5% for main residences, 0.76% for land, €200.
    fn default() -> Self {
        Aliquote {
            ordinaria: PuntiBase::new(86).unwrap_or(PuntiBase::TUTTO),
            abitazione_principale: PuntiBase::new(50).unwrap_or(PuntiBase::TUTTO),
            terreni: PuntiBase::new(76).unwrap_or(PuntiBase::TUTTO),
            detrazione: Importo::centesimi(20_000),
        }
    }
}

/// Why a property cannot be calculated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreCalcolo {
    /// The category is not one the tax knows.
    #[error(
        "property {indice}: cadastral category `{categoria}` is unknown to the tax (it knows A/1–A/11, B/1–B/8, C/1–C/7, D/1–D/10)"
    )]
    CategoriaSconosciuta {
        /// The property's place in the request (1-based).
        indice: usize,
        /// The category given.
        categoria: String,
    },
    /// A building without its category.
    #[error("property {indice}: a building needs its cadastral category")]
    CategoriaMancante {
        /// The property.
        indice: usize,
    },
    /// Land with a category.
    #[error("property {indice}: land has no cadastral category (`{categoria}` given)")]
    CategoriaSuTerreno {
        /// The property.
        indice: usize,
        /// The category given.
        categoria: String,
    },
    /// A share of nothing.
    #[error("property {indice}: the share is 0; a share is above 0 and at most 100% (10000)")]
    QuotaNulla {
        /// The property.
        indice: usize,
    },
    /// Months and period both given, or months above 12.
    #[error("property {indice}: {detail}")]
    Possesso {
        /// The property.
        indice: usize,
        /// What is wrong.
        detail: String,
    },
    /// The main-residence flag on something that cannot be a home.
    #[error(
        "property {indice}: category {categoria} cannot be a main residence (a home of group A but A/10, or its appurtenance C/2, C/6, C/7)"
    )]
    NonAbitazione {
        /// The property.
        indice: usize,
        /// Its category.
        categoria: String,
    },
    /// No resident co-owners.
    #[error(
        "property {indice}: `residenti` counts the co-owners living there, the taxpayer included: at least 1"
    )]
    Residenti {
        /// The property.
        indice: usize,
    },
    /// A year the tax does not know.
    #[error("year {anno}: the tax is calculated for the years 2012 to 2100")]
    Anno {
        /// The year given.
        anno: u16,
    },
    /// Numbers too large to be a tax.
    #[error("property {indice}: the amounts are too large to calculate")]
    Traboccamento {
        /// The property.
        indice: usize,
    },
}

impl ErroreCalcolo {
    /// The stable code and the sentence, as a refusal carries them.
    #[must_use]
    pub fn motivo(&self) -> Motivo {
        let codice = match self {
            ErroreCalcolo::CategoriaSconosciuta { .. } => "categoria-sconosciuta",
            ErroreCalcolo::CategoriaMancante { .. } => "categoria-mancante",
            ErroreCalcolo::CategoriaSuTerreno { .. } => "categoria-su-terreno",
            ErroreCalcolo::QuotaNulla { .. } => "quota-nulla",
            ErroreCalcolo::Possesso { .. } => "possesso-non-valido",
            ErroreCalcolo::NonAbitazione { .. } => "non-abitazione",
            ErroreCalcolo::Residenti { .. } => "residenti-non-validi",
            ErroreCalcolo::Traboccamento { .. } => "importi-eccessivi",
            ErroreCalcolo::Anno { .. } => "anno-non-valido",
        };
        Motivo {
            codice: codice.into(),
            descrizione: self.to_string(),
        }
    }
}

/// How a property's category is taxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Classe {
    /// The multiplier.
    moltiplicatore: u16,
    /// True for homes (group A but A/10) and their appurtenances (C/2, C/6, C/7).
    abitativa: bool,
    /// True for A/1, A/8, A/9: a main residence still pays, with the deduction.
    di_lusso: bool,
}

/// The multiplier of a building category, or `None` for a category the tax does not know
/// (groups E and F, or no such category).
fn classe(categoria: &str) -> Option<Classe> {
    let (gruppo, numero) = categoria.split_once('/')?;
    let n: u8 = numero.parse().ok()?;
    if numero.starts_with('0') {
        return None;
    }
    let c = |m, abitativa, di_lusso| {
        Some(Classe {
            moltiplicatore: m,
            abitativa,
            di_lusso,
        })
    };
    match (gruppo, n) {
        ("A", 10) => c(80, false, false),
        ("A", 1 | 8 | 9) => c(160, true, true),
        ("A", 2..=7 | 11) => c(160, true, false),
        ("B", 1..=8) => c(140, false, false),
        ("C", 1) => c(55, false, false),
        ("C", 2 | 6 | 7) => c(160, true, false),
        ("C", 3..=5) => c(140, false, false),
        ("D", 5) => c(80, false, false),
        ("D", 1..=10) => c(65, false, false),
        _ => None,
    }
}

/// The multiplier of building category `categoria` (`A/1`), if the tax knows it.
#[must_use]
pub fn moltiplicatore(categoria: &str) -> Option<u16> {
    classe(categoria).map(|c| c.moltiplicatore)
}

/// The months of `anno` held from `dal` to `al` (inclusive; open when `None`): a month counts
/// when held for more than half its days, or for exactly half when the holding starts in it
/// (the day of a transfer counts for the buyer, who takes the month when the days are equal).
#[must_use]
pub fn mesi_posseduti(anno: i32, dal: Date, al: Option<Date>) -> u8 {
    let mut mesi = 0;
    for m in 1..=12u8 {
        let Ok(month) = Month::try_from(m) else {
            continue;
        };
        let giorni = month.length(anno);
        let (Ok(primo), Ok(ultimo)) = (
            Date::from_calendar_date(anno, month, 1),
            Date::from_calendar_date(anno, month, giorni),
        ) else {
            continue;
        };
        let inizio = dal.max(primo);
        let fine = al.map_or(ultimo, |a| a.min(ultimo));
        if fine < inizio {
            continue;
        }
        let tenuti = (fine - inizio).whole_days() + 1;
        let doppio = 2 * tenuti;
        let n = i64::from(giorni);
        let acquirente = dal > primo && dal <= ultimo;
        if doppio > n || (doppio == n && acquirente) {
            mesi += 1;
        }
    }
    mesi
}

/// Rounds `num / den` to the nearest integer, halves up.
fn arrotonda(num: u128, den: u128) -> u128 {
    (num + den / 2) / den
}

/// Cents rounded to whole euro (50 cents and more up), in cents.
#[must_use]
pub fn all_euro(centesimi: u64) -> u64 {
    (centesimi + 50) / 100 * 100
}

/// The tax below which nothing is due: €12.
pub const MINIMO: u64 = 1_200;

/// One property's figures on one year's rates.
struct Figure {
    base: u64,
    aliquota: PuntiBase,
    detrazione: u64,
    imposta: u64,
}

fn figure(
    indice: usize,
    immobile: &Immobile,
    mesi: u8,
    residenti: u8,
    aliquote: &Aliquote,
) -> Result<(Figure, u16), ErroreCalcolo> {
    let (fattore, moltiplicatore, aliquota, di_lusso_principale, esente) =
        match (immobile.catasto.catasto, &immobile.categoria) {
            (Catasto::Terreni, None) => (125u128, 135u16, aliquote.terreni, false, false),
            (Catasto::Terreni, Some(c)) => {
                return Err(ErroreCalcolo::CategoriaSuTerreno {
                    indice,
                    categoria: c.0.clone(),
                });
            }
            (Catasto::Fabbricati, None) => return Err(ErroreCalcolo::CategoriaMancante { indice }),
            (Catasto::Fabbricati, Some(c)) => {
                let k = classe(&c.0).ok_or_else(|| ErroreCalcolo::CategoriaSconosciuta {
                    indice,
                    categoria: c.0.clone(),
                })?;
                if immobile.abitazione_principale && !k.abitativa {
                    return Err(ErroreCalcolo::NonAbitazione {
                        indice,
                        categoria: c.0.clone(),
                    });
                }
                let principale = immobile.abitazione_principale;
                let aliquota = if principale && k.di_lusso {
                    aliquote.abitazione_principale
                } else {
                    aliquote.ordinaria
                };
                (
                    105u128,
                    k.moltiplicatore,
                    aliquota,
                    principale && k.di_lusso,
                    principale && !k.di_lusso,
                )
            }
        };
    if immobile.quota.get() == 0 {
        return Err(ErroreCalcolo::QuotaNulla { indice });
    }
    let meta: u128 = if immobile.riduzione.is_some() { 2 } else { 1 };
    let rendita = u128::from(immobile.rendita.in_centesimi());
    let base = arrotonda(rendita * fattore * u128::from(moltiplicatore), 100 * meta);
    let base = u64::try_from(base).map_err(|_| ErroreCalcolo::Traboccamento { indice })?;
    if esente {
        return Ok((
            Figure {
                base,
                aliquota,
                detrazione: 0,
                imposta: 0,
            },
            moltiplicatore,
        ));
    }
    let num = rendita
        * fattore
        * u128::from(moltiplicatore)
        * u128::from(aliquota.get())
        * u128::from(mesi)
        * u128::from(immobile.quota.get());
    let lorda = arrotonda(num, 100 * 10_000 * 12 * 10_000 * meta);
    let lorda = u64::try_from(lorda).map_err(|_| ErroreCalcolo::Traboccamento { indice })?;
    let detrazione = if di_lusso_principale {
        let d = arrotonda(
            u128::from(aliquote.detrazione.in_centesimi()) * u128::from(mesi),
            12 * u128::from(residenti),
        );
        u64::try_from(d).unwrap_or(u64::MAX).min(lorda)
    } else {
        0
    };
    Ok((
        Figure {
            base,
            aliquota,
            detrazione,
            imposta: lorda - detrazione,
        },
        moltiplicatore,
    ))
}

/// The 16 June and 16 December of `anno`.
fn scadenze(anno: u16) -> Option<(Data, Data)> {
    let d = |m| {
        Date::from_calendar_date(i32::from(anno), m, 16)
            .ok()
            .and_then(Data::from_date)
    };
    Some((d(Month::June)?, d(Month::December)?))
}

/// Calculates the tax of `anno` on `immobili`, with the year's rates (`correnti`) and the
/// previous year's (`precedenti`, for the first instalment).
///
/// # Errors
/// Every property that cannot be calculated, each [`ErroreCalcolo`] naming it and why.
pub fn calcola(
    anno: u16,
    immobili: &[ImmobileCalcolo],
    correnti: &Aliquote,
    precedenti: &Aliquote,
) -> Result<Calcolo, Vec<ErroreCalcolo>> {
    if !(2012..=2100).contains(&anno) {
        return Err(vec![ErroreCalcolo::Anno { anno }]);
    }
    let mut errori = Vec::new();
    let mut righe = Vec::new();
    let (mut imposta, mut acconto) = (0u64, 0u64);
    for (i, item) in immobili.iter().enumerate() {
        let indice = i + 1;
        let mesi = match (&item.mesi, &item.possesso) {
            (Some(_), Some(_)) => {
                errori.push(ErroreCalcolo::Possesso {
                    indice,
                    detail: "give the months held or the period held, not both".into(),
                });
                continue;
            }
            (Some(m), None) if *m > 12 => {
                errori.push(ErroreCalcolo::Possesso {
                    indice,
                    detail: format!("{m} months: a year has 12"),
                });
                continue;
            }
            (Some(m), None) => *m,
            (None, Some(p)) => {
                mesi_posseduti(i32::from(anno), p.dal.date(), p.al.as_ref().map(Data::date))
            }
            (None, None) => 12,
        };
        let residenti = item.residenti.unwrap_or(1);
        if residenti == 0 {
            errori.push(ErroreCalcolo::Residenti { indice });
            continue;
        }
        let r = figure(indice, &item.immobile, mesi, residenti, correnti).and_then(|(f, m)| {
            figure(indice, &item.immobile, mesi, residenti, precedenti).map(|(p, _)| (f, p, m))
        });
        match r {
            Ok((f, p, moltiplicatore)) => {
                let parte_acconto = p.imposta.div_ceil(2).min(f.imposta);
                imposta = imposta.saturating_add(f.imposta);
                acconto = acconto.saturating_add(parte_acconto);
                righe.push(ImmobileCalcolato {
                    immobile: item.immobile.clone(),
                    mesi,
                    moltiplicatore,
                    base: Importo::centesimi(f.base),
                    aliquota: f.aliquota,
                    detrazione: Importo::centesimi(f.detrazione),
                    imposta: Importo::centesimi(f.imposta),
                    acconto: Importo::centesimi(parte_acconto),
                });
            }
            Err(e) => errori.push(e),
        }
    }
    if !errori.is_empty() {
        return Err(errori);
    }
    let annua = all_euro(imposta);
    let sotto_minimo = annua < MINIMO;
    let (annua, prima) = if sotto_minimo {
        (0, 0)
    } else {
        (annua, all_euro(acconto).min(annua))
    };
    let Some((scadenza_acconto, scadenza_saldo)) = scadenze(anno) else {
        return Err(vec![ErroreCalcolo::Anno { anno }]);
    };
    Ok(Calcolo {
        immobili: righe,
        imposta: Importo::centesimi(annua),
        acconto: Importo::centesimi(prima),
        saldo: Importo::centesimi(annua - prima),
        scadenza_acconto,
        scadenza_saldo,
        sotto_minimo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use snodo_schemas::formats::CodiceBelfiore;
    use snodo_schemas::services::dati::{Periodo, RiferimentoCatastale};
    use snodo_schemas::services::tributi_imu::{Categoria, Riduzione};

    fn bp(v: u16) -> PuntiBase {
        PuntiBase::new(v).unwrap()
    }

    fn rates(ordinaria: u16, principale: u16) -> Aliquote {
        Aliquote {
            ordinaria: bp(ordinaria),
            abitazione_principale: bp(principale),
            terreni: bp(76),
            detrazione: Importo::centesimi(20_000),
        }
    }

    fn building(cat: &str, rendita_euro: u64, quota: u16, principale: bool) -> Immobile {
        Immobile {
            catasto: RiferimentoCatastale {
                comune: CodiceBelfiore::parse("L219").unwrap(),
                catasto: Catasto::Fabbricati,
                sezione: None,
                foglio: "12".into(),
                particella: "345".into(),
                subalterno: Some("6".into()),
            },
            categoria: Some(Categoria(cat.into())),
            rendita: Importo::euro(rendita_euro).unwrap(),
            quota: bp(quota),
            abitazione_principale: principale,
            riduzione: None,
        }
    }

    fn item(immobile: Immobile) -> ImmobileCalcolo {
        ImmobileCalcolo {
            immobile,
            mesi: None,
            possesso: None,
            residenti: None,
        }
    }

    fn one(i: ImmobileCalcolo, r: &Aliquote) -> Calcolo {
        calcola(2026, &[i], r, r).unwrap()
    }

    fn day(s: &str) -> Date {
        Data::parse(s).unwrap().date()
    }

    #[test]
    fn domain_worked_example_is_808() {
        // A/1 main residence, rendita €1,000, rate 0.6%, whole year, sole owner:
        // 1000 × 1.05 × 160 = 168,000; × 0.6% = 1,008; − 200 = 808.
        let c = one(item(building("A/1", 1000, 10_000, true)), &rates(86, 60));
        assert_eq!(c.imposta, Importo::euro(808).unwrap());
        assert_eq!(c.immobili[0].base, Importo::euro(168_000).unwrap());
        assert_eq!(c.immobili[0].detrazione, Importo::euro(200).unwrap());
        // Same rates the year before: half in June, the rest in December.
        assert_eq!(c.acconto, Importo::euro(404).unwrap());
        assert_eq!(c.saldo, Importo::euro(404).unwrap());
        assert!(!c.sotto_minimo);
    }

    #[test]
    fn each_category_group_has_its_multiplier() {
        // Rendita €500 at 1.06%, whole year, sole owner, not a main residence:
        // base = 500 × 1.05 × m = 525 m; tax = 525 m × 1.06%.
        // A/2 (160): 84,000 × 1.06% = 890.40 → €890
        // A/10 (80): 42,000 × 1.06% = 445.20 → €445
        // B/1 (140), C/3 (140): 73,500 × 1.06% = 779.10 → €779
        // C/1 (55): 28,875 × 1.06% = 306.075 → 306.08 → €306
        // C/6 (160): as A/2, €890
        // D/1 (65): 34,125 × 1.06% = 361.725 → 361.73 → €362
        // D/5 (80): as A/10, €445
        let r = rates(106, 60);
        for (cat, euro) in [
            ("A/2", 890),
            ("A/10", 445),
            ("B/1", 779),
            ("C/3", 779),
            ("C/1", 306),
            ("C/6", 890),
            ("D/1", 362),
            ("D/5", 445),
        ] {
            let c = one(item(building(cat, 500, 10_000, false)), &r);
            assert_eq!(c.imposta, Importo::euro(euro).unwrap(), "{cat}");
        }
    }

    #[test]
    fn land_is_income_times_1_25_times_135() {
        // Agricultural income €400: 400 × 1.25 × 135 = 67,500; × 0.76% = €513.
        let mut land = building("A/1", 400, 10_000, false);
        land.catasto.catasto = Catasto::Terreni;
        land.categoria = None;
        let c = one(item(land), &rates(86, 60));
        assert_eq!(c.immobili[0].moltiplicatore, 135);
        assert_eq!(c.imposta, Importo::euro(513).unwrap());
    }

    #[test]
    fn historic_unfit_and_free_loans_halve_the_base() {
        // A/2, rendita €1,000, 0.86%: 168,000 × 0.86% = 1,444.80; halved 722.40 → €722.
        for r in [
            Riduzione::Storico,
            Riduzione::Inagibile,
            Riduzione::ComodatoParenti,
        ] {
            let mut b = building("A/2", 1000, 10_000, false);
            b.riduzione = Some(r);
            let c = one(item(b), &rates(86, 60));
            assert_eq!(c.immobili[0].base, Importo::euro(84_000).unwrap());
            assert_eq!(c.imposta, Importo::euro(722).unwrap(), "{r:?}");
        }
    }

    #[test]
    fn ordinary_main_residences_are_exempt() {
        let c = one(item(building("A/3", 900, 10_000, true)), &rates(86, 60));
        assert_eq!(c.imposta, Importo::ZERO);
        assert!(c.sotto_minimo);
    }

    #[test]
    fn months_count_when_held_more_than_half_and_the_buyer_takes_the_transfer_day() {
        // Bought on 16 April (30 days: 15 held, equal, the buyer takes it): April–December = 9.
        assert_eq!(mesi_posseduti(2026, day("2026-04-16"), None), 9);
        // The seller held 1–15 April: 15 of 30, equal: not for the seller. January–March = 3.
        assert_eq!(
            mesi_posseduti(2026, day("2025-01-01"), Some(day("2026-04-15"))),
            3
        );
        // Bought on 17 April: 14 of 30 days, not more than half: May–December = 8.
        assert_eq!(mesi_posseduti(2026, day("2026-04-17"), None), 8);
        // Held 1–16 February 2026 (28 days): 16 > 14: February counts.
        assert_eq!(
            mesi_posseduti(2026, day("2026-02-01"), Some(day("2026-02-16"))),
            1
        );
        // Outside the year: nothing.
        assert_eq!(
            mesi_posseduti(2026, day("2020-01-01"), Some(day("2025-12-31"))),
            0
        );
        assert_eq!(mesi_posseduti(2026, day("2020-01-01"), None), 12);
    }

    #[test]
    fn part_year_ownership_by_the_period() {
        // A/2 rendita €1,000 at 0.86%, bought 16 April: 9 months.
        // 168,000 × 0.86% = 1,444.80 × 9/12 = 1,083.60 → €1,084.
        let mut i = item(building("A/2", 1000, 10_000, false));
        i.possesso = Some(Periodo {
            dal: Data::parse("2026-04-16").unwrap(),
            al: None,
        });
        let c = one(i, &rates(86, 60));
        assert_eq!(c.immobili[0].mesi, 9);
        assert_eq!(c.imposta, Importo::euro(1084).unwrap());
    }

    #[test]
    fn co_owners_share_the_deduction() {
        // A/8 rendita €2,000, 0.6%, half share, two resident co-owners, whole year:
        // 2000 × 1.05 × 160 = 336,000 × 0.6% = 2,016 × 50% = 1,008; deduction 200 / 2 = 100;
        // 908 each.
        let mut i = item(building("A/8", 2000, 5_000, true));
        i.residenti = Some(2);
        let c = one(i, &rates(86, 60));
        assert_eq!(c.immobili[0].detrazione, Importo::euro(100).unwrap());
        assert_eq!(c.imposta, Importo::euro(908).unwrap());
        // Six months only: 504 − 50 = 454.
        let mut i = item(building("A/8", 2000, 5_000, true));
        i.residenti = Some(2);
        i.mesi = Some(6);
        assert_eq!(one(i, &rates(86, 60)).imposta, Importo::euro(454).unwrap());
    }

    #[test]
    fn below_the_minimum_nothing_is_due() {
        // C/2 rendita €60, 0.86%: 60 × 1.05 × 160 = 10,080 × 0.86% = 86.688 → €86.69: due.
        // Rendita €8: 1,344 × 0.86% = 11.5584 → €12: due, just.
        // Rendita €7: 1,176 × 0.86% = 10.1136 → €10: below €12, nothing.
        let r = rates(86, 60);
        assert_eq!(
            one(item(building("C/2", 8, 10_000, false)), &r).imposta,
            Importo::euro(12).unwrap()
        );
        let c = one(item(building("C/2", 7, 10_000, false)), &r);
        assert!(c.sotto_minimo);
        assert_eq!(
            (c.imposta, c.acconto, c.saldo),
            (Importo::ZERO, Importo::ZERO, Importo::ZERO)
        );
    }

    #[test]
    fn the_first_instalment_uses_last_years_rates() {
        // A/2 rendita €1,000: last year 0.76% → 1,276.80, half 638.40 → €638 in June;
        // this year 1.06% → 1,780.80 → €1,781 for the year; December 1,781 − 638 = €1,143.
        let i = item(building("A/2", 1000, 10_000, false));
        let c = calcola(2026, &[i], &rates(106, 60), &rates(76, 60)).unwrap();
        assert_eq!(c.imposta, Importo::euro(1781).unwrap());
        assert_eq!(c.acconto, Importo::euro(638).unwrap());
        assert_eq!(c.saldo, Importo::euro(1143).unwrap());
        assert_eq!(c.scadenza_acconto.as_str(), "2026-06-16");
        assert_eq!(c.scadenza_saldo.as_str(), "2026-12-16");
    }

    #[test]
    fn invalid_properties_are_refused_naming_them() {
        let r = rates(86, 60);
        let errs = calcola(
            2026,
            &[
                item(building("E/1", 100, 10_000, false)),
                item(building("Z/9", 100, 10_000, false)),
                item(building("A/2", 100, 0, false)),
                item(building("D/1", 100, 10_000, true)),
            ],
            &r,
            &r,
        )
        .unwrap_err();
        let codes: Vec<String> = errs.iter().map(|e| e.motivo().codice).collect();
        assert_eq!(
            codes,
            [
                "categoria-sconosciuta",
                "categoria-sconosciuta",
                "quota-nulla",
                "non-abitazione"
            ]
        );
        assert!(errs[0].to_string().contains("property 1"), "{}", errs[0]);
        assert!(errs[1].to_string().contains("`Z/9`"), "{}", errs[1]);
        let mut both = item(building("A/2", 100, 10_000, false));
        both.mesi = Some(3);
        both.possesso = Some(Periodo {
            dal: Data::parse("2026-01-01").unwrap(),
            al: None,
        });
        let e = calcola(2026, &[both], &r, &r).unwrap_err();
        assert!(e[0].to_string().contains("not both"), "{}", e[0]);
    }

    fn categories() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "A/1", "A/2", "A/8", "A/9", "A/10", "B/3", "C/1", "C/2", "C/3", "C/6", "D/1", "D/5",
        ])
        .prop_map(str::to_owned)
    }

    proptest! {
        #[test]
        fn invariants(
            cat in categories(),
            rendita in 0u64..5_000_000,
            quota in 1u16..=10_000,
            mesi in 0u8..=12,
            principale in any::<bool>(),
            residenti in 1u8..5,
            ordinaria in 0u16..=106,
            precedente in 0u16..=106,
            ridotta in 0u16..=60,
        ) {
            let principale = principale && classe(&cat).is_some_and(|k| k.abitativa);
            let mut b = building(&cat, 0, quota, principale);
            b.rendita = Importo::centesimi(rendita);
            let mut i = item(b.clone());
            i.mesi = Some(mesi);
            i.residenti = Some(residenti);
            let cur = rates(ordinaria, ridotta);
            let prev = rates(precedente, ridotta);
            let c = calcola(2026, &[i.clone()], &cur, &prev).unwrap();
            // The instalments add up to the year's tax, which is whole euro.
            prop_assert_eq!(c.acconto.in_centesimi() + c.saldo.in_centesimi(), c.imposta.in_centesimi());
            prop_assert_eq!(c.imposta.in_centesimi() % 100, 0);
            // Nothing below the minimum is ever asked.
            prop_assert!(c.imposta.in_centesimi() == 0 || c.imposta.in_centesimi() >= MINIMO);
            // The deduction never exceeds €200 for the months held, shared among residents.
            let row = &c.immobili[0];
            prop_assert!(row.detrazione.in_centesimi() * 12 * u64::from(residenti) <= 20_000 * u64::from(mesi) + 12 * u64::from(residenti));
            // The first instalment never exceeds the year's tax.
            prop_assert!(c.acconto <= c.imposta);
            // A sole owner owes at least what a co-owner does.
            let mut sole = i.clone();
            sole.immobile.quota = PuntiBase::TUTTO;
            let s = calcola(2026, &[sole], &cur, &prev).unwrap();
            prop_assert!(s.immobili[0].imposta >= row.imposta);
            // More months never cost less.
            if mesi < 12 {
                let mut more = i.clone();
                more.mesi = Some(mesi + 1);
                let m = calcola(2026, &[more], &cur, &prev).unwrap();
                prop_assert!(m.immobili[0].imposta >= row.imposta);
            }
        }
    }
}
