//! The published level never lags the admission state: a de-escalation and a re-escalation
//! that race cannot leave a stale level published.

mod common;

use common::offline::unreachable_pool;
use poolguard::{Guard, GuardConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_level_changes_never_leave_a_stale_level_published() {
    let config = GuardConfig {
        // Every calm reading steps the level down: as many transitions as possible.
        min_dwell: Duration::from_nanos(1),
        sample_interval: Duration::from_secs(3600),
        ..GuardConfig::default()
    };
    let guard = Guard::builder(unreachable_pool(10))
        .config(config)
        .build()
        .unwrap();
    for round in 0..3000 {
        let (up, down) = (guard.clone(), guard.clone());
        let a = std::thread::spawn(move || {
            for _ in 0..20 {
                up.report_server_utilization(0.99);
            }
        });
        let b = std::thread::spawn(move || {
            for _ in 0..20 {
                down.report_server_utilization(0.10);
            }
        });
        a.join().unwrap();
        b.join().unwrap();
        let published = guard.level();
        let actual = guard.status().level;
        assert_eq!(
            published, actual,
            "round {round}: published {published}, admission state at {actual}"
        );
        assert_eq!(
            *guard.watch_level().borrow(),
            actual,
            "round {round}: watch"
        );
    }
}
