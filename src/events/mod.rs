//! Self-heal events: one type for every action the guard takes, and the bounded bus that fans
//! them out without ever blocking a request.

mod batch;
mod bus;
mod kind;
mod message;
mod severity;
mod transitions;

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

pub use batch::BatchPause;
pub(crate) use batch::Count;
pub use bus::{EventBus, EventSubscriber};
#[allow(deprecated)]
pub use kind::BreakerState;
pub use kind::{
    ActionOutcome, BackendInfo, EventKind, NonCriticalGate, OutcomeCounts, ResizeReason,
};
pub use severity::Severity;
pub use transitions::BlockedPair;

/// One self-heal event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event stamped now.
    pub fn now(kind: EventKind) -> Self {
        Self {
            at: SystemTime::now(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Level;

    /// A `LevelChanged` event at 92% utilization (92 of 100 in use, nobody waiting).
    pub(super) fn level(from: Level, to: Level) -> Event {
        Event::now(EventKind::LevelChanged {
            from,
            to,
            utilization: 0.92,
            in_use: 92,
            max_size: 100,
            waiting: 0,
        })
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let json = serde_json::to_value(level(Level::Normal, Level::Warning)).unwrap();
        assert_eq!(json["kind"], "level_changed");
        assert_eq!(json["to"], "warning");
    }
}
