//! The RAII slot: holding one means holding one of the pool's slots through the guard.

use crate::criticality::Criticality;
use crate::guard::GuardInner;
use crate::limit::UserKey;
use std::sync::Arc;
use std::time::Instant;

/// One slot of the pool, held through the guard. Dropping it gives the slot back and hands
/// it to the next waiter, so a cancelled or failed request can never leak a slot.
#[derive(Debug)]
pub(crate) struct SlotPermit {
    inner: Arc<GuardInner>,
    class: Criticality,
    /// When the slot was granted: its hold time feeds the class's drain estimate.
    granted_at: Instant,
    /// The registry id of the connection handed out on this slot, once there is one.
    held: Option<u64>,
}

impl SlotPermit {
    /// Wraps a slot of `class` already counted as held in the admission state.
    pub(crate) fn new(inner: Arc<GuardInner>, class: Criticality) -> Self {
        Self {
            inner,
            class,
            granted_at: Instant::now(),
            held: None,
        }
    }

    /// Records the connection handed out on this slot in the guard's registry of held
    /// connections; returns its id. The slot's release forgets it.
    pub(crate) fn register(
        &mut self,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
    ) -> u64 {
        let id = self.inner.register_held(class, route, user);
        self.held = Some(id);
        id
    }

    pub(crate) fn inner(&self) -> &Arc<GuardInner> {
        &self.inner
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let held_for = self.held.map(|_| self.granted_at.elapsed());
        self.inner.release_slot(self.class, held_for, self.held);
    }
}
