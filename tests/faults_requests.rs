//! Faults made by requests: a statement timeout or an error inside a transaction, a cancel
//! racing the next query, requests dropped while queued and while their query runs, a wave
//! of abandoned queries, and a 10x burst of retrying clients.

mod common;

use common::faults::{Ledger, Rig, RigOptions, APP};
use poolguard::events::EventKind;
use poolguard::{Criticality, Error, Level};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn stored(rig: &Rig, id: u64) -> i64 {
    rig.admin
        .query_one("SELECT count(*) FROM writes WHERE id = $1", &[&(id as i64)])
        .await
        .unwrap()
        .get(0)
}

fn abandoned_events(events: &mut poolguard::events::EventSubscriber) -> usize {
    let mut n = 0;
    while let Some(e) = events.try_recv() {
        if matches!(e.kind, EventKind::QueryAbandoned { .. }) {
            n += 1;
        }
    }
    n
}

/// A statement timeout inside a transaction is a 504 and a rollback, not an abandoned
/// request: no cancel, no "dropped mid-query" event, and the connection is reused.
#[tokio::test]
async fn a_statement_timeout_inside_a_transaction_rolls_back_and_keeps_the_connection() {
    let rig = Rig::start(RigOptions {
        pool_size: 1,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    let before = rig.pool_pids().await;
    let mut events = rig.guard.subscribe();
    let started = Instant::now();
    let id = rig.id();
    let r = rig.send(id, &format!("/write?id={id}&ms=5000"), "u").await;
    assert_eq!(r.status, Some(504), "{r:?}");
    assert!(r.body.contains("statement_timeout"), "{}", r.body);
    assert_eq!(stored(&rig, id).await, 0, "the transaction was rolled back");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        abandoned_events(&mut events),
        0,
        "not reported as abandoned"
    );
    let after = rig.pool_pids().await;
    assert_eq!(before.len().max(1), after.len());
    if !before.is_empty() {
        assert_eq!(before, after, "the same connection serves on");
    }
    let ledger = Ledger { records: vec![r] };
    let recovery = rig.recovery(Instant::now()).await;
    rig.check("statement timeout in a transaction", &ledger, recovery)
        .await;
    let _ = started;
}

/// A failing query inside `GuardedConn::transaction()` is only an error: it is answered with
/// the server's message, the transaction rolls back, and the connection is reused as is.
#[tokio::test]
async fn a_query_error_inside_a_transaction_is_not_an_abandoned_request() {
    let rig = Rig::start(RigOptions {
        pool_size: 1,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    let mut conn = rig.guard.acquire(Criticality::Standard).await.unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut events = rig.guard.subscribe();
    let err = {
        let tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO writes VALUES (1, 'a')", &[])
            .await
            .unwrap();
        // The same row again: a unique violation.
        tx.execute("INSERT INTO writes VALUES (1, 'a')", &[])
            .await
            .unwrap_err()
    };
    match &err {
        Error::Db(e) => assert_eq!(e.code().unwrap().code(), "23505"),
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("23505") && text.contains("duplicate key"),
        "the server's message and SQLSTATE: {text}"
    );
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        abandoned_events(&mut events),
        0,
        "not reported as abandoned"
    );
    let conn = rig.guard.acquire(Criticality::Standard).await.unwrap();
    let again: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, pid, "the connection was reused, not discarded");
    drop(conn);
    assert_eq!(stored(&rig, 1).await, 0);
    rig.check_accounting("query error in a transaction").await;
}

/// A request abandoned mid-query on a one-connection pool, then at once the next request on
/// the same connection: the cancel meant for the first never stops the second.
#[tokio::test]
async fn a_cancel_never_lands_on_the_next_query() {
    let rig = Rig::start(RigOptions {
        pool_size: 1,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    let mut records = Vec::new();
    for _ in 0..10 {
        let gone = rig
            .send_within("/read?ms=800", "gone", Duration::from_millis(100))
            .await;
        assert_eq!(gone.status, None, "the client gave up");
        let id = rig.id();
        let next = rig.send(id, "/read?ms=150", "next").await;
        assert_eq!(next.status, Some(200), "{next:?}");
        records.push(next);
    }
    let ledger = Ledger { records };
    let recovery = rig.recovery(Instant::now()).await;
    rig.check("cancel racing the next query x10", &ledger, recovery)
        .await;
}

/// A request dropped while it waits in the queue never runs and leaves nothing behind.
#[tokio::test]
async fn a_request_dropped_while_queued_never_runs() {
    let rig = Rig::start(RigOptions {
        pool_size: 2,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    // Hold every standard slot (the second is the critical reserve).
    let holder = rig.guard.acquire(Criticality::Standard).await.unwrap();
    let id = rig.id();
    let gone = rig
        .send_within(
            &format!("/write?id={id}&ms=0"),
            "queued",
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(gone.status, None);
    drop(holder);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(&rig, id).await, 0, "the queued request never ran");
    rig.check_accounting("dropped while queued").await;
}

/// A request dropped while its query runs: the query is cancelled on the server, the event
/// says so, and the connection is checked and reused (same backend), not replaced.
#[tokio::test]
async fn a_request_dropped_mid_query_is_cancelled_and_its_connection_reused() {
    let rig = Rig::start(RigOptions {
        pool_size: 1,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    assert_eq!(rig.send(0, "/read?ms=0", "warm").await.status, Some(200));
    let before = rig.pool_pids().await;
    let mut events = rig.guard.subscribe();
    let gone = rig
        .send_within("/read?ms=900", "gone", Duration::from_millis(150))
        .await;
    assert_eq!(gone.status, None);
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(e) = events.recv().await {
                if let EventKind::QueryAbandoned { cancel_sent, .. } = e.kind {
                    return cancel_sent;
                }
            }
        }
    })
    .await
    .expect("an abandonment event");
    assert!(event, "the cancel was sent");
    rig.check_accounting("dropped mid-query").await;
    assert_eq!(rig.pool_pids().await, before, "the connection was reused");
}

/// A wave of clients giving up at once must not become a wave of connects: cancels run a
/// few at a time, and the connections are cleaned and reused, not replaced.
#[tokio::test]
async fn a_wave_of_abandoned_queries_is_not_a_wave_of_connects() {
    let pool = 8;
    let rig = Rig::start(RigOptions {
        pool_size: pool,
        via_proxy: true,
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    // Open every connection of the pool.
    let held: Vec<_> =
        futures_util::future::join_all((0..pool).map(|_| rig.guard.acquire(Criticality::Critical)))
            .await;
    drop(held);
    let before = rig.pool_pids().await;
    assert_eq!(before.len(), pool);
    rig.proxy().reset_peak();
    let accepted = rig.proxy().accepted();
    let users: Vec<String> = (0..pool).map(|i| format!("gone-{i}")).collect();
    let wave: Vec<_> = users
        .iter()
        .map(|u| rig.send_within("/read?ms=900", u, Duration::from_millis(200)))
        .collect();
    for gone in futures_util::future::join_all(wave).await {
        assert_eq!(gone.status, None);
    }
    rig.check_accounting("a wave of abandoned queries").await;
    let cancels = rig.proxy().accepted() - accepted;
    println!(
        "FAULT | {pool} requests abandoned at once | - | - | - | {cancels} cancel connections, peak {} open",
        rig.proxy().peak_open()
    );
    assert!(
        rig.proxy().peak_open() <= pool + 4,
        "at most 4 cancel connections at once: peak {}",
        rig.proxy().peak_open()
    );
    assert!(
        cancels <= pool,
        "one cancel per query, no reconnects: {cancels}"
    );
    assert_eq!(rig.pool_pids().await, before, "every connection was reused");
}

/// Ten times the usual load, from clients that retry, for a few seconds; then the usual load
/// again. Afterwards nothing stays degraded: the level is Normal, nothing is queued, and the
/// usual load is served as before the burst (no metastable state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10x_burst_of_retrying_clients_leaves_no_metastable_state() {
    let rig = Rig::start(RigOptions::default()).await;
    let path = |id| format!("/write?id={id}&ms=30");
    let stop = Arc::new(AtomicBool::new(false));
    let usual = rig.load_as("usual", 2, path, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut level = rig.guard.watch_level();
    level.mark_unchanged();
    let burst_stop = Arc::new(AtomicBool::new(false));
    let burst = rig.load_as("burst", 20, path, burst_stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    burst_stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let burst = burst.await.unwrap();
    let ended = Instant::now();
    common::eventually("back to Normal", Duration::from_secs(10), || async {
        rig.guard.level() == Level::Normal && rig.guard.status().queued == 0
    })
    .await;
    let recovery = ended.elapsed();
    // The usual load again after the burst (fresh clients): every request served, quickly.
    let after_stop = Arc::new(AtomicBool::new(false));
    let after = rig.load_as("after", 2, path, after_stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    after_stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let after = after.await.unwrap();
    let usual = usual.await.unwrap();
    assert!(after.sent() > 10);
    assert_eq!(
        after.count(200),
        after.sent(),
        "{:?}: {:?}",
        after.statuses(),
        after.records.iter().find(|r| r.status != Some(200))
    );
    let mut all = usual.records;
    all.extend(burst.records);
    all.extend(after.records.iter().cloned());
    let ledger = Ledger { records: all };
    assert!(level.has_changed().unwrap(), "the burst raised the level");
    rig.check("10x burst, clients retrying", &ledger, recovery)
        .await;
    let slowest_after = after.longest();
    assert!(
        slowest_after < Duration::from_secs(1),
        "the usual load is served quickly again: {slowest_after:?}"
    );
    let _ = APP;
}
