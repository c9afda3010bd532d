//! Plain-data configuration with documented defaults, validated when the guard is built.

use crate::Criticality;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Everything the guard decides with. Every field has a default (the [`Default`] impl);
/// [`GuardBuilder::build`](crate::GuardBuilder::build) validates the whole and names the first
/// bad field.
///
/// | field | default | meaning |
/// | --- | --- | --- |
/// | `warning_utilization` | 0.85 | enter [`Level::Warning`](crate::Level::Warning) at this pool use |
/// | `critical_utilization` | 0.92 | enter [`Level::Critical`](crate::Level::Critical) |
/// | `critical_recovery` | 0.88 | leave Critical below this, after `min_dwell` |
/// | `warning_recovery` | 0.80 | leave Warning below this, after `min_dwell` |
/// | `min_dwell` | 500 ms | how long pressure must stay low before the level drops |
/// | `starvation_after` | 200 ms | a waiter older than this escalates to Critical |
/// | `critical_reserve` | 10 % of the pool, at least 1 | slots only critical work may take |
/// | `queue_depth` | 1024 | most acquisitions waiting at once; the next gets 503 |
/// | `max_queue_wait` | 5 s | longest wait for a slot; then 503 |
/// | `pool_wait_timeout` | 2 s | deadpool's wait for an object once a slot is held |
/// | `pool_create_timeout` | 5 s | deadpool's limit on opening a connection |
/// | `pool_recycle_timeout` | 2 s | deadpool's limit on recycling a connection |
/// | `breaker_ramp` | 2 s | half-open ramp for non-critical routes after recovery |
/// | `sample_interval` | 100 ms | how often the sampler reads `Pool::status()` |
/// | `class_statement_timeout` | none | per-class `statement_timeout` overrides |
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
    /// The most acquisitions that may wait at once.
    pub queue_depth: usize,
    /// The longest an acquisition waits for a slot before it is answered 503.
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
    /// After recovery, non-critical routes are let back in over this ramp.
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
            max_queue_wait: Duration::from_secs(5),
            pool_wait_timeout: Duration::from_secs(2),
            pool_create_timeout: Duration::from_secs(5),
            pool_recycle_timeout: Duration::from_secs(2),
            breaker_ramp: Duration::from_secs(2),
            sample_interval: Duration::from_millis(100),
            class_statement_timeout: ClassTimeouts::default(),
            limits: UserLimits::default(),
        }
    }
}

/// Optional `statement_timeout` per class; `None` keeps the connection's own setting.
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
/// value and a tighter one applied at [`Level::Warning`](crate::Level::Warning) and above.
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
}

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
        }
    }
}

/// Why a guard, pool or cluster could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration field holds a value the guard cannot work with.
    InvalidConfig {
        /// The field, as it is spelled in [`GuardConfig`] or [`PoolOptions`](crate::PoolOptions).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `build()` was called outside a Tokio runtime; the guard spawns its sampler there.
    NoRuntime,
    /// deadpool refused to build the pool.
    Pool(String),
}

impl BuildError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        BuildError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidConfig { field, reason } => {
                write!(f, "invalid poolguard config: `{field}` {reason}")
            }
            BuildError::NoRuntime => f.write_str(
                "poolguard must be built inside a Tokio runtime (it spawns its sampler task)",
            ),
            BuildError::Pool(e) => write!(f, "could not build the connection pool: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

fn ratio(field: &'static str, v: f64) -> Result<(), BuildError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(BuildError::field(
            field,
            format!("must be in (0, 1], got {v}"),
        ))
    }
}

