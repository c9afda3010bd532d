//! What a call returns: the committed chunks' outcome, or the error with the progress made
//! before it.

use super::progress::BatchProgress;
use super::source::BoxError;
use crate::error::Error;
use crate::events::Count;
use crate::rejection::Rejection;
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
