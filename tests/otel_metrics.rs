//! The OpenTelemetry-convention metric names, read from a real Prometheus scrape. (Its own
//! test binary: the recorder and the switch are process-wide.)

mod common;

use common::{cluster, guard_with, pool_options, scrape_value as value};
use poolguard::metrics::otel;
use poolguard::{Criticality, GuardConfig};
use std::time::Duration;

#[tokio::test]
async fn otel_names_appear_in_the_scrape_once_enabled() {
    let handle = poolguard::metrics::install_prometheus().unwrap();
    assert!(!otel::is_enabled());
    assert!(otel::enable("orders"));
    assert!(!otel::enable("other"), "the first call wins");
    let pg = cluster(20).await;
    let config = GuardConfig {
        sample_interval: Duration::from_millis(20),
        max_queue_wait: Duration::from_millis(200),
        ..GuardConfig::default()
    };
    let guard = guard_with(&pg, pool_options(4), config).await;

    // One connection used and given back: a wait and a use time.
    let conn = guard.acquire(Criticality::Critical).await.unwrap();
    conn.simple_query("SELECT 1").await.unwrap();
    drop(conn);
    // Every slot open to standard work held, and one more that times out in the queue.
    let capacity = guard.status().max_size - guard.status().reserve;
    let mut held = Vec::new();
    for _ in 0..capacity {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    assert!(guard.acquire(Criticality::Standard).await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scrape = handle.render();

    let pool = "pool_name=\"orders\"";
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_count{{state=\"used\",{pool}}}")
        ),
        capacity as f64
    );
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_count{{state=\"idle\",{pool}}}")
        ),
        value(&scrape, "db_connection_pool_idle")
    );
    assert_eq!(
        value(&scrape, &format!("db_client_connection_max{{{pool}}}")),
        value(&scrape, "db_connection_pool_max")
    );
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_pending_requests{{{pool}}}")
        ),
        value(&scrape, "db_connection_pool_waiting")
    );
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_wait_time_seconds_count{{{pool}}}")
        ),
        1.0 + capacity as f64
    );
    assert!(scrape.contains(&format!(
        "db_client_connection_wait_time_seconds_bucket{{{pool},le=\"0.001\"}}"
    )));
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_use_time_seconds_count{{{pool}}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            &format!("db_client_connection_timeouts_total{{{pool}}}")
        ),
        1.0
    );
    // Alongside poolguard's own names, with help text.
    assert_eq!(value(&scrape, "db_connection_pool_active"), capacity as f64);
    for name in otel::ALL {
        assert!(
            scrape.contains(&format!("# HELP {name}")),
            "no help for {name}"
        );
    }
    drop(held);
}
