//! What a fine costs on a given day (`DOMAIN.md`, traffic fines): 30% less than the minimum
//! within 5 days of notification (never where confiscation or licence suspension applies), the
//! minimum within 60 days, afterwards half the maximum; the costs are always added. Also the
//! terms of appeal and of the Prefect's decision, counted in calendar days from notification.

use snodo_schemas::formats::Importo;
use snodo_schemas::services::mobilita_contravvenzioni::TipoAvviso;
use time::Date;

/// Days after notification within which the reduced amount may be paid.
pub const GIORNI_RIDOTTO: i64 = 5;
/// Days after notification within which the minimum may be paid.
pub const GIORNI_ORDINARIO: i64 = 60;
/// Days after notification within which an appeal reaches the Prefect.
pub const GIORNI_RICORSO_PREFETTO: i64 = 60;
/// Days after notification (or after the Prefect's injunction) within which an appeal
/// reaches the Justice of the Peace.
pub const GIORNI_RICORSO_GIUDICE: i64 = 30;
/// Days the Prefect has to decide; silence then accepts the appeal.
pub const GIORNI_DECISIONE: i64 = 120;
/// Days to pay the increased amount once the fine is enforceable.
pub const GIORNI_PAGAMENTO: i64 = 60;
/// Days to pay the Prefect's injunction.
pub const GIORNI_INGIUNZIONE: i64 = 30;

/// The amounts of a fine: what the rule broken sets, and the costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sanzione {
    /// The minimum of the rule.
    pub minimo: Importo,
    /// The maximum of the rule.
    pub massimo: Importo,
    /// Notification and procedure costs, added to every amount.
    pub spese: Importo,
    /// Confiscation or licence suspension applies: no reduced payment.
    pub accessoria: bool,
}

/// Why an amount cannot be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErroreImporto {
    /// The day asked for comes before the notification.
    #[error("{giorno} comes before the notification on {notificato}")]
    PrimaDellaNotifica {
        /// The day asked for.
        giorno: Date,
        /// The notification day.
        notificato: Date,
    },
    /// A reduced payment where an accessory sanction applies.
    #[error("no reduced payment where confiscation or licence suspension applies")]
    RidottoEscluso,
    /// A reduced payment asked for after its 5 days.
    #[error("the reduced amount is payable within 5 days of notification; this is day {0}")]
    RidottoScaduto(i64),
    /// An amount too large to write.
    #[error("the amount overflows")]
    Fuori,
}

/// Days from `notificato` to `giorno` (0 on the day of notification).
#[must_use]
pub fn giorni(notificato: Date, giorno: Date) -> i64 {
    (giorno - notificato).whole_days()
}

/// Which amount applies on `giorno` to a fine notified on `notificato` and not appealed.
///
/// # Errors
/// [`ErroreImporto::PrimaDellaNotifica`] for a day before the notification.
pub fn tipo_il(s: &Sanzione, notificato: Date, giorno: Date) -> Result<TipoAvviso, ErroreImporto> {
    let n = giorni(notificato, giorno);
    if n < 0 {
        return Err(ErroreImporto::PrimaDellaNotifica { giorno, notificato });
    }
    Ok(if n <= GIORNI_RIDOTTO && !s.accessoria {
        TipoAvviso::Ridotto
    } else if n <= GIORNI_ORDINARIO {
        TipoAvviso::Ordinario
    } else {
        TipoAvviso::Maggiorato
    })
}

/// `cents × num / den`, rounded half up.
fn quota(cents: u64, num: u64, den: u64) -> Option<u64> {
    cents
        .checked_mul(num)?
        .checked_add(den / 2)
        .map(|x| x / den)
}

