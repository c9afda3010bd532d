//! The guard: the cheap-to-clone handle that owns admission, levels, limits and events.

mod acquire;
mod builder;
mod deadlines;
mod guard_ref;
mod inner;
mod publish;
mod refusal_pacing;
mod retry_after;
mod sampler;
#[cfg(feature = "redis")]
mod shared_limits;
mod slot;
mod slot_owner;
mod status;
mod user_check;
mod watched;
mod window;

pub use acquire::AcquireContext;
pub use builder::GuardBuilder;
pub(crate) use guard_ref::GuardRef;
// The dashboard's history samples the guard's state without keeping it alive.
#[cfg(feature = "admin")]
pub(crate) use inner::GuardInner;
pub(crate) use refusal_pacing::{LateRefusal, RefusalDelay};
#[doc(hidden)]
pub use slot::HeldSlot;
pub use status::GuardStatus;
pub(crate) use user_check::check_user;

use crate::admission::GuardedConn;
use crate::config::BuildError;
use crate::config::GuardConfig;
use crate::criticality::Criticality;
use crate::error::Error;
use crate::events::{EventBus, EventSubscriber};
use crate::identity::Identity;
use crate::monitor::Level;
use crate::pool::{build_pool_as, PoolOptions};
use crate::rejection::RejectionKind;
use crate::single_flight::SharedRows;
use crate::tls::{PgUrl, TlsConnector};
use crate::watchdog::ServerUse;
use deadpool_postgres::Pool;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::types::ToSql;

/// Guards a deadpool-postgres pool: decides who gets a connection, when, and who is told to
/// come back later. Cheap to clone; every clone is the same guard.
///
/// Build it with [`Guard::builder`] (over a pool you built) or [`Guard::builder_for`] (builds
/// the pool with the session settings the guard relies on).
#[derive(Debug, Clone)]
pub struct Guard {
    /// The guard's state, through a reference counted apart from other guards' (clones of
    /// this one share it): see [`GuardRef`].
    pub(crate) inner: Arc<GuardRef>,
}

impl Guard {
    /// A guard over the same state whose clones are counted apart from this one's (see
    /// [`GuardRef`]).
    pub(crate) fn counted_apart(&self) -> Guard {
        Guard {
            inner: GuardRef::new(self.inner.state().clone()),
        }
    }

    /// A builder over an existing pool. The guard never waits on deadpool without a timeout
    /// (it passes its own), but `statement_timeout` and `application_name` must come from
    /// the pool's connection config: prefer [`Guard::builder_for`] or [`crate::pool::build_pool`].
    pub fn builder(pool: Pool) -> GuardBuilder {
        GuardBuilder {
            pool,
            config: GuardConfig::default(),
            direct: None,
            event_capacity: 1024,
            resets_sessions: false,
            tls: TlsConnector::plain(),
            identity: None,
        }
    }

    /// A builder for a guard over a new pool: builds the pool with `options` (statement
    /// timeout, application name, ...) over `pg`, and sets the guard's dedicated connection.
    /// Nothing connects until the first acquisition. TLS follows `pg`'s own `sslmode`
    /// ([`TlsConnector::for_config`]); for `verify-ca`, `verify-full` and `sslrootcert` use
    /// [`Guard::builder_for_url`] or [`Guard::builder_for_tls`].
    pub fn builder_for(
        pg: tokio_postgres::Config,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        let tls = TlsConnector::for_config(&pg)?;
        Self::builder_for_tls(pg, tls, options)
    }

    /// [`Guard::builder_for`] with `tls` for every connection: the pool's, cancel requests,
    /// the health check and the watchdog.
    pub fn builder_for_tls(
        pg: tokio_postgres::Config,
        tls: TlsConnector,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        let (pool, pg, identity) = build_pool_as(pg, &tls, options)?;
        let mut builder = Guard::builder(pool)
            .direct_connection(pg)
            .pool_resets_sessions(options.session_settings.owns_session())
            .tls(tls);
        builder.identity = Some(identity);
        Ok(builder)
    }

    /// [`Guard::builder_for_tls`] from a URL, honouring its `sslmode` and `sslrootcert`
    /// ([`PgUrl`]).
    pub fn builder_for_url(url: &str, options: &PoolOptions) -> Result<GuardBuilder, BuildError> {
        let url = PgUrl::parse(url)?;
        Self::builder_for_tls(url.config, url.tls, options)
    }

    /// The old name of [`Guard::builder_for`]: it connects nothing and returns a builder.
    #[deprecated(since = "0.2.0", note = "renamed to `Guard::builder_for`")]
    pub fn connect(
        pg: tokio_postgres::Config,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        Self::builder_for(pg, options)
    }

    /// The old name of [`Guard::builder_for_tls`].
    #[deprecated(since = "0.2.0", note = "renamed to `Guard::builder_for_tls`")]
    pub fn connect_tls(
        pg: tokio_postgres::Config,
        tls: TlsConnector,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        Self::builder_for_tls(pg, tls, options)
    }

    /// The old name of [`Guard::builder_for_url`].
    #[deprecated(since = "0.2.0", note = "renamed to `Guard::builder_for_url`")]
    pub fn connect_url(url: &str, options: &PoolOptions) -> Result<GuardBuilder, BuildError> {
        Self::builder_for_url(url, options)
    }

    /// The service and instance this guard's connections are named with; `None` for a guard
    /// over a pool built elsewhere.
    pub fn identity(&self) -> Option<&Identity> {
        self.inner.identity.as_ref()
    }

