//! The Postgres watchdog: a task with its own connection that watches the server and acts.
//!
//! Each [`interval`](WatchdogConfig::interval) it
//!
//! - reads the server's connection count against its usable limit ([`ServerUse`]) and
//!   feeds it into the guard's level, so the guard escalates when *another* process fills the
//!   server while its own pool is calm;
//! - cancels queries of its [`Scope`] running longer than
//!   [`kill_after`](WatchdogConfig::kill_after) (`pg_cancel_backend`), and terminates the
//!   backend if the same query still runs after [`cancel_grace`](WatchdogConfig::cancel_grace)
//!   (`pg_terminate_backend`), at most
//!   [`max_kills_per_interval`](WatchdogConfig::max_kills_per_interval) per interval;
//! - terminates sessions left `idle in transaction` too long;
//! - reports connections held through the guard longer than
//!   [`leak_after`](WatchdogConfig::leak_after), once each, with their route and user (the
//!   connections handed out since a watchdog first watched the guard: the guard records who
//!   holds what only for a watchdog, its one reader, so a guard without one pays a flag
//!   read per checkout for it);
//! - optionally grows and shrinks the pool within the server's headroom ([`AutoResize`]), or
//!   sizes it from its share of the server among the service's replicas ([`ConnectionBudget`]).
//!
//! **Replicas.** Over a guard from [`Guard::builder_for`](crate::Guard::builder_for) the watchdog acts only on its own
//! instance's backends (`{service}:{instance}`, see [`Identity`](crate::identity::Identity))
//! in its own database, and names another instance's backend as such in events (wider
//! scopes). The watchdogs of a service elect one leader with `pg_try_advisory_lock` on their
//! own sessions ([`WatchdogHandle::is_leader`]); the leader reaps idle transactions of
//! instances whose watchdog is gone and alone raises the server-pressure event, and a new leader takes over within one interval of the
//! old one's session ending. The kill budget is split between the live watchdogs.
//!
//! Through a pooler, give the watchdog a direct URL to PostgreSQL
//! ([`WatchdogBuilder::url`]): its backends are the server's, not the pooler's clients.
//!
//! Every action is an event (with the query's [`fingerprint`], never its values) and a metric.
//! The watchdog's connection is opened from the guard's direct connection config, never taken
//! from the pool, so it works when the pool is exhausted; when Postgres goes away it
//! reconnects with capped exponential backoff. It stops when the guard is dropped or its
//! [`WatchdogHandle`] is dropped or stopped.
//!
//! ```no_run
//! use poolguard::watchdog::{Watchdog, WatchdogConfig};
//! use poolguard::{Guard, PoolOptions};
//! use std::time::Duration;
//!
//! # async fn start(pg: tokio_postgres::Config) -> Result<(), poolguard::BuildError> {
//! let guard = Guard::builder_for(pg, &PoolOptions::default())?.build()?;
//! let watchdog = Watchdog::builder(&guard)
//!     .config(WatchdogConfig {
//!         kill_after: Duration::from_secs(30),
//!         ..WatchdogConfig::default()
//!     })
//!     .spawn()?;
//! // ... serve; keep `watchdog` alive as long as the guard.
//! watchdog.stop().await;
//! # Ok(())
//! # }
//! ```

mod activity;
mod budget;
mod census;
mod config;
mod describe;
mod fingerprint;
mod killer;
mod leader;
mod reaper;
mod replicas;
mod server_use;
mod tag;
mod task;
mod watched;

pub use crate::resize::AutoResize;
pub use budget::ConnectionBudget;
pub use config::{Scope, WatchdogConfig};
pub use fingerprint::fingerprint;
pub use server_use::ServerUse;

/// The old name of [`ServerUse`]: the reading holds connections in use, not headroom.
#[deprecated(since = "0.2.0", note = "renamed to `ServerUse`")]
pub type ServerHeadroom = ServerUse;
pub(crate) use tag::write_tag;

pub(crate) use watched::{HeldTooLong, PoolFigures, WatchedGuard};

use crate::config::BuildError;
use crate::resize::Resizer;
use crate::tls::{PgUrl, TlsConnector};
use activity::Selector;
use replicas::Replicas;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use task::Runner;
use tokio::sync::watch;

/// A watchdog ready to run; see the [module docs](self).
#[derive(Debug)]
pub struct Watchdog {
    runner: Runner,
    leader: Arc<AtomicBool>,
}

/// Builds a [`Watchdog`] over a guard; [`spawn`](WatchdogBuilder::spawn) validates the
/// configuration and starts it.
#[derive(Debug)]
#[must_use]
pub struct WatchdogBuilder {
    guard: Arc<dyn WatchedGuard>,
    config: WatchdogConfig,
    connection: Option<(tokio_postgres::Config, TlsConnector)>,
}

/// Stops the watchdog when dropped or [stopped](WatchdogHandle::stop).
#[derive(Debug)]
pub struct WatchdogHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    leader: Arc<AtomicBool>,
}

impl Watchdog {
    /// Whether this watchdog leads its service's server-wide duties now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Runs until the guard is dropped; nothing else stops it. To stop it earlier, use
    /// [`run_until`](Watchdog::run_until) or [`WatchdogBuilder::spawn`] (whose handle stops it).
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Runs until the guard is dropped or `shutdown` completes, whichever comes first. On
    /// shutdown it finishes the check in progress and withdraws its server-wide reading from
    /// the guard's level before returning.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, rx) = watch::channel(false);
        let run = self.runner.run(rx);
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => return,
            () = shutdown => {}
        }
        stop.send_replace(true);
        run.await;
    }
}

