//! [`WindowCounts`]: the outcome counters behind each `RequestsSummary` event.

use crate::criticality::Criticality;
use crate::events::OutcomeCounts;
use crate::metrics::Outcome;
use crate::stripes::Stripes;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// The outcome counts behind each `RequestsSummary` event, indexed `[outcome][class]`: each
/// thread counts in its own stripe (cumulative counts, only ever added to), and a take adds
/// the stripes up and hands out what was added since the last take.
#[derive(Debug, Default)]
pub(super) struct WindowCounts {
    counted: Stripes<Counts>,
    /// The sums handed out so far.
    taken: Mutex<[[u64; 3]; Outcome::COUNT]>,
}

type Counts = [[AtomicU64; 3]; Outcome::COUNT];

impl WindowCounts {
    pub(super) fn add(&self, class: Criticality, outcome: Outcome) {
        self.counted
            .mine()
            .add(|counts| &counts[outcome as usize][class.index()], 1);
    }

    /// The counts since the last take, each counted once: a count added while the stripes
    /// are read lands in this take or the next.
    pub(super) fn take(&self) -> OutcomeCounts {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let mut take = |o: Outcome| {
            let counts = self.counted.sum(|counts| &counts[o as usize]);
            let before = std::mem::replace(&mut taken[o as usize], counts);
            std::array::from_fn(|i| counts[i].wrapping_sub(before[i]))
        };
        OutcomeCounts {
            served: take(Outcome::Served),
            shed: take(Outcome::Shed),
            queued: take(Outcome::Queued),
            rate_limited: take(Outcome::RateLimited),
            timed_out: take(Outcome::TimedOut),
            queue_full: take(Outcome::QueueFull),
            pool_unavailable: take(Outcome::PoolUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn each_count_is_handed_out_by_exactly_one_take() {
        // Four threads count while a fifth takes, again and again: the takes add up to every
        // count, and nothing is handed out twice.
        let window = WindowCounts::default();
        let adding = std::sync::atomic::AtomicUsize::new(4);
        let mut served = 0;
        let mut shed = 0;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for i in 0..20_000 {
                        let outcome = if i % 4 == 0 {
                            Outcome::Shed
                        } else {
                            Outcome::Served
                        };
                        window.add(Criticality::Critical, outcome);
                    }
                    adding.fetch_sub(1, Ordering::Release);
                });
            }
            loop {
                let done = adding.load(Ordering::Acquire) == 0;
                let counts = window.take();
                served += counts.served[Criticality::Critical.index()];
                shed += counts.shed[Criticality::Critical.index()];
                assert_eq!(counts.served[Criticality::Standard.index()], 0);
                if done {
                    break;
                }
            }
        });
        assert_eq!((served, shed), (60_000, 20_000));
        let after = window.take();
        assert_eq!(after.served, [0; 3], "nothing is handed out twice");
    }
}
