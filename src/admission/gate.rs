//! [`FastGate`]: the lock-free front of admission. While nothing is wrong (the level is
//! Normal, no one waits, and one more slot keeps the pool under the warning line) a slot is
//! granted and given back with one atomic operation each. At Warning, while no one waits and
//! the use is at or above the recovery line, a slot is still granted with one atomic
//! operation below the critical line, and given back with one while the use it leaves stays
//! at or above the recovery line. Everything else goes to the admission state behind its
//! lock.
//!
//! # The protocol
//!
//! One 64-bit word holds the slots held through the guard by each class (16 bits each), the
//! *ceiling* (how many slots the guard may hold before a grant must be decided under the
//! lock, 13 bits), and three flags: *open* (the level is Normal and no one waits, so a
//! release has nothing to hand on), *grants only* (the level machine is steady at Warning: no
//! one waits, no calm is timed and the use is at or above the recovery line, so a grant below
//! the ceiling changes nothing the state would act on, but a release may start a calm) and
//! *non-critical allowed* (no start ramp runs and the server has room for a report; only
//! with *open*).
//!
//! - A fast grant is one compare-and-swap that adds a slot to its class's count while the
//!   word is open or grants only, and the total stays within the ceiling. A grant made while
//!   the word grants only also raises the gate's peak since the last change, which the next
//!   change folds into the episode's peak, as the state would have at the grant.
//! - A release subtracts its slot in one `fetch_sub`. If the word it replaced was open, the
//!   release is done. If it granted only, the release is done while the slots it leaves are
//!   at least the *release floor* the last change published beside the word (the fewest at
//!   which the level machine stays steady at Warning: a lower use could start its calm).
//!   Otherwise it takes the lock to hand the slot on, or to let the level machine see the
//!   use fall. A floor read from a later change than the flags the release saw is as good:
//!   that change sealed the word after the release and counted the slots it left.
//! - Every change under the lock first *seals* the word (clears the flags and the ceiling,
//!   so no fast grant can succeed until it is done; counts can then only fall), decides on
//!   the counts as they are, and *publishes* the flags and ceiling of the state it leaves.
//!   While someone waits the word stays closed from one change to the next, and neither
//!   step writes it: the changes that hand slots on cost no atomic operation here.
//!
//! So a fast grant never overtakes a waiter (a waiter exists only under a sealed or closed
//! word) and never crosses a line the admission state would have acted on: the ceiling is
//! the largest use at which the state would grant every class with no other effect. The
//! admission state is the model: it makes every decision the gate does not, and a property
//! test checks that the two give the same decisions.

use super::hold::HoldTimes;
use crate::criticality::Criticality;
use crate::stripes::Stripes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bits of one class's count.
const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Where the ceiling starts, and its width.
const CEILING_SHIFT: u32 = 48;
const CEILING_BITS: u32 = 13;
/// The highest ceiling the word can hold: a larger pool is served by the lock above it.
pub(crate) const MAX_CEILING: usize = (1 << CEILING_BITS) - 1;
const CEILING_MASK: u64 = (MAX_CEILING as u64) << CEILING_SHIFT;
/// Set while grants, and not releases, may take the fast path (the level is Warning).
const GRANTS_ONLY: u64 = 1 << 61;
/// Set while non-critical work may be granted on the fast path.
const NON_CRITICAL_OK: u64 = 1 << 62;
/// Set while the level is Normal and no one waits.
const OPEN: u64 = 1 << 63;
/// Everything a change under the lock clears and publishes again.
const PUBLISHED: u64 = OPEN | NON_CRITICAL_OK | GRANTS_ONLY | CEILING_MASK;

/// The most slots one class may hold: the count's width.
pub(crate) const MAX_COUNT: usize = COUNT_MASK as usize;

/// What the gate allows until the next change under the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GateSettings {
    /// The level is Normal and no one waits.
    pub(crate) open: bool,
    /// Not open, but the level machine is steady at Warning (no one waits, no calm is timed,
    /// the use is at or above the recovery line): grants within the ceiling take the fast
    /// path, releases the lock.
    pub(crate) grants_only: bool,
    /// Non-critical work may take the fast path (no ramp, the server has room).
    pub(crate) non_critical: bool,
    /// The most slots the guard may hold after a fast grant.
    pub(crate) ceiling: usize,
    /// With `grants_only`: the fewest slots the guard may hold after a release without the
    /// lock (below it, the level machine must see the use fall).
    pub(crate) release_floor: usize,
}

impl GateSettings {
    /// Neither open nor granting only: every grant and release goes to the lock (someone
    /// waits, or the level machine must see every change).
    pub(crate) const CLOSED: GateSettings = GateSettings {
        open: false,
        grants_only: false,
        non_critical: false,
        ceiling: 0,
        release_floor: usize::MAX,
    };
}

