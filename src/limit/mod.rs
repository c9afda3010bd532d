//! Per-user limits: who a request belongs to, and how much that user may do.

pub(crate) mod check;
mod check_clock;
mod key;
#[cfg(feature = "redis")]
pub mod redis;
mod user;

pub use key::{DefaultKeyExtractor, KeyExtractor, UserKey};
pub(crate) use user::{InFlightPermit, UserLimiter};
