//! What an incident holds: its figures, the actions taken, the impact, and its analysis.

use crate::events::{Event, OutcomeCounts, Severity};
use crate::monitor::Level;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// One self-heal action, derived from the kinds of events an incident saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The Warning level tightened the per-user limits.
    LimitsTightened,
    /// Non-critical work was deferred (serialized `breaker_opened`, its name before 0.2.0).
    #[serde(rename = "breaker_opened")]
    NonCriticalDeferred,
    /// The Critical level's emergency measures: standard work queued, critical served first.
    EmergencyMeasures,
    /// Requests were answered 503: shed at once, refused for a full queue, or left without a
    /// connection by the pool.
    RequestsShed,
    /// Acquisitions waited in the priority queue.
    RequestsQueued,
    /// Requests were answered 429 by a per-user limit.
    RateLimited,
    /// Statements were stopped by `statement_timeout`.
    StatementTimeouts,
    /// Queries of dropped requests were cancelled on the server.
    QueriesCancelled,
    /// The watchdog cancelled queries running past `kill_after`.
    SlowQueriesCancelled,
    /// The watchdog terminated backends (cancel ignored, or idle in a transaction).
    BackendsTerminated,
    /// A connection was held past the leak threshold.
    LeakReported,
    /// The pool was resized by the auto-resizer.
    PoolResized,
    /// The server as a whole was nearly full; its pressure raised the level.
    ServerPressure,
    /// Invalid status transitions were blocked.
    TransitionsBlocked,
    /// Another part of the application reported an action, by name.
    Other(String),
}

/// The old variant name, kept for one release (in expressions and patterns).
#[allow(non_upper_case_globals)]
impl Action {
    /// The old name of [`Action::NonCriticalDeferred`].
    #[deprecated(since = "0.2.0", note = "renamed to `Action::NonCriticalDeferred`")]
    pub const BreakerOpened: Action = Action::NonCriticalDeferred;
}

impl Action {
    /// A human-readable line for reports.
    pub fn describe(&self) -> String {
        match self {
            Action::LimitsTightened => "Per-user rate limits tightened".into(),
            Action::NonCriticalDeferred => {
                "Non-critical endpoints deferred (queued, not refused)".into()
            }
            Action::EmergencyMeasures => {
                "Emergency measures: standard work queued, critical work served first".into()
            }
            Action::RequestsShed => "Excess requests shed with 503 + Retry-After".into(),
            Action::RequestsQueued => "Requests queued until connections freed up".into(),
            Action::RateLimited => "Rate limiting applied to the heaviest users".into(),
            Action::StatementTimeouts => "Runaway statements stopped by statement_timeout".into(),
            Action::QueriesCancelled => "Abandoned queries cancelled on the server".into(),
            Action::SlowQueriesCancelled => "Slow queries cancelled by the watchdog".into(),
            Action::BackendsTerminated => "Stuck backends terminated by the watchdog".into(),
            Action::LeakReported => "Connection held past the leak threshold reported".into(),
            Action::PoolResized => "Pool resized within the server's headroom".into(),
            Action::ServerPressure => {
                "Server-wide connection pressure detected (another process holds connections)"
                    .into()
            }
            Action::TransitionsBlocked => "Invalid status transitions blocked".into(),
            Action::Other(name) => format!("Action reported: {name}"),
        }
    }
}

/// What the guard did to requests during an incident, summed over its request summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Impact {
    /// Counts by outcome and class (indexed non-critical, standard, critical).
    pub counts: OutcomeCounts,
    /// Failure-severity events (a self-heal action that did not work).
    pub failed: u64,
}

impl Impact {
    fn total(a: &[u64; 3]) -> u64 {
        a.iter().sum()
    }
    /// Requests answered 503: shed at once (their deadline could not be met), refused for a
    /// full queue, or granted a slot the pool could not fill.
    pub fn refused(&self) -> u64 {
        Self::total(&self.counts.refused())
    }
    /// The old name of [`Impact::refused`]: it counts every 503 refusal, not only the shed.
    #[deprecated(since = "0.2.0", note = "renamed to `Impact::refused`")]
    pub fn shed(&self) -> u64 {
        self.refused()
    }
    /// Acquisitions that waited in the queue.
    pub fn queued(&self) -> u64 {
        Self::total(&self.counts.queued)
    }
    /// Requests answered 429.
    pub fn rate_limited(&self) -> u64 {
        Self::total(&self.counts.rate_limited)
    }
    /// Acquisitions and statements that timed out.
    pub fn timed_out(&self) -> u64 {
        Self::total(&self.counts.timed_out)
    }
    /// Critical-class requests that were refused with 503 or timed out (the ones that must
    /// never fail).
    pub fn critical_failed(&self) -> u64 {
        self.counts.refused()[2] + self.counts.timed_out[2]
    }
    /// Whether no request was refused, delayed or failed.
    pub fn is_none(&self) -> bool {
        self.counts.is_quiet() && self.failed == 0
    }
}

