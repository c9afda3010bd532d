//! The self-heal event of a batch and its `[SELF-HEAL]` line.

use super::progress::BatchProgress;
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
