//! One request's per-user check against the guard's limiter: the in-process one, or (feature
//! `redis`) the limits shared in Redis, whose refusal after a round trip the guard counts.

use super::inner::GuardInner;
use crate::criticality::Criticality;
use crate::limit::check::{LimitCheck, UserPermit};
use crate::limit::UserKey;
use crate::monitor::Level;
use std::sync::Arc;

/// Checks `key`'s limits for one request at `level`.
pub(crate) fn check_user(
    inner: &Arc<GuardInner>,
    key: &UserKey,
    level: Level,
    class: Criticality,
) -> LimitCheck {
    #[cfg(feature = "redis")]
    if let Some(shared) = inner.shared_limits.get() {
        let guard = inner.clone();
        return shared.check(key, level, class, move || {
            guard.count(class, crate::metrics::Outcome::RateLimited)
        });
    }
    LimitCheck::Ready(inner.limits.check(key, level, class).map(UserPermit::from))
}
