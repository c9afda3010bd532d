//! Deferred, not refused: non-critical work under pressure waits without touching the pool,
//! is started as slots free, and is told at once when it could not start before its deadline.

mod common;

use common::{cluster, eventually, guard};
use poolguard::{AcquireContext, Criticality, Error, GuardConfig, Level, RejectionKind};
use std::time::{Duration, Instant};

#[tokio::test]
async fn deferred_non_critical_requests_are_served_once_pressure_falls() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, GuardConfig::default()).await;
    // Standard work at 90 %: Warning, and no room under the warning line for reports.
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    assert_eq!(guard.level(), Level::Warning);
    let reports: Vec<_> = (0..5)
        .map(|i| {
            let g = guard.clone();
            tokio::spawn(async move {
                let conn = g.acquire(Criticality::NonCritical).await?;
                let row = conn.query_one("SELECT $1::int * 2", &[&i]).await?;
                Ok::<i32, Error>(row.get(0))
            })
        })
        .collect();
    eventually("reports deferred", Duration::from_secs(5), || async {
        guard.status().queued_by_class[0] == 5
    })
    .await;
    let s = guard.status();
    assert_eq!(s.granted, 9, "deferred reports hold no slot");
    assert_eq!(s.in_use, 9, "and no connection");

    // Pressure falls: every deferred report is started and served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.clear();
    let mut answers = Vec::new();
    for r in reports {
        answers.push(
            r.await
                .unwrap()
                .expect("a deferred report is served, not refused"),
        );
    }
    answers.sort();
    assert_eq!(answers, vec![0, 2, 4, 6, 8]);
    eventually("back to normal", Duration::from_secs(5), || async {
        guard.level() == Level::Normal
    })
    .await;
}

#[tokio::test]
async fn a_waiter_past_its_deadline_is_answered_before_the_deadline_not_after() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, GuardConfig::default()).await;
    // Pool 4, reserve 1: reports may use 3 slots. Measure their hold: about 1 s.
    let hold = |ms: u64| {
        let g = guard.clone();
        tokio::spawn(async move {
            let conn = g.acquire(Criticality::NonCritical).await.unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            drop(conn);
        })
    };
    for h in (0..3).map(|_| hold(1000)).collect::<Vec<_>>() {
        h.await.unwrap();
    }
    // Three long reports take the slots.
    let long: Vec<_> = (0..3).map(|_| hold(6000)).collect();
    eventually("slots taken", Duration::from_secs(5), || async {
        guard.status().granted == 3
    })
    .await;
    let grants = guard.grants_total();

    // With 3 slots of about 1 s, six waiters can expect to start within 2.5 s: they wait.
    let deadline_in = Duration::from_millis(2500);
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let g = guard.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let r = g
                    .acquire_until(
                        Criticality::NonCritical,
                        AcquireContext::default(),
                        asked + deadline_in,
                    )
                    .await
                    .map(drop);
                (r, asked.elapsed())
            })
        })
        .collect();
    eventually("six wait", Duration::from_secs(5), || async {
        guard.status().queued_by_class[0] == 6
    })
    .await;

    // The seventh would start after about 3 s: past its deadline, it is told now.
    let asked = Instant::now();
    let refused = guard
        .acquire_until(
            Criticality::NonCritical,
            AcquireContext::default(),
            asked + deadline_in,
        )
        .await
        .unwrap_err();
    let answered_after = asked.elapsed();
    let r = refused.rejection().expect("a rejection");
    assert_eq!(r.kind, RejectionKind::Shed);
    assert!(
        answered_after < deadline_in / 2,
        "answered at once, not at the deadline: {answered_after:?}"
    );
    // Retry-After: when its start (about 3 s away) would fit its 2.5 s deadline.
    assert!(
        r.retry_after >= Duration::from_millis(400) && r.retry_after <= Duration::from_secs(2),
        "Retry-After comes from the estimate: {:?}",
        r.retry_after
    );
    assert_eq!(refused.status(), 503);

    // The six that waited are never started after their deadline: the long reports still
    // hold the slots, so each is answered at its deadline, not later.
    for w in waiters {
        let (result, waited) = w.await.unwrap();
        match result {
            Err(Error::Rejected(r)) => assert_eq!(r.kind, RejectionKind::QueueTimeout),
            other => panic!("expected a deadline refusal, got {other:?}"),
        }
        assert!(
            waited >= deadline_in - Duration::from_millis(50),
            "{waited:?}"
        );
        assert!(waited < deadline_in + Duration::from_secs(1), "{waited:?}");
    }
    assert_eq!(guard.grants_total(), grants, "none of them was started");
    for l in long {
        l.await.unwrap();
    }
}
