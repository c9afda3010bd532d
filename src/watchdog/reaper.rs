//! The idle-in-transaction reaper: a session of ours left `idle in transaction` (or aborted)
//! longer than the bound holds a connection, locks and a snapshot for nothing; its backend is
//! terminated. The server then ends the session and closes its socket; nothing here touches
//! the client side. The pooled connection sees its socket closed, and when it is returned the
//! pool's recycle check (which looks at `is_closed()` before running its clean-up statements)
//! finds it closed and discards it instead of handing it out again.

use super::activity::{self, Backend, Signal};
use super::describe::describe;
use super::watched::WatchedGuard;
use super::WatchdogConfig;
use crate::events::{ActionOutcome, Event, EventKind};
use crate::metrics::BACKENDS_TERMINATED;
use std::collections::HashSet;
use std::time::SystemTime;
use tokio_postgres::Client;
use tracing::Instrument;

/// Remembers what it reported in dry run, so each idle session is reported once.
#[derive(Debug, Default)]
pub(crate) struct IdleReaper {
    reported: HashSet<(i32, SystemTime)>,
}

impl IdleReaper {
    /// One pass over the backends; spends at most `budget` terminations.
    pub(crate) async fn tick(
        &mut self,
        client: &Client,
        guard: &dyn WatchedGuard,
        config: &WatchdogConfig,
        backends: &[Backend],
        budget: &mut usize,
    ) {
        self.reported.retain(|key| {
            backends
                .iter()
                .any(|b| (b.pid, b.state_change) == (key.0, Some(key.1)))
        });
        for backend in backends.iter().filter(|b| b.is_idle_in_transaction()) {
            let Some(since) = backend.state_change else {
                continue;
            };
            if backend.in_state < config.idle_in_transaction_after
                || self.reported.contains(&(backend.pid, since))
            {
                continue;
            }
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let info = describe(backend, guard);
            let span = activity::action_span(
                Signal::TerminateIdle,
                &info,
                backend.in_state,
                config.dry_run,
            );
            let outcome = if config.dry_run {
                self.reported.insert((backend.pid, since));
                ActionOutcome::DryRun
            } else {
                activity::send(client, Signal::TerminateIdle, backend)
                    .instrument(span.clone())
                    .await
            };
            span.record("outcome", outcome.as_str());
            if outcome == ActionOutcome::Done {
                metrics::counter!(BACKENDS_TERMINATED, "reason" => "idle_in_transaction")
                    .increment(1);
            } else if outcome == ActionOutcome::Failed {
                // Do not retry (and report) every interval.
                self.reported.insert((backend.pid, since));
            }
            guard
                .events()
                .publish(Event::now(EventKind::IdleInTransactionReaped {
                    backend: info,
                    idle: backend.in_state,
                    outcome,
                }));
        }
    }
}
