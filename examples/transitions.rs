//! The status-transition validator on its own: a policy loaded from TOML, pure checks, then
//! guarded updates against a real table.
//!
//! ```text
//! cargo run --example transitions
//! ```
//!
//! Starts a throwaway local PostgreSQL, or creates a fresh database on `DATABASE_URL` when it
//! is set (and drops it again at the end).

use poolguard::events::EventBus;
use poolguard::testing::TestCluster;
use poolguard::transition::{GuardedUpdate, TransitionOutcome, TransitionPolicy, TransitionReport};
use std::sync::Arc;

/// Message statuses. PROMOTED has no `[[allow]]` entry, so nothing may leave it.
const POLICY: &str = r#"
states = ["READY", "PROMOTED", "SPAM_REVIEW", "SPAM", "ARCHIVED"]

[[allow]]
from = "READY"
to = ["PROMOTED", "SPAM_REVIEW", "ARCHIVED"]

[[allow]]
from = "SPAM_REVIEW"
to = ["READY", "SPAM"]

[[allow]]
from = "SPAM"
to = "ARCHIVED"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Blocked updates are logged as `[SELF-HEAL] ...` through `tracing`.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .without_time()
        .compact()
        .init();

    let policy = Arc::new(TransitionPolicy::from_toml_str(POLICY)?);
    println!("-- checks --");
    for (from, to) in [
        ("READY", "SPAM_REVIEW"),
        ("PROMOTED", "SPAM_REVIEW"),
        ("SPAM_REVIEW", "SPAM"),
        ("READY", "DELETED"),
    ] {
        match policy.check(from, to) {
            Ok(()) => println!("{from} -> {to}: allowed"),
            Err(blocked) => println!("{from} -> {to}: blocked ({blocked})"),
        }
    }
    for state in ["PROMOTED", "READY"] {
        println!(
            "Allowed transitions for {state}: {:?}",
            policy.allowed_from(state)
        );
    }

    println!("\n-- guarded updates (spam capture) --");
    let cluster = TestCluster::start().await?;
    let client = cluster.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE messages (id bigint PRIMARY KEY, status text NOT NULL);
             INSERT INTO messages
             SELECT i, CASE WHEN i <= 7 THEN 'READY' ELSE 'PROMOTED' END
             FROM generate_series(1, 10) AS i;",
        )
        .await?;

    let update = GuardedUpdate::new(policy.clone(), "messages", "id", "status")?;
    let bus = EventBus::new(16);
    let mut report = TransitionReport::new();
    // Ids 1..=7 are READY, 8..=10 PROMOTED, 11 does not exist.
    for id in 1..=11_i64 {
        let outcome = update.apply(&client, &id, "SPAM_REVIEW").await?;
        match &outcome {
            TransitionOutcome::Applied { from, to } => println!("message {id}: {from} -> {to}"),
            TransitionOutcome::Blocked { current, to } => println!(
                "message {id}: blocked, stays {} (not -> {to})",
                current.as_deref().unwrap_or("NULL")
            ),
            TransitionOutcome::NotFound => println!("message {id}: not found"),
        }
        report.record(&outcome);
    }
    println!("\nreport: {report}");
    if let Some(event) = report.finish("spam-capture", &bus) {
        println!("event:  {}", event.message());
    }

    let rows = client
        .query(
            "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status",
            &[],
        )
        .await?;
    for row in rows {
        println!(
            "table:  {} {}",
            row.get::<_, String>(0),
            row.get::<_, i64>(1)
        );
    }
    Ok(())
}
