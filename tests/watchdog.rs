//! The watchdog against a real PostgreSQL: slow queries cancelled then terminated, other
//! applications untouched, dry run, exhausted pool, restart, idle transactions, leaks, server
//! headroom and pool resize.

mod common;

use common::{cluster, eventually, guard_with, pool_options, quick_config};
use poolguard::events::{ActionOutcome, Event, EventKind, EventSubscriber, ResizeReason};
use poolguard::testing::TestCluster;
use poolguard::watchdog::{AutoResize, Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{AcquireContext, Criticality, Error, Guard, GuardConfig, Level, UserKey};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// Kill after 1 s, checked every 200 ms, terminate 1 s after a cancel.
fn quick_watchdog() -> WatchdogConfig {
    WatchdogConfig {
        interval: Duration::from_millis(200),
        kill_after: Duration::from_secs(1),
        cancel_grace: Duration::from_secs(1),
        reconnect_backoff_max: Duration::from_millis(500),
        ..WatchdogConfig::default()
    }
}

/// A guard whose own statement timeout (120 s) never fires during a test.
async fn guard(pg: &TestCluster, max_size: usize, config: GuardConfig) -> Guard {
    let options = poolguard::PoolOptions {
        statement_timeout: Duration::from_secs(120),
        ..pool_options(max_size)
    };
    guard_with(pg, options, config).await
}

fn spawn(guard: &Guard, config: WatchdogConfig) -> WatchdogHandle {
    Watchdog::builder(guard)
        .config(config)
        .spawn()
        .expect("watchdog config is valid")
}

/// The next event matching `pred`, failing the test after `limit`.
async fn wait_event(
    sub: &mut EventSubscriber,
    limit: Duration,
    what: &str,
    mut pred: impl FnMut(&EventKind) -> bool,
) -> Event {
    tokio::time::timeout(limit, async {
        loop {
            let e = sub.recv().await.expect("the bus is alive");
            if pred(&e.kind) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// Every event already published that matches `pred`.
fn drain(sub: &mut EventSubscriber, mut pred: impl FnMut(&EventKind) -> bool) -> Vec<Event> {
    std::iter::from_fn(|| sub.try_recv())
        .filter(|e| pred(&e.kind))
        .collect()
}

fn is_57014(e: &Error) -> bool {
    match e {
        Error::QueryCanceled(e) | Error::Db(e) => {
            e.code().map(|c| c.code()) == Some(poolguard::QUERY_CANCELED)
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_is_cancelled_and_the_caller_sees_57014() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(&guard, quick_watchdog());
    let conn = guard
        .acquire_with(
            Criticality::Standard,
            AcquireContext {
                route: Some("/reports/slow".into()),
                ..AcquireContext::default()
            },
        )
        .await
        .unwrap();
    let started = Instant::now();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("cancelled after {took:?} (kill_after 1 s, interval 200 ms)");
    assert!(is_57014(&err), "{err}");
    // Well under the query's 30 s, with room for a loaded machine.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let e = wait_event(&mut sub, Duration::from_secs(5), "a cancel event", |k| {
        matches!(k, EventKind::QueryCancelled { .. })
    })
    .await;
    let EventKind::QueryCancelled {
        backend,
        running,
        outcome,
    } = &e.kind
    else {
        unreachable!()
    };
    assert_eq!(*outcome, ActionOutcome::Done);
    assert_eq!(backend.fingerprint, "SELECT pg_sleep(?)");
    let own = guard.identity().unwrap().application_name();
    assert_eq!(backend.application.as_deref(), Some(own.as_str()));
    assert_eq!(backend.other_instance, None);
    assert!(*running >= Duration::from_secs(1));
    assert!(
        e.message().starts_with("Cancelled query running"),
        "{}",
        e.message()
    );
    // The connection is still usable: only the query was cancelled.
    conn.query_one("SELECT 1", &[]).await.unwrap();
    // A watchdog cancel is not reported as a statement timeout.
    let timeouts = drain(&mut sub, |k| {
        matches!(k, EventKind::StatementTimedOut { .. })
    });
    assert!(timeouts.is_empty(), "{timeouts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_ignores_cancel_is_terminated() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(&guard, quick_watchdog());
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    let started = Instant::now();
    let err = conn
        .batch_execute(
            "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(10); \
             EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$",
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("terminated after {took:?} (kill_after 1 s, grace 1 s, interval 200 ms)");
    assert!(
        !is_57014(&err),
        "the backend was terminated, not cancelled: {err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    wait_event(&mut sub, Duration::from_secs(5), "a termination", |k| {
        matches!(
            k,
            EventKind::BackendTerminated {
                outcome: ActionOutcome::Done,
                ..
            }
        )
    })
    .await;
    drop(conn);
    let next = guard.acquire(Criticality::Standard).await.unwrap();
    next.query_one("SELECT 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_applications_query_is_untouched_by_default() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(&guard, quick_watchdog());
    let mut cfg = pg.pg_config();
    cfg.application_name("billing");
    let (other, connection) = cfg.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    other.simple_query("SELECT pg_sleep(2.5)").await.unwrap();
    let kills = drain(&mut sub, |k| {
        matches!(
            k,
            EventKind::QueryCancelled { .. } | EventKind::BackendTerminated { .. }
        )
    });
    assert!(kills.is_empty(), "{kills:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_scope_is_the_instances_exact_name_and_its_tags_not_a_prefix() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(&guard, quick_watchdog());
    let connect = |name: String| {
        let mut cfg = pg.pg_config();
        cfg.application_name(&name);
        async move {
            let (client, connection) = cfg.connect(NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    };
    // The guard's application name is "poolguard:{instance}".
    let own = guard.identity().unwrap().application_name();
    let other = connect(format!("{own}-other")).await;
    let service_only = connect("poolguard".to_string()).await;
    let same = connect(own.clone()).await;
    let tagged = connect(format!("{own}:non_critical:1")).await;
    let (other, service_only, same, tagged) = tokio::join!(
        other.simple_query("SELECT pg_sleep(4)"),
        service_only.simple_query("SELECT pg_sleep(4)"),
        same.simple_query("SELECT pg_sleep(30)"),
        tagged.simple_query("SELECT pg_sleep(30)"),
    );
    other.expect("a backend of another application is left alone");
    service_only.expect("a backend named by the service alone is no instance's");
    let same = same.expect_err("the pool's own application name is in scope");
    let tagged = tagged.expect_err("a tag of the pool's application name is in scope");
    for err in [&same, &tagged] {
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "{err}"
        );
    }
    let acted: Vec<Option<String>> = drain(&mut sub, |k| {
        matches!(
            k,
            EventKind::QueryCancelled { .. } | EventKind::BackendTerminated { .. }
        )
    })
    .into_iter()
    .filter_map(|e| match e.kind {
        EventKind::QueryCancelled { backend, .. }
        | EventKind::BackendTerminated { backend, .. } => Some(backend.application),
        _ => None,
    })
    .collect();
    assert!(!acted.contains(&Some(format!("{own}-other"))), "{acted:?}");
    assert!(!acted.contains(&Some("poolguard".to_string())), "{acted:?}");
    assert!(acted.contains(&Some(own.clone())), "{acted:?}");
    assert!(
        acted.contains(&Some(format!("{own}:non_critical:1"))),
        "{acted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_stops_the_watchdog_when_its_future_completes() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let watchdog = Watchdog::builder(&guard)
        .config(quick_watchdog())
        .build()
        .expect("watchdog config is valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watchdog.run_until(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "the watchdog runs until told to stop");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the watchdog stopped")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_kills_nothing() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            dry_run: true,
            kill_after: Duration::from_millis(500),
            cancel_grace: Duration::from_millis(300),
            ..quick_watchdog()
        },
    );
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    conn.query("SELECT pg_sleep(2.5)", &[])
        .await
        .expect("nothing is killed in dry run");
    let reported = drain(&mut sub, |k| {
        matches!(
            k,
            EventKind::QueryCancelled {
                outcome: ActionOutcome::DryRun,
                ..
            }
        )
    });
    assert_eq!(reported.len(), 1, "reported once: {reported:?}");
    assert!(reported[0].message().starts_with("Dry run: would cancel"));
}

/// The pool is exhausted and so is the server (another application holds every other slot):
/// the watchdog, on the connection it opened earlier, still cancels the slow queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_works_when_the_pool_is_exhausted() {
    let pg = cluster(12).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    let guard = guard(&pg, 2, quick_config()).await;
    let _watchdog = spawn(&guard, quick_watchdog());
    eventually(
        "the watchdog is connected",
        Duration::from_secs(5),
        || async { guard.server_use().is_some() },
    )
    .await;
    let a = guard.acquire(Criticality::Standard).await.unwrap();
    let b = guard.acquire(Criticality::Critical).await.unwrap();
    assert_eq!(guard.status().available, 0);
    // Another application takes every slot left on the server.
    let mut hog = Vec::new();
    let refusal = loop {
        match pg.pg_config().connect(NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                hog.push(client);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        refusal.code().map(|c| c.code()),
        Some("53300"),
        "the server is exhausted: {refusal}"
    );
    let started = Instant::now();
    let (ra, rb) = tokio::join!(
        a.query("SELECT pg_sleep(30)", &[]),
        b.query("SELECT pg_sleep(30)", &[])
    );
    eprintln!(
        "both cancelled after {:?} with the pool and the server full",
        started.elapsed()
    );
    assert!(is_57014(&ra.unwrap_err()));
    assert!(is_57014(&rb.unwrap_err()));
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(hog);
}

/// A query that ignores its cancel runs on while the watchdog's check times out and its
/// connection is replaced: after the grace period the query is terminated, not cancelled a
/// second time (the killer's memory survives the reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_check_does_not_make_the_killer_forget() {
    let pg = cluster(30).await;
    let proxy =
        common::proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], pg.port()))).await;
    let options = poolguard::PoolOptions {
        statement_timeout: Duration::from_secs(120),
        application_name: "stubborn".into(),
        ..pool_options(2)
    };
    // The guard, and so the watchdog, reach the server through the proxy.
    let guard = poolguard::Guard::builder_for(proxy.config_for(&pg.pg_config()), &options)
        .unwrap()
        .config(quick_config())
        .build()
        .unwrap();
    let mut sub = guard.subscribe();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            kill_after: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(3),
            query_timeout: Duration::from_millis(300),
            ..quick_watchdog()
        },
    );
    // The stubborn query runs on a direct connection named as the guard's own.
    let mut direct = pg.pg_config();
    direct.application_name(guard.identity().unwrap().application_name());
    let (client, conn) = direct.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let stubborn = tokio::spawn(async move {
        client
            .batch_execute(
                "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(10); \
                 EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$",
            )
            .await
    });
    wait_event(&mut sub, Duration::from_secs(10), "the first cancel", |k| {
        matches!(k, EventKind::QueryCancelled { .. })
    })
    .await;
    // The watchdog's connection stalls: its check times out and it reconnects.
    proxy.set(common::proxy::Mode::Stall);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set(common::proxy::Mode::Pass);
    let outcome = wait_event(
        &mut sub,
        Duration::from_secs(15),
        "the next action on the stubborn query",
        |k| {
            matches!(
                k,
                EventKind::QueryCancelled { .. } | EventKind::BackendTerminated { .. }
            )
        },
    )
    .await;
    assert!(
        matches!(outcome.kind, EventKind::BackendTerminated { .. }),
        "terminated, not cancelled again: {}",
        outcome.message()
    );
    let err = tokio::time::timeout(Duration::from_secs(5), stubborn)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err}");
}

