//! Working days of Italian public offices: Monday to Friday, except the national holidays —
//! 1 and 6 January, Easter Monday, 25 April, 1 May, 2 June, 15 August, 4 October (a national
//! holiday again from 2026), 1 November, 8, 25 and 26 December.
//!
//! Terms such as "registers within 2 working days" are computed with [`add_working_days`].

use time::{Date, Duration, Month, Weekday};

/// The first year in which 4 October (Saint Francis) is a national holiday again.
pub const SAINT_FRANCIS_FROM: i32 = 2026;

/// A date computation would leave the calendar `time` can represent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{n} working days after {from} is beyond the calendar's last date")]
pub struct OutOfCalendar {
    /// The starting date.
    pub from: Date,
    /// The working days asked for.
    pub n: u32,
}

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous Gregorian algorithm of
/// Meeus/Jones/Butcher).
#[must_use]
pub fn easter(year: i32) -> Date {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c.div_euclid(4);
    let k = c.rem_euclid(4);
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l).div_euclid(451);
    let month = (h + l - 7 * m + 114).div_euclid(31);
    let day = (h + l - 7 * m + 114).rem_euclid(31) + 1;
    // month is 3 or 4 and day 1..=31 by construction; March 22 .. April 25.
    let month = if month == 3 {
        Month::March
    } else {
        Month::April
    };
    let day = u8::try_from(day).unwrap_or(1);
    Date::from_calendar_date(year, month, day).unwrap_or(Date::MIN)
}

/// Whether `date` is an Italian national holiday (whatever its weekday).
#[must_use]
pub fn is_national_holiday(date: Date) -> bool {
    use Month::{April, August, December, January, June, May, November, October};
    let fixed = matches!(
        (date.month(), date.day()),
        (January, 1)
            | (January, 6)
            | (April, 25)
            | (May, 1)
            | (June, 2)
            | (August, 15)
            | (November, 1)
            | (December, 8)
            | (December, 25)
            | (December, 26)
    );
    let saint_francis =
        date.month() == October && date.day() == 4 && date.year() >= SAINT_FRANCIS_FROM;
    let easter_monday = date.month() >= Month::March
        && date.month() <= Month::April
        && easter(date.year()).next_day() == Some(date);
    fixed || saint_francis || easter_monday
}

/// Whether public offices work on `date`: not Saturday, not Sunday, not a national holiday.
#[must_use]
pub fn is_working_day(date: Date) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) && !is_national_holiday(date)
}

/// The `n`-th working day after `date` (`date` itself does not count; `n = 0` gives `date`).
///
/// "Within 2 working days" of a declaration made on Thursday 23 December 2027 ends on Monday
/// 27 December: the 24th is the first working day, the 25th and 26th are holidays (and a
/// weekend).
///
/// # Errors
/// [`OutOfCalendar`] when the answer lies past the last date `time` represents.
pub fn add_working_days(date: Date, n: u32) -> Result<Date, OutOfCalendar> {
    let mut day = date;
    let mut left = n;
    while left > 0 {
        day = day.next_day().ok_or(OutOfCalendar { from: date, n })?;
        if is_working_day(day) {
            left -= 1;
        }
    }
    Ok(day)
}

/// How many working days lie in `(from, to]` (zero when `to` is not after `from`).
#[must_use]
pub fn working_days_between(from: Date, to: Date) -> u32 {
    let mut count = 0u32;
    let mut day = from;
    while day < to {
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
        if is_working_day(day) {
            count = count.saturating_add(1);
        }
    }
    count
}

