//! The comuni of Piedmont, read from the reference list (`piemonte-comuni.csv`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The eight provinces of Piedmont, by the abbreviation the list uses.
pub const PROVINCES: [&str; 8] = ["AL", "AT", "BI", "CN", "NO", "TO", "VB", "VC"];

/// One comune of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comune {
    /// ISTAT code, six digits (province and comune).
    pub istat: String,
    /// Cadastral (Belfiore) code.
    pub belfiore: String,
    /// Name.
    pub name: String,
    /// Province abbreviation, one of [`PROVINCES`].
    pub province: String,
    /// Resident population.
    pub population: u64,
}

impl Comune {
    /// Its entity id, `comune:<istat>`.
    #[must_use]
    pub fn entity(&self) -> String {
        format!("comune:{}", self.istat)
    }
}

/// Where the list is by default: `../shared/data/piemonte-comuni.csv` beside the workspace.
#[must_use]
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/piemonte-comuni.csv")
}

/// Parses the list (a header line `istat,belfiore,name,province,population`, then one comune
/// per line).
///
/// # Errors
/// Naming the line and field at fault: a wrong header, a wrong number of fields, a code that
/// is not six digits (ISTAT) or a letter and three digits (Belfiore), an unknown province, a
/// population that is not a number, a repeated ISTAT code.
pub fn parse(text: &str) -> anyhow::Result<Vec<Comune>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "istat,belfiore,name,province,population" => {}
        other => bail!(
            "line 1: expected the header `istat,belfiore,name,province,population`, found {:?}",
            other.map(|(_, l)| l).unwrap_or_default()
        ),
    }
    let mut out: Vec<Comune> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let [istat, belfiore, name, province, population] = f[..] else {
            bail!("line {n}: {} fields, expected 5", f.len());
        };
        if istat.len() != 6 || !istat.bytes().all(|b| b.is_ascii_digit()) {
            bail!("line {n}: istat `{istat}` is not six digits");
        }
        let b = belfiore.as_bytes();
        if b.len() != 4 || !b[0].is_ascii_uppercase() || !b[1..].iter().all(u8::is_ascii_digit) {
            bail!("line {n}: belfiore `{belfiore}` is not a letter and three digits");
        }
        if !PROVINCES.contains(&province) {
            bail!("line {n}: province `{province}` is not one of {PROVINCES:?}");
        }
        let population = population
            .parse()
            .with_context(|| format!("line {n}: population `{population}`"))?;
        if !seen.insert(istat.to_owned()) {
            bail!("line {n}: istat `{istat}` repeated");
        }
        out.push(Comune {
            istat: istat.to_owned(),
            belfiore: belfiore.to_owned(),
            name: name.to_owned(),
            province: province.to_owned(),
            population,
        });
    }
    if out.is_empty() {
        bail!("the list holds no comuni");
    }
    Ok(out)
}

/// Reads the list at `path`.
///
/// # Errors
/// When the file cannot be read or does not parse ([`parse`]).
pub fn load(path: &Path) -> anyhow::Result<Vec<Comune>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| path.display().to_string())
}

/// The `n` most populous comuni (all when `n` is `None` or larger), most populous first;
/// equal populations in ISTAT order.
#[must_use]
pub fn most_populous(mut all: Vec<Comune>, n: Option<usize>) -> Vec<Comune> {
    all.sort_by(|a, b| b.population.cmp(&a.population).then(a.istat.cmp(&b.istat)));
    if let Some(n) = n {
        all.truncate(n);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_list_has_every_comune_of_piedmont() {
        let all = load(&default_path()).unwrap();
        assert_eq!(all.len(), 1181);
        let top = most_populous(all, Some(3));
        assert_eq!(top[0].name, "Torino");
        assert_eq!(top[0].entity(), "comune:001272");
        assert!(top[0].population > top[1].population);
    }

    #[test]
    fn bad_lines_are_named() {
        let h = "istat,belfiore,name,province,population\n";
        for (body, needle) in [
            ("00127,L219,Torino,TO,1", "line 2: istat `00127`"),
            ("001272,219,Torino,TO,1", "line 2: belfiore"),
            ("001272,L219,Torino,XX,1", "province `XX`"),
            ("001272,L219,Torino,TO,many", "line 2: population"),
            ("001272,L219,Torino,TO", "line 2: 4 fields"),
            (
                "001272,L219,Torino,TO,1\n001272,L219,Torino,TO,1",
                "line 3: istat `001272` repeated",
            ),
        ] {
            let e = format!("{:#}", parse(&format!("{h}{body}")).unwrap_err());
            assert!(e.contains(needle), "{e}");
        }
        assert!(format!("{:#}", parse("a,b\n").unwrap_err()).contains("line 1"));
    }
}
