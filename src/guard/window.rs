//! [`WindowCounts`]: the outcome counters behind each `RequestsSummary` event.

use crate::criticality::Criticality;
use crate::events::OutcomeCounts;
use crate::metrics::Outcome;
use crate::stripes::Stripes;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome counts since the last `RequestsSummary` event, indexed `[outcome][class]`: each
/// thread counts in its own stripe, and taking them adds the stripes up.
#[derive(Debug, Default)]
pub(super) struct WindowCounts(Stripes<[[AtomicU64; 3]; Outcome::COUNT]>);

impl WindowCounts {
    pub(super) fn add(&self, class: Criticality, outcome: Outcome) {
        self.0.mine()[outcome as usize][class.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last take, each counted once: a count added while the stripes
    /// are taken lands in this take or the next.
    pub(super) fn take(&self) -> OutcomeCounts {
        let take = |o: Outcome| {
            let mut counts = [0u64; 3];
            for stripe in self.0.all() {
                for (sum, n) in counts.iter_mut().zip(&stripe[o as usize]) {
                    *sum += n.swap(0, Ordering::Relaxed);
                }
            }
            counts
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