/// A storm of slow queries (each ignoring its cancel) takes the killer's whole budget every
/// interval; the reaper has its own, so an idle transaction is reaped at once instead of
/// after the storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_slow_queries_does_not_starve_the_reaper() {
    let pg = cluster(40).await;
    let guard = guard(&pg, 2, quick_config()).await;
    let mut sub = guard.subscribe();
    let mut clients = Vec::new();
    let mut app = pg.pg_config();
    app.application_name(guard.identity().unwrap().application_name());
    let storm = 8;
    for _ in 0..storm {
        let (client, conn) = app.connect(NoTls).await.unwrap();
        tokio::spawn(conn);
        let client = std::sync::Arc::new(client);
        let c = client.clone();
        tokio::spawn(async move {
            let _ = c
                .batch_execute(
                    "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(10); \
                     EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$",
                )
                .await;
        });
        clients.push(client);
    }
    let (idle, conn) = app.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    idle.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            kill_after: Duration::from_secs(1),
            idle_in_transaction_after: Duration::from_secs(1),
            cancel_grace: Duration::from_secs(30),
            max_kills_per_interval: 1,
            ..quick_watchdog()
        },
    );
    let mut cancels_before_reap = 0;
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let e = sub.recv().await.unwrap();
            match e.kind {
                EventKind::QueryCancelled { .. } => cancels_before_reap += 1,
                EventKind::IdleInTransactionReaped { .. } => break,
                _ => {}
            }
        }
    })
    .await
    .expect("the idle transaction is reaped");
    assert!(
        cancels_before_reap < storm,
        "reaped during the storm, after {cancels_before_reap} of {storm} cancels"
    );
    for c in &clients {
        drop(c.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_keeps_working_after_a_postgres_restart() {
    let pg = cluster(30).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: this test needs a server it can restart; skipped");
        return;
    }
    let guard = guard(&pg, 4, quick_config()).await;
    let watchdog = spawn(&guard, quick_watchdog());
    eventually("a first reading", Duration::from_secs(5), || async {
        guard.server_use().is_some()
    })
    .await;
    pg.restart().await.unwrap();
    let restarted = Instant::now();
    eventually(
        "a reading after the restart",
        Duration::from_secs(15),
        || async {
            guard.server_use().is_some_and(|h| {
                h.sampled_at > std::time::SystemTime::now() - Duration::from_millis(300)
            })
        },
    )
    .await;
    eprintln!(
        "fresh reading {:?} after restart() returned",
        restarted.elapsed()
    );
    let conn = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            // The pool may first hand out connections that died with the old server.
            if let Ok(c) = guard.acquire(Criticality::Standard).await {
                if c.query_one("SELECT 1", &[]).await.is_ok() {
                    return c;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the pool heals");
    let started = Instant::now();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    assert!(is_57014(&err), "{err}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(!watchdog.is_finished());
    watchdog.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_is_reaped_and_its_connection_not_reused() {
    let pg = cluster(30).await;
    let config = GuardConfig {
        critical_reserve: Some(0),
        ..quick_config()
    };
    let guard = guard(&pg, 1, config).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            idle_in_transaction_after: Duration::from_millis(500),
            ..quick_watchdog()
        },
    );
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    conn.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let e = wait_event(&mut sub, Duration::from_secs(5), "a reaped session", |k| {
        matches!(k, EventKind::IdleInTransactionReaped { .. })
    })
    .await;
    let EventKind::IdleInTransactionReaped {
        backend, outcome, ..
    } = &e.kind
    else {
        unreachable!()
    };
    assert_eq!(*outcome, ActionOutcome::Done);
    assert_eq!(backend.pid, pid);
    assert!(
        conn.query_one("SELECT 1", &[]).await.is_err(),
        "the session is gone"
    );
    drop(conn);
    // The pool recycles the dead connection away; the next borrower gets a working one.
    let next = guard.acquire(Criticality::Standard).await.unwrap();
    let next_pid: i32 = next
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(next_pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_is_reported_once_as_a_leak_with_its_route() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            leak_after: Duration::from_millis(300),
            ..quick_watchdog()
        },
    );
    let conn = guard
        .acquire_with(
            Criticality::Standard,
            AcquireContext {
                user: Some(UserKey::new("user-42")),
                route: Some("/exports/csv".into()),
            },
        )
        .await
        .unwrap();
    // A connection returned quickly is never a leak.
    drop(guard.acquire(Criticality::Standard).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaks = drain(&mut sub, |k| matches!(k, EventKind::ConnectionLeak { .. }));
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    let EventKind::ConnectionLeak {
        class,
        route,
        user,
        held,
    } = &leaks[0].kind
    else {
        unreachable!()
    };
    assert_eq!(*class, Criticality::Standard);
    assert_eq!(route.as_deref(), Some("/exports/csv"));
    assert_eq!(user.as_deref(), Some("user-42"));
    assert!(*held >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_filling_the_server_raises_the_level() {
    // max_connections 25 less 3 superuser slots: 22 usable.
    let pg = cluster(25).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    let guard = guard(&pg, 10, quick_config()).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(&guard, quick_watchdog());
    eventually("a first reading", Duration::from_secs(5), || async {
        guard.server_use().is_some()
    })
    .await;
    assert_eq!(guard.level(), Level::Normal);
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(pg.connect().await.unwrap());
    }
    // The level may rise on a reading taken before the last foreign connections opened:
    // wait for a reading that sees all of them.
    eventually("the level escalates", Duration::from_secs(5), || async {
        guard.level() != Level::Normal && guard.server_use().is_some_and(|h| h.used >= 21)
    })
    .await;
    let s = guard.status();
    assert_eq!(s.in_use, 0, "the guard's own pool is idle");
    let h = guard.server_use().unwrap();
    eprintln!("server headroom with 20 foreign connections: {h:?}");
    assert!(h.used >= 21, "{h:?}");
    assert!(h.usable <= 22, "{h:?}");
    let health = guard.health().await;
    assert_eq!(health.status, "degraded");
    let json = serde_json::to_value(&health).unwrap();
    assert!(json["server"]["used"].as_u64().unwrap() >= 21, "{json}");
    wait_event(
        &mut sub,
        Duration::from_secs(2),
        "a server pressure event",
        |k| matches!(k, EventKind::ServerPressure { .. }),
    )
    .await;
    drop(others);
    eventually("the level recovers", Duration::from_secs(10), || async {
        guard.level() == Level::Normal
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_stays_within_the_ceiling_and_the_server_headroom() {
    // 30 less 3 superuser slots: 27 usable. Another process holds 10, the watchdog 1, so
    // with a margin of 3 the pool may grow to at most 27 - 11 - 3 = 13 (ceiling 20).
    let pg = cluster(30).await;
    if pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(pg.connect().await.unwrap());
    }
    let config = GuardConfig {
        critical_reserve: Some(0),
        max_queue_wait: Duration::from_secs(30),
        ..quick_config()
    };
    let guard = guard(&pg, 2, config).await;
    let mut sub = guard.subscribe();
    let _watchdog = spawn(
        &guard,
        WatchdogConfig {
            resize: AutoResize {
                enabled: true,
                ceiling: 20,
                step: 3,
                grow_after: 2,
                shrink_after: 5,
                margin: 3,
            },
            ..quick_watchdog()
        },
    );
    let holders: Vec<_> = (0..24)
        .map(|_| {
            let guard = guard.clone();
            tokio::spawn(async move {
                if let Ok(conn) = guard.acquire(Criticality::Standard).await {
                    let _ = conn.query("SELECT 1", &[]).await;
                    tokio::time::sleep(Duration::from_secs(6)).await;
                }
            })
        })
        .collect();
    let mut largest = 2;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        largest = largest.max(guard.status().max_size);
        if let Some(h) = guard.server_use() {
            assert!(
                h.used <= h.usable,
                "the pool never pushed the server over: {h:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the pool grew from 2 to {largest}");
    assert!(largest > 2, "the pool grew under waiting");
    assert!(largest <= 13, "never past the server headroom: {largest}");
    for e in drain(&mut sub, |k| matches!(k, EventKind::PoolResized { .. })) {
        let EventKind::PoolResized { to, reason, .. } = e.kind else {
            unreachable!()
        };
        assert!(to <= 13, "{to}");
        assert_ne!(reason, ResizeReason::Recovered);
    }
    for h in holders {
        h.await.unwrap();
    }
    drop(others);
    eventually("the pool shrinks back", Duration::from_secs(15), || async {
        guard.status().max_size == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_limit_applies_to_that_class_only_and_names_the_route() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let mut sub = guard.subscribe();
    let mut config = WatchdogConfig {
        kill_after: Duration::from_secs(20),
        ..quick_watchdog()
    };
    config.kill_after_by_class.non_critical = Some(Duration::from_secs(1));
    let _watchdog = spawn(&guard, config);
    let report = guard
        .acquire_with(
            Criticality::NonCritical,
            AcquireContext {
                route: Some("/reports/yearly".into()),
                ..AcquireContext::default()
            },
        )
        .await
        .unwrap();
    let standard = guard.acquire(Criticality::Standard).await.unwrap();
    let started = Instant::now();
    let (slow_report, slow_standard) = tokio::join!(
        report.query("SELECT pg_sleep(30)", &[]),
        standard.query("SELECT pg_sleep(3)", &[])
    );
    assert!(is_57014(&slow_report.unwrap_err()));
    slow_standard.expect("the standard query is under its 20 s limit");
    // The non-critical query (30 s) was cancelled long before the standard one's 20 s limit.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(12), "took {took:?}");
    let e = wait_event(&mut sub, Duration::from_secs(2), "a cancel event", |k| {
        matches!(k, EventKind::QueryCancelled { .. })
    })
    .await;
    let EventKind::QueryCancelled { backend, .. } = &e.kind else {
        unreachable!()
    };
    assert_eq!(backend.class, Some(Criticality::NonCritical));
    assert_eq!(backend.route.as_deref(), Some("/reports/yearly"));
    assert!(
        e.message().contains("route /reports/yearly"),
        "{}",
        e.message()
    );
}
