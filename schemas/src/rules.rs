//! Rules that tie the fields of a message together, which neither a schema nor a field's type
//! can state; the catalog applies them after reading a body into its type.

use crate::error::Violation;
use crate::formats::{Data, Importo};

/// A violation at JSON pointer `at`.
pub(crate) fn at(at: impl Into<String>, problem: impl Into<String>) -> Violation {
    Violation {
        at: at.into(),
        line: None,
        problem: problem.into(),
    }
}

/// `to` is not before `from`: the end of a span, at `pointer`.
pub(crate) fn not_before(from: &Data, to: &Data, pointer: &str) -> Option<Violation> {
    (to < from).then(|| at(pointer, format!("{to} is before the start, {from}")))
}

/// Amounts that must sum to `total`: the list at `pointer`, each item's amount by `amount`.
pub(crate) fn sum_is<T>(
    items: &[T],
    amount: impl Fn(&T) -> Importo,
    total: Importo,
    pointer: &str,
) -> Option<Violation> {
    let sum = items
        .iter()
        .try_fold(Importo::ZERO, |acc, i| acc.checked_add(amount(i)));
    match sum {
        Some(s) if s == total => None,
        Some(s) => Some(at(
            pointer,
            format!("the amounts sum to {s}, not to the total {total}"),
        )),
        None => Some(at(pointer, "the amounts overflow")),
    }
}
