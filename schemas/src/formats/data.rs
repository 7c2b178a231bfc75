//! Dates (`YYYY-MM-DD`) and instants (`YYYY-MM-DDTHH:MM:SSZ`, UTC, whole seconds).

use time::{Date as CalendarDate, Month, PrimitiveDateTime, Time};

use super::{FormatError, string_format};

/// A calendar date in ISO form, `YYYY-MM-DD` (a real day: no 30 February).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Data {
    date: CalendarDate,
    text: [u8; 10],
}

impl Data {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not `YYYY-MM-DD` or not a day of the calendar.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let err = |r: &str| FormatError::new("date", s, r);
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return Err(err("a date is written YYYY-MM-DD"));
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u16>().unwrap_or(0);
        let month = u8::try_from(num(5..7))
            .ok()
            .and_then(|m| Month::try_from(m).ok())
            .ok_or_else(|| err("the month is 01 to 12"))?;
        let day = u8::try_from(num(8..10)).unwrap_or(0);
        let date = CalendarDate::from_calendar_date(i32::from(num(0..4)), month, day)
            .map_err(|_| err("no such day in the calendar"))?;
        Data::from_date(date).ok_or_else(|| err("the year is 0000 to 9999"))
    }

    /// The date `date`; `None` outside the years 0 to 9999, which `YYYY` cannot write.
    #[must_use]
    pub fn from_date(date: CalendarDate) -> Option<Self> {
        let y = date.year();
        if !(0..=9999).contains(&y) {
            return None;
        }
        let text = format!("{y:04}-{:02}-{:02}", u8::from(date.month()), date.day());
        let mut buf = [b'0'; 10];
        buf.copy_from_slice(text.as_bytes().get(..10)?);
        Some(Data { date, text: buf })
    }

    /// The date.
    #[must_use]
    pub fn date(&self) -> CalendarDate {
        self.date
    }

    /// `YYYY-MM-DD`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or("0000-00-00")
    }
}

/// An instant in UTC to the second, `YYYY-MM-DDTHH:MM:SSZ`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Istante {
    at: PrimitiveDateTime,
    text: String,
}

impl Istante {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not `YYYY-MM-DDTHH:MM:SSZ` or not a real instant.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let err = |r: &str| FormatError::new("instant", s, r);
        let b = s.as_bytes();
        if b.len() != 20 || b[10] != b'T' || b[19] != b'Z' || b[13] != b':' || b[16] != b':' {
            return Err(err("an instant is written YYYY-MM-DDTHH:MM:SSZ (UTC)"));
        }
        let date = Data::parse(&s[..10]).map_err(|e| err(&e.reason))?;
        let num = |r: std::ops::Range<usize>| {
            s.get(r)
                .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse::<u8>().ok())
        };
        let time = match (num(11..13), num(14..16), num(17..19)) {
            (Some(h), Some(m), Some(sec)) => Time::from_hms(h, m, sec).ok(),
            _ => None,
        }
        .ok_or_else(|| err("the time is HH:MM:SS, 00:00:00 to 23:59:59"))?;
        Istante::from_datetime(PrimitiveDateTime::new(date.date(), time))
            .ok_or_else(|| err("the year is 0000 to 9999"))
    }

    /// The instant `at` (UTC), cut to the second; `None` outside the years 0 to 9999.
    #[must_use]
    pub fn from_datetime(at: PrimitiveDateTime) -> Option<Self> {
        let at = at.replace_nanosecond(0).unwrap_or(at);
        let text = format!(
            "{}T{:02}:{:02}:{:02}Z",
            Data::from_date(at.date())?.as_str(),
            at.hour(),
            at.minute(),
            at.second()
        );
        Some(Istante { at, text })
    }

    /// The instant (UTC).
    #[must_use]
    pub fn datetime(&self) -> PrimitiveDateTime {
        self.at
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

string_format!(
    Data,
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "A calendar date, YYYY-MM-DD.",
    "2026-03-16"
);
string_format!(
    Istante,
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
    "An instant in UTC to the second, YYYY-MM-DDTHH:MM:SSZ.",
    "2026-03-16T09:30:00Z"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_days_only() {
        assert_eq!(Data::parse("2024-02-29").unwrap().as_str(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
        ] {
            assert!(Data::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Istante::parse("2026-03-16T09:30:00Z").unwrap().as_str(),
            "2026-03-16T09:30:00Z"
        );
        for bad in [
            "2026-03-16T24:00:00Z",
            "2026-03-16T09:30:00",
            "2026-03-16 09:30:00Z",
        ] {
            assert!(Istante::parse(bad).is_err(), "{bad}");
        }
    }
}
