//! The registry of connections held through the guard: who holds what, since when, for which
//! route and user. Sharded, so registering and forgetting a connection takes one short lock
//! on a shard that threads rarely share, never a lock every request takes.
//!
//! The watchdog scans it for leaks and looks up the route of a backend it acts on. It is
//! its only reader, so nothing is recorded until a watchdog [watches](HeldRegistry::watch)
//! the guard: a guard without one registers and forgets no connection (two shard locks per
//! request fewer), and one with a watchdog records every connection handed out from then on.

use crate::criticality::Criticality;
use crate::limit::UserKey;
use crate::stripes::{stripe_number, CachePadded};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many shards: a power of two, more than the threads that register at once on most
/// hosts.
const SHARDS: usize = 32;

/// The shard of the calling thread: its stripe number, which no other live thread has while
/// fewer threads than there are owned stripes count.
fn my_shard() -> usize {
    stripe_number() % SHARDS
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

/// One shard: a slab of held connections. A free slot is reused before the slab grows, and
/// each reuse bumps the slot's generation, so an id names one connection, never a later one
/// in the same slot (for the 2^32 reuses of that slot it takes the generation to wrap).
#[derive(Debug, Default)]
struct Shard {
    slots: Vec<Slot>,
    /// Indexes of free slots, the last freed last.
    free: Vec<u32>,
}

/// One slot of a shard's slab.
#[derive(Debug, Default)]
struct Slot {
    /// Bumped each time the slot is taken.
    generation: u32,
    held: Option<Held>,
}

/// How many bits of an id name its shard. The slot index has the 27 bits between them and
/// the generation: far more connections than a shard ever holds at once.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// Held connections by registry id: an id is its slot's generation (high 32 bits), its
/// index in the shard's slab, and its shard (the low bits).
#[derive(Debug, Default)]
pub(crate) struct HeldRegistry {
    /// Set once a watchdog reads the registry: connections are recorded from then on.
    watched: AtomicBool,
    /// Each on lines of its own: the threads that register at once write different shards,
    /// and no line.
    shards: [CachePadded<Mutex<Shard>>; SHARDS],
}

/// Where an id points: shard, slot index, generation.
fn parts(id: u64) -> (usize, usize, u32) {
    let shard = (id % SHARDS as u64) as usize;
    let index = ((id >> SHARD_BITS) & u64::from(u32::MAX >> SHARD_BITS)) as usize;
    (shard, index, (id >> 32) as u32)
}

impl Shard {
    /// Slot `index`, if it was last taken for the connection of `generation` (its `held` is
    /// `None` once that connection is forgotten).
    fn slot_of(&mut self, index: usize, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index)
            .filter(|slot| slot.generation == generation)
    }
}

