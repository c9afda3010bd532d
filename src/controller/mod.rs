//! The overload controller: pure cores that decide how many slots each class may use, when a
//! waiter can expect to start, whether that lies past its deadline, and when a refused caller
//! should come back.
//!
//! Nothing here locks, sleeps or reads a clock: every function takes `now` (or the durations
//! it needs), so the admission state that uses them is a plain state machine, tested without
//! I/O and usable as the model a faster admission path is checked against.
//!
//! - [`ClassCapacity`]: the critical reserve stays critical-only; non-critical work gets the
//!   slots that keep the pool under the warning line, less what critical and standard work
//!   use, never the last slots.
//! - [`DrainEstimate`]: the measured hold time of a class, and from it the class's drain rate
//!   and a waiter's expected start.
//! - [`StartRamp`]: after non-critical work was stopped (Critical), its share of slots grows
//!   back at a controlled rate instead of all at once.
//! - [`RetryJitter`]: the bounded jitter added to an estimate before it becomes
//!   `Retry-After`, so refused clients do not return together.

mod capacity;
mod drain;
mod jitter;
mod ramp;

pub use capacity::ClassCapacity;
pub use drain::DrainEstimate;
pub use jitter::RetryJitter;
pub use ramp::StartRamp;