/// The amount of notice `tipo`, costs included; an injunction is twice the minimum (the
/// least the Prefect may order).
///
/// # Errors
/// [`ErroreImporto::RidottoEscluso`] for a reduced amount where an accessory sanction
/// applies; [`ErroreImporto::Fuori`] when it overflows.
pub fn importo(s: &Sanzione, tipo: TipoAvviso) -> Result<Importo, ErroreImporto> {
    let m = s.minimo.in_centesimi();
    let base = match tipo {
        TipoAvviso::Ridotto if s.accessoria => return Err(ErroreImporto::RidottoEscluso),
        TipoAvviso::Ridotto => quota(m, 7, 10),
        TipoAvviso::Ordinario => Some(m),
        TipoAvviso::Maggiorato => quota(s.massimo.in_centesimi(), 1, 2),
        TipoAvviso::Ingiunzione => m.checked_mul(2),
    }
    .ok_or(ErroreImporto::Fuori)?;
    Importo::centesimi(base)
        .checked_add(s.spese)
        .ok_or(ErroreImporto::Fuori)
}

/// The amount of `tipo` when paid on `giorno`: refused where the day does not allow it (a
/// reduced amount after 5 days, or where excluded).
///
/// # Errors
/// As [`importo`], and [`ErroreImporto::RidottoScaduto`] for a reduced amount after its term.
pub fn importo_il(
    s: &Sanzione,
    tipo: TipoAvviso,
    notificato: Date,
    giorno: Date,
) -> Result<Importo, ErroreImporto> {
    let n = giorni(notificato, giorno);
    if n < 0 {
        return Err(ErroreImporto::PrimaDellaNotifica { giorno, notificato });
    }
    if tipo == TipoAvviso::Ridotto && !s.accessoria && n > GIORNI_RIDOTTO {
        return Err(ErroreImporto::RidottoScaduto(n));
    }
    importo(s, tipo)
}

