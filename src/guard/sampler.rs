//! The sampler task: reads `Pool::status()` for connections taken outside the guard, lets
//! the level step down once the dwell time has passed, keeps gauges fresh, emits request
//! summaries and runs limiter housekeeping.

use super::inner::WeakInner;
use std::time::Duration;

/// How often a requests summary event may be emitted.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// How often per-user limiter state is pruned.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Runs until the guard is dropped.
pub(crate) async fn run_sampler(guard: WeakInner) {
    let interval = match guard.upgrade() {
        Some(inner) => inner.config.sample_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_summary = crate::clock::now();
    let mut last_housekeeping = crate::clock::now();
    loop {
        ticker.tick().await;
        let Some(inner) = guard.upgrade() else {
            return;
        };
        let now = crate::clock::now();
        inner.sample();
        if now.duration_since(last_summary) >= SUMMARY_EVERY {
            inner.summarize(now.duration_since(last_summary));
            last_summary = now;
        }
        if now.duration_since(last_housekeeping) >= HOUSEKEEPING_EVERY {
            inner.housekeeping();
            last_housekeeping = now;
        }
    }
}
