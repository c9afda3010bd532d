//! The reporter's counters: what it analysed, skipped, dropped and failed.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the reporter has done so far (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReporterStats {
    /// Incidents handed to the reporter and accepted.
    pub submitted: u64,
    /// Incidents dropped because the queue was full.
    pub dropped: u64,
    /// Analyses written by the LLM.
    pub llm_analyses: u64,
    /// LLM calls that failed.
    pub llm_failures: u64,
    /// Local rule-based summaries (no endpoint configured).
    pub local_summaries: u64,
    /// Dry runs (prompt written, no call).
    pub dry_runs: u64,
    /// Incidents skipped as duplicates.
    pub duplicates: u64,
    /// Incidents skipped because the budget was spent.
    pub budget_skipped: u64,
    /// Sink deliveries that failed.
    pub sink_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters([AtomicU64; 9]);

impl Counters {
    pub(crate) fn inc(&self, i: usize, n: u64) {
        self.0[i].fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> ReporterStats {
        let g = |i: usize| self.0[i].load(Ordering::Relaxed);
        ReporterStats {
            submitted: g(0),
            dropped: g(1),
            llm_analyses: g(2),
            llm_failures: g(3),
            local_summaries: g(4),
            dry_runs: g(5),
            duplicates: g(6),
            budget_skipped: g(7),
            sink_failures: g(8),
        }
    }
}
