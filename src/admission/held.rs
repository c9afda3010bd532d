//! The registry of connections held through the guard: who holds what, since when, for which
//! route and user. Kept inside the admission state, so registering a connection costs one
//! short lock on checkout and nothing on release (the slot release takes the lock anyway).
//!
//! The watchdog scans it for leaks and looks up the route of a backend it acts on.

use crate::limit::UserKey;
use crate::Criticality;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Held connections by registry id.
#[derive(Debug, Default)]
pub(crate) struct HeldRegistry {
    held: HashMap<u64, Held>,
    next_id: u64,
}

impl HeldRegistry {
    /// Records a connection handed out now; returns its id.
    pub(crate) fn insert(
        &mut self,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.held.insert(
            id,
            Held {
                since: now,
                class,
                route,
                user,
                leak_reported: false,
            },
        );
        id
    }

    /// Forgets a connection that came back.
    pub(crate) fn remove(&mut self, id: u64) {
        self.held.remove(&id);
    }

    /// The connection with registry id `id`, if it is still held.
    pub(crate) fn get(&self, id: u64) -> Option<&Held> {
        self.held.get(&id)
    }

    /// How many connections are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Connections held longer than `after` that were not reported yet; marks them reported.
    pub(crate) fn take_leaks(&mut self, after: Duration, now: Instant) -> Vec<Leak> {
        let mut leaks = Vec::new();
        for h in self.held.values_mut() {
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
        leaks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_reported_once_and_forgotten_on_release() {
        let t0 = Instant::now();
        let mut r = HeldRegistry::default();
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
        assert!(r.get(id).is_none());
    }
}
