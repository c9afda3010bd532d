//! Admission: the priority queue over the pool's slots, and the connection it hands out.
//!
//! Critical acquisitions may use every slot and are served first; the last
//! [`critical_reserve`](crate::GuardConfig::critical_reserve) slots are theirs alone. Standard
//! acquisitions may use every slot but the reserve and wait in a bounded queue, fair between
//! users, drained in order as slots free up. Non-critical ones get the slots that keep the pool
//! under the warning line; above Normal, or when those are taken, they are deferred in the
//! lowest queue and started as slots free. Every waiter has a deadline: one whose expected
//! start lies past it is refused at once, and none is started after it.

mod abandon;
mod arrivals;
mod conn;
mod gate;
mod held;
mod hold;
mod outlook;
mod owner;
mod permit;
mod queue;
mod slots;
mod state;
mod tracked;
mod tracker;
mod transaction;

pub use conn::GuardedConn;
pub(crate) use held::{HeldRegistry, Leak};
pub(crate) use owner::SlotOwner;
pub(crate) use permit::SlotPermit;
pub(crate) use slots::Slots;
pub(crate) use state::{AdmissionSettings, AdmissionState, Admit, Effects};
pub use transaction::GuardedTransaction;
