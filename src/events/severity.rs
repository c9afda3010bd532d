//! [`Severity`] and how serious each kind of event is.

use super::batch::BatchPause;
use super::{ActionOutcome, Event, EventKind, NonCriticalGate, ResizeReason};
use crate::criticality::Criticality;
use crate::monitor::Level;
use serde::{Deserialize, Serialize};

/// How serious an event is, as the seed's alert levels define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Routine: the system is healthy or healed itself.
    Info,
    /// Degraded but handled: mitigation is active.
    Warning,
    /// Emergency measures are active; people should look.
    Critical,
    /// A self-heal action failed; someone must act.
    Failure,
}

impl Severity {
    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Failure => "failure",
        }
    }
}

impl Event {
    /// How serious it is.
    pub fn severity(&self) -> Severity {
        match &self.kind {
            EventKind::LevelChanged { to, from, .. } => match (to, from) {
                (Level::Critical, _) => Severity::Critical,
                (Level::Warning, Level::Normal) => Severity::Warning,
                _ => Severity::Info,
            },
            EventKind::NonCriticalGateChanged { state } => match state {
                NonCriticalGate::Deferred => Severity::Warning,
                _ => Severity::Info,
            },
            EventKind::RequestsSummary { counts, .. } => {
                if counts.shed[Criticality::Critical.index()] > 0
                    || counts.timed_out[Criticality::Critical.index()] > 0
                {
                    Severity::Critical
                } else if counts.is_quiet() {
                    Severity::Info
                } else {
                    Severity::Warning
                }
            }
            EventKind::StatementTimedOut { .. } => Severity::Warning,
            EventKind::QueryAbandoned { cancel_sent, .. } => {
                if *cancel_sent {
                    Severity::Info
                } else {
                    Severity::Failure
                }
            }
            EventKind::Recovered { .. } => Severity::Info,
            EventKind::TransitionsBlocked { .. } => Severity::Info,
            EventKind::QueryCancelled { outcome, .. }
            | EventKind::BackendTerminated { outcome, .. }
            | EventKind::IdleInTransactionReaped { outcome, .. } => match outcome {
                ActionOutcome::Done => Severity::Warning,
                ActionOutcome::DryRun | ActionOutcome::Gone => Severity::Info,
                ActionOutcome::Failed => Severity::Failure,
            },
            EventKind::ConnectionLeak { .. } => Severity::Warning,
            EventKind::PoolResized { reason, .. } => match reason {
                ResizeReason::Recovered => Severity::Info,
                _ => Severity::Warning,
            },
            EventKind::ServerPressure { .. } => Severity::Warning,
            EventKind::Custom { severity, .. } => *severity,
            EventKind::BatchProgress { paused, .. } => match paused {
                Some(BatchPause::Pressure | BatchPause::Rejected) => Severity::Warning,
                _ => Severity::Info,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::level;

    #[test]
    fn severity_follows_the_level() {
        assert_eq!(
            level(Level::Normal, Level::Warning).severity(),
            Severity::Warning
        );
        assert_eq!(
            level(Level::Warning, Level::Critical).severity(),
            Severity::Critical
        );
        assert_eq!(
            level(Level::Critical, Level::Warning).severity(),
            Severity::Info
        );
        assert_eq!(
            level(Level::Warning, Level::Normal).severity(),
            Severity::Info
        );
    }

    #[test]
    fn failed_cancel_is_a_failure() {
        let e = Event::now(EventKind::QueryAbandoned {
            class: Criticality::Standard,
            route: None,
            cancel_sent: false,
        });
        assert_eq!(e.severity(), Severity::Failure);
    }
}
