//! What a watchdog does as one replica among several of its service: read the census, take or
//! keep the lead, reap the orphans of instances that are gone (the leader only), split the
//! kill budget between the live watchdogs, and size the pool from the connection budget.

use super::budget::{BudgetInput, BudgetPlanner};
use super::census;
use super::leader::Leadership;
use super::reaper::IdleReaper;
use super::resize;
use super::{ServerHeadroom, WatchdogConfig};
use crate::events::ResizeReason;
use crate::guard::GuardInner;
use crate::identity::Identity;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio_postgres::Client;

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
        inner: &Arc<GuardInner>,
        config: &WatchdogConfig,
        h: &ServerHeadroom,
    ) -> Result<usize, tokio_postgres::Error> {
        let census = census::read(client, &self.identity).await?;
        let mut kills = (config.max_kills_per_interval / census.watchdogs()).max(1);
        if let Some(leadership) = &mut self.leadership {
            if leadership.refresh(client).await? {
                self.orphans
                    .tick(client, inner, config, &census.orphans, &mut kills)
                    .await;
            }
        }
        if config.budget.enabled {
            let s = inner.status();
            let input = BudgetInput::new(s.max_size, s.size, h, &census);
            if let Some(to) = self.planner.decide(&config.budget, &input) {
                resize::apply(inner, s.max_size, to, ResizeReason::BudgetShare);
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
