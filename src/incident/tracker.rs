//! The pure incident tracker: events in, closed incidents out. Time comes from the events.

use super::model::{Action, Impact, Incident};
use crate::events::{ActionOutcome, Event, EventKind, NonCriticalGate, Severity};
use crate::monitor::Level;
use std::time::{Duration, SystemTime};

/// Default bound on an incident's timeline.
pub const DEFAULT_MAX_TIMELINE: usize = 64;
/// Default quiet period after which an incident that never left Normal closes.
pub const DEFAULT_IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How long the level must stay Normal before the incident pipeline closes an incident
/// ([`IncidentTracker::quiet_period`]); a re-escalation inside it continues the same incident.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(10);

/// Assembles events into incidents.
///
/// An incident opens on the first event of [`Severity::Warning`] or above and closes when the
/// level returns to Normal (`LevelChanged { to: Normal }` or `Recovered`) and stays there for
/// the [quiet period](IncidentTracker::quiet_period): one episode that flaps is one incident.
/// The quiet period is zero for a tracker built here (it closes on the return to Normal) and
/// [`DEFAULT_QUIET_PERIOD`] in [`spawn_incident_pipeline`](crate::report::spawn_incident_pipeline);
/// time passing is fed in with [`IncidentTracker::close_if_quiet`]. A
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
    quiet_period: Duration,
    /// Since when the level has been Normal inside the active incident.
    normal_since: Option<SystemTime>,
    /// The longest `Recovered { after }` seen in the active incident.
    recovered_after: Option<Duration>,
    /// An incident closed while another event was being handled, handed out next.
    pending: Option<Incident>,
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
            quiet_period: Duration::ZERO,
            normal_since: None,
            recovered_after: None,
            pending: None,
        }
    }

    /// Closes an incident only once the level has stayed Normal for `quiet`; a re-escalation
    /// inside it continues the same incident. Zero closes on the return to Normal.
    pub fn quiet_period(mut self, quiet: Duration) -> Self {
        self.quiet_period = quiet;
        self
    }

    /// Closes the active incident if the level has been Normal for the quiet period at `now`
    /// (its close time is the return to Normal); also hands out an incident closed earlier
    /// that was not returned yet.
    pub fn close_if_quiet(&mut self, now: SystemTime) -> Option<Incident> {
        if let Some(done) = self.pending.take() {
            return Some(done);
        }
        let since = self.normal_since?;
        let quiet = now.duration_since(since).unwrap_or_default() >= self.quiet_period;
        if !quiet || self.level != Level::Normal {
            return None;
        }
        let mut incident = self.active.take()?;
        self.normal_since = None;
        incident.closed_at = Some(since);
        let span = since.duration_since(incident.opened_at).unwrap_or_default();
        incident.recovery_time = Some(self.recovered_after.take().map_or(span, |a| span.max(a)));
        Some(incident)
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

    /// Feeds one event; returns the incident it closed, if any (one whose quiet period had
    /// passed by the event's time is closed first).
    pub fn observe(&mut self, event: &Event) -> Option<Incident> {
        let before = self.close_if_quiet(event.at);
        let now = self.observe_event(event);
        match (before, now) {
            (Some(b), Some(n)) => {
                self.pending = Some(n);
                Some(b)
            }
            (b, n) => b.or(n),
        }
    }

    fn observe_event(&mut self, event: &Event) -> Option<Incident> {
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
        let back_to_normal = match &event.kind {
            EventKind::LevelChanged { to, .. } => {
                if *to != Level::Normal {
                    // A re-escalation inside the quiet period: the same incident goes on.
                    self.normal_since = None;
                }
                *to == Level::Normal
            }
            EventKind::Recovered { after, .. } => {
                self.recovered_after = Some(self.recovered_after.map_or(*after, |a| a.max(*after)));
                // Recovered is the guard's word that the level is back at Normal.
                self.level = Level::Normal;
                true
            }
            _ => false,
        };
        if back_to_normal && !self.quiet_period.is_zero() {
            self.normal_since.get_or_insert(event.at);
        }
        if back_to_normal && self.quiet_period.is_zero() {
            self.recovered_after = None;
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
            EventKind::NonCriticalGateChanged {
                state: NonCriticalGate::Deferred,
            } => action(Action::NonCriticalDeferred),
            EventKind::RequestsSummary { counts, .. } => {
                let any = |a: &[u64; 3]| a.iter().any(|&n| n > 0);
                if any(&counts.refused()) {
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
