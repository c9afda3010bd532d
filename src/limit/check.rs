//! One request's per-user check, whichever limiter answers it: the in-process one, or
//! (feature `redis`) the limits shared in Redis, which may need a round trip.

use super::{InFlightPermit, UserKey};
use crate::criticality::Criticality;
use crate::guard::GuardInner;
use crate::monitor::Level;
use crate::rejection::Rejection;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Holds a user's in-flight slot until dropped, whichever limiter granted it.
#[derive(Debug)]
pub(crate) enum UserPermit {
    /// From the in-process limiter (or the shared limits' local fallback).
    Local(#[allow(dead_code)] InFlightPermit),
    /// From the limits shared in Redis.
    #[cfg(feature = "redis")]
    Shared(#[allow(dead_code)] super::redis::SharedPermit),
}

/// A check still waiting for Redis (bounded by its timeout).
pub(crate) type PendingCheck =
    Pin<Box<dyn Future<Output = Result<UserPermit, Rejection>> + Send + 'static>>;

/// The answer to a per-user check: now, or after a round trip.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum LimitCheck {
    /// Answered without waiting.
    Ready(Result<UserPermit, Rejection>),
    /// Needs a round trip; the future answers within the Redis timeout.
    Pending(PendingCheck),
}

/// Checks `key`'s limits for one request at `level`.
pub(crate) fn check_user(
    inner: &Arc<GuardInner>,
    key: &UserKey,
    level: Level,
    class: Criticality,
) -> LimitCheck {
    #[cfg(feature = "redis")]
    if let Some(shared) = inner.shared_limits.get() {
        return shared.check(inner, key, level, class);
    }
    LimitCheck::Ready(inner.limits.check(key, level, class).map(UserPermit::Local))
}
