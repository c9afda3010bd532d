//! The reference app's spam capture: `POST /api/spam/capture` moves messages matching a spam
//! rule to `SPAM_REVIEW`, in chunks that fit a per-call time budget, through the status
//! validator.
//!
//! Like the seed's original, the scan deliberately looks at READY *and* PROMOTED messages;
//! the guarded update lets READY -> SPAM_REVIEW through and blocks PROMOTED -> SPAM_REVIEW,
//! and the answer reports both: `Captured 100 / 1,423 (1,323 remaining)` and
//! `95 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)`. Call again with the returned `cursor`
//! until `done`.
//!
//! Request (JSON body or query string, all optional): `cursor` (`{"after": id, "processed":
//! n, "chunks": n}`, or `after`/`processed`/`chunks` in the query), `budget_ms` (default
//! 10000, the platform limit) and `item_cost_ms` (server time spent per item with
//! `pg_sleep`, default 10 like the seed, so 1,418 items do not fit one call).

// The demo binary and the tests each use part of this module.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use poolguard::batch::{BatchPause, BatchPlan, BatchSource, BoxError, BudgetedBatch, Checkpoint};
use poolguard::transition::{BlockedPair, GuardedUpdate, TransitionPolicy, TransitionReport};
use poolguard::{Criticality, Guard};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::{Client, Transaction};

/// The operation's name in events and logs.
pub const OPERATION: &str = "spam-capture";
/// READY spam candidates in the seed's incident.
pub const DEFAULT_READY_SPAM: usize = 1418;
/// The per-call budget: the platform's function limit.
pub const DEFAULT_BUDGET_MS: u64 = 10_000;
/// Server time per item, as in the seed (~0.01 s).
pub const DEFAULT_ITEM_COST_MS: u64 = 10;
/// The spam rule: a message matches if its body contains one of these (any case).
pub const SPAM_PATTERNS: [&str; 2] = ["%WIN A PRIZE%", "%crypto giveaway%"];

/// Creates the `messages` table.
pub async fn create_schema(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS messages (
                 id bigserial PRIMARY KEY,
                 body text NOT NULL,
                 status text NOT NULL,
                 created_at timestamptz NOT NULL
             )",
        )
        .await
}

/// What [`seed_messages`] inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedCounts {
    /// READY messages matching the rule: the ones to capture.
    pub ready_spam: usize,
    /// PROMOTED messages matching the rule: the scan's bug finds them too.
    pub promoted_spam: usize,
    /// COMPLETED messages matching the rule (not scanned).
    pub completed_spam: usize,
    /// Messages not matching the rule, of every status.
    pub clean: usize,
}

impl SeedCounts {
    /// Rows the capture scans: READY and PROMOTED spam.
    pub fn scanned(&self) -> usize {
        self.ready_spam + self.promoted_spam
    }
}

