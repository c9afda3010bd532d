//! Time-budgeted batching: run a large operation in chunks that each fit a per-call time
//! budget, commit every chunk on its own, and hand back a cursor to resume from.
//!
//! The seed's spam capture had to move 1,418 items at ~10 ms each under a 10 s platform
//! limit; one call doing everything timed out half-way. [`BudgetedBatch`] does what fits:
//!
//! - **Sizing** ([`BatchPlan`], [`ChunkSizer`]): chunks are planned into `budget_fraction`
//!   (default 80 %) of the budget, from a per-item cost measured on earlier chunks (an
//!   exponentially weighted average that rises fast and falls slowly), between `min_chunk`
//!   and `max_chunk`; `initial_chunk` while nothing is known. A chunk that would not fit the
//!   rest of the budget is not started (the first chunk of a call always runs).
//! - **Atomic chunks**: each chunk gets its own guarded connection and ONE transaction: the
//!   items are fetched ([`BatchSource::next_chunk`]) and applied inside it, then committed.
//!   A failing apply rolls the whole chunk back; a call dropped mid-chunk (client gone,
//!   tower timeout) cancels the query and discards the connection, so the server rolls it
//!   back. Nothing is ever half-applied.
//! - **Resumable**: the returned [`BatchProgress`] carries the cursor of the last committed
//!   item; [`BatchProgress::checkpoint`] continues exactly after it. To survive a call that
//!   is dropped before it returns, store the cursor in the same transaction as the chunk
//!   (the apply function sees the items).
//! - **Respects the guard**: each chunk is acquired as the caller's class with
//!   [`Guard::acquire_with`](crate::Guard::acquire_with), so it queues and yields like any
//!   request. Before each chunk the level is read: at [`Level::Warning`](crate::Level)
//!   chunks are multiplied by `warning_factor` (default halved); at
//!   [`Level::Critical`](crate::Level) no further chunk starts and the call returns
//!   `done = false` with [`BatchPause::Pressure`], to be resumed later. A refused
//!   acquisition after the first chunk ends the call the same way
//!   ([`BatchPause::Rejected`]).
//! - **Events**: every committed chunk publishes an
//!   [`EventKind::BatchProgress`]
//!   (`[SELF-HEAL] spam-capture: Batch 1/15 completed: 100 items processed (100 / 1,418)`);
//!   the last event of a call says whether the operation is complete
//!   (`Operation complete: 1,418 items processed in 15 batches`) or why it paused.
//!
//! ```no_run
//! use poolguard::batch::{BatchPlan, BatchSource, BoxError, BudgetedBatch, Checkpoint};
//! use poolguard::{Criticality, Guard};
//! use std::time::Duration;
//! use tokio_postgres::Transaction;
//!
//! struct Ready;
//!
//! impl BatchSource for Ready {
//!     type Item = i64;
//!     type Cursor = i64;
//!
//!     async fn next_chunk(
//!         &mut self,
//!         tx: &Transaction<'_>,
//!         after: Option<&i64>,
//!         limit: usize,
//!     ) -> Result<Vec<i64>, BoxError> {
//!         let rows = tx
//!             .query(
//!                 "SELECT id FROM messages WHERE status = 'READY' AND id > $1 ORDER BY id LIMIT $2",
//!                 &[&after.copied().unwrap_or(0), &(limit as i64)],
//!             )
//!             .await?;
//!         Ok(rows.iter().map(|r| r.get(0)).collect())
//!     }
//!
//!     fn cursor_of(id: &i64) -> i64 {
//!         *id
//!     }
//! }
//!
//! # async fn demo(guard: Guard) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let batch = BudgetedBatch::new("archive", BatchPlan::with_budget(Duration::from_secs(10)))?;
//! let mut from = Checkpoint::start();
//! loop {
//!     let outcome = batch
//!         .run(&guard, Criticality::Standard, &mut Ready, from, |tx, ids| {
//!             Box::pin(async move {
//!                 let n = tx
//!                     .execute("UPDATE messages SET status = 'ARCHIVED' WHERE id = ANY($1)", &[&ids])
//!                     .await?;
//!                 Ok(n)
//!             })
//!         })
//!         .await?;
//!     println!("{}", outcome.progress); // Processed 800 / 1,418 (618 remaining)
//!     if outcome.progress.done {
//!         break;
//!     }
//!     from = outcome.progress.checkpoint();
//! }
//! # Ok(()) }
//! ```

mod plan;
mod progress;
mod run;
mod sizer;
mod source;

pub use plan::BatchPlan;
pub use progress::{BatchPause, BatchProgress, Checkpoint, ProgressLine};
pub use run::{ApplyFuture, BudgetedBatch};
pub use sizer::{ChunkDecision, ChunkSizer};
pub use source::{BatchSource, BoxError};

use crate::events::{Event, EventKind};
use crate::{Error, Rejection};
use progress::Count;
use std::fmt;

/// What one call committed: its progress and the apply function's value for every
/// committed chunk, in order.
#[derive(Debug)]
pub struct BatchOutcome<C, T> {
    /// Counts, cursor and state.
    pub progress: BatchProgress<C>,
    /// One value per committed chunk.
    pub results: Vec<T>,
}