/// How an incident's analysis came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    /// Written by the configured LLM endpoint.
    Llm,
    /// The local rule-based summary (no endpoint configured).
    LocalSummary,
    /// Dry run: the text is the exact prompt that would have been sent.
    DryRun,
    /// An incident with the same signature was analysed within the dedupe window.
    Duplicate,
    /// The hourly or daily call/token budget was spent; the local summary stands in.
    BudgetExceeded,
    /// The LLM call failed; the local summary stands in and `error` says why.
    LlmFailed,
}

/// The analysis attached to an incident once the reporter has handled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// How it was produced.
    pub kind: AnalysisKind,
    /// The analysis (markdown from the LLM, or the local summary, or the dry-run prompt).
    pub text: String,
    /// The model that wrote it, for [`AnalysisKind::Llm`].
    pub model: Option<String>,
    /// Tokens spent (prompt + completion) as the endpoint reported them.
    pub tokens: Option<u64>,
    /// The first incident with the same signature, for [`AnalysisKind::Duplicate`].
    pub duplicate_of: Option<u64>,
    /// Why the LLM call failed, for [`AnalysisKind::LlmFailed`].
    pub error: Option<String>,
}

/// One episode of pressure, from the first Warning-or-worse event to the return to Normal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Sequence number, unique within one tracker.
    pub id: u64,
    /// Time of the first event.
    pub opened_at: SystemTime,
    /// Time of the event that closed it; `None` while active.
    pub closed_at: Option<SystemTime>,
    /// The highest level reached.
    pub peak_level: Level,
    /// The highest event severity seen.
    pub peak_severity: Severity,
    /// The highest utilization reported, in `[0, 1]`.
    pub peak_utilization: f64,
    /// Connections in use at the peak.
    pub peak_in_use: usize,
    /// The pool's maximum size at the peak.
    pub max_size: usize,
    /// The events, in order; bounded (the head and the most recent are kept).
    pub timeline: Vec<Event>,
    /// Events left out of `timeline` to keep it bounded.
    pub timeline_omitted: usize,
    /// Actions taken, in the order first seen.
    pub actions: Vec<Action>,
    /// What happened to requests.
    pub impact: Impact,
    /// From opening to the return to Normal; `None` for a one-event failure.
    #[serde(with = "crate::config::opt_millis")]
    pub recovery_time: Option<Duration>,
    /// Routes named by statement timeouts and abandoned queries.
    pub routes: Vec<String>,
    /// The analysis, once the reporter has written it.
    pub analysis: Option<Analysis>,
}

impl Incident {
    /// Whether the incident is still open.
    pub fn is_active(&self) -> bool {
        self.closed_at.is_none()
    }

    /// Whether the system got back to Normal on its own.
    pub fn auto_recovered(&self) -> bool {
        self.recovery_time.is_some() && self.impact.failed == 0
    }

    /// A short title, like the seed's alert subjects.
    pub fn title(&self) -> String {
        if self.peak_severity == Severity::Failure {
            return "Self-Heal Failure - Manual Intervention Required".into();
        }
        match self.peak_level {
            Level::Critical => "Connection Pool Critical".into(),
            Level::Warning => "Connection Pool Warning".into(),
            Level::Normal if self.actions.contains(&Action::StatementTimeouts) => {
                "Statement Timeouts".into()
            }
            Level::Normal => "Self-Heal Event".into(),
        }
    }

    /// A stable key for deduplication: the event kinds seen and the peak level, no times or
    /// figures, so two episodes of the same problem share it.
    pub fn signature(&self) -> String {
        let mut kinds: Vec<String> = self.timeline.iter().map(|e| e.kind.tag()).collect();
        kinds.sort();
        kinds.dedup();
        format!(
            "peak={};severity={};kinds={}",
            self.peak_level,
            self.peak_severity.as_str(),
            kinds.join(",")
        )
    }
}
