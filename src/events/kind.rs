//! [`EventKind`], what happened, and the small data types its variants carry.

use super::batch::BatchPause;
use super::transitions::BlockedPair;
use super::Severity;
use crate::criticality::Criticality;
use crate::monitor::Level;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Requests answered by the guard in one summary window, per class
/// (indexed non-critical, standard, critical). Each request has one final outcome (served,
/// shed, queue full, pool unavailable, rate-limited or timed out); `queued` counts the ones
/// that waited on the way, whatever their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Acquisitions granted a connection.
    pub served: [u64; 3],
    /// Requests answered 503 at once because they could not start before their deadline.
    pub shed: [u64; 3],
    /// Acquisitions that were deferred: they waited in the queue (and are also counted by
    /// how they ended).
    pub queued: [u64; 3],
    /// Requests answered 429 by a per-user limit.
    pub rate_limited: [u64; 3],
    /// Acquisitions that reached their deadline without a slot, and statements that hit the
    /// timeout.
    pub timed_out: [u64; 3],
    /// Requests answered 503 because their class's queue was full.
    #[serde(default)]
    pub queue_full: [u64; 3],
    /// Requests granted a slot for which the pool could not hand out a connection (503).
    #[serde(default)]
    pub pool_unavailable: [u64; 3],
}

impl OutcomeCounts {
    /// Whether nothing but served requests happened.
    pub fn is_quiet(&self) -> bool {
        self.shed == [0; 3]
            && self.queued == [0; 3]
            && self.rate_limited == [0; 3]
            && self.timed_out == [0; 3]
            && self.queue_full == [0; 3]
            && self.pool_unavailable == [0; 3]
    }

    /// Requests refused with 503 (shed, queue full, pool unavailable), per class.
    pub fn refused(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.shed[i] + self.queue_full[i] + self.pool_unavailable[i])
    }

    /// Adds another window's counts to these.
    pub fn add(&mut self, other: &OutcomeCounts) {
        for i in 0..3 {
            self.served[i] += other.served[i];
            self.shed[i] += other.shed[i];
            self.queued[i] += other.queued[i];
            self.rate_limited[i] += other.rate_limited[i];
            self.timed_out[i] += other.timed_out[i];
            self.queue_full[i] += other.queue_full[i];
            self.pool_unavailable[i] += other.pool_unavailable[i];
        }
    }
}

/// How non-critical work reaches the pool: a gate driven by the pressure level (not by
/// failures, as a circuit breaker would be).
///
/// Serialized (and [`as_str`](NonCriticalGate::as_str)) with the stable names of earlier
/// releases, when this was called a breaker: `closed`, `open`, `half_open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NonCriticalGate {
    /// At Normal, once the ramp is done: non-critical work goes straight to the pool.
    #[serde(rename = "closed")]
    Direct,
    /// Above Normal: non-critical work is deferred (it waits for its slots instead of going
    /// straight to the pool).
    #[serde(rename = "open")]
    Deferred,
    /// Back at Normal (or held at Critical): non-critical work's share of its slots ramps
    /// back up over `breaker_ramp`.
    #[serde(rename = "half_open")]
    Ramping,
}

impl NonCriticalGate {
    /// A stable lower-case name: `closed`, `open` or `half_open` (its serialized name).
    pub const fn as_str(self) -> &'static str {
        match self {
            NonCriticalGate::Direct => "closed",
            NonCriticalGate::Deferred => "open",
            NonCriticalGate::Ramping => "half_open",
        }
    }

    /// What the state means, in words: `direct`, `deferred` or `ramping`.
    pub const fn describe(self) -> &'static str {
        match self {
            NonCriticalGate::Direct => "direct",
            NonCriticalGate::Deferred => "deferred",
            NonCriticalGate::Ramping => "ramping",
        }
    }
}

/// The old variant names, kept for one release so `BreakerState::Open` still compiles (in
/// expressions and patterns).
#[allow(non_upper_case_globals)]
impl NonCriticalGate {
    /// The old name of [`NonCriticalGate::Direct`].
    #[deprecated(since = "0.2.0", note = "renamed to `NonCriticalGate::Direct`")]
    pub const Closed: NonCriticalGate = NonCriticalGate::Direct;
    /// The old name of [`NonCriticalGate::Deferred`].
    #[deprecated(since = "0.2.0", note = "renamed to `NonCriticalGate::Deferred`")]
    pub const Open: NonCriticalGate = NonCriticalGate::Deferred;
    /// The old name of [`NonCriticalGate::Ramping`].
    #[deprecated(since = "0.2.0", note = "renamed to `NonCriticalGate::Ramping`")]
    pub const HalfOpen: NonCriticalGate = NonCriticalGate::Ramping;
}

