//! Per-user limits: who a request belongs to, and how much that user may do.

mod key;
mod user;

pub use key::{DefaultKeyExtractor, KeyExtractor, UserKey};
pub(crate) use user::{InFlightPermit, UserLimiter};
