//! A slot admitted and released exactly as [`Guard::acquire`](super::Guard::acquire) does it,
//! minus `Pool::get`: what the decision benchmark and the allocation test measure.

use super::guard_ref::GuardRef;
use super::Guard;
use crate::admission::SlotPermit;
use crate::criticality::Criticality;
use crate::error::Error;
use crate::metrics::Outcome;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// One slot held through the guard without a connection. Dropping it records the hold time
/// and releases the slot, as dropping a [`GuardedConn`](crate::GuardedConn) does.
#[doc(hidden)]
#[derive(Debug)]
pub struct HeldSlot {
    permit: Option<SlotPermit>,
    class: Criticality,
}

impl Guard {
    /// Admits one acquisition of `class` by `deadline` (queue, level, held registry, counts
    /// and histograms as [`Guard::acquire_until`] does) without asking the pool for a
    /// connection. For benchmarks and tests of the admission path; not a stable API.
    #[doc(hidden)]
    pub fn admit_slot(
        &self,
        class: Criticality,
        context: super::AcquireContext,
        deadline: Instant,
    ) -> impl Future<Output = Result<HeldSlot, Error>> + Send + '_ {
        // Not an `async fn` of its own, as `acquire_until` is not: the future is the one
        // that does the work, without a second copy of the arguments around it.
        self.inner.hold_slot(class, context, deadline)
    }

    /// Records held connections in the guard's registry from now on, as a watchdog over the
    /// guard does when it starts: for benchmarks of a watched guard that has no server to
    /// watch. Not a stable API.
    #[doc(hidden)]
    pub fn watch_held(&self) {
        use crate::watchdog::WatchedGuard;
        self.inner.watch_held();
    }
}

#[cfg(test)]
impl Guard {
    /// A guard over a pool of 4 that points nowhere: three slots for standard work, one kept
    /// for critical work. For tests that take its slots with `admit_slot`, which never asks
    /// the pool.
    pub(crate) fn of_four_unreachable_slots() -> Guard {
        Guard::builder(crate::pool::unreachable_pool(4))
            .build()
            .unwrap()
    }
}

impl GuardRef {
    async fn hold_slot(
        self: &Arc<Self>,
        class: Criticality,
        context: super::AcquireContext,
        deadline: Instant,
    ) -> Result<HeldSlot, Error> {
        let started = crate::clock::now();
        let span = super::acquire::acquire_span(class, context.route.as_deref());
        let admitted = self
            .admit_slot(self, class, &context.user, deadline, started)
            .await;
        // The slot is held from its grant: the clock read then serves the wait, the
        // registry and the hold.
        let (result, outcome, ended) = match admitted {
            Ok(mut permit) => {
                let granted_at = permit.granted_at();
                permit.register(class, context.route.as_ref(), context.user, granted_at);
                let slot = HeldSlot {
                    permit: Some(permit),
                    class,
                };
                (Ok(slot), Outcome::Served, granted_at)
            }
            Err((e, outcome)) => (Err(e), outcome, crate::clock::now()),
        };
        self.finish_acquire(&span, class, outcome, started, ended);
        result
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            // Held from its grant: one hold time serves both.
            let now = crate::clock::now();
            let held = now.saturating_duration_since(permit.granted_at());
            permit.inner().note_hold_time(self.class, held);
            permit.release_at(now, held);
        }
    }
}

#[cfg(test)]
mod tests;
