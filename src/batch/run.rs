//! The runner: chunks sized to the time budget, each in its own transaction on a guarded
//! connection, stopping early when the budget or the pool says so.

use super::chunk::one_chunk;
use super::event::event;
use super::outcome::{BatchError, BatchOutcome, BatchStage};
use super::plan::BatchPlan;
use super::progress::{BatchProgress, Checkpoint};
use super::sizer::{ChunkDecision, ChunkSizer};
use super::source::{BatchSource, BoxError};
use crate::config::BuildError;
use crate::criticality::Criticality;
use crate::events::BatchPause;
use crate::guard::AcquireContext;
use crate::guard::Guard;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Transaction;

/// The future an apply function returns: boxed, `Send`, borrowing the chunk's transaction
/// and items. Write it as `Box::pin(async move { .. })`.
pub type ApplyFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 't>>;

/// Runs a large operation in chunks that fit a time budget; see the [module docs](super).
///
/// One value per operation (e.g. held in the router state): it remembers the per-item cost
/// it measured, so later calls size their first chunk from it. Clones made with
/// [`with_plan`](BudgetedBatch::with_plan) share that estimate.
#[derive(Debug)]
pub struct BudgetedBatch {
    operation: Arc<str>,
    plan: BatchPlan,
    sizer: Arc<Mutex<ChunkSizer>>,
}

impl BudgetedBatch {
    /// A runner for `operation` (the name in events and the route label of its
    /// acquisitions, e.g. `spam-capture`) with a validated `plan`.
    pub fn new(operation: impl Into<String>, plan: BatchPlan) -> Result<Self, BuildError> {
        plan.validate()?;
        Ok(Self {
            operation: Arc::from(operation.into()),
            plan,
            sizer: Arc::new(Mutex::new(ChunkSizer::new())),
        })
    }

    /// The same operation with another plan (e.g. a per-request budget), sharing the cost
    /// estimate learnt so far.
    pub fn with_plan(&self, plan: BatchPlan) -> Result<Self, BuildError> {
        plan.validate()?;
        Ok(Self {
            operation: self.operation.clone(),
            plan,
            sizer: self.sizer.clone(),
        })
    }

    /// The operation's name.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The plan.
    pub fn plan(&self) -> &BatchPlan {
        &self.plan
    }

    /// The per-item cost measured so far, if any.
    pub fn item_cost(&self) -> Option<Duration> {
        self.sizer().item_cost()
    }

    fn sizer(&self) -> ChunkSizer {
        *self.sizer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, items: usize, elapsed: Duration) {
        self.sizer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(items, elapsed);
    }

