//! What events say about a time-budgeted batch ([`crate::batch`]): why a call paused, and the
//! `[SELF-HEAL]` line of its progress events.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a call ended before the operation was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchPause {
    /// The next chunk would not have fit the rest of the time budget.
    Budget,
    /// The guard was at [`Level::Critical`](crate::monitor::Level::Critical): the call yielded the
    /// pool to more important work.
    Pressure,
    /// The guard refused a connection for the next chunk (queue full or waited too long).
    Rejected,
}

impl BatchPause {
    /// A short human-readable reason.
    pub const fn describe(self) -> &'static str {
        match self {
            BatchPause::Budget => "time budget reached",
            BatchPause::Pressure => "connection pool at critical level",
            BatchPause::Rejected => "no connection granted",
        }
    }
}

/// A count with thousands separators: `1,418`.
pub(crate) struct Count(pub(crate) u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let first = digits.len() % 3;
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && i % 3 == first {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The `[SELF-HEAL]` line of an [`EventKind::BatchProgress`] event.
pub(crate) fn batch_message(
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
    use crate::events::{Event, EventKind, Severity};

    fn line(chunk: u64, size: usize, done: bool, paused: Option<BatchPause>) -> String {
        batch_message(
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
            batch_message("spam-capture", 15, 18, 1418, Some(1418), true, None),
            "spam-capture: Operation complete: 1,418 items processed in 15 batches"
        );
        assert_eq!(
            line(2, 100, false, Some(BatchPause::Budget)),
            "spam-capture: Batch 2/15 completed: 100 items processed (200 / 1,418); paused (time budget reached), resume from the returned cursor"
        );
        assert_eq!(
            batch_message("x", 0, 0, 0, None, false, Some(BatchPause::Pressure)),
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
