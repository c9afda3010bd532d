//! The level-driven breaker for non-critical routes, with a half-open ramp on recovery.
//!
//! At Warning and Critical the breaker is open: non-critical requests are answered at once.
//! When the level returns to Normal it is half-open: a share of non-critical requests that
//! grows from 10 % to 100 % over the ramp is let through, so the freed pool is not flooded
//! again at once. Then it closes. State lives in atomics: deciding costs no lock.

use crate::events::BreakerState;
use crate::Level;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Share of requests let through at the very start of the ramp, in percent.
const RAMP_FLOOR_PERCENT: u64 = 10;

#[derive(Debug)]
pub(crate) struct Breaker {
    ramp: Duration,
    epoch: Instant,
    state: AtomicU8,
    /// Nanoseconds since `epoch` when the half-open ramp started.
    half_open_since: AtomicU64,
    /// Round-robin counter that spreads admissions evenly over the ramp.
    counter: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(ramp: Duration, epoch: Instant) -> Self {
        Self {
            ramp,
            epoch,
            state: AtomicU8::new(CLOSED),
            half_open_since: AtomicU64::new(0),
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Follows a level change; returns the new breaker state if it changed.
    pub(crate) fn on_level(&self, level: Level, now: Instant) -> Option<BreakerState> {
        match level {
            Level::Warning | Level::Critical => {
                (self.state.swap(OPEN, Ordering::AcqRel) != OPEN).then_some(BreakerState::Open)
            }
            Level::Normal => {
                self.half_open_since
                    .store(self.nanos(now), Ordering::Release);
                self.state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .ok()
                    .map(|_| BreakerState::HalfOpen)
            }
        }
    }

    /// Decides one non-critical request at `level`. Returns whether to admit it, and the new
    /// breaker state if this decision closed the breaker.
    pub(crate) fn admit(&self, level: Level, now: Instant) -> (bool, Option<BreakerState>) {
        if level != Level::Normal {
            return (false, None);
        }
        match self.state.load(Ordering::Acquire) {
            CLOSED => (true, None),
            // The level is already Normal but the transition has not reached the breaker yet:
            // behave as the start of the ramp.
            OPEN => (self.ramp_admits(0.0), None),
            _ => {
                let since = self.half_open_since.load(Ordering::Acquire);
                let elapsed = self.nanos(now).saturating_sub(since);
                let ramp = self.ramp.as_nanos() as u64;
                if elapsed >= ramp {
                    let closed = self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    (true, closed.then_some(BreakerState::Closed))
                } else {
                    (self.ramp_admits(elapsed as f64 / ramp as f64), None)
                }
            }
        }
    }

    fn ramp_admits(&self, progress: f64) -> bool {
        let percent = RAMP_FLOOR_PERCENT
            + ((100 - RAMP_FLOOR_PERCENT) as f64 * progress.clamp(0.0, 1.0)) as u64;
        self.counter.fetch_add(1, Ordering::Relaxed) % 100 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted_of_100(b: &Breaker, now: Instant) -> usize {
        (0..100).filter(|_| b.admit(Level::Normal, now).0).count()
    }

    #[test]
    fn opens_at_warning_and_sheds_everything() {
        let t0 = Instant::now();
        let b = Breaker::new(Duration::from_secs(2), t0);
        assert_eq!(b.on_level(Level::Warning, t0), Some(BreakerState::Open));
        assert_eq!(b.on_level(Level::Critical, t0), None);
        assert!(!b.admit(Level::Warning, t0).0);
        assert!(!b.admit(Level::Critical, t0).0);
    }

    #[test]
    fn half_open_ramp_grows_then_closes() {
        let t0 = Instant::now();
        let b = Breaker::new(Duration::from_secs(2), t0);
        b.on_level(Level::Warning, t0);
        assert_eq!(b.on_level(Level::Normal, t0), Some(BreakerState::HalfOpen));
        let start = admitted_of_100(&b, t0);
        let middle = admitted_of_100(&b, t0 + Duration::from_secs(1));
        assert_eq!(start, 10);
        assert_eq!(middle, 55);
        let (admitted, change) = b.admit(Level::Normal, t0 + Duration::from_secs(2));
        assert!(admitted);
        assert_eq!(change, Some(BreakerState::Closed));
        assert_eq!(admitted_of_100(&b, t0 + Duration::from_secs(2)), 100);
    }

    #[test]
    fn closed_breaker_ignores_normal_level() {
        let t0 = Instant::now();
        let b = Breaker::new(Duration::from_secs(2), t0);
        assert_eq!(b.on_level(Level::Normal, t0), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
