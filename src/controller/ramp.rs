//! [`StartRamp`]: non-critical work comes back at a controlled rate after it was stopped.

use std::time::{Duration, Instant};

/// The share of slots non-critical work starts from when the ramp begins.
const FLOOR: f64 = 0.1;

/// When the level falls back from Critical, non-critical work's share of the slots it may use
/// grows linearly from 10 % to 100 % over the ramp, so a deferred backlog is started at a
/// controlled rate (about `0.9 × budget / ramp` more slots per second) rather than all at
/// once into a pool (or a server) that was full a moment ago. What was already running when
/// the ramp began keeps its slots: a short spike does not cut running work back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRamp {
    duration: Duration,
    since: Option<Instant>,
    floor: usize,
    /// Held at its start (the level is Critical): no growth until it is released.
    held: bool,
}

impl StartRamp {
    /// A ramp of `duration`, not running.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            since: None,
            floor: 0,
            held: false,
        }
    }

    /// Starts the ramp at `now`, with `running` non-critical acquisitions already holding
    /// slots.
    pub fn start(&mut self, now: Instant, running: usize) {
        self.since = Some(now);
        self.floor = running;
        self.held = false;
    }

    /// How many may run whatever the share: those running when the ramp began.
    pub fn floor(&self, now: Instant) -> usize {
        if self.held || self.is_ramping(now) {
            self.floor
        } else {
            0
        }
    }

    /// Holds the ramp at its start while the level is Critical: `running` keep their slots,
    /// and at most a tenth of the budget beyond them may start.
    pub fn hold(&mut self, running: usize) {
        self.held = true;
        self.since = None;
        self.floor = running;
    }

    /// Stops it: non-critical work gets its whole budget.
    pub fn stop(&mut self) {
        self.since = None;
        self.held = false;
    }

    /// Whether the ramp is still running at `now`.
    pub fn is_ramping(&self, now: Instant) -> bool {
        self.held
            || self
                .since
                .is_some_and(|s| now.saturating_duration_since(s) < self.duration)
    }

    /// The share of its budget non-critical work may use at `now`, in `[0.1, 1]`.
    pub fn share(&self, now: Instant) -> f64 {
        if self.held {
            return FLOOR;
        }
        let Some(since) = self.since else {
            return 1.0;
        };
        let elapsed = now.saturating_duration_since(since).as_secs_f64();
        let progress = (elapsed / self.duration.as_secs_f64().max(1e-9)).min(1.0);
        FLOOR + (1.0 - FLOOR) * progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_grows_from_a_tenth_to_all_over_the_ramp() {
        let t0 = Instant::now();
        let mut r = StartRamp::new(Duration::from_secs(2));
        assert_eq!(r.share(t0), 1.0);
        assert!(!r.is_ramping(t0));
        r.start(t0, 3);
        assert_eq!(r.floor(t0), 3);
        assert!((r.share(t0) - 0.1).abs() < 1e-9);
        assert!((r.share(t0 + Duration::from_secs(1)) - 0.55).abs() < 1e-9);
        assert!(r.is_ramping(t0 + Duration::from_millis(1999)));
        assert_eq!(r.share(t0 + Duration::from_secs(2)), 1.0);
        assert!(!r.is_ramping(t0 + Duration::from_secs(2)));
        r.hold(5);
        assert!((r.share(t0 + Duration::from_secs(9)) - 0.1).abs() < 1e-9);
        assert_eq!(r.floor(t0 + Duration::from_secs(9)), 5);
        r.start(t0 + Duration::from_secs(3), 0);
        r.stop();
        assert_eq!(r.share(t0 + Duration::from_secs(3)), 1.0);
    }
}
