//! [`Outlook`]: what a newcomer of one class faces, as a change under the admission lock
//! leaves it. With the class's measured hold it gives the newcomer's expected start and the
//! time between two starts of the class: what every change publishes for the readers that
//! take no lock (a deadline check, a refusal's `Retry-After`), in whole microseconds, so the
//! change does no arithmetic on durations.

use crate::controller::DrainEstimate;
#[cfg(test)]
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
    /// No room, no one ahead, no slot: the placeholder an array of outlooks starts from.
    pub(crate) const NONE: Outlook = Outlook {
        at_once: false,
        ahead: 0,
        slots: 0,
    };

    /// When the newcomer can expect to start, its class draining at `drain`: now when it may
    /// start at once, otherwise at the release that reaches its place in the queue; `None`
    /// before the class's first measured hold.
    #[cfg(test)]
    pub(crate) fn expected_start(&self, drain: DrainEstimate) -> Option<Duration> {
        if self.at_once {
            return Some(Duration::ZERO);
        }
        drain.expected_start(self.ahead, self.slots)
    }

    /// [`expected_start`](Self::expected_start) in whole microseconds.
    pub(crate) fn expected_start_micros(&self, drain: DrainEstimate) -> Option<u64> {
        if self.at_once {
            return Some(0);
        }
        drain.expected_start_micros(self.ahead, self.slots)
    }

    /// The time between two starts of the class at `drain`'s rate over its slots, in whole
    /// microseconds; `None` before the first measured hold.
    pub(crate) fn start_interval_micros(&self, drain: DrainEstimate) -> Option<u64> {
        drain.start_interval_micros(self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(waits.expected_start_micros(drain), Some(7_200_000));
        assert_eq!(waits.expected_start(DrainEstimate::default()), None);
        assert_eq!(waits.expected_start_micros(DrainEstimate::default()), None);
        let at_once = Outlook {
            at_once: true,
            ..waits
        };
        assert_eq!(
            at_once.expected_start(DrainEstimate::default()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            at_once.expected_start_micros(DrainEstimate::default()),
            Some(0)
        );
        assert_eq!(waits.start_interval_micros(drain), Some(50_000));
        assert_eq!(waits.start_interval_micros(DrainEstimate::default()), None);
    }
}
