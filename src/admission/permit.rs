//! The RAII slot: holding one means holding one of the pool's slots through the guard.

use super::owner::SlotOwner;
use crate::criticality::Criticality;
use crate::limit::UserKey;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One slot of the pool, held through the guard. Dropping it gives the slot back and hands
/// it to the next waiter, so a cancelled or failed request can never leak a slot.
#[derive(Debug)]
pub(crate) struct SlotPermit {
    /// Taken by the release (`release_at`, or the drop), which gives the slot back to it.
    owner: Option<Arc<dyn SlotOwner>>,
    class: Criticality,
    /// When the slot was granted: its hold time feeds the class's drain estimate.
    granted_at: Instant,
    /// Whether a connection was handed out on this slot: only then is its hold measured.
    handed_out: bool,
    /// The registry id of the connection handed out on this slot, when the registry
    /// recorded it (while a watchdog watches the guard).
    registry_id: Option<u64>,
}

impl SlotPermit {
    /// Wraps a slot of `class` already counted as held in the admission state, granted at
    /// `granted_at`.
    pub(crate) fn new(owner: Arc<dyn SlotOwner>, class: Criticality, granted_at: Instant) -> Self {
        Self {
            owner: Some(owner),
            class,
            granted_at,
            handed_out: false,
            registry_id: None,
        }
    }

    /// When the slot was granted.
    pub(crate) fn granted_at(&self) -> Instant {
        self.granted_at
    }

    /// Gives the slot back as of `now` (the holder's clock reading), its connection held for
    /// `held` (worked out by the holder from that reading): the release's change of the
    /// admission state runs at `now`, without a reading of its own.
    pub(crate) fn release_at(mut self, now: Instant, held: Duration) {
        if let Some(owner) = self.owner.take() {
            let held_for = self.handed_out.then_some(held);
            owner.release_slot(self.class, held_for, self.registry_id, Some(now));
        }
    }

    /// Notes the connection handed out on this slot at `now`, and records it in the guard's
    /// registry of held connections if the registry records (a watchdog watches the guard);
    /// returns its id then. The slot's release forgets it.
    pub(crate) fn register(
        &mut self,
        class: Criticality,
        route: Option<&Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Option<u64> {
        self.handed_out = true;
        self.registry_id = self.inner().register_held(class, route, user, now);
        self.registry_id
    }

    /// The guard that granted the slot.
    pub(crate) fn inner(&self) -> &Arc<dyn SlotOwner> {
        self.owner.as_ref().expect("held until the drop")
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        // Given back without `release_at`: a slot a connection was handed out on measures
        // its hold, with a clock reading of its own.
        if let Some(owner) = self.owner.take() {
            let now = self.handed_out.then(crate::clock::now);
            let held_for = now.map(|at| at.saturating_duration_since(self.granted_at));
            owner.release_slot(self.class, held_for, self.registry_id, now);
        }
    }
}
