//! The pagoPA notice number (NAV, 18 digits) and the payment's unique identifier (IUV, the NAV
//! without its leading aux digit), current form: aux digit `3`, segregation code, base, check.

use super::{FormatError, string_format};

/// The largest IUV base: 13 digits.
const MAX_BASE: u64 = 9_999_999_999_999;

/// The check digits of `3‖segregation‖base`: that number mod 93, as 2 digits.
fn check(segregation: u8, base: u64) -> u64 {
    (3 * 10u64.pow(15) + u64::from(segregation) * 10u64.pow(13) + base) % 93
}

/// A notice number: `3`, segregation code (2 digits), IUV base (13), check digits (2) =
/// (`3`‖segregation‖base) mod 93. Example: `301000000000000144`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nav(String);

/// A payment's unique identifier in its current form: the NAV without its aux digit (17 digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iuv(String);

impl Nav {
    /// The NAV of `segregation` (0 to 99) and `base` (0 to 10^13 - 1), with its check digits;
    /// `None` when either is out of range.
    #[must_use]
    pub fn new(segregation: u8, base: u64) -> Option<Self> {
        if segregation > 99 || base > MAX_BASE {
            return None;
        }
        Some(Nav(format!(
            "3{segregation:02}{base:013}{:02}",
            check(segregation, base)
        )))
    }

    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not 18 digits, its aux digit is not 3, or its check digits
    /// are wrong.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let err = |r: String| FormatError::new("NAV", s, r);
        if s.len() != 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("a notice number is 18 digits".into()));
        }
        if !s.starts_with('3') {
            return Err(err(format!(
                "the aux digit is 3 (the current form), not {}",
                &s[..1]
            )));
        }
        let (segregation, base, given) = split(&s[1..]);
        let expected = check(segregation, base);
        if given != expected {
            return Err(err(format!(
                "the check digits should be {expected:02}, not {given:02}"
            )));
        }
        Ok(Nav(s.to_owned()))
    }

    /// The notice number.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The IUV: the NAV without its aux digit.
    #[must_use]
    pub fn iuv(&self) -> Iuv {
        Iuv(self.0[1..].to_owned())
    }

    /// The segregation code (the creditor's, 0 to 99).
    #[must_use]
    pub fn segregazione(&self) -> u8 {
        split(&self.0[1..]).0
    }
}

impl Iuv {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not 17 digits with correct check digits.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if s.len() != 17 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FormatError::new("IUV", s, "an IUV is 17 digits"));
        }
        Nav::parse(&format!("3{s}"))
            .map(|n| n.iuv())
            .map_err(|e| FormatError::new("IUV", s, e.reason))
    }

    /// The IUV.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The notice number: `3` and the IUV.
    #[must_use]
    pub fn nav(&self) -> Nav {
        Nav(format!("3{}", self.0))
    }
}

/// Segregation code, base and check digits of 17 checked digits.
fn split(digits: &str) -> (u8, u64, u64) {
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|t| t.parse::<u64>().ok());
    (
        n(0..2).and_then(|v| u8::try_from(v).ok()).unwrap_or(0),
        n(2..15).unwrap_or(0),
        n(15..17).unwrap_or(0),
    )
}

string_format!(
    Nav,
    "^3[0-9]{17}$",
    "pagoPA notice number (NAV): 3, segregation code (2 digits), IUV base (13), check digits (2) = (3|segregation|base) mod 93.",
    "301000000000000144"
);
string_format!(
    Iuv,
    "^[0-9]{17}$",
    "IUV: the notice number without its leading aux digit.",
    "01000000000000144"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_example() {
        let nav = Nav::new(1, 1).unwrap();
        assert_eq!(nav.as_str(), "301000000000000144");
        assert_eq!(Nav::parse("301000000000000144").unwrap(), nav);
        assert_eq!(nav.iuv().as_str(), "01000000000000144");
        assert_eq!(nav.iuv().nav(), nav);
        assert_eq!(nav.segregazione(), 1);
        let e = Nav::parse("301000000000000145").unwrap_err();
        assert_eq!(e.reason, "the check digits should be 44, not 45");
        assert!(Nav::parse("001000000000000144").is_err());
        assert!(Iuv::parse("01000000000000145").is_err());
        assert!(Nav::new(100, 1).is_none());
    }
}
