//! The fees of a building practice on the comune's rates: primary and secondary urbanization
//! charges on the new volume, the share of the declared construction cost, and the secretariat
//! fees of the title. A permit and a SCIA pay all four; a CILA only the secretariat fees.

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::{Importo, PuntiBase};
use snodo_schemas::services::edilizia_permessi::{Intervento, Titolo};

/// The rates a comune deliberates (data, per year).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tariffe {
    /// Primary urbanization charges (roads, networks) per cubic metre of new volume, in cents.
    pub primaria_mc: Importo,
    /// Secondary urbanization charges (schools, services) per cubic metre, in cents.
    pub secondaria_mc: Importo,
    /// The share of the declared construction cost, in hundredths of a percent (500 = 5%).
    pub quota_costo: PuntiBase,
    /// Secretariat fees of a building permit, in cents.
    pub diritti_permesso: Importo,
    /// Secretariat fees of a SCIA, in cents.
    pub diritti_scia: Importo,
    /// Secretariat fees of a CILA, in cents.
    pub diritti_cila: Importo,
}

/// The rates of one year.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffeAnno {
    /// The year.
    pub anno: u16,
    /// Its rates.
    pub tariffe: Tariffe,
}

/// The fees of one practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calcolo {
    /// Primary urbanization charges.
    pub urbanizzazione_primaria: Importo,
    /// Secondary urbanization charges.
    pub urbanizzazione_secondaria: Importo,
    /// The share of the construction cost.
    pub costo_costruzione: Importo,
    /// Secretariat fees.
    pub diritti_segreteria: Importo,
    /// The total.
    pub totale: Importo,
}

/// Why the fees cannot be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreOneri {
    /// An amount is beyond what a notice can carry.
    #[error("the {0} overflows")]
    Overflow(&'static str),
}

/// The rates in force in `anno`: those deliberated for it, else the latest before it (rates
/// stay in force until deliberated again); none when the comune gave none up to that year.
#[must_use]
pub fn in_vigore(tariffe: &[TariffeAnno], anno: u16) -> Option<&Tariffe> {
    tariffe
        .iter()
        .filter(|t| t.anno <= anno)
        .max_by_key(|t| t.anno)
        .map(|t| &t.tariffe)
}

/// `unit` × `units`, or the overflow named `what`.
fn per(unit: Importo, units: u32, what: &'static str) -> Result<Importo, ErroreOneri> {
    unit.in_centesimi()
        .checked_mul(u64::from(units))
        .map(Importo::centesimi)
        .ok_or(ErroreOneri::Overflow(what))
}

/// `share` of `amount`, to the cent, half a cent up.
fn quota(amount: Importo, share: PuntiBase) -> Result<Importo, ErroreOneri> {
    let c = (u128::from(amount.in_centesimi()) * u128::from(share.get()) + 5_000) / 10_000;
    u64::try_from(c)
        .map(Importo::centesimi)
        .map_err(|_| ErroreOneri::Overflow("construction cost share"))
}

