//! A held slot's admission and release, on a guard whose pool points nowhere.

use super::*;
use crate::clock::reads_on_this_thread;
use crate::guard::AcquireContext;
use crate::limit::UserKey;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let direct: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none?application_name=app"
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

/// Slots the tasks hold now and the most at once, counted after each grant and before each
/// release: never more than the guard holds, though a peak between two counts can be missed.
#[derive(Default)]
struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Held {
    fn take(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn give_back(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// `tasks` tasks of `rounds` acquisitions each on the test's worker threads, the first
/// `critical` of them critical and the others standard, eight tasks to a user, each
/// holding its slot for `hold` (over a yield when `None`). Every acquisition must be served.
/// Returns the most slots held at once by standard work and by all, and checks that every
/// slot came back.
async fn race(
    guard: &Guard,
    tasks: usize,
    rounds: usize,
    critical: usize,
    hold: Option<Duration>,
) -> (usize, usize) {
    let standard = Arc::new(Held::default());
    let all = Arc::new(Held::default());
    let tasks: Vec<_> = (0..tasks)
        .map(|task| {
            let (guard, standard, all) = (guard.clone(), standard.clone(), all.clone());
            tokio::spawn(async move {
                let class = if task < critical {
                    Criticality::Critical
                } else {
                    Criticality::Standard
                };
                for _ in 0..rounds {
                    let context = AcquireContext {
                        user: Some(UserKey::new(format!("user-{}", task / 8))),
                        route: None,
                    };
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let slot = guard
                        .admit_slot(class, context, deadline)
                        .await
                        .expect("served within its 20 s");
                    all.take();
                    if class == Criticality::Standard {
                        standard.take();
                    }
                    match hold {
                        Some(hold) => tokio::time::sleep(hold).await,
                        None => tokio::task::yield_now().await,
                    }
                    if class == Criticality::Standard {
                        standard.give_back();
                    }
                    all.give_back();
                    drop(slot);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let status = guard.status();
    assert_eq!((status.granted, status.queued), (0, 0), "{status:?}");
    (standard.peak(), all.peak())
}

/// Four standard tasks, one more than standard work's three slots in a pool of four, each
/// holding its slot for a millisecond, on four worker threads: while no one waits, grants
/// take the lock-free path, and the fourth finds the gate's ceiling and waits. Standard work
/// never holds more than its slots, and every slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_grants_on_the_lock_free_path_stay_within_the_slots() {
    let guard = Guard::of_four_unreachable_slots();
    let hold = Some(Duration::from_millis(1));
    let (standard, _) = race(&guard, 4, 300, 0, hold).await;
    assert!(
        standard <= 3,
        "standard work held {standard} of its 3 slots"
    );
    // The guard's own record of the most slots held at once (the tasks' count above is
    // taken after each grant, so it can miss the peak).
    let peak = guard.status().peak_utilization;
    assert!(peak <= 0.75, "standard work held {peak} of the pool");
    let (total, fast) = guard.inner.read(|s| (s.grants_total(), s.fast_grants()));
    assert_eq!(total, 4 * 300);
    // At least the first grant finds no one waiting and takes the lock-free path.
    assert!(fast > 0, "no grant of {total} took the lock-free path");
}

/// Critical and standard acquisitions, eight times the pool, racing on four worker threads:
/// grants on the lock-free path, waits in the queue and hand-offs under the lock all
/// interleave. Every acquisition is served, the tasks never count standard work holding more
/// than its three slots nor all work more than the pool's four, and every slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_acquisitions_are_all_served_within_the_slots_and_all_come_back() {
    let guard = Guard::of_four_unreachable_slots();
    let (standard, all) = race(&guard, 32, 200, 8, None).await;
    assert!(
        standard <= 3,
        "standard work held {standard} of its 3 slots"
    );
    assert!(all <= 4, "all work held {all} of the pool's 4");
    assert_eq!(
        guard.inner.read(|s| s.grants_total()),
        32 * 200,
        "one grant per acquisition"
    );
}
