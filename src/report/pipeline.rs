//! The background task that turns the event bus into stored (and reported) incidents: it
//! wires the incident tracker and store to the bus, and hands closed incidents to the
//! [`Reporter`].

use super::reporter::Reporter;
use crate::events::EventBus;
use crate::incident::{IncidentStore, IncidentTracker, DEFAULT_QUIET_PERIOD};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// How often the pipeline checks whether an incident's quiet period has passed.
const QUIET_CHECK: Duration = Duration::from_millis(200);

/// Subscribes to `bus` now and spawns a task that tracks incidents, keeps `store` up to date,
/// and hands every closed incident to `reporter` (a non-blocking hand-off: a full reporter
/// queue drops the report and counts it, it never slows the bus).
///
/// The task ends when every [`EventBus`] clone is dropped. Publishers are never blocked: the
/// bus is bounded and a lagging pipeline loses the oldest events (counted by the bus).
///
/// An incident closes once the level has stayed Normal for [`DEFAULT_QUIET_PERIOD`] (10 s):
/// a re-escalation inside it continues the same incident. Use
/// [`spawn_incident_pipeline_with`] for another quiet period.
///
/// Must be called inside a Tokio runtime.
pub fn spawn_incident_pipeline(
    bus: &EventBus,
    store: IncidentStore,
    reporter: Option<Reporter>,
) -> JoinHandle<()> {
    let tracker = IncidentTracker::default().quiet_period(DEFAULT_QUIET_PERIOD);
    spawn_incident_pipeline_with(bus, store, reporter, tracker)
}

/// [`spawn_incident_pipeline`] with a tracker of your own (its quiet period, its timeline
/// bound). Numbering continues after the incidents already in `store`.
///
/// ```no_run
/// use poolguard::events::EventBus;
/// use poolguard::incident::{IncidentStore, IncidentTracker};
/// use poolguard::report::spawn_incident_pipeline_with;
/// use std::time::Duration;
///
/// # async fn run() {
/// let bus = EventBus::new(1024);
/// let tracker = IncidentTracker::default().quiet_period(Duration::from_secs(30));
/// let _task = spawn_incident_pipeline_with(&bus, IncidentStore::default(), None, tracker);
/// # }
/// ```
pub fn spawn_incident_pipeline_with(
    bus: &EventBus,
    store: IncidentStore,
    reporter: Option<Reporter>,
    tracker: IncidentTracker,
) -> JoinHandle<()> {
    let mut sub = bus.subscribe();
    let last_id = store
        .active()
        .into_iter()
        .chain(store.recent(1))
        .map(|i| i.id)
        .max()
        .unwrap_or(0);
    let mut tracker = tracker.starting_at(last_id + 1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(QUIET_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let closed = tokio::select! {
                event = sub.recv() => {
                    let Some(event) = event else { break };
                    let was_active = tracker.active().is_some();
                    let closed = tracker.observe(&event);
                    if was_active || tracker.active().is_some() {
                        store.set_active(tracker.active().cloned());
                    }
                    closed
                }
                _ = tick.tick() => {
                    let now = SystemTime::now();
                    let closed = tracker.close_if_quiet(now).or_else(|| tracker.close_if_idle(now));
                    if closed.is_some() {
                        store.set_active(tracker.active().cloned());
                    }
                    closed
                }
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
