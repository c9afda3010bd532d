//! Metric names and values after a known sequence, read from a real Prometheus scrape.

mod common;

use common::{cluster, guard, scrape_value as value};
use poolguard::{Criticality, GuardConfig};
use std::time::Duration;

#[tokio::test]
async fn scrape_shows_the_known_sequence() {
    let handle = poolguard::metrics::install_prometheus().unwrap();
    let pg = cluster(20).await;
    let config = GuardConfig {
        sample_interval: Duration::from_millis(20),
        ..GuardConfig::default()
    };
    let guard = guard(&pg, 10, config).await;

    // 9 standard + 1 critical: pool full, level critical.
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    held.push(guard.acquire(Criticality::Critical).await.unwrap());
    // 3 non-critical deferred, none started before its (short) deadline.
    for _ in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_millis(50);
        let r = guard
            .acquire_until(Criticality::NonCritical, Default::default(), deadline)
            .await;
        assert!(r.is_err());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scrape = handle.render();

    let requests = |class: &str, outcome: &str| {
        value(
            &scrape,
            &format!("poolguard_requests_total{{class=\"{class}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(requests("standard", "served"), 9.0);
    assert_eq!(requests("critical", "served"), 1.0);
    assert_eq!(requests("non_critical", "timed_out"), 3.0);
    assert_eq!(
        value(
            &scrape,
            "poolguard_requests_deferred_total{class=\"non_critical\"}"
        ),
        3.0
    );
    assert_eq!(value(&scrape, "db_connection_pool_active"), 10.0);
    assert_eq!(value(&scrape, "db_connection_pool_max"), 10.0);
    assert_eq!(value(&scrape, "poolguard_level"), 2.0);
    assert_eq!(value(&scrape, "poolguard_queue_depth"), 0.0);
    assert_eq!(
        value(
            &scrape,
            "poolguard_level_transitions_total{to=\"critical\"}"
        ),
        1.0
    );
    // Histograms render as histograms with explicit buckets, not summaries.
    assert!(
        scrape.contains("poolguard_acquire_wait_seconds_bucket{class=\"standard\",le=\"0.001\"}")
    );
    assert_eq!(
        value(
            &scrape,
            "poolguard_acquire_wait_seconds_count{class=\"standard\"}"
        ),
        9.0
    );
    assert!(scrape.contains("# HELP db_connection_pool_active"));
    // No user ids anywhere in the labels.
    assert!(!scrape.contains("user"));

    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scrape = handle.render();
    assert_eq!(value(&scrape, "db_connection_pool_active"), 0.0);
    assert_eq!(
        value(
            &scrape,
            "poolguard_connection_hold_seconds_count{class=\"standard\"}"
        ),
        9.0
    );
}
