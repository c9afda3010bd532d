//! Pure chunk sizing: a per-item cost estimate learnt from measured chunks, and the decision
//! of how many items the next chunk may hold. No clock is read here; durations come in.

use super::plan::BatchPlan;
use crate::events::BatchPause;
use crate::monitor::Level;
use std::time::Duration;

/// Weight of a new sample that is dearer than the estimate: cost spikes are believed fast.
const RISING_WEIGHT: f64 = 0.7;
/// Weight of a new sample that is cheaper than the estimate: cost drops are believed slowly.
const FALLING_WEIGHT: f64 = 0.3;

/// What the next step of a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkDecision {
    /// Run a chunk of at most this many items.
    Run(usize),
    /// Start no further chunk in this call.
    Stop(BatchPause),
}

/// The per-item cost estimate (an exponentially weighted moving average of measured chunks)
/// and the sizing rule built on it.
///
/// The estimate rises quickly (a new, dearer sample weighs 0.7) and falls slowly (a cheaper
/// one weighs 0.3), so one slow chunk shrinks the next one at once while one fast chunk does
/// not grow it recklessly.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChunkSizer {
    /// Seconds per item; `None` until a chunk has been measured.
    cost: Option<f64>,
}

impl ChunkSizer {
    /// A sizer that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sizer starting from a known per-item cost (e.g. one carried over from another
    /// process).
    pub fn with_cost(cost: Duration) -> Self {
        let mut s = Self::new();
        if !cost.is_zero() {
            s.cost = Some(cost.as_secs_f64());
        }
        s
    }

    /// The current per-item cost estimate.
    pub fn item_cost(&self) -> Option<Duration> {
        self.cost.map(Duration::from_secs_f64)
    }

    /// Learns from a chunk of `items` that took `elapsed` end to end (acquire, fetch, apply,
    /// commit). Empty chunks teach nothing.
    pub fn observe(&mut self, items: usize, elapsed: Duration) {
        if items == 0 {
            return;
        }
        let sample = elapsed.as_secs_f64() / items as f64;
        self.cost = Some(match self.cost {
            None => sample,
            Some(old) => {
                let w = if sample > old {
                    RISING_WEIGHT
                } else {
                    FALLING_WEIGHT
                };
                old + w * (sample - old)
            }
        });
    }

    /// How many items the next chunk may hold, `elapsed` into the call, at `level`.
    ///
    /// - At [`Level::Critical`] no chunk starts ([`BatchPause::Pressure`]).
    /// - Otherwise the chunk is what fits the rest of the usable budget at the estimated
    ///   cost (or `initial_chunk` while the cost is unknown), at most `max_chunk`, and
    ///   multiplied by `warning_factor` at [`Level::Warning`].
    /// - If that is below `min_chunk` the call stops ([`BatchPause::Budget`]), except for
    ///   the first chunk of a call, which always runs with at least `min_chunk` items so
    ///   that every call makes progress.
    pub fn next(
        &self,
        plan: &BatchPlan,
        elapsed: Duration,
        level: Level,
        first_in_call: bool,
    ) -> ChunkDecision {
        if level == Level::Critical {
            return ChunkDecision::Stop(BatchPause::Pressure);
        }
        let left = plan.usable().saturating_sub(elapsed).as_secs_f64();
        let fits = match self.cost {
            None => plan.initial_chunk as f64,
            Some(cost) if cost > 0.0 => (left / cost).floor(),
            Some(_) => plan.max_chunk as f64,
        };
        let mut size = fits.min(plan.max_chunk as f64);
        if level == Level::Warning {
            size = (size * plan.warning_factor).floor();
        }
        let size = size as usize;
        if size >= plan.min_chunk {
            ChunkDecision::Run(size)
        } else if first_in_call {
            ChunkDecision::Run(plan.min_chunk)
        } else {
            ChunkDecision::Stop(BatchPause::Budget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn plan(budget_ms: u64) -> BatchPlan {
        BatchPlan {
            budget: ms(budget_ms),
            ..BatchPlan::default()
        }
    }

    #[test]
    fn ten_ms_items_and_one_second_left_give_eighty() {
        let s = ChunkSizer::with_cost(ms(10));
        assert_eq!(
            s.next(&plan(1000), Duration::ZERO, Level::Normal, false),
            ChunkDecision::Run(80)
        );
        // The seed's case: 10 s platform limit, 10 ms per item.
        assert_eq!(
            s.next(&plan(10_000), Duration::ZERO, Level::Normal, true),
            ChunkDecision::Run(800)
        );
        // Half the usable budget spent: half the chunk.
        assert_eq!(
            s.next(&plan(10_000), ms(4000), Level::Normal, false),
            ChunkDecision::Run(400)
        );
    }

    #[test]
    fn unknown_cost_starts_with_the_initial_chunk() {
        let s = ChunkSizer::new();
        assert_eq!(s.item_cost(), None);
        assert_eq!(
            s.next(&plan(1000), Duration::ZERO, Level::Normal, true),
            ChunkDecision::Run(100)
        );
    }

    #[test]
    fn the_estimate_learns_and_a_spike_shrinks_the_next_chunk() {
        let p = plan(1000);
        let mut s = ChunkSizer::new();
        s.observe(100, ms(1000));
        assert_eq!(s.item_cost(), Some(ms(10)));
        let before = match s.next(&p, Duration::ZERO, Level::Normal, false) {
            ChunkDecision::Run(n) => n,
            other => panic!("{other:?}"),
        };
        // One chunk four times dearer: the estimate moves most of the way at once.
        s.observe(80, ms(3200));
        let cost = s.item_cost().unwrap().as_secs_f64();
        assert!((cost - 0.031).abs() < 1e-9, "{cost}");
        let after = match s.next(&p, Duration::ZERO, Level::Normal, false) {
            ChunkDecision::Run(n) => n,
            other => panic!("{other:?}"),
        };
        assert!(after < before / 3, "{before} -> {after}");
        // A cheap chunk brings it down only slowly.
        s.observe(100, ms(100));
        let cost = s.item_cost().unwrap().as_secs_f64();
        assert!(cost > 0.02, "{cost}");
        // Empty chunks change nothing.
        let kept = s;
        s.observe(0, ms(5000));
        assert_eq!(s, kept);
    }

    #[test]
    fn chunks_are_clamped_to_max_and_shrunk_at_warning() {
        let s = ChunkSizer::with_cost(Duration::from_micros(10));
        let p = plan(10_000);
        assert_eq!(
            s.next(&p, Duration::ZERO, Level::Normal, false),
            ChunkDecision::Run(1000)
        );
        assert_eq!(
            s.next(&p, Duration::ZERO, Level::Warning, false),
            ChunkDecision::Run(500)
        );
    }

    #[test]
    fn critical_stops_and_a_spent_budget_stops_except_first() {
        let s = ChunkSizer::with_cost(ms(10));
        let p = plan(1000);
        assert_eq!(
            s.next(&p, Duration::ZERO, Level::Critical, true),
            ChunkDecision::Stop(BatchPause::Pressure)
        );
        assert_eq!(
            s.next(&p, ms(795), Level::Normal, false),
            ChunkDecision::Stop(BatchPause::Budget)
        );
        assert_eq!(
            s.next(&p, ms(2000), Level::Normal, true),
            ChunkDecision::Run(1)
        );
    }
}
