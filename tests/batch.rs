//! Time-budgeted batching against a real PostgreSQL server: calls stay within their budget,
//! chunks are all-or-nothing (failing apply, dropped call), calls resume exactly after the
//! last commit, and the runner backs off when the guard's level rises.

mod common;

use common::{eventually, quick_config};
use poolguard::batch::{
    BatchPause, BatchPlan, BatchSource, BatchStage, BoxError, BudgetedBatch, Checkpoint,
};
use poolguard::events::{EventKind, EventSubscriber};
use poolguard::testing::TestCluster;
use poolguard::{Criticality, Guard, Level};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Transaction};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// `items(id, hits)` with ids `1..=n`, and a one-row `checkpoint` that chunks update in
/// their own transaction.
async fn items(client: &Client, n: i64) -> TestResult {
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, hits int NOT NULL DEFAULT 0);
             CREATE TABLE checkpoint (after bigint, processed bigint NOT NULL, chunks bigint NOT NULL);
             INSERT INTO checkpoint VALUES (NULL, 0, 0);",
        )
        .await?;
    client
        .execute(
            "INSERT INTO items (id) SELECT generate_series(1, $1::bigint)",
            &[&n],
        )
        .await?;
    Ok(())
}

/// Every item by id.
struct Items;

impl BatchSource for Items {
    type Item = i64;
    type Cursor = i64;

    async fn next_chunk(
        &mut self,
        tx: &Transaction<'_>,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<i64>, BoxError> {
        let rows = tx
            .query(
                "SELECT id FROM items WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after.copied().unwrap_or(0), &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn cursor_of(id: &i64) -> i64 {
        *id
    }

    async fn remaining(
        &mut self,
        tx: &Transaction<'_>,
        after: Option<&i64>,
    ) -> Result<Option<u64>, BoxError> {
        let row = tx
            .query_one(
                "SELECT count(*) FROM items WHERE id > $1",
                &[&after.copied().unwrap_or(0)],
            )
            .await?;
        Ok(Some(row.get::<_, i64>(0) as u64))
    }
}

/// The chunk's work: one hit per item, `cost_ms` of server time per item, the checkpoint
/// moved in the same transaction; fails after the update when the chunk holds `fail_at`.
async fn work(
    tx: &Transaction<'_>,
    ids: &[i64],
    cost_ms: f64,
    fail_at: Option<i64>,
) -> Result<u64, BoxError> {
    let n = tx
        .execute(
            "UPDATE items SET hits = hits + 1 WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    if cost_ms > 0.0 {
        let secs = cost_ms * ids.len() as f64 / 1000.0;
        tx.execute("SELECT pg_sleep($1)", &[&secs]).await?;
    }
    if fail_at.is_some_and(|f| ids.contains(&f)) {
        return Err("apply failed on purpose".into());
    }
    tx.execute(
        "UPDATE checkpoint SET after = $1, processed = processed + $2, chunks = chunks + 1",
        &[&ids.last().copied(), &(ids.len() as i64)],
    )
    .await?;
    Ok(n)
}

async fn hit_counts(client: &Client) -> Result<(i64, i64, i64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE hits > 0), count(*) FILTER (WHERE hits > 1), count(*) FROM items",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

async fn stored_checkpoint(client: &Client) -> Result<Checkpoint<i64>, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT after, processed, chunks FROM checkpoint", &[])
        .await?;
    Ok(Checkpoint {
        after: row.get(0),
        processed: row.get::<_, i64>(1) as u64,
        chunks: row.get::<_, i64>(2) as u64,
    })
}

fn plan(budget_ms: u64, initial: usize, max: usize) -> BatchPlan {
    BatchPlan {
        budget: Duration::from_millis(budget_ms),
        initial_chunk: initial,
        max_chunk: max,
        ..BatchPlan::default()
    }
}

/// Batch-progress events published so far: (chunk_size, processed, done, paused).
fn batch_events(sub: &mut EventSubscriber) -> Vec<(usize, u64, bool, Option<BatchPause>)> {
    let mut out = Vec::new();
    while let Some(e) = sub.try_recv() {
        if let EventKind::BatchProgress {
            chunk_size,
            processed,
            done,
            paused,
            ..
        } = e.kind
        {
            out.push((chunk_size, processed, done, paused));
        }
    }
    out
}

