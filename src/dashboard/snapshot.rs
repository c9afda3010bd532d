//! The dashboard's JSON: one snapshot of the pool, the server, incidents, the 24-hour stats and
//! recent events. Every free-text field goes through the [`Redactor`] while it is built.

use super::stats::PreventionStats;
use super::store::DashboardStore;
use crate::events::{Event, NonCriticalGate, Severity};
use crate::guard::GuardStatus;
use crate::incident::{
    impact_line, subject, timefmt, AnalysisKind, Impact, Incident, IncidentStore,
};
use crate::monitor::Level;
use crate::report::{summarize, Period, Redactor};
use serde::Serialize;
use std::time::SystemTime;

/// Everything the dashboard shows, as served by `/admin/self-healing/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When the snapshot was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// The guarded pool.
    pub pool: PoolView,
    /// Server-wide headroom, once something reports it (`null` before).
    pub server: Option<ServerView>,
    /// The incident in progress, if any.
    pub active_incident: Option<IncidentView>,
    /// The most recent closed incidents, newest first.
    pub recent_incidents: Vec<IncidentView>,
    /// What the guard prevented over the last 24 hours.
    pub stats_24h: PreventionStats,
    /// The most recent events, newest first.
    pub events: Vec<EventView>,
    /// The daily report as text.
    pub daily_summary: String,
    /// The weekly report as text.
    pub weekly_summary: String,
    /// How often the page refreshes, in milliseconds.
    pub refresh_ms: u64,
}

/// The pool part of [`GuardStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// The pressure level.
    pub level: Level,
    /// How non-critical work reaches the pool (`breaker` in the JSON, its stable name).
    #[serde(rename = "breaker")]
    pub non_critical_gate: NonCriticalGate,
    /// Connections in use.
    pub in_use: usize,
    /// The pool's maximum size.
    pub max_size: usize,
    /// `in_use / max_size`.
    pub utilization: f64,
    /// Highest utilization since the guard was built.
    pub peak_utilization: f64,
    /// Idle connections.
    pub available: usize,
    /// Acquisitions waiting in the guard's queue, by class.
    pub queued: QueuedView,
    /// Waiters inside deadpool itself.
    pub pool_waiting: usize,
    /// Slots only critical work may use.
    pub reserve: usize,
    /// Connections taken from the pool outside the guard.
    pub external: usize,
}

/// Waiting acquisitions by class.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueuedView {
    /// All classes.
    pub total: usize,
    /// Non-critical.
    pub non_critical: usize,
    /// Standard.
    pub standard: usize,
    /// Critical.
    pub critical: usize,
}

/// Server-wide utilization, as fed by `Guard::report_server_utilization`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerView {
    /// Connections in use on the whole server over its usable maximum.
    pub utilization: f64,
    /// `1 - utilization`.
    pub headroom: f64,
}

/// One event, redacted.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// How serious it is.
    pub severity: Severity,
    /// Its kind name (`level_changed`, `custom:<name>`, ...).
    pub kind: String,
    /// The `[SELF-HEAL]` line, redacted.
    pub message: String,
}

/// One incident, redacted.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Sequence number.
    pub id: u64,
    /// Short title, e.g. `Connection Pool Critical`.
    pub title: String,
    /// The alert subject (`[ACTIVE] ...`, `[AUTO-RESOLVED] ...`).
    pub subject: String,
    /// Whether it is still open.
    pub active: bool,
    /// When it opened (RFC 3339, UTC).
    pub opened_at: String,
    /// When it closed.
    pub closed_at: Option<String>,
    /// Highest level reached.
    pub peak_level: Level,
    /// Highest severity seen.
    pub peak_severity: Severity,
    /// Highest utilization.
    pub peak_utilization: f64,
    /// Connections in use at the peak.
    pub peak_in_use: usize,
    /// Pool size at the peak.
    pub max_size: usize,
    /// The actions taken, described.
    pub actions: Vec<String>,
    /// One line on the impact on requests.
    pub impact: String,
    /// The impact's figures.
    pub impact_counts: Impact,
    /// From opening to the return to Normal, in milliseconds.
    pub recovery_ms: Option<u64>,
    /// Routes named by its events, redacted.
    pub routes: Vec<String>,
    /// Its events, redacted, oldest first.
    pub timeline: Vec<EventView>,
    /// Events left out of the timeline.
    pub timeline_omitted: usize,
    /// Its analysis, once written.
    pub analysis: Option<AnalysisView>,
}