/// Inserts `ready_spam` READY spam candidates plus, in the seed's proportion (5 per 1,418),
/// PROMOTED and COMPLETED messages matching the rule, and half as many clean messages, in
/// an order and with bodies and dates fixed by `seed`.
pub async fn seed_messages(
    client: &Client,
    ready_spam: usize,
    seed: u64,
) -> Result<SeedCounts, tokio_postgres::Error> {
    let odd = (ready_spam * 5).div_ceil(DEFAULT_READY_SPAM);
    let counts = SeedCounts {
        ready_spam,
        promoted_spam: odd,
        completed_spam: odd,
        clean: ready_spam / 2,
    };
    let mut rows: Vec<(bool, &str)> = Vec::new();
    rows.extend(std::iter::repeat_n((true, "READY"), counts.ready_spam));
    rows.extend(std::iter::repeat_n(
        (true, "PROMOTED"),
        counts.promoted_spam,
    ));
    rows.extend(std::iter::repeat_n(
        (true, "COMPLETED"),
        counts.completed_spam,
    ));
    for i in 0..counts.clean {
        rows.push((false, ["READY", "PROMOTED", "COMPLETED"][i % 3]));
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in (1..rows.len()).rev() {
        rows.swap(i, rng.below(i as u64 + 1) as usize);
    }
    const SPAM: [&str; 4] = [
        "Congratulations! You WIN A PRIZE, reply to claim",
        "Exclusive crypto giveaway: send 1 coin, get 2",
        "win a prize today only, click the link",
        "Last chance: Crypto Giveaway ends tonight",
    ];
    const CLEAN: [&str; 4] = [
        "Can we move the delivery to Thursday?",
        "Invoice attached for last month",
        "Driver running 20 minutes late",
        "Please confirm the new address",
    ];
    let (mut bodies, mut statuses, mut ages) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (spam, status)) in rows.into_iter().enumerate() {
        let pick = rng.below(4) as usize;
        let text = if spam { SPAM[pick] } else { CLEAN[pick] };
        bodies.push(format!("{text} (#{})", i + 1));
        statuses.push(status.to_string());
        ages.push(rng.below(90 * 24 * 3600) as f64);
    }
    client
        .execute(
            "INSERT INTO messages (body, status, created_at)
             SELECT b, s, timestamptz '2025-10-01 00:00:00+00' - make_interval(secs => a)
             FROM unnest($1::text[], $2::text[], $3::float8[]) AS t(b, s, a)",
            &[&bodies, &statuses, &ages],
        )
        .await?;
    Ok(counts)
}

/// A small xorshift generator: the seed data needs no extra crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The message status policy (the sample `tests/data/message_status.toml`): READY ->
/// SPAM_REVIEW is allowed, PROMOTED -> SPAM_REVIEW is not.
pub fn policy() -> TransitionPolicy {
    TransitionPolicy::from_toml_str(include_str!("../../tests/data/message_status.toml"))
        .expect("the bundled policy is valid")
}

/// The scan: READY and PROMOTED messages matching the rule, by id.
struct SpamScan;

impl BatchSource for SpamScan {
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
                "SELECT id FROM messages
                 WHERE status IN ('READY', 'PROMOTED') AND body ILIKE ANY($1) AND id > $2
                 ORDER BY id LIMIT $3",
                &[
                    &&SPAM_PATTERNS[..],
                    &after.copied().unwrap_or(0),
                    &(limit as i64),
                ],
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
                "SELECT count(*) FROM messages
                 WHERE status IN ('READY', 'PROMOTED') AND body ILIKE ANY($1) AND id > $2",
                &[&&SPAM_PATTERNS[..], &after.copied().unwrap_or(0)],
            )
            .await?;
        Ok(Some(row.get::<_, i64>(0) as u64))
    }
}

/// A capture request; every field is optional.
#[derive(Debug, Default, Deserialize)]
pub struct CaptureRequest {
    /// Where to resume (the `cursor` of the previous answer).
    #[serde(default)]
    pub cursor: Option<Checkpoint<i64>>,
    /// The per-call time budget in milliseconds.
    pub budget_ms: Option<u64>,
    /// Server time per item in milliseconds.
    pub item_cost_ms: Option<u64>,
}

/// The same fields as a query string, with the cursor flattened.
#[derive(Debug, Default, Deserialize)]
struct CaptureQuery {
    after: Option<i64>,
    processed: Option<u64>,
    chunks: Option<u64>,
    budget_ms: Option<u64>,
    item_cost_ms: Option<u64>,
}

/// The status updates of one call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureReport {
    /// READY -> SPAM_REVIEW applied.
    pub valid: u64,
    /// Updates the policy blocked.
    pub blocked: u64,
    /// Blocked updates per pair.
    pub blocked_pairs: Vec<BlockedPair>,
    /// `95 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)`.
    pub summary: String,
}

/// The answer of one call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureResponse {
    /// `Captured 100 / 1,418 (1,318 remaining)`.
    pub message: String,
    /// Items handled (applied or blocked) by this call.
    pub captured: u64,
    /// Items handled over all calls.
    pub processed_total: u64,
    /// Items handled plus left, if known.
    pub total: Option<u64>,
    /// Items left, if known.
    pub remaining: Option<u64>,
    /// Whether the scan is complete.
    pub done: bool,
    /// Why the call stopped early.
    pub paused: Option<BatchPause>,
    /// Where to resume: send it back as `cursor`.
    pub cursor: Checkpoint<i64>,
    /// Chunks committed by this call.
    pub chunks: u64,
    /// Server-side duration of the call.
    pub elapsed_ms: u64,
    /// The status updates of this call.
    pub report: CaptureReport,
}