/// The fees of works `intervento` under title `titolo` on rates `t`.
///
/// # Errors
/// [`ErroreOneri::Overflow`] when an amount does not fit.
pub fn calcola(
    titolo: Titolo,
    intervento: &Intervento,
    t: &Tariffe,
) -> Result<Calcolo, ErroreOneri> {
    let (primaria, secondaria, costo, diritti) = match titolo {
        Titolo::Cila => (Importo::ZERO, Importo::ZERO, Importo::ZERO, t.diritti_cila),
        Titolo::PermessoDiCostruire | Titolo::Scia => (
            per(t.primaria_mc, intervento.volume_mc, "primary urbanization")?,
            per(
                t.secondaria_mc,
                intervento.volume_mc,
                "secondary urbanization",
            )?,
            quota(intervento.costo_costruzione, t.quota_costo)?,
            if titolo == Titolo::Scia {
                t.diritti_scia
            } else {
                t.diritti_permesso
            },
        ),
    };
    let totale = [secondaria, costo, diritti]
        .into_iter()
        .try_fold(primaria, Importo::checked_add)
        .ok_or(ErroreOneri::Overflow("total"))?;
    Ok(Calcolo {
        urbanizzazione_primaria: primaria,
        urbanizzazione_secondaria: secondaria,
        costo_costruzione: costo,
        diritti_segreteria: diritti,
        totale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn euro(e: u64) -> Importo {
        Importo::euro(e).unwrap()
    }

    fn tariffe() -> Tariffe {
        Tariffe {
            primaria_mc: Importo::centesimi(1_250),
            secondaria_mc: Importo::centesimi(1_830),
            quota_costo: PuntiBase::new(500).unwrap(),
            diritti_permesso: euro(150),
            diritti_scia: euro(100),
            diritti_cila: euro(50),
        }
    }

    fn lavori(volume_mc: u32, costo: Importo) -> Intervento {
        Intervento {
            descrizione: "Ampliamento".into(),
            superficie_mq: 40,
            volume_mc,
            costo_costruzione: costo,
        }
    }

    #[test]
    fn a_permit_pays_urbanization_on_the_volume_the_cost_share_and_its_fees() {
        let c = calcola(
            Titolo::PermessoDiCostruire,
            &lavori(120, euro(80_000)),
            &tariffe(),
        )
        .unwrap();
        // 120 m³ × €12.50 = €1,500; × €18.30 = €2,196; 5% of €80,000 = €4,000; + €150.
        assert_eq!(c.urbanizzazione_primaria, euro(1_500));
        assert_eq!(c.urbanizzazione_secondaria, euro(2_196));
        assert_eq!(c.costo_costruzione, euro(4_000));
        assert_eq!(c.diritti_segreteria, euro(150));
        assert_eq!(c.totale, euro(7_846));
    }

    #[test]
    fn a_scia_pays_its_own_fees_and_a_cila_only_the_secretariat_fees() {
        let scia = calcola(Titolo::Scia, &lavori(10, euro(1_000)), &tariffe()).unwrap();
        assert_eq!(scia.diritti_segreteria, euro(100));
        assert_eq!(
            scia.totale,
            Importo::centesimi(12_500 + 18_300 + 5_000 + 10_000)
        );
        let cila = calcola(Titolo::Cila, &lavori(10, euro(1_000)), &tariffe()).unwrap();
        assert_eq!(cila.totale, euro(50));
        assert_eq!(cila.urbanizzazione_primaria, Importo::ZERO);
        assert_eq!(cila.costo_costruzione, Importo::ZERO);
    }

    #[test]
    fn the_cost_share_is_rounded_to_the_cent_half_up() {
        // 5% of €0.09 = 0.45 cents → 0; of €0.10 = 0.5 cents → 1.
        let mut t = tariffe();
        t.diritti_permesso = Importo::ZERO;
        let c = calcola(
            Titolo::PermessoDiCostruire,
            &lavori(0, Importo::centesimi(9)),
            &t,
        )
        .unwrap();
        assert_eq!(c.totale, Importo::ZERO);
        let c = calcola(
            Titolo::PermessoDiCostruire,
            &lavori(0, Importo::centesimi(10)),
            &t,
        )
        .unwrap();
        assert_eq!(c.totale, Importo::centesimi(1));
    }

    #[test]
    fn amounts_that_overflow_are_refused_not_wrapped() {
        let mut t = tariffe();
        t.primaria_mc = Importo::centesimi(u64::MAX / 2);
        assert_eq!(
            calcola(Titolo::Scia, &lavori(3, euro(1)), &t),
            Err(ErroreOneri::Overflow("primary urbanization"))
        );
        t.primaria_mc = Importo::centesimi(u64::MAX - 10);
        assert_eq!(
            calcola(Titolo::Scia, &lavori(1, euro(1)), &t),
            Err(ErroreOneri::Overflow("total"))
        );
    }

    #[test]
    fn the_rates_in_force_are_the_year_s_or_the_latest_before() {
        let mut later = tariffe();
        later.diritti_cila = euro(70);
        let all = [
            TariffeAnno {
                anno: 2024,
                tariffe: tariffe(),
            },
            TariffeAnno {
                anno: 2026,
                tariffe: later,
            },
        ];
        assert_eq!(in_vigore(&all, 2023), None);
        assert_eq!(in_vigore(&all, 2025).unwrap().diritti_cila, euro(50));
        assert_eq!(in_vigore(&all, 2026).unwrap().diritti_cila, euro(70));
        assert_eq!(in_vigore(&all, 2030).unwrap().diritti_cila, euro(70));
    }
}
