//! Reading `pg_stat_activity` and signalling backends, guarded against hitting the wrong query.
//!
//! A signal is sent by a statement that re-reads the backend and matches it on its pid *and*
//! on the timestamp the decision was made on (`query_start` for a slow query, `state_change`
//! for an idle transaction) in the same statement: if the query ended in between, nothing is
//! sent. **Residual race:** the statistics snapshot and the signal are a few microseconds
//! apart inside that statement; a query that ends and is followed by a new one on the same
//! backend within that window can still receive the cancel. A `pg_terminate_backend` ends the
//! whole session either way.

use super::Scope;
use crate::events::ActionOutcome;
use std::time::{Duration, SystemTime};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// One client backend in scope, busy or idle in a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) pid: i32,
    pub(crate) role: Option<String>,
    pub(crate) application: Option<String>,
    pub(crate) state: String,
    pub(crate) query: String,
    pub(crate) query_start: Option<SystemTime>,
    pub(crate) state_change: Option<SystemTime>,
    /// `now() - query_start`.
    pub(crate) running: Duration,
    /// `now() - state_change`.
    pub(crate) in_state: Duration,
}

impl Backend {
    pub(crate) fn is_active(&self) -> bool {
        self.state == "active"
    }

    pub(crate) fn is_idle_in_transaction(&self) -> bool {
        self.state.starts_with("idle in transaction")
    }
}

/// How backends are picked: the scope's filter and its parameter.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    filter: &'static str,
    param: Option<String>,
}

impl Selector {
    /// `application` is the pool's `application_name` (needed by [`Scope::Application`]).
    pub(crate) fn new(scope: &Scope, application: Option<&str>) -> Option<Self> {
        Some(match scope {
            Scope::Application => Selector {
                // Exactly the pool's name (`{service}:{instance}`), or the name then `:` (the
                // per-checkout tags `{service}:{instance}:{class}:{id}`), in this database;
                // not every name that merely starts with it. No LIKE: `_` is a wildcard there
                // and allowed in application names.
                filter: "datname = current_database() \
                         AND (application_name = $1::text \
                          OR left(application_name, length($1::text) + 1) = ($1::text || ':'))",
                param: Some(application?.to_string()),
            },
            Scope::Role(role) => Selector {
                filter: "usename = $1",
                param: Some(role.clone()),
            },
            Scope::Database => Selector {
                filter: "datname = current_database()",
                param: None,
            },
        })
    }

    /// Busy and idle-in-transaction client backends in scope (never the watchdog's own),
    /// oldest query first.
    pub(crate) async fn scan(
        &self,
        client: &Client,
    ) -> Result<Vec<Backend>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT {BACKEND_COLUMNS} \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
               AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)') \
               AND {} \
             ORDER BY query_start",
            self.filter
        );
        let params: Vec<&(dyn ToSql + Sync)> = match &self.param {
            Some(p) => vec![p],
            None => vec![],
        };
        let rows = client.query(&sql, &params).await?;
        Ok(rows.iter().map(Backend::from_row).collect())
    }
}

/// The columns [`Backend::from_row`] reads, in its order.
pub(crate) const BACKEND_COLUMNS: &str =
    "pid, usename::text, application_name, state, coalesce(query, ''), \
     query_start, state_change, \
     coalesce(extract(epoch FROM clock_timestamp() - query_start), 0)::float8, \
     coalesce(extract(epoch FROM clock_timestamp() - state_change), 0)::float8";

impl Backend {
    /// A row whose first columns are [`BACKEND_COLUMNS`].
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> Backend {
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        Backend {
            pid: r.get(0),
            role: r.get(1),
            application: r.get::<_, Option<String>>(2).filter(|a| !a.is_empty()),
            state: r.get::<_, Option<String>>(3).unwrap_or_default(),
            query: r.get(4),
            query_start: r.get(5),
            state_change: r.get(6),
            running: secs(r.get(7)),
            in_state: secs(r.get(8)),
        }
    }
}

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `pg_cancel_backend` to the query that started at `query_start`.
    CancelQuery,
    /// `pg_terminate_backend` while the query that started at `query_start` still runs.
    TerminateQuery,
    /// `pg_terminate_backend` while the session is still idle in the same transaction state.
    TerminateIdle,
}

impl Signal {
    /// The action's name in spans: `cancel_query`, `terminate_query`, `terminate_idle`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Signal::CancelQuery => "cancel_query",
            Signal::TerminateQuery => "terminate_query",
            Signal::TerminateIdle => "terminate_idle",
        }
    }
}

/// The span around one watchdog action, with the fields people filter on: the action, the
/// backend's pid, class, route and query fingerprint, how long it had run (or idled), whether
/// this is a dry run, and (recorded once known) the outcome.
pub(crate) fn action_span(
    signal: Signal,
    info: &crate::events::BackendInfo,
    elapsed: Duration,
    dry_run: bool,
) -> tracing::Span {
    tracing::info_span!(
        target: "poolguard::watchdog",
        "watchdog_action",
        action = signal.as_str(),
        pid = info.pid,
        class = info.class.map(|c| c.as_str()),
        route = info.route.as_deref(),
        fingerprint = %info.fingerprint,
        elapsed_ms = elapsed.as_millis() as u64,
        dry_run,
        outcome = tracing::field::Empty,
    )
}

/// Sends `signal` to `backend` if it is still in the state the decision was made on.
pub(crate) async fn send(client: &Client, signal: Signal, backend: &Backend) -> ActionOutcome {
    let (sql, at) = match signal {
        Signal::CancelQuery => (
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND query_start = $2 AND state = 'active'",
            backend.query_start,
        ),
        Signal::TerminateQuery => (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND query_start = $2 AND state = 'active'",
            backend.query_start,
        ),
        Signal::TerminateIdle => (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND state_change = $2 \
               AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
            backend.state_change,
        ),
    };
    let Some(at) = at else {
        return ActionOutcome::Gone;
    };
    match client.query_opt(sql, &[&backend.pid, &at]).await {
        Ok(None) => ActionOutcome::Gone,
        Ok(Some(row)) if row.get::<_, Option<bool>>(0) == Some(true) => ActionOutcome::Done,
        Ok(Some(_)) => ActionOutcome::Failed,
        Err(e) => {
            tracing::warn!(target: "poolguard::watchdog", error = %e, pid = backend.pid, ?signal, "could not signal a backend");
            ActionOutcome::Failed
        }
    }
}
