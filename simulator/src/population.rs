//! The simulated citizens: residents of each comune in proportion to its population, with
//! valid codici fiscali, families and addresses on the comune's streets.

use std::collections::HashSet;

use rand::Rng;
use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};
use snodo_schemas::formats::CodiceFiscalePersona;

use crate::comuni::Comune;

/// The streets every simulated comune has (its street register).
pub const STREETS: [&str; 4] = [
    "Via Roma",
    "Via Giuseppe Garibaldi",
    "Piazza del Municipio",
    "Via Torino",
];
/// House numbers of each street, 1 to this.
pub const HOUSE_NUMBERS: u16 = 200;

const SURNAMES: [&str; 12] = [
    "Rossi", "Bianchi", "Ferrero", "Gallo", "Bruno", "Colombo", "Ricci", "Marino", "Greco",
    "Conti", "Costa", "Fontana",
];
const NAMES: [(&str, char); 12] = [
    ("Luca", 'M'),
    ("Marco", 'M'),
    ("Giulia", 'F'),
    ("Chiara", 'F'),
    ("Paolo", 'M'),
    ("Anna", 'F'),
    ("Sara", 'F'),
    ("Davide", 'M'),
    ("Elena", 'F'),
    ("Andrea", 'M'),
    ("Franca", 'F'),
    ("Pietro", 'M'),
];
const MONTHS: &[u8; 12] = b"ABCDEHLMPRST";

/// A simulated resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citizen {
    /// Codice fiscale.
    pub cf: String,
    /// Surname.
    pub cognome: String,
    /// Name.
    pub nome: String,
    /// `M` or `F`.
    pub sesso: char,
    /// Date of birth, `YYYY-MM-DD`.
    pub nascita: String,
    /// Belfiore code of the comune of birth.
    pub luogo_nascita: String,
    /// The ISTAT code of the comune of residence at the start.
    pub comune: String,
    /// The street and house number.
    pub via: String,
    /// House number.
    pub civico: String,
    /// The family id in that comune's register.
    pub famiglia: String,
}

impl Citizen {
    /// The `persona` block of messages.
    #[must_use]
    pub fn persona(&self) -> Value {
        json!({"codice_fiscale": self.cf, "cognome": self.cognome, "nome": self.nome,
               "sesso": self.sesso.to_string(), "data_nascita": self.nascita,
               "luogo_nascita": self.luogo_nascita})
    }

    /// The citizen as the registry of its comune holds it at the start.
    #[must_use]
    pub fn posizione(&self) -> Value {
        json!({
            "persona": self.persona(),
            "indirizzo": {"comune": self.comune, "via": self.via, "civico": self.civico},
            "famiglia": self.famiglia,
            "iscritto_dal": "2015-01-01",
        })
    }
}

/// Three letters standing for a name in a codice fiscale (consonants first, then vowels,
/// then X).
fn letters(s: &str) -> String {
    let up: Vec<char> = s
        .to_uppercase()
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect();
    let is_vowel = |c: &char| "AEIOU".contains(*c);
    let mut out: Vec<char> = up.iter().filter(|c| !is_vowel(c)).copied().collect();
    out.extend(up.iter().filter(|c| is_vowel(c)));
    out.extend(['X', 'X', 'X']);
    out.truncate(3);
    out.into_iter().collect()
}

/// A codice fiscale for the given data; `None` only if the check letter cannot be computed.
#[must_use]
pub fn codice_fiscale(
    cognome: &str,
    nome: &str,
    sesso: char,
    y: u16,
    m: u8,
    d: u8,
    belfiore: &str,
) -> Option<String> {
    let day = if sesso == 'F' { d + 40 } else { d };
    let first15 = format!(
        "{}{}{:02}{}{day:02}{belfiore}",
        letters(cognome),
        letters(nome),
        y % 100,
        *MONTHS.get(usize::from(m.checked_sub(1)?))? as char,
    );
    let check = CodiceFiscalePersona::check_letter(&first15)?;
    Some(format!("{first15}{check}"))
}

/// One citizen per `per` inhabitants of each comune, at least `min` each; families of one
/// to four. Codici fiscali are unique over the population.
pub fn generate(comuni: &[Comune], per: u64, min: usize, rng: &mut impl Rng) -> Vec<Citizen> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for c in comuni {
        let n = usize::try_from(c.population / per.max(1))
            .unwrap_or(usize::MAX)
            .max(min);
        let mut family = 0usize;
        let mut left_in_family = 0usize;
        let (mut via, mut civico) = (String::new(), String::new());
        let mut cognome = "";
        let mut made = 0usize;
        while made < n {
            if left_in_family == 0 {
                family += 1;
                left_in_family = rng.random_range(1..=4);
                via = (*STREETS.choose(rng).unwrap_or(&STREETS[0])).to_owned();
                civico = rng.random_range(1..=HOUSE_NUMBERS).to_string();
                cognome = SURNAMES.choose(rng).copied().unwrap_or("Rossi");
            }
            let (nome, sesso) = *NAMES.choose(rng).unwrap_or(&NAMES[0]);
            let (y, m, d) = (
                rng.random_range(1940..=2015),
                rng.random_range(1..=12),
                rng.random_range(1..=28),
            );
            let Some(cf) = codice_fiscale(cognome, nome, sesso, y, m, d, &c.belfiore) else {
                continue;
            };
            if !seen.insert(cf.clone()) {
                continue;
            }
            left_in_family -= 1;
            made += 1;
            out.push(Citizen {
                cf,
                cognome: cognome.to_owned(),
                nome: nome.to_owned(),
                sesso,
                nascita: format!("{y:04}-{m:02}-{d:02}"),
                luogo_nascita: c.belfiore.clone(),
                comune: c.istat.clone(),
                via: via.clone(),
                civico: civico.clone(),
                famiglia: format!("F{family}"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use snodo_schemas::formats::CodiceFiscale;

    #[test]
    fn codici_fiscali_are_valid_and_unique_and_residents_follow_population() {
        let all = crate::comuni::load(&crate::comuni::default_path()).unwrap();
        let comuni = crate::comuni::most_populous(all, Some(5));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let people = generate(&comuni, 10_000, 3, &mut rng);
        let mut cfs = HashSet::new();
        for p in &people {
            CodiceFiscale::parse(&p.cf).unwrap_or_else(|e| panic!("{}: {e}", p.cf));
            assert!(cfs.insert(p.cf.clone()));
        }
        let turin = people.iter().filter(|p| p.comune == "001272").count();
        assert_eq!(turin as u64, comuni[0].population / 10_000);
        let fifth = people
            .iter()
            .filter(|p| p.comune == comuni[4].istat)
            .count();
        assert!(fifth >= 3 && fifth < turin);
    }

    #[test]
    fn the_worked_example_of_a_codice_fiscale() {
        // Mario Rossi, male, born 10 December 1985 in Alessandria (A182): RSSMRA85T10A182?.
        let cf = codice_fiscale("Rossi", "Mario", 'M', 1985, 12, 10, "A182").unwrap();
        assert!(cf.starts_with("RSSMRA85T10A182"), "{cf}");
        CodiceFiscale::parse(&cf).unwrap();
    }
}
