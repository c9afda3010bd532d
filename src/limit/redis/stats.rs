//! [`SharedLimitStats`]: what the shared limiter did, for tests, dashboards and logs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts since the limits were shared. A plain snapshot: the fields are read one by one,
/// so they are not guaranteed to be consistent with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedLimitStats {
    /// Checks answered by Redis.
    pub round_trips: u64,
    /// Checks refused by the local pre-check without a round trip.
    pub refused_locally: u64,
    /// Checks that waited the full timeout for Redis (then answered by the fallback).
    pub timeouts: u64,
    /// Checks that failed with a Redis error (then answered by the fallback).
    pub errors: u64,
    /// Checks answered by the local fallback (while Redis was unavailable, or after one of
    /// the above).
    pub fallback_checks: u64,
    /// Whether Redis is in use right now (false while the fallback answers).
    pub available: bool,
    /// Live replicas, as the last heartbeat read them (the fallback's divisor).
    pub live_instances: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) round_trips: AtomicU64,
    pub(super) refused_locally: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) fallback_checks: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, available: bool, live_instances: u64) -> SharedLimitStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedLimitStats {
            round_trips: get(&self.round_trips),
            refused_locally: get(&self.refused_locally),
            timeouts: get(&self.timeouts),
            errors: get(&self.errors),
            fallback_checks: get(&self.fallback_checks),
            available,
            live_instances,
        }
    }
}
