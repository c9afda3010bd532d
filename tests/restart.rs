//! PostgreSQL restarted under load: every request is answered, none hangs, and the pool
//! heals by itself.

mod common;

use common::{cluster, guard};
use poolguard::{Criticality, GuardConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_answers_everything_and_heals() {
    let pg = cluster(40).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: this test needs a server it can restart; skipped");
        return;
    }
    let config = GuardConfig {
        pool_wait_timeout: Duration::from_secs(1),
        pool_create_timeout: Duration::from_secs(1),
        max_queue_wait: Duration::from_secs(2),
        ..GuardConfig::default()
    };
    let guard = guard(&pg, 6, config).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(5);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (guard, ok, failed) = (guard.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let attempt = async {
                        let conn = guard.acquire(Criticality::Standard).await?;
                        conn.query_one("SELECT 1", &[]).await?;
                        Ok::<_, poolguard::Error>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                        Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(Err(_)) => failed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => panic!("a request hung for 10 s"),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_outage = ok.load(Ordering::Relaxed);
    pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.restart().await.unwrap();
    for w in workers {
        w.await.expect("no worker panicked (none hung)");
    }
    assert!(before_outage > 0, "served before the outage");
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "the outage was seen as errors, not hangs"
    );
    // Healed: every slot works again on fresh connections (5 standard + the reserved one).
    let mut held = Vec::new();
    for i in 0..6 {
        let class = if i < 5 {
            Criticality::Standard
        } else {
            Criticality::Critical
        };
        let conn = guard.acquire(class).await.unwrap();
        conn.query_one("SELECT 1", &[]).await.unwrap();
        held.push(conn);
    }
    drop(held);
    let s = guard.status();
    assert_eq!(s.granted, 0);
    assert_eq!(s.queued, 0);
}
