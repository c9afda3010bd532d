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
mod tests {
    use super::*;
    use crate::clock::reads_on_this_thread;
    use crate::guard::AcquireContext;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    #[tokio::test]
    async fn a_queued_acquisition_and_the_release_that_hands_it_on_read_the_clock_once_each() {
        let guard = Guard::of_four_unreachable_slots();
        let deadline = crate::clock::now() + Duration::from_secs(60);
        let slot = || guard.admit_slot(Criticality::Standard, AcquireContext::default(), deadline);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slot().await.expect("a free slot"));
        }
        let mut waiting = std::pin::pin!(slot());
        let mut cx = Context::from_waker(Waker::noop());

        let before = reads_on_this_thread();
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "it queues");
        let joining = reads_on_this_thread() - before;

        let before = reads_on_this_thread();
        drop(held.pop());
        let releasing = reads_on_this_thread() - before;
        assert!(
            matches!(waiting.as_mut().poll(&mut cx), Poll::Ready(Ok(_))),
            "the released slot was handed to the waiter"
        );

        // The acquisition's start serves its turn under the lock; the release's reading
        // serves the hold time and the hand-off.
        assert_eq!(joining, 1, "readings to join the queue");
        assert_eq!(releasing, 1, "readings to release and hand the slot on");
    }

    #[tokio::test]
    async fn held_slots_are_recorded_only_while_a_watchdog_watches() {
        use crate::watchdog::WatchedGuard;
        let guard = Guard::of_four_unreachable_slots();
        let deadline = crate::clock::now() + Duration::from_secs(60);
        let context = || AcquireContext {
            route: Some("/export".into()),
            ..AcquireContext::default()
        };
        let slot = || guard.admit_slot(Criticality::Standard, context(), deadline);

        let unwatched = slot().await.expect("a free slot");
        assert_eq!(
            guard.inner.held.len(),
            0,
            "recorded with no watchdog to read it"
        );
        assert!(guard.inner.take_leaks(Duration::ZERO).is_empty());

        guard.inner.watch_held();
        let watched = slot().await.expect("a free slot");
        assert_eq!(
            guard.inner.held.len(),
            1,
            "the slot taken since the watch began"
        );
        let leaks = guard.inner.take_leaks(Duration::ZERO);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].route.as_deref(), Some("/export"));

        // Both come back: the one recorded is forgotten, the other was never there.
        drop((unwatched, watched));
        assert_eq!(guard.inner.held.len(), 0);
    }

    #[tokio::test]
    async fn a_watchdog_starts_the_record_when_built_and_a_failed_build_leaves_it_off() {
        use crate::watchdog::{Watchdog, WatchdogConfig};
        let direct: tokio_postgres::Config =
            "postgres://nobody@127.0.0.1:1/none?application_name=app"
                .parse()
                .unwrap();
        let guard = Guard::builder(crate::pool::unreachable_pool(4))
            .direct_connection(direct)
            .build()
            .unwrap();
        let deadline = crate::clock::now() + Duration::from_secs(60);
        let held_now = || async {
            let _slot = guard
                .admit_slot(Criticality::Standard, AcquireContext::default(), deadline)
                .await
                .expect("a free slot");
            guard.inner.held.len()
        };

        // A budget needs instance names, which this guard does not have: no watchdog (the
        // last check of the build).
        let mut budgeted = WatchdogConfig::default();
        budgeted.budget.enabled = true;
        let refused = Watchdog::builder(&guard).config(budgeted).build().err();
        assert!(
            format!("{refused:?}").contains("budget.enabled"),
            "{refused:?}"
        );
        assert_eq!(
            held_now().await,
            0,
            "recorded for a watchdog that was never built"
        );

        let _watchdog = Watchdog::builder(&guard).build().expect("a watchdog");
        assert_eq!(held_now().await, 1, "not recorded for the watchdog built");
    }
}
