//! What a watchdog does as one replica among several of its service: read the census, take or
//! keep the lead, reap the orphans of instances that are gone (the leader only), split the
//! kill budget between the live watchdogs, and size the pool from the connection budget.

use super::budget::{BudgetInput, BudgetPlanner};
use super::census;
use super::leader::Leadership;
use super::reaper::IdleReaper;
use super::server_use::ServerUse;
use super::watched::WatchedGuard;
use super::WatchdogConfig;
use crate::events::ResizeReason;
use crate::identity::Identity;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_postgres::Client;

/// One watchdog's part of the service's kill budget: `max / watchdogs`, at least 1, so N
/// watchdogs together never spend more than `max` per interval (or N when `max < N`).
pub(crate) fn kill_share(max: usize, watchdogs: usize) -> usize {
    (max / watchdogs.max(1)).max(1)
}

/// The replica duties of one watchdog.
#[derive(Debug)]
pub(crate) struct Replicas {
    identity: Identity,
    leadership: Option<Leadership>,
    orphans: IdleReaper,
    planner: BudgetPlanner,
}

impl Replicas {
    pub(crate) fn new(identity: Identity, elect: bool, leader_flag: Arc<AtomicBool>) -> Self {
        let leadership = elect.then(|| Leadership::new(&identity, leader_flag));
        Self {
            identity,
            leadership,
            orphans: IdleReaper::default(),
            planner: BudgetPlanner::default(),
        }
    }

    /// One interval's duties; returns the kills this watchdog may still spend: its share
    /// (`max_kills_per_interval` over the live watchdogs of the service, at least 1), less
    /// the orphans it reaped as leader.
    pub(crate) async fn tick(
        &mut self,
        client: &Client,
        guard: &Arc<dyn WatchedGuard>,
        config: &WatchdogConfig,
        h: &ServerUse,
    ) -> Result<usize, tokio_postgres::Error> {
        let census = census::read(client, &self.identity).await?;
        let mut kills = kill_share(config.max_kills_per_interval, census.watchdogs());
        if let Some(leadership) = &mut self.leadership {
            if leadership.refresh(client).await? {
                self.orphans
                    .tick(client, &**guard, config, &census.orphans, &mut kills)
                    .await;
            }
        }
        if config.budget.enabled {
            let pool = guard.pool_figures();
            let input = BudgetInput::new(pool.max_size, pool.open, h, &census);
            if let Some(to) = self.planner.decide(&config.budget, &input) {
                Arc::clone(guard).resize_pool(pool.max_size, to, ResizeReason::BudgetShare);
            }
        }
        Ok(kills)
    }

    /// Whether this watchdog speaks for the server (raises the server-pressure event): the
    /// leader, or every watchdog when none is elected.
    pub(crate) fn announces(&self) -> bool {
        self.leadership.as_ref().is_none_or(Leadership::held)
    }

    /// The watchdog's session ended: the lead went with it.
    pub(crate) fn lost(&mut self) {
        if let Some(leadership) = &mut self.leadership {
            leadership.lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kill_share;

    #[test]
    fn the_kill_budget_is_split_between_live_watchdogs() {
        assert_eq!(kill_share(10, 1), 10);
        assert_eq!(kill_share(10, 3), 3);
        assert!(3 * kill_share(10, 3) <= 10);
        assert_eq!(kill_share(2, 5), 1, "every watchdog may still act");
        assert_eq!(kill_share(10, 0), 10);
    }
}
