//! Acquiring a connection through the guard: admission, the wait for a slot (bounded by the
//! waiter's deadline), `Pool::get` and the per-class session settings, sent ahead of the
//! caller's first query.

use super::guard_ref::GuardRef;
use super::inner::GuardInner;
use crate::admission::{Admit, GuardedConn, SlotPermit};
use crate::criticality::Criticality;
use crate::error::Error;
use crate::limit::UserKey;
use crate::metrics::Outcome;
use crate::rejection::{Rejection, RejectionKind};
use crate::stripes::Stripes;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who an acquisition is for: the user key (for fairness) and a route or caller label (for
/// events). Both optional.
#[derive(Debug, Clone, Default)]
pub struct AcquireContext {
    /// The user the acquisition is made for.
    pub user: Option<UserKey>,
    /// The route or caller label, shown in events.
    pub route: Option<Arc<str>>,
}

/// A refused acquisition: the error its caller gets, and the outcome it is counted as.
pub(super) type Refused = (Error, Outcome);

/// Sends `session` (the per-class `SET`s) on `conn` ahead of the caller's first query, without
/// waiting for the answer: a checkout costs no round trip of its own for them. tokio-postgres
/// sends a request when its future is first polled and the server runs a connection's
/// requests in the order they were sent, so every query on the connection runs with the
/// settings; the connection reads past the answer of a request nobody waits for. A `SET` of a
/// value the guard validated fails only on a broken connection, which the caller's query
/// then reports; a connection already known closed is refused here.
fn send_ahead(conn: &GuardedConn, session: &str) -> Result<(), Error> {
    use futures_util::FutureExt;
    match tokio_postgres::Client::batch_execute(conn, session).now_or_never() {
        Some(Err(e)) => Err(Error::from_query(e)),
        Some(Ok(())) | None => Ok(()),
    }
}

/// The `acquire` span (target `poolguard`); `outcome` and `wait_ms` are recorded when the
/// acquisition ends.
pub(super) fn acquire_span(class: Criticality, route: Option<&str>) -> tracing::Span {
    tracing::info_span!(
        target: "poolguard",
        "acquire",
        class = class.as_str(),
        route = route.unwrap_or(""),
        outcome = tracing::field::Empty,
        wait_ms = tracing::field::Empty,
    )
}

impl GuardRef {
    /// Acquires a slot and a connection as `class`, starting by `deadline` or not at all.
    ///
    /// Records an `acquire` span (target `poolguard`) whose fields `class`, `route`,
    /// `outcome` and `wait_ms` say what happened; what the guard logs on the way is logged in
    /// it. One state machine from admission to the session settings: each future awaited
    /// here is built in place, not moved through a wrapper of its own (the pool's checkout
    /// alone is 1.5 KB).
    pub(super) async fn acquire(
        self: &Arc<Self>,
        class: Criticality,
        context: AcquireContext,
        deadline: Instant,
    ) -> Result<GuardedConn, Error> {
        let started = crate::clock::now();
        let span = acquire_span(class, context.route.as_deref());
        // Each way out returns at once: the connection is moved as little as it can be (it
        // is a few hundred bytes), and a refusal carries none.
        let permit = match self
            .admit_slot(self, class, &context.user, deadline, started)
            .await
        {
            Ok(permit) => permit,
            Err(refused) => return Err(self.finish_refused(&span, class, started, refused)),
        };
        let pending = PendingGet::enter(&self.pending_gets);
        let object = self.pool.timeout_get(&self.timeouts).await;
        drop(pending);
        let object = match object {
            Ok(object) => object,
            Err(e) => {
                let refused = span.in_scope(|| self.pool_unavailable(class, &e, permit));
                return Err(self.finish_refused(&span, class, started, refused));
            }
        };
        // One reading for the hand-out: the connection is held from it, and the acquisition
        // ends with it (the session settings are sent without waiting).
        let handed_out = crate::clock::now();
        let conn = GuardedConn::new(
            object,
            permit,
            class,
            context.route,
            context.user,
            handed_out,
        );
        if let Some(session) = self.session_settings(class, &conn) {
            if let Err(e) = send_ahead(&conn, &session) {
                // The connection goes back before the acquisition is counted.
                drop(conn);
                let refused = (e, Outcome::PoolUnavailable);
                return Err(self.finish_refused(&span, class, started, refused));
            }
        }
        self.finish_acquire(&span, class, Outcome::Served, started, handed_out);
        Ok(conn)
    }
}

impl GuardInner {
    /// The refusal of an acquisition whose slot was granted but whose connection the pool
    /// could not hand out (`e`): the slot goes back at once.
    fn pool_unavailable(
        &self,
        class: Criticality,
        e: &deadpool_postgres::PoolError,
        permit: SlotPermit,
    ) -> Refused {
        tracing::warn!(target: "poolguard", error = %crate::error::describe_pool_error(e), %class, "pool could not hand out a connection");
        drop(permit);
        let rejection = self.rejection(RejectionKind::PoolUnavailable, class);
        (Error::Rejected(rejection), Outcome::PoolUnavailable)
    }

    /// The statements that give a connection of `class` its per-class session settings, if
    /// it has any ([`send_ahead`] sends them). Both are reset by the pool's recycling
    /// (`RESET ALL`) when the connection returns, back to the startup values.
    fn session_settings(&self, class: Criticality, conn: &GuardedConn) -> Option<String> {
        use std::fmt::Write;
        let timeout = self.config.class_statement_timeout.get(class);
        let prefix = self.tag_prefix.get();
        if timeout.is_none() && prefix.is_none() {
            return None;
        }
        // One buffer for both statements: one allocation per checkout.
        let mut session = String::with_capacity(128);
        if let Some(timeout) = timeout {
            let _ = write!(session, "SET statement_timeout = {};", timeout.as_millis());
        }
        if let Some(prefix) = prefix {
            session.push_str("SET application_name = '");
            // Id 0 names no connection: one handed out just before the watchdog began to
            // watch, and so not in the registry.
            let id = conn.held_id().unwrap_or(0);
            crate::watchdog::write_tag(&mut session, prefix, class, id);
            session.push_str("';");
        }
        Some(session)
    }

    /// Records how an acquisition started at `started` ended at `ended`: on its span, in the
    /// outcome counts and, when served, in the wait histogram.
    pub(super) fn finish_acquire(
        &self,
        span: &tracing::Span,
        class: Criticality,
        outcome: Outcome,
        started: Instant,
        ended: Instant,
    ) {
        // A slot granted at once ends at the reading it started with: no wait to work out.
        let wait = if ended > started {
            ended.duration_since(started)
        } else {
            Duration::ZERO
        };
        span.record("outcome", outcome.as_str());
        span.record("wait_ms", wait.as_secs_f64() * 1000.0);
        self.count(class, outcome);
        if outcome == Outcome::Served {
            self.metrics.acquire_wait(class, wait.as_secs_f64());
        }
    }

    /// Records how a refused acquisition started at `started` ended (now), and gives back the
    /// error its caller gets.
    fn finish_refused(
        &self,
        span: &tracing::Span,
        class: Criticality,
        started: Instant,
        (error, outcome): Refused,
    ) -> Error {
        self.finish_acquire(span, class, outcome, started, crate::clock::now());
        error
    }

    /// Admission of one acquisition started at `now`: a slot now, a slot after a wait in the
    /// queue (bounded by `deadline`), or the refusal as it is counted. Everything `acquire`
    /// does before `Pool::get`. One future for the fast grant and the decision under the
    /// lock, so that the arguments are kept once.
    pub(super) async fn admit_slot(
        self: &Arc<Self>,
        owner: &Arc<GuardRef>,
        class: Criticality,
        user: &Option<UserKey>,
        deadline: Instant,
        now: Instant,
    ) -> Result<SlotPermit, Refused> {
        if self.slots.try_grant(class) {
            return Ok(SlotPermit::new(owner.clone(), class, now));
        }
        let admit = self.change_at(now, |s, now, effects| {
            s.admit_into(class, user.clone(), deadline, now, effects)
        });
        match admit {
            Admit::Granted => Ok(SlotPermit::new(owner.clone(), class, now)),
            Admit::Rejected(mut refusal) => {
                refusal.retry_after = self.book_return(class, refusal.retry_after);
                Err(self.refused(class, refusal))
            }
            Admit::Enqueued { id, rx } => {
                // Deferred: counted apart from the request's final outcome.
                self.count(class, Outcome::Queued);
                let mut waiting = QueuedWaiter {
                    inner: self,
                    class,
                    user,
                    id,
                    answered: false,
                };
                // The deadline keeper refuses the waiter at its deadline; without a keeper
                // (its runtime stopped) the waiter keeps a timer of its own, on the heap: a
                // timer is large, and every acquisition's future would have its room.
                let granted = if self.deadlines.running() {
                    Some(rx.await)
                } else {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    Box::pin(tokio::time::timeout_at(deadline, rx)).await.ok()
                };
                // A grant or a refusal took the waiter out of the queue already.
                waiting.answered = matches!(granted, Some(Ok(_)));
                waiting.leave_queue();
                match granted {
                    Some(Ok(Ok(permit))) => Ok(permit),
                    // Its return was booked when it was refused.
                    Some(Ok(Err(refusal))) => Err(self.refused(class, refusal)),
                    Some(Err(_)) | None => {
                        let rejection = self.rejection(RejectionKind::QueueTimeout, class);
                        Err((Error::Rejected(rejection), Outcome::TimedOut))
                    }
                }
            }
        }
    }

    fn refused(&self, class: Criticality, refusal: crate::rejection::Refusal) -> Refused {
        let kind = refusal.kind;
        let outcome = match kind {
            RejectionKind::QueueFull => Outcome::QueueFull,
            RejectionKind::QueueTimeout => Outcome::TimedOut,
            RejectionKind::PoolUnavailable => Outcome::PoolUnavailable,
            _ => Outcome::Shed,
        };
        let rejection = Rejection {
            kind,
            class,
            retry_after: refusal.retry_after,
        };
        (Error::Rejected(rejection), outcome)
    }
}

/// An acquisition waiting in the queue. If the acquiring future is dropped (its caller gave
/// up) or times out, this takes it out of the queue so it never runs.
struct QueuedWaiter<'a> {
    inner: &'a Arc<GuardInner>,
    class: Criticality,
    user: &'a Option<UserKey>,
    id: u64,
    /// Set once a grant or a refusal arrived: the state took the waiter out of the queue.
    answered: bool,
}

