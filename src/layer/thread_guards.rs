//! [`ThreadGuards`]: the guard a layer puts in the context of each request, one per thread.
//!
//! Each request's context holds a clone of the guard, and its slot holds another, for as long
//! as the request runs: every request writes the reference count of the guard it clones
//! several times. Had every request on every core cloned the same guard, each of those writes
//! would wait for the count's line to come over from the core that wrote it last. A layer
//! keeps one guard per thread stripe instead (a [`GuardRef`](crate::guard::GuardRef) each,
//! counted apart, over the same state), made on the stripe's first request: the requests of a
//! thread write a line that no other core writes. That first request allocates the stripe's
//! guard (256 bytes, once per stripe and layer); no request after it allocates here.

use crate::guard::Guard;
use crate::stripes::{stripe_number, STRIPES};
use std::sync::OnceLock;

/// A layer's guard, and a guard of each thread stripe's own over the same state.
#[derive(Debug)]
pub(crate) struct ThreadGuards {
    /// The guard the layer was made from.
    guard: Guard,
    /// The guard each stripe's requests clone, made on the stripe's first request.
    by_stripe: [OnceLock<Guard>; STRIPES],
}

impl ThreadGuards {
    /// The guards of a layer made from `guard`.
    pub(crate) fn new(guard: Guard) -> Self {
        Self {
            guard,
            by_stripe: [const { OnceLock::new() }; STRIPES],
        }
    }

    /// The guard the layer was made from.
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The guard of the calling thread's stripe, for a request's context: cloning it writes
    /// a count that only this thread writes (while no more threads run than the stripes
    /// some have alone).
    pub(crate) fn here(&self) -> &Guard {
        self.by_stripe[stripe_number()].get_or_init(|| self.guard.counted_apart())
    }
}

#[cfg(test)]
mod tests {
    use super::ThreadGuards;
    use crate::guard::Guard;
    use std::sync::Arc;

    #[test]
    fn a_thread_gets_its_own_guard_over_the_same_state() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let guards = ThreadGuards::new(Guard::of_four_unreachable_slots());
        let here = guards.here();
        assert!(
            std::ptr::eq(here, guards.here()),
            "a thread's requests share one guard"
        );
        assert!(
            !Arc::ptr_eq(&here.inner, &guards.guard().inner),
            "a thread's guard is counted apart from the layer's"
        );
        assert!(
            Arc::ptr_eq(here.inner.state(), guards.guard().inner.state()),
            "over the same state"
        );
        let elsewhere = std::thread::scope(|s| {
            s.spawn(|| Arc::as_ptr(&guards.here().inner) as usize)
                .join()
                .unwrap()
        });
        assert_ne!(
            elsewhere,
            Arc::as_ptr(&here.inner) as usize,
            "another thread's requests clone another guard"
        );
    }
}
