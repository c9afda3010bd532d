//! [`HoldTimes`]: each class's measured slot hold time, fed by every release without a lock.

use crate::controller::DrainEstimate;
use crate::criticality::Criticality;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The bit pattern meaning "nothing measured yet" (a NaN no average can produce).
const NONE: u64 = u64::MAX;

/// The [`DrainEstimate`] of each class, as the bits of its average hold. A release folds its
/// hold in with one compare-and-swap, so releases on the fast path and under the admission
/// lock feed the same average, each exactly once.
#[derive(Debug)]
pub(crate) struct HoldTimes {
    average_secs: [AtomicU64; 3],
}

impl Default for HoldTimes {
    fn default() -> Self {
        Self {
            average_secs: [NONE, NONE, NONE].map(AtomicU64::new),
        }
    }
}

fn decode(bits: u64) -> DrainEstimate {
    match bits {
        NONE => DrainEstimate::default(),
        bits => DrainEstimate::with_hold_secs(f64::from_bits(bits)),
    }
}

impl HoldTimes {
    /// The drain estimate of `class` as of now.
    pub(crate) fn estimate(&self, class: Criticality) -> DrainEstimate {
        decode(self.average_secs[class.index()].load(Ordering::Acquire))
    }

    /// Feeds one hold of `class` (from grant to release).
    pub(crate) fn record(&self, class: Criticality, held: Duration) {
        let cell = &self.average_secs[class.index()];
        let mut current = cell.load(Ordering::Relaxed);
        loop {
            let mut estimate = decode(current);
            estimate.record(held);
            let next = estimate.hold_secs().map_or(NONE, f64::to_bits);
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_holds_as_the_drain_estimate_does() {
        let h = HoldTimes::default();
        assert_eq!(h.estimate(Criticality::Standard).hold(), None);
        let mut model = DrainEstimate::default();
        for ms in [800, 1800, 30, 400] {
            h.record(Criticality::Standard, Duration::from_millis(ms));
            model.record(Duration::from_millis(ms));
        }
        assert_eq!(h.estimate(Criticality::Standard), model);
        assert_eq!(h.estimate(Criticality::Critical).hold(), None);
    }
}
