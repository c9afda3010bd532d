//! The RAII slot: holding one means holding one of the pool's slots through the guard.

use crate::guard::GuardInner;
use std::sync::Arc;

/// One slot of the pool, held through the guard. Dropping it gives the slot back and hands
/// it to the next waiter, so a cancelled or failed request can never leak a slot.
#[derive(Debug)]
pub(crate) struct SlotPermit {
    inner: Arc<GuardInner>,
}

impl SlotPermit {
    /// Wraps a slot already counted as held in the admission state.
    pub(crate) fn new(inner: Arc<GuardInner>) -> Self {
        Self { inner }
    }

    pub(crate) fn inner(&self) -> &Arc<GuardInner> {
        &self.inner
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.inner.release_slot();
    }
}
