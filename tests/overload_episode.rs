//! One episode, one incident: a steadily overloaded guard escalates once, stays there while
//! the backlog lasts, comes back once, and its incident closes after the quiet period.

mod common;

use common::{cluster, eventually, guard};
use poolguard::events::EventKind;
use poolguard::incident::{IncidentStore, IncidentTracker};
use poolguard::report::spawn_incident_pipeline_with;
use poolguard::{Criticality, Error, GuardConfig, Level};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steadily_overloaded_guard_makes_one_incident_and_at_most_four_transitions() {
    let pg = cluster(40).await;
    let guard = guard(&pg, 10, GuardConfig::default()).await;
    let store = IncidentStore::default();
    let quiet = Duration::from_secs(2);
    let _pipeline = spawn_incident_pipeline_with(
        guard.events(),
        store.clone(),
        None,
        IncidentTracker::default().quiet_period(quiet),
    );
    let mut events = guard.subscribe();

    // About 3x what the report slots (8 of 10) serve: 24 clients, each running a 100 ms
    // report back to back and coming back at Retry-After when refused. Critical requests
    // run beside them.
    let until = Instant::now() + Duration::from_secs(5);
    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..24 {
        let (g, served, refused) = (guard.clone(), served.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < until {
                match g.acquire(Criticality::NonCritical).await {
                    Ok(conn) => {
                        conn.query_one("SELECT pg_sleep(0.1)::text", &[])
                            .await
                            .unwrap();
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Rejected(r)) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(r.retry_after).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let critical = {
        let g = guard.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while Instant::now() < until {
                let asked = Instant::now();
                let conn = g.acquire(Criticality::Critical).await.unwrap();
                conn.query_one("SELECT 1", &[]).await.unwrap();
                drop(conn);
                worst = worst.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            worst
        })
    };
    for c in clients {
        c.await.unwrap();
    }
    let critical_worst = critical.await.unwrap();
    eventually("back to normal", Duration::from_secs(10), || async {
        guard.level() == Level::Normal
    })
    .await;
    eventually(
        "the incident closes after the quiet period",
        quiet * 5,
        || async { !store.recent(10).is_empty() && store.active().is_none() },
    )
    .await;

    let mut transitions = Vec::new();
    while let Some(e) = events.try_recv() {
        if let EventKind::LevelChanged { from, to, .. } = e.kind {
            transitions.push((from, to));
        }
    }
    let served = served.load(Ordering::Relaxed);
    assert!(
        transitions.len() <= 4,
        "a steady overload is one episode: {transitions:?}"
    );
    assert_eq!(transitions.first().map(|t| t.0), Some(Level::Normal));
    assert_eq!(transitions.last().map(|t| t.1), Some(Level::Normal));
    assert_eq!(store.recent(10).len(), 1, "one incident");
    // The report slots stayed busy: 8 slots x 5 s / 100 ms is 400 at most.
    assert!(served >= 200, "served {served} reports");
    assert!(
        critical_worst < Duration::from_secs(1),
        "{critical_worst:?}"
    );
}
