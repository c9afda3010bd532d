//! [`DrainEstimate`]: how fast a class's queue drains, and when a waiter can expect to start.

use std::time::Duration;

/// The measured slot hold time of one class (an exponential average of the last holds), and
/// what follows from it: the class's drain rate over the slots it may use, and the expected
/// start of a waiter from its place in the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DrainEstimate {
    /// Average hold in seconds; `None` until the first hold was measured.
    hold_secs: Option<f64>,
}

/// Weight of a new hold time in the average.
const NEW_WEIGHT: f64 = 0.2;

impl DrainEstimate {
    /// An estimate that starts from a known average hold.
    pub fn with_hold(hold: Duration) -> Self {
        Self {
            hold_secs: Some(hold.as_secs_f64()),
        }
    }

    /// An estimate that starts from a known average hold in seconds (what
    /// [`hold_secs`](Self::hold_secs) returned), bit for bit.
    pub fn with_hold_secs(hold_secs: f64) -> Self {
        Self {
            hold_secs: Some(hold_secs),
        }
    }

    /// The average hold in seconds, exactly as it is kept; `None` before the first hold.
    pub fn hold_secs(&self) -> Option<f64> {
        self.hold_secs
    }

    /// Feeds one measured hold (from grant to release).
    pub fn record(&mut self, held: Duration) {
        let h = held.as_secs_f64();
        self.hold_secs = Some(match self.hold_secs {
            None => h,
            Some(avg) => avg + NEW_WEIGHT * (h - avg),
        });
    }

    /// The average hold, once one was measured.
    pub fn hold(&self) -> Option<Duration> {
        self.hold_secs.map(Duration::from_secs_f64)
    }

    /// Starts per second the class sustains with `slots` slots (Little's law: slots over the
    /// average hold). `None` before the first measurement.
    pub fn rate(&self, slots: usize) -> Option<f64> {
        let hold = self.hold_secs?;
        Some(slots.max(1) as f64 / hold.max(1e-6))
    }

    /// When a waiter with `ahead` waiters in front of it can expect to start, with `slots`
    /// slots draining its class: at the `(ahead + 1)`-th release. Holds are taken as whole
    /// (the running ones may have just started), so the estimate errs late, never early:
    /// `ceil((ahead + 1) / slots) × hold`. `None` before the first measurement.
    pub fn expected_start(&self, ahead: usize, slots: usize) -> Option<Duration> {
        Some(Duration::from_secs_f64(
            self.expected_start_secs(ahead, slots)?,
        ))
    }

    /// [`expected_start`](Self::expected_start) in whole microseconds, worked out without a
    /// `Duration` (what a change under the admission lock publishes).
    pub(crate) fn expected_start_micros(&self, ahead: usize, slots: usize) -> Option<u64> {
        Some((self.expected_start_secs(ahead, slots)? * 1e6) as u64)
    }

    /// [`expected_start`](Self::expected_start) in seconds.
    pub(crate) fn expected_start_secs(&self, ahead: usize, slots: usize) -> Option<f64> {
        let hold = self.hold_secs?;
        let rounds = (ahead + 1).div_ceil(slots.max(1));
        Some(hold * rounds as f64)
    }

    /// The time between two starts with `slots` slots (the inverse of
    /// [`rate`](Self::rate)), in whole microseconds. `None` before the first measurement.
    pub(crate) fn start_interval_micros(&self, slots: usize) -> Option<u64> {
        Some((1e6 / self.rate(slots)?) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_promised_before_a_hold_is_measured() {
        let d = DrainEstimate::default();
        assert_eq!(d.rate(16), None);
        assert_eq!(d.expected_start(100, 16), None);
    }

    #[test]
    fn rate_is_slots_over_the_average_hold() {
        let mut d = DrainEstimate::default();
        d.record(Duration::from_millis(800));
        assert_eq!(d.hold(), Some(Duration::from_millis(800)));
        assert!((d.rate(16).unwrap() - 20.0).abs() < 1e-9);
        // The average moves a fifth of the way to each new hold.
        d.record(Duration::from_millis(1800));
        assert_eq!(d.hold(), Some(Duration::from_millis(1000)));
        assert!((d.rate(16).unwrap() - 16.0).abs() < 1e-9);
    }

    #[test]
    fn expected_start_counts_whole_rounds_of_holds() {
        let d = DrainEstimate::with_hold(Duration::from_millis(800));
        // 16 slots: the next 16 waiters start at the first round of releases.
        assert_eq!(d.expected_start(0, 16), Some(Duration::from_millis(800)));
        assert_eq!(d.expected_start(15, 16), Some(Duration::from_millis(800)));
        assert_eq!(d.expected_start(16, 16), Some(Duration::from_millis(1600)));
        // The dashboard burst: 160 reports, 16 slots, the last one starts after 9 rounds
        // from the start (here, 144 ahead of it once the first 16 run).
        assert_eq!(d.expected_start(143, 16), Some(Duration::from_millis(7200)));
        // No slot at all still drains one at a time.
        assert_eq!(d.expected_start(1, 0), Some(Duration::from_millis(1600)));
        // The same in microseconds, and the time between two starts.
        assert_eq!(d.expected_start_micros(143, 16), Some(7_200_000));
        assert_eq!(d.start_interval_micros(16), Some(50_000));
        assert_eq!(DrainEstimate::default().expected_start_micros(0, 16), None);
        assert_eq!(DrainEstimate::default().start_interval_micros(16), None);
    }
}
