//! The deadline keeper: one task per guard that refuses each queued acquisition when its
//! deadline passes, so that a waiter needs no timer of its own.
//!
//! A waiter's wait is then one channel and nothing else. Registering a timer with tokio and
//! taking it out again on every queued acquisition cost more than the rest of its wait
//! together, and almost every waiter is served long before its deadline. The keeper sleeps
//! until the earliest deadline of any waiter (the admission state books that run), refuses
//! what expired, and books the next run. A waiter that joins with a deadline before the
//! booked run wakes it.
//!
//! The keeper runs on the runtime the guard was built on. Should that runtime stop while the
//! guard is used elsewhere, the keeper refuses everyone still waiting on its way out (no one
//! would be answered at their deadline otherwise), and later waiters keep a timer of their
//! own.

use super::inner::{GuardInner, WeakInner};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// The guard's handle on its deadline keeper.
#[derive(Debug, Default)]
pub(crate) struct DeadlineKeeper {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Wakes the keeper: a waiter with an earlier deadline joined, or the guard is gone.
    wake: Notify,
    /// Set while the keeper task runs.
    running: AtomicBool,
}

impl DeadlineKeeper {
    /// Starts the keeper of `guard` on `runtime`.
    pub(crate) fn start(&self, runtime: &tokio::runtime::Handle, guard: WeakInner) {
        self.shared.running.store(true, Ordering::Release);
        runtime.spawn(run(KeeperTask {
            shared: self.shared.clone(),
            guard,
        }));
    }

    /// Whether the keeper answers waiters at their deadline; when not, a waiter keeps a
    /// timer of its own.
    pub(crate) fn running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// Makes the keeper run now and book its next run again.
    pub(crate) fn wake(&self) {
        self.shared.wake.notify_one();
    }
}

impl Drop for DeadlineKeeper {
    /// The guard is gone: the keeper wakes to find it so and ends.
    fn drop(&mut self) {
        self.wake();
    }
}

impl GuardInner {
    /// Refuses the waiters whose deadline passed; returns when the keeper runs next.
    fn expire_waiters(self: &Arc<Self>, cutoff: Instant) -> Option<Instant> {
        self.change(|s, now| s.expire(cutoff.max(now), now))
    }
}

/// Runs until the guard is dropped (or the runtime stops).
async fn run(task: KeeperTask) {
    loop {
        let next = match task.guard.upgrade() {
            Some(inner) => inner.expire_waiters(crate::clock::now()),
            None => return,
        };
        let woken = task.shared.wake.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                }
            }
            None => woken.await,
        }
    }
}

/// What the keeper's task holds: the guard, without keeping it alive, and what it shares with
/// the guard's handle.
struct KeeperTask {
    shared: Arc<Shared>,
    guard: WeakInner,
}

impl Drop for KeeperTask {
    /// The task ends (its guard is gone or its runtime stopped): if the guard lives on, no one
    /// refuses its waiters at their deadline any more, so everyone waiting now is refused and
    /// later waiters keep a timer.
    fn drop(&mut self) {
        self.shared.running.store(false, Ordering::Release);
        if let Some(inner) = self.guard.upgrade() {
            let far = crate::clock::now() + std::time::Duration::from_secs(365 * 24 * 3600);
            inner.expire_waiters(far);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::criticality::Criticality;
    use crate::error::Error;
    use crate::guard::{AcquireContext, Guard, HeldSlot};
    use crate::rejection::RejectionKind;
    use std::time::{Duration, Instant};

    /// Takes every standard slot of a guard of four.
    async fn hold_standard_slots(guard: &Guard) -> Vec<HeldSlot> {
        let far = crate::clock::now() + Duration::from_secs(3600);
        let mut held = Vec::new();
        for _ in 0..3 {
            let slot = guard.admit_slot(Criticality::Standard, AcquireContext::default(), far);
            held.push(slot.await.unwrap());
        }
        held
    }

    /// Waits in the standard queue until `deadline`; returns how the wait ended and when.
    fn wait_until(
        guard: &Guard,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<(Result<HeldSlot, Error>, Instant)> {
        let guard = guard.clone();
        tokio::spawn(async move {
            let result = guard
                .admit_slot(Criticality::Standard, AcquireContext::default(), deadline)
                .await;
            (result, crate::clock::now())
        })
    }

    /// How the wait of a waiter from `wait_until` ended, which must be within 10 s (of
    /// virtual time where the test pauses it); `what` says what should have answered it.
    async fn answer(
        waiting: tokio::task::JoinHandle<(Result<HeldSlot, Error>, Instant)>,
        what: &str,
    ) -> (Result<HeldSlot, Error>, Instant) {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect(what)
            .unwrap()
    }

    async fn queued(guard: &Guard, n: usize) {
        while guard.inner.read(|s| s.queued_of(Criticality::Standard)) < n {
            tokio::task::yield_now().await;
        }
    }

    fn timed_out(result: &Result<HeldSlot, Error>) -> bool {
        matches!(result, Err(Error::Rejected(r)) if r.kind == RejectionKind::QueueTimeout)
    }

    #[tokio::test(start_paused = true)]
    async fn each_waiter_is_refused_at_its_own_deadline_an_earlier_one_first() {
        let guard = Guard::of_four_unreachable_slots();
        let _held = hold_standard_slots(&guard).await;
        let t0 = crate::clock::now();
        // The first waiter books the keeper's run at 2 s; the second brings 300 ms of its own.
        let late = wait_until(&guard, t0 + Duration::from_secs(2));
        queued(&guard, 1).await;
        let early = wait_until(&guard, t0 + Duration::from_millis(300));

        let (result, at) = answer(early, "the keeper, woken earlier").await;
        assert!(timed_out(&result), "{result:?}");
        assert_eq!(
            at - t0,
            Duration::from_millis(300),
            "refused at its deadline"
        );
        assert_eq!(guard.inner.read(|s| s.queued()), 1, "the other still waits");

        let (result, at) = answer(late, "the keeper").await;
        assert!(timed_out(&result), "{result:?}");
        assert_eq!(at - t0, Duration::from_secs(2));
        assert_eq!(guard.inner.read(|s| s.queued()), 0);
    }

    #[test]
    fn when_the_keepers_runtime_stops_every_waiter_is_still_answered() {
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        };
        let (built_on, used_on) = (runtime(), runtime());
        let guard = built_on.block_on(async { Guard::of_four_unreachable_slots() });
        let (held, waiting) = used_on.block_on(async {
            let held = hold_standard_slots(&guard).await;
            let far = crate::clock::now() + Duration::from_secs(3600);
            let waiting = wait_until(&guard, far);
            queued(&guard, 1).await;
            (held, waiting)
        });
        assert!(guard.inner.deadlines.running());

        // The runtime the guard was built on stops, and its keeper with it: no one would
        // refuse the waiter at its deadline an hour from now, so it is refused at once.
        drop(built_on);
        assert!(!guard.inner.deadlines.running());
        used_on.block_on(async {
            let (result, _) = answer(waiting, "the keeper, as it stopped").await;
            assert!(timed_out(&result), "{result:?}");

            // A waiter that comes later keeps a timer of its own.
            let started = crate::clock::now();
            let waiting = wait_until(&guard, started + Duration::from_millis(300));
            let (result, at) = answer(waiting, "its own timer").await;
            assert!(timed_out(&result), "{result:?}");
            let waited = at - started;
            assert!(waited >= Duration::from_millis(300), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        });
        drop(held);
    }
}
