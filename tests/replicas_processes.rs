//! Leader failover across processes: three replica processes (this test binary run again as
//! a child) share one PostgreSQL; the leader is killed with SIGKILL and the time until
//! another process holds the leader lock is measured.

mod common;

use common::{cluster, eventually};
use poolguard::watchdog::{Watchdog, WatchdogConfig};
use poolguard::{Guard, PoolOptions};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const URL: &str = "POOLGUARD_REPLICA_URL";
const INSTANCE: &str = "POOLGUARD_REPLICA_INSTANCE";
/// The watchdog interval of the replicas: the default.
const INTERVAL: Duration = Duration::from_secs(1);

/// Run as a child process: one replica (guard and watchdog) until killed. Does nothing when
/// run by the test harness itself.
#[tokio::test]
async fn replica_process() {
    let (Ok(url), Ok(instance)) = (std::env::var(URL), std::env::var(INSTANCE)) else {
        return;
    };
    let options = PoolOptions {
        application_name: "api".into(),
        instance: Some(instance),
        max_size: 2,
        ..PoolOptions::default()
    };
    let guard = Guard::builder_for_url(&url, &options)
        .unwrap()
        .build()
        .unwrap();
    let _dog = Watchdog::builder(&guard)
        .config(WatchdogConfig {
            interval: INTERVAL,
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    std::future::pending::<()>().await;
}

struct Replica {
    instance: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_replica(url: &str, instance: &str) -> Replica {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "replica_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(URL, url)
        .env(INSTANCE, instance)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica {
        instance: instance.to_string(),
        child,
    }
}

/// The instance whose watchdog session holds an advisory lock, if any.
async fn leader(observer: &tokio_postgres::Client) -> Option<String> {
    observer
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'api:%'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0))
        .and_then(|app| app.split(':').nth(1).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_process_hands_the_lead_to_another_within_about_an_interval() {
    let pg = cluster(40).await;
    let observer = pg.connect().await.unwrap();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| spawn_replica(&pg.url(), &format!("proc-{i}")))
        .collect();
    eventually("three watchdogs and a leader", Duration::from_secs(60), || async {
        let watchdogs: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'api:%:watchdog'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        watchdogs == 3 && leader(&observer).await.is_some()
    })
    .await;
    let mut failovers = Vec::new();
    for _round in 0..2 {
        let old = leader(&observer).await.expect("a leader");
        let at = replicas.iter().position(|r| r.instance == old).unwrap();
        let mut killed = replicas.remove(at);
        let started = Instant::now();
        killed.child.kill().unwrap(); // SIGKILL
        killed.child.wait().unwrap();
        let new = loop {
            match leader(&observer).await {
                Some(new) if new != old => break new,
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nobody took over"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        failovers.push((old, new, started.elapsed()));
    }
    eprintln!("leader failover after kill -9 (interval {INTERVAL:?}): {failovers:?}");
    for (_, _, took) in &failovers {
        // One interval, with wide room for a loaded machine.
        assert!(*took < INTERVAL * 10, "{failovers:?}");
    }
}
