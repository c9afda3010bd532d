//! Per-user limits: a GCRA rate (governor) and an in-flight cap, tighter under pressure.
//!
//! A user's key is hashed once per request to find the one entry that holds all of its
//! state: the two rate cells (normal and tight) and, in its reference count, the requests in
//! flight. A request takes a short lock on one of many shards to find the entry, check its
//! cap and its rate cells and, when both allow it, take a reference to it: its permit.
//! Dropping the permit gives the in-flight slot back. A check reads the clock once: its
//! reading is the time of both rate cells ([`CheckClock`]) and of the entry's last use.

use super::check_clock::CheckClock;
use super::UserKey;
use crate::config::UserLimits;
use crate::criticality::Criticality;
use crate::monitor::Level;
use crate::rejection::{Rejection, RejectionKind};
use crate::stripes::CachePadded;
use crate::u64_hash::U64Map;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const SHARDS: usize = 64;

/// "Never checked" for a rate cell's last use.
const NEVER: u64 = u64::MAX;

/// One GCRA rate cell, on the time of the limiter's check in progress.
type RateCell = RateLimiter<NotKeyed, InMemoryState, CheckClock, NoOpMiddleware<Nanos>>;

/// Everything the limiter knows about one user, behind one hash lookup. Its requests in
/// flight are its reference count less the shard's own reference: every other reference is
/// an [`InFlightPermit`], and permits are only made under the shard's lock, so the count read
/// there is never below the true one (a permit dropped meanwhile only lowers it).
#[derive(Debug)]
struct UserEntry {
    normal: RateCell,
    tight: RateCell,
    /// When each rate cell was last checked, in nanoseconds since the limiter's start
    /// ([`NEVER`] before): an entry whose cells have refilled since is forgotten.
    normal_used: AtomicU64,
    tight_used: AtomicU64,
    /// Until when the user was last told to stay away (`Retry-After`), in the same
    /// nanoseconds; 0 before its first refusal.
    told_until: AtomicU64,
}

/// Entries by the key's hash (seeded per process: two users share an entry only on a 64-bit
/// collision no one outside can aim for).
type Shard = Mutex<U64Map<Arc<UserEntry>>>;

/// Per-user rate and in-flight limits.
///
/// Memory stays bounded: [`UserLimiter::housekeeping`] forgets a user with nothing in flight
/// once its rate cells are full again (a new entry would start the same).
#[derive(Debug)]
pub(crate) struct UserLimiter {
    config: UserLimits,
    normal_quota: Quota,
    tight_quota: Quota,
    /// Each on lines of its own: two users' requests on two cores take two locks that share
    /// no line.
    shards: [CachePadded<Shard>; SHARDS],
    hasher: foldhash::quality::RandomState,
    clock: DefaultClock,
    start: <DefaultClock as Clock>::Instant,
}

/// Holds one of a user's in-flight slots: a reference to the user's entry, so dropping it
/// gives the slot back.
#[derive(Debug)]
pub(crate) struct InFlightPermit {
    /// Never read: held for the count it adds to.
    _entry: Arc<UserEntry>,
}

/// A refused user's `Retry-After` window at one moment: whether the user came back before
/// the end of the window it was told last, and (with [`UserLimiter::tell`]) a new window to
/// tell it. It holds no reference to the entry, which would count as a request in flight.
#[derive(Debug)]
pub(crate) struct RetryWindow {
    hash: u64,
    told_until: u64,
    now: u64,
}

