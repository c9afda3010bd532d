//! The registry of connections held through the guard: who holds what, since when, for which
//! route and user. Sharded, so registering and forgetting a connection takes one short lock
//! on a shard that threads rarely share, never a lock every request takes.
//!
//! The watchdog scans it for leaks and looks up the route of a backend it acts on.

use crate::criticality::Criticality;
use crate::limit::UserKey;
use crate::u64_hash::U64Map;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many shards: a power of two, more than the threads that register at once on most
/// hosts.
const SHARDS: usize = 32;

/// Hands each thread its shard, round robin.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The shard of the calling thread.
fn my_shard() -> usize {
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

/// One connection held through the guard.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) since: Instant,
    pub(crate) class: Criticality,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) user: Option<UserKey>,
    /// Whether a leak was already reported for it (one event per connection).
    pub(crate) leak_reported: bool,
}

/// A connection held longer than the leak threshold, reported once.
#[derive(Debug, Clone)]
pub(crate) struct Leak {
    pub(crate) class: Criticality,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) user: Option<UserKey>,
    pub(crate) held: Duration,
}

/// One shard: held connections by sequence number (an id over the shard count), and the
/// next sequence number.
#[derive(Debug, Default)]
struct Shard {
    held: U64Map<Held>,
    next: u64,
}

/// Held connections by registry id; an id names its shard in its low bits.
#[derive(Debug, Default)]
pub(crate) struct HeldRegistry {
    shards: [Mutex<Shard>; SHARDS],
}

impl HeldRegistry {
    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a connection handed out now; returns its id.
    pub(crate) fn insert(
        &self,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> u64 {
        let index = my_shard();
        let mut shard = self.shard(index);
        let sequence = shard.next;
        shard.next += 1;
        shard.held.insert(
            sequence,
            Held {
                since: now,
                class,
                route,
                user,
                leak_reported: false,
            },
        );
        sequence * SHARDS as u64 + index as u64
    }

    /// Forgets a connection that came back.
    pub(crate) fn remove(&self, id: u64) {
        self.shard(id as usize % SHARDS)
            .held
            .remove(&(id / SHARDS as u64));
    }

    /// The route and user of the connection with registry id `id`, if it is still held.
    pub(crate) fn route_of(&self, id: u64) -> Option<(Option<Arc<str>>, Option<UserKey>)> {
        self.shard(id as usize % SHARDS)
            .held
            .get(&(id / SHARDS as u64))
            .map(|h| (h.route.clone(), h.user.clone()))
    }

    /// How many connections are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).held.len()).sum()
    }

    /// Connections held longer than `after` that were not reported yet; marks them reported.
    pub(crate) fn take_leaks(&self, after: Duration, now: Instant) -> Vec<Leak> {
        let mut leaks = Vec::new();
        for i in 0..SHARDS {
            for h in self.shard(i).held.values_mut() {
                let held = now.saturating_duration_since(h.since);
                if !h.leak_reported && held >= after {
                    h.leak_reported = true;
                    leaks.push(Leak {
                        class: h.class,
                        route: h.route.clone(),
                        user: h.user.clone(),
                        held,
                    });
                }
            }
        }
        leaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_reported_once_and_forgotten_on_release() {
        let t0 = Instant::now();
        let r = HeldRegistry::default();
        let id = r.insert(
            Criticality::Standard,
            Some("/export".into()),
            Some(UserKey::new("u1")),
            t0,
        );
        r.insert(
            Criticality::Critical,
            None,
            None,
            t0 + Duration::from_secs(5),
        );
        assert!(r.take_leaks(Duration::from_secs(10), t0).is_empty());
        let leaks = r.take_leaks(Duration::from_secs(10), t0 + Duration::from_secs(11));
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].route.as_deref(), Some("/export"));
        assert_eq!(leaks[0].held, Duration::from_secs(11));
        assert!(r
            .take_leaks(Duration::from_secs(10), t0 + Duration::from_secs(12))
            .is_empty());
        r.remove(id);
        assert_eq!(r.len(), 1);
        assert!(r.route_of(id).is_none());
    }
}
