//! The waiters of one queue in the order they arrived, by id: what the admission state reads
//! of the oldest and the newest waiter, and where a departing one is found.
//!
//! Ids only grow, so appending keeps the entries sorted, and a departure is found with a
//! binary search and left as a hole. Holes at either end are dropped at once, so the first
//! and the last entry are always waiters; holes inside are dropped once they outnumber the
//! waiters (amortised O(1) per departure). In the common case, the oldest waiter leaves
//! first: one append and one removal from the front per waiter, no node to allocate or
//! rebalance.

use std::collections::VecDeque;

/// The room kept once the queue empties: a burst's storage is given back beyond it.
const KEPT: usize = 256;

/// Values in the order of their ids, which are given in increasing order.
#[derive(Debug)]
pub(crate) struct Arrivals<T> {
    /// Sorted by id; `None` is a departed entry. Never a hole at either end.
    entries: VecDeque<(u64, Option<T>)>,
    /// The entries that are not holes.
    live: usize,
}

impl<T> Default for Arrivals<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> Arrivals<T> {
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Appends `value` under `id`, which must be greater than every id given before.
    pub(crate) fn push(&mut self, id: u64, value: T) {
        debug_assert!(
            self.entries.back().is_none_or(|(last, _)| *last < id),
            "ids arrive in increasing order"
        );
        self.entries.push_back((id, Some(value)));
        self.live += 1;
    }

    /// The oldest value.
    pub(crate) fn first(&self) -> Option<&T> {
        self.entries.front().and_then(|(_, value)| value.as_ref())
    }

    /// The newest value, with its id.
    pub(crate) fn last(&self) -> Option<(u64, &T)> {
        self.entries
            .back()
            .and_then(|(id, value)| value.as_ref().map(|v| (*id, v)))
    }

    /// Takes out the value of `id`, if it is here.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let value = if self.entries.front().is_some_and(|(first, _)| *first == id) {
            // The oldest leaves first, as most do: no search.
            self.entries.pop_front()?.1?
        } else {
            let at = self.entries.binary_search_by_key(&id, |(id, _)| *id).ok()?;
            self.entries[at].1.take()?
        };
        self.live -= 1;
        while self.entries.front().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|(_, v)| v.is_none()) {
            self.entries.pop_back();
        }
        if self.entries.len() > 2 * self.live + 32 {
            self.entries.retain(|(_, v)| v.is_some());
        }
        if self.entries.is_empty() && self.entries.capacity() > KEPT {
            self.entries.shrink_to(KEPT);
        }
        Some(value)
    }

    /// Every value with its id, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.entries
            .iter()
            .filter_map(|(id, value)| value.as_ref().map(|v| (*id, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        /// Removes the id at this place among the ids given so far (gone or not).
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Push), any::<usize>().prop_map(Op::Remove)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Against a `BTreeMap` by id as the model: the same values come out of every
        /// removal, and the same first, last, length and order follow each step.
        #[test]
        fn arrivals_agree_with_an_ordered_map(ops in proptest::collection::vec(op(), 1..300)) {
            let mut arrivals = Arrivals::default();
            let mut model = BTreeMap::new();
            let mut given = Vec::new();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Push => {
                        // Ids with gaps, as the admission state's are across its queues.
                        let id = 3 * step as u64 + 1;
                        arrivals.push(id, id * 10);
                        model.insert(id, id * 10);
                        given.push(id);
                    }
                    Op::Remove(pick) if !given.is_empty() => {
                        let id = given[pick % given.len()];
                        prop_assert_eq!(arrivals.remove(id), model.remove(&id));
                    }
                    Op::Remove(_) => prop_assert_eq!(arrivals.remove(7), None),
                }
                prop_assert_eq!(arrivals.len(), model.len());
                prop_assert_eq!(arrivals.is_empty(), model.is_empty());
                prop_assert_eq!(arrivals.first(), model.values().next());
                prop_assert_eq!(arrivals.last(), model.iter().next_back().map(|(k, v)| (*k, v)));
                let listed: Vec<(u64, &u64)> = arrivals.iter().collect();
                let modelled: Vec<(u64, &u64)> = model.iter().map(|(k, v)| (*k, v)).collect();
                prop_assert_eq!(listed, modelled);
                prop_assert!(arrivals.entries.len() <= 2 * arrivals.live + 32);
            }
        }
    }

    #[test]
    fn holes_inside_are_dropped_once_they_outnumber_the_values() {
        let mut arrivals = Arrivals::default();
        for id in 0..1000 {
            arrivals.push(id, ());
        }
        // The oldest and the newest stay; every other one leaves from inside.
        for id in 1..999 {
            arrivals.remove(id);
        }
        assert_eq!(arrivals.len(), 2);
        assert!(arrivals.entries.len() <= 36, "{}", arrivals.entries.len());
        assert_eq!(arrivals.first(), Some(&()));
        assert_eq!(arrivals.last(), Some((999, &())));
        assert_eq!(arrivals.remove(999), Some(()));
        assert_eq!(arrivals.remove(0), Some(()));
        assert!(arrivals.entries.is_empty());
        assert!(arrivals.entries.capacity() <= KEPT);
    }
}
