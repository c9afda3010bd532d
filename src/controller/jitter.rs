//! [`RetryJitter`]: a bounded, deterministic jitter for `Retry-After`.

use std::time::Duration;

/// The most jitter added to an estimate is this fraction of it: an eighth.
const SHARE_DIVISOR: u32 = 8;
/// The most jitter added, whatever the estimate.
const MAX: Duration = Duration::from_secs(1);

/// Spreads refused clients over a short window after their estimated start, so they do not
/// all come back at the same instant. A small xorshift generator: deterministic from its
/// seed, so tests can check its bounds.
#[derive(Debug, Clone)]
pub struct RetryJitter {
    state: u64,
}

impl RetryJitter {
    /// A generator seeded with `seed` (any value; zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// The largest jitter added to `estimate`: an eighth of it, at most one second.
    pub fn bound(estimate: Duration) -> Duration {
        (estimate / SHARE_DIVISOR).min(MAX)
    }

    /// `estimate` plus a jitter drawn uniformly from `[0, bound(estimate)]`. Never earlier
    /// than the estimate: an honest `Retry-After` does not invite a client back before its
    /// turn.
    pub fn retry_after(&mut self, estimate: Duration) -> Duration {
        let random = self.next();
        Self::spread(estimate, random)
    }

    /// When a caller refused because its expected start (`estimate`) lay past the wait it
    /// allows (`allowed`) should come back: once the queue ahead of it has drained by the
    /// difference, so that its retry is queued and started in time, plus a jitter bounded by
    /// [`bound(estimate)`](RetryJitter::bound).
    pub fn come_back_after(&mut self, estimate: Duration, allowed: Duration) -> Duration {
        let random = self.next();
        Self::spread_wait(estimate.saturating_sub(allowed), estimate, random)
    }

    /// `wait` plus the jitter `random` picks within `[0, bound(estimate)]`.
    pub fn spread_wait(wait: Duration, estimate: Duration, random: u64) -> Duration {
        let bound = Self::bound(estimate).as_nanos() as u64;
        if bound == 0 {
            return wait;
        }
        wait + Duration::from_nanos(random % (bound + 1))
    }

    /// `estimate` plus the jitter that `random` (any uniformly distributed value) picks
    /// within `[0, bound(estimate)]`: for callers that bring their own randomness.
    pub fn spread(estimate: Duration, random: u64) -> Duration {
        let bound = Self::bound(estimate).as_nanos() as u64;
        if bound == 0 {
            return estimate;
        }
        estimate + Duration::from_nanos(random % (bound + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let mut j = RetryJitter::new(7);
        let estimate = Duration::from_secs(4);
        let draws: Vec<Duration> = (0..1000).map(|_| j.retry_after(estimate)).collect();
        assert!(draws.iter().all(|d| *d >= estimate));
        assert!(draws
            .iter()
            .all(|d| *d <= estimate + Duration::from_millis(500)));
        let late = draws
            .iter()
            .filter(|d| **d > estimate + Duration::from_millis(250))
            .count();
        assert!((300..700).contains(&late), "about half late: {late}");
    }

    #[test]
    fn a_refused_caller_comes_back_when_its_start_fits_its_deadline() {
        let mut j = RetryJitter::new(3);
        // Expected to start in 7 s, willing to wait 5 s: back in 2 s, spread over 875 ms.
        for _ in 0..1000 {
            let d = j.come_back_after(Duration::from_secs(7), Duration::from_secs(5));
            assert!(d >= Duration::from_secs(2), "{d:?}");
            assert!(d <= Duration::from_millis(2875), "{d:?}");
        }
    }

    #[test]
    fn jitter_is_capped_at_one_second() {
        let mut j = RetryJitter::new(1);
        let estimate = Duration::from_secs(60);
        assert_eq!(RetryJitter::bound(estimate), Duration::from_secs(1));
        for _ in 0..1000 {
            let d = j.retry_after(estimate);
            assert!(d >= estimate && d <= estimate + Duration::from_secs(1));
        }
        assert_eq!(j.retry_after(Duration::ZERO), Duration::ZERO);
    }
}
