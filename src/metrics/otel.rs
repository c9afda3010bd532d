//! Opt-in metric names following the OpenTelemetry database client conventions
//! (`db.client.connection.*`), recorded alongside poolguard's own names.
//!
//! Call [`enable`] once at start-up, before building a guard; every guard built afterwards
//! records both sets. The names are given in their Prometheus form, the one a Prometheus
//! scrape shows and the OpenTelemetry Collector produces from the dotted names (dots become
//! underscores, a histogram in seconds gains `_seconds`, a counter gains `_total`):
//!
//! | OpenTelemetry instrument | Prometheus form | Type | Labels | poolguard's own name |
//! |---|---|---|---|---|
//! | `db.client.connection.count` | `db_client_connection_count` | gauge | `state` (`used`, `idle`), `pool_name` | `db_connection_pool_active`, `db_connection_pool_idle` |
//! | `db.client.connection.max` | `db_client_connection_max` | gauge | `pool_name` | `db_connection_pool_max` |
//! | `db.client.connection.pending_requests` | `db_client_connection_pending_requests` | gauge | `pool_name` | `db_connection_pool_waiting` |
//! | `db.client.connection.wait_time` | `db_client_connection_wait_time_seconds` | histogram | `pool_name` | `poolguard_acquire_wait_seconds` |
//! | `db.client.connection.use_time` | `db_client_connection_use_time_seconds` | histogram | `pool_name` | `poolguard_connection_hold_seconds` |
//! | `db.client.connection.timeouts` | `db_client_connection_timeouts_total` | counter | `pool_name` | `poolguard_requests_total{outcome="timed_out"}` |
//!
//! `timeouts` counts requests whose outcome is `timed_out`: acquisitions that waited in the
//! guard's queue past `max_queue_wait`, and statements stopped by `statement_timeout`.

use metrics::{Counter, Gauge, Histogram};
use std::sync::OnceLock;

/// `db.client.connection.count`: connections by `state` (`used` or `idle`).
pub const CONNECTION_COUNT: &str = "db_client_connection_count";
/// `db.client.connection.max`: the most connections the pool may open.
pub const CONNECTION_MAX: &str = "db_client_connection_max";
/// `db.client.connection.pending_requests`: acquisitions waiting for a connection.
pub const PENDING_REQUESTS: &str = "db_client_connection_pending_requests";
/// `db.client.connection.wait_time`: seconds an acquisition waited for a connection.
pub const WAIT_TIME: &str = "db_client_connection_wait_time_seconds";
/// `db.client.connection.use_time`: seconds a connection was held.
pub const USE_TIME: &str = "db_client_connection_use_time_seconds";
/// `db.client.connection.timeouts`: requests that timed out.
pub const TIMEOUTS: &str = "db_client_connection_timeouts_total";

/// Every OpenTelemetry-convention name, for tests and dashboards.
pub const ALL: &[&str] = &[
    CONNECTION_COUNT,
    CONNECTION_MAX,
    PENDING_REQUESTS,
    WAIT_TIME,
    USE_TIME,
    TIMEOUTS,
];

/// The pool name label value, once [`enable`] was called.
static POOL_NAME: OnceLock<String> = OnceLock::new();

/// Turns the OpenTelemetry-convention names on for every guard built from now on, with
/// `pool_name` as the value of their `pool_name` label. The first call wins; later calls
/// change nothing and return `false`.
pub fn enable(pool_name: &str) -> bool {
    let set = POOL_NAME.set(pool_name.to_string()).is_ok();
    if set {
        describe();
    }
    set
}

/// Whether [`enable`] was called.
pub fn is_enabled() -> bool {
    POOL_NAME.get().is_some()
}

/// Describes the OpenTelemetry-convention metrics, so exporters render help text.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTION_COUNT, "Connections by state (used, idle)");
    describe_gauge!(CONNECTION_MAX, "Most connections the pool may open");
    describe_gauge!(
        PENDING_REQUESTS,
        "Acquisitions waiting for a connection from the pool"
    );
    describe_histogram!(
        WAIT_TIME,
        Unit::Seconds,
        "Time an acquisition waited for a connection"
    );
    describe_histogram!(USE_TIME, Unit::Seconds, "Time a connection was used");
    describe_counter!(TIMEOUTS, "Requests that timed out waiting or running");
}

/// The handles of one guard.
#[derive(Debug)]
pub(crate) struct OtelMetrics {
    pub(crate) used: Gauge,
    pub(crate) idle: Gauge,
    pub(crate) max: Gauge,
    pub(crate) pending: Gauge,
    pub(crate) wait_time: Histogram,
    pub(crate) use_time: Histogram,
    pub(crate) timeouts: Counter,
}

impl OtelMetrics {
    /// The handles, when [`enable`] was called.
    pub(crate) fn register() -> Option<Self> {
        let pool = POOL_NAME.get()?.clone();
        Some(Self {
            used: metrics::gauge!(CONNECTION_COUNT, "state" => "used", "pool_name" => pool.clone()),
            idle: metrics::gauge!(CONNECTION_COUNT, "state" => "idle", "pool_name" => pool.clone()),
            max: metrics::gauge!(CONNECTION_MAX, "pool_name" => pool.clone()),
            pending: metrics::gauge!(PENDING_REQUESTS, "pool_name" => pool.clone()),
            wait_time: metrics::histogram!(WAIT_TIME, "pool_name" => pool.clone()),
            use_time: metrics::histogram!(USE_TIME, "pool_name" => pool.clone()),
            timeouts: metrics::counter!(TIMEOUTS, "pool_name" => pool),
        })
    }
}

/// A gauge of poolguard's own, set together with its OpenTelemetry-convention twin when the
/// names are enabled.
#[derive(Debug)]
pub(crate) struct MirroredGauge {
    own: Gauge,
    otel: Option<Gauge>,
}

impl MirroredGauge {
    pub(crate) fn new(own: Gauge, otel: Option<Gauge>) -> Self {
        Self { own, otel }
    }

    pub(crate) fn set(&self, value: f64) {
        self.own.set(value);
        if let Some(g) = &self.otel {
            g.set(value);
        }
    }
}