/// What is due on `giorno` for a fine notified on `notificato`, unpaid and unappealed: the
/// notice that fits the day and its amount.
///
/// # Errors
/// As [`tipo_il`] and [`importo`].
pub fn dovuto(
    s: &Sanzione,
    notificato: Date,
    giorno: Date,
) -> Result<(TipoAvviso, Importo), ErroreImporto> {
    let tipo = tipo_il(s, notificato, giorno)?;
    Ok((tipo, importo(s, tipo)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    fn euro(e: u64) -> Importo {
        Importo::euro(e).unwrap()
    }

    /// Speeding, art. 142 c. 8: €173 to €695, €14.70 of costs.
    fn eccesso(accessoria: bool) -> Sanzione {
        Sanzione {
            minimo: euro(173),
            massimo: euro(695),
            spese: Importo::centesimi(1470),
            accessoria,
        }
    }

    const NOTIFICA: Date = date!(2026 - 03 - 02);

    fn il(giorno: i64) -> Date {
        NOTIFICA + time::Duration::days(giorno)
    }

    #[test]
    fn day_5_is_reduced_and_day_6_is_the_minimum() {
        let s = eccesso(false);
        // 173 × 70% = 121.10, + 14.70.
        assert_eq!(
            dovuto(&s, NOTIFICA, il(0)).unwrap(),
            (TipoAvviso::Ridotto, Importo::centesimi(13_580))
        );
        assert_eq!(
            dovuto(&s, NOTIFICA, il(5)).unwrap(),
            (TipoAvviso::Ridotto, Importo::centesimi(13_580))
        );
        assert_eq!(
            dovuto(&s, NOTIFICA, il(6)).unwrap(),
            (TipoAvviso::Ordinario, Importo::centesimi(18_770))
        );
        assert_eq!(
            importo_il(&s, TipoAvviso::Ridotto, NOTIFICA, il(6)),
            Err(ErroreImporto::RidottoScaduto(6))
        );
    }

    #[test]
    fn day_60_is_the_minimum_and_day_61_half_the_maximum() {
        let s = eccesso(false);
        assert_eq!(
            dovuto(&s, NOTIFICA, il(60)).unwrap(),
            (TipoAvviso::Ordinario, Importo::centesimi(18_770))
        );
        // 695 / 2 = 347.50, + 14.70.
        assert_eq!(
            dovuto(&s, NOTIFICA, il(61)).unwrap(),
            (TipoAvviso::Maggiorato, Importo::centesimi(36_220))
        );
    }

    #[test]
    fn an_accessory_sanction_excludes_the_reduction() {
        let s = eccesso(true);
        assert_eq!(
            dovuto(&s, NOTIFICA, il(1)).unwrap(),
            (TipoAvviso::Ordinario, Importo::centesimi(18_770))
        );
        assert_eq!(
            importo(&s, TipoAvviso::Ridotto),
            Err(ErroreImporto::RidottoEscluso)
        );
        assert_eq!(
            importo_il(&s, TipoAvviso::Ridotto, NOTIFICA, il(1)),
            Err(ErroreImporto::RidottoEscluso)
        );
    }

    #[test]
    fn odd_cents_round_half_up_and_nothing_before_notification() {
        let s = Sanzione {
            minimo: Importo::centesimi(4_205),
            massimo: Importo::centesimi(17_301),
            spese: Importo::ZERO,
            accessoria: false,
        };
        // 42.05 × 0.7 = 29.435 → 29.44; 173.01 / 2 = 86.505 → 86.51.
        assert_eq!(
            importo(&s, TipoAvviso::Ridotto),
            Ok(Importo::centesimi(2_944))
        );
        assert_eq!(
            importo(&s, TipoAvviso::Maggiorato),
            Ok(Importo::centesimi(8_651))
        );
        assert_eq!(
            importo(&s, TipoAvviso::Ingiunzione),
            Ok(Importo::centesimi(8_410))
        );
        assert!(matches!(
            dovuto(&s, NOTIFICA, il(-1)),
            Err(ErroreImporto::PrimaDellaNotifica { .. })
        ));
        let huge = Sanzione {
            minimo: Importo::centesimi(u64::MAX),
            ..s
        };
        assert_eq!(
            importo(&huge, TipoAvviso::Ridotto),
            Err(ErroreImporto::Fuori)
        );
    }

    proptest! {
        /// Whatever the amounts and the day: the reduced amount is exactly the minimum less
        /// 30% and only within 5 days and without an accessory sanction, the minimum within
        /// 60 days, half the maximum after; costs always added; and waiting never costs less.
        #[test]
        fn the_amount_follows_the_day(
            minimo in 0u64..10_000_000,
            extra in 0u64..10_000_000,
            spese in 0u64..100_000,
            accessoria in any::<bool>(),
            giorno in 0i64..400,
        ) {
            let s = Sanzione {
                minimo: Importo::centesimi(minimo),
                massimo: Importo::centesimi(minimo + extra),
                spese: Importo::centesimi(spese),
                accessoria,
            };
            let (tipo, importo) = dovuto(&s, NOTIFICA, il(giorno)).unwrap();
            let senza_spese = importo.in_centesimi() - spese;
            match tipo {
                TipoAvviso::Ridotto => {
                    prop_assert!(giorno <= 5 && !accessoria);
                    prop_assert_eq!(senza_spese, (minimo * 7 + 5) / 10);
                }
                TipoAvviso::Ordinario => {
                    prop_assert!(giorno <= 60 && (giorno > 5 || accessoria));
                    prop_assert_eq!(senza_spese, minimo);
                }
                TipoAvviso::Maggiorato => {
                    prop_assert!(giorno > 60);
                    prop_assert_eq!(senza_spese, (minimo + extra).div_ceil(2));
                }
                TipoAvviso::Ingiunzione => prop_assert!(false, "never due by the calendar"),
            }
            let (_, domani) = dovuto(&s, NOTIFICA, il(giorno + 1)).unwrap();
            // Half the maximum may be below the minimum only when the maximum is below
            // twice the minimum; the rules of the road never set one so.
            if minimo + extra >= 2 * minimo {
                prop_assert!(domani >= importo);
            }
        }
    }
}
