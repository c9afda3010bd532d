//! [`Slots`]: the pool's slots as the guard hands them out — the [`FastGate`] in front, the
//! [`AdmissionState`] behind its lock.

use super::gate::FastGate;
use super::state::{AdmissionSettings, AdmissionState};
use crate::criticality::Criticality;
use crate::monitor::LevelMachine;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The admission of one guard. A grant or a release that the gate can make alone costs one
/// atomic operation; every other change runs under the lock with the gate sealed, and opens
/// it again as far as the state it leaves allows.
#[derive(Debug)]
pub(crate) struct Slots {
    gate: Arc<FastGate>,
    state: Mutex<AdmissionState>,
}

impl Slots {
    /// Slots set up by `settings`, with the level decided by `machine` and the `Retry-After`
    /// jitter seeded by `seed`.
    pub(crate) fn new(settings: AdmissionSettings, machine: LevelMachine, seed: u64) -> Self {
        let gate = Arc::new(FastGate::default());
        let state = AdmissionState::new(settings, machine, seed, gate.clone());
        gate.publish(state.gate_settings(crate::clock::now()));
        Self {
            gate,
            state: Mutex::new(state),
        }
    }

    /// Grants a slot of `class` without the lock when nothing is wrong; `false` means the
    /// acquisition must be decided by [`change`](Self::change).
    #[inline]
    pub(crate) fn try_grant(&self, class: Criticality) -> bool {
        self.gate.try_grant(class)
    }

    /// Gives a slot of `class` back, held for `held` if a connection was handed out on it.
    /// `true` when that is all there was to do; `false` when the slot was taken off the
    /// count but must still be handed on: then call [`AdmissionState::after_release`] in a
    /// [`change`](Self::change).
    #[inline]
    pub(crate) fn release(&self, class: Criticality, held: Option<Duration>) -> bool {
        if !self.gate.release(class) {
            return false;
        }
        if let Some(held) = held {
            self.gate.holds.record(class, held);
        }
        true
    }

    /// Runs one change of the state under its lock, with the fast path sealed until the
    /// change is done.
    pub(crate) fn change<R>(&self, now: Instant, f: impl FnOnce(&mut AdmissionState) -> R) -> R {
        let mut state = self.lock();
        self.gate.seal();
        state.fold_fast_grants();
        let result = f(&mut state);
        self.gate.publish(state.gate_settings(now));
        result
    }

    /// Reads the state under its lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&AdmissionState) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