async fn setup(n: i64, max_size: usize) -> Result<(TestCluster, Client, Guard), BoxError> {
    let cluster = common::cluster(40).await;
    let client = cluster.connect().await?;
    items(&client, n).await?;
    let guard = common::guard(&cluster, max_size, quick_config()).await;
    Ok((cluster, client, guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_every_item_across_calls_each_within_budget() -> TestResult {
    const N: i64 = 300;
    const BUDGET_MS: u64 = 400;
    let (_cluster, client, guard) = setup(N, 4).await?;
    let mut sub = guard.subscribe();
    let batch = BudgetedBatch::new("touch-items", plan(BUDGET_MS, 20, 1000))?;
    let mut from = Checkpoint::start();
    let mut calls = Vec::new();
    let mut applied = 0;
    loop {
        let started = Instant::now();
        let out = batch
            .run(
                &guard,
                Criticality::Standard,
                &mut Items,
                from,
                |tx, ids| Box::pin(work(tx, ids, 2.0, None)),
            )
            .await?;
        let took = started.elapsed();
        applied += out.results.iter().sum::<u64>();
        let p = &out.progress;
        println!("{p} in {} ms, {} chunks", took.as_millis(), p.chunks);
        calls.push((took, p.processed_this_call, p.chunks));
        // The budget decides where a call pauses (asserted below); this only catches a
        // call that runs far past it, with room for a loaded machine.
        assert!(
            took <= Duration::from_millis(BUDGET_MS + 1000),
            "call took {took:?} over a {BUDGET_MS} ms budget"
        );
        assert_eq!(p.total(), Some(N as u64), "{p}");
        if p.done {
            assert_eq!(p.paused, None);
            assert_eq!(p.remaining, Some(0));
            break;
        }
        assert_eq!(p.paused, Some(BatchPause::Budget), "{p}");
        assert!(p.processed_this_call > 0, "{p}");
        from = p.checkpoint();
        assert!(calls.len() < 20, "no end in sight: {calls:?}");
    }
    assert!(
        calls.len() >= 2,
        "300 items at 2 ms do not fit 320 ms: {calls:?}"
    );
    assert_eq!(applied, N as u64);
    assert_eq!(hit_counts(&client).await?, (N, 0, N));
    assert!(batch.item_cost().unwrap() >= Duration::from_millis(2));

    let events = batch_events(&mut sub);
    let last = events.last().unwrap();
    assert!(last.2 && last.1 == N as u64, "{events:?}");
    let chunks: usize = events.iter().filter(|e| e.0 > 0).count();
    let committed: u64 = calls.iter().map(|c| c.2).sum();
    assert_eq!(chunks as u64, committed, "{events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_rolls_back_its_chunk_and_resumes_without_repeats() -> TestResult {
    const N: i64 = 300;
    let (_cluster, client, guard) = setup(N, 4).await?;
    let mut sub = guard.subscribe();
    let batch = BudgetedBatch::new("touch-items", plan(10_000, 40, 1000))?;

    // 40 items at 5 ms, then one chunk with the rest (1.3 s): dropped inside it, as soon as
    // the call has published the first chunk's event. (Not as soon as the first checkpoint is
    // visible on the server: a drop while the COMMIT's answer is still on its way would leave
    // a committed chunk the call never learned of, so never reported.)
    let mut source = Items;
    let mut run = Box::pin(batch.run(
        &guard,
        Criticality::Standard,
        &mut source,
        Checkpoint::start(),
        |tx, ids| Box::pin(work(tx, ids, 5.0, None)),
    ));
    let first_published = async {
        loop {
            let event = sub
                .recv()
                .await
                .expect("the bus lives as long as the guard");
            if let EventKind::BatchProgress { processed, .. } = event.kind {
                return processed;
            }
        }
    };
    let first_processed = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            _ = &mut run => None,
            processed = first_published => Some(processed),
        }
    })
    .await
    .expect("the first chunk is committed")
    .expect("the call should still be running");
    drop(run);

    let cp = stored_checkpoint(&client).await?;
    assert!(cp.processed > 0 && cp.processed < N as u64, "{cp:?}");
    // The in-flight query is cancelled and its connection closed: nothing of the chunk
    // stays, now or later.
    eventually("the dropped chunk's backend is gone", Duration::from_secs(5), || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'poolguard:%' AND state <> 'idle'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
    assert_eq!(hit_counts(&client).await?, (cp.processed as i64, 0, N));
    // Nothing after the first chunk was committed or reported.
    let events = batch_events(&mut sub);
    assert_eq!(first_processed, cp.processed, "{events:?}");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(cp.after, Some(cp.processed as i64));

    // Resume from the stored checkpoint: every item exactly once.
    let out = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            cp.clone(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, None)),
        )
        .await?;
    let p = &out.progress;
    assert!(p.done, "{p}");
    assert_eq!(p.processed_total, N as u64);
    assert_eq!(p.processed_this_call, N as u64 - cp.processed);
    assert_eq!(p.remaining_at_start, Some(N as u64 - cp.processed));
    assert_eq!(hit_counts(&client).await?, (N, 0, N));
    assert_eq!(stored_checkpoint(&client).await?.processed, N as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_apply_rolls_back_its_whole_chunk() -> TestResult {
    const N: i64 = 100;
    let (_cluster, client, guard) = setup(N, 4).await?;
    let batch = BudgetedBatch::new("touch-items", plan(10_000, 20, 20))?;

    let err = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            Checkpoint::start(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, Some(55))),
        )
        .await
        .expect_err("the chunk holding 55 fails");
    assert_eq!(err.stage, BatchStage::Apply);
    assert!(err.rejection().is_none());
    assert!(err.to_string().contains("apply failed on purpose"), "{err}");
    let p = &err.outcome.progress;
    assert_eq!((p.processed_total, p.chunks, p.cursor), (40, 2, Some(40)));
    assert_eq!(err.outcome.results, vec![20, 20]);
    // Rows 41..=60 were updated inside the failed chunk, then rolled back.
    assert_eq!(hit_counts(&client).await?, (40, 0, N));
    let touched: i64 = client
        .query_one("SELECT count(*) FROM items WHERE id > 40 AND hits > 0", &[])
        .await?
        .get(0);
    assert_eq!(touched, 0);
    assert_eq!(stored_checkpoint(&client).await?.processed, 40);
    // The connection went back to the pool after the rollback.
    assert_eq!(guard.status().granted, 0);

    let out = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            p.checkpoint(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, None)),
        )
        .await?;
    assert!(out.progress.done);
    assert_eq!(out.progress.processed_total, N as u64);
    assert_eq!(hit_counts(&client).await?, (N, 0, N));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_off_at_critical_and_finishes_after_recovery() -> TestResult {
    const N: i64 = 200;
    let (_cluster, client, guard) = setup(N, 4).await?;
    let mut sub = guard.subscribe();
    let batch = BudgetedBatch::new("touch-items", plan(10_000, 20, 20))?;

    // The second chunk's apply pushes the level to Critical.
    let chunks = Arc::new(AtomicUsize::new(0));
    let (g, c) = (guard.clone(), chunks.clone());
    let out = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            Checkpoint::start(),
            move |tx, ids| {
                if c.fetch_add(1, Ordering::SeqCst) == 1 {
                    g.report_server_utilization(0.95);
                }
                Box::pin(work(tx, ids, 0.0, None))
            },
        )
        .await?;
    let p = &out.progress;
    assert_eq!(guard.level(), Level::Critical);
    assert!(!p.done, "{p}");
    assert_eq!(p.paused, Some(BatchPause::Pressure));
    assert_eq!(
        p.processed_this_call, 40,
        "the chunk in progress commits, no more"
    );
    assert_eq!(hit_counts(&client).await?, (40, 0, N));

    // Still Critical: a call starts nothing.
    let again = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            p.checkpoint(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, None)),
        )
        .await?;
    assert_eq!(again.progress.processed_this_call, 0);
    assert_eq!(again.progress.paused, Some(BatchPause::Pressure));
    assert_eq!(again.progress.cursor, Some(40));

    guard.report_server_utilization(0.0);
    let mut level = guard.watch_level();
    tokio::time::timeout(
        Duration::from_secs(5),
        level.wait_for(|l| *l == Level::Normal),
    )
    .await??;
    let done = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            again.progress.checkpoint(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, None)),
        )
        .await?;
    assert!(done.progress.done, "{}", done.progress);
    assert_eq!(done.progress.processed_total, N as u64);
    assert_eq!(hit_counts(&client).await?, (N, 0, N));

    let events = batch_events(&mut sub);
    let pauses = events
        .iter()
        .filter(|e| e.3 == Some(BatchPause::Pressure))
        .count();
    assert_eq!(pauses, 2, "{events:?}");
    assert!(events.last().unwrap().2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_halves_the_chunks() -> TestResult {
    const N: i64 = 60;
    let (_cluster, client, guard) = setup(N, 4).await?;
    let batch = BudgetedBatch::new("touch-items", plan(10_000, 20, 20))?;
    guard.report_server_utilization(0.86);
    assert_eq!(guard.level(), Level::Warning);
    let out = batch
        .run(
            &guard,
            Criticality::Standard,
            &mut Items,
            Checkpoint::start(),
            |tx, ids| Box::pin(work(tx, ids, 0.0, None)),
        )
        .await?;
    assert!(out.progress.done);
    assert_eq!(out.results, vec![10; 6]);
    assert_eq!(hit_counts(&client).await?, (N, 0, N));
    Ok(())
}
