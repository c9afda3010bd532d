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
//!
//! # Stripes a thread has alone
//!
//! A thread that counts for the first time claims one of [`OWNED`] stripe numbers that no other
//! live thread holds, for as long as it lives (its thread-local gives the number back when the
//! thread exits). A thread that has its stripe alone is the only writer of that copy's
//! counters, so it bumps them with a plain read and write instead of a locked read-modify-write
//! ([`Mine::add`]). When every number is taken, a thread writes one of [`SHARED`] more stripes,
//! spread by its number in the order threads first ask, and adds atomically there: a host with
//! more threads than owned stripes spreads the rest over as many stripes again. Readers only
//! load: no count is ever taken back by a reader's write, so no write is lost.
//!
//! The number's hand-over orders the counts: a thread's last plain write comes before its
//! release of the number (`Release`), which comes before the next owner's claim
//! (`Acquire`), so the next owner goes on from the last value.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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

/// How many threads can each have a stripe alone: at least the cores of most hosts one guard
/// runs on.
const OWNED: usize = 16;

/// The stripes after the owned ones, written atomically by threads that found every owned
/// stripe taken (and by any thread while its locals are torn down).
const SHARED: usize = 16;

/// How many stripes there are: [`stripe_number`] is always below this.
pub(crate) const STRIPES: usize = OWNED + SHARED;

/// `CLAIMED[i]`: a live thread has stripe `i` alone.
static CLAIMED: [AtomicBool; OWNED] = [const { AtomicBool::new(false) }; OWNED];

/// Where the next claim starts looking, so that threads spread over the numbers.
static NEXT_CLAIM: AtomicUsize = AtomicUsize::new(0);

/// A thread's stripe number, given back when the thread exits.
struct Claim(usize);

impl Claim {
    /// The first number no live thread holds, or a shared stripe.
    fn take() -> Self {
        let start = NEXT_CLAIM.fetch_add(1, Ordering::Relaxed);
        (0..OWNED)
            .map(|i| (start + i) % OWNED)
            .find(|&i| {
                CLAIMED[i]
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .map_or_else(|| Claim(shared_stripe()), Claim)
    }
}

/// The calling thread's shared stripe.
fn shared_stripe() -> usize {
    OWNED + thread_number() % SHARED
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(claimed) = CLAIMED.get(self.0) {
            claimed.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static CLAIM: Claim = Claim::take();
}

/// The calling thread's stripe number, below 32: one it has alone (below [`OWNED`]), or a
/// shared one (also while the thread's locals are being torn down). Tables sharded by thread
/// take it too: no other live thread has the number while no more threads count than there
/// are owned stripes.
pub(crate) fn stripe_number() -> usize {
    CLAIM.try_with(|claim| claim.0).unwrap_or(OWNED)
}

/// Hands each thread its number, in the order threads first ask.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's number: 0 for the first thread that asked, 1 for the next, and so on.
/// Taken modulo the shared stripes, any that many threads that asked one after another fall
/// on different ones.
fn thread_number() -> usize {
    THREAD.with(|n| {
        if n.get() == usize::MAX {
            n.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        }
        n.get()
    })
}

/// One `T` per stripe, each on lines of its own. A thread writes [`mine`](Self::mine); a
/// reader adds the copies up with [`sum`](Self::sum), which only loads.
#[derive(Debug, Default)]
pub(crate) struct Stripes<T>([CachePadded<T>; STRIPES]);

/// The calling thread's copy of a [`Stripes`], and whether the thread is its only writer.
pub(crate) struct Mine<'a, T> {
    value: &'a T,
    alone: bool,
}

impl<T> Stripes<T> {
    /// The calling thread's copy.
    pub(crate) fn mine(&self) -> Mine<'_, T> {
        let stripe = stripe_number();
        Mine {
            value: &self.0[stripe].0,
            alone: stripe < OWNED,
        }
    }

    /// Every copy.
    fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|padded| &padded.0)
    }

    /// The counters `pick` chooses from each copy, added up over the copies, counter by
    /// counter: what readers of striped counts read (loads only).
    pub(crate) fn sum<const N: usize>(&self, pick: impl Fn(&T) -> &[AtomicU64; N]) -> [u64; N] {
        let mut total = [0u64; N];
        for copy in self.all() {
            for (sum, n) in total.iter_mut().zip(pick(copy)) {
                *sum = sum.wrapping_add(n.load(Ordering::Relaxed));
            }
        }
        total
    }
}

