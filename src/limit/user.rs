//! Per-user limits: a GCRA rate (governor) and an in-flight cap, tighter under pressure.

use super::UserKey;
use crate::rejection::{Rejection, RejectionKind};
use crate::{Criticality, Level, UserLimits};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHARDS: usize = 16;

/// One user's in-flight count. Shared by the shard map and every permit of the user: a
/// permit is taken by one increment and given back by one decrement, without the map.
#[derive(Debug, Default)]
struct InFlightEntry {
    count: AtomicU32,
}

/// Hashes a key hashed already (the map's keys are hashes): the value as is.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// In-flight entries by the key's hash (a per-process random SipHash: two users share an
/// entry only on a 64-bit collision no one outside can aim for).
type Shard = Mutex<HashMap<u64, Arc<InFlightEntry>, BuildHasherDefault<Prehashed>>>;

/// Per-user rate and in-flight limits.
///
/// Memory stays bounded: in-flight entries are removed when a user's last request ends, and
/// [`UserLimiter::housekeeping`] drops rate-limiter state of keys whose bucket is full again.
#[derive(Debug)]
pub(crate) struct UserLimiter {
    config: UserLimits,
    normal: DefaultKeyedRateLimiter<UserKey>,
    tight: DefaultKeyedRateLimiter<UserKey>,
    in_flight: [Shard; SHARDS],
    hasher: RandomState,
}

/// Holds one of a user's in-flight slots; releases it on drop (one atomic decrement).
#[derive(Debug)]
pub(crate) struct InFlightPermit {
    entry: Arc<InFlightEntry>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    // Validation guarantees both are at least 1.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl UserLimiter {
    pub(crate) fn new(config: UserLimits) -> Self {
        Self {
            normal: RateLimiter::keyed(quota(config.rate_per_second, config.burst)),
            tight: RateLimiter::keyed(quota(config.tight_rate_per_second, config.tight_burst)),
            in_flight: std::array::from_fn(|_| Mutex::default()),
            hasher: RandomState::new(),
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

    /// The key's entry, made on its first request (and kept until housekeeping finds it
    /// idle, so a user's next request finds it without allocating).
    fn entry_of(&self, key: &UserKey) -> Arc<InFlightEntry> {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.in_flight[(hash >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.entry(hash).or_default().clone()
    }

    fn enter(&self, key: &UserKey, cap: u32) -> Option<InFlightPermit> {
        let entry = self.entry_of(key);
        entry
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(InFlightPermit { entry })
    }

    /// Requests in flight for `key`.
    #[cfg(test)]
    pub(crate) fn in_flight_of(&self, key: &UserKey) -> u32 {
        self.entry_of(key).count.load(Ordering::Acquire)
    }

    /// Keys the rate limiters currently hold state for.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.normal.len() + self.tight.len()
    }

    /// Forgets rate state of keys whose bucket is full again, and in-flight entries of keys
    /// with nothing in flight, and returns memory.
    pub(crate) fn housekeeping(&self) {
        for limiter in [&self.normal, &self.tight] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for shard in &self.in_flight {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Under the shard lock no permit can be made from an entry; one no permit holds
            // (strong count 1) and at zero is idle.
            shard.retain(|_, e| Arc::strong_count(e) > 1 || e.count.load(Ordering::Acquire) > 0);
            shard.shrink_to_fit();
        }
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.entry.count.fetch_sub(1, Ordering::AcqRel);
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
        l.housekeeping();
        assert!(l.in_flight.iter().all(|s| s.lock().unwrap().is_empty()));
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
