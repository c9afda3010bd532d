//! The answer to one request's per-user check, whichever limiter gives it: the in-process
//! one, or (feature `redis`) the limits shared in Redis, which may need a round trip. The
//! guard picks the limiter (`guard/user_check.rs`).

use super::InFlightPermit;
use crate::rejection::Rejection;
use std::future::Future;
use std::pin::Pin;

/// Holds a user's in-flight slot until dropped, whichever limiter granted it.
#[derive(Debug)]
pub(crate) enum UserPermit {
    /// From the in-process limiter (or the shared limits' local fallback). Never read: held
    /// for the slot it keeps.
    Local { _permit: InFlightPermit },
    /// From the limits shared in Redis. Boxed: it holds the key and the member's name, and
    /// every request's future moves the room of the largest variant.
    #[cfg(feature = "redis")]
    Shared {
        _permit: Box<super::redis::SharedPermit>,
    },
}

impl From<InFlightPermit> for UserPermit {
    fn from(permit: InFlightPermit) -> Self {
        UserPermit::Local { _permit: permit }
    }
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
