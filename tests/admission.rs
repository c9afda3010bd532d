//! Levels, priority and queueing against a real PostgreSQL.

mod common;

use common::{cluster, eventually, guard, quick_config};
use poolguard::events::EventKind;
use poolguard::{Criticality, Error, GuardConfig, Level, RejectionKind};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn levels_escalate_on_acquire_and_recover_with_hysteresis() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, quick_config()).await;
    let mut events = guard.subscribe();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    assert_eq!(guard.level(), Level::Normal, "8/10 is below 85 %");
    held.push(guard.acquire(Criticality::Standard).await.unwrap());
    assert_eq!(
        guard.level(),
        Level::Warning,
        "9/10 crosses 85 % on the acquire itself"
    );
    held.push(guard.acquire(Criticality::Critical).await.unwrap());
    assert_eq!(guard.level(), Level::Critical, "10/10 crosses 92 %");

    // 9/10 = 90 % is below critical but above the 88 % recovery line: stays Critical.
    held.pop();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(guard.level(), Level::Critical);

    // 8/10 = 80 %: below 88 % -> Warning after the dwell; not yet below 80 % -> stays.
    held.pop();
    eventually("critical -> warning", Duration::from_secs(5), || async {
        guard.level() == Level::Warning
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(guard.level(), Level::Warning);

    held.clear();
    eventually("warning -> normal", Duration::from_secs(5), || async {
        guard.level() == Level::Normal
    })
    .await;

    let mut seen = Vec::new();
    let mut recovered = false;
    while let Some(e) = events.try_recv() {
        match e.kind {
            EventKind::LevelChanged { from, to, .. } => seen.push((from, to)),
            EventKind::Recovered {
                peak_utilization, ..
            } => {
                assert_eq!(peak_utilization, 1.0);
                recovered = true;
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        vec![
            (Level::Normal, Level::Warning),
            (Level::Warning, Level::Critical),
            (Level::Critical, Level::Warning),
            (Level::Warning, Level::Normal),
        ]
    );
    assert!(recovered, "a Recovered event closes the episode");
}

#[tokio::test]
async fn critical_is_served_while_standard_and_non_critical_saturate_the_pool() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, GuardConfig::default()).await;
    // Non-critical work fills the slots under the warning line (8 of 10), standard the rest
    // outside the reserve (1 of 10).
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(guard.acquire(Criticality::NonCritical).await.unwrap());
    }
    held.push(guard.acquire(Criticality::Standard).await.unwrap());
    assert_eq!(guard.status().in_use, 9);
    // More of both wait: standard queued, non-critical deferred; neither touches the pool.
    let spawn = |class: Criticality| {
        let g = guard.clone();
        tokio::spawn(async move {
            let conn = g.acquire(class).await?;
            conn.query_one("SELECT 1", &[]).await?;
            Ok::<_, Error>(())
        })
    };
    let mut waiting: Vec<_> = (0..3).map(|_| spawn(Criticality::Standard)).collect();
    waiting.extend((0..3).map(|_| spawn(Criticality::NonCritical)));
    eventually(
        "standard and non-critical wait",
        Duration::from_secs(5),
        || async { guard.status().queued_by_class == [3, 3, 0] },
    )
    .await;
    assert_eq!(guard.status().granted, 9, "waiters hold no slot");
    assert!(guard.level() >= Level::Warning);

    // Critical takes the reserve, at once, and its query runs.
    let critical =
        tokio::time::timeout(Duration::from_secs(5), guard.acquire(Criticality::Critical))
            .await
            .expect("critical must not wait behind standard or non-critical work")
            .unwrap();
    let row = critical.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(critical);
    drop(held);
    for w in waiting {
        w.await
            .unwrap()
            .expect("waiting work is served once slots free up");
    }
}