impl WatchdogBuilder {
    /// A builder over `guard` with [`WatchdogConfig::default`] (see `Watchdog::builder`).
    pub(crate) fn over(guard: Arc<dyn WatchedGuard>) -> Self {
        WatchdogBuilder {
            guard,
            config: WatchdogConfig::default(),
            connection: None,
        }
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: WatchdogConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects the watchdog with `pg` and `tls` instead of the guard's direct connection:
    /// a URL straight to PostgreSQL when the pool goes through a pooler. Its application name
    /// is replaced with the watchdog's own (`{service}:{instance}:watchdog`).
    pub fn connection(mut self, pg: tokio_postgres::Config, tls: TlsConnector) -> Self {
        self.connection = Some((pg, tls));
        self
    }

    /// [`connection`](Self::connection) from a URL, honouring its `sslmode` and `sslrootcert`
    /// ([`PgUrl`]); a bad URL fails naming the field.
    pub fn url(self, url: &str) -> Result<Self, BuildError> {
        let url = PgUrl::parse(url)?;
        Ok(self.connection(url.config, url.tls))
    }

    /// Validates the configuration and returns the watchdog, for the caller to
    /// [`run`](Watchdog::run) on its runtime. Turns connection tagging on in the guard when
    /// the configuration needs it.
    pub fn build(self) -> Result<Watchdog, BuildError> {
        let guard = &self.guard;
        let pool_size = guard.pool_figures().max_size;
        self.config.validate(pool_size)?;
        let direct = guard.direct_connection();
        let (pg, tls) = match (self.connection.clone(), direct.clone()) {
            (Some(own), _) => own,
            (None, Some(direct)) => direct,
            (None, None) => {
                return Err(BuildError::field(
                    "direct_connection",
                    "the guard has no direct connection config: build it with Guard::builder_for, GuardBuilder::direct_connection or give the watchdog its own with WatchdogBuilder::url",
                ))
            }
        };
        let identity = guard.identity().cloned();
        let application = match &identity {
            Some(identity) => Some(identity.application_name()),
            None => direct
                .as_ref()
                .and_then(|(d, _)| d.get_application_name())
                .map(str::to_string),
        };
        let Some(selector) = Selector::new(&self.config.scope, application.as_deref()) else {
            return Err(BuildError::field(
                "scope",
                "Scope::Application needs an application_name in the guard's connection config",
            ));
        };
        let tag_prefix = self
            .config
            .needs_tags()
            .then(|| application.as_deref().unwrap_or_default());
        if tag_prefix.is_some_and(|prefix| !tag::usable_prefix(prefix)) {
            return Err(BuildError::field(
                "tag_connections",
                "tagging needs an application_name of at most 23 characters of [A-Za-z0-9-_.:]",
            ));
        }
        let resizer = self.config.resize.enabled.then(|| Resizer::new(pool_size));
        let leader = Arc::new(AtomicBool::new(false));
        let replicas =
            match &identity {
                Some(identity) => Some(Replicas::new(
                    identity.clone(),
                    self.config.elect_leader,
                    leader.clone(),
                )),
                None if self.config.budget.enabled => return Err(BuildError::field(
                    "budget.enabled",
                    "the budget counts instances by name: build the guard with Guard::builder_for",
                )),
                None => None,
            };
        // Nothing below fails: the guard is changed only for a watchdog that was built. Held
        // connections are recorded for it from here on, before the tag prefix is published,
        // so that a connection tagged is a connection recorded.
        guard.watch_held();
        if let Some(prefix) = tag_prefix {
            // A second watchdog over the same guard keeps the first one's prefix.
            guard.enable_tags(prefix);
        }
        if self.config.budget.enabled {
            // A joining replica starts small and grows into its share.
            let from = pool_size;
            let to = from.min(self.config.budget.min_size);
            if to < from {
                Arc::clone(guard).resize_pool(from, to, crate::events::ResizeReason::BudgetShare);
            }
        }
        let session_name = match &identity {
            Some(identity) => identity.watchdog_name(),
            None => {
                let mut name =
                    format!("{}:watchdog", application.as_deref().unwrap_or("poolguard"));
                name.truncate(63);
                name
            }
        };
        Ok(Watchdog {
            runner: Runner::new(
                Arc::downgrade(guard),
                self.config,
                pg,
                selector,
                resizer,
                (tls, session_name),
                replicas,
            ),
            leader,
        })
    }

    /// Validates the configuration and spawns the watchdog on the current Tokio runtime.
    pub fn spawn(self) -> Result<WatchdogHandle, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let watchdog = self.build()?;
        let (stop, rx) = watch::channel(false);
        let task = runtime.spawn(watchdog.runner.run(rx));
        Ok(WatchdogHandle {
            stop,
            task: Some(task),
            leader: watchdog.leader,
        })
    }
}

impl WatchdogHandle {
    /// Stops the watchdog and waits until it has stopped (its server-wide reading is then
    /// withdrawn from the guard's level).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Whether this watchdog leads its service's server-wide duties now (it holds the
    /// service's advisory lock on its own session).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Whether the watchdog has stopped (its guard was dropped, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for WatchdogHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