    /// [`run_with`](BudgetedBatch::run_with) with no user and the operation as route label.
    pub async fn run<S, F, T>(
        &self,
        guard: &Guard,
        class: Criticality,
        source: &mut S,
        from: Checkpoint<S::Cursor>,
        apply: F,
    ) -> Result<BatchOutcome<S::Cursor, T>, BatchError<S::Cursor, T>>
    where
        S: BatchSource,
        F: for<'t> FnMut(&'t Transaction<'t>, &'t [S::Item]) -> ApplyFuture<'t, T> + Send,
        T: Send,
    {
        self.run_with(guard, class, AcquireContext::default(), source, from, apply)
            .await
    }

    /// Runs chunks from `from` until the source is exhausted, the next chunk would not fit
    /// the budget, or the guard reaches Critical; returns what was committed and where to
    /// resume.
    ///
    /// Each chunk acquires a connection as `class` for `context` (the route label defaults
    /// to the operation name), opens a transaction, fetches the items with
    /// [`BatchSource::next_chunk`], calls `apply` once with all of them, and commits. If
    /// `apply` fails, the chunk is rolled back and the error returned with the progress up
    /// to the last commit. If this future is dropped mid-chunk, the connection's query is
    /// cancelled and the connection discarded, so the chunk is rolled back by the server.
    /// `apply`'s value for each committed chunk is returned in
    /// [`BatchOutcome::results`].
    ///
    /// A refused acquisition fails the call if no chunk has committed yet
    /// ([`BatchError::rejection`] gives the refusal); later it ends the call early with
    /// [`BatchPause::Rejected`].
    pub async fn run_with<S, F, T>(
        &self,
        guard: &Guard,
        class: Criticality,
        mut context: AcquireContext,
        source: &mut S,
        from: Checkpoint<S::Cursor>,
        mut apply: F,
    ) -> Result<BatchOutcome<S::Cursor, T>, BatchError<S::Cursor, T>>
    where
        S: BatchSource,
        F: for<'t> FnMut(&'t Transaction<'t>, &'t [S::Item]) -> ApplyFuture<'t, T> + Send,
        T: Send,
    {
        if context.route.is_none() {
            context.route = Some(self.operation.clone());
        }
        let started = Instant::now();
        let mut out = BatchOutcome {
            progress: BatchProgress {
                processed_this_call: 0,
                processed_total: from.processed,
                remaining_at_start: None,
                remaining: None,
                chunks: 0,
                chunks_total: from.chunks,
                last_chunk: 0,
                cursor: from.after,
                done: false,
                paused: None,
                elapsed: Duration::ZERO,
                item_cost: None,
            },
            results: Vec::new(),
        };
        // The last committed chunk's event waits until the call knows whether it goes on.
        let mut unpublished = false;
        loop {
            let first = out.progress.chunks == 0;
            let decision = self
                .sizer()
                .next(&self.plan, started.elapsed(), guard.level(), first);
            let limit = match decision {
                ChunkDecision::Run(limit) => limit,
                ChunkDecision::Stop(pause) => {
                    out.progress.paused = Some(pause);
                    break;
                }
            };
            if std::mem::take(&mut unpublished) {
                self.publish(guard, &out.progress, true);
            }
            let chunk_started = Instant::now();
            let mut conn = match guard.acquire_with(class, context.clone()).await {
                Ok(conn) => conn,
                Err(e) if e.rejection().is_some() && !first => {
                    out.progress.paused = Some(BatchPause::Rejected);
                    break;
                }
                Err(e) => {
                    return Err(self.fail(out, started, BatchStage::Acquire, e.into()));
                }
            };
            let after = out.progress.cursor.as_ref();
            let count = first && out.progress.remaining_at_start.is_none();
            let chunk = one_chunk(&mut conn, source, after, count, limit, &mut apply).await;
            drop(conn);
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err((stage, e)) => return Err(self.fail(out, started, stage, e)),
            };
            let p = &mut out.progress;
            if count {
                p.remaining_at_start = chunk.remaining;
                p.remaining = chunk.remaining;
            }
            if chunk.items > 0 {
                let n = chunk.items as u64;
                p.processed_this_call += n;
                p.processed_total += n;
                p.chunks += 1;
                p.chunks_total += 1;
                p.last_chunk = chunk.items;
                p.cursor = chunk.cursor;
                p.remaining = p.remaining.map(|r| r.saturating_sub(n));
                out.results.extend(chunk.value);
                self.observe(chunk.items, chunk_started.elapsed());
                unpublished = true;
                if first {
                    self.log_preflight(p);
                }
            }
            if !chunk.more {
                p.done = true;
                p.remaining = Some(0);
                break;
            }
        }
        out.progress.elapsed = started.elapsed();
        out.progress.item_cost = self.item_cost();
        // Every call ends with one event carrying `done` or the pause reason.
        self.publish(guard, &out.progress, unpublished);
        Ok(out)
    }

    /// The error for a failed call, with the chunks committed before it. (Their events are
    /// out already: a held-back event is published before the next chunk starts.)
    fn fail<C, T>(
        &self,
        mut outcome: BatchOutcome<C, T>,
        started: Instant,
        stage: BatchStage,
        source: BoxError,
    ) -> BatchError<C, T> {
        outcome.progress.elapsed = started.elapsed();
        outcome.progress.item_cost = self.item_cost();
        BatchError {
            stage,
            source,
            outcome: Box::new(outcome),
        }
    }

    /// Publishes where the operation stands; `fresh` when a chunk committed since the last
    /// event.
    fn publish<C>(&self, guard: &Guard, p: &BatchProgress<C>, fresh: bool) {
        guard.events().publish(event(&self.operation, p, fresh));
    }

    /// The seed's pre-flight line, once the first chunk has measured the cost.
    fn log_preflight<C>(&self, p: &BatchProgress<C>) {
        let (Some(left), Some(cost)) = (p.remaining_at_start, self.item_cost()) else {
            return;
        };
        let estimate = cost.mul_f64(left as f64);
        if estimate > self.plan.usable() {
            tracing::info!(
                target: "poolguard::self_heal",
                "[SELF-HEAL] {}: Operation would timeout ({} items, estimated {:.1} s over a {:.1} s limit), auto-batching to {} items",
                self.operation,
                crate::events::Count(left),
                estimate.as_secs_f64(),
                self.plan.budget.as_secs_f64(),
                p.last_chunk,
            );
        }
    }
}