impl RetryWindow {
    /// The user is back before the `Retry-After` it was last told ran out.
    pub(crate) fn came_back_early(&self) -> bool {
        self.now < self.told_until
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    // Validation guarantees both are at least 1.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl UserLimiter {
    pub(crate) fn new(config: UserLimits) -> Self {
        let clock = DefaultClock::default();
        Self {
            normal_quota: quota(config.rate_per_second, config.burst),
            tight_quota: quota(config.tight_rate_per_second, config.tight_burst),
            shards: std::array::from_fn(|_| CachePadded(Mutex::default())),
            hasher: foldhash::quality::RandomState::default(),
            start: clock.now(),
            clock,
            config,
        }
    }

    /// Checks one request of `key` at `level`: the in-flight cap first, then the rate (normal
    /// quota, and the tight one too at Warning and above). A request refused at the cap spends
    /// no rate token, so a client retrying against its cap does not burn its quota; one
    /// refused on the rate takes no in-flight slot. All of it under the shard's lock: the
    /// permit is taken only once both allow the request, so a refusal touches no reference
    /// count.
    pub(crate) fn check(
        &self,
        key: &UserKey,
        level: Level,
        class: Criticality,
    ) -> Result<InFlightPermit, Rejection> {
        self.check_at(key, level, class, self.since_start())
    }

    /// [`check`](Self::check) as of `now` (since the limiter's start): the time every rate
    /// cell of the check sees.
    fn check_at(
        &self,
        key: &UserKey,
        level: Level,
        class: Criticality,
        now: Nanos,
    ) -> Result<InFlightPermit, Rejection> {
        let tight = level != Level::Normal;
        let cap = if tight {
            self.config.tight_in_flight
        } else {
            self.config.in_flight
        };
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_of(hash);
        let entry = self.entry_in(&mut shard, hash, now);
        // The shard's own reference is not a request: at the cap, the count is one more.
        if Arc::strong_count(entry) > cap as usize {
            return Err(Rejection {
                kind: RejectionKind::InFlightLimit { limit: cap },
                class,
                retry_after: Duration::from_secs(1),
            });
        }
        entry.normal_used.store(now.as_u64(), Ordering::Relaxed);
        Self::check_rate(&entry.normal, now, self.config.burst, class)?;
        if tight {
            entry.tight_used.store(now.as_u64(), Ordering::Relaxed);
            Self::check_rate(&entry.tight, now, self.config.tight_burst, class)?;
        }
        Ok(InFlightPermit {
            _entry: entry.clone(),
        })
    }

    /// The time since the limiter's start, by its clock.
    fn since_start(&self) -> Nanos {
        self.clock.now().duration_since(self.start)
    }

    /// Checks one cell whose clock reads `now` (set for the check): a refusal waits from
    /// then.
    fn check_rate(
        limiter: &RateCell,
        now: Nanos,
        limit: u32,
        class: Criticality,
    ) -> Result<(), Rejection> {
        limiter.check().map_err(|not_until| Rejection {
            kind: RejectionKind::RateLimited { limit },
            class,
            retry_after: not_until.wait_time_from(now),
        })
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, U64Map<Arc<UserEntry>>> {
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard that holds the entry of a key that hashes to `hash`, locked.
    fn shard_of(&self, hash: u64) -> MutexGuard<'_, U64Map<Arc<UserEntry>>> {
        self.shard((hash >> 58) as usize % SHARDS)
    }

    /// The entry of the key that hashes to `hash` in its (locked) `shard`, made on its first
    /// request and kept until housekeeping finds it idle, so a user's next request finds it
    /// without allocating. `now` becomes the reading every rate cell sees for the rest of
    /// the call ([`CheckClock`]): a cell made here starts at it, and a cell checked next
    /// decides at it.
    fn entry_in<'a>(
        &self,
        shard: &'a mut U64Map<Arc<UserEntry>>,
        hash: u64,
        now: Nanos,
    ) -> &'a Arc<UserEntry> {
        CheckClock::set(now);
        shard.entry(hash).or_insert_with(|| {
            Arc::new(UserEntry {
                normal: RateLimiter::direct_with_clock(self.normal_quota, CheckClock),
                tight: RateLimiter::direct_with_clock(self.tight_quota, CheckClock),
                normal_used: AtomicU64::new(NEVER),
                tight_used: AtomicU64::new(NEVER),
                told_until: AtomicU64::new(0),
            })
        })
    }

    /// `key`'s `Retry-After` window now, to note a refusal in.
    pub(crate) fn retry_window(&self, key: &UserKey) -> RetryWindow {
        let hash = self.hasher.hash_one(key);
        let now = self.since_start();
        let mut shard = self.shard_of(hash);
        let told_until = self
            .entry_in(&mut shard, hash, now)
            .told_until
            .load(Ordering::Acquire);
        RetryWindow {
            hash,
            told_until,
            now: now.as_u64(),
        }
    }

    /// Notes that the user of `window` was told to come back in `in_` (from the window's
    /// moment).
    pub(crate) fn tell(&self, window: RetryWindow, in_: Duration) {
        let until = window.now.saturating_add(in_.as_nanos() as u64);
        let mut shard = self.shard_of(window.hash);
        // An entry housekeeping dropped since the window is made again as of the window.
        self.entry_in(&mut shard, window.hash, Nanos::from(window.now))
            .told_until
            .fetch_max(until, Ordering::AcqRel);
    }

    /// Requests in flight for `key`.
    #[cfg(test)]
    pub(crate) fn in_flight_of(&self, key: &UserKey) -> u32 {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_of(hash);
        (Arc::strong_count(self.entry_in(&mut shard, hash, self.since_start())) - 1) as u32
    }