struct SpamState {
    guard: Guard,
    update: Arc<GuardedUpdate>,
    /// One runner per item cost, so each learns its own per-item estimate.
    batches: Mutex<HashMap<u64, Arc<BudgetedBatch>>>,
}

/// `POST /api/spam/capture`, guarded as a standard route.
pub fn routes(guard: Guard, policy: impl Into<Arc<TransitionPolicy>>) -> Router {
    let update = GuardedUpdate::new(policy.into(), "messages", "id", "status")
        .expect("fixed identifiers are valid");
    let state = Arc::new(SpamState {
        guard: guard.clone(),
        update: Arc::new(update),
        batches: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/api/spam/capture", post(capture))
        .route_layer(guard.standard())
        .with_state(state)
}

async fn capture(
    State(state): State<Arc<SpamState>>,
    class: Criticality,
    Query(query): Query<CaptureQuery>,
    body: Bytes,
) -> Response {
    let req: CaptureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CaptureRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        }
    };
    let cursor = req.cursor.unwrap_or(Checkpoint {
        after: query.after,
        processed: query.processed.unwrap_or(0),
        chunks: query.chunks.unwrap_or(0),
    });
    let budget_ms = req
        .budget_ms
        .or(query.budget_ms)
        .unwrap_or(DEFAULT_BUDGET_MS);
    let cost_ms = req
        .item_cost_ms
        .or(query.item_cost_ms)
        .unwrap_or(DEFAULT_ITEM_COST_MS);
    let plan = BatchPlan::with_budget(Duration::from_millis(budget_ms.clamp(100, 60_000)));
    let cost_ms = cost_ms.min(1000);
    let batch = {
        let mut batches = state.batches.lock().unwrap_or_else(|p| p.into_inner());
        let base = batches.entry(cost_ms).or_insert_with(|| {
            Arc::new(BudgetedBatch::new(OPERATION, plan).expect("the default plan is valid"))
        });
        base.with_plan(plan).expect("the plan is valid")
    };
    let update = state.update.clone();
    let secs = cost_ms as f64 / 1000.0;
    let run = batch
        .run(
            &state.guard,
            class,
            &mut SpamScan,
            cursor,
            move |tx, ids| {
                let update = update.clone();
                Box::pin(async move {
                    let mut report = TransitionReport::new();
                    for id in ids {
                        if secs > 0.0 {
                            tx.execute("SELECT pg_sleep($1)", &[&secs]).await?;
                        }
                        report.record(&update.apply(tx, id, "SPAM_REVIEW").await?);
                    }
                    Ok(report)
                })
            },
        )
        .await;
    let outcome = match run {
        Ok(outcome) => outcome,
        Err(e) => {
            if let Some(rejection) = e.rejection() {
                return rejection.to_response();
            }
            let msg = format!("{e}; resume from {:?}", e.outcome.progress.checkpoint());
            return error(StatusCode::INTERNAL_SERVER_ERROR, msg);
        }
    };
    let mut report = TransitionReport::new();
    outcome.results.iter().for_each(|r| report.merge(r));
    report.finish(OPERATION, state.guard.events());
    let p = &outcome.progress;
    Json(CaptureResponse {
        message: p.display_as("Captured").to_string(),
        captured: p.processed_this_call,
        processed_total: p.processed_total,
        total: p.total(),
        remaining: p.remaining,
        done: p.done,
        paused: p.paused,
        cursor: p.checkpoint(),
        chunks: p.chunks,
        elapsed_ms: p.elapsed.as_millis() as u64,
        report: CaptureReport {
            valid: report.valid(),
            blocked: report.blocked(),
            blocked_pairs: report.blocked_pairs(),
            summary: report.to_string(),
        },
    })
    .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
