//! [`StartRamp`]: non-critical work comes back at a controlled rate after it was stopped.

use std::time::{Duration, Instant};

/// The share of slots non-critical work starts from when the ramp begins.
const FLOOR: f64 = 0.1;

/// At Critical no non-critical work starts. When the level falls back, its share of the
/// slots it may use grows linearly from 10 % to 100 % over the ramp, so the deferred backlog
/// is started at a controlled rate (about `0.9 × budget / ramp` more slots per second) rather
/// than all at once into a pool that was full a moment ago.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartRamp {
    duration: Duration,
    since: Option<Instant>,
}

impl StartRamp {
    /// A ramp of `duration`, not running.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            since: None,
        }
    }

    /// Starts the ramp at `now` (non-critical work may start again).
    pub fn start(&mut self, now: Instant) {
        self.since = Some(now);
    }

    /// Stops it: non-critical work gets its whole budget.
    pub fn stop(&mut self) {
        self.since = None;
    }

    /// Whether the ramp is still running at `now`.
    pub fn is_ramping(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|s| now.saturating_duration_since(s) < self.duration)
    }

    /// The share of its budget non-critical work may use at `now`, in `[0.1, 1]`.
    pub fn share(&self, now: Instant) -> f64 {
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
        r.start(t0);
        assert!((r.share(t0) - 0.1).abs() < 1e-9);
        assert!((r.share(t0 + Duration::from_secs(1)) - 0.55).abs() < 1e-9);
        assert!(r.is_ramping(t0 + Duration::from_millis(1999)));
        assert_eq!(r.share(t0 + Duration::from_secs(2)), 1.0);
        assert!(!r.is_ramping(t0 + Duration::from_secs(2)));
        r.start(t0 + Duration::from_secs(3));
        r.stop();
        assert_eq!(r.share(t0 + Duration::from_secs(3)), 1.0);
    }
}
