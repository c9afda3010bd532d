//! Self-heal events: one type for every action the guard takes, and the bounded bus that fans
//! them out without ever blocking a request.

use crate::batch::BatchPause;
use crate::transition::BlockedPair;
use crate::{Criticality, Level};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

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

/// Requests answered by the guard in one summary window, per class
/// (indexed non-critical, standard, critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Acquisitions granted a connection.
    pub served: [u64; 3],
    /// Requests answered 503 by the breaker or because the queue was full.
    pub shed: [u64; 3],
    /// Acquisitions that had to wait in the queue.
    pub queued: [u64; 3],
    /// Requests answered 429 by a per-user limit.
    pub rate_limited: [u64; 3],
    /// Acquisitions that waited past `max_queue_wait`, and statements that hit the timeout.
    pub timed_out: [u64; 3],
}

impl OutcomeCounts {
    /// Whether nothing but served requests happened.
    pub fn is_quiet(&self) -> bool {
        self.shed == [0; 3]
            && self.queued == [0; 3]
            && self.rate_limited == [0; 3]
            && self.timed_out == [0; 3]
    }

    /// Adds another window's counts to these.
    pub fn add(&mut self, other: &OutcomeCounts) {
        for i in 0..3 {
            self.served[i] += other.served[i];
            self.shed[i] += other.shed[i];
            self.queued[i] += other.queued[i];
            self.rate_limited[i] += other.rate_limited[i];
            self.timed_out[i] += other.timed_out[i];
        }
    }
}

/// The state of the non-critical breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Non-critical routes are served.
    Closed,
    /// Non-critical routes are answered 503 without touching the pool.
    Open,
    /// Non-critical routes are being let back in on a ramp.
    HalfOpen,
}

impl BreakerState {
    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

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
}

