//! Incidents: self-heal events grouped into episodes of pressure, with their peak, the
//! actions taken, the impact on requests, the recovery time and, once written, an analysis.
//!
//! [`IncidentTracker`] is the pure core (events in, closed incidents out; time comes from the
//! events). [`IncidentStore`] keeps the active incident and the last closed ones.
//! [`report::spawn_incident_pipeline`](crate::report::spawn_incident_pipeline) wires both to
//! an [`EventBus`](crate::events::EventBus) and hands closed incidents to a
//! [`Reporter`](crate::report::Reporter). [`local_summary`] writes the
//! `[AUTO-RESOLVED] ...` alert text without any LLM.
//!
//! ```no_run
//! use poolguard::events::EventBus;
//! use poolguard::incident::IncidentStore;
//! use poolguard::report::spawn_incident_pipeline;
//!
//! # async fn run() {
//! let bus = EventBus::new(1024);
//! let store = IncidentStore::default();
//! let _task = spawn_incident_pipeline(&bus, store.clone(), None);
//! // ... later, e.g. from an admin route:
//! let recent = store.recent(10);
//! let json = store.to_json();
//! # let _ = (recent, json);
//! # }
//! ```

mod deprecated;
pub(crate) mod local;
mod model;
mod store;
pub(crate) mod timefmt;
mod tracker;

#[cfg(test)]
mod tests;

#[allow(deprecated)]
pub use deprecated::{spawn_incident_pipeline, spawn_incident_pipeline_with};
pub use local::{impact_line, local_summary, subject};
pub use model::{Action, Analysis, AnalysisKind, Impact, Incident};
pub use store::{IncidentStore, DEFAULT_STORE_CAPACITY};
pub use tracker::{
    IncidentTracker, DEFAULT_IDLE_CLOSE, DEFAULT_MAX_TIMELINE, DEFAULT_QUIET_PERIOD,
};
