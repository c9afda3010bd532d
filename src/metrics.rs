//! Metric names (one place), their descriptions, and the handles the hot path reuses.
//!
//! poolguard records through the [`metrics`] facade; the application installs an exporter
//! (for Prometheus, [`install_prometheus`] with the `prometheus` feature). Install it before
//! building the guard: handles are registered once, at build time. No label ever carries a
//! user id: labels are the finite sets of classes, outcomes, levels and policy states.
// Without the feature the item named above is not built, and neither is its link.
#![cfg_attr(not(feature = "prometheus"), allow(rustdoc::broken_intra_doc_links))]

pub mod otel;
pub(crate) mod tally;

use crate::criticality::Criticality;
use metrics::{Counter, Gauge, Histogram};
use otel::{MirroredGauge, OtelMetrics};
use tally::Tallies;

/// Connections in use (the seed's alert divides this by [`POOL_MAX`]).
pub const POOL_ACTIVE: &str = "db_connection_pool_active";
/// The pool's maximum size.
pub const POOL_MAX: &str = "db_connection_pool_max";
/// Idle connections held by the pool.
pub const POOL_IDLE: &str = "db_connection_pool_idle";
/// Acquisitions waiting for a slot (the guard's queue plus deadpool's own waiters).
pub const POOL_WAITING: &str = "db_connection_pool_waiting";
/// The pressure level: 0 normal, 1 warning, 2 critical.
pub const LEVEL: &str = "poolguard_level";
/// Acquisitions waiting in the guard's queue.
pub const QUEUE_DEPTH: &str = "poolguard_queue_depth";
/// Pool utilization as the level machine sees it, in `[0, 1]`.
pub const UTILIZATION: &str = "poolguard_utilization";
/// Requests by class and final outcome: `served`, `shed` (refused at once: its deadline
/// could not be met), `queue_full`, `pool_unavailable`, `rate_limited`, `timed_out`. Each
/// request is counted once.
pub const REQUESTS: &str = "poolguard_requests_total";
/// Acquisitions that were deferred (waited in the queue), by class; each is also counted
/// once in [`REQUESTS`] by how it ended.
pub const REQUESTS_DEFERRED: &str = "poolguard_requests_deferred_total";
/// Seconds an acquisition waited for a connection, by class.
pub const ACQUIRE_WAIT: &str = "poolguard_acquire_wait_seconds";
/// Seconds a connection was held, by class.
pub const HOLD_TIME: &str = "poolguard_connection_hold_seconds";
/// Level transitions, by the level entered.
pub const LEVEL_TRANSITIONS: &str = "poolguard_level_transitions_total";
/// Requests dropped mid-query: a server-side cancel was attempted and the connection checked
/// before reuse (the `QueryAbandoned` event says whether the cancel got through).
pub const QUERIES_ABANDONED: &str = "poolguard_queries_abandoned_total";
/// Per-user refusals held before they were answered, because the user came back before its
/// last `Retry-After` ([`UserLimits::early_retry_delay`](crate::UserLimits::early_retry_delay)).
pub const REFUSALS_DELAYED: &str = "poolguard_refusals_delayed_total";
/// Self-heal events lost by slow subscribers.
pub const EVENTS_DROPPED: &str = "poolguard_events_dropped_total";
/// Queries cancelled by the watchdog (`pg_cancel_backend`).
pub const QUERIES_CANCELLED: &str = "poolguard_queries_cancelled_total";
/// Backends terminated by the watchdog (`pg_terminate_backend`).
pub const BACKENDS_TERMINATED: &str = "poolguard_backends_terminated_total";
/// Connections in use on the whole server.
pub const SERVER_CONNECTIONS: &str = "poolguard_server_connections";
/// The server's usable connection limit (`max_connections` less reserved slots).
pub const SERVER_MAX_CONNECTIONS: &str = "poolguard_server_max_connections";
/// 1 while the watchdog cannot read the server and `poolguard_server_connections` holds its
/// last reading (or the limit, when the server refused the watchdog as full); 0 otherwise.
pub const SERVER_READING_STALE: &str = "poolguard_server_reading_stale";
/// Status transitions blocked by the policy, by `from` and `to` state.
pub const TRANSITIONS_BLOCKED: &str = "poolguard_transitions_blocked_total";
/// Status transitions applied through the guarded update.
pub const TRANSITIONS_APPLIED: &str = "poolguard_transitions_applied_total";

