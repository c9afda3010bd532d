//! Replicas sharing the server's connection budget: three guards under a 10x burst never hold
//! more connections than `max_connections` less reserved slots, less other applications,
//! less the margin; a fourth joins under the same burst, the others shrink, and the budget
//! still holds.

mod common;

use common::{cluster, eventually, guard_with, pool_options, quick_config};
use poolguard::watchdog::{ConnectionBudget, Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{Criticality, Guard, PoolOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAX_CONNECTIONS: u32 = 60;
const MARGIN: u32 = 5;
/// Connections other applications hold throughout.
const OTHERS: usize = 10;
/// Each pool is configured for far more than its share.
const POOL_SIZE: usize = 30;

async fn replica(pg: &poolguard::testing::TestCluster, i: usize) -> (Guard, WatchdogHandle) {
    let options = PoolOptions {
        application_name: "api".into(),
        instance: Some(format!("pod-{i}")),
        ..pool_options(POOL_SIZE)
    };
    let guard = guard_with(pg, options, quick_config()).await;
    let dog = Watchdog::builder(&guard)
        .config(WatchdogConfig {
            interval: Duration::from_millis(200),
            budget: ConnectionBudget {
                enabled: true,
                margin: MARGIN,
                ..ConnectionBudget::default()
            },
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    (guard, dog)
}

/// 10x the pool's size of concurrent requests, each holding a connection for 30 ms, until
/// `stop`; counts the requests served.
fn burst(guard: &Guard, stop: &Arc<AtomicBool>, served: &Arc<AtomicU64>) {
    for _ in 0..POOL_SIZE * 10 {
        let (guard, stop, served) = (guard.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(conn) = guard.acquire(Criticality::Standard).await {
                    if conn.query("SELECT pg_sleep(0.03)", &[]).await.is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
}

/// (the service's connections, the budget), read together.
async fn reading(observer: &tokio_postgres::Client) -> (i64, i64) {
    let row = observer
        .query_one(
            "SELECT count(*) FILTER (WHERE application_name LIKE 'api:%'), \
                    current_setting('max_connections')::int8 \
                      - current_setting('superuser_reserved_connections')::int8 \
                      - count(*) FILTER (WHERE application_name NOT LIKE 'api:%') \
                      - $1::int8 \
             FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[&i64::from(MARGIN)],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_a_burst_stay_within_the_budget_and_a_fourth_joins() {
    let pg = cluster(MAX_CONNECTIONS).await;
    let observer = pg.connect().await.unwrap();
    let mut others = Vec::new();
    for _ in 0..OTHERS {
        let mut cfg = pg.pg_config();
        cfg.application_name("reports");
        let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        others.push(client);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut replicas = Vec::new();
    for i in 0..3 {
        let r = replica(&pg, i).await;
        burst(&r.0, &stop, &served);
        replicas.push(r);
    }
    let mut peak = (0, i64::MAX);
    let mut over = Vec::new();
    fn sample(peak: &mut (i64, i64), over: &mut Vec<String>, reading: (i64, i64), phase: &str) {
        let (held, budget) = reading;
        if held > peak.0 {
            *peak = (held, budget);
        }
        if held > budget {
            over.push(format!("{phase}: {held} > {budget}"));
        }
    }
    for _ in 0..100 {
        sample(&mut peak, &mut over, reading(&observer).await, "three");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sizes3: Vec<usize> = replicas.iter().map(|(g, _)| g.status().max_size).collect();
    let peak3 = peak;
    let r = replica(&pg, 3).await;
    burst(&r.0, &stop, &served);
    replicas.push(r);
    for _ in 0..100 {
        sample(&mut peak, &mut over, reading(&observer).await, "four");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sizes4: Vec<usize> = replicas.iter().map(|(g, _)| g.status().max_size).collect();
    // Someone else can still connect: the margin is left free.
    let late = pg.connect().await;
    stop.store(true, Ordering::Relaxed);
    let (_, budget) = reading(&observer).await;
    eprintln!(
        "budget {budget} (max_connections {MAX_CONNECTIONS}, others {OTHERS} + observer, margin {MARGIN}); \
         3 replicas: peak {} held, pool sizes {sizes3:?}; 4 replicas: peak {} held, pool sizes {sizes4:?}; \
         {} requests served",
        peak3.0,
        peak.0,
        served.load(Ordering::Relaxed)
    );
    assert!(
        over.is_empty(),
        "held more than the budget in {} readings, first: {:?}",
        over.len(),
        &over[..over.len().min(5)]
    );
    assert!(late.is_ok(), "another application could still connect");
    // The replicas used their shares (the burst wanted 30 each), and the fourth made the
    // others shrink to a quarter.
    assert!(peak3.0 >= i64::from(budget as u32) / 2, "peak {peak3:?}");
    assert!(
        sizes3.iter().all(|s| *s > budget as usize / 4),
        "{sizes3:?}"
    );
    eventually(
        "the others shrink to a quarter",
        Duration::from_secs(5),
        || async {
            replicas
                .iter()
                .all(|(g, _)| g.status().max_size <= budget as usize / 4)
        },
    )
    .await;
    assert!(served.load(Ordering::Relaxed) > 100);
}
