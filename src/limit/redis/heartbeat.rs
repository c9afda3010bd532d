//! The background task of shared limits: a heartbeat per interval (which also probes Redis
//! while it is unavailable) and housekeeping of the local state.

use super::RedisLimiter;
use std::sync::Weak;
use std::time::Duration;

/// How often local state is swept.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Runs until the limiter is gone (its guard and every handle dropped).
pub(super) async fn run(limiter: Weak<RedisLimiter>) {
    let Some(interval) = limiter.upgrade().map(|l| l.config.heartbeat_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sweep_every = (HOUSEKEEPING_EVERY.as_millis() / interval.as_millis().max(1)).max(1);
    let mut n: u128 = 0;
    loop {
        ticks.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        let bound = limiter
            .config
            .heartbeat_interval
            .max(limiter.config.timeout);
        limiter.beat(bound).await;
        n += 1;
        if n % sweep_every == 0 {
            limiter.housekeeping();
        }
    }
}
