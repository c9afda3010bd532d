//! The configuration of a time-budgeted batch: how long one call may take and how big its
//! chunks may be.

use crate::config::BuildError;
use std::time::Duration;

/// How a [`BudgetedBatch`](super::BudgetedBatch) sizes its chunks.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `budget` | 10 s | the time one call may take (e.g. a platform's function limit) |
/// | `budget_fraction` | 0.8 | share of `budget` the chunks may use; the rest is margin |
/// | `initial_chunk` | 100 | chunk size while the per-item cost is still unknown |
/// | `min_chunk` | 1 | smallest chunk; a call stops rather than run a smaller one |
/// | `max_chunk` | 1000 | largest chunk, however cheap items are |
/// | `warning_factor` | 0.5 | chunks are multiplied by this while the level is Warning |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPlan {
    /// The time one call may take, measured from its start.
    pub budget: Duration,
    /// The share of `budget` that chunks are planned into, in `(0, 1]`. The rest absorbs
    /// estimation errors and the response.
    pub budget_fraction: f64,
    /// The size of the first chunk while nothing is known about the per-item cost.
    pub initial_chunk: usize,
    /// The smallest chunk worth starting.
    pub min_chunk: usize,
    /// The largest chunk.
    pub max_chunk: usize,
    /// The factor chunks are shrunk by while the guard is at [`Level::Warning`](crate::monitor::Level),
    /// in `(0, 1]`.
    pub warning_factor: f64,
}

impl Default for BatchPlan {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(10),
            budget_fraction: 0.8,
            initial_chunk: 100,
            min_chunk: 1,
            max_chunk: 1000,
            warning_factor: 0.5,
        }
    }
}

impl BatchPlan {
    /// The default plan with another budget.
    pub fn with_budget(budget: Duration) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// The part of the budget chunks are planned into: `budget * budget_fraction`.
    pub fn usable(&self) -> Duration {
        self.budget.mul_f64(self.budget_fraction)
    }

    /// Checks the fields; [`BudgetedBatch::new`](super::BudgetedBatch::new) calls this.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.budget.is_zero() {
            return Err(BuildError::field("budget", "must be more than zero"));
        }
        let ratio = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(BuildError::field(
                    name,
                    format!("must be in (0, 1], got {v}"),
                ))
            }
        };
        ratio("budget_fraction", self.budget_fraction)?;
        ratio("warning_factor", self.warning_factor)?;
        if self.min_chunk == 0 {
            return Err(BuildError::field("min_chunk", "must be at least 1"));
        }
        if self.max_chunk < self.min_chunk {
            return Err(BuildError::field("max_chunk", "must be at least min_chunk"));
        }
        if !(self.min_chunk..=self.max_chunk).contains(&self.initial_chunk) {
            return Err(BuildError::field(
                "initial_chunk",
                "must be between min_chunk and max_chunk",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_is_valid_and_uses_eighty_percent() {
        let plan = BatchPlan::default();
        plan.validate().unwrap();
        assert_eq!(plan.usable(), Duration::from_secs(8));
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |p: BatchPlan| p.validate().unwrap_err().to_string();
        let d = BatchPlan::default();
        assert!(bad(BatchPlan {
            budget_fraction: 1.5,
            ..d
        })
        .contains("budget_fraction"));
        assert!(bad(BatchPlan { min_chunk: 0, ..d }).contains("min_chunk"));
        assert!(bad(BatchPlan {
            max_chunk: 0,
            min_chunk: 1,
            ..d
        })
        .contains("max_chunk"));
        assert!(bad(BatchPlan {
            initial_chunk: 5000,
            ..d
        })
        .contains("initial_chunk"));
        assert!(bad(BatchPlan {
            budget: Duration::ZERO,
            ..d
        })
        .contains("budget"));
    }
}
