//! `poolguard_utilization` shows what drives the level, server-wide pressure included.
#![cfg(feature = "prometheus")]

use poolguard::{Guard, GuardConfig, Level};
use std::time::Duration;

#[tokio::test]
async fn the_utilization_gauge_includes_server_pressure_when_it_drives_the_level() {
    let handle = poolguard::metrics::install_prometheus().unwrap();
    let pg: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(10)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap();
    let guard = Guard::builder(pool)
        .config(GuardConfig {
            sample_interval: Duration::from_millis(20),
            ..GuardConfig::default()
        })
        .build()
        .unwrap();
    // The pool is idle; the server is 95 % full (another process holds its connections).
    guard.report_server_utilization(0.95);
    assert_eq!(guard.level(), Level::Critical);
    let gauge = || {
        handle
            .render()
            .lines()
            .find(|l| l.starts_with("poolguard_utilization "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let started = std::time::Instant::now();
    while gauge() != Some(0.95) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the gauge shows {:?}, not the 0.95 that drives the level",
            gauge()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
