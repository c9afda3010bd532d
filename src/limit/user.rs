//! Per-user limits: a GCRA rate (governor) and an in-flight cap, tighter under pressure.

use super::UserKey;
use crate::rejection::{Rejection, RejectionKind};
use crate::{Criticality, Level, UserLimits};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHARDS: usize = 16;

/// Per-user rate and in-flight limits.
///
/// Memory stays bounded: in-flight entries are removed when a user's last request ends, and
/// [`UserLimiter::housekeeping`] drops rate-limiter state of keys whose bucket is full again.
#[derive(Debug)]
pub(crate) struct UserLimiter {
    config: UserLimits,
    normal: DefaultKeyedRateLimiter<UserKey>,
    tight: DefaultKeyedRateLimiter<UserKey>,
    in_flight: Arc<[Mutex<HashMap<UserKey, u32>>; SHARDS]>,
}

/// Holds one of a user's in-flight slots; releases it on drop.
#[derive(Debug)]
pub(crate) struct InFlightPermit {
    shards: Arc<[Mutex<HashMap<UserKey, u32>>; SHARDS]>,
    key: UserKey,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    // Validation guarantees both are at least 1.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

fn shard_of(key: &UserKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl UserLimiter {
    pub(crate) fn new(config: UserLimits) -> Self {
        Self {
            normal: RateLimiter::keyed(quota(config.rate_per_second, config.burst)),
            tight: RateLimiter::keyed(quota(config.tight_rate_per_second, config.tight_burst)),
            in_flight: Arc::new(std::array::from_fn(|_| Mutex::new(HashMap::new()))),
            config,
        }
    }

    /// Checks one request of `key` at `level`: the in-flight cap first, then the rate (normal
    /// quota, and the tight one too at Warning and above). A request refused at the cap spends
    /// no rate token, so a client retrying against its cap does not burn its quota; one
    /// refused on the rate gives its in-flight slot back at once.
    pub(crate) fn check(
        &self,
        key: &UserKey,
        level: Level,
        class: Criticality,
    ) -> Result<InFlightPermit, Rejection> {
        let tight = level != Level::Normal;
        let cap = if tight {
            self.config.tight_in_flight
        } else {
            self.config.in_flight
        };
        let permit = self.enter(key, cap).ok_or(Rejection {
            kind: RejectionKind::InFlightLimit { limit: cap },
            class,
            retry_after: Duration::from_secs(1),
        })?;
        self.check_rate(&self.normal, key, self.config.burst, class)?;
        if tight {
            self.check_rate(&self.tight, key, self.config.tight_burst, class)?;
        }
        Ok(permit)
    }

    fn check_rate(
        &self,
        limiter: &DefaultKeyedRateLimiter<UserKey>,
        key: &UserKey,
        limit: u32,
        class: Criticality,
    ) -> Result<(), Rejection> {
        limiter.check_key(key).map_err(|not_until| Rejection {
            kind: RejectionKind::RateLimited { limit },
            class,
            retry_after: not_until.wait_time_from(limiter.clock().now()),
        })
    }

    fn enter(&self, key: &UserKey, cap: u32) -> Option<InFlightPermit> {
        let mut shard = self.in_flight[shard_of(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = shard.entry(key.clone()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(InFlightPermit {
            shards: self.in_flight.clone(),
            key: key.clone(),
        })
    }

    /// Requests in flight for `key`.
    #[cfg(test)]
    pub(crate) fn in_flight_of(&self, key: &UserKey) -> u32 {
        let shard = self.in_flight[shard_of(key)].lock().unwrap();
        shard.get(key).copied().unwrap_or(0)
    }

    /// Keys the rate limiters currently hold state for.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.normal.len() + self.tight.len()
    }

    /// Forgets rate state of keys whose bucket is full again and returns memory.
    pub(crate) fn housekeeping(&self) {
        for limiter in [&self.normal, &self.tight] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        let mut shard = self.shards[shard_of(&self.key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = shard.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UserLimits {
        UserLimits {
            rate_per_second: 1000,
            burst: 1000,
            in_flight: 3,
            tight_rate_per_second: 1,
            tight_burst: 2,
            tight_in_flight: 1,
            max_key_len: 64,
        }
    }

    #[test]
    fn in_flight_cap_is_per_user_and_released_on_drop() {
        let l = UserLimiter::new(limits());
        let a = UserKey::new("a");
        let held: Vec<_> = (0..3)
            .map(|_| l.check(&a, Level::Normal, Criticality::Standard).unwrap())
            .collect();
        let err = l
            .check(&a, Level::Normal, Criticality::Standard)
            .unwrap_err();
        assert_eq!(err.kind, RejectionKind::InFlightLimit { limit: 3 });
        // Another user is not affected.
        assert!(l
            .check(&UserKey::new("b"), Level::Normal, Criticality::Standard)
            .is_ok());
        drop(held);
        assert_eq!(l.in_flight_of(&a), 0);
        assert!(l.check(&a, Level::Normal, Criticality::Standard).is_ok());
    }

    #[test]
    fn limits_tighten_at_warning() {
        let l = UserLimiter::new(limits());
        let a = UserKey::new("a");
        let _first = l.check(&a, Level::Warning, Criticality::Standard).unwrap();
        let err = l
            .check(&a, Level::Warning, Criticality::Standard)
            .unwrap_err();
        assert_eq!(err.kind, RejectionKind::InFlightLimit { limit: 1 });
    }

    #[test]
    fn tight_rate_answers_with_a_retry_time() {
        let l = UserLimiter::new(limits());
        let a = UserKey::new("a");
        for _ in 0..2 {
            drop(l.check(&a, Level::Critical, Criticality::Standard).unwrap());
        }
        let err = l
            .check(&a, Level::Critical, Criticality::Standard)
            .unwrap_err();
        assert_eq!(err.kind, RejectionKind::RateLimited { limit: 2 });
        assert!(err.retry_after > Duration::ZERO && err.retry_after <= Duration::from_secs(1));
    }

    #[test]
    fn a_retry_refused_at_the_in_flight_cap_spends_no_rate_token() {
        // A burst of 3 and a refill far slower than the test.
        let l = UserLimiter::new(UserLimits {
            rate_per_second: 1,
            burst: 3,
            in_flight: 1,
            ..limits()
        });
        let a = UserKey::new("a");
        let held = l.check(&a, Level::Normal, Criticality::Standard).unwrap();
        for _ in 0..10 {
            let refused = l
                .check(&a, Level::Normal, Criticality::Standard)
                .unwrap_err();
            assert_eq!(refused.kind, RejectionKind::InFlightLimit { limit: 1 });
        }
        drop(held);
        // One token went to the first request; the ten refused retries spent none.
        for _ in 0..2 {
            drop(l.check(&a, Level::Normal, Criticality::Standard).unwrap());
        }
        let err = l
            .check(&a, Level::Normal, Criticality::Standard)
            .unwrap_err();
        assert_eq!(err.kind, RejectionKind::RateLimited { limit: 3 });
        // A request refused on the rate does not keep an in-flight slot.
        assert_eq!(l.in_flight_of(&a), 0);
    }

    #[test]
    fn memory_is_reclaimed_for_many_distinct_keys() {
        let l = UserLimiter::new(UserLimits {
            rate_per_second: 1_000_000,
            burst: 1,
            ..limits()
        });
        for i in 0..100_000u32 {
            drop(l.check(
                &UserKey::new(i.to_string()),
                Level::Normal,
                Criticality::Standard,
            ));
        }
        assert!(l.tracked_keys() >= 100_000);
        // With one request each and a refill of a microsecond, every bucket is full again
        // well before housekeeping runs.
        std::thread::sleep(Duration::from_millis(20));
        l.housekeeping();
        assert_eq!(l.tracked_keys(), 0);
        let shards_empty = l.in_flight.iter().all(|s| s.lock().unwrap().is_empty());
        assert!(shards_empty);
    }
}
