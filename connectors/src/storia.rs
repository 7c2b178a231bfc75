//! A practice's history of states as a portal keeps it: in the order of the office's clock,
//! not of arrival. The hub delivers an inbox in the order it accepted, but an office submits
//! from more than one place (a handler's outbox, its own task applying terms) and retries what
//! failed, so a state can land after a later one (a SCIA's "checking" after its "stands");
//! the current state is the latest in time.

/// Puts `item` into `history`, kept in the order of `at`, unless it is there already.
/// Items of the same time keep their order of arrival. Returns whether `item` was new.
pub fn in_ordine<T: PartialEq, K: Ord>(
    history: &mut Vec<T>,
    item: T,
    at: impl Fn(&T) -> K,
) -> bool {
    if history.contains(&item) {
        return false;
    }
    let k = at(&item);
    let pos = history.partition_point(|h| at(h) <= k);
    history.insert(pos, item);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_late_earlier_state_goes_before_the_later_one() {
        let mut h = vec![(2, "stands")];
        assert!(in_ordine(&mut h, (1, "checking"), |s| s.0));
        assert_eq!(h, vec![(1, "checking"), (2, "stands")]);
        assert!(!in_ordine(&mut h, (1, "checking"), |s| s.0), "a repeat");
        assert!(in_ordine(&mut h, (2, "noted"), |s| s.0));
        assert_eq!(h.last(), Some(&(2, "noted")), "same time: arrival order");
    }

    /// A state: its time and what it is.
    type Passo = (u8, u8);

    /// Distinct times with their states, in time order (what the history must be), and an
    /// order of arrival of them with some repeated.
    fn arrivals() -> impl Strategy<Value = (Vec<Passo>, Vec<Passo>)> {
        proptest::collection::btree_map(0u8..50, 0u8..3, 0..20).prop_flat_map(|m| {
            let expected: Vec<Passo> = m.into_iter().collect();
            let mut sent = expected.clone();
            sent.extend(expected.iter().take(3).copied());
            (Just(expected), Just(sent).prop_shuffle())
        })
    }

    proptest! {
        /// Whatever the order of arrival, with repeats, the history is the distinct items in
        /// time order, so its last item is the latest.
        #[test]
        fn any_order_of_arrival_gives_the_same_history((expected, sent) in arrivals()) {
            let mut h = Vec::new();
            for s in sent {
                in_ordine(&mut h, s, |s| s.0);
            }
            prop_assert_eq!(h, expected);
        }
    }
}