/// Buckets for wait and hold times, in seconds: 1 ms to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What happened to one request, as its user saw it. Every variant but [`Outcome::Queued`]
/// is final and counted once per request in [`REQUESTS`]; `Queued` (deferred) is counted in
/// [`REQUESTS_DEFERRED`], so a request that waited and was then served counts once as a
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Given a connection.
    Served = 0,
    /// Refused at once: its expected start lay past its deadline.
    Shed = 1,
    /// Deferred: it waited in the queue (not final).
    Queued = 2,
    /// Refused by a per-user limit (429).
    RateLimited = 3,
    /// Reached its deadline without a slot, or its statement hit `statement_timeout`.
    TimedOut = 4,
    /// Refused because its class's queue was full.
    QueueFull = 5,
    /// A slot was granted but the pool could not hand out a usable connection.
    PoolUnavailable = 6,
}

impl Outcome {
    /// How many outcomes there are.
    pub(crate) const COUNT: usize = 7;

    /// The final outcomes, in [`REQUESTS`] label order.
    const FINAL: [Outcome; 6] = [
        Outcome::Served,
        Outcome::Shed,
        Outcome::QueueFull,
        Outcome::PoolUnavailable,
        Outcome::RateLimited,
        Outcome::TimedOut,
    ];

    /// Its label value (`queued` for the deferred count).
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Shed => "shed",
            Outcome::Queued => "queued",
            Outcome::RateLimited => "rate_limited",
            Outcome::TimedOut => "timed_out",
            Outcome::QueueFull => "queue_full",
            Outcome::PoolUnavailable => "pool_unavailable",
        }
    }
}

/// Describes every metric once, so exporters render help text.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(POOL_ACTIVE, "Connections in use");
    describe_gauge!(POOL_MAX, "Maximum size of the connection pool");
    describe_gauge!(POOL_IDLE, "Idle connections held by the pool");
    describe_gauge!(POOL_WAITING, "Acquisitions waiting for a connection");
    describe_gauge!(LEVEL, "Pressure level: 0 normal, 1 warning, 2 critical");
    describe_gauge!(
        QUEUE_DEPTH,
        "Acquisitions waiting in the guard's priority queue"
    );
    describe_gauge!(
        UTILIZATION,
        "Pool utilization seen by the level machine (0..1)"
    );
    describe_counter!(REQUESTS, "Requests by class and final outcome");
    describe_counter!(
        REQUESTS_DEFERRED,
        "Acquisitions that waited in the queue, by class"
    );
    describe_histogram!(
        ACQUIRE_WAIT,
        Unit::Seconds,
        "Time an acquisition waited for a connection"
    );
    describe_histogram!(HOLD_TIME, Unit::Seconds, "Time a connection was held");
    describe_counter!(LEVEL_TRANSITIONS, "Level transitions by level entered");
    describe_counter!(
        QUERIES_ABANDONED,
        "Requests dropped mid-query; query cancelled on the server"
    );
    describe_counter!(
        REFUSALS_DELAYED,
        "Refusals held before answering: the caller came back before its Retry-After"
    );
    describe_counter!(EVENTS_DROPPED, "Self-heal events lost by slow subscribers");
    describe_counter!(QUERIES_CANCELLED, "Queries cancelled by the watchdog");
    describe_counter!(BACKENDS_TERMINATED, "Backends terminated by the watchdog");
    describe_gauge!(SERVER_CONNECTIONS, "Connections in use on the whole server");
    describe_gauge!(
        SERVER_MAX_CONNECTIONS,
        "Usable connection limit of the server"
    );
    describe_gauge!(
        SERVER_READING_STALE,
        "1 while the server-wide reading is held because the watchdog cannot read the server"
    );
    describe_counter!(
        TRANSITIONS_BLOCKED,
        "Status transitions blocked by the policy"
    );
    describe_counter!(
        TRANSITIONS_APPLIED,
        "Status transitions applied by the guarded update"
    );
}

