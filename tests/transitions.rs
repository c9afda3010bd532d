//! The transition guard against a real PostgreSQL server: guarded updates, concurrent
//! writers, hostile identifiers, the trigger and the report.

mod common;

use poolguard::events::{EventBus, EventKind};
use poolguard::testing::TestCluster;
use poolguard::transition::{
    GuardedUpdate, TransitionOutcome, TransitionPolicy, TransitionReport, TransitionTrigger,
    UpdateError, TRIGGER_SQLSTATE,
};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio_postgres::Client;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn policy() -> Arc<TransitionPolicy> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/message_status.toml"
    );
    Arc::new(TransitionPolicy::from_path(path).expect("sample policy loads"))
}

/// A `messages` table, rows `1..=ready` READY and the next `promoted` PROMOTED, plus a history
/// table filled by a test-side trigger with every stored status change.
async fn messages(client: &Client, ready: i64, promoted: i64) -> TestResult {
    client
        .batch_execute(
            "CREATE TABLE messages (id bigint PRIMARY KEY, status text NOT NULL, body text)",
        )
        .await?;
    common::record_status_history(client, "messages").await?;
    client
        .execute(
            "INSERT INTO messages (id, status)
             SELECT g, CASE WHEN g <= $1::bigint THEN 'READY' ELSE 'PROMOTED' END
             FROM generate_series(1, $1::bigint + $2::bigint) AS g",
            &[&ready, &promoted],
        )
        .await?;
    Ok(())
}

async fn status_of(client: &Client, id: i64) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT status FROM messages WHERE id = $1", &[&id])
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn guarded_update_applies_blocks_and_reports_not_found() -> TestResult {
    let cluster = TestCluster::start().await?;
    let mut client = cluster.connect().await?;
    messages(&client, 1, 1).await?;
    let update = GuardedUpdate::new(policy(), "public.messages", "id", "status")?;

    let applied = update.apply(&client, &1i64, "SPAM_REVIEW").await?;
    assert_eq!(
        applied,
        TransitionOutcome::Applied {
            from: "READY".into(),
            to: "SPAM_REVIEW".into()
        }
    );
    assert_eq!(status_of(&client, 1).await?, "SPAM_REVIEW");

    let blocked = update.apply(&client, &2i64, "SPAM_REVIEW").await?;
    assert_eq!(
        blocked,
        TransitionOutcome::Blocked {
            current: Some("PROMOTED".into()),
            to: "SPAM_REVIEW".into()
        }
    );
    assert_eq!(status_of(&client, 2).await?, "PROMOTED");

    assert_eq!(
        update.apply(&client, &99i64, "SPAM_REVIEW").await?,
        TransitionOutcome::NotFound
    );

    // Inside a transaction, rolled back: nothing stays.
    let tx = client.transaction().await?;
    let out = update.apply(&tx, &2i64, "COMPLETED").await?;
    assert!(matches!(out, TransitionOutcome::Applied { ref from, .. } if from == "PROMOTED"));
    tx.rollback().await?;
    assert_eq!(status_of(&client, 2).await?, "PROMOTED");

    // PROMOTED may not go back to READY.
    let out = update.apply(&client, &2i64, "READY").await?;
    assert!(matches!(out, TransitionOutcome::Blocked { .. }), "{out:?}");
    Ok(())
}