/// Where in a chunk a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStage {
    /// Acquiring the chunk's connection (see [`BatchError::rejection`]).
    Acquire,
    /// Opening the transaction.
    Begin,
    /// Counting or fetching items.
    Fetch,
    /// The apply function; the chunk was rolled back.
    Apply,
    /// Committing; the chunk's fate is unknown to the caller (but all-or-nothing).
    Commit,
}

impl BatchStage {
    /// A lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BatchStage::Acquire => "acquire",
            BatchStage::Begin => "begin",
            BatchStage::Fetch => "fetch",
            BatchStage::Apply => "apply",
            BatchStage::Commit => "commit",
        }
    }
}

/// A call that failed: where, why, and what had been committed before (resume from
/// `outcome.progress.checkpoint()`).
#[derive(Debug)]
pub struct BatchError<C, T> {
    /// The failing step.
    pub stage: BatchStage,
    /// The cause.
    pub source: BoxError,
    /// The chunks committed before the failure.
    pub outcome: Box<BatchOutcome<C, T>>,
}

impl<C, T> BatchError<C, T> {
    /// The guard's refusal, if the call failed because no connection was granted
    /// (answer it with its 429/503 and `Retry-After`).
    pub fn rejection(&self) -> Option<&Rejection> {
        self.source
            .downcast_ref::<Error>()
            .and_then(Error::rejection)
    }
}

impl<C, T> fmt::Display for BatchError<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch failed at {} after {} items: {}",
            self.stage.as_str(),
            Count(self.outcome.progress.processed_total),
            self.source
        )
    }
}

impl<C: fmt::Debug, T: fmt::Debug> std::error::Error for BatchError<C, T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The event for where `p` stands; `fresh` when a chunk committed since the last event.
pub(crate) fn event<C>(operation: &str, p: &BatchProgress<C>, fresh: bool) -> Event {
    Event::now(EventKind::BatchProgress {
        operation: operation.to_string(),
        chunk: p.chunks_total,
        chunk_size: if fresh { p.last_chunk } else { 0 },
        processed: p.processed_total,
        total: p.total(),
        done: p.done,
        paused: p.paused,
    })
}

/// The `[SELF-HEAL]` line of an [`EventKind::BatchProgress`] event.
pub(crate) fn message(
    operation: &str,
    chunk: u64,
    chunk_size: usize,
    processed: u64,
    total: Option<u64>,
    done: bool,
    paused: Option<BatchPause>,
) -> String {
    if done {
        return format!(
            "{operation}: Operation complete: {} items processed in {chunk} batches",
            Count(processed)
        );
    }
    let so_far = match total {
        Some(t) => format!("{} / {}", Count(processed), Count(t)),
        None => format!("{} so far", Count(processed)),
    };
    let mut msg = if chunk_size > 0 {
        let of = match total {
            Some(t) => {
                let left = t.saturating_sub(processed);
                format!("/{}", chunk + left.div_ceil(chunk_size as u64))
            }
            None => String::new(),
        };
        format!(
            "{operation}: Batch {chunk}{of} completed: {} items processed ({so_far})",
            Count(chunk_size as u64)
        )
    } else {
        format!("{operation}: at {so_far}")
    };
    if let Some(pause) = paused {
        msg.push_str(&format!(
            "; paused ({}), resume from the returned cursor",
            pause.describe()
        ));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    fn line(chunk: u64, size: usize, done: bool, paused: Option<BatchPause>) -> String {
        message(
            "spam-capture",
            chunk,
            size,
            chunk * 100,
            Some(1418),
            done,
            paused,
        )
    }

    #[test]
    fn messages_read_like_the_seed() {
        assert_eq!(
            line(1, 100, false, None),
            "spam-capture: Batch 1/15 completed: 100 items processed (100 / 1,418)"
        );
        assert_eq!(
            message("spam-capture", 15, 18, 1418, Some(1418), true, None),
            "spam-capture: Operation complete: 1,418 items processed in 15 batches"
        );
        assert_eq!(
            line(2, 100, false, Some(BatchPause::Budget)),
            "spam-capture: Batch 2/15 completed: 100 items processed (200 / 1,418); paused (time budget reached), resume from the returned cursor"
        );
        assert_eq!(
            message("x", 0, 0, 0, None, false, Some(BatchPause::Pressure)),
            "x: at 0 so far; paused (connection pool at critical level), resume from the returned cursor"
        );
    }

    #[test]
    fn pressure_pauses_are_warnings() {
        let ev = |paused| {
            Event::now(EventKind::BatchProgress {
                operation: "x".into(),
                chunk: 1,
                chunk_size: 1,
                processed: 1,
                total: None,
                done: false,
                paused,
            })
        };
        assert_eq!(ev(None).severity(), Severity::Info);
        assert_eq!(ev(Some(BatchPause::Budget)).severity(), Severity::Info);
        assert_eq!(ev(Some(BatchPause::Pressure)).severity(), Severity::Warning);
        let json = serde_json::to_value(ev(Some(BatchPause::Rejected))).unwrap();
        assert_eq!(json["kind"], "batch_progress");
        assert_eq!(json["paused"], "rejected");
    }
}