    /// Acquires a connection as `class`, waiting in the priority queue if needed, for at most
    /// [`max_queue_wait`](GuardConfig::max_queue_wait) (its deadline).
    ///
    /// Returns [`Error::Rejected`] when the guard refuses: at once when its expected start
    /// (its place in the queue over the class's measured drain rate) lies past the deadline
    /// or the queue is full, at the deadline when it was not started by then, or when the
    /// pool cannot hand out a connection. The rejection's `retry_after` is the estimate plus
    /// a bounded jitter. If the returned future is dropped while waiting, the waiter leaves
    /// the queue and never runs.
    ///
    /// The wait is counted from this call. The future is the guard's own acquisition, not a
    /// wrapper around it (so it is moved once, not once per layer).
    pub fn acquire(
        &self,
        class: Criticality,
    ) -> impl Future<Output = Result<GuardedConn, Error>> + Send + '_ {
        self.acquire_with(class, AcquireContext::default())
    }

    /// [`acquire`](Guard::acquire) with the user and route it is for.
    pub fn acquire_with(
        &self,
        class: Criticality,
        context: AcquireContext,
    ) -> impl Future<Output = Result<GuardedConn, Error>> + Send + '_ {
        let deadline = crate::clock::now() + self.inner.config.max_queue_wait;
        self.inner.acquire(class, context, deadline)
    }

    /// [`acquire_with`](Guard::acquire_with), starting by `deadline` or not at all (the
    /// layer passes the request's deadline: the route's, a trusted header's, or the
    /// configured default).
    pub fn acquire_until(
        &self,
        class: Criticality,
        context: AcquireContext,
        deadline: Instant,
    ) -> impl Future<Output = Result<GuardedConn, Error>> + Send + '_ {
        self.inner.acquire(class, context, deadline)
    }

    /// How many acquisitions were granted a slot since the guard was built. A waiter whose
    /// caller left before its turn is never granted one, so it does not count here.
    pub fn grants_total(&self) -> u64 {
        self.inner.read(|s| s.grants_total())
    }

    /// Runs a read-only query for all identical concurrent callers at once: the first caller
    /// acquires a connection as `class` and runs `sql` with `params`; callers asking the same
    /// (same SQL, same parameters) while it runs wait for it, take no slot, and share its rows.
    /// Different parameters never share; nothing is cached once the query returns. See
    /// [`single_flight`](crate::single_flight).
    ///
    /// Only for statements without side effects: the rows of one execution go to everyone.
    ///
    /// ```no_run
    /// # async fn widget(guard: poolguard::Guard, team: i64) -> Result<(), poolguard::Error> {
    /// use poolguard::{AcquireContext, Criticality};
    /// let rows = guard
    ///     .query_shared(
    ///         Criticality::NonCritical,
    ///         AcquireContext::default(),
    ///         "SELECT count(*) FROM tasks WHERE team = $1",
    ///         &[&team],
    ///     )
    ///     .await?;
    /// let open: i64 = rows[0].get(0);
    /// # let _ = open; Ok(()) }
    /// ```
    pub async fn query_shared(
        &self,
        class: Criticality,
        context: AcquireContext,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<SharedRows, Error> {
        let deadline = crate::clock::now() + self.inner.config.max_queue_wait;
        self.query_shared_until(class, context, deadline, sql, params)
            .await
    }

    /// [`query_shared`](Guard::query_shared) whose acquisition (if this caller runs the
    /// query) starts by `deadline`.
    pub async fn query_shared_until(
        &self,
        class: Criticality,
        context: AcquireContext,
        deadline: Instant,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<SharedRows, Error> {
        let key = crate::single_flight::key(sql, params);
        let (rows, _ran) = self
            .inner
            .shared_queries
            .run(key, || async {
                let conn = self.inner.acquire(class, context, deadline).await?;
                conn.query(sql, params).await
            })
            .await?;
        Ok(rows)
    }

    /// The current level (an atomic read).
    pub fn level(&self) -> Level {
        self.inner.level()
    }

    /// A receiver that sees every level change.
    pub fn watch_level(&self) -> watch::Receiver<Level> {
        self.inner.level_tx.subscribe()
    }

    /// A snapshot of the guard and its pool.
    pub fn status(&self) -> GuardStatus {
        self.inner.status()
    }

    /// The guarded pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The validated configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.inner.config
    }

    /// The event bus: subscribe to it, or publish your own events.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// A subscriber that sees every self-heal event from now on.
    pub fn subscribe(&self) -> EventSubscriber {
        self.inner.events.subscribe()
    }

    /// Feeds server-wide utilization (connections in use on the whole server over its usable
    /// maximum) into the level, so a replica whose own pool is calm still escalates when the
    /// server is nearly full. The watchdog calls this; so can your own monitoring.
    pub fn report_server_utilization(&self, utilization: f64) {
        self.inner.set_server_utilization(utilization);
    }

    /// The server-wide connection use the watchdog read last (held, and marked stale, while
    /// it cannot reach the server); `None` before its first reading.
    pub fn server_use(&self) -> Option<ServerUse> {
        *self
            .inner
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The old name of [`Guard::server_use`]: the reading holds use, not headroom.
    #[deprecated(since = "0.2.0", note = "renamed to `Guard::server_use`")]
    pub fn server_headroom(&self) -> Option<ServerUse> {
        self.server_use()
    }

    /// The estimated time until a refused non-critical request is worth retrying: when a
    /// newcomer can expect to start (its place in the queue over the measured drain rate),
    /// plus a bounded jitter; one second before anything was measured.
    pub fn retry_after(&self, kind: RejectionKind) -> Duration {
        self.inner.retry_after(kind)
    }
}
