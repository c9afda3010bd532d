//! The connection the guard hands out.

use super::abandon::{self, Unfinished};
use super::tracked::tracked_queries;
use super::tracker::{QueryState, Tracker};
use super::{GuardedTransaction, SlotPermit};
use crate::criticality::Criticality;
use crate::error::Error;
use crate::limit::UserKey;
use deadpool_postgres::{ClientWrapper, Object};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, ToStatement};

/// A pooled connection held through the guard.
///
/// It dereferences to deadpool's [`ClientWrapper`] (and so to [`tokio_postgres::Client`]) for
/// the whole client API. The query methods defined here are *tracked*:
///
/// - each is bounded by the guard's client-side
///   [`query_deadline`](crate::GuardConfig::query_deadline): a query that gets no answer in
///   time (a stalled network) is answered [`Error::QueryDeadline`], and so is every later
///   query on this connection;
/// - if the request that runs one is dropped before the query finishes (client gone, tower
///   timeout), or a query ran past its deadline, dropping this connection cancels the query on
///   the server and checks the connection before it goes back to the pool (a connection that
///   does not answer the check is discarded), so the next borrower never gets a connection
///   with a query or a broken transaction in flight;
/// - a statement stopped by `statement_timeout` comes back as [`Error::QueryCanceled`].
///
/// Dropping it returns the connection to the pool and its slot to the guard.
#[derive(Debug)]
pub struct GuardedConn {
    object: Option<Object>,
    permit: Option<SlotPermit>,
    class: Criticality,
    route: Option<Arc<str>>,
    /// Its id in the guard's registry of held connections, when recorded there (while a
    /// watchdog watches the guard).
    held_id: Option<u64>,
    acquired_at: Instant,
    queries: QueryState,
}

impl GuardedConn {
    /// The connection `object` handed out at `now` on `permit`'s slot, for `route` and `user`.
    pub(crate) fn new(
        object: Object,
        mut permit: SlotPermit,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
        now: Instant,
    ) -> Self {
        let held_id = permit.register(class, route.as_ref(), user, now);
        let deadline = permit.inner().query_deadline(class);
        Self {
            held_id,
            object: Some(object),
            permit: Some(permit),
            class,
            route,
            acquired_at: now,
            queries: QueryState::new(deadline),
        }
    }

    /// The class this connection was acquired as.
    pub fn class(&self) -> Criticality {
        self.class
    }

    /// The route or caller label it was acquired for, if known.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// Its id in the guard's registry of held connections, if recorded there (part of the
    /// tagged `application_name` when the watchdog asks for tagging).
    pub(crate) fn held_id(&self) -> Option<u64> {
        self.held_id
    }

    /// How long it has been held.
    pub fn held_for(&self) -> Duration {
        crate::clock::now().saturating_duration_since(self.acquired_at)
    }

    /// The client-side bound on each of its tracked queries.
    pub fn query_deadline(&self) -> Duration {
        self.queries.deadline()
    }

    fn tracker(&self) -> Tracker<'_> {
        Tracker {
            state: &self.queries,
            inner: self.permit.as_ref().map(SlotPermit::inner),
            class: self.class,
            route: self.route.as_ref(),
        }
    }
    tracked_queries!(tracker, client);

    /// Opens a transaction whose own query methods are tracked: see [`GuardedTransaction`].
    pub async fn transaction(&mut self) -> Result<GuardedTransaction<'_>, Error> {
        let tracker = Tracker {
            state: &self.queries,
            inner: self.permit.as_ref().map(SlotPermit::inner),
            class: self.class,
            route: self.route.as_ref(),
        };
        let client = self
            .object
            .as_deref_mut()
            .expect("the object is present until drop");
        GuardedTransaction::begin(client, tracker).await
    }

    fn client(&self) -> &ClientWrapper {
        self.object
            .as_deref()
            .expect("the object is present until drop")
    }
}

impl Deref for GuardedConn {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        self.client()
    }
}

impl DerefMut for GuardedConn {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        self.object
            .as_deref_mut()
            .expect("the object is present until drop")
    }
}

impl Drop for GuardedConn {
    fn drop(&mut self) {
        let now = crate::clock::now();
        let held = now.saturating_duration_since(self.acquired_at);
        let Some(permit) = self.permit.take() else {
            return;
        };
        permit.inner().note_hold_time(self.class, held);
        let Some(object) = self.object.take() else {
            return;
        };
        if self.queries.unfinished() {
            let why = if self.queries.expired() {
                Unfinished::PastDeadline
            } else {
                Unfinished::Abandoned
            };
            // The slot goes back once the connection is clean (or closed).
            abandon::clean(object, permit, self.class, self.route.clone(), why);
            return;
        }
        // The object goes back to the pool here, before the slot is released, so the next
        // waiter finds it idle.
        drop(object);
        permit.release_at(now, held);
    }
}
