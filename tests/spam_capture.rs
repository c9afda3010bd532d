//! The reference app's spam capture over real HTTP and a real PostgreSQL server: budgeted
//! calls resumed with the returned cursor, the status validator inside every chunk, and
//! concurrent writers changing statuses during the run.

mod common;
#[path = "../examples/demo/spam.rs"]
mod spam;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use poolguard::events::{EventKind, EventSubscriber};
use poolguard::Guard;
use spam::CaptureResponse;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BUDGET_MS: u64 = 1000;
/// Slack over the budget for one HTTP call (the runner plans into 80 % of it).
const MARGIN_MS: u64 = 500;

/// POSTs a JSON body; returns the status and the body.
async fn post(addr: SocketAddr, path: &str, body: serde_json::Value) -> (u16, String) {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.expect("the server answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

struct Run {
    calls: Vec<CaptureResponse>,
    took: Vec<Duration>,
}

/// Calls the capture with the returned cursor until it is done.
async fn capture_all(addr: SocketAddr, item_cost_ms: u64) -> Run {
    let mut run = Run {
        calls: Vec::new(),
        took: Vec::new(),
    };
    let mut cursor = serde_json::Value::Null;
    loop {
        let body = serde_json::json!({
            "cursor": cursor,
            "budget_ms": BUDGET_MS,
            "item_cost_ms": item_cost_ms,
        });
        let started = Instant::now();
        let (status, text) = post(addr, "/api/spam/capture", body).await;
        run.took.push(started.elapsed());
        assert_eq!(status, 200, "{text}");
        let reply: CaptureResponse = serde_json::from_str(&text).expect("a JSON answer");
        println!(
            "{} | {} | {} ms",
            reply.message,
            reply.report.summary,
            run.took.last().unwrap().as_millis()
        );
        cursor = serde_json::to_value(&reply.cursor).unwrap();
        let done = reply.done;
        run.calls.push(reply);
        if done {
            return run;
        }
        assert!(run.calls.len() < 30, "the capture does not end");
    }
}

/// The `(old, new)` pairs stored, with their counts.
async fn stored_changes(client: &Client) -> Vec<(String, String, i64)> {
    client
        .query(
            "SELECT old, new, count(*) FROM history GROUP BY old, new ORDER BY old, new",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Blocked attempts reported in `TransitionsBlocked` events so far.
fn blocked_in_events(sub: &mut EventSubscriber) -> u64 {
    let mut blocked = 0;
    while let Some(e) = sub.try_recv() {
        if let EventKind::TransitionsBlocked { blocked: pairs, .. } = e.kind {
            blocked += pairs.iter().map(|p| p.count).sum::<u64>();
        }
    }
    blocked
}

async fn app(ready_spam: usize) -> (poolguard::testing::TestCluster, Client, Guard, SocketAddr) {
    let cluster = common::cluster(40).await;
    let client = cluster.connect().await.unwrap();
    spam::create_schema(&client).await.unwrap();
    let seeded = spam::seed_messages(&client, ready_spam, 7).await.unwrap();
    assert_eq!(seeded.ready_spam, ready_spam);
    common::record_status_history(&client, "messages")
        .await
        .unwrap();
    let guard = common::guard(&cluster, 6, common::quick_config()).await;
    let addr = common::serve(spam::routes(guard.clone(), spam::policy())).await;
    (cluster, client, guard, addr)
}

const MATCHED: &str = "SELECT count(*) FROM messages
    WHERE status IN ('READY', 'PROMOTED', 'SPAM_REVIEW')
      AND body ILIKE ANY(ARRAY['%WIN A PRIZE%', '%crypto giveaway%'])";
const PROMOTED: &str = "SELECT count(*) FROM messages WHERE status = 'PROMOTED'
      AND body ILIKE ANY(ARRAY['%WIN A PRIZE%', '%crypto giveaway%'])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_runs_in_budgeted_calls_and_blocks_promoted_rows() -> TestResult {
    let (_cluster, client, guard, addr) = app(400).await;
    let mut sub = guard.subscribe();
    let matched = count(&client, MATCHED).await;
    assert_eq!(matched, 402, "400 READY + 2 PROMOTED spam");

    let run = capture_all(addr, 2).await;
    assert!(run.calls.len() >= 2, "402 items at 2 ms do not fit 800 ms");
    for took in &run.took {
        assert!(
            *took <= Duration::from_millis(BUDGET_MS + MARGIN_MS),
            "{took:?}"
        );
    }
    let first = &run.calls[0];
    assert_eq!(first.total, Some(402));
    assert_eq!(
        first.message,
        format!(
            "Captured {} / 402 ({} remaining)",
            first.captured,
            402 - first.captured
        )
    );
    let last = run.calls.last().unwrap();
    assert!(
        last.message.ends_with("(0 remaining) - All done!"),
        "{}",
        last.message
    );
    assert_eq!(last.processed_total, 402);

    let captured: u64 = run.calls.iter().map(|c| c.captured).sum();
    let valid: u64 = run.calls.iter().map(|c| c.report.valid).sum();
    let blocked: u64 = run.calls.iter().map(|c| c.report.blocked).sum();
    assert_eq!(captured, 402);
    assert_eq!((valid, blocked), (400, 2));
    assert!(run
        .calls
        .iter()
        .flat_map(|c| &c.report.blocked_pairs)
        .all(|p| (p.from.as_str(), p.to.as_str()) == ("PROMOTED", "SPAM_REVIEW")));
    assert_eq!(blocked_in_events(&mut sub), 2);

    assert_eq!(
        stored_changes(&client).await,
        vec![("READY".into(), "SPAM_REVIEW".into(), 400)]
    );
    assert_eq!(count(&client, PROMOTED).await, 2);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM messages WHERE status = 'COMPLETED'"
        )
        .await,
        2 + 200 / 3,
        "completed messages are not touched"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_get_an_invalid_transition_stored() -> TestResult {
    let (cluster, client, guard, addr) = app(400).await;
    let mut sub = guard.subscribe();
    let matched = count(&client, MATCHED).await as u64;

    // A writer promotes random READY spam rows while the capture runs.
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, flips) = (stop.clone(), flips.clone());
        let writer_client = cluster.connect().await?;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = writer_client
                    .execute(
                        "UPDATE messages SET status = 'PROMOTED'
                         WHERE status = 'READY' AND id = (
                             SELECT id FROM messages
                             WHERE status = 'READY'
                               AND body ILIKE ANY(ARRAY['%WIN A PRIZE%', '%crypto giveaway%'])
                             ORDER BY random() LIMIT 1)",
                        &[],
                    )
                    .await
                    .unwrap();
                flips.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let run = capture_all(addr, 2).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    let flips = flips.load(Ordering::Relaxed);
    assert!(flips > 0);

    for took in &run.took {
        assert!(
            *took <= Duration::from_millis(BUDGET_MS + MARGIN_MS),
            "{took:?}"
        );
    }
    let captured: u64 = run.calls.iter().map(|c| c.captured).sum();
    let valid: u64 = run.calls.iter().map(|c| c.report.valid).sum();
    let blocked: u64 = run.calls.iter().map(|c| c.report.blocked).sum();
    println!("{flips} rows promoted during the run: {valid} valid, {blocked} blocked");
    assert_eq!(captured, matched);
    assert_eq!(valid + blocked, matched);
    // Only unscanned READY rows can be promoted, so each flip is one more blocked row.
    assert_eq!(blocked, 2 + flips);

    // Every blocked row is reported, and what the table holds agrees.
    assert_eq!(blocked_in_events(&mut sub), blocked);
    assert_eq!(count(&client, PROMOTED).await as u64, blocked);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM messages WHERE status = 'SPAM_REVIEW'"
        )
        .await as u64,
        valid
    );
    let policy = spam::policy();
    let changes = stored_changes(&client).await;
    for (old, new, n) in &changes {
        assert!(
            policy.check(old, new).is_ok(),
            "stored {old} -> {new} ({n}x)"
        );
    }
    assert!(!changes
        .iter()
        .any(|(o, n, _)| o == "PROMOTED" && n == "SPAM_REVIEW"));
    Ok(())
}

#[tokio::test]
async fn seed_reproduces_the_incident_shape_deterministically() -> TestResult {
    let cluster = common::cluster(20).await;
    let client = cluster.connect().await?;
    spam::create_schema(&client).await?;
    let fingerprint = "SELECT md5(string_agg(body || status || created_at::text, ',' ORDER BY id))
                       FROM messages";
    let counts = spam::seed_messages(&client, spam::DEFAULT_READY_SPAM, 42).await?;
    assert_eq!((counts.ready_spam, counts.promoted_spam), (1418, 5));
    assert_eq!(counts.scanned(), 1423);
    assert_eq!(count(&client, MATCHED).await, 1423);
    assert_eq!(count(&client, PROMOTED).await, 5);
    let first: String = client.query_one(fingerprint, &[]).await?.get(0);

    client
        .batch_execute("TRUNCATE messages RESTART IDENTITY")
        .await?;
    spam::seed_messages(&client, spam::DEFAULT_READY_SPAM, 42).await?;
    let again: String = client.query_one(fingerprint, &[]).await?.get(0);
    assert_eq!(first, again);

    client
        .batch_execute("TRUNCATE messages RESTART IDENTITY")
        .await?;
    spam::seed_messages(&client, spam::DEFAULT_READY_SPAM, 43).await?;
    let other: String = client.query_one(fingerprint, &[]).await?.get(0);
    assert_ne!(first, other);
    Ok(())
}
