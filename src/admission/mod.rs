//! Admission: the priority queue over the pool's slots, and the connection it hands out.
//!
//! Critical acquisitions may use every slot and are served first; the last
//! [`critical_reserve`](crate::GuardConfig::critical_reserve) slots are theirs alone. Standard
//! acquisitions wait in a bounded queue, fair between users, and are drained in order as
//! slots free up. Non-critical ones are served only at [`Level::Normal`](crate::Level::Normal).

mod abandon;
mod conn;
mod held;
mod permit;
mod queue;
mod state;
mod tracker;
mod transaction;

pub use conn::GuardedConn;
pub(crate) use held::Leak;
pub(crate) use permit::SlotPermit;
pub(crate) use state::{AdmissionState, Admit, Effects};
pub use transaction::GuardedTransaction;
