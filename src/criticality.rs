//! How important a request is to the application.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How important a route or an acquisition is.
///
/// The guard sheds [`NonCritical`](Criticality::NonCritical) work first, queues
/// [`Standard`](Criticality::Standard) work when the pool is nearly full, and always serves
/// [`Critical`](Criticality::Critical) work first, from slots kept in reserve for it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// Reports, analytics, exports: answered with 503 as soon as the pool is under pressure.
    NonCritical,
    /// Everything not marked otherwise: served while there is room, queued at the critical level.
    #[default]
    Standard,
    /// Sign-in, task assignment, payments: served first and may use the reserved slots.
    Critical,
}

impl Criticality {
    /// All classes, from least to most important.
    pub const ALL: [Criticality; 3] = [
        Criticality::NonCritical,
        Criticality::Standard,
        Criticality::Critical,
    ];

    /// A stable lower-case name, used in metric labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::NonCritical => "non_critical",
            Criticality::Standard => "standard",
            Criticality::Critical => "critical",
        }
    }

    /// Position in [`Criticality::ALL`], for arrays indexed by class.
    pub(crate) const fn index(self) -> usize {
        match self {
            Criticality::NonCritical => 0,
            Criticality::Standard => 1,
            Criticality::Critical => 2,
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
