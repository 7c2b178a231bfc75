//! When a ZTL permit is valid: residents' permits run to 31 December of the second year (every
//! two years), the others to the end of the period asked for, within the comune's longest
//! span; a renewal continues the permit from the day after its old expiry.

use snodo_schemas::services::dati::{Motivo, Periodo};
use snodo_schemas::services::mobilita_ztl::Categoria;
use time::{Date, Month};

use crate::back_office::motivo;

/// A resident's permit covers this many calendar years, counting the year it starts.
pub const ANNI_RESIDENTI: i32 = 2;

/// The longest span of a permit of another category when the comune sets none: two years.
pub const GIORNI_MASSIMI: u32 = 731;

/// Why a permit cannot be given the period asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreValidita {
    /// A permit other than a resident's needs the last day of its period.
    #[error("the period has no last day; a {0:?} permit needs one")]
    PeriodoAperto(Categoria),
    /// The period ends before the permit could start.
    #[error("the period ends on {al}, before the permit could start on {dal}")]
    PeriodoConcluso {
        /// When it would start.
        dal: Date,
        /// The last day asked for.
        al: Date,
    },
    /// The period is longer than the comune allows for the category.
    #[error("the period from {dal} to {al} is longer than {giorni} days")]
    PeriodoTroppoLungo {
        /// When it would start.
        dal: Date,
        /// The last day asked for.
        al: Date,
        /// The longest span allowed.
        giorni: u32,
    },
    /// The calendar ends before the permit would.
    #[error("a permit starting on {0} would end past the calendar")]
    Calendario(Date),
}

impl ErroreValidita {
    /// The reason, as a rejection gives it.
    #[must_use]
    pub fn motivo(&self) -> Motivo {
        let codice = match self {
            ErroreValidita::PeriodoAperto(_) => "periodo-aperto",
            ErroreValidita::PeriodoConcluso { .. } => "periodo-concluso",
            ErroreValidita::PeriodoTroppoLungo { .. } => "periodo-troppo-lungo",
            ErroreValidita::Calendario(_) => "periodo-non-valido",
        };
        motivo(codice, self.to_string())
    }
}

/// 31 December of the second year of a resident's permit starting on `dal`.
///
/// # Errors
/// [`ErroreValidita::Calendario`] past the year 9999.
pub fn fine_biennio(dal: Date) -> Result<Date, ErroreValidita> {
    dal.year()
        .checked_add(ANNI_RESIDENTI - 1)
        .and_then(|y| Date::from_calendar_date(y, Month::December, 31).ok())
        .filter(|d| d.year() <= 9999)
        .ok_or(ErroreValidita::Calendario(dal))
}

/// The validity, first and last day, of a permit of `categoria` asked for `periodo` and
/// issued on `oggi`: a new permit starts on the first day asked for, or today if that is past;
/// a renewal of a permit valid until `precedente` starts the day after. Residents' permits run
/// to [`fine_biennio`]; the others to the last day asked for, at most `giorni_massimi` days.
///
/// # Errors
/// [`ErroreValidita`] when the period is open, over, too long or past the calendar.
pub fn validita(
    categoria: Categoria,
    periodo: &Periodo,
    oggi: Date,
    precedente: Option<Date>,
    giorni_massimi: u32,
) -> Result<(Date, Date), ErroreValidita> {
    let dal = match precedente {
        Some(al) => al.next_day().ok_or(ErroreValidita::Calendario(al))?,
        None => periodo.dal.date().max(oggi),
    };
    if categoria == Categoria::Residente {
        return Ok((dal, fine_biennio(dal)?));
    }
    let al = periodo
        .al
        .as_ref()
        .map(|a| a.date())
        .ok_or(ErroreValidita::PeriodoAperto(categoria))?;
    if al < dal {
        return Err(ErroreValidita::PeriodoConcluso { dal, al });
    }
    // Both days count: a span of one day is a permit for that day.
    if (al - dal).whole_days() + 1 > i64::from(giorni_massimi) {
        return Err(ErroreValidita::PeriodoTroppoLungo {
            dal,
            al,
            giorni: giorni_massimi,
        });
    }
    Ok((dal, al))
}

#[cfg(test)]
mod tests {
    use super::*;
    use snodo_schemas::formats::Data;
    use time::macros::date;

