//! The background task that turns the event bus into stored (and reported) incidents.

use super::store::IncidentStore;
use super::tracker::IncidentTracker;
use crate::events::EventBus;
use crate::report::Reporter;
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// How often the pipeline checks for an incident that went quiet without leaving Normal.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Subscribes to `bus` now and spawns a task that tracks incidents, keeps `store` up to date,
/// and hands every closed incident to `reporter` (a non-blocking hand-off: a full reporter
/// queue drops the report and counts it, it never slows the bus).
///
/// The task ends when every [`EventBus`] clone is dropped. Publishers are never blocked: the
/// bus is bounded and a lagging pipeline loses the oldest events (counted by the bus).
///
/// Must be called inside a Tokio runtime.
pub fn spawn_incident_pipeline(
    bus: &EventBus,
    store: IncidentStore,
    reporter: Option<Reporter>,
) -> JoinHandle<()> {
    let mut sub = bus.subscribe();
    let last_id = store
        .active()
        .into_iter()
        .chain(store.recent(1))
        .map(|i| i.id)
        .max()
        .unwrap_or(0);
    let mut tracker = IncidentTracker::default().starting_at(last_id + 1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(IDLE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let closed = tokio::select! {
                event = sub.recv() => {
                    let Some(event) = event else { break };
                    let was_active = tracker.active().is_some();
                    let closed = tracker.observe(&event);
                    if closed.is_none() && (was_active || tracker.active().is_some()) {
                        store.set_active(tracker.active().cloned());
                    }
                    closed
                }
                _ = tick.tick() => tracker.close_if_idle(SystemTime::now()),
            };
            if let Some(incident) = closed {
                tracing::info!(
                    target: "poolguard::incident",
                    id = incident.id,
                    title = %incident.title(),
                    "[SELF-HEAL] incident #{} closed", incident.id
                );
                store.insert_closed(incident.clone());
                if let Some(reporter) = &reporter {
                    reporter.submit(incident);
                }
            }
        }
    })
}
