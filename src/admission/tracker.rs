//! Tracking one query of a guarded connection: the in-flight count that tells an abandoned
//! query from a finished one, and the client-side query deadline.

use super::owner::SlotOwner;
use crate::criticality::Criticality;
use crate::error::Error;
use crate::events::{Event, EventKind, Severity};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// What a guarded connection knows about its queries in flight. Shared by the connection and
/// its transaction.
#[derive(Debug)]
pub(crate) struct QueryState {
    /// Tracked queries started and not finished. Decremented only when a query completes: a
    /// dropped future leaves it raised, which is how the connection's drop knows a query was
    /// abandoned mid-flight.
    in_flight: AtomicUsize,
    /// A query got no answer within the deadline: the connection's state is unknown until
    /// it has been checked, so it runs no further query.
    expired: AtomicBool,
    /// The client-side bound on each query.
    deadline: Duration,
}

impl QueryState {
    pub(crate) fn new(deadline: Duration) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            expired: AtomicBool::new(false),
            deadline,
        }
    }

    /// Whether a query was left unfinished (abandoned, or past its deadline).
    pub(crate) fn unfinished(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether a query ran past the deadline.
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// The client-side bound on each query.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }
}

/// Runs tracked queries for one connection: counts them in flight, bounds them by the
/// deadline, classifies their errors and reports statement timeouts and deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracker<'a> {
    pub(crate) state: &'a QueryState,
    pub(crate) inner: Option<&'a Arc<dyn SlotOwner>>,
    pub(crate) class: Criticality,
    pub(crate) route: Option<&'a Arc<str>>,
}

impl Tracker<'_> {
    /// Runs the query `make` makes within the deadline. Past it, the query stays counted in
    /// flight (the connection's drop cancels it on the server and checks the connection
    /// before reuse) and the answer is [`Error::QueryDeadline`]; so is every later query on
    /// the connection.
    ///
    /// The query's future is made here, in place, and polled beside the deadline's timer:
    /// not moved into this future and again into a `Timeout` (a query's future is a few
    /// hundred bytes to copy, twice per query).
    pub(crate) async fn run<T, F>(&self, make: impl FnOnce() -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let deadline = self.state.deadline;
        if self.state.expired() {
            return Err(Error::QueryDeadline { after: deadline });
        }
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut query = std::pin::pin!(make());
        let mut timer = std::pin::pin!(tokio::time::sleep(deadline));
        let answered = std::future::poll_fn(|cx| match query.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
        })
        .await;
        let Some(result) = answered else {
            self.state.expired.store(true, Ordering::Release);
            self.report_deadline();
            return Err(Error::QueryDeadline { after: deadline });
        };
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        result.map_err(|e| {
            // A cancel (the watchdog's, or anyone's) is also SQLSTATE 57014; only Postgres's
            // own statement_timeout is reported as one.
            let by_timeout = crate::error::stopped_by_statement_timeout(&e);
            let e = Error::from_query(e);
            if e.is_query_canceled() && by_timeout {
                if let Some(inner) = self.inner {
                    inner.note_statement_timeout(self.class, self.route.cloned());
                }
            }
            e
        })
    }

    fn report_deadline(&self) {
        let Some(inner) = self.inner else {
            return;
        };
        let route = self.route.map_or("an unnamed route", |r| r);
        tracing::warn!(target: "poolguard", class = %self.class, route, deadline_ms = self.state.deadline.as_millis() as u64, "a query got no answer within its deadline");
        inner.events().publish(Event::now(EventKind::Custom {
            name: "query_deadline".into(),
            severity: Severity::Warning,
            message: format!(
                "a {} query on {route} got no answer within {} ms: answered 504, cancelled on \
                 the server, its connection checked before reuse",
                self.class,
                self.state.deadline.as_millis()
            ),
        }));
    }
}