impl ResizeReason {
    /// A stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResizeReason::Waiting => "waiting",
            ResizeReason::Recovered => "recovered",
            ResizeReason::ServerFull => "server_full",
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
    /// The non-critical breaker changed state.
    BreakerChanged {
        /// The new state.
        state: BreakerState,
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
    /// the connection discarded.
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

    /// How serious it is.
    pub fn severity(&self) -> Severity {
        match &self.kind {
            EventKind::LevelChanged { to, from, .. } => match (to, from) {
                (Level::Critical, _) => Severity::Critical,
                (Level::Warning, Level::Normal) => Severity::Warning,
                _ => Severity::Info,
            },
            EventKind::BreakerChanged { state } => match state {
                BreakerState::Open => Severity::Warning,
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

    /// The `[SELF-HEAL]` log line for this event (without the prefix).
    pub fn message(&self) -> String {
        match &self.kind {
            EventKind::LevelChanged {
                from,
                to,
                utilization,
                in_use,
                max_size,
                waiting,
            } => {
                let pct = (utilization * 100.0).round();
                match (from, to) {
                    (_, Level::Critical) => format!(
                        "CRITICAL: Connection pool at {pct}% ({in_use}/{max_size}, {waiting} waiting) - Emergency measures: non-critical shed, standard queued, critical served first"
                    ),
                    (Level::Normal, Level::Warning) => format!(
                        "Connection pool at {pct}% ({in_use}/{max_size}, {waiting} waiting) - Warning threshold: breaker open for non-critical routes, per-user limits tightened"
                    ),
                    (Level::Critical, Level::Warning) => format!(
                        "Connection pool recovered to {pct}% ({in_use}/{max_size}) - queued work draining"
                    ),
                    (_, Level::Normal) => format!(
                        "Connection pool at {pct}% ({in_use}/{max_size}) - Normal operations resumed"
                    ),
                    _ => format!("Level {from} -> {to} at {pct}% ({in_use}/{max_size})"),
                }
            }
            EventKind::BreakerChanged { state } => match state {
                BreakerState::Open => "Circuit breaker open for non-critical routes".to_string(),
                BreakerState::HalfOpen => {
                    "Circuit breaker half-open: non-critical routes let back in on a ramp"
                        .to_string()
                }
                BreakerState::Closed => {
                    "Circuit breaker closed: non-critical routes fully served".to_string()
                }
            },
            EventKind::RequestsSummary { window, counts } => {
                let sum = |a: &[u64; 3]| a.iter().sum::<u64>();
                format!(
                    "Last {} ms: {} served, {} shed, {} queued, {} rate-limited, {} timed out (critical: {} served, {} shed)",
                    window.as_millis(),
                    sum(&counts.served),
                    sum(&counts.shed),
                    sum(&counts.queued),
                    sum(&counts.rate_limited),
                    sum(&counts.timed_out),
                    counts.served[Criticality::Critical.index()],
                    counts.shed[Criticality::Critical.index()],
                )
            }
            EventKind::StatementTimedOut { class, route } => format!(
                "Statement timeout stopped a {class} query{}",
                route_suffix(route)
            ),
            EventKind::QueryAbandoned {
                class,
                route,
                cancel_sent,
            } => format!(
                "Request dropped mid-query ({class}{}): {}; connection discarded",
                route_suffix(route),
                if *cancel_sent {
                    "server-side cancel sent"
                } else {
                    "cancel could not be sent"
                }
            ),
            EventKind::Recovered {
                after,
                peak_utilization,
            } => format!(
                "System fully recovered after {:.1} s (peak {}%)",
                after.as_secs_f64(),
                (peak_utilization * 100.0).round()
            ),
            EventKind::TransitionsBlocked {
                operation,
                valid,
                blocked,
                not_found,
            } => crate::transition::blocked_message(operation, *valid, blocked, *not_found),
            EventKind::QueryCancelled {
                backend,
                running,
                outcome,
            } => action_message(
                "cancel",
                "Cancelled",
                "query running",
                *running,
                backend,
                *outcome,
            ),
            EventKind::BackendTerminated {
                backend,
                running,
                outcome,
            } => action_message(
                "terminate",
                "Terminated",
                "backend ignoring cancel, query running",
                *running,
                backend,
                *outcome,
            ),
            EventKind::IdleInTransactionReaped {
                backend,
                idle,
                outcome,
            } => action_message(
                "terminate",
                "Terminated",
                "session idle in transaction for",
                *idle,
                backend,
                *outcome,
            ),
            EventKind::ConnectionLeak {
                class,
                route,
                user,
                held,
            } => format!(
                "Possible connection leak: {class} connection held {:.1} s{}{}",
                held.as_secs_f64(),
                route_suffix(route),
                user.as_deref()
                    .map(|u| format!(" for user {u}"))
                    .unwrap_or_default()
            ),
            EventKind::PoolResized { from, to, reason } => match reason {
                ResizeReason::Waiting => {
                    format!("Pool grown {from} -> {to}: acquisitions kept waiting")
                }
                ResizeReason::Recovered => {
                    format!("Pool shrunk {from} -> {to}: pressure is over")
                }
                ResizeReason::ServerFull => {
                    format!("Pool shrunk {from} -> {to}: the server is running out of connections")
                }
            },
            EventKind::ServerPressure {
                used,
                usable,
                utilization,
            } => format!(
                "Server connections at {}% ({used}/{usable}) across every client",
                (utilization * 100.0).round()
            ),
            EventKind::Custom { name, message, .. } => format!("{name}: {message}"),
            EventKind::BatchProgress {
                operation,
                chunk,
                chunk_size,
                processed,
                total,
                done,
                paused,
            } => crate::batch::message(
                operation,
                *chunk,
                *chunk_size,
                *processed,
                *total,
                *done,
                *paused,
            ),
        }
    }
}

/// `[SELF-HEAL] Cancelled query running 31.2 s (pid 1234, app poolguard): SELECT pg_sleep(?)`
fn action_message(
    verb: &str,
    done: &str,
    what: &str,
    took: Duration,
    backend: &BackendInfo,
    outcome: ActionOutcome,
) -> String {
    let lead = match outcome {
        ActionOutcome::Done => done.to_string(),
        ActionOutcome::DryRun => format!("Dry run: would {verb}"),
        ActionOutcome::Gone => format!("Did not need to {verb}"),
        ActionOutcome::Failed => format!("Could not {verb}"),
    };
    let mut who = format!("pid {}", backend.pid);
    if let Some(app) = &backend.application {
        who.push_str(&format!(", app {app}"));
    }
    if let Some(route) = &backend.route {
        who.push_str(&format!(", route {route}"));
    }
    format!(
        "{lead} {what} {:.1} s ({who}): {}",
        took.as_secs_f64(),
        backend.fingerprint
    )
}

fn route_suffix(route: &Option<String>) -> String {
    route
        .as_deref()
        .map(|r| format!(" on {r}"))
        .unwrap_or_default()
}

/// The bounded fan-out of events. Publishing never blocks: a subscriber that falls behind
/// loses the oldest events, and the loss is counted.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventBus {
    /// A bus that keeps up to `capacity` events for each subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes an event: logs it as a `[SELF-HEAL]` line and hands it to every subscriber.
    pub fn publish(&self, event: Event) {
        log_event(&event);
        // No subscriber is fine: the log line above is the record.
        let _ = self.tx.send(event);
    }

    /// A new subscriber that sees events from now on.
    pub fn subscribe(&self) -> EventSubscriber {
        EventSubscriber {
            rx: self.tx.subscribe(),
            dropped: self.dropped.clone(),
        }
    }

    /// How many events slow subscribers have lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Receives events from an [`EventBus`].
#[derive(Debug)]
pub struct EventSubscriber {
    rx: broadcast::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSubscriber {
    /// The next event; `None` once the bus is gone. Events lost because this subscriber fell
    /// behind are counted in `poolguard_events_dropped_total` and skipped.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    crate::metrics::events_dropped(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    crate::metrics::events_dropped(n);
                }
                Err(_) => return None,
            }
        }
    }
}

/// Writes the `[SELF-HEAL]` line for an event at a tracing level matching its severity.
fn log_event(event: &Event) {
    let msg = event.message();
    match event.severity() {
        Severity::Info => tracing::info!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}"),
        Severity::Warning => tracing::warn!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}"),
        Severity::Critical | Severity::Failure => {
            tracing::error!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(from: Level, to: Level) -> Event {
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
    fn critical_message_reads_like_the_seed() {
        let m = level(Level::Warning, Level::Critical).message();
        assert!(
            m.starts_with("CRITICAL: Connection pool at 92% (92/100"),
            "{m}"
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

    #[tokio::test]
    async fn a_slow_subscriber_loses_oldest_and_counts_them() {
        let bus = EventBus::new(4);
        let mut sub = bus.subscribe();
        for i in 0..10 {
            bus.publish(Event::now(EventKind::Custom {
                name: format!("e{i}"),
                severity: Severity::Info,
                message: String::new(),
            }));
        }
        let first = sub.recv().await.unwrap();
        assert!(matches!(first.kind, EventKind::Custom { ref name, .. } if name == "e6"));
        assert_eq!(bus.dropped(), 6);
    }

    #[test]
    fn a_cancel_reads_like_a_self_heal_line() {
        let e = Event::now(EventKind::QueryCancelled {
            backend: BackendInfo {
                pid: 1234,
                role: Some("app".into()),
                application: Some("poolguard".into()),
                class: None,
                route: None,
                fingerprint: "SELECT pg_sleep(?)".into(),
            },
            running: Duration::from_millis(31_240),
            outcome: ActionOutcome::Done,
        });
        assert_eq!(
            e.message(),
            "Cancelled query running 31.2 s (pid 1234, app poolguard): SELECT pg_sleep(?)"
        );
        assert_eq!(e.severity(), Severity::Warning);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "query_cancelled");
        assert_eq!(json["outcome"], "done");
        assert_eq!(json["backend"]["pid"], 1234);
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let json = serde_json::to_value(level(Level::Normal, Level::Warning)).unwrap();
        assert_eq!(json["kind"], "level_changed");
        assert_eq!(json["to"], "warning");
    }
}