/// `date` plus `days` calendar days, for terms counted in calendar days (45 days for the
/// police check), or `None` past the calendar's end.
#[must_use]
pub fn add_calendar_days(date: Date, days: i64) -> Option<Date> {
    date.checked_add(Duration::days(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    #[test]
    fn easter_sundays_known_from_the_calendar() {
        for (year, expected) in [
            (2019, date!(2019 - 04 - 21)),
            (2024, date!(2024 - 03 - 31)),
            (2025, date!(2025 - 04 - 20)),
            (2026, date!(2026 - 04 - 05)),
            (2027, date!(2027 - 03 - 28)),
            (2028, date!(2028 - 04 - 16)),
            (2038, date!(2038 - 04 - 25)),
            (2285, date!(2285 - 03 - 22)),
            (1943, date!(1943 - 04 - 25)),
        ] {
            assert_eq!(easter(year), expected, "Easter {year}");
        }
    }

    #[test]
    fn holidays_of_2027() {
        let holidays: Vec<Date> = (0..365)
            .filter_map(|d| date!(2027 - 01 - 01).checked_add(Duration::days(d)))
            .filter(|d| is_national_holiday(*d))
            .collect();
        assert_eq!(
            holidays,
            vec![
                date!(2027 - 01 - 01),
                date!(2027 - 01 - 06),
                date!(2027 - 03 - 29), // Easter Monday
                date!(2027 - 04 - 25),
                date!(2027 - 05 - 01),
                date!(2027 - 06 - 02),
                date!(2027 - 08 - 15),
                date!(2027 - 10 - 04),
                date!(2027 - 11 - 01),
                date!(2027 - 12 - 08),
                date!(2027 - 12 - 25),
                date!(2027 - 12 - 26),
            ]
        );
    }

    #[test]
    fn saint_francis_is_a_holiday_from_2026_only() {
        assert!(is_working_day(date!(2024 - 10 - 04)), "a Friday in 2024");
        assert!(!is_working_day(date!(2027 - 10 - 04)), "a Monday in 2027");
        assert!(is_national_holiday(date!(2026 - 10 - 04)));
        assert!(!is_national_holiday(date!(2025 - 10 - 04)));
    }

    #[test]
    fn worked_examples() {
        // Thursday before Easter 2027: Friday, then Easter Monday is skipped.
        assert_eq!(
            add_working_days(date!(2027 - 03 - 25), 2),
            Ok(date!(2027 - 03 - 30))
        );
        // Thursday 23 December 2027: the 24th, then the 25th-26th (holidays, a weekend too).
        assert_eq!(
            add_working_days(date!(2027 - 12 - 23), 2),
            Ok(date!(2027 - 12 - 27))
        );
        assert_eq!(
            add_working_days(date!(2027 - 12 - 24), 2),
            Ok(date!(2027 - 12 - 28))
        );
        // Friday 1 October 2027: Monday the 4th is Saint Francis.
        assert_eq!(
            add_working_days(date!(2027 - 10 - 01), 1),
            Ok(date!(2027 - 10 - 05))
        );
        // In 2024 the 4th of October was an ordinary Friday.
        assert_eq!(
            add_working_days(date!(2024 - 10 - 03), 1),
            Ok(date!(2024 - 10 - 04))
        );
        // A declaration on a Saturday: Monday and Tuesday.
        assert_eq!(
            add_working_days(date!(2026 - 11 - 28), 2),
            Ok(date!(2026 - 12 - 01))
        );
        // Zero days is the day itself, holiday or not.
        assert_eq!(
            add_working_days(date!(2026 - 12 - 25), 0),
            Ok(date!(2026 - 12 - 25))
        );
        assert_eq!(
            working_days_between(date!(2027 - 12 - 23), date!(2027 - 12 - 31)),
            6
        );
    }

    #[test]
    fn the_end_of_the_calendar_is_an_error_not_a_panic() {
        let last = Date::MAX;
        assert_eq!(
            add_working_days(last, 1),
            Err(OutOfCalendar { from: last, n: 1 })
        );
        assert_eq!(add_calendar_days(last, 1), None);
    }

    fn any_date() -> impl Strategy<Value = Date> {
        (1900i32..2400, 1u16..=365).prop_map(|(y, d)| {
            Date::from_ordinal_date(y, d)
                .unwrap_or(Date::from_ordinal_date(y, 1).unwrap_or(Date::MIN))
        })
    }

    proptest! {
        #[test]
        fn the_result_is_a_working_day_exactly_n_working_days_later(start in any_date(), n in 1u32..120) {
            let end = add_working_days(start, n).unwrap();
            prop_assert!(end > start);
            prop_assert!(is_working_day(end));
            prop_assert_eq!(working_days_between(start, end), n);
            // Nothing earlier would do: the day before has one working day fewer.
            let before = end.previous_day().unwrap();
            prop_assert_eq!(working_days_between(start, before), n - 1);
        }

        #[test]
        fn adding_in_two_steps_is_adding_once(start in any_date(), a in 0u32..60, b in 0u32..60) {
            let once = add_working_days(start, a + b).unwrap();
            let mid = add_working_days(start, a).unwrap();
            let twice = add_working_days(mid, b).unwrap();
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn a_week_never_holds_more_than_five_working_days(start in any_date()) {
            let end = start.checked_add(Duration::days(7)).unwrap();
            prop_assert!(working_days_between(start, end) <= 5);
        }

        #[test]
        fn easter_is_a_sunday_between_march_22_and_april_25(year in 1583i32..4000) {
            let e = easter(year);
            prop_assert_eq!(e.weekday(), Weekday::Sunday);
            prop_assert!(e >= Date::from_calendar_date(year, Month::March, 22).unwrap());
            prop_assert!(e <= Date::from_calendar_date(year, Month::April, 25).unwrap());
        }
    }
}
