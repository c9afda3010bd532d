//! One analysis per incident across replicas: two reporters share a dedupe in a real Redis
//! (harness-started); with Redis stopped each falls back to its own dedupe.

mod common;

use common::eventually;
use poolguard::events::{Event, EventKind};
use poolguard::incident::{Incident, IncidentTracker};
use poolguard::report::{Reporter, ReporterConfig, SharedDedupe};
use poolguard::testing::TestRedis;
use poolguard::Level;
use std::time::Duration;

fn level(from: Level, to: Level) -> Event {
    Event::now(EventKind::LevelChanged {
        from,
        to,
        utilization: 0.95,
        in_use: 19,
        max_size: 20,
        waiting: 2,
    })
}

/// A closed incident; every one has the same signature (a Critical episode).
fn incident() -> Incident {
    let mut t = IncidentTracker::default();
    t.observe(&level(Level::Normal, Level::Critical));
    t.observe(&level(Level::Critical, Level::Normal)).unwrap()
}

fn replica(redis: &TestRedis, instance: &str) -> (Reporter, SharedDedupe) {
    let dedupe = SharedDedupe::new(&redis.url(), "poolguard:", instance).unwrap();
    let (reporter, _task) = Reporter::builder(ReporterConfig::default())
        .shared_dedupe(dedupe.clone())
        .spawn()
        .unwrap();
    (reporter, dedupe)
}

/// Submits one incident to each replica and waits until both handled it: (analyses,
/// duplicates) over both.
async fn both_see_an_incident(replicas: &[&Reporter]) -> (u64, u64) {
    let handled = |r: &Reporter| r.stats().local_summaries + r.stats().duplicates;
    let before: Vec<u64> = replicas.iter().map(|r| handled(r)).collect();
    let analyses: u64 = replicas.iter().map(|r| r.stats().local_summaries).sum();
    let duplicates: u64 = replicas.iter().map(|r| r.stats().duplicates).sum();
    for r in replicas {
        assert!(r.submit(incident()));
    }
    eventually(
        "both reporters handled it",
        Duration::from_secs(10),
        || async {
            replicas
                .iter()
                .zip(&before)
                .all(|(r, b)| handled(r) == b + 1)
        },
    )
    .await;
    (
        replicas
            .iter()
            .map(|r| r.stats().local_summaries)
            .sum::<u64>()
            - analyses,
        replicas.iter().map(|r| r.stats().duplicates).sum::<u64>() - duplicates,
    )
}

#[tokio::test]
async fn one_analysis_per_incident_across_replicas_and_local_dedupe_while_redis_is_down() {
    let redis = TestRedis::start().await.expect("start redis-server");
    let (a, dedupe_a) = replica(&redis, "replica-a");
    let (b, dedupe_b) = replica(&redis, "replica-b");

    assert_eq!(both_see_an_incident(&[&a, &b]).await, (1, 1));
    // Within the window, later copies are duplicates everywhere.
    assert_eq!(both_see_an_incident(&[&a, &b]).await, (0, 2));

    redis.stop();
    // Each replica decides alone: its first copy is analysed, once.
    assert_eq!(both_see_an_incident(&[&a, &b]).await, (2, 0));
    assert_eq!(both_see_an_incident(&[&a, &b]).await, (0, 2));
    assert!(dedupe_a.fallbacks() >= 2 && dedupe_b.fallbacks() >= 2);

    // Back (empty: nothing is persisted): one analysis cluster-wide again.
    redis.start_again().await.unwrap();
    // Until the reconnect, copies are still decided locally (duplicates there by now).
    let mut back = (0, 0);
    for _ in 0..50 {
        back = both_see_an_incident(&[&a, &b]).await;
        if back == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, (1, 1), "shared again once Redis is back");
}