impl<'a, T> Mine<'a, T> {
    /// Adds `n` to the counter `counter` picks from this copy: a plain read and write when
    /// the thread has the stripe alone, one atomic add when it shares it.
    #[inline]
    pub(crate) fn add(&self, counter: impl FnOnce(&'a T) -> &'a AtomicU64, n: u64) {
        let counter = counter(self.value);
        if self.alone {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                        counts.mine().add(|c| c, 1);
                    }
                });
            }
        });
        let total: u64 = counts.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4000);
        // Four live threads at once: unless the threads of the tests running beside this one
        // held every other number, each had a stripe of its own; at the very least they did
        // not all write one.
        let written = counts
            .all()
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count();
        assert!(written >= 2, "all writes landed in {written} stripe");
    }

    #[test]
    fn more_threads_than_stripes_and_threads_that_come_and_go_lose_no_count() {
        // Three waves of 40 threads that hold their stripes at once (more than there are owned
        // stripes, so some share), each thread exiting before the next wave claims the
        // numbers again: every add is there once, and the threads that share were spread
        // over the shared stripes.
        let counts: Stripes<AtomicU64> = Stripes::default();
        for _ in 0..3 {
            let all_started = std::sync::Barrier::new(40);
            std::thread::scope(|scope| {
                for _ in 0..40 {
                    scope.spawn(|| {
                        // Claims the thread's stripe before any thread of the wave exits.
                        stripe_number();
                        all_started.wait();
                        for _ in 0..5000 {
                            counts.mine().add(|c| c, 1);
                        }
                    });
                }
            });
        }
        let total: u64 = counts.all().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 3 * 40 * 5000);
        let shared_written = counts
            .all()
            .skip(OWNED)
            .filter(|c| c.load(Ordering::Relaxed) > 0)
            .count();
        assert!(
            shared_written > 1,
            "40 threads at once: those that share wrote {shared_written} shared stripe"
        );
    }

    #[test]
    fn a_number_is_held_by_one_live_thread_at_a_time() {
        // 16 threads at once each hold a number, and 40 claims more are held at once (more
        // claims than numbers, as live threads beyond 16 would hold): no owned number is
        // held twice, and the claims beyond the free numbers go to shared stripes. Claims
        // start looking one number further each time, so only the exclusive claim keeps
        // the 17th from landing on a number held already.
        let all_claimed = std::sync::Barrier::new(OWNED + 1);
        let stripes: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..OWNED)
                .map(|_| {
                    scope.spawn(|| {
                        let stripe = stripe_number();
                        all_claimed.wait();
                        // Held until the claims below are counted.
                        all_claimed.wait();
                        stripe
                    })
                })
                .collect();
            all_claimed.wait();
            let claims: Vec<Claim> = (0..40).map(|_| Claim::take()).collect();
            let held: Vec<usize> = claims.iter().map(|claim| claim.0).collect();
            all_claimed.wait();
            let mut threads: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            threads.extend(held);
            threads
        });
        assert!(
            stripes.iter().any(|&s| s >= OWNED),
            "56 claims at once: some went to a shared stripe"
        );
        let owned: Vec<_> = stripes.iter().filter(|&&s| s < OWNED).collect();
        let mut distinct = owned.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            owned.len(),
            "a number held twice: {stripes:?}"
        );
    }
}
