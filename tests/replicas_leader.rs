//! One leader among the watchdogs of a service, by advisory lock on their own sessions: it
//! reaps the idle transactions of an instance that is gone, and when its session is
//! terminated another watchdog takes over within a bounded time.

mod common;

use common::{cluster, eventually, guard_with, pool_options, quick_config};
use poolguard::events::{ActionOutcome, EventKind};
use poolguard::watchdog::{Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{Guard, PoolOptions};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);

async fn replicas(
    pg: &poolguard::testing::TestCluster,
    n: usize,
    dry_run: bool,
) -> Vec<(Guard, WatchdogHandle)> {
    let mut all = Vec::new();
    for i in 0..n {
        let options = PoolOptions {
            application_name: "api".into(),
            instance: Some(format!("pod-{i}")),
            ..pool_options(4)
        };
        let guard = guard_with(pg, options, quick_config()).await;
        let dog = Watchdog::builder(&guard)
            .config(WatchdogConfig {
                interval: INTERVAL,
                idle_in_transaction_after: Duration::from_millis(500),
                dry_run,
                ..WatchdogConfig::default()
            })
            .spawn()
            .unwrap();
        all.push((guard, dog));
    }
    all
}

fn leaders(all: &[(Guard, WatchdogHandle)]) -> Vec<usize> {
    (0..all.len()).filter(|i| all[*i].1.is_leader()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leaders_session_ends_another_replica_takes_over() {
    let pg = cluster(40).await;
    let all = replicas(&pg, 3, false).await;
    eventually("one leader", Duration::from_secs(10), || async {
        leaders(&all).len() == 1
    })
    .await;
    let observer = pg.connect().await.unwrap();
    let mut failovers = Vec::new();
    for _round in 0..2 {
        let old = leaders(&all);
        assert_eq!(old.len(), 1, "exactly one leader: {old:?}");
        let name = format!("api:pod-{}:watchdog", old[0]);
        let killed: i64 = observer
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1) t",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "the leader's session was found and ended");
        let ended = Instant::now();
        let mut seen_two = false;
        let took = loop {
            let now = leaders(&all);
            seen_two |= now.len() > 1 && now.iter().filter(|i| **i != old[0]).count() > 1;
            if now.iter().any(|i| *i != old[0]) {
                break ended.elapsed();
            }
            assert!(
                ended.elapsed() < Duration::from_secs(15),
                "no replica took over"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!seen_two, "never two new leaders at once");
        failovers.push(took);
        // The old leader's watchdog reconnects as a follower.
        eventually("one leader again", Duration::from_secs(10), || async {
            leaders(&all).len() == 1
        })
        .await;
    }
    eprintln!("leader failover after pg_terminate_backend (interval {INTERVAL:?}): {failovers:?}");
    for took in &failovers {
        // One interval plus the reconnect of nobody: the next tick of any follower. Bounded
        // widely for a loaded machine.
        assert!(*took < Duration::from_secs(5), "{failovers:?}");
    }
}

/// Opens a session of the service's instance `pod-gone`, which has no watchdog, and leaves
/// it idle in a transaction; the returned task ends when the server ends the session.
async fn orphan(pg: &poolguard::testing::TestCluster) -> tokio::task::JoinHandle<()> {
    let mut cfg = pg.pg_config();
    cfg.application_name("api:pod-gone");
    let (ghost, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = connection.await;
    });
    ghost.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // Keep the client alive as long as the session, or dropping it would end the session.
    tokio::spawn(async move {
        let _ghost = ghost;
        std::future::pending::<()>().await;
    });
    ended
}

/// Every reap event (watchdog index, outcome), all about `pod-gone`.
fn reaps(subs: &mut [poolguard::events::EventSubscriber]) -> Vec<(usize, ActionOutcome)> {
    let mut reapers = Vec::new();
    for (i, sub) in subs.iter_mut().enumerate() {
        while let Some(event) = sub.try_recv() {
            if let EventKind::IdleInTransactionReaped {
                backend, outcome, ..
            } = event.kind
            {
                assert_eq!(backend.other_instance.as_deref(), Some("pod-gone"));
                reapers.push((i, outcome));
            }
        }
    }
    reapers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reaps_an_idle_transaction_of_an_instance_that_is_gone() {
    let pg = cluster(40).await;
    // In dry run every watchdog that would reap reports it (once): only the leader does.
    let watching = replicas(&pg, 3, true).await;
    let mut subs: Vec<_> = watching.iter().map(|(g, _)| g.subscribe()).collect();
    eventually("one leader", Duration::from_secs(10), || async {
        leaders(&watching).len() == 1
    })
    .await;
    let _ended = orphan(&pg).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reported = reaps(&mut subs);
    assert_eq!(reported.len(), 1, "one watchdog would reap: {reported:?}");
    assert_eq!(reported[0].1, ActionOutcome::DryRun);
    assert!(watching[reported[0].0].1.is_leader(), "the leader");
    drop(watching);

    let acting = replicas(&pg, 3, false).await;
    let mut subs: Vec<_> = acting.iter().map(|(g, _)| g.subscribe()).collect();
    let ended = orphan(&pg).await;
    tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("the orphan's session is ended")
        .unwrap();
    let reaped = reaps(&mut subs);
    assert!(
        reaped.contains(&(reaped[0].0, ActionOutcome::Done)) && acting[reaped[0].0].1.is_leader(),
        "{reaped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_raises_server_pressure_while_every_replica_escalates() {
    // max_connections 30 less 3 superuser slots: 27 usable.
    let pg = cluster(30).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    let all = replicas(&pg, 3, false).await;
    let mut subs: Vec<_> = all.iter().map(|(g, _)| g.subscribe()).collect();
    eventually("one leader", Duration::from_secs(10), || async {
        leaders(&all).len() == 1
    })
    .await;
    let mut others = Vec::new();
    for _ in 0..21 {
        others.push(pg.connect().await.unwrap());
    }
    eventually(
        "every replica escalates",
        Duration::from_secs(10),
        || async {
            all.iter()
                .all(|(g, _)| g.level() != poolguard::Level::Normal)
        },
    )
    .await;
    tokio::time::sleep(INTERVAL * 5).await;
    let raised: Vec<usize> = subs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, sub)| {
            let mut any = false;
            while let Some(e) = sub.try_recv() {
                any |= matches!(e.kind, EventKind::ServerPressure { .. });
            }
            any.then_some(i)
        })
        .collect();
    assert_eq!(
        raised.len(),
        1,
        "one replica speaks for the server: {raised:?}"
    );
    assert!(all[raised[0]].1.is_leader());
    drop(others);
}
