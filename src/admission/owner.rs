//! [`SlotOwner`]: what a held slot and the connection on it need from the guard that granted
//! them. The guard implements it; admission depends on this trait, never on the guard.

use crate::criticality::Criticality;
use crate::events::EventBus;
use crate::limit::UserKey;
use crate::metrics::GuardMetrics;
use crate::tls::TlsConnector;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a slot goes back, where the connection on it is registered, and what it counts and
/// publishes.
pub(crate) trait SlotOwner: Send + Sync + fmt::Debug {
    /// A slot of `class` came back, held for `held` when a connection was handed out on it,
    /// with that connection's registry id; `at` is the holder's clock reading of the release,
    /// when it made one.
    fn release_slot(
        self: Arc<Self>,
        class: Criticality,
        held: Option<Duration>,
        id: Option<u64>,
        at: Option<Instant>,
    );
    /// Records a connection handed out at `now` in the registry of held connections, if it
    /// records (a watchdog watches the guard); returns its registry id then.
    fn register_held(
        &self,
        class: Criticality,
        route: Option<&Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Option<u64>;
    /// Records how long a connection of `class` was held.
    fn note_hold_time(&self, class: Criticality, held: Duration);
    /// Counts and reports a query stopped by `statement_timeout`.
    fn note_statement_timeout(&self, class: Criticality, route: Option<Arc<str>>);
    /// The guard's metric handles.
    fn metrics(&self) -> &GuardMetrics;
    /// The guard's event bus.
    fn events(&self) -> &EventBus;
    /// The client-side bound on each tracked query of a connection of `class`.
    fn query_deadline(&self, class: Criticality) -> Duration;
    /// The settings cancel requests connect with, when the guard knows them.
    fn direct(&self) -> Option<&tokio_postgres::Config>;
    /// The TLS connector cancel requests use.
    fn tls(&self) -> &TlsConnector;
}
