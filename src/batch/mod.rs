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
//!   request. Before each chunk the level is read: at [`Level::Warning`](crate::monitor::Level)
//!   chunks are multiplied by `warning_factor` (default halved); at
//!   [`Level::Critical`](crate::monitor::Level) no further chunk starts and the call returns
//!   `done = false` with [`BatchPause::Pressure`], to be resumed later. A refused
//!   acquisition after the first chunk ends the call the same way
//!   ([`BatchPause::Rejected`]).
//! - **Events**: every committed chunk publishes an
//!   [`EventKind::BatchProgress`](crate::events::EventKind::BatchProgress)
//!   (`[SELF-HEAL] spam-capture: Batch 1/15 completed: 100 items processed (100 / 1,418)`);
//!   the last event of a call says whether the operation is complete
//!   (`Operation complete: 1,418 items processed in 15 batches`) or why it paused. A call
//!   dropped while a chunk's `COMMIT` is on its way cannot know whether the server committed
//!   it, so it reports nothing for that chunk: the stored checkpoint says what was committed.
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

mod chunk;
mod event;
mod outcome;
mod plan;
mod progress;
mod run;
mod sizer;
mod source;

pub use crate::events::BatchPause;
pub use outcome::{BatchError, BatchOutcome, BatchStage};
pub use plan::BatchPlan;
pub use progress::{BatchProgress, Checkpoint, ProgressLine};
pub use run::{ApplyFuture, BudgetedBatch};
pub use sizer::{ChunkDecision, ChunkSizer};
pub use source::{BatchSource, BoxError};
