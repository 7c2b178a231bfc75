//! Codice fiscale: the 16-character code of a person (check letter, omocodia) and the 11-digit
//! code of a legal entity (Luhn-like check digit), as DOMAIN.md defines them.

use super::{FormatError, string_format};

const FORMAT: &str = "codice fiscale";

/// The month letters, January to December.
const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";
/// The letters omocodia puts in place of the digits 0 to 9.
const OMOCODIA: &[u8; 10] = b"LMNPQRSTUV";
/// The positions (from 0) that hold digits, or their omocodia letters.
const NUMERIC: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
/// The value of a character at an odd position (1st, 3rd…), for `0..=9` then `A..=Z`.
const ODD_DIGITS: [u32; 10] = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21];
const ODD_LETTERS: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// Whose code it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TipoSoggetto {
    /// A natural person: 16 characters.
    Persona,
    /// A legal entity (a company, a public body): 11 digits.
    Ente,
}

/// A codice fiscale of a person (16 characters) or of a legal entity (11 digits), with a
/// correct check character.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodiceFiscale(String);

/// The codice fiscale of a natural person only: 16 characters, omocodia allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodiceFiscalePersona(String);

impl CodiceFiscale {
    /// Checks `s` as a person's or a legal entity's code.
    ///
    /// # Errors
    /// A [`FormatError`] naming what is wrong: the length, a character out of place, the month,
    /// the day, the check character.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if s.len() == 11 {
            check_entity(s)?;
        } else {
            check_person(s)?;
        }
        Ok(CodiceFiscale(s.to_owned()))
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A person's code or a legal entity's.
    #[must_use]
    pub fn tipo(&self) -> TipoSoggetto {
        if self.0.len() == 11 {
            TipoSoggetto::Ente
        } else {
            TipoSoggetto::Persona
        }
    }
}

impl CodiceFiscalePersona {
    /// Checks `s` as a natural person's code.
    ///
    /// # Errors
    /// A [`FormatError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        check_person(s)?;
        Ok(CodiceFiscalePersona(s.to_owned()))
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The check letter of the first 15 characters of a person's code (which must be ASCII
    /// uppercase letters and digits).
    #[must_use]
    pub fn check_letter(first15: &str) -> Option<char> {
        let bytes = first15.as_bytes();
        if bytes.len() != 15 {
            return None;
        }
        let mut sum = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let v = match c {
                b'0'..=b'9' if i % 2 == 0 => ODD_DIGITS[usize::from(c - b'0')],
                b'A'..=b'Z' if i % 2 == 0 => ODD_LETTERS[usize::from(c - b'A')],
                b'0'..=b'9' => u32::from(c - b'0'),
                b'A'..=b'Z' => u32::from(c - b'A'),
                _ => return None,
            };
            sum += v;
        }
        char::from_u32(u32::from(b'A') + sum % 26)
    }

    /// The same code as a [`CodiceFiscale`].
    #[must_use]
    pub fn generale(&self) -> CodiceFiscale {
        CodiceFiscale(self.0.clone())
    }
}

impl CodiceFiscale {
    /// The check digit of the first 10 digits of a legal entity's code.
    #[must_use]
    pub fn check_digit(first10: &str) -> Option<char> {
        let bytes = first10.as_bytes();
        if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let sum = luhn_sum(bytes);
        char::from_digit((10 - sum % 10) % 10, 10)
    }
}

impl From<CodiceFiscalePersona> for CodiceFiscale {
    fn from(cf: CodiceFiscalePersona) -> Self {
        CodiceFiscale(cf.0)
    }
}

/// The sum of DOMAIN.md's rule: digits at odd positions (1st, 3rd…) as they are, those at even
/// positions doubled, less 9 above 9.
fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum()
}

fn check_entity(s: &str) -> Result<(), FormatError> {
    let bytes = s.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) {
        return Err(FormatError::new(
            FORMAT,
            s,
            "a legal entity's code is 11 digits",
        ));
    }
    if !luhn_sum(bytes).is_multiple_of(10) {
        let expected = s
            .get(..10)
            .and_then(CodiceFiscale::check_digit)
            .unwrap_or('?');
        return Err(FormatError::new(
            FORMAT,
            s,
            format!(
                "the check digit should be {expected}, not {}",
                char::from(bytes[10])
            ),
        ));
    }
    Ok(())
}

/// The digit a numeric position holds, decoding omocodia.
fn numeric(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        _ => OMOCODIA
            .iter()
            .position(|&l| l == c)
            .and_then(|p| u32::try_from(p).ok()),
    }
}

