//! Validating a [`GuardConfig`] against a pool size, and the critical reserve it implies.

use super::{BuildError, GuardConfig, UserLimits};
use crate::criticality::Criticality;
use std::time::Duration;

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
        if let Some(deadline) = self.query_deadline {
            if deadline < Duration::from_millis(1) {
                return Err(BuildError::field("query_deadline", "must be at least 1 ms"));
            }
        }
        nonzero("breaker_ramp", self.breaker_ramp)?;
        nonzero("sample_interval", self.sample_interval)?;
        if self.queue_depth == 0 {
            return Err(BuildError::field("queue_depth", "must be at least 1"));
        }
        if self.user_queue_depth == 0 {
            return Err(BuildError::field("user_queue_depth", "must be at least 1"));
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
            // PostgreSQL takes whole milliseconds, and 0 turns the timeout off: anything under
            // a millisecond would be set as 0.
            if let Some(t) = self.class_statement_timeout.get(class) {
                if t < Duration::from_millis(1) {
                    return Err(BuildError::field(
                        "class_statement_timeout",
                        format!(
                            "{class}: {t:?} is under a millisecond and would be set as 0, which \
                             disables the timeout; use at least 1ms, or leave it unset"
                        ),
                    ));
                }
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
        if self.early_retry_delay > super::MAX_EARLY_RETRY_DELAY {
            return Err(BuildError::field(
                "limits.early_retry_delay",
                format!(
                    "must be at most {} s, got {:?}",
                    super::MAX_EARLY_RETRY_DELAY.as_secs(),
                    self.early_retry_delay
                ),
            ));
        }
        if !self.early_retry_delay.is_zero() && self.max_delayed_refusals == 0 {
            return Err(BuildError::field(
                "limits.max_delayed_refusals",
                "must be at least 1 when limits.early_retry_delay is set",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClassTimeouts;

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
    fn a_class_timeout_under_a_millisecond_names_the_field() {
        // Set in whole milliseconds, these would be `statement_timeout = 0`: no timeout.
        for bad in [
            Duration::ZERO,
            Duration::from_micros(1),
            Duration::from_micros(999),
        ] {
            let c = GuardConfig {
                class_statement_timeout: ClassTimeouts {
                    standard: Some(bad),
                    ..ClassTimeouts::default()
                },
                ..GuardConfig::default()
            };
            assert_eq!(
                field_of(c.validate(20)),
                "class_statement_timeout",
                "{bad:?}"
            );
        }
        let one_ms = GuardConfig {
            class_statement_timeout: ClassTimeouts {
                standard: Some(Duration::from_millis(1)),
                ..ClassTimeouts::default()
            },
            ..GuardConfig::default()
        };
        one_ms.validate(20).unwrap();
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
    fn early_retry_pacing_names_its_fields() {
        let mut c = GuardConfig::default();
        c.limits.early_retry_delay = Duration::from_secs(11);
        assert_eq!(field_of(c.validate(20)), "limits.early_retry_delay");
        c.limits.early_retry_delay = Duration::from_secs(1);
        c.limits.max_delayed_refusals = 0;
        assert_eq!(field_of(c.validate(20)), "limits.max_delayed_refusals");
        // Off, a zero cap is not read.
        c.limits.early_retry_delay = Duration::ZERO;
        assert!(c.validate(20).is_ok());
    }
}