/// The old name of [`NonCriticalGate`]: a level-driven gate, not a failure-driven breaker.
#[deprecated(since = "0.2.0", note = "renamed to `NonCriticalGate`")]
pub type BreakerState = NonCriticalGate;

/// What became of a watchdog action on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// The signal was delivered.
    Done,
    /// Dry run: the watchdog only reports what it would have done.
    DryRun,
    /// The query or session ended (or moved on) before the signal was sent: nothing to do.
    Gone,
    /// The signal could not be delivered (no permission, lost connection).
    Failed,
}

impl ActionOutcome {
    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Done => "done",
            ActionOutcome::DryRun => "dry_run",
            ActionOutcome::Gone => "gone",
            ActionOutcome::Failed => "failed",
        }
    }
}

/// The backend a watchdog action was about. Never carries a query's literal values: the query
/// is reduced to its [fingerprint](crate::watchdog::fingerprint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// The backend's process id.
    pub pid: i32,
    /// The role it is connected as.
    pub role: Option<String>,
    /// Its `application_name`.
    pub application: Option<String>,
    /// The class of the acquisition holding it, when the guard tagged the connection.
    pub class: Option<Criticality>,
    /// The route or caller label holding it, when known.
    pub route: Option<String>,
    /// Set when the backend belongs to another instance of the same service (its name, from
    /// the `application_name`): its route is not known here.
    #[serde(default)]
    pub other_instance: Option<String>,
    /// The query with its literals replaced by `?`.
    pub fingerprint: String,
}

/// Why the watchdog resized the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeReason {
    /// Acquisitions kept waiting: the pool grew by a step.
    Waiting,
    /// The pressure is over: the pool shrank back toward its original size.
    Recovered,
    /// The server ran short of connections: the pool gave some back.
    ServerFull,
    /// Moved toward this replica's share of the server's connection budget.
    BudgetShare,
}

