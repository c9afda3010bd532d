//! The pure incident tracker: events in, closed incidents out. Time comes from the events.

use super::model::{Action, Impact, Incident};
use crate::events::{ActionOutcome, BreakerState, Event, EventKind, Severity};
use crate::Level;
use std::time::{Duration, SystemTime};

/// Default bound on an incident's timeline.
pub const DEFAULT_MAX_TIMELINE: usize = 64;
/// Default quiet period after which an incident that never left Normal closes.
pub const DEFAULT_IDLE_CLOSE: Duration = Duration::from_secs(60);

/// Assembles events into incidents.
///
/// An incident opens on the first event of [`Severity::Warning`] or above and closes when the
/// level returns to Normal (`LevelChanged { to: Normal }` or `Recovered`). A
/// [`Severity::Failure`] event outside an incident becomes a one-event incident at once. An
/// incident opened while the level stayed Normal (a lone statement timeout, say) closes once no
/// event has arrived for the idle period, checked by [`IncidentTracker::close_if_idle`].
#[derive(Debug, Clone)]
pub struct IncidentTracker {
    active: Option<Incident>,
    level: Level,
    next_id: u64,
    max_timeline: usize,
    idle_close: Duration,
    last_event_at: Option<SystemTime>,
}

impl Default for IncidentTracker {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TIMELINE, DEFAULT_IDLE_CLOSE)
    }
}

impl IncidentTracker {
    /// A tracker keeping at most `max_timeline` events per incident (at least 2).
    pub fn new(max_timeline: usize, idle_close: Duration) -> Self {
        Self {
            active: None,
            level: Level::Normal,
            next_id: 1,
            max_timeline: max_timeline.max(2),
            idle_close,
            last_event_at: None,
        }
    }

    /// Numbers new incidents from `id` on (e.g. after the last one in a store).
    pub fn starting_at(mut self, id: u64) -> Self {
        self.next_id = id.max(1);
        self
    }

    /// The open incident, if any.
    pub fn active(&self) -> Option<&Incident> {
        self.active.as_ref()
    }

    /// Feeds one event; returns the incident it closed, if any.
    pub fn observe(&mut self, event: &Event) -> Option<Incident> {
        self.last_event_at = Some(event.at);
        if let EventKind::LevelChanged { to, .. } = &event.kind {
            self.level = *to;
        }
        let severity = event.severity();
        if self.active.is_none() {
            if severity < Severity::Warning {
                return None;
            }
            let mut incident = self.open(event.at);
            self.apply(&mut incident, event);
            if severity == Severity::Failure && self.level == Level::Normal {
                incident.closed_at = Some(event.at);
                return Some(incident);
            }
            self.active = Some(incident);
            return None;
        }
        let mut incident = self.active.take()?;
        self.apply(&mut incident, event);
        let closes = match &event.kind {
            EventKind::LevelChanged { to, .. } => *to == Level::Normal,
            EventKind::Recovered { .. } => true,
            _ => false,
        };
        if closes {
            self.close(&mut incident, event);
            return Some(incident);
        }
        self.active = Some(incident);
        None
    }

    /// Closes an incident that never left Normal once no event has come for the idle period.
    pub fn close_if_idle(&mut self, now: SystemTime) -> Option<Incident> {
        let last = self.last_event_at?;
        let idle = now.duration_since(last).unwrap_or_default() >= self.idle_close;
        if !idle || self.level != Level::Normal || self.active.is_none() {
            return None;
        }
        let mut incident = self.active.take()?;
        incident.closed_at = Some(last);
        incident.recovery_time = Some(last.duration_since(incident.opened_at).unwrap_or_default());
        Some(incident)
    }

    fn open(&mut self, at: SystemTime) -> Incident {
        let id = self.next_id;
        self.next_id += 1;
        Incident {
            id,
            opened_at: at,
            closed_at: None,
            peak_level: self.level,
            peak_severity: Severity::Info,
            peak_utilization: 0.0,
            peak_in_use: 0,
            max_size: 0,
            timeline: Vec::new(),
            timeline_omitted: 0,
            actions: Vec::new(),
            impact: Impact::default(),
            recovery_time: None,
            routes: Vec::new(),
            analysis: None,
        }
    }