/// Handles registered once per guard and reused on every request.
#[derive(Debug)]
pub(crate) struct GuardMetrics {
    requests: [[Counter; Outcome::COUNT]; 3],
    acquire_wait: [Histogram; 3],
    hold_time: [Histogram; 3],
    /// What the dashboard reads.
    pub(crate) tallies: Tallies,
    otel: Option<OtelMetrics>,
    pub(crate) pool_active: MirroredGauge,
    pub(crate) pool_max: MirroredGauge,
    pub(crate) pool_idle: MirroredGauge,
    pub(crate) pool_waiting: MirroredGauge,
    pub(crate) level: Gauge,
    pub(crate) queue_depth: Gauge,
    pub(crate) utilization: Gauge,
    pub(crate) abandoned: Counter,
    pub(crate) refusals_delayed: Counter,
}

impl GuardMetrics {
    pub(crate) fn register() -> Self {
        describe();
        let requests = Criticality::ALL.map(|class| {
            let mut row: [Counter; Outcome::COUNT] = std::array::from_fn(|_| Counter::noop());
            for o in Outcome::FINAL {
                row[o as usize] = metrics::counter!(
                    REQUESTS, "class" => class.as_str(), "outcome" => o.as_str()
                );
            }
            row[Outcome::Queued as usize] =
                metrics::counter!(REQUESTS_DEFERRED, "class" => class.as_str());
            row
        });
        let otel = OtelMetrics::register();
        let twin = |pick: fn(&OtelMetrics) -> &Gauge| otel.as_ref().map(|o| pick(o).clone());
        Self {
            requests,
            tallies: Tallies::default(),
            pool_active: MirroredGauge::new(metrics::gauge!(POOL_ACTIVE), twin(|o| &o.used)),
            pool_max: MirroredGauge::new(metrics::gauge!(POOL_MAX), twin(|o| &o.max)),
            pool_idle: MirroredGauge::new(metrics::gauge!(POOL_IDLE), twin(|o| &o.idle)),
            pool_waiting: MirroredGauge::new(metrics::gauge!(POOL_WAITING), twin(|o| &o.pending)),
            otel,
            acquire_wait: Criticality::ALL
                .map(|c| metrics::histogram!(ACQUIRE_WAIT, "class" => c.as_str())),
            hold_time: Criticality::ALL
                .map(|c| metrics::histogram!(HOLD_TIME, "class" => c.as_str())),
            level: metrics::gauge!(LEVEL),
            queue_depth: metrics::gauge!(QUEUE_DEPTH),
            utilization: metrics::gauge!(UTILIZATION),
            abandoned: metrics::counter!(QUERIES_ABANDONED),
            refusals_delayed: metrics::counter!(REFUSALS_DELAYED),
        }
    }

    pub(crate) fn request(&self, class: Criticality, outcome: Outcome) {
        self.requests[class.index()][outcome as usize].increment(1);
        self.tallies.request(class, outcome);
        if let (Some(o), Outcome::TimedOut) = (&self.otel, outcome) {
            o.timeouts.increment(1);
        }
    }

    pub(crate) fn acquire_wait(&self, class: Criticality, secs: f64) {
        self.acquire_wait[class.index()].record(secs);
        self.tallies.record_wait(class, secs);
        if let Some(o) = &self.otel {
            o.wait_time.record(secs);
        }
    }

    pub(crate) fn hold_time(&self, class: Criticality, secs: f64) {
        self.hold_time[class.index()].record(secs);
        self.tallies.record_hold(class, secs);
        if let Some(o) = &self.otel {
            o.use_time.record(secs);
        }
    }
}

pub(crate) fn events_dropped(n: u64) {
    metrics::counter!(EVENTS_DROPPED).increment(n);
}

pub(crate) fn level_entered(level: crate::monitor::Level) {
    metrics::counter!(LEVEL_TRANSITIONS, "to" => level.as_str()).increment(1);
}

/// Installs a Prometheus recorder with explicit histogram buckets (so histograms render as
/// histograms, not summaries) and returns the handle whose `render()` produces the scrape.
///
/// Call it once, at start-up, before building a guard.
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub fn install_prometheus(
) -> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError>
{
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}
