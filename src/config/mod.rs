//! Plain-data configuration with documented defaults, validated when the guard is built.

mod error;
mod serde_millis;
mod validate;

pub use error::BuildError;
pub(crate) use serde_millis::{millis, opt_millis};

use crate::criticality::Criticality;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Everything the guard decides with. Every field has a default (the [`Default`] impl);
/// [`GuardBuilder::build`](crate::GuardBuilder::build) validates the whole and names the first
/// bad field.
///
/// | field | default | meaning |
/// | --- | --- | --- |
/// | `warning_utilization` | 0.85 | enter [`Level::Warning`](crate::monitor::Level::Warning) at this pool use |
/// | `critical_utilization` | 0.92 | enter [`Level::Critical`](crate::monitor::Level::Critical) |
/// | `critical_recovery` | 0.88 | leave Critical below this, after `min_dwell` |
/// | `warning_recovery` | 0.80 | leave Warning below this, after `min_dwell` |
/// | `min_dwell` | 500 ms | how long pressure must stay low before the level drops |
/// | `starvation_after` | 200 ms | a waiter older than this escalates to Critical |
/// | `critical_reserve` | 10 % of the pool, at least 1 | slots only critical work may take |
/// | `queue_depth` | 1024 | most acquisitions waiting at once per class; the next gets 503 |
/// | `user_queue_depth` | 256 | most acquisitions of one user waiting at once per class |
/// | `max_queue_wait` | 5 s | default deadline: the longest wait for a slot; then 503 |
/// | `pool_wait_timeout` | 2 s | deadpool's wait for an object once a slot is held |
/// | `pool_create_timeout` | 5 s | deadpool's limit on opening a connection |
/// | `pool_recycle_timeout` | 2 s | deadpool's limit on recycling a connection |
/// | `query_deadline` | `statement_timeout` + 2 s | client-side bound on every tracked query |
/// | `breaker_ramp` | 2 s | after Critical, non-critical work's share of its slots grows from 10 % to 100 % over this |
/// | `sample_interval` | 100 ms | how often the sampler reads `Pool::status()` |
/// | `class_statement_timeout` | none | per-class `statement_timeout` overrides (each at least 1 ms) |
/// | `limits` | see [`UserLimits`] | per-user rate and in-flight caps |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardConfig {
    /// Pool use (in use / max size) at which the level becomes Warning.
    pub warning_utilization: f64,
    /// Pool use at which the level becomes Critical.
    pub critical_utilization: f64,
    /// Pool use below which Critical steps down to Warning (after `min_dwell`).
    pub critical_recovery: f64,
    /// Pool use below which Warning steps down to Normal (after `min_dwell`).
    pub warning_recovery: f64,
    /// How long pressure must stay below a recovery threshold before the level drops.
    #[serde(with = "crate::config::millis")]
    pub min_dwell: Duration,
    /// A waiter older than this is starvation: the level becomes Critical.
    #[serde(with = "crate::config::millis")]
    pub starvation_after: Duration,
    /// Slots kept for [`Criticality::Critical`]; `None` means 10 % of the pool, at least one.
    pub critical_reserve: Option<usize>,
    /// The most acquisitions of one class that may wait at once.
    pub queue_depth: usize,
    /// The most acquisitions of one class one user may have waiting at once, so that one
    /// user's flood cannot fill a queue alone (a dashboard's widgets still fit).
    pub user_queue_depth: usize,
    /// The default deadline: the longest an acquisition waits for a slot before it is
    /// answered 503. One whose expected start lies past it is answered at once. Routes may
    /// set their own ([`GuardLayer::deadline`](crate::GuardLayer::deadline)).
    #[serde(with = "crate::config::millis")]
    pub max_queue_wait: Duration,
    /// deadpool's wait timeout, used once the guard has granted a slot.
    #[serde(with = "crate::config::millis")]
    pub pool_wait_timeout: Duration,
    /// deadpool's create timeout: the longest a new connection may take to open.
    #[serde(with = "crate::config::millis")]
    pub pool_create_timeout: Duration,
    /// deadpool's recycle timeout.
    #[serde(with = "crate::config::millis")]
    pub pool_recycle_timeout: Duration,
    /// The client-side bound on every tracked query of a [`GuardedConn`](crate::admission::GuardedConn)
    /// (and of its transactions): past it the query is answered
    /// [`Error::QueryDeadline`](crate::error::Error::QueryDeadline) (504), cancelled on the server
    /// and its connection checked before reuse. `statement_timeout` is enforced by the
    /// server, which never sees a query lost in a stalled network; this is not. `None` (the
    /// default) is the connection's `statement_timeout` (the class override if larger) plus
    /// [`QUERY_DEADLINE_MARGIN`], or 32 s when the guard does not know the timeout (it reads
    /// it from the startup options, so behind a pooler, where the session settings are sent
    /// otherwise, set it explicitly).
    #[serde(with = "crate::config::opt_millis")]
    pub query_deadline: Option<Duration>,
    /// When the level falls from Critical, non-critical work's share of its slots grows from
    /// 10 % to 100 % over this ramp: the deferred backlog starts at a controlled rate.
    #[serde(with = "crate::config::millis")]
    pub breaker_ramp: Duration,
    /// How often the sampler reads the pool's status and re-evaluates the level.
    #[serde(with = "crate::config::millis")]
    pub sample_interval: Duration,
    /// Per-class `statement_timeout` overrides, applied on checkout and reset on recycle.
    pub class_statement_timeout: ClassTimeouts,
    /// Per-user rate and in-flight limits.
    pub limits: UserLimits,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            warning_utilization: 0.85,
            critical_utilization: 0.92,
            critical_recovery: 0.88,
            warning_recovery: 0.80,
            min_dwell: Duration::from_millis(500),
            starvation_after: Duration::from_millis(200),
            critical_reserve: None,
            queue_depth: 1024,
            user_queue_depth: 256,
            max_queue_wait: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(2),
            pool_create_timeout: Duration::from_secs(5),
            pool_recycle_timeout: Duration::from_secs(2),
            query_deadline: None,
            breaker_ramp: Duration::from_secs(2),
            sample_interval: Duration::from_millis(100),
            class_statement_timeout: ClassTimeouts::default(),
            limits: UserLimits::default(),
        }
    }
}

