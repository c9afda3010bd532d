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
    #[cfg(test)]
    READS.with(|reads| reads.set(reads.get() + 1));
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
thread_local! {
    /// How many times this thread read the clock, for tests of what a path reads.
    static READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times the calling thread has read the clock through [`now`].
#[cfg(test)]
pub(crate) fn reads_on_this_thread() -> u64 {
    READS.with(std::cell::Cell::get)
}
