//! The one clock the guard reads: tokio's.
//!
//! Outside a test it is the monotonic clock ([`std::time::Instant::now`]). In a test that
//! pauses tokio's time (`#[tokio::test(start_paused = true)]`, then `tokio::time::advance`),
//! the level machine, the controller, every deadline, hold time and `Retry-After` run on that
//! virtual time, so a test of minutes of pressure takes milliseconds and no real sleep.

use std::time::Instant;

/// Now, by tokio's clock (virtual while a test has paused it).
#[inline]
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
