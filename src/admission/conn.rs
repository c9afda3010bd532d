//! The connection the guard hands out.

use super::{GuardedTransaction, SlotPermit};
use crate::events::{Event, EventKind};
use crate::limit::UserKey;
use crate::{Criticality, Error};
use deadpool_postgres::{ClientWrapper, Object};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, SimpleQueryMessage, ToStatement};

/// A pooled connection held through the guard.
///
/// It dereferences to deadpool's [`ClientWrapper`] (and so to [`tokio_postgres::Client`]) for
/// the whole client API. The query methods defined here are *tracked*: if the request that
/// runs one is dropped before the query finishes (client gone, tower timeout), dropping this
/// connection sends a server-side cancel and discards the connection instead of returning it
/// to the pool, so the next borrower never gets a connection with a query or a broken
/// transaction in flight. A statement stopped by `statement_timeout` comes back as
/// [`Error::StatementTimeout`].
///
/// Dropping it returns the connection to the pool and its slot to the guard.
#[derive(Debug)]
pub struct GuardedConn {
    object: Option<Object>,
    permit: Option<SlotPermit>,
    class: Criticality,
    route: Option<Arc<str>>,
    /// Its id in the guard's registry of held connections.
    held_id: u64,
    acquired_at: Instant,
    in_flight: AtomicUsize,
}

impl GuardedConn {
    pub(crate) fn new(
        object: Object,
        mut permit: SlotPermit,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
    ) -> Self {
        let held_id = permit.register(class, route.clone(), user);
        Self {
            held_id,
            object: Some(object),
            permit: Some(permit),
            class,
            route,
            acquired_at: Instant::now(),
            in_flight: AtomicUsize::new(0),
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

    /// Its id in the guard's registry of held connections (part of the tagged
    /// `application_name` when the watchdog asks for tagging).
    pub(crate) fn held_id(&self) -> u64 {
        self.held_id
    }

    /// How long it has been held.
    pub fn held_for(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    async fn tracked<T, F>(&self, query: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        // Decremented only when the query completes: a dropped future leaves it raised,
        // which is how `drop` knows a query was abandoned mid-flight.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let result = query.await;
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        result.map_err(|e| {
            // A cancel (the watchdog's, or anyone's) is also SQLSTATE 57014; only Postgres's
            // own statement_timeout is reported as one.
            let by_timeout = crate::error::stopped_by_statement_timeout(&e);
            let e = Error::from_query(e);
            if e.is_statement_timeout() && by_timeout {
                self.report_statement_timeout();
            }
            e
        })
    }

    fn report_statement_timeout(&self) {
        if let Some(permit) = &self.permit {
            permit
                .inner()
                .note_statement_timeout(self.class, self.route.clone());
        }
    }

    /// Runs a statement and returns its rows (tracked; see the type docs).
    pub async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.tracked(self.client().query(statement, params)).await
    }

    /// Runs a statement that returns exactly one row (tracked).
    pub async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.tracked(self.client().query_one(statement, params))
            .await
    }

    /// Runs a statement that returns at most one row (tracked).
    pub async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.tracked(self.client().query_opt(statement, params))
            .await
    }

    /// Runs a statement and returns the number of rows it touched (tracked).
    pub async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.tracked(self.client().execute(statement, params)).await
    }

    /// Runs one or more statements without parameters (tracked).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.tracked(self.client().batch_execute(sql)).await
    }

    /// Runs statements with the simple query protocol (tracked).
    pub async fn simple_query(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.tracked(self.client().simple_query(sql)).await
    }

    /// Opens a transaction that is tracked as a whole: see [`GuardedTransaction`].
    pub async fn transaction(&mut self) -> Result<GuardedTransaction<'_>, Error> {
        let client = self
            .object
            .as_deref_mut()
            .expect("the object is present until drop");
        GuardedTransaction::begin(client, &self.in_flight).await
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
        let held = self.acquired_at.elapsed();
        let Some(permit) = self.permit.take() else {
            return;
        };
        let inner = permit.inner().clone();
        inner.note_hold_time(self.class, held);
        if let Some(object) = self.object.take() {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                abandon(object, &inner, self.class, self.route.clone());
            }
            // Otherwise the object goes back to the pool here, before the slot is released
            // below, so the next waiter finds it idle.
        }
        drop(permit);
    }
}

/// A query is still running for a request that is gone: cancel it on the server and close
/// the connection instead of returning it to the pool.
fn abandon(
    object: Object,
    inner: &Arc<crate::guard::GuardInner>,
    class: Criticality,
    route: Option<Arc<str>>,
) {
    let client = Object::take(object);
    let token = client.cancel_token();
    let tls = inner.tls.clone();
    inner.metrics.abandoned.increment(1);
    let events = inner.events.clone();
    let report = move |cancel_sent: bool| {
        events.publish(Event::now(EventKind::QueryAbandoned {
            class,
            route: route.as_deref().map(str::to_string),
            cancel_sent,
        }))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let sent = token.cancel_query(tls).await.is_ok();
                drop(client);
                report(sent);
            });
        }
        Err(_) => {
            drop(client);
            report(false);
        }
    }
}
