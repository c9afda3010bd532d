//! Acquiring a connection through the guard: admission, the queue wait, `Pool::get` and the
//! per-class session settings.

use super::inner::GuardInner;
use crate::admission::{Admit, GuardedConn, SlotPermit};
use crate::limit::UserKey;
use crate::metrics::Outcome;
use crate::rejection::RejectionKind;
use crate::{Criticality, Error};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Who an acquisition is for: the user key (for fairness) and a route or caller label (for
/// events). Both optional.
#[derive(Debug, Clone, Default)]
pub struct AcquireContext {
    /// The user the acquisition is made for.
    pub user: Option<UserKey>,
    /// The route or caller label, shown in events.
    pub route: Option<Arc<str>>,
}

impl GuardInner {
    pub(super) async fn acquire(
        self: &Arc<Self>,
        class: Criticality,
        context: AcquireContext,
    ) -> Result<GuardedConn, Error> {
        let started = Instant::now();
        let (admit, effects) = self.lock().admit(class, context.user.clone(), started);
        self.apply(effects);
        let permit = match admit {
            Admit::Granted => SlotPermit::new(self.clone()),
            Admit::Rejected(kind) => {
                self.count(class, Outcome::Shed);
                return Err(Error::Rejected(self.rejection(kind, class)));
            }
            Admit::Enqueued { id, rx } => {
                self.count(class, Outcome::Queued);
                let waiting = QueuedWaiter {
                    inner: self,
                    class,
                    user: context.user.clone(),
                    id,
                    enqueued: started,
                };
                let granted = tokio::time::timeout(self.config.max_queue_wait, rx).await;
                waiting.leave_queue();
                match granted {
                    Ok(Ok(Ok(permit))) => permit,
                    Ok(Ok(Err(kind))) => {
                        self.count(class, Outcome::Shed);
                        return Err(Error::Rejected(self.rejection(kind, class)));
                    }
                    Ok(Err(_)) | Err(_) => {
                        self.count(class, Outcome::TimedOut);
                        return Err(Error::Rejected(
                            self.rejection(RejectionKind::QueueTimeout, class),
                        ));
                    }
                }
            }
        };
        let pending = PendingGet::enter(&self.pending_gets);
        let object = self.pool.timeout_get(&self.timeouts).await;
        drop(pending);
        let object = match object {
            Ok(object) => object,
            Err(e) => {
                tracing::warn!(target: "poolguard", error = %crate::error::describe_pool_error(&e), %class, "pool could not hand out a connection");
                drop(permit);
                self.count(class, Outcome::Shed);
                return Err(Error::Rejected(
                    self.rejection(RejectionKind::PoolUnavailable, class),
                ));
            }
        };
        let conn = GuardedConn::new(object, permit, class, context.route, context.user);
        // Both settings are reset by the pool's Clean recycling (RESET ALL) when the
        // connection returns, back to the startup values.
        let mut session = String::new();
        if let Some(timeout) = self.config.class_statement_timeout.get(class) {
            session.push_str(&format!("SET statement_timeout = {};", timeout.as_millis()));
        }
        if let Some(prefix) = self.tag_prefix.get() {
            session.push_str(&format!(
                "SET application_name = '{}';",
                crate::watchdog::tag(prefix, class, conn.held_id())
            ));
        }
        if !session.is_empty() {
            conn.batch_execute(&session).await?;
        }
        self.count(class, Outcome::Served);
        self.metrics
            .acquire_wait(class, started.elapsed().as_secs_f64());
        Ok(conn)
    }
}

/// An acquisition waiting in the queue. If the acquiring future is dropped (its caller gave
/// up) or times out, this takes it out of the queue so it never runs.
struct QueuedWaiter<'a> {
    inner: &'a Arc<GuardInner>,
    class: Criticality,
    user: Option<UserKey>,
    id: u64,
    enqueued: Instant,
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
        let effects = {
            let mut state = self.inner.lock();
            // Leaving the queue can lower the pressure.
            state
                .cancel(self.class, &self.user, self.id, self.enqueued)
                .then(|| state.observe(Instant::now()))
        };
        if let Some(effects) = effects {
            self.inner.apply(effects);
        }
    }
}

/// Counts one acquisition inside `Pool::get`, also when its future is dropped there.
struct PendingGet<'a>(&'a AtomicUsize);

impl<'a> PendingGet<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        PendingGet(count)
    }
}

impl Drop for PendingGet<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
