//! What events say about guarded status transitions ([`crate::transition`]): the blocked
//! pairs, and the summary line of a blocked-transitions event.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Blocked attempts for one `from -> to` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedPair {
    /// The status the rows had.
    pub from: String,
    /// The status they were refused.
    pub to: String,
    /// How many attempts were blocked.
    pub count: u64,
}

impl fmt::Display for BlockedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.count)
    }
}

/// The summary line of a [`EventKind::TransitionsBlocked`] event.
pub(crate) fn blocked_message(
    operation: &str,
    valid: u64,
    blocked: &[BlockedPair],
    not_found: u64,
) -> String {
    let total: u64 = blocked.iter().map(|p| p.count).sum();
    let pairs: Vec<String> = blocked.iter().map(BlockedPair::to_string).collect();
    let mut msg = format!(
        "Prevented {total} invalid status transitions in {operation}: {}; {valid} valid",
        pairs.join(", ")
    );
    if not_found > 0 {
        msg.push_str(&format!(", {not_found} not found"));
    }
    msg
}