fn nonzero(field: &'static str, d: Duration) -> Result<(), BuildError> {
    if d.is_zero() {
        Err(BuildError::field(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

impl GuardConfig {
    /// Checks every field against a pool of `max_size` connections; the error names the first
    /// bad field.
    pub fn validate(&self, max_size: usize) -> Result<(), BuildError> {
        if max_size == 0 {
            return Err(BuildError::field(
                "max_size",
                "the pool must hold at least one connection",
            ));
        }
        ratio("warning_utilization", self.warning_utilization)?;
        ratio("critical_utilization", self.critical_utilization)?;
        ratio("critical_recovery", self.critical_recovery)?;
        ratio("warning_recovery", self.warning_recovery)?;
        if self.warning_utilization >= self.critical_utilization {
            return Err(BuildError::field(
                "warning_utilization",
                format!(
                    "must be below critical_utilization ({} >= {})",
                    self.warning_utilization, self.critical_utilization
                ),
            ));
        }
        if self.critical_recovery >= self.critical_utilization {
            return Err(BuildError::field(
                "critical_recovery",
                "must be below critical_utilization (hysteresis needs a gap)",
            ));
        }
        if self.warning_recovery >= self.warning_utilization {
            return Err(BuildError::field(
                "warning_recovery",
                "must be below warning_utilization (hysteresis needs a gap)",
            ));
        }
        nonzero("min_dwell", self.min_dwell)?;
        nonzero("starvation_after", self.starvation_after)?;
        nonzero("max_queue_wait", self.max_queue_wait)?;
        nonzero("pool_wait_timeout", self.pool_wait_timeout)?;
        nonzero("pool_create_timeout", self.pool_create_timeout)?;
        nonzero("pool_recycle_timeout", self.pool_recycle_timeout)?;
        nonzero("breaker_ramp", self.breaker_ramp)?;
        nonzero("sample_interval", self.sample_interval)?;
        if self.queue_depth == 0 {
            return Err(BuildError::field("queue_depth", "must be at least 1"));
        }
        if let Some(r) = self.critical_reserve {
            if r >= max_size {
                return Err(BuildError::field(
                    "critical_reserve",
                    format!("must be smaller than the pool ({r} >= max_size {max_size})"),
                ));
            }
        }
        for class in Criticality::ALL {
            if self.class_statement_timeout.get(class) == Some(Duration::ZERO) {
                return Err(BuildError::field(
                    "class_statement_timeout",
                    format!("{class}: zero would disable the timeout; leave it unset instead"),
                ));
            }
        }
        self.limits.validate()
    }

    /// The reserve for a pool of `max_size`: the configured value, or 10 % rounded up.
    pub fn reserve_for(&self, max_size: usize) -> usize {
        self.critical_reserve
            .unwrap_or_else(|| max_size.div_ceil(10).max(1))
            .min(max_size.saturating_sub(1))
    }
}

impl UserLimits {
    fn validate(&self) -> Result<(), BuildError> {
        let fields = [
            ("limits.rate_per_second", self.rate_per_second),
            ("limits.burst", self.burst),
            ("limits.in_flight", self.in_flight),
            ("limits.tight_rate_per_second", self.tight_rate_per_second),
            ("limits.tight_burst", self.tight_burst),
            ("limits.tight_in_flight", self.tight_in_flight),
        ];
        for (field, v) in fields {
            if v == 0 {
                return Err(BuildError::field(field, "must be at least 1"));
            }
        }
        if self.tight_in_flight > self.in_flight {
            return Err(BuildError::field(
                "limits.tight_in_flight",
                "must not exceed limits.in_flight (it is the tighter cap)",
            ));
        }
        if self.max_key_len < 8 {
            return Err(BuildError::field(
                "limits.max_key_len",
                "must be at least 8",
            ));
        }
        Ok(())
    }
}

/// Serde helper: a `Duration` as whole milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Serde helper: an optional `Duration` as whole milliseconds.
pub(crate) mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<(), BuildError>) -> &'static str {
        match r {
            Err(BuildError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        GuardConfig::default().validate(20).unwrap();
    }

    #[test]
    fn warning_at_or_above_critical_names_the_field() {
        let c = GuardConfig {
            warning_utilization: 0.95,
            ..GuardConfig::default()
        };
        assert_eq!(field_of(c.validate(20)), "warning_utilization");
    }

    #[test]
    fn ratios_outside_unit_interval_are_rejected() {
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let c = GuardConfig {
                critical_utilization: bad,
                ..GuardConfig::default()
            };
            assert_eq!(
                field_of(c.validate(20)),
                "critical_utilization",
                "value {bad}"
            );
        }
    }

    #[test]
    fn zero_pool_and_zero_waits_are_rejected() {
        assert_eq!(field_of(GuardConfig::default().validate(0)), "max_size");
        let c = GuardConfig {
            max_queue_wait: Duration::ZERO,
            ..GuardConfig::default()
        };
        assert_eq!(field_of(c.validate(20)), "max_queue_wait");
        let c = GuardConfig {
            pool_wait_timeout: Duration::ZERO,
            ..GuardConfig::default()
        };
        assert_eq!(field_of(c.validate(20)), "pool_wait_timeout");
    }

    #[test]
    fn recovery_must_leave_a_gap() {
        let c = GuardConfig {
            critical_recovery: 0.92,
            ..GuardConfig::default()
        };
        assert_eq!(field_of(c.validate(20)), "critical_recovery");
    }

    #[test]
    fn reserve_must_leave_room_for_others() {
        let c = GuardConfig {
            critical_reserve: Some(20),
            ..GuardConfig::default()
        };
        assert_eq!(field_of(c.validate(20)), "critical_reserve");
        assert_eq!(GuardConfig::default().reserve_for(20), 2);
        assert_eq!(GuardConfig::default().reserve_for(3), 1);
        assert_eq!(GuardConfig::default().reserve_for(1), 0);
    }

    #[test]
    fn zero_limits_name_the_nested_field() {
        let mut c = GuardConfig::default();
        c.limits.tight_in_flight = 0;
        assert_eq!(field_of(c.validate(20)), "limits.tight_in_flight");
    }

    #[test]
    fn error_message_names_field() {
        let e = BuildError::field("queue_depth", "must be at least 1");
        assert_eq!(
            e.to_string(),
            "invalid poolguard config: `queue_depth` must be at least 1"
        );
    }

    #[test]
    fn config_reads_from_json_with_defaults() {
        let c: GuardConfig =
            serde_json::from_str(r#"{"warning_utilization":0.7,"min_dwell":250}"#).unwrap();
        assert_eq!(c.warning_utilization, 0.7);
        assert_eq!(c.min_dwell, Duration::from_millis(250));
        assert_eq!(c.critical_utilization, 0.92);
    }
}