/// How much longer than `statement_timeout` the default
/// [`query_deadline`](GuardConfig::query_deadline) waits: enough for the server's own timeout
/// error to arrive first whenever the server can be reached.
pub const QUERY_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The [`query_deadline`](GuardConfig::query_deadline) when neither it nor the connection's
/// `statement_timeout` is known: the default `statement_timeout` plus the margin.
pub const FALLBACK_QUERY_DEADLINE: Duration = Duration::from_secs(32);

impl GuardConfig {
    /// The query deadline of a connection acquired as `class` whose startup
    /// `statement_timeout` is `statement_timeout` (if known).
    pub fn query_deadline_for(
        &self,
        class: Criticality,
        statement_timeout: Option<Duration>,
    ) -> Duration {
        if let Some(deadline) = self.query_deadline {
            return deadline;
        }
        let longest = match (statement_timeout, self.class_statement_timeout.get(class)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        longest.map_or(FALLBACK_QUERY_DEADLINE, |t| t + QUERY_DEADLINE_MARGIN)
    }
}

/// Optional `statement_timeout` per class; `None` keeps the connection's own setting. Each is
/// at least a millisecond (PostgreSQL counts whole milliseconds, and 0 disables the timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassTimeouts {
    /// Override for [`Criticality::NonCritical`] acquisitions.
    #[serde(with = "crate::config::opt_millis")]
    pub non_critical: Option<Duration>,
    /// Override for [`Criticality::Standard`] acquisitions.
    #[serde(with = "crate::config::opt_millis")]
    pub standard: Option<Duration>,
    /// Override for [`Criticality::Critical`] acquisitions.
    #[serde(with = "crate::config::opt_millis")]
    pub critical: Option<Duration>,
}

impl ClassTimeouts {
    /// The override for one class.
    pub fn get(&self, class: Criticality) -> Option<Duration> {
        match class {
            Criticality::NonCritical => self.non_critical,
            Criticality::Standard => self.standard,
            Criticality::Critical => self.critical,
        }
    }
}

/// Per-user limits: a GCRA rate (governor) and a cap on requests in flight, each with a normal
/// value and a tighter one applied at [`Level::Warning`](crate::monitor::Level::Warning) and above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserLimits {
    /// Sustained requests per second per user at Normal. Default 50.
    pub rate_per_second: u32,
    /// Burst per user at Normal. Default 100.
    pub burst: u32,
    /// Requests in flight per user at Normal. Default 20.
    pub in_flight: u32,
    /// Sustained requests per second per user at Warning and above. Default 10.
    pub tight_rate_per_second: u32,
    /// Burst per user at Warning and above. Default 20.
    pub tight_burst: u32,
    /// Requests in flight per user at Warning and above. Default 5 (the seed's number).
    pub tight_in_flight: u32,
    /// Longest key kept as is; longer or non-printable keys are replaced by a hash. Default 64.
    pub max_key_len: usize,
    /// How long a per-user refusal (429) is held before it is answered when the same user
    /// comes back before the `Retry-After` it was last told: a client that ignores
    /// `Retry-After` (a retry loop, a flood over many connections) then gets its answers no
    /// faster than this, which costs a timer instead of the CPU of answering it at full
    /// speed. The hold is this spread over its second half (so held answers are not sent
    /// as one wave), at most the `Retry-After` the client was told and the request's
    /// deadline, and the answer's `Retry-After` counts from when it is sent.
    /// Clients that wait as told never see it. Zero (the default) answers every refusal at
    /// once. At most [`MAX_EARLY_RETRY_DELAY`]. In milliseconds in serialized form.
    #[serde(with = "crate::config::millis")]
    pub early_retry_delay: Duration,
    /// The most refusals held at once by `early_retry_delay`; past it refusals are answered
    /// at once. Default 4096.
    pub max_delayed_refusals: usize,
}

/// The longest [`UserLimits::early_retry_delay`].
pub const MAX_EARLY_RETRY_DELAY: Duration = Duration::from_secs(10);

impl Default for UserLimits {
    fn default() -> Self {
        Self {
            rate_per_second: 50,
            burst: 100,
            in_flight: 20,
            tight_rate_per_second: 10,
            tight_burst: 20,
            tight_in_flight: 5,
            max_key_len: 64,
            early_retry_delay: Duration::ZERO,
            max_delayed_refusals: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_json_with_defaults() {
        let c: GuardConfig =
            serde_json::from_str(r#"{"warning_utilization":0.7,"min_dwell":250}"#).unwrap();
        assert_eq!(c.warning_utilization, 0.7);
        assert_eq!(c.min_dwell, Duration::from_millis(250));
        assert_eq!(c.critical_utilization, 0.92);
    }
}