    fn close(&self, incident: &mut Incident, event: &Event) {
        incident.closed_at = Some(event.at);
        let span = event
            .at
            .duration_since(incident.opened_at)
            .unwrap_or_default();
        incident.recovery_time = Some(match &event.kind {
            EventKind::Recovered { after, .. } => span.max(*after),
            _ => span,
        });
    }

    fn apply(&self, incident: &mut Incident, event: &Event) {
        let severity = event.severity();
        incident.peak_severity = incident.peak_severity.max(severity);
        if severity == Severity::Failure {
            incident.impact.failed += 1;
        }
        incident.peak_level = incident.peak_level.max(self.level);
        let mut action = |a: Action| {
            if !incident.actions.contains(&a) {
                incident.actions.push(a);
            }
        };
        match &event.kind {
            EventKind::LevelChanged { to, .. } => match to {
                Level::Warning => action(Action::LimitsTightened),
                Level::Critical => action(Action::EmergencyMeasures),
                Level::Normal => {}
            },
            EventKind::BreakerChanged {
                state: BreakerState::Open,
            } => action(Action::BreakerOpened),
            EventKind::RequestsSummary { counts, .. } => {
                let any = |a: &[u64; 3]| a.iter().any(|&n| n > 0);
                if any(&counts.shed) {
                    action(Action::RequestsShed);
                }
                if any(&counts.queued) {
                    action(Action::RequestsQueued);
                }
                if any(&counts.rate_limited) {
                    action(Action::RateLimited);
                }
                incident.impact.counts.add(counts);
            }
            EventKind::StatementTimedOut { .. } => action(Action::StatementTimeouts),
            EventKind::QueryAbandoned {
                cancel_sent: true, ..
            } => action(Action::QueriesCancelled),
            EventKind::QueryCancelled {
                outcome: ActionOutcome::Done,
                ..
            } => action(Action::SlowQueriesCancelled),
            EventKind::BackendTerminated {
                outcome: ActionOutcome::Done,
                ..
            }
            | EventKind::IdleInTransactionReaped {
                outcome: ActionOutcome::Done,
                ..
            } => action(Action::BackendsTerminated),
            EventKind::ConnectionLeak { .. } => action(Action::LeakReported),
            EventKind::PoolResized { .. } => action(Action::PoolResized),
            EventKind::ServerPressure { .. } => action(Action::ServerPressure),
            EventKind::TransitionsBlocked { .. } => action(Action::TransitionsBlocked),
            EventKind::Custom { name, severity, .. } if *severity >= Severity::Warning => {
                action(Action::Other(name.clone()))
            }
            _ => {}
        }
        match &event.kind {
            EventKind::LevelChanged {
                utilization,
                in_use,
                max_size,
                ..
            } if *utilization >= incident.peak_utilization => {
                incident.peak_utilization = *utilization;
                incident.peak_in_use = *in_use;
                incident.max_size = *max_size;
            }
            EventKind::Recovered {
                peak_utilization, ..
            } if *peak_utilization > incident.peak_utilization => {
                incident.peak_utilization = *peak_utilization;
            }
            _ => {}
        }
        if let Some(r) = route_of(&event.kind) {
            if !incident.routes.contains(r) && incident.routes.len() < 32 {
                incident.routes.push(r.clone());
            }
        }
        self.push_timeline(incident, event);
    }

    /// Keeps the first half of the bound and the most recent events.
    fn push_timeline(&self, incident: &mut Incident, event: &Event) {
        if incident.timeline.len() >= self.max_timeline {
            incident.timeline.remove(self.max_timeline / 2);
            incident.timeline_omitted += 1;
        }
        incident.timeline.push(event.clone());
    }
}

/// The route an event names, if any.
fn route_of(kind: &EventKind) -> Option<&String> {
    match kind {
        EventKind::StatementTimedOut { route, .. }
        | EventKind::QueryAbandoned { route, .. }
        | EventKind::ConnectionLeak { route, .. } => route.as_ref(),
        EventKind::QueryCancelled { backend, .. }
        | EventKind::BackendTerminated { backend, .. }
        | EventKind::IdleInTransactionReaped { backend, .. } => backend.route.as_ref(),
        _ => None,
    }
}
