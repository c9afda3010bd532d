//! The slow-query killer: an `active` query older than its limit is cancelled; if the same
//! query (same pid, same `query_start`) still runs after the grace period, its backend is
//! terminated.

use super::activity::{self, Backend, Signal};
use super::describe::{class_of, describe};
use super::watched::WatchedGuard;
use super::WatchdogConfig;
use crate::events::{ActionOutcome, Event, EventKind};
use crate::metrics::{BACKENDS_TERMINATED, QUERIES_CANCELLED};
use std::collections::HashMap;
use std::time::{Instant, SystemTime};
use tokio_postgres::Client;
use tracing::Instrument;

/// One query the killer acted on, keyed by pid and `query_start`.
type QueryKey = (i32, SystemTime);

#[derive(Debug, Clone, Copy)]
struct Acted {
    /// When the cancel was sent (or reported, in dry run).
    cancelled_at: Instant,
    /// Whether termination was already tried (or reported).
    terminated: bool,
}

/// Remembers which queries were cancelled, to terminate the ones that ignore it. Its memory
/// survives a reconnect of the watchdog: entries are keyed by pid and `query_start`, so they
/// can only match the very query they were made for, and a query that ignored its cancel is
/// terminated after the grace period instead of being cancelled again.
#[derive(Debug, Default)]
pub(crate) struct SlowQueryKiller {
    acted: HashMap<QueryKey, Acted>,
}

impl SlowQueryKiller {
    /// One pass over the backends (oldest query first); spends at most `budget` kills.
    pub(crate) async fn tick(
        &mut self,
        client: &Client,
        guard: &dyn WatchedGuard,
        config: &WatchdogConfig,
        backends: &[Backend],
        budget: &mut usize,
    ) {
        // Forget queries that ended: their keys can never match again.
        self.acted.retain(|key, _| {
            backends
                .iter()
                .any(|b| b.is_active() && (b.pid, b.query_start) == (key.0, Some(key.1)))
        });
        for backend in backends.iter().filter(|b| b.is_active()) {
            let Some(started) = backend.query_start else {
                continue;
            };
            let limit = config.kill_after_for(class_of(backend, guard));
            if backend.running < limit {
                continue;
            }
            let key = (backend.pid, started);
            let signal = match self.acted.get(&key).copied() {
                Some(acted) if acted.terminated => continue,
                Some(acted) if acted.cancelled_at.elapsed() < config.cancel_grace => continue,
                Some(_) => Signal::TerminateQuery,
                None => Signal::CancelQuery,
            };
            if *budget == 0 {
                continue;
            }
            *budget -= 1;
            self.act(client, guard, config, backend, key, signal).await;
        }
    }

    /// Sends `signal` (a cancel, or a termination after an ignored cancel) to `backend`, or
    /// only reports it in dry run; records it and publishes the event.
    async fn act(
        &mut self,
        client: &Client,
        guard: &dyn WatchedGuard,
        config: &WatchdogConfig,
        backend: &Backend,
        key: QueryKey,
        signal: Signal,
    ) {
        let info = describe(backend, guard);
        let span = activity::action_span(signal, &info, backend.running, config.dry_run);
        let outcome = if config.dry_run {
            ActionOutcome::DryRun
        } else {
            activity::send(client, signal, backend)
                .instrument(span.clone())
                .await
        };
        span.record("outcome", outcome.as_str());
        let running = backend.running;
        let kind = match signal {
            Signal::CancelQuery => {
                if outcome == ActionOutcome::Done {
                    metrics::counter!(QUERIES_CANCELLED, "reason" => "slow_query").increment(1);
                }
                if outcome != ActionOutcome::Gone {
                    self.acted.insert(
                        key,
                        Acted {
                            cancelled_at: Instant::now(),
                            terminated: false,
                        },
                    );
                }
                EventKind::QueryCancelled {
                    backend: info,
                    running,
                    outcome,
                }
            }
            Signal::TerminateQuery | Signal::TerminateIdle => {
                if outcome == ActionOutcome::Done {
                    metrics::counter!(BACKENDS_TERMINATED, "reason" => "ignored_cancel")
                        .increment(1);
                }
                if let Some(a) = self.acted.get_mut(&key) {
                    a.terminated = true;
                }
                EventKind::BackendTerminated {
                    backend: info,
                    running,
                    outcome,
                }
            }
        };
        guard.events().publish(Event::now(kind));
    }
}
