//! Italian vehicle plates in their current forms.

use super::{FormatError, string_format};

/// Letters the current plates use: none of I, O, Q, U.
fn plate_letter(c: u8) -> bool {
    c.is_ascii_uppercase() && !matches!(c, b'I' | b'O' | b'Q' | b'U')
}

/// An Italian plate, uppercase without spaces: a car's `AA000AA` (since 1994), a motorcycle's
/// `AA00000` (since 1999), or a moped's `X` and five letters or digits (since 2006). Letters are
/// never I, O, Q or U.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Targa(String);

impl Targa {
    /// Checks `s`.
    ///
    /// # Errors
    /// A [`FormatError`] when `s` is none of the current forms.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let b = s.as_bytes();
        let l = |i: usize| b.get(i).is_some_and(|&c| plate_letter(c));
        let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let car = b.len() == 7 && l(0) && l(1) && d(2) && d(3) && d(4) && l(5) && l(6);
        let moto = b.len() == 7 && l(0) && l(1) && (2..7).all(d);
        let moped = b.len() == 6 && b[0] == b'X' && (1..6).all(|i| l(i) || d(i));
        if car || moto || moped {
            Ok(Targa(s.to_owned()))
        } else {
            Err(FormatError::new(
                "plate",
                s,
                "a plate is AA000AA (car), AA00000 (motorcycle) or X and 5 letters or digits (moped), uppercase, without I, O, Q, U",
            ))
        }
    }

    /// The plate.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_format!(
    Targa,
    "^([A-HJ-NPR-TV-Z]{2}[0-9]{3}[A-HJ-NPR-TV-Z]{2}|[A-HJ-NPR-TV-Z]{2}[0-9]{5}|X[0-9A-HJ-NPR-TV-Z]{5})$",
    "Italian plate: AA000AA (car), AA00000 (motorcycle) or X and 5 letters or digits (moped); no I, O, Q, U.",
    "AB123CD"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_forms() {
        for ok in ["AB123CD", "ZZ99999", "X2B4C6", "FG000AA"] {
            Targa::parse(ok).unwrap();
        }
        for bad in [
            "AB123C",
            "ab123cd",
            "AI123CD",
            "AB 123 CD",
            "AB123CO",
            "Y2B4C6",
            "",
        ] {
            assert!(Targa::parse(bad).is_err(), "{bad}");
        }
    }
}
