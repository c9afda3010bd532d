//! The self-heal event of a batch and its `[SELF-HEAL]` line.

use super::progress::{BatchPause, BatchProgress, Count};
use crate::events::{Event, EventKind};

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
