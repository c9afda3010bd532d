//! [`route_name`]: the shared name of a matched route, for the [`Conn`](super::Conn) extractor.
//!
//! Every guarded connection carries its route's name (`/api/tasks/{id}`, the pattern axum
//! matched, never the request's own path) into the held-connection registry and events. axum
//! hands the pattern out as a `&str`; making an `Arc<str>` of it on every request would be an
//! allocation per request. A route app has a few dozen patterns at most, so each is made once
//! and kept in a fixed table of write-once slots, read without a lock; a pattern that finds
//! its probe slots taken by others (more than the table holds) is made per request, as
//! before.

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

/// Slots in the table, a power of two.
const SLOTS: usize = 256;
/// Slots a pattern may look at, starting at its hash's (fixed-seeded foldhash: patterns are
/// the application's own, so no defence against chosen ones is needed).
const PROBES: usize = 8;

static NAMES: [OnceLock<Arc<str>>; SLOTS] = [const { OnceLock::new() }; SLOTS];

/// The shared name of the route pattern `pattern`.
pub(crate) fn route_name(pattern: &str) -> Arc<str> {
    let start = foldhash::fast::FixedState::default().hash_one(pattern) as usize;
    for probe in 0..PROBES {
        let slot = &NAMES[(start + probe) % SLOTS];
        let name = slot.get_or_init(|| Arc::from(pattern));
        if &**name == pattern {
            return name.clone();
        }
    }
    Arc::from(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_made_once_and_shared() {
        let a = route_name("/api/tasks/{id}");
        let b = route_name(&String::from("/api/tasks/{id}"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "/api/tasks/{id}");
        assert_ne!(&*route_name("/api/auth/session"), &*a);
    }

    #[test]
    fn more_patterns_than_the_table_holds_still_get_their_own_names() {
        let names: Vec<String> = (0..SLOTS * 2).map(|i| format!("/r/{i}")).collect();
        for name in &names {
            assert_eq!(&*route_name(name), name.as_str());
        }
        // Whatever made it into the table is still found there.
        assert!(Arc::ptr_eq(&route_name("/r/0"), &route_name("/r/0")));
    }
}
