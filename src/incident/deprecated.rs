//! The incident pipeline's old home: it moved to [`crate::report`], the layer above incidents
//! that it wires them to. These forwarders go with the next release.

use super::{IncidentStore, IncidentTracker};
use crate::events::EventBus;
use crate::report::Reporter;
use tokio::task::JoinHandle;

/// The old path of
/// [`report::spawn_incident_pipeline`](crate::report::spawn_incident_pipeline).
#[deprecated(
    since = "0.2.0",
    note = "moved to `poolguard::report::spawn_incident_pipeline`"
)]
pub fn spawn_incident_pipeline(
    bus: &EventBus,
    store: IncidentStore,
    reporter: Option<Reporter>,
) -> JoinHandle<()> {
    crate::report::spawn_incident_pipeline(bus, store, reporter)
}

/// The old path of
/// [`report::spawn_incident_pipeline_with`](crate::report::spawn_incident_pipeline_with).
#[deprecated(
    since = "0.2.0",
    note = "moved to `poolguard::report::spawn_incident_pipeline_with`"
)]
pub fn spawn_incident_pipeline_with(
    bus: &EventBus,
    store: IncidentStore,
    reporter: Option<Reporter>,
    tracker: IncidentTracker,
) -> JoinHandle<()> {
    crate::report::spawn_incident_pipeline_with(bus, store, reporter, tracker)
}
