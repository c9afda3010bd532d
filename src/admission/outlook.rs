//! [`Outlook`]: what a newcomer of one class faces, as the last change under the admission
//! lock left it, and [`PublishedOutlook`], the same packed in one word for readers that take
//! no lock.
//!
//! A change publishes the counts only (whether a newcomer may start at once, how many wait
//! ahead of it, how many slots drain its class); a reader combines them with the class's
//! measured hold, read live from [`HoldTimes`](super::hold::HoldTimes), into the newcomer's
//! expected start and the class's start interval. The arithmetic on durations is done by the
//! few requests that ask (a deadline check, a refusal's `Retry-After`), not by every change
//! under the lock.

use crate::controller::DrainEstimate;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a newcomer of one class faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outlook {
    /// It may take a slot at once.
    pub(crate) at_once: bool,
    /// Waiters that start before it: its class's queue and every higher one.
    pub(crate) ahead: usize,
    /// The slots that drain its class: the class's budget given what the others use.
    pub(crate) slots: usize,
}

impl Outlook {
    /// When the newcomer can expect to start, its class draining at `drain`: now when it may
    /// start at once, otherwise at the release that reaches its place in the queue; `None`
    /// before the class's first measured hold.
    pub(crate) fn expected_start(&self, drain: DrainEstimate) -> Option<Duration> {
        if self.at_once {
            return Some(Duration::ZERO);
        }
        drain.expected_start(self.ahead, self.slots)
    }

    /// The time between two starts of the class at `drain`'s rate over its slots; `None`
    /// before the first measured hold.
    pub(crate) fn start_interval(&self, drain: DrainEstimate) -> Option<Duration> {
        let rate = drain.rate(self.slots)?;
        Some(Duration::from_secs_f64(1.0 / rate))
    }
}

/// The most waiters ahead a published outlook tells apart (32 bits).
const AHEAD_MASK: u64 = u32::MAX as u64;
/// Where the slots start, and the most it tells apart (31 bits).
const SLOTS_SHIFT: u32 = 32;
const SLOTS_MASK: u64 = (1 << 31) - 1;
/// Set when a newcomer must wait: a word of zero (the start) lets it start at once.
const WAITS: u64 = 1 << 63;

/// An [`Outlook`] in one atomic word, stored by every change under the admission lock and
/// loaded without it. Counts past what the word holds are kept at its largest value.
#[derive(Debug, Default)]
pub(crate) struct PublishedOutlook(AtomicU64);

impl PublishedOutlook {
    pub(crate) fn store(&self, outlook: Outlook) {
        let waits = if outlook.at_once { 0 } else { WAITS };
        let ahead = (outlook.ahead as u64).min(AHEAD_MASK);
        let slots = (outlook.slots as u64).min(SLOTS_MASK);
        self.0
            .store(waits | slots << SLOTS_SHIFT | ahead, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> Outlook {
        let word = self.0.load(Ordering::Relaxed);
        Outlook {
            at_once: word & WAITS == 0,
            ahead: (word & AHEAD_MASK) as usize,
            slots: ((word >> SLOTS_SHIFT) & SLOTS_MASK) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_outlook_reads_back_as_stored() {
        let published = PublishedOutlook::default();
        assert!(published.load().at_once, "nothing published yet: at once");
        for outlook in [
            Outlook {
                at_once: true,
                ahead: 0,
                slots: 1,
            },
            Outlook {
                at_once: false,
                ahead: 159,
                slots: 16,
            },
            Outlook {
                at_once: false,
                ahead: u32::MAX as usize,
                slots: SLOTS_MASK as usize,
            },
        ] {
            published.store(outlook);
            assert_eq!(published.load(), outlook);
        }
        // Past the word's width, the largest value it holds.
        published.store(Outlook {
            at_once: false,
            ahead: usize::MAX,
            slots: usize::MAX,
        });
        assert_eq!(published.load().ahead, u32::MAX as usize);
        assert_eq!(published.load().slots, SLOTS_MASK as usize);
    }

    #[test]
    fn the_estimates_follow_the_drain_and_the_place() {
        let drain = DrainEstimate::with_hold(Duration::from_millis(800));
        let waits = Outlook {
            at_once: false,
            ahead: 143,
            slots: 16,
        };
        assert_eq!(
            waits.expected_start(drain),
            Some(Duration::from_millis(7200))
        );
        assert_eq!(waits.expected_start(DrainEstimate::default()), None);
        let at_once = Outlook {
            at_once: true,
            ..waits
        };
        assert_eq!(
            at_once.expected_start(DrainEstimate::default()),
            Some(Duration::ZERO)
        );
        assert_eq!(waits.start_interval(drain), Some(Duration::from_millis(50)));
        assert_eq!(waits.start_interval(DrainEstimate::default()), None);
    }
}
