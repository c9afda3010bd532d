//! Session settings on every pooled connection, statement timeouts, and requests dropped
//! mid-query, against a real PostgreSQL.

mod common;

use common::{backends, cluster, eventually, guard_with, pool_options};
use poolguard::events::EventKind;
use poolguard::testing::TestCluster;
use poolguard::{ClassTimeouts, Criticality, Error, Guard, GuardConfig, GuardedConn, PoolOptions};
use std::time::Duration;

/// The backend process serving `conn`.
async fn backend_pid(conn: &GuardedConn) -> i32 {
    conn.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// A new cluster, a guard over a pool of one connection on it, and a connection of the
/// test's own that has run `setup`.
async fn one_connection_guard(setup: &str) -> (TestCluster, Guard, tokio_postgres::Client) {
    let pg = cluster(20).await;
    let guard = guard_with(&pg, pool_options(1), GuardConfig::default()).await;
    let observer = pg.connect().await.unwrap();
    observer.batch_execute(setup).await.unwrap();
    (pg, guard, observer)
}

/// The SQLSTATE the server refused `sql` with on `conn`; `None` when it ran.
async fn refusal_code(conn: &GuardedConn, sql: &str) -> Option<String> {
    match conn.batch_execute(sql).await {
        Ok(()) => None,
        Err(Error::Db(e)) => Some(e.code().unwrap().code().to_string()),
        Err(other) => panic!("{sql:?} failed without reaching the server: {other:?}"),
    }
}

/// Fails unless `conn` is outside any transaction block, where `SAVEPOINT` fails with SQLSTATE
/// 25P01: proof that no transaction was left open on it by an earlier borrower.
async fn assert_outside_a_transaction(conn: &GuardedConn, who: &str) {
    let code = refusal_code(conn, "SAVEPOINT probe").await;
    assert_eq!(
        code.as_deref(),
        Some("25P01"),
        "{who} was inside a transaction"
    );
}

/// Fails unless `next` is served by another backend than `first_pid` (the connection was
/// discarded, not reused) and is outside any transaction.
async fn assert_replaced(next: &GuardedConn, first_pid: i32) {
    assert_ne!(
        backend_pid(next).await,
        first_pid,
        "the connection was discarded, not reused"
    );
    assert_outside_a_transaction(next, "the next borrower").await;
}

#[tokio::test]
async fn every_connection_carries_statement_timeout_even_after_recycling() {
    let pg = cluster(40).await;
    let options = PoolOptions {
        statement_timeout: Duration::from_millis(1500),
        application_name: "pg-settings-test".into(),
        ..pool_options(5)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let mut backend_pids = std::collections::HashSet::new();
    let mut peak_size = 0;
    for round in 0..40 {
        // Hold several at once so the pool opens all its connections.
        let mut held = Vec::new();
        for _ in 0..(1 + round % 4) {
            held.push(guard.acquire(Criticality::Standard).await.unwrap());
        }
        for conn in &held {
            let row = conn
                .query_one(
                    "SELECT current_setting('statement_timeout'), current_setting('application_name'), \
                     current_setting('idle_in_transaction_session_timeout'), pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "1500ms", "round {round}");
            // `{service}:{instance}`, the instance unique to this guard.
            let name = row.get::<_, String>(1);
            assert!(name.starts_with("pg-settings-test:"), "{name}");
            assert_eq!(row.get::<_, String>(2), "1min");
            backend_pids.insert(row.get::<_, i32>(3));
            // A handler that changes its session must not leak that to the next borrower.
            conn.batch_execute("SET statement_timeout = 0; SET application_name = 'changed'")
                .await
                .unwrap();
        }
        peak_size = peak_size.max(guard.pool().status().size);
    }
    // The settings came back through recycling, not by opening new connections: the pool
    // never grew past its size and the same few backends served all 40 rounds.
    assert!(peak_size <= 5, "the pool grew to {peak_size}");
    assert!(
        (4..=5).contains(&backend_pids.len()),
        "the same connections were reused, reset: {backend_pids:?}"
    );
}

#[tokio::test]
async fn a_statement_over_the_timeout_is_a_typed_error_and_an_event() {
    let pg = cluster(20).await;
    let options = PoolOptions {
        statement_timeout: Duration::from_millis(200),
        ..pool_options(3)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let mut events = guard.subscribe();
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    let err = conn.query("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert!(err.hit_statement_timeout(), "{err:?}");
    assert_eq!(err.status(), 504);
    match err {
        Error::QueryCanceled(e) => assert_eq!(e.code().unwrap().code(), "57014"),
        other => panic!("{other:?}"),
    }
    // The connection is still usable after a timed-out statement.
    let row = conn.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let e = events.recv().await.unwrap();
    assert!(matches!(
        e.kind,
        EventKind::StatementTimedOut {
            class: Criticality::Standard,
            ..
        }
    ));
}

#[tokio::test]
async fn per_class_statement_timeout_overrides_and_is_reset_on_return() {
    let pg = cluster(20).await;
    let config = GuardConfig {
        class_statement_timeout: ClassTimeouts {
            non_critical: Some(Duration::from_millis(250)),
            ..ClassTimeouts::default()
        },
        ..GuardConfig::default()
    };
    let guard = guard_with(&pg, pool_options(1), config).await;
    let report = guard.acquire(Criticality::NonCritical).await.unwrap();
    let row = report
        .query_one(
            "SELECT current_setting('statement_timeout'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (t, report_pid): (String, i32) = (row.get(0), row.get(1));
    assert_eq!(t, "250ms");
    assert!(report
        .query("SELECT pg_sleep(2)", &[])
        .await
        .unwrap_err()
        .hit_statement_timeout());
    drop(report);
    // The single pooled connection goes back to the pool default for the next class.
    let standard = guard.acquire(Criticality::Standard).await.unwrap();
    let row = standard
        .query_one(
            "SELECT current_setting('statement_timeout'), pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (t, standard_pid): (String, i32) = (row.get(0), row.get(1));
    assert_eq!(t, "30s");
    assert_eq!(
        standard_pid, report_pid,
        "the same connection, reset on recycle (not replaced by a fresh one)"
    );
}

/// On a distant server, a checkout takes the recycle's round trip and no other: the per-class
/// settings (here a class `statement_timeout`; the watchdog's connection tag goes the same
/// way) are sent ahead of the caller's first query, which runs with them.
#[tokio::test]
async fn per_class_settings_cost_a_checkout_no_round_trip_of_their_own() {
    let pg = cluster(20).await;
    let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], pg.port()).into()).await;
    let config = GuardConfig {
        class_statement_timeout: ClassTimeouts {
            critical: Some(Duration::from_millis(700)),
            ..ClassTimeouts::default()
        },
        ..GuardConfig::default()
    };
    let guard = Guard::builder_for(proxy.config_for(&pg.pg_config()), &pool_options(1))
        .unwrap()
        .config(config)
        .build()
        .unwrap();
    // The pool's one connection is opened before the server moves away.
    drop(guard.acquire(Criticality::Critical).await.unwrap());
    let delay = Duration::from_millis(250);
    proxy.set(common::proxy::Mode::Delay(delay));
    let started = std::time::Instant::now();
    let conn = guard.acquire(Criticality::Critical).await.unwrap();
    let checkout = started.elapsed();
    // One round trip (the recycle) takes at least 2 x 250 ms; waiting for the SETs too would
    // make it at least 1 s.
    assert!(checkout >= 2 * delay, "{checkout:?}");
    assert!(
        checkout < 3 * delay,
        "the checkout waited for the SETs: {checkout:?}"
    );
    let row = conn
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "700ms");
}

#[tokio::test]
async fn a_request_dropped_mid_query_cancels_it_and_leaves_the_pool_exact() {
    let pg = cluster(20).await;
    let options = PoolOptions {
        application_name: "drop-test".into(),
        ..pool_options(4)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let observer = pg.connect().await.unwrap();
    let mut events = guard.subscribe();

    // A plain query and one inside a transaction, both abandoned by their callers.
    let g = guard.clone();
    let plain = tokio::time::timeout(Duration::from_millis(300), async move {
        let conn = g.acquire(Criticality::Standard).await.unwrap();
        conn.query("SELECT pg_sleep(60)", &[]).await
    })
    .await;
    assert!(plain.is_err(), "the caller gave up");

    let g = guard.clone();
    let in_tx = tokio::time::timeout(Duration::from_millis(300), async move {
        let conn = g.acquire(Criticality::Standard).await.unwrap();
        conn.batch_execute("BEGIN; UPDATE pg_namespace SET nspname = nspname WHERE false")
            .await
            .unwrap();
        conn.query("SELECT pg_sleep(60)", &[]).await
    })
    .await;
    assert!(in_tx.is_err());

    eventually(
        "server-side queries cancelled",
        Duration::from_secs(10),
        || async { backends(&observer, "drop-test", "active").await == 0 },
    )
    .await;
    eventually(
        "no session left in a transaction",
        Duration::from_secs(10),
        || async {
            backends(&observer, "drop-test", "idle in transaction").await == 0
                && backends(&observer, "drop-test", "idle in transaction (aborted)").await == 0
        },
    )
    .await;
    let s = guard.status();
    assert_eq!(s.granted, 0, "both slots came back");
    assert_eq!(s.queued, 0);
    let pool = guard.pool().status();
    assert_eq!(pool.available, pool.size, "every pooled connection is idle");

    // Both abandonments are reported with the cancel delivered.
    let mut abandoned = 0;
    while abandoned < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("abandonment events")
            .unwrap();
        if let EventKind::QueryAbandoned { cancel_sent, .. } = e.kind {
            assert!(cancel_sent);
            abandoned += 1;
        }
    }

    // The next borrowers get healthy connections outside any transaction.
    for _ in 0..4 {
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        assert_outside_a_transaction(&conn, "the connection").await;
    }
}

#[tokio::test]
async fn a_connection_returned_inside_a_transaction_is_discarded_and_its_writes_rolled_back() {
    let (_pg, guard, observer) =
        one_connection_guard("CREATE TABLE ledger (id int PRIMARY KEY)").await;
    let first_pid: i32 = {
        // A handler that opens a transaction, writes, and returns without COMMIT or ROLLBACK.
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        conn.batch_execute("BEGIN; INSERT INTO ledger VALUES (1)")
            .await
            .unwrap();
        backend_pid(&conn).await
    };
    // The next borrower (the pool holds one connection) is outside any transaction, and a
    // COMMIT it sends cannot commit the earlier request's write.
    let next = guard.acquire(Criticality::Standard).await.unwrap();
    assert_replaced(&next, first_pid).await;
    next.batch_execute("COMMIT").await.unwrap();
    drop(next);
    let rows: i64 = observer
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the abandoned transaction was rolled back");
}

/// What a handler leaves in its session (a temporary table, an advisory lock, a cursor
/// held past its transaction, a `LISTEN`, a sequence's `currval`) is gone for the next
/// borrower of the same connection.
#[tokio::test]
async fn a_handlers_session_state_is_gone_for_the_next_borrower_of_its_connection() {
    let (_pg, guard, _observer) = one_connection_guard("CREATE SEQUENCE tickets").await;
    let first_pid = {
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        conn.batch_execute(
            "CREATE TEMP TABLE scratch (id int); SELECT pg_advisory_lock(42); \
             BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT; \
             LISTEN news; SELECT nextval('tickets')",
        )
        .await
        .unwrap();
        backend_pid(&conn).await
    };
    let next = guard.acquire(Criticality::Standard).await.unwrap();
    let row = next
        .query_one(
            "SELECT pg_backend_pid(), to_regclass('pg_temp.scratch') IS NULL, \
             (SELECT count(*) FROM pg_locks \
              WHERE locktype = 'advisory' AND pid = pg_backend_pid()), \
             (SELECT count(*) FROM pg_cursors WHERE name = 'held'), \
             (SELECT count(*) FROM pg_listening_channels())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), first_pid, "the connection was kept");
    assert!(row.get::<_, bool>(1), "the temporary table was dropped");
    assert_eq!(row.get::<_, i64>(2), 0, "the advisory lock was released");
    assert_eq!(row.get::<_, i64>(3), 0, "the held cursor was closed");
    assert_eq!(row.get::<_, i64>(4), 0, "the channel was unlistened");
    let code = refusal_code(&next, "SELECT currval('tickets')").await;
    assert_eq!(code.as_deref(), Some("55000"), "currval survived the reset");
}

/// A handler that only ran `BEGIN` (no statement in the transaction yet) still leaves it
/// open: the connection is discarded, not handed to the next borrower inside it.
#[tokio::test]
async fn a_connection_returned_right_after_begin_is_discarded() {
    let pg = cluster(20).await;
    let guard = guard_with(&pg, pool_options(1), GuardConfig::default()).await;
    let first_pid = {
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        let pid = backend_pid(&conn).await;
        conn.batch_execute("BEGIN").await.unwrap();
        pid
    };
    let next = guard.acquire(Criticality::Standard).await.unwrap();
    assert_replaced(&next, first_pid).await;
}

#[tokio::test]
async fn a_request_dropped_inside_a_tracked_transaction_rolls_it_back_on_the_server() {
    let pg = cluster(20).await;
    let options = PoolOptions {
        application_name: "tx-drop-test".into(),
        ..pool_options(2)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let observer = pg.connect().await.unwrap();
    observer
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .unwrap();

    // Committed: the write lands and the connection goes back to the pool.
    let mut conn = guard.acquire(Criticality::Standard).await.unwrap();
    let tx = conn.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(conn);
    assert_eq!(
        guard.pool().status().size,
        1,
        "a committed connection is reused"
    );

    // Dropped mid-transaction, mid-query (through the transaction's own query API).
    let g = guard.clone();
    let gave_up = tokio::time::timeout(Duration::from_millis(300), async move {
        let mut conn = g.acquire(Criticality::Standard).await.unwrap();
        let tx = conn.transaction().await.unwrap();
        tx.execute("INSERT INTO orders VALUES (2)", &[])
            .await
            .unwrap();
        tx.query("SELECT pg_sleep(60)", &[]).await
    })
    .await;
    assert!(gave_up.is_err(), "the caller gave up");

    eventually(
        "the sleeping query is gone",
        Duration::from_secs(10),
        || async {
            backends(&observer, "tx-drop-test", "active").await == 0
                && backends(&observer, "tx-drop-test", "idle in transaction").await == 0
                && backends(&observer, "tx-drop-test", "idle in transaction (aborted)").await == 0
        },
    )
    .await;
    let ids: Vec<i32> = observer
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        vec![1],
        "the abandoned transaction's write was rolled back"
    );
    // The slot comes back once the connection has been checked after the cancel (a short
    // settle query runs on it first), not before: within a bound, and then exactly.
    eventually(
        "the abandoned transaction's slot and connection come back",
        Duration::from_secs(10),
        || async {
            let s = guard.status();
            let pool = guard.pool().status();
            (s.granted, s.queued) == (0, 0) && pool.available == pool.size
        },
    )
    .await;
}
