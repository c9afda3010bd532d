//! [`WindowCounts`]: the outcome counters behind each `RequestsSummary` event.

use crate::criticality::Criticality;
use crate::events::OutcomeCounts;
use crate::metrics::Outcome;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome counts since the last `RequestsSummary` event.
#[derive(Debug, Default)]
pub(super) struct WindowCounts([[AtomicU64; 3]; Outcome::COUNT]);

impl WindowCounts {
    pub(super) fn add(&self, class: Criticality, outcome: Outcome) {
        self.0[outcome as usize][class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn take(&self) -> OutcomeCounts {
        let take = |o: Outcome| {
            let row = &self.0[o as usize];
            [0, 1, 2].map(|i| row[i].swap(0, Ordering::Relaxed))
        };
        OutcomeCounts {
            served: take(Outcome::Served),
            shed: take(Outcome::Shed),
            queued: take(Outcome::Queued),
            rate_limited: take(Outcome::RateLimited),
            timed_out: take(Outcome::TimedOut),
            queue_full: take(Outcome::QueueFull),
            pool_unavailable: take(Outcome::PoolUnavailable),
        }
    }
}