impl QueuedWaiter<'_> {
    /// Takes the waiter out of the queue if it is still there (a grant already sent is
    /// released by the receiver's drop).
    fn leave_queue(self) {
        drop(self);
    }
}

impl Drop for QueuedWaiter<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (class, user, id) = (self.class, self.user, self.id);
        // Leaving the queue can lower the pressure.
        self.inner.change(|state, now| {
            let effects = if state.cancel(class, user, id) {
                state.observe(now)
            } else {
                Default::default()
            };
            ((), effects)
        });
    }
}

impl GuardInner {
    /// Acquisitions inside `Pool::get` now, by their slots.
    pub(super) fn gets_pending(&self) -> usize {
        PendingGet::count(&self.pending_gets)
    }
}

/// Counts one acquisition inside `Pool::get`, also when its future is dropped there: one up
/// in the entering thread's copy, one down in the leaving thread's (the sum is what counts).
struct PendingGet<'a>(&'a Stripes<AtomicU64>);

impl<'a> PendingGet<'a> {
    fn enter(count: &'a Stripes<AtomicU64>) -> Self {
        count.mine().add(|c| c, 1);
        PendingGet(count)
    }
}

impl PendingGet<'_> {
    /// The acquisitions `count` holds inside `Pool::get`. An entry and its exit may count in
    /// two threads' copies, read one by one: a sum read between them can be one short, below
    /// zero for a moment, and is read as zero then.
    fn count(count: &Stripes<AtomicU64>) -> usize {
        let [pending] = count.sum(std::array::from_ref);
        usize::try_from(pending as i64).unwrap_or(0)
    }
}

impl Drop for PendingGet<'_> {
    fn drop(&mut self) {
        // Minus one, wrapping: the copies are added up wrapping too.
        self.0.mine().add(|c| c, u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_entered_on_one_thread_and_left_on_another_is_counted_out() {
        let count = Stripes::<AtomicU64>::default();
        let here = PendingGet::enter(&count);
        let moved = PendingGet::enter(&count);
        assert_eq!(PendingGet::count(&count), 2);
        // Left on another thread: taken off that thread's copy.
        std::thread::scope(|s| {
            s.spawn(move || drop(moved));
        });
        assert_eq!(PendingGet::count(&count), 1);
        drop(here);
        assert_eq!(PendingGet::count(&count), 0);
    }

    #[test]
    fn a_sum_read_between_an_entry_and_its_exit_is_never_below_zero() {
        // The exit's copy read, the entry's not yet: minus one in all.
        let count = Stripes::<AtomicU64>::default();
        count.mine().add(|c| c, u64::MAX);
        assert_eq!(PendingGet::count(&count), 0);
    }
}