/// The lock-free counts and flags; see the module docs for the protocol.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct FastGate {
    word: AtomicU64,
    /// Grants made on the fast path since the start, counted in each thread's stripe: off
    /// the word's line, which every grant and release on every core writes anyway.
    fast_grants: Stripes<AtomicU64>,
    /// The most slots held right after a fast grant since the start.
    peak: AtomicUsize,
    /// The most slots held right after a fast grant made while the word granted only, since
    /// the last change took it (0: none).
    peak_since_change: AtomicUsize,
    /// The release floor of the last change's settings, stored before the flags it goes
    /// with, so a release that saw the flags sees it (or a later change's).
    release_floor: AtomicUsize,
    /// The measured hold times, fed by every release.
    pub(crate) holds: HoldTimes,
}

fn unit(class: Criticality) -> u64 {
    1 << (COUNT_BITS * class.index() as u32)
}

fn count_of(word: u64, class: Criticality) -> usize {
    ((word >> (COUNT_BITS * class.index() as u32)) & COUNT_MASK) as usize
}

fn total_of(word: u64) -> usize {
    Criticality::ALL.iter().map(|c| count_of(word, *c)).sum()
}

impl FastGate {
    /// Grants one slot of `class` without the lock if the word allows it.
    #[inline]
    pub(crate) fn try_grant(&self, class: Criticality) -> bool {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let ceiling = ((current & CEILING_MASK) >> CEILING_SHIFT) as usize;
            let allowed = current & (OPEN | GRANTS_ONLY) != 0
                && (class != Criticality::NonCritical || current & NON_CRITICAL_OK != 0);
            let total = total_of(current);
            if !allowed || total >= ceiling {
                return false;
            }
            match self.word.compare_exchange_weak(
                current,
                current + unit(class),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.fast_grants.mine().add(|grants| grants, 1);
                    if total + 1 > self.peak.load(Ordering::Relaxed) {
                        self.peak.fetch_max(total + 1, Ordering::Relaxed);
                    }
                    if current & GRANTS_ONLY != 0 {
                        self.peak_since_change
                            .fetch_max(total + 1, Ordering::AcqRel);
                    }
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives one slot of `class` back. Returns `true` when the release is complete; `false`
    /// when the slot must be handed on under the lock, or the use it leaves seen there.
    #[inline]
    pub(crate) fn release(&self, class: Criticality) -> bool {
        let before = self.word.fetch_sub(unit(class), Ordering::AcqRel);
        debug_assert!(count_of(before, class) > 0, "a slot released twice");
        if before & OPEN != 0 {
            return true;
        }
        // The floor was stored before the flags this release saw were published.
        before & GRANTS_ONLY != 0 && total_of(before) > self.release_floor.load(Ordering::Relaxed)
    }

    /// Adds a slot of `class` granted under the lock (the word is sealed then).
    pub(crate) fn add(&self, class: Criticality) {
        debug_assert!(self.count(class) < MAX_COUNT);
        self.word.fetch_add(unit(class), Ordering::AcqRel);
    }

    /// Slots of `class` held through the guard.
    pub(crate) fn count(&self, class: Criticality) -> usize {
        count_of(self.word.load(Ordering::Acquire), class)
    }

    /// Slots held through the guard by each class (by `Criticality::index`), read at one
    /// instant.
    pub(crate) fn counts(&self) -> [usize; 3] {
        let word = self.word.load(Ordering::Acquire);
        Criticality::ALL.map(|c| count_of(word, c))
    }

    /// Slots held through the guard, all classes, read at one instant.
    pub(crate) fn total(&self) -> usize {
        total_of(self.word.load(Ordering::Acquire))
    }

    /// Closes the fast path until [`publish`](Self::publish): no fast grant succeeds, and
    /// every release goes to the lock. Called under the lock, so a word found closed stays
    /// closed: only the lock's holder publishes, and then it is not written (most changes
    /// while someone waits find it so).
    pub(crate) fn seal(&self) {
        if self.word.load(Ordering::Acquire) & PUBLISHED != 0 {
            self.word.fetch_and(!PUBLISHED, Ordering::AcqRel);
        }
    }

    /// Opens the sealed fast path as far as `settings` allow. Settings that neither open it
    /// nor grant only leave it sealed, and the word is not written: its ceiling is read only
    /// with one of those flags.
    pub(crate) fn publish(&self, settings: GateSettings) {
        debug_assert_eq!(
            self.word.load(Ordering::Relaxed) & PUBLISHED,
            0,
            "published on a word that was not sealed"
        );
        let flags = if settings.open {
            OPEN | if settings.non_critical {
                NON_CRITICAL_OK
            } else {
                0
            }
        } else if settings.grants_only {
            GRANTS_ONLY
        } else {
            return;
        };
        let ceiling = ((settings.ceiling.min(MAX_CEILING) as u64) << CEILING_SHIFT) & CEILING_MASK;
        let bits = flags | ceiling;
        // Before the flags: the compare-and-swap below publishes it with them.
        self.release_floor
            .store(settings.release_floor, Ordering::Relaxed);
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            match self.word.compare_exchange_weak(
                current,
                current | bits,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Grants made on the fast path since the start.
    pub(crate) fn fast_grants(&self) -> u64 {
        let [grants] = self.fast_grants.sum(std::array::from_ref);
        grants
    }

    /// The most slots held right after a fast grant since the start.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Takes the most slots held right after a fast grant made while the word granted only,
    /// since the last take: `None` when there was no such grant.
    pub(crate) fn take_peak_since_change(&self) -> Option<usize> {
        // Every change asks, and most find none: a load, not a swap, for those.
        if self.peak_since_change.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.peak_since_change.swap(0, Ordering::AcqRel)).filter(|&peak| peak > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ceiling: usize) -> GateSettings {
        GateSettings {
            open: true,
            grants_only: false,
            non_critical: true,
            ceiling,
            release_floor: 0,
        }
    }

    #[test]
    fn grants_up_to_the_ceiling_then_defers_to_the_lock() {
        let g = FastGate::default();
        assert!(!g.try_grant(Criticality::Critical), "a new gate is closed");
        g.publish(open(3));
        assert!(g.try_grant(Criticality::Critical));
        assert!(g.try_grant(Criticality::Standard));
        assert!(g.try_grant(Criticality::NonCritical));
        assert!(!g.try_grant(Criticality::Critical));
        assert_eq!(g.count(Criticality::Standard), 1);
        assert_eq!((g.fast_grants(), g.peak()), (3, 3));
        assert!(g.release(Criticality::Standard));
        assert!(g.try_grant(Criticality::Standard));
    }

    #[test]
    fn a_sealed_gate_grants_nothing_and_sends_releases_to_the_lock() {
        let g = FastGate::default();
        g.publish(open(10));
        assert!(g.try_grant(Criticality::Standard));
        g.seal();
        assert!(!g.try_grant(Criticality::Critical));
        g.add(Criticality::Critical);
        assert!(!g.release(Criticality::Standard));
        assert_eq!(g.count(Criticality::Critical), 1);
        assert_eq!(g.count(Criticality::Standard), 0);
        // Publishing keeps the counts.
        g.publish(open(10));
        assert_eq!(g.count(Criticality::Critical), 1);
        assert!(g.release(Criticality::Critical));
    }

    #[test]
    fn grants_only_grants_within_the_ceiling_and_releases_down_to_the_floor() {
        let g = FastGate::default();
        g.publish(GateSettings {
            open: false,
            grants_only: true,
            non_critical: true,
            ceiling: 2,
            release_floor: 1,
        });
        assert!(
            !g.try_grant(Criticality::NonCritical),
            "non-critical work waits"
        );
        assert!(g.try_grant(Criticality::Standard));
        assert!(g.try_grant(Criticality::Critical));
        assert!(!g.try_grant(Criticality::Critical), "the ceiling holds");
        assert!(
            g.release(Criticality::Standard),
            "a release that leaves the floor held is done"
        );
        assert!(
            !g.release(Criticality::Critical),
            "one that leaves less goes to the lock"
        );
        assert_eq!(g.total(), 0, "its slot is off the count all the same");
        // The peak of those grants, once.
        assert_eq!(g.take_peak_since_change(), Some(2));
        assert_eq!(g.take_peak_since_change(), None);
        // Grants on the open word are no episode's: they leave that peak alone.
        g.seal();
        g.publish(open(5));
        assert!(g.try_grant(Criticality::Standard));
        assert_eq!(g.take_peak_since_change(), None);
        assert_eq!(g.peak(), 2);
    }

    #[test]
    fn non_critical_needs_its_own_flag() {
        let g = FastGate::default();
        g.publish(GateSettings {
            open: true,
            grants_only: false,
            non_critical: false,
            ceiling: 10,
            release_floor: 0,
        });
        assert!(!g.try_grant(Criticality::NonCritical));
        assert!(g.try_grant(Criticality::Standard));
        // Not open: nothing, whatever the ceiling.
        g.seal();
        g.publish(GateSettings {
            open: false,
            grants_only: false,
            non_critical: true,
            ceiling: 10,
            release_floor: 0,
        });
        assert!(!g.try_grant(Criticality::Critical));
    }

    #[test]
    fn racing_threads_never_exceed_the_ceiling() {
        let g = std::sync::Arc::new(FastGate::default());
        g.publish(open(5));
        let peak = std::sync::Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (g, peak) = (g.clone(), peak.clone());
                std::thread::spawn(move || {
                    let class = Criticality::ALL[i % 3];
                    for _ in 0..20_000 {
                        if g.try_grant(class) {
                            peak.fetch_max(g.total(), Ordering::Relaxed);
                            assert!(g.release(class));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 5);
        assert_eq!(Criticality::ALL.map(|c| g.count(c)), [0, 0, 0]);
    }
}