fn check_person(s: &str) -> Result<(), FormatError> {
    let err = |reason: String| FormatError::new(FORMAT, s, reason);
    let bytes = s.as_bytes();
    if bytes.len() != 16 {
        return Err(err(format!(
            "a person's code is 16 characters and a legal entity's 11 digits, not {}",
            s.chars().count()
        )));
    }
    for (i, &c) in bytes.iter().enumerate() {
        let ok = if NUMERIC.contains(&i) {
            numeric(c).is_some()
        } else {
            c.is_ascii_uppercase()
        };
        if !ok {
            let what = if NUMERIC.contains(&i) {
                "a digit (or its omocodia letter, LMNPQRSTUV)"
            } else {
                "an uppercase letter"
            };
            return Err(err(format!(
                "character {} `{}` should be {what}",
                i + 1,
                char::from(c)
            )));
        }
    }
    let month = MONTHS.iter().position(|&m| m == bytes[8]).ok_or_else(|| {
        err(format!(
            "character 9 `{}` is not a month letter (ABCDEHLMPRST)",
            char::from(bytes[8])
        ))
    })?;
    let digit = |i: usize| numeric(bytes[i]).unwrap_or(0);
    let day = digit(9) * 10 + digit(10);
    let day_of_month = if day > 40 { day - 40 } else { day };
    let days_in_month = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month];
    if day_of_month == 0 || day_of_month > days_in_month || (day > 31 && day <= 40) {
        return Err(err(format!(
            "day {day} is not a day of month {} (1-{days_in_month}, or 41-{} for women)",
            month + 1,
            days_in_month + 40
        )));
    }
    let expected = CodiceFiscalePersona::check_letter(&s[..15]).unwrap_or('?');
    if char::from(bytes[15]) != expected {
        return Err(err(format!(
            "the check letter should be {expected}, not {}",
            char::from(bytes[15])
        )));
    }
    Ok(())
}

string_format!(
    CodiceFiscale,
    "^([A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]|[0-9]{11})$",
    "Codice fiscale: 16 characters for a person (check letter, omocodia allowed) or 11 digits for a legal entity (check digit).",
    "RSSMRA85T10A562S"
);

string_format!(
    CodiceFiscalePersona,
    "^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$",
    "Codice fiscale of a natural person: 16 characters with a check letter; omocodia allowed.",
    "RSSMRA85T10A562S"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_examples_are_valid() {
        for cf in ["RSSMRA85T10A562S", "MRTMTT25D09F205Z"] {
            let p = CodiceFiscalePersona::parse(cf).unwrap();
            assert_eq!(p.as_str(), cf);
            assert_eq!(
                CodiceFiscale::parse(cf).unwrap().tipo(),
                TipoSoggetto::Persona
            );
        }
    }

    #[test]
    fn a_wrong_check_letter_is_named() {
        let e = CodiceFiscale::parse("RSSMRA85T10A562X").unwrap_err();
        assert_eq!(e.reason, "the check letter should be S, not X");
    }

    #[test]
    fn omocodia_is_accepted_with_its_own_check_letter() {
        // RSSMRA85T10A562S with its last digit replaced by its omocodia letter (2 -> N).
        let first = "RSSMRA85T10A56N";
        let check = CodiceFiscalePersona::check_letter(first).unwrap();
        CodiceFiscalePersona::parse(&format!("{first}{check}")).unwrap();
    }

    #[test]
    fn a_legal_entity_code_has_a_check_digit() {
        // The check digit of 0000000000 is 0; of 0123456789 it follows the rule.
        let check = CodiceFiscale::check_digit("0123456789").unwrap();
        let cf = CodiceFiscale::parse(&format!("0123456789{check}")).unwrap();
        assert_eq!(cf.tipo(), TipoSoggetto::Ente);
        let wrong = (check.to_digit(10).unwrap() + 1) % 10;
        let e = CodiceFiscale::parse(&format!("0123456789{wrong}")).unwrap_err();
        assert!(e.reason.contains("check digit"), "{e}");
        assert!(CodiceFiscalePersona::parse(cf.as_str()).is_err());
    }

    #[test]
    fn days_and_months_are_checked() {
        for bad in ["RSSMRA85T32A562", "RSSMRA85F30A562", "RSSMRA85Z10A562"] {
            let check = CodiceFiscalePersona::check_letter(bad).unwrap();
            assert!(
                CodiceFiscale::parse(&format!("{bad}{check}")).is_err(),
                "{bad}"
            );
        }
        // 50 is the 10th, for a woman.
        let woman = "RSSMRA85T50A562";
        let check = CodiceFiscalePersona::check_letter(woman).unwrap();
        CodiceFiscale::parse(&format!("{woman}{check}")).unwrap();
    }
}
