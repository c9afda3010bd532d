//! Sharing the server's connections between the replicas of a service: the budget is
//! `max_connections` less the reserved slots, less what other applications hold, less a
//! margin; each of the N live instances sizes its pool to its share of it, moving toward the
//! share in steps and never above it.

use super::census::Census;
use super::ServerUse;
use crate::config::BuildError;
use serde::{Deserialize, Serialize};

/// Sizing the pool from the service's share of the server. Off by default; needs a guard
/// built with [`Guard::builder_for`](crate::Guard::builder_for) (which names connections by instance).
///
/// | field | default |
/// | --- | --- |
/// | `enabled` | false |
/// | `margin` | 5 connections left free for everyone else |
/// | `step` | 4 connections added per interval at most |
/// | `min_size` | 2 (also the size a joining replica starts at) |
/// | `ceiling` | 0 (no ceiling but the share) |
///
/// Each interval, with `budget = usable - others - margin` and N instances of the service
/// connected: `share = (budget - join) / N - (this instance's connections outside its pool)`,
/// where `join = min_size + 1` keeps room for one more replica to join (its watchdog session
/// and its starting pool) before the others have seen it. A pool
/// above its share shrinks to it at once (connections in use close when returned); one below
/// grows by at most `step`, and at most by its part (1/N) of the budget still unused, and only
/// once the instance count has held for two readings, so replicas that have not yet seen a
/// newcomer have shrunk before it grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionBudget {
    /// Whether the pool is sized from the budget.
    pub enabled: bool,
    /// Server connections left free for everyone else.
    pub margin: u32,
    /// The most connections added per interval.
    pub step: usize,
    /// The pool never shrinks below this (it starts here too).
    pub min_size: usize,
    /// The pool never grows above this (0: only the share limits it).
    pub ceiling: usize,
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        Self {
            enabled: false,
            margin: 5,
            step: 4,
            min_size: 2,
            ceiling: 0,
        }
    }
}

impl ConnectionBudget {
    /// Checks the fields; the error names the first bad one.
    pub fn validate(&self) -> Result<(), BuildError> {
        if !self.enabled {
            return Ok(());
        }
        if self.step == 0 {
            return Err(BuildError::field("budget.step", "must be at least 1"));
        }
        if self.min_size == 0 {
            return Err(BuildError::field("budget.min_size", "must be at least 1"));
        }
        if self.ceiling != 0 && self.ceiling < self.min_size {
            return Err(BuildError::field(
                "budget.ceiling",
                "must be 0 (none) or at least min_size",
            ));
        }
        Ok(())
    }
}

/// What one interval looked like to this replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BudgetInput {
    /// The pool's current maximum size.
    pub(crate) current: usize,
    /// Connections the pool has open.
    pub(crate) pool_open: usize,
    /// Connections ordinary roles may open on the server.
    pub(crate) usable: u32,
    /// Connections of other applications.
    pub(crate) others: u32,
    /// Connections of the whole service.
    pub(crate) service: u32,
    /// Connections of this instance (its pool and its own sessions).
    pub(crate) own: u32,
    /// Instances of the service connected.
    pub(crate) instances: usize,
}

impl BudgetInput {
    /// The input from a census and the server-use reading.
    pub(crate) fn new(current: usize, pool_open: usize, h: &ServerUse, c: &Census) -> Self {
        Self {
            current,
            pool_open,
            usable: h.usable,
            others: c.other_connections,
            service: c.service_connections,
            own: c.own_connections,
            instances: c.instances.len().max(1),
        }
    }
}

/// Remembers the last instance count, to grow only once it has settled.
#[derive(Debug, Default)]
pub(crate) struct BudgetPlanner {
    last_instances: Option<usize>,
}

impl BudgetPlanner {
    /// The service's budget: what the server allows it, less the margin.
    pub(crate) fn service_budget(cfg: &ConnectionBudget, input: &BudgetInput) -> usize {
        (input.usable as usize)
            .saturating_sub(input.others as usize)
            .saturating_sub(cfg.margin as usize)
    }

    /// What the running replicas share: the budget less room for one replica to join.
    fn shared_budget(cfg: &ConnectionBudget, input: &BudgetInput) -> usize {
        Self::service_budget(cfg, input).saturating_sub(cfg.min_size + 1)
    }

    /// This replica's share: its part of the budget, less its connections outside the pool.
    pub(crate) fn share(cfg: &ConnectionBudget, input: &BudgetInput) -> usize {
        let overhead = (input.own as usize).saturating_sub(input.pool_open);
        let mut share = (Self::shared_budget(cfg, input) / input.instances.max(1))
            .saturating_sub(overhead)
            .max(cfg.min_size);
        if cfg.ceiling > 0 {
            share = share.min(cfg.ceiling);
        }
        share
    }

    /// The new size, if the pool should be resized now.
    pub(crate) fn decide(&mut self, cfg: &ConnectionBudget, input: &BudgetInput) -> Option<usize> {
        let settled = self.last_instances == Some(input.instances);
        self.last_instances = Some(input.instances);
        let share = Self::share(cfg, input);
        let current = input.current;
        if current > share {
            return Some(share);
        }
        if current == share || !settled {
            return None;
        }
        let unused = Self::shared_budget(cfg, input).saturating_sub(input.service as usize);
        let grow = cfg
            .step
            .min(unused / input.instances.max(1))
            .min(share - current);
        (grow > 0).then_some(current + grow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ConnectionBudget {
        ConnectionBudget {
            enabled: true,
            margin: 5,
            step: 4,
            min_size: 2,
            ceiling: 0,
        }
    }

    fn input(current: usize, instances: usize, service: u32) -> BudgetInput {
        // usable 97, others 12, margin 5: the service may hold 80; 77 once 3 are kept for a
        // joining replica (min_size 2 and its watchdog session).
        BudgetInput {
            current,
            pool_open: current,
            usable: 97,
            others: 12,
            service,
            own: current as u32 + 1,
            instances,
        }
    }

    #[test]
    fn grows_in_steps_to_the_share_once_the_count_settles_and_never_above() {
        let mut p = BudgetPlanner::default();
        let c = cfg();
        // 3 instances: 77 / 3 = 25, less the watchdog session = 24.
        assert_eq!(
            p.decide(&c, &input(2, 3, 30)),
            None,
            "count not settled yet"
        );
        assert_eq!(p.decide(&c, &input(2, 3, 30)), Some(6));
        let mut size = 6;
        for _ in 0..10 {
            if let Some(to) = p.decide(&c, &input(size, 3, 30)) {
                assert!(to <= 24 && to > size);
                size = to;
            }
        }
        assert_eq!(size, 24);
    }

    #[test]
    fn a_new_instance_makes_the_others_shrink_at_once() {
        let mut p = BudgetPlanner::default();
        let c = cfg();
        p.decide(&c, &input(24, 3, 75));
        // 4 instances: 77 / 4 - 1 = 18.
        assert_eq!(p.decide(&c, &input(24, 4, 75)), Some(18));
    }

    #[test]
    fn growth_takes_only_this_replicas_part_of_the_unused_budget() {
        let mut p = BudgetPlanner::default();
        let c = cfg();
        // 4 instances, 71 of 77 held: 6 unused, a quarter of it is 1.
        p.decide(&c, &input(10, 4, 71));
        assert_eq!(p.decide(&c, &input(10, 4, 71)), Some(11));
        assert_eq!(p.decide(&c, &input(11, 4, 77)), None, "nothing unused");
    }
}
