//! The guard as the [`SlotOwner`] of the slots it grants: its state, or a [`GuardRef`] to it
//! (a slot granted to a request holds the request's reference, counted on the lines of its
//! thread, not the state's own count that every core writes).

use super::guard_ref::GuardRef;
use super::inner::GuardInner;
use crate::admission::SlotOwner;
use crate::criticality::Criticality;
use crate::events::EventBus;
use crate::limit::UserKey;
use crate::metrics::GuardMetrics;
use crate::tls::TlsConnector;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl SlotOwner for GuardInner {
    fn release_slot(
        self: Arc<Self>,
        class: Criticality,
        held: Option<Duration>,
        id: Option<u64>,
        at: Option<Instant>,
    ) {
        GuardInner::release_slot(&self, class, held, id, at);
    }

    fn register_held(
        &self,
        class: Criticality,
        route: Option<&Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Option<u64> {
        self.held.insert(class, route, user, now)
    }

    fn note_hold_time(&self, class: Criticality, held: Duration) {
        GuardInner::note_hold_time(self, class, held);
    }

    fn note_statement_timeout(&self, class: Criticality, route: Option<Arc<str>>) {
        GuardInner::note_statement_timeout(self, class, route);
    }

    fn metrics(&self) -> &GuardMetrics {
        &self.metrics
    }

    fn events(&self) -> &EventBus {
        &self.events
    }

    fn query_deadline(&self, class: Criticality) -> Duration {
        self.query_deadlines[class.index()]
    }

    fn direct(&self) -> Option<&tokio_postgres::Config> {
        self.direct.as_ref()
    }

    fn tls(&self) -> &TlsConnector {
        &self.tls
    }
}

/// Each call goes to the state's implementation above: a reference decides nothing of its
/// own.
impl SlotOwner for GuardRef {
    fn release_slot(
        self: Arc<Self>,
        class: Criticality,
        held: Option<Duration>,
        id: Option<u64>,
        at: Option<Instant>,
    ) {
        // The state's own release without a clone of the state: its count is not written.
        GuardInner::release_slot(self.state(), class, held, id, at);
    }

    fn register_held(
        &self,
        class: Criticality,
        route: Option<&Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Option<u64> {
        SlotOwner::register_held(self.state().as_ref(), class, route, user, now)
    }

    fn note_hold_time(&self, class: Criticality, held: Duration) {
        SlotOwner::note_hold_time(self.state().as_ref(), class, held);
    }

    fn note_statement_timeout(&self, class: Criticality, route: Option<Arc<str>>) {
        SlotOwner::note_statement_timeout(self.state().as_ref(), class, route);
    }

    fn metrics(&self) -> &GuardMetrics {
        SlotOwner::metrics(self.state().as_ref())
    }

    fn events(&self) -> &EventBus {
        SlotOwner::events(self.state().as_ref())
    }

    fn query_deadline(&self, class: Criticality) -> Duration {
        SlotOwner::query_deadline(self.state().as_ref(), class)
    }

    fn direct(&self) -> Option<&tokio_postgres::Config> {
        SlotOwner::direct(self.state().as_ref())
    }

    fn tls(&self) -> &TlsConnector {
        SlotOwner::tls(self.state().as_ref())
    }
}
