//! The local pre-check: users Redis already refused, and users whose requests on this
//! replica alone fill their in-flight cap, are refused without a round trip.

use crate::limit::UserKey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// Per user: refused by the rate until when, and how many of this replica's requests are in
/// flight. Entries go when they no longer say anything (time passed, count back to zero).
#[derive(Debug)]
pub(super) struct PreCheck {
    shards: [Mutex<HashMap<UserKey, Entry>>; SHARDS],
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    refused_until: Option<Instant>,
    in_flight: u32,
}

impl Entry {
    fn is_empty(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.refused_until.is_none_or(|t| t <= now)
    }
}

/// Why the pre-check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Redis refused the rate until this long from now.
    Rate(Duration),
    /// This replica alone holds the cap.
    InFlight,
}

impl PreCheck {
    pub(super) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, key: &UserKey) -> std::sync::MutexGuard<'_, HashMap<UserKey, Entry>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.shards[(h.finish() as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` is refused without asking Redis.
    pub(super) fn refuses(&self, key: &UserKey, cap: u32, now: Instant) -> Option<Refusal> {
        let shard = self.shard(key);
        let entry = shard.get(key)?;
        if let Some(until) = entry.refused_until.filter(|t| *t > now) {
            return Some(Refusal::Rate(until - now));
        }
        (entry.in_flight >= cap).then_some(Refusal::InFlight)
    }

    /// Redis refused `key`'s rate until `now + wait` (GCRA's next allowed time only moves
    /// later, so every request before then would be refused too).
    pub(super) fn refused_until(&self, key: &UserKey, until: Instant) {
        self.shard(key)
            .entry(key.clone())
            .or_default()
            .refused_until = Some(until);
    }

    /// One more of this replica's requests of `key` in flight.
    pub(super) fn enter(&self, key: &UserKey) {
        self.shard(key).entry(key.clone()).or_default().in_flight += 1;
    }

    /// One fewer.
    pub(super) fn leave(&self, key: &UserKey, now: Instant) {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.is_empty(now) {
                shard.remove(key);
            }
        }
    }

    /// Forgets entries that no longer refuse anything.
    pub(super) fn housekeeping(&self, now: Instant) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, e| !e.is_empty(now));
        }
    }

    /// Users with an entry.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_last_as_long_as_redis_said_and_then_go() {
        let p = PreCheck::new();
        let a = UserKey::new("a");
        let t0 = Instant::now();
        assert_eq!(p.refuses(&a, 2, t0), None);
        p.refused_until(&a, t0 + Duration::from_millis(100));
        assert_eq!(
            p.refuses(&a, 2, t0 + Duration::from_millis(40)),
            Some(Refusal::Rate(Duration::from_millis(60)))
        );
        assert_eq!(p.refuses(&a, 2, t0 + Duration::from_millis(100)), None);
        p.housekeeping(t0 + Duration::from_millis(100));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn this_replicas_own_requests_fill_the_cap() {
        let p = PreCheck::new();
        let a = UserKey::new("a");
        let now = Instant::now();
        p.enter(&a);
        p.enter(&a);
        assert_eq!(p.refuses(&a, 2, now), Some(Refusal::InFlight));
        p.leave(&a, now);
        assert_eq!(p.refuses(&a, 2, now), None);
        p.leave(&a, now);
        assert_eq!(p.len(), 0);
    }
}