#[tokio::test]
async fn critical_waiters_are_served_before_earlier_standard_waiters() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, GuardConfig::default()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    held.push(guard.acquire(Criticality::Critical).await.unwrap());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |class: Criticality| {
        let (g, order) = (guard.clone(), order.clone());
        tokio::spawn(async move {
            let conn = g.acquire(class).await.unwrap();
            order.lock().unwrap().push(class);
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(conn);
        })
    };
    let standard = spawn(Criticality::Standard);
    eventually("standard queued", Duration::from_secs(5), || async {
        guard.status().queued == 1
    })
    .await;
    let critical = spawn(Criticality::Critical);
    eventually("critical queued", Duration::from_secs(5), || async {
        guard.status().queued == 2
    })
    .await;
    held.pop();
    held.pop();
    critical.await.unwrap();
    standard.await.unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        vec![Criticality::Critical, Criticality::Standard]
    );
}

#[tokio::test]
async fn a_waiter_whose_caller_gave_up_never_runs() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 2, GuardConfig::default()).await;
    let held = guard.acquire(Criticality::Standard).await.unwrap();
    let task = {
        let g = guard.clone();
        tokio::spawn(async move {
            let _conn = g.acquire(Criticality::Standard).await;
        })
    };
    eventually("queued", Duration::from_secs(5), || async {
        guard.status().queued == 1
    })
    .await;
    task.abort();
    let _ = task.await;
    assert_eq!(guard.status().queued, 0, "the waiter left the queue");
    let grants = guard.grants_total();
    drop(held);
    // The released slot is not handed to the departed waiter, not even for a moment (a
    // grant to it would be counted here and released again).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        guard.grants_total(),
        grants,
        "no slot went to the departed waiter"
    );
    assert_eq!(guard.status().granted, 0);
    // The whole pool is usable again.
    let a = guard.acquire(Criticality::Critical).await.unwrap();
    let b = guard.acquire(Criticality::Critical).await.unwrap();
    assert_eq!(guard.grants_total(), grants + 2);
    drop((a, b));
}

#[tokio::test]
async fn queue_depth_and_max_wait_are_answered_503_with_retry_after() {
    let pg = cluster(30).await;
    let config = GuardConfig {
        queue_depth: 2,
        max_queue_wait: Duration::from_millis(300),
        ..GuardConfig::default()
    };
    let guard = guard(&pg, 2, config).await;
    let held = guard.acquire(Criticality::Standard).await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let g = guard.clone();
            tokio::spawn(async move { g.acquire(Criticality::Standard).await.map(drop) })
        })
        .collect();
    eventually("two queued", Duration::from_secs(5), || async {
        guard.status().queued == 2
    })
    .await;
    let full = guard.acquire(Criticality::Standard).await.unwrap_err();
    let r = full.rejection().unwrap();
    assert_eq!(r.kind, RejectionKind::QueueFull);
    assert_eq!(full.status(), 503);
    assert!(r.retry_after_secs() >= 1);

    for w in waiters {
        match w.await.unwrap() {
            Err(Error::Rejected(r)) => assert_eq!(r.kind, RejectionKind::QueueTimeout),
            other => panic!("expected a queue timeout, got {other:?}"),
        }
    }
    assert_eq!(guard.status().queued, 0);
    drop(held);
}

#[tokio::test]
async fn one_users_flood_does_not_starve_another_user() {
    use poolguard::{AcquireContext, UserKey};
    let pg = cluster(30).await;
    let guard = guard(&pg, 2, GuardConfig::default()).await;
    let held = guard.acquire(Criticality::Standard).await.unwrap();
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |user: &'static str| {
        let (g, served) = (guard.clone(), served.clone());
        tokio::spawn(async move {
            let ctx = AcquireContext {
                user: Some(UserKey::new(user)),
                route: None,
            };
            let conn = g.acquire_with(Criticality::Standard, ctx).await.unwrap();
            served.lock().unwrap().push(user);
            drop(conn);
        })
    };
    let mut tasks: Vec<_> = (0..20).map(|_| spawn("flood")).collect();
    eventually("flood queued", Duration::from_secs(5), || async {
        guard.status().queued == 20
    })
    .await;
    tasks.push(spawn("quiet"));
    eventually("quiet queued", Duration::from_secs(5), || async {
        guard.status().queued == 21
    })
    .await;
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    let order = served.lock().unwrap().clone();
    let quiet_at = order.iter().position(|u| *u == "quiet").unwrap();
    assert!(
        quiet_at <= 2,
        "the quiet user is served within the first turns, not after 20 flood requests: {order:?}"
    );
}
