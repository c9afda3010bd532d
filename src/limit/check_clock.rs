//! [`CheckClock`]: the clock the per-user limiter's rate cells (governor's) read, which is
//! the one reading the limiter made for the check in progress on the calling thread.
//!
//! A governor cell reads its clock on every check, and on its creation. A request at Warning
//! or above checks two cells (the normal rate and the tight one), and the limiter reads the
//! clock itself for when the cells were last used: three readings of the same moment. With
//! this clock the limiter reads the time once ([`CheckClock::set`]) and every cell it checks
//! in that call sees that reading, so both cells decide at the same instant.
//!
//! The reading is kept per thread. The limiter sets it where every call finds the user's
//! entry, before any cell is made or checked, and does all of that call's work on the same
//! thread, without awaiting in between (its calls are synchronous), so a cell never sees
//! another call's reading, nor another limiter's (each guard has its own, with its own
//! start). A thread that never set a reading reads 0, the limiter's start; no cell is
//! checked or made there before one is set.

use governor::clock::Clock;
use governor::nanos::Nanos;
use std::cell::Cell;

thread_local! {
    /// The reading of the limiter's check in progress on this thread, in nanoseconds since
    /// the limiter's start.
    static READING: Cell<u64> = const { Cell::new(0) };
}

/// A governor clock whose now is the reading the limiter set last on the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CheckClock;

impl CheckClock {
    /// Makes `reading` (nanoseconds since the limiter's start) what the cells checked or made
    /// next on this thread see as now.
    pub(crate) fn set(reading: Nanos) {
        READING.with(|r| r.set(reading.as_u64()));
    }
}

impl Clock for CheckClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        READING.with(Cell::get).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_cell_sees_the_reading_set_on_its_thread_and_no_other() {
        CheckClock::set(Duration::from_secs(5).into());
        assert_eq!(CheckClock.now(), Nanos::from(Duration::from_secs(5)));
        std::thread::spawn(|| {
            // Another thread's reading is its own: none set there yet.
            assert_eq!(CheckClock.now(), Nanos::from(0));
            CheckClock::set(Duration::from_secs(9).into());
        })
        .join()
        .unwrap();
        assert_eq!(CheckClock.now(), Nanos::from(Duration::from_secs(5)));
    }
}