    fn periodo(dal: &str, al: Option<&str>) -> Periodo {
        Periodo {
            dal: Data::parse(dal).unwrap(),
            al: al.map(|a| Data::parse(a).unwrap()),
        }
    }

    #[test]
    fn residents_run_to_31_december_of_the_second_year() {
        let p = periodo("2026-03-10", None);
        assert_eq!(
            validita(Categoria::Residente, &p, date!(2026 - 03 - 12), None, 30),
            Ok((date!(2026 - 03 - 12), date!(2027 - 12 - 31)))
        );
        // Issued on the last day of a year: the second year is the next.
        assert_eq!(
            fine_biennio(date!(2026 - 12 - 31)),
            Ok(date!(2027 - 12 - 31))
        );
        // A last day asked for does not change a resident's expiry.
        let p = periodo("2026-05-01", Some("2026-06-30"));
        assert_eq!(
            validita(Categoria::Residente, &p, date!(2026 - 03 - 12), None, 30),
            Ok((date!(2026 - 05 - 01), date!(2027 - 12 - 31)))
        );
    }

    #[test]
    fn a_renewal_continues_from_the_day_after_the_old_expiry() {
        let p = periodo("2027-11-20", None);
        assert_eq!(
            validita(
                Categoria::Residente,
                &p,
                date!(2027 - 11 - 20),
                Some(date!(2027 - 12 - 31)),
                GIORNI_MASSIMI
            ),
            Ok((date!(2028 - 01 - 01), date!(2029 - 12 - 31)))
        );
        let p = periodo("2026-06-01", Some("2026-12-31"));
        assert_eq!(
            validita(
                Categoria::Garage,
                &p,
                date!(2026 - 05 - 20),
                Some(date!(2026 - 05 - 31)),
                GIORNI_MASSIMI
            ),
            Ok((date!(2026 - 06 - 01), date!(2026 - 12 - 31)))
        );
    }

    #[test]
    fn other_categories_run_to_the_end_of_their_period_within_the_longest_span() {
        let p = periodo("2026-04-01", Some("2026-04-30"));
        assert_eq!(
            validita(Categoria::Temporaneo, &p, date!(2026 - 03 - 12), None, 30),
            Ok((date!(2026 - 04 - 01), date!(2026 - 04 - 30)))
        );
        // Started already: from today.
        assert_eq!(
            validita(Categoria::Impresa, &p, date!(2026 - 04 - 10), None, 30),
            Ok((date!(2026 - 04 - 10), date!(2026 - 04 - 30)))
        );
        let long = periodo("2026-04-01", Some("2026-05-01"));
        assert!(matches!(
            validita(
                Categoria::Temporaneo,
                &long,
                date!(2026 - 03 - 12),
                None,
                30
            ),
            Err(ErroreValidita::PeriodoTroppoLungo { giorni: 30, .. })
        ));
        let open = periodo("2026-04-01", None);
        assert_eq!(
            validita(Categoria::Garage, &open, date!(2026 - 03 - 12), None, 30),
            Err(ErroreValidita::PeriodoAperto(Categoria::Garage))
        );
        assert!(matches!(
            validita(Categoria::Disabile, &p, date!(2026 - 05 - 02), None, 30),
            Err(ErroreValidita::PeriodoConcluso { .. })
        ));
        // A renewal that does not go past the old expiry is over before it starts.
        assert!(matches!(
            validita(
                Categoria::Garage,
                &p,
                date!(2026 - 04 - 10),
                Some(date!(2026 - 04 - 30)),
                GIORNI_MASSIMI
            ),
            Err(ErroreValidita::PeriodoConcluso { .. })
        ));
    }

    #[test]
    fn the_calendar_ends_in_9999() {
        assert_eq!(
            fine_biennio(date!(9999 - 03 - 01)),
            Err(ErroreValidita::Calendario(date!(9999 - 03 - 01)))
        );
        let p = periodo("9999-12-31", None);
        assert!(
            validita(
                Categoria::Residente,
                &p,
                date!(9999 - 12 - 31),
                Some(date!(9999 - 12 - 31)),
                GIORNI_MASSIMI
            )
            .is_err()
        );
    }
}
