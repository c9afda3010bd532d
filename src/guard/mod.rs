//! The guard: the cheap-to-clone handle that owns admission, levels, limits and events.

mod acquire;
mod builder;
mod inner;
mod status;
mod window;

pub use acquire::AcquireContext;
pub use builder::GuardBuilder;
pub(crate) use inner::{GuardInner, WeakInner};
pub use status::GuardStatus;

use crate::admission::GuardedConn;
use crate::events::{EventBus, EventSubscriber};
use crate::identity::Identity;
use crate::pool::{build_pool_as, PoolOptions};
use crate::rejection::RejectionKind;
use crate::tls::{PgUrl, TlsConnector};
use crate::{BuildError, Criticality, Error, GuardConfig, Level};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Guards a deadpool-postgres pool: decides who gets a connection, when, and who is told to
/// come back later. Cheap to clone; every clone is the same guard.
///
/// Build it with [`Guard::builder`] (over a pool you built) or [`Guard::connect`] (builds the
/// pool with the session settings the guard relies on).
#[derive(Debug, Clone)]
pub struct Guard {
    pub(crate) inner: Arc<GuardInner>,
}

impl Guard {
    /// A builder over an existing pool. The guard never waits on deadpool without a timeout
    /// (it passes its own), but `statement_timeout` and `application_name` must come from
    /// the pool's connection config: prefer [`Guard::connect`] or [`crate::build_pool`].
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

    /// Builds the pool with `options` (statement timeout, application name, ...) over `pg`
    /// and returns a builder for a guard over it, with the dedicated connection set. TLS
    /// follows `pg`'s own `sslmode` ([`TlsConnector::for_config`]); for `verify-ca`,
    /// `verify-full` and `sslrootcert` use [`Guard::connect_url`] or [`Guard::connect_tls`].
    pub fn connect(
        pg: tokio_postgres::Config,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        let tls = TlsConnector::for_config(&pg)?;
        Self::connect_tls(pg, tls, options)
    }

    /// [`Guard::connect`] with `tls` for every connection: the pool's, cancel requests, the
    /// health check and the watchdog.
    pub fn connect_tls(
        pg: tokio_postgres::Config,
        tls: TlsConnector,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        let (pool, pg, identity) = build_pool_as(pg, &tls, options)?;
        let mut builder = Guard::builder(pool)
            .direct_connection(pg)
            .pool_resets_sessions(true)
            .tls(tls);
        builder.identity = Some(identity);
        Ok(builder)
    }

    /// [`Guard::connect_tls`] from a URL, honouring its `sslmode` and `sslrootcert`
    /// ([`PgUrl`]).
    pub fn connect_url(url: &str, options: &PoolOptions) -> Result<GuardBuilder, BuildError> {
        let url = PgUrl::parse(url)?;
        Self::connect_tls(url.config, url.tls, options)
    }

    /// The service and instance this guard's connections are named with; `None` for a guard
    /// over a pool built elsewhere.
    pub fn identity(&self) -> Option<&Identity> {
        self.inner.identity.as_ref()
    }

    /// Acquires a connection as `class`, waiting in the priority queue if needed.
    ///
    /// Returns [`Error::Rejected`] when the guard refuses (breaker open, queue full, waited
    /// past `max_queue_wait`, pool unavailable). If the returned future is dropped while
    /// waiting, the waiter leaves the queue and never runs.
    pub async fn acquire(&self, class: Criticality) -> Result<GuardedConn, Error> {
        self.acquire_with(class, AcquireContext::default()).await
    }

    /// [`acquire`](Guard::acquire) with the user and route it is for.
    pub async fn acquire_with(
        &self,
        class: Criticality,
        context: AcquireContext,
    ) -> Result<GuardedConn, Error> {
        self.inner.acquire(class, context).await
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

    /// The server-wide connection count the watchdog read last; `None` before its first
    /// reading or while it cannot reach the server.
    pub fn server_headroom(&self) -> Option<crate::watchdog::ServerHeadroom> {
        *self
            .inner
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The estimated time until a request refused for `kind` is worth retrying, from the
    /// queue length at the last sample and the average hold time.
    pub fn retry_after(&self, kind: RejectionKind) -> Duration {
        self.inner.retry_after(kind)
    }
}
