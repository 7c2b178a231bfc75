//! Codes of places: the ISTAT code of a comune, the cadastral (Belfiore) code, the postal code.

use super::{FormatError, string_format};

/// The ISTAT code of a comune: 6 digits, province (3) then comune (3), neither part zero
/// (`001272`, Torino).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodiceIstat(String);

impl CodiceIstat {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not 6 digits or a part is `000`.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let err = |r: &str| FormatError::new("ISTAT comune code", s, r);
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("it is 6 digits, province (3) then comune (3)"));
        }
        if &s[..3] == "000" || &s[3..] == "000" {
            return Err(err(
                "neither the province part nor the comune part may be 000",
            ));
        }
        Ok(CodiceIstat(s.to_owned()))
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The province part (`001`).
    #[must_use]
    pub fn provincia(&self) -> &str {
        &self.0[..3]
    }
}

/// The cadastral (Belfiore) code of a comune (`L219`, Torino), or of a foreign state (`Z###`):
/// an uppercase letter and 3 digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodiceBelfiore(String);

impl CodiceBelfiore {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not a letter and 3 digits.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let b = s.as_bytes();
        if b.len() == 4 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit) {
            Ok(CodiceBelfiore(s.to_owned()))
        } else {
            Err(FormatError::new(
                "Belfiore code",
                s,
                "it is an uppercase letter and 3 digits (Z### for a foreign state)",
            ))
        }
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the code of a foreign state (`Z###`).
    #[must_use]
    pub fn estero(&self) -> bool {
        self.0.starts_with('Z')
    }
}

/// An Italian postal code (CAP): 5 digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cap(String);

impl Cap {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is not 5 digits.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Cap(s.to_owned()))
        } else {
            Err(FormatError::new("CAP", s, "it is 5 digits"))
        }
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_format!(
    CodiceIstat,
    "^[0-9]{6}$",
    "ISTAT code of a comune: 6 digits, province (3) then comune (3).",
    "001272"
);
string_format!(
    CodiceBelfiore,
    "^[A-Z][0-9]{3}$",
    "Cadastral (Belfiore) code of a comune, or Z### for a foreign state.",
    "L219"
);
string_format!(Cap, "^[0-9]{5}$", "Postal code (CAP): 5 digits.", "10122");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_turin() {
        assert_eq!(CodiceIstat::parse("001272").unwrap().provincia(), "001");
        assert!(!CodiceBelfiore::parse("L219").unwrap().estero());
        assert!(CodiceBelfiore::parse("Z404").unwrap().estero());
        for bad in ["01272", "0012720", "00127A", "000272", "001000"] {
            assert!(CodiceIstat::parse(bad).is_err(), "{bad}");
        }
        for bad in ["l219", "L21", "LL219", "L2190"] {
            assert!(CodiceBelfiore::parse(bad).is_err(), "{bad}");
        }
        assert!(Cap::parse("1012").is_err());
    }
}
