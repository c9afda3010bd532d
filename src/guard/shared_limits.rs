//! [`Guard::share_limits`]: moving the guard's per-user limits into Redis.

use super::Guard;
use crate::config::BuildError;
use crate::limit::redis::{RedisLimiter, RedisLimits, SharedLimitStats, SharedLimits};

impl Guard {
    /// Moves this guard's per-user limits ([`UserLimits`](crate::config::UserLimits) of its config) into Redis, shared
    /// with every replica using the same [`RedisLimits::url`] and
    /// [`key_prefix`](RedisLimits::key_prefix); see [`crate::limit::redis`]. Waits up to a
    /// second for a first heartbeat (connecting); when Redis cannot be reached the guard starts on the
    /// local fallback (with an event) and switches over once it can. Fails when the
    /// settings are invalid or the limits are already shared.
    pub async fn share_limits(&self, config: RedisLimits) -> Result<SharedLimits, BuildError> {
        let inner = &self.inner;
        let limiter = RedisLimiter::new(config, inner.config.limits.clone(), inner.events.clone())?;
        inner
            .shared_limits
            .set(limiter.clone())
            .map_err(|_| BuildError::field("redis", "the limits are already shared"))?;
        limiter.start().await;
        Ok(SharedLimits::over(limiter))
    }

    /// The shared limits' figures, when [`share_limits`](Self::share_limits) was called.
    pub fn shared_limit_stats(&self) -> Option<SharedLimitStats> {
        self.inner.shared_limits.get().map(|l| l.stats())
    }
}