    /// Users the limiter currently holds state for.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).len()).sum()
    }

    /// Forgets users with nothing in flight whose rate cells are full again and whose last
    /// `Retry-After` has run out, and returns memory.
    pub(crate) fn housekeeping(&self) {
        let now = self.since_start().as_u64();
        let refilled = |used: &AtomicU64, quota: &Quota| match used.load(Ordering::Relaxed) {
            NEVER => true,
            at => Duration::from_nanos(now.saturating_sub(at)) >= quota.burst_size_replenished_in(),
        };
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            // Under the shard lock no permit can be made from an entry; one no permit holds
            // (strong count 1) has nothing in flight.
            shard.retain(|_, e| {
                Arc::strong_count(e) > 1
                    || !refilled(&e.normal_used, &self.normal_quota)
                    || !refilled(&e.tight_used, &self.tight_quota)
                    || e.told_until.load(Ordering::Acquire) > now
            });
            shard.shrink_to_fit();
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
            ..UserLimits::default()
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
        // Its rate cell has not refilled yet: housekeeping keeps the entry, at zero.
        l.housekeeping();
        assert_eq!(l.tracked_keys(), 2);
        assert_eq!(l.in_flight_of(&a), 0);
        assert!(l.check(&a, Level::Normal, Criticality::Standard).is_ok());
    }

    #[test]
    fn a_check_decides_both_rate_cells_at_its_one_reading() {
        // Times come from the readings passed in, not from the test's clock: a cell that
        // read a clock of its own would see microseconds pass, not hundreds of milliseconds.
        let at = |ms| Nanos::from(Duration::from_millis(ms));
        let a = UserKey::new("a");
        // Each cell alone at a burst of 1 and a request a second, with no cap in the way:
        // the normal one at Normal, the tight one at Warning (the normal rate generous).
        for (normal_per_second, level) in [(1, Level::Normal), (1000, Level::Warning)] {
            let l = UserLimiter::new(UserLimits {
                rate_per_second: normal_per_second,
                burst: normal_per_second,
                in_flight: 100,
                tight_rate_per_second: 1,
                tight_burst: 1,
                tight_in_flight: 100,
                ..limits()
            });
            let check = |ms| l.check_at(&a, level, Criticality::Standard, at(ms));
            drop(check(10_000).unwrap());
            let early = check(10_400).unwrap_err();
            assert_eq!(
                early.kind,
                RejectionKind::RateLimited { limit: 1 },
                "{level:?}"
            );
            assert_eq!(early.retry_after, Duration::from_millis(600), "{level:?}");
            assert!(check(11_000).is_ok(), "{level:?}");
        }
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
    fn the_in_flight_cap_holds_exactly_under_concurrent_requests() {
        const CAP: u32 = 3;
        let l = Arc::new(UserLimiter::new(UserLimits {
            rate_per_second: 1_000_000,
            burst: 1_000_000,
            in_flight: CAP,
            ..limits()
        }));
        let a = UserKey::new("a");
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, a) = (l.clone(), a.clone());
                let (held, most, refused) = (held.clone(), most.clone(), refused.clone());
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        match l.check(&a, Level::Normal, Criticality::Standard) {
                            Ok(permit) => {
                                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                                most.fetch_max(now, Ordering::SeqCst);
                                std::thread::yield_now();
                                held.fetch_sub(1, Ordering::SeqCst);
                                drop(permit);
                            }
                            Err(e) => {
                                assert_eq!(e.kind, RejectionKind::InFlightLimit { limit: CAP });
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= CAP as usize, "{most} requests in flight at once");
        assert!(
            refused.load(Ordering::SeqCst) > 0,
            "the cap was never reached"
        );
        assert_eq!(l.in_flight_of(&a), 0);
    }

    #[test]
    fn a_retry_window_is_not_a_request_in_flight() {
        let l = UserLimiter::new(UserLimits {
            in_flight: 1,
            ..limits()
        });
        let a = UserKey::new("a");
        let window = l.retry_window(&a);
        let permit = l.check(&a, Level::Normal, Criticality::Standard);
        assert!(permit.is_ok(), "refused with a window open: {permit:?}");
        assert_eq!(l.in_flight_of(&a), 1);
        l.tell(window, Duration::from_secs(1));
        drop(permit);
        assert_eq!(l.in_flight_of(&a), 0);
    }

    #[test]
    fn a_user_back_before_its_retry_after_came_back_early() {
        let l = UserLimiter::new(limits());
        let a = UserKey::new("a");
        let first = l.retry_window(&a);
        assert!(!first.came_back_early(), "never told anything");
        l.tell(first, Duration::from_secs(60));
        assert!(l.retry_window(&a).came_back_early());
        // Another user's window is its own.
        assert!(!l.retry_window(&UserKey::new("b")).came_back_early());
        // A window that ran out: back in time.
        let c = UserKey::new("c");
        l.tell(l.retry_window(&c), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.retry_window(&c).came_back_early());
        // Housekeeping keeps a user while its window is open.
        l.housekeeping();
        assert!(l.retry_window(&a).came_back_early());
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
    }
}