impl ResizeReason {
    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResizeReason::Waiting => "waiting",
            ResizeReason::Recovered => "recovered",
            ResizeReason::ServerFull => "server_full",
            ResizeReason::BudgetShare => "budget_share",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The pressure level changed.
    LevelChanged {
        /// Level before.
        from: Level,
        /// Level after.
        to: Level,
        /// Utilization that caused the change, in `[0, 1]`.
        utilization: f64,
        /// Connections in use (through the guard and outside it).
        in_use: usize,
        /// The pool's maximum size.
        max_size: usize,
        /// Acquisitions waiting.
        waiting: usize,
    },
    /// The non-critical gate changed state (serialized as `breaker_changed`, its stable
    /// name from earlier releases; this variant was `BreakerChanged` before 0.2.0).
    #[serde(rename = "breaker_changed")]
    NonCriticalGateChanged {
        /// The new state.
        state: NonCriticalGate,
    },
    /// What the guard did with requests over the last window (emitted only when something
    /// other than serving happened).
    RequestsSummary {
        /// Length of the window.
        #[serde(with = "crate::config::millis")]
        window: Duration,
        /// Counts by outcome and class.
        counts: OutcomeCounts,
    },
    /// A statement ran into `statement_timeout` (SQLSTATE 57014) and was stopped by Postgres.
    StatementTimedOut {
        /// The class of the acquisition.
        class: Criticality,
        /// The route or caller label, if known.
        route: Option<String>,
    },
    /// A request was dropped while its query ran; the query was cancelled on the server and
    /// the connection checked before reuse (discarded if it did not answer).
    QueryAbandoned {
        /// The class of the acquisition.
        class: Criticality,
        /// The route or caller label, if known.
        route: Option<String>,
        /// Whether the server-side cancel was delivered.
        cancel_sent: bool,
    },
    /// The level returned to Normal after an episode of pressure.
    Recovered {
        /// Time from leaving Normal to returning to it.
        #[serde(with = "crate::config::millis")]
        after: Duration,
        /// Highest utilization seen during the episode.
        peak_utilization: f64,
    },
    /// A run of status updates ended with invalid transitions blocked by the policy.
    TransitionsBlocked {
        /// The operation that ran (e.g. `spam-capture`).
        operation: String,
        /// Transitions applied.
        valid: u64,
        /// Blocked attempts per `from -> to` pair, most frequent first.
        blocked: Vec<BlockedPair>,
        /// Attempts whose row did not exist.
        not_found: u64,
    },
    /// The watchdog cancelled a query running past its limit (`pg_cancel_backend`).
    QueryCancelled {
        /// The backend.
        backend: BackendInfo,
        /// How long the query had run.
        #[serde(with = "crate::config::millis")]
        running: Duration,
        /// Whether the cancel was sent.
        outcome: ActionOutcome,
    },
    /// The watchdog terminated a backend whose query kept running after a cancel
    /// (`pg_terminate_backend`).
    BackendTerminated {
        /// The backend.
        backend: BackendInfo,
        /// How long the query had run.
        #[serde(with = "crate::config::millis")]
        running: Duration,
        /// Whether the backend was terminated.
        outcome: ActionOutcome,
    },
    /// The watchdog terminated a session left idle inside a transaction.
    IdleInTransactionReaped {
        /// The backend (the fingerprint is of its last query).
        backend: BackendInfo,
        /// How long it had been idle in the transaction.
        #[serde(with = "crate::config::millis")]
        idle: Duration,
        /// Whether the backend was terminated.
        outcome: ActionOutcome,
    },
    /// A connection has been held through the guard longer than the leak threshold (reported
    /// once per checkout).
    ConnectionLeak {
        /// The class of the acquisition.
        class: Criticality,
        /// The route or caller label holding it.
        route: Option<String>,
        /// The user it was acquired for.
        user: Option<String>,
        /// How long it had been held when noticed.
        #[serde(with = "crate::config::millis")]
        held: Duration,
    },
    /// The watchdog resized the pool.
    PoolResized {
        /// Size before.
        from: usize,
        /// Size after.
        to: usize,
        /// Why.
        reason: ResizeReason,
    },
    /// The server as a whole is running out of connections (whoever holds them).
    ServerPressure {
        /// Client connections in use on the server.
        used: u32,
        /// Connections usable by ordinary roles (`max_connections` less reserved slots).
        usable: u32,
        /// `used / usable`.
        utilization: f64,
    },
    /// A free-form event from another part of the library or the application.
    Custom {
        /// A short machine-readable name.
        name: String,
        /// The severity the emitter chose.
        severity: Severity,
        /// Human-readable detail.
        message: String,
    },
    /// A time-budgeted batch ([`crate::batch`]) committed a chunk; the last event of each
    /// call also says whether the operation is complete or why the call paused.
    BatchProgress {
        /// The operation (e.g. `spam-capture`).
        operation: String,
        /// Chunks committed so far over all calls.
        chunk: u64,
        /// Items in the chunk this event is about (0 when no chunk committed since the
        /// previous event).
        chunk_size: usize,
        /// Items committed so far over all calls.
        processed: u64,
        /// Items committed plus items left, if the source counts them.
        total: Option<u64>,
        /// Whether the operation is complete.
        done: bool,
        /// Why the call ended early, on its last event.
        paused: Option<BatchPause>,
    },
}

impl EventKind {
    /// The serialized `kind` tag (`level_changed`, `query_cancelled`, ...), or
    /// `custom:<name>` for [`EventKind::Custom`]: a stable name for grouping and counting.
    pub fn tag(&self) -> String {
        if let EventKind::Custom { name, .. } = self {
            return format!("custom:{name}");
        }
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_keeps_its_serialized_names() {
        let json = serde_json::to_value(EventKind::NonCriticalGateChanged {
            state: NonCriticalGate::Deferred,
        })
        .unwrap();
        assert_eq!(json["kind"], "breaker_changed");
        assert_eq!(json["state"], "open");
        for (gate, name) in [
            (NonCriticalGate::Direct, "closed"),
            (NonCriticalGate::Deferred, "open"),
            (NonCriticalGate::Ramping, "half_open"),
        ] {
            assert_eq!(serde_json::to_value(gate).unwrap(), name);
            assert_eq!(gate.as_str(), name);
            let back: NonCriticalGate = serde_json::from_value(name.into()).unwrap();
            assert_eq!(back, gate);
        }
    }

    #[test]
    #[allow(deprecated)]
    fn the_old_gate_names_still_compile_in_patterns() {
        let old: BreakerState = BreakerState::Open;
        assert!(matches!(old, BreakerState::Open));
        assert!(!matches!(
            old,
            BreakerState::Closed | BreakerState::HalfOpen
        ));
        assert_eq!(old, NonCriticalGate::Deferred);
    }
}
