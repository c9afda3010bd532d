//! Keeping what every request writes off the cache lines other cores write.
//!
//! When two cores write the same cache line, each write waits for the line to come over from
//! the other core: tens of nanoseconds next door, hundreds across sockets or core complexes,
//! and it grows with the cores that take part. Two tools keep the request path clear of it:
//!
//! - [`CachePadded`] gives a value cache lines of its own, so that a value one thread writes
//!   (a shard's lock, say) does not share a line with the next value another thread writes;
//! - [`Stripes`] keeps one copy of a value per stripe, and each thread writes the copy of its
//!   own stripe: counters that every request bumps are summed by their (rare) readers
//!   instead of being bumped in one place by every core.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `T` aligned and padded to 128 bytes: two 64-byte lines, since some processors fetch lines
/// in adjacent pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many stripes a [`Stripes`] has: a power of two, at least the cores of most hosts one
/// guard runs on. Threads beyond it share stripes, round robin.
const STRIPES: usize = 16;

/// Hands each thread its number, in the order threads first ask.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's number: 0 for the first thread that asked, 1 for the next, and so on.
/// Taken modulo a number of stripes (or shards), any that many threads that asked one after
/// another fall on different ones.
pub(crate) fn thread_number() -> usize {
    THREAD.with(|n| {
        if n.get() == usize::MAX {
            n.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        n.get()
    })
}

/// One `T` per stripe, each on lines of its own. A thread writes [`mine`](Self::mine); a
/// reader goes over [`all`](Self::all) and adds up.
#[derive(Debug, Default)]
pub(crate) struct Stripes<T>([CachePadded<T>; STRIPES]);

impl<T> Stripes<T> {
    /// The calling thread's copy.
    pub(crate) fn mine(&self) -> &T {
        &self.0[thread_number() % STRIPES]
    }

    /// Every copy.
    pub(crate) fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|padded| &padded.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn padded_values_start_on_lines_of_their_own() {
        let values: [CachePadded<AtomicU64>; 2] = Default::default();
        let first = &values[0] as *const _ as usize;
        let second = &values[1] as *const _ as usize;
        assert_eq!(first % 128, 0);
        assert_eq!(second - first, 128);
    }

    #[test]
    fn threads_write_their_own_stripe_and_readers_see_every_write() {
        let counts: Stripes<AtomicU64> = Stripes::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counts.mine().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total: u64 = counts.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4000);
        // The four threads took four different numbers. Unless the threads of tests running
        // beside this one took sixteen numbers between two of them, each wrote a stripe of
        // its own; at the very least they did not all write one.
        let written = counts
            .all()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count();
        assert!(written >= 2, "all writes landed in {written} stripe");
    }
}
