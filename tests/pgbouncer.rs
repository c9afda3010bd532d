//! The guard behind a real PgBouncer (Debian's `pgbouncer`, started by the test harness in
//! front of a throwaway PostgreSQL): which session mode works in which pooling mode,
//! statement timeouts and cancels through transaction pooling, recycling, and the
//! server's message when PgBouncer refuses a connection.

mod common;

use common::{cluster, eventually, pool_options};
use poolguard::session::{apply_role_defaults, SessionSettings};
use poolguard::testing::{PgBouncerOptions, PoolMode, TestCluster, TestPgBouncer};
use poolguard::{Criticality, Error, Guard, GuardConfig, PoolOptions};
use std::time::{Duration, Instant};

async fn bouncer(pg: &TestCluster, pool_mode: PoolMode) -> TestPgBouncer {
    TestPgBouncer::start(
        pg,
        PgBouncerOptions {
            pool_mode,
            default_pool_size: 4,
            ..PgBouncerOptions::default()
        },
    )
    .await
    .expect("start PgBouncer")
}

fn guard_through(bouncer: &TestPgBouncer, options: &PoolOptions) -> Guard {
    Guard::builder_for(bouncer.pg_config(), options)
        .expect("pool options are valid")
        .config(GuardConfig::default())
        .build()
        .expect("guard config is valid")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Text of the first column of the first row of a simple query.
async fn first_value(conn: &poolguard::GuardedConn, sql: &str) -> String {
    conn.simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("one row")
}

#[tokio::test]
async fn startup_options_through_pgbouncer_fail_with_its_message_in_errors_and_health() {
    let pg = cluster(30).await;
    let bouncer = bouncer(&pg, PoolMode::Transaction).await;
    // The default mode, as a user who points DATABASE_URL at PgBouncer gets it.
    let guard = guard_through(&bouncer, &pool_options(2));
    let err = guard.acquire(Criticality::Standard).await.unwrap_err();
    assert!(matches!(err, Error::Rejected(_)), "{err:?}");
    let pool_err = guard.pool().get().await.unwrap_err();
    let chain = error_chain(&pool_err);
    assert!(
        chain.contains("unsupported startup parameter: options"),
        "the pool error carries PgBouncer's message: {chain}"
    );
    let health = guard.health().await;
    assert!(!health.is_available());
    let reason = health.database.error.unwrap_or_default();
    assert!(
        reason.contains("unsupported startup parameter: options"),
        "/health names the refused parameter: {reason}"
    );
}

#[tokio::test]
async fn statement_timeout_is_enforced_through_transaction_pooling_with_role_defaults() {
    let pg = cluster(30).await;
    let options = PoolOptions {
        statement_timeout: Duration::from_millis(300),
        session_settings: SessionSettings::RoleDefaults,
        ..pool_options(3)
    };
    let bouncer = bouncer(&pg, PoolMode::Transaction).await;
    let guard = guard_through(&bouncer, &options);

    // Before the role defaults exist, the pool refuses connections and says what to run.
    let pool_err = guard.pool().get().await.unwrap_err();
    let chain = error_chain(&pool_err);
    assert!(chain.contains("ALTER ROLE"), "{chain}");
    assert!(chain.contains("[0, 0]"), "{chain}");

    apply_role_defaults(&pg.connect().await.unwrap(), &options)
        .await
        .unwrap();
    // PgBouncer's existing server connections started before the change (the check above
    // opened them): a fresh PgBouncer starts all of its server connections afresh.
    drop(guard);
    drop(bouncer);
    let bouncer = TestPgBouncer::start(
        &pg,
        PgBouncerOptions {
            default_pool_size: 4,
            ..PgBouncerOptions::default()
        },
    )
    .await
    .unwrap();
    let guard = guard_through(&bouncer, &options);

    // Several clients at once, so consecutive statements land on different server
    // connections: every one of them stops a long statement.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let guard = guard.clone();
        tasks.push(tokio::spawn(async move {
            let conn = guard.acquire(Criticality::Standard).await.unwrap();
            for _ in 0..3 {
                let started = Instant::now();
                let err = conn
                    .simple_query("SELECT pg_sleep(20)")
                    .await
                    .expect_err("stopped by statement_timeout");
                assert!(err.hit_statement_timeout(), "{err:?}");
                assert!(started.elapsed() < Duration::from_secs(10));
                assert_eq!(first_value(&conn, "SHOW statement_timeout").await, "300ms");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_dropped_request_cancels_its_query_through_pgbouncer() {
    let pg = cluster(30).await;
    let options = PoolOptions {
        session_settings: SessionSettings::RoleDefaults,
        ..pool_options(3)
    };
    apply_role_defaults(&pg.connect().await.unwrap(), &options)
        .await
        .unwrap();
    let bouncer = bouncer(&pg, PoolMode::Transaction).await;
    let guard = guard_through(&bouncer, &options);
    let observer = pg.connect().await.unwrap();

    let g = guard.clone();
    let abandoned = tokio::time::timeout(Duration::from_millis(500), async move {
        let conn = g.acquire(Criticality::Standard).await.unwrap();
        conn.simple_query("SELECT pg_sleep(60) /* abandoned */")
            .await
    })
    .await;
    assert!(abandoned.is_err(), "the caller gave up");

    let running = || async {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(60) /* abandoned */%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // The cancel went to PgBouncer, which forwarded it to the server connection running
    // the query: it stops long before its 60 s (and its 30 s statement_timeout).
    eventually(
        "the abandoned query cancelled on the server",
        Duration::from_secs(10),
        || async { running().await == 0 },
    )
    .await;
    // The pool keeps serving through PgBouncer afterwards.
    for _ in 0..4 {
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        assert_eq!(first_value(&conn, "SELECT 1").await, "1");
    }
}

#[tokio::test]
async fn recycling_through_transaction_pooling_keeps_every_connection_usable() {
    let pg = cluster(30).await;
    let options = PoolOptions {
        session_settings: SessionSettings::RoleDefaults,
        statement_timeout: Duration::from_millis(1500),
        ..pool_options(5)
    };
    apply_role_defaults(&pg.connect().await.unwrap(), &options)
        .await
        .unwrap();
    let bouncer = bouncer(&pg, PoolMode::Transaction).await;
    let guard = guard_through(&bouncer, &options);
    for round in 0..30 {
        let mut held = Vec::new();
        for _ in 0..(1 + round % 4) {
            held.push(guard.acquire(Criticality::Standard).await.unwrap());
        }
        for conn in &held {
            assert_eq!(first_value(conn, "SELECT 1").await, "1", "round {round}");
            assert_eq!(first_value(conn, "SHOW statement_timeout").await, "1500ms");
        }
    }
    // Recycling (the open-transaction check and RESET ALL ..) never failed: the pool kept
    // its connections instead of discarding and reopening them.
    let status = guard.pool().status();
    assert!(
        status.size <= 5 && status.available == status.size,
        "{status:?}"
    );
    assert!(!bouncer.log().contains("unsupported"), "{}", bouncer.log());
}

#[tokio::test]
async fn set_after_connect_holds_through_session_pooling_and_recycling() {
    let pg = cluster(30).await;
    let options = PoolOptions {
        session_settings: SessionSettings::SetAfterConnect,
        statement_timeout: Duration::from_millis(400),
        ..pool_options(2)
    };
    let bouncer = bouncer(&pg, PoolMode::Session).await;
    let guard = guard_through(&bouncer, &options);
    for round in 0..6 {
        let conn = guard.acquire(Criticality::Standard).await.unwrap();
        assert_eq!(
            first_value(&conn, "SHOW statement_timeout").await,
            "400ms",
            "round {round}"
        );
        let err = conn
            .simple_query("SELECT pg_sleep(20)")
            .await
            .expect_err("stopped by statement_timeout");
        assert!(err.hit_statement_timeout(), "{err:?}");
        // A handler that changes its session: the recycle resets it and sets ours again.
        conn.batch_execute("SET statement_timeout = 0")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn per_class_timeout_overrides_are_refused_under_role_defaults() {
    // Per-class overrides are session `SET`s, which transaction pooling would leak into
    // other clients' server connections: refused at build, naming the field.
    let options = PoolOptions {
        session_settings: SessionSettings::RoleDefaults,
        ..pool_options(2)
    };
    let pg: tokio_postgres::Config = "postgres://app@127.0.0.1:9/app".parse().unwrap();
    let config = GuardConfig {
        class_statement_timeout: poolguard::ClassTimeouts {
            non_critical: Some(Duration::from_millis(250)),
            ..poolguard::ClassTimeouts::default()
        },
        ..GuardConfig::default()
    };
    let refused = Guard::builder_for(pg.clone(), &options)
        .unwrap()
        .config(config.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            refused,
            poolguard::BuildError::InvalidConfig {
                field: "class_statement_timeout",
                ..
            }
        ),
        "{refused:?}"
    );
    // The session modes keep them.
    let options = PoolOptions {
        session_settings: SessionSettings::SetAfterConnect,
        ..options
    };
    assert!(Guard::builder_for(pg, &options)
        .unwrap()
        .config(config)
        .build()
        .is_ok());
}