impl HeldRegistry {
    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts recording the connections handed out from now on, for a reader (the
    /// watchdog). Connections held already stay unrecorded until they come back.
    pub(crate) fn watch(&self) {
        // A racing insert may or may not see it: either is a connection handed out as the
        // watch began. What the watchdog publishes after this (its tag prefix) is published
        // with release, so an acquisition that sees that sees this too.
        self.watched.store(true, Ordering::Relaxed);
    }

    /// Records a connection handed out now, if the registry is [watched](Self::watch);
    /// returns its id then. The route is cloned only to be recorded.
    pub(crate) fn insert(
        &self,
        class: Criticality,
        route: Option<&Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Option<u64> {
        if !self.watched.load(Ordering::Relaxed) {
            return None;
        }
        let held = Held {
            since: now,
            class,
            route: route.cloned(),
            user,
            leak_reported: false,
        };
        let shard_index = my_shard();
        let mut shard = self.shard(shard_index);
        let index = match shard.free.pop() {
            Some(index) => index as usize,
            None => {
                shard.slots.push(Slot::default());
                shard.slots.len() - 1
            }
        };
        let slot = &mut shard.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.held = Some(held);
        let generation = slot.generation;
        Some((u64::from(generation) << 32) | ((index as u64) << SHARD_BITS) | shard_index as u64)
    }

    /// Forgets a connection that came back.
    pub(crate) fn remove(&self, id: u64) {
        let (shard_index, index, generation) = parts(id);
        let mut shard = self.shard(shard_index);
        let Some(held) = shard.slot_of(index, generation).and_then(|s| s.held.take()) else {
            return;
        };
        shard.free.push(index as u32);
        // Dropped after the lock: its route and key are the last references, sometimes.
        drop(shard);
        drop(held);
    }

    /// The route and user of the connection with registry id `id`, if it is still held.
    pub(crate) fn route_of(&self, id: u64) -> Option<(Option<Arc<str>>, Option<UserKey>)> {
        let (shard_index, index, generation) = parts(id);
        self.shard(shard_index)
            .slot_of(index, generation)
            .and_then(|slot| slot.held.as_ref())
            .map(|h| (h.route.clone(), h.user.clone()))
    }

    /// How many connections are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                self.shard(i)
                    .slots
                    .iter()
                    .filter(|s| s.held.is_some())
                    .count()
            })
            .sum()
    }

    /// Connections held longer than `after` that were not reported yet; marks them reported.
    pub(crate) fn take_leaks(&self, after: Duration, now: Instant) -> Vec<Leak> {
        let mut leaks = Vec::new();
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            for h in shard.slots.iter_mut().filter_map(|slot| slot.held.as_mut()) {
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

    /// A registry a watchdog watches.
    fn watched() -> HeldRegistry {
        let r = HeldRegistry::default();
        r.watch();
        r
    }

    #[test]
    fn nothing_is_recorded_until_the_registry_is_watched() {
        let t0 = Instant::now();
        let r = HeldRegistry::default();
        let route: Arc<str> = "/export".into();
        assert_eq!(
            r.insert(Criticality::Standard, Some(&route), None, t0),
            None
        );
        assert_eq!(r.len(), 0);
        assert_eq!(Arc::strong_count(&route), 1, "the route was not kept");
        assert!(r.take_leaks(Duration::ZERO, t0).is_empty());

        r.watch();
        let id = r.insert(Criticality::Standard, Some(&route), None, t0);
        assert!(id.is_some());
        assert_eq!(r.len(), 1);
        assert_eq!(r.take_leaks(Duration::ZERO, t0).len(), 1);
    }

    #[test]
    fn a_leak_is_reported_once_and_forgotten_on_release() {
        let t0 = Instant::now();
        let r = watched();
        let id = r
            .insert(
                Criticality::Standard,
                Some(&"/export".into()),
                Some(UserKey::new("u1")),
                t0,
            )
            .unwrap();
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

    #[test]
    fn a_reused_slot_gets_a_new_id_and_an_old_id_reaches_nothing() {
        let t0 = Instant::now();
        let r = watched();
        let first = r
            .insert(Criticality::Standard, Some(&"/a".into()), None, t0)
            .unwrap();
        r.remove(first);
        // Same thread, so same shard: the freed slot is taken again.
        let second = r
            .insert(Criticality::Standard, Some(&"/b".into()), None, t0)
            .unwrap();
        assert_eq!(parts(first).1, parts(second).1, "the slot is reused");
        assert_ne!(first, second);
        assert!(r.route_of(first).is_none());
        r.remove(first);
        assert_eq!(r.len(), 1, "a stale id removes nothing");
        let (route, _) = r.route_of(second).expect("still held");
        assert_eq!(route.as_deref(), Some("/b"));
        // Many at once grow the slab; each is found by its own id.
        let ids: Vec<u64> = (0..100)
            .map(|i| {
                r.insert(
                    Criticality::Critical,
                    Some(&format!("/{i}").into()),
                    None,
                    t0,
                )
                .unwrap()
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                r.route_of(*id).unwrap().0.as_deref(),
                Some(&*format!("/{i}"))
            );
        }
        for id in ids {
            r.remove(id);
        }
        assert_eq!(r.len(), 1);
    }
}