/// A small xorshift generator, so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_store_an_invalid_transition() -> TestResult {
    const ROWS: i64 = 200;
    const TASKS: u64 = 16;
    const ATTEMPTS: u64 = 150;
    let cluster = TestCluster::start().await?;
    let setup = cluster.connect().await?;
    messages(&setup, ROWS, 0).await?;
    let policy = policy();
    let update = Arc::new(GuardedUpdate::new(
        policy.clone(),
        "messages",
        "id",
        "status",
    )?);
    let states: Arc<Vec<String>> = Arc::new(policy.states().map(str::to_string).collect());

    let manager = deadpool_postgres::Manager::new(cluster.pg_config(), tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(TASKS as usize)
        .build()?;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (pool, update, states) = (pool.clone(), update.clone(), states.clone());
        handles.push(tokio::spawn(async move {
            let object = pool.get().await?;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((task + 1) * 0x1000_0001));
            let mut report = TransitionReport::new();
            for _ in 0..ATTEMPTS {
                // A few ids past the end exercise the not-found path.
                let id = 1 + rng.next(ROWS as u64 + 10) as i64;
                let to = &states[rng.next(states.len() as u64) as usize];
                report.record(&update.apply(&**object, &id, to).await?);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(report)
        }));
    }
    let mut report = TransitionReport::new();
    for h in handles {
        report.merge(&h.await??);
    }

    assert_eq!(report.attempts(), TASKS * ATTEMPTS, "{report}");
    assert!(
        report.valid() > 0 && report.blocked() > 0 && report.not_found() > 0,
        "{report}"
    );

    // Every stored change is an allowed edge, and each row's changes chain from READY to its
    // final status.
    let history = setup
        .query("SELECT id, old, new FROM history ORDER BY seq", &[])
        .await?;
    assert_eq!(history.len() as u64, report.valid(), "{report}");
    let mut last: HashMap<i64, String> = HashMap::new();
    for row in &history {
        let (id, old, new): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        assert!(
            policy.check(&old, &new).is_ok(),
            "stored {old} -> {new} for {id}"
        );
        let prev = last.get(&id).map_or("READY", String::as_str);
        assert_eq!(prev, old, "history of row {id} does not chain");
        last.insert(id, new);
    }
    for row in setup.query("SELECT id, status FROM messages", &[]).await? {
        let (id, status): (i64, String) = (row.get(0), row.get(1));
        assert_eq!(
            last.get(&id).map_or("READY", String::as_str),
            status,
            "row {id}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn hostile_identifiers_are_rejected_before_any_sql() -> TestResult {
    let cluster = TestCluster::start().await?;
    let client = cluster.connect().await?;
    client
        .batch_execute("CREATE TABLE x (id int PRIMARY KEY, status text)")
        .await?;
    let p = policy();
    let long = "t".repeat(64);
    let hostile = [
        "status; DROP TABLE x",
        "x; DROP TABLE x",
        "\"quoted\"",
        "",
        long.as_str(),
        "stätus",
        "x\" SET status = 'READY' --",
        "a.b.c",
    ];
    for name in hostile {
        assert!(
            GuardedUpdate::new(p.clone(), name, "id", "status").is_err(),
            "{name:?}"
        );
        assert!(
            GuardedUpdate::new(p.clone(), "x", name, "status").is_err(),
            "{name:?}"
        );
        assert!(
            GuardedUpdate::new(p.clone(), "x", "id", name).is_err(),
            "{name:?}"
        );
        assert!(
            TransitionTrigger::new(&p, name, "status").is_err(),
            "{name:?}"
        );
        assert!(TransitionTrigger::new(&p, "x", name).is_err(), "{name:?}");
    }
    let left: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'x'", &[])
        .await?
        .get(0);
    assert_eq!(left, 1);

    // An unknown target is refused before the database is touched: the table does not even
    // exist, yet the error is the policy's, not the server's.
    let update = GuardedUpdate::new(p, "no_such_table", "id", "status")?;
    let err = update.apply(&client, &1i64, "BOGUS").await.unwrap_err();
    assert!(
        matches!(err, UpdateError::UnknownTarget(ref s) if s == "BOGUS"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn installed_trigger_blocks_invalid_direct_updates() -> TestResult {
    let cluster = TestCluster::start().await?;
    let client = cluster.connect().await?;
    messages(&client, 1, 1).await?;
    let trigger = TransitionTrigger::new(&policy(), "messages", "status")?;
    trigger.install(&client).await?;
    trigger.install(&client).await?; // idempotent

    let err = client
        .execute(
            "UPDATE messages SET status = 'SPAM_REVIEW' WHERE status = 'PROMOTED'",
            &[],
        )
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), TRIGGER_SQLSTATE);
    assert_eq!(
        db.message(),
        "invalid status transition: PROMOTED -> SPAM_REVIEW"
    );
    assert_eq!(status_of(&client, 2).await?, "PROMOTED");

    let n = client
        .execute(
            "UPDATE messages SET status = 'SPAM_REVIEW' WHERE status = 'READY'",
            &[],
        )
        .await?;
    assert_eq!(n, 1);
    // Same-status updates and updates of other columns pass.
    client
        .execute("UPDATE messages SET status = status, body = 'x'", &[])
        .await?;
    client
        .execute("UPDATE messages SET body = 'y' WHERE id = 2", &[])
        .await?;

    trigger.uninstall(&client).await?;
    client
        .execute("UPDATE messages SET status = 'READY' WHERE id = 2", &[])
        .await?;
    Ok(())
}

/// Collects formatted log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn report_counts_match_the_database() -> TestResult {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = TestCluster::start().await?;
    let client = cluster.connect().await?;
    messages(&client, 150, 5).await?;
    let update = GuardedUpdate::new(policy(), "messages", "id", "status")?;
    let bus = EventBus::new(16);
    let mut sub = bus.subscribe();

    // The seed's buggy scan: it looks at READY and PROMOTED messages alike.
    let mut report = TransitionReport::new();
    for id in 1..=155i64 {
        report.record(&update.apply(&client, &id, "SPAM_REVIEW").await?);
    }
    assert_eq!(
        report.to_string(),
        "150 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)"
    );
    let counts: HashMap<String, i64> = client
        .query("SELECT status, count(*) FROM messages GROUP BY status", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts.get("SPAM_REVIEW"), Some(&(report.valid() as i64)));
    assert_eq!(counts.get("PROMOTED"), Some(&(report.blocked() as i64)));
    let history: i64 = client
        .query_one("SELECT count(*) FROM history", &[])
        .await?
        .get(0);
    assert_eq!(history as u64, report.valid());

    let event = report
        .finish("spam-capture", &bus)
        .expect("something was blocked");
    assert!(matches!(
        sub.try_recv().map(|e| e.kind),
        Some(EventKind::TransitionsBlocked { valid: 150, .. })
    ));
    assert_eq!(
        event.message(),
        "Prevented 5 invalid status transitions in spam-capture: PROMOTED -> SPAM_REVIEW (5); 150 valid"
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone())?;
    let line = "[SELF-HEAL] Blocked invalid transition: PROMOTED -> SPAM_REVIEW";
    assert_eq!(text.matches(line).count(), 5, "{text}");
    assert!(text.contains("allowed=[\"COMPLETED\"]"), "{text}");
    assert!(text.contains("[SELF-HEAL] Prevented 5 invalid status transitions"));
    Ok(())
}
