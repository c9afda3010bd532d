//! [`GuardRef`]: one counted reference to a guard's state, what a [`Guard`](super::Guard)
//! holds.
//!
//! Every request clones a guard (into its context) and every slot holds one (to give itself
//! back), and drops them again: two writes each to the reference count. With one count for the
//! whole guard, every core writes the same cache line several times per request, and each write
//! waits for the line to come over from the core that wrote it last. A `GuardRef` is a count of
//! its own in front of the shared state: clones of one `Guard` share its `GuardRef`, and a
//! layer gives each thread a `GuardRef` of its own
//! ([`ThreadGuards`](crate::layer::ThreadGuards)), so the requests of one thread write a line
//! no other core writes. The state itself (`GuardInner`) lives as long as any `GuardRef`
//! does.

use super::inner::GuardInner;
use std::sync::Arc;

/// A counted reference to a guard's state, aligned to 128 bytes: in its `Arc` the counts have
/// their lines to themselves, and a `GuardRef` made right after another does not share them.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct GuardRef(Arc<GuardInner>);

impl GuardRef {
    /// A new reference, counted apart from every other, to `inner`.
    pub(crate) fn new(inner: Arc<GuardInner>) -> Arc<Self> {
        Arc::new(Self(inner))
    }

    /// The shared state, for what keeps it apart from any request (a watchdog, a weak
    /// reference of a background task).
    pub(crate) fn state(&self) -> &Arc<GuardInner> {
        &self.0
    }
}

impl std::ops::Deref for GuardRef {
    type Target = Arc<GuardInner>;

    fn deref(&self) -> &Arc<GuardInner> {
        &self.0
    }
}
