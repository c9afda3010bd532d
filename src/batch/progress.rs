//! Where a batch stands: the resume point handed back to the caller and the progress report
//! of one call.

use crate::events::{BatchPause, Count};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The resume point of a batched operation: the cursor of the last committed item and the
/// counts so far. Start with [`Checkpoint::start`]; continue with
/// [`BatchProgress::checkpoint`]. Serializable, so it can travel through a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<C> {
    /// The cursor of the last committed item; `None` before the first one.
    pub after: Option<C>,
    /// Items committed so far, over all calls.
    #[serde(default)]
    pub processed: u64,
    /// Chunks committed so far, over all calls.
    #[serde(default)]
    pub chunks: u64,
}

impl<C> Checkpoint<C> {
    /// The beginning of an operation.
    pub fn start() -> Self {
        Self {
            after: None,
            processed: 0,
            chunks: 0,
        }
    }
}

impl<C> Default for Checkpoint<C> {
    fn default() -> Self {
        Self::start()
    }
}

/// What one call of [`BudgetedBatch::run`](super::BudgetedBatch::run) achieved.
///
/// `Display` reads like the seed's popup, with `Processed` as the verb:
/// `Processed 100 / 1,418 (1,318 remaining)` where 1,418 is what was left when the call
/// started. [`display_as`](BatchProgress::display_as) picks another verb (`Captured ...`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchProgress<C> {
    /// Items committed by this call.
    pub processed_this_call: u64,
    /// Items committed over all calls.
    pub processed_total: u64,
    /// Items left when this call started, if the source can count them.
    pub remaining_at_start: Option<u64>,
    /// Items left now, if known (an estimate when other writers change the set).
    pub remaining: Option<u64>,
    /// Chunks committed by this call.
    pub chunks: u64,
    /// Chunks committed over all calls.
    pub chunks_total: u64,
    /// Size of the last committed chunk (0 if none).
    pub last_chunk: usize,
    /// The cursor of the last committed item: the resume point.
    pub cursor: Option<C>,
    /// Whether the source is exhausted.
    pub done: bool,
    /// Why the call ended early, when it did.
    pub paused: Option<BatchPause>,
    /// How long the call took.
    #[serde(with = "crate::config::millis", rename = "elapsed_ms")]
    pub elapsed: Duration,
    /// The per-item cost estimate after this call.
    #[serde(skip)]
    pub item_cost: Option<Duration>,
}

impl<C: Clone> BatchProgress<C> {
    /// The point to resume from.
    pub fn checkpoint(&self) -> Checkpoint<C> {
        Checkpoint {
            after: self.cursor.clone(),
            processed: self.processed_total,
            chunks: self.chunks_total,
        }
    }
}

impl<C> BatchProgress<C> {
    /// The items seen by this and earlier calls plus what is left, if known.
    pub fn total(&self) -> Option<u64> {
        self.remaining.map(|r| r + self.processed_total)
    }

    /// The progress line with another verb: `Captured 100 / 1,418 (1,318 remaining)`, and
    /// ` - All done!` once the operation is complete.
    pub fn display_as<'a>(&'a self, verb: &'a str) -> ProgressLine<'a, C> {
        ProgressLine {
            progress: self,
            verb,
        }
    }
}

impl<C> fmt::Display for BatchProgress<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_as("Processed").fmt(f)
    }
}

/// The progress line of a [`BatchProgress`] with a chosen verb; see
/// [`BatchProgress::display_as`].
#[derive(Debug)]
pub struct ProgressLine<'a, C> {
    progress: &'a BatchProgress<C>,
    verb: &'a str,
}

impl<C> fmt::Display for ProgressLine<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.progress;
        write!(f, "{} {}", self.verb, Count(p.processed_this_call))?;
        match (p.remaining_at_start, p.remaining) {
            (Some(at_start), Some(left)) => {
                write!(f, " / {} ({} remaining)", Count(at_start), Count(left))?
            }
            _ if p.done => f.write_str(" (0 remaining)")?,
            _ => f.write_str(" (more remaining)")?,
        }
        if p.done {
            f.write_str(" - All done!")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(this_call: u64, at_start: Option<u64>, done: bool) -> BatchProgress<i64> {
        BatchProgress {
            processed_this_call: this_call,
            processed_total: this_call,
            remaining_at_start: at_start,
            remaining: at_start.map(|s| s - this_call),
            chunks: 1,
            chunks_total: 1,
            last_chunk: this_call as usize,
            cursor: Some(7),
            done,
            paused: None,
            elapsed: Duration::from_millis(1500),
            item_cost: None,
        }
    }

    #[test]
    fn counts_have_separators() {
        let s = |n| Count(n).to_string();
        assert_eq!(s(0), "0");
        assert_eq!(s(999), "999");
        assert_eq!(s(1418), "1,418");
        assert_eq!(s(1_234_567), "1,234,567");
        assert_eq!(s(100_000), "100,000");
    }

    #[test]
    fn lines_read_like_the_seed() {
        let p = progress(100, Some(1418), false);
        assert_eq!(
            p.display_as("Captured").to_string(),
            "Captured 100 / 1,418 (1,318 remaining)"
        );
        assert_eq!(p.to_string(), "Processed 100 / 1,418 (1,318 remaining)");
        assert_eq!(
            progress(18, Some(18), true)
                .display_as("Captured")
                .to_string(),
            "Captured 18 / 18 (0 remaining) - All done!"
        );
        assert_eq!(
            progress(5, None, false).to_string(),
            "Processed 5 (more remaining)"
        );
        assert_eq!(p.total(), Some(1418));
    }

    #[test]
    fn checkpoint_round_trips_through_json() {
        let cp = progress(100, Some(1418), false).checkpoint();
        assert_eq!((cp.after, cp.processed, cp.chunks), (Some(7), 100, 1));
        let json = serde_json::to_string(&cp).unwrap();
        assert_eq!(json, r#"{"after":7,"processed":100,"chunks":1}"#);
        let back: Checkpoint<i64> = serde_json::from_str(r#"{"after":7}"#).unwrap();
        assert_eq!(back.processed, 0);
        let v = serde_json::to_value(progress(1, Some(2), false)).unwrap();
        assert_eq!(v["elapsed_ms"], 1500);
    }
}