/// An incident's analysis, redacted.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisView {
    /// How it was produced.
    pub kind: AnalysisKind,
    /// The analysis text, redacted.
    pub text: String,
    /// The model that wrote it.
    pub model: Option<String>,
    /// Why the LLM call failed, redacted.
    pub error: Option<String>,
}

/// What a snapshot reads, and how much of it.
pub(crate) struct Sources<'a> {
    pub(crate) status: GuardStatus,
    pub(crate) incidents: &'a IncidentStore,
    pub(crate) store: &'a DashboardStore,
    pub(crate) redactor: &'a Redactor,
    pub(crate) recent_events: usize,
    pub(crate) recent_incidents: usize,
    pub(crate) refresh_ms: u64,
}

impl Snapshot {
    pub(crate) fn build(src: &Sources<'_>, now: SystemTime) -> Snapshot {
        let s = &src.status;
        let r = src.redactor;
        let [non_critical, standard, critical] = s.queued_by_class;
        let all = src.incidents.all();
        Snapshot {
            generated_at: timefmt::rfc3339(now),
            pool: PoolView {
                level: s.level,
                non_critical_gate: s.non_critical_gate,
                in_use: s.in_use,
                max_size: s.max_size,
                utilization: s.utilization,
                peak_utilization: s.peak_utilization,
                available: s.available,
                queued: QueuedView {
                    total: s.queued,
                    non_critical,
                    standard,
                    critical,
                },
                pool_waiting: s.pool_waiting,
                reserve: s.reserve,
                external: s.external,
            },
            server: (s.server_utilization > 0.0).then_some(ServerView {
                utilization: s.server_utilization,
                headroom: 1.0 - s.server_utilization,
            }),
            active_incident: src.incidents.active().map(|i| IncidentView::new(&i, r)),
            recent_incidents: src
                .incidents
                .recent(src.recent_incidents)
                .iter()
                .map(|i| IncidentView::new(i, r))
                .collect(),
            stats_24h: src.store.stats(now),
            events: src
                .store
                .recent(src.recent_events)
                .iter()
                .map(|e| EventView::new(e, r))
                .collect(),
            daily_summary: r.redact(&summarize(&all, Period::Daily, now).to_text()),
            weekly_summary: r.redact(&summarize(&all, Period::Weekly, now).to_text()),
            refresh_ms: src.refresh_ms,
        }
    }
}

impl EventView {
    /// The event with its message redacted.
    pub fn new(event: &Event, redactor: &Redactor) -> Self {
        Self {
            at: timefmt::rfc3339(event.at),
            severity: event.severity(),
            kind: redactor.redact(&event.kind.tag()),
            message: redactor.redact(&event.message()),
        }
    }
}

impl IncidentView {
    /// The incident with every free-text field redacted.
    pub fn new(i: &Incident, r: &Redactor) -> Self {
        Self {
            id: i.id,
            title: i.title(),
            subject: r.redact(&subject(i)),
            active: i.is_active(),
            opened_at: timefmt::rfc3339(i.opened_at),
            closed_at: i.closed_at.map(timefmt::rfc3339),
            peak_level: i.peak_level,
            peak_severity: i.peak_severity,
            peak_utilization: i.peak_utilization,
            peak_in_use: i.peak_in_use,
            max_size: i.max_size,
            actions: i.actions.iter().map(|a| r.redact(&a.describe())).collect(),
            impact: impact_line(i),
            impact_counts: i.impact,
            recovery_ms: i.recovery_time.map(|d| d.as_millis() as u64),
            routes: i.routes.iter().map(|x| r.redact(x)).collect(),
            timeline: i.timeline.iter().map(|e| EventView::new(e, r)).collect(),
            timeline_omitted: i.timeline_omitted,
            analysis: i.analysis.as_ref().map(|a| AnalysisView {
                kind: a.kind,
                text: r.redact(&a.text),
                model: a.model.as_deref().map(|m| r.redact(m)),
                error: a.error.as_deref().map(|e| r.redact(e)),
            }),
        }
    }
}
