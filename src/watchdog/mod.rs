//! The Postgres watchdog: a task with its own connection that watches the server and acts.
//!
//! Each [`interval`](WatchdogConfig::interval) it
//!
//! - reads the server's connection count against its usable limit ([`ServerHeadroom`]) and
//!   feeds it into the guard's level, so the guard escalates when *another* process fills the
//!   server while its own pool is calm;
//! - cancels queries of its [`Scope`] running longer than
//!   [`kill_after`](WatchdogConfig::kill_after) (`pg_cancel_backend`), and terminates the
//!   backend if the same query still runs after [`cancel_grace`](WatchdogConfig::cancel_grace)
//!   (`pg_terminate_backend`), at most
//!   [`max_kills_per_interval`](WatchdogConfig::max_kills_per_interval) per interval;
//! - terminates sessions left `idle in transaction` too long;
//! - reports connections held through the guard longer than
//!   [`leak_after`](WatchdogConfig::leak_after), once each, with their route and user;
//! - optionally grows and shrinks the pool within the server's headroom ([`AutoResize`]).
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
//! let guard = Guard::connect(pg, &PoolOptions::default())?.build()?;
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
mod config;
mod fingerprint;
mod headroom;
mod killer;
mod reaper;
mod resize;
mod tag;
mod task;

pub use config::{AutoResize, Scope, WatchdogConfig};
pub use fingerprint::fingerprint;
pub use headroom::ServerHeadroom;
pub(crate) use tag::tag;

use crate::{BuildError, Guard};
use activity::Selector;
use resize::Resizer;
use std::sync::Arc;
use task::Runner;
use tokio::sync::watch;

/// A watchdog ready to run; see the [module docs](self).
#[derive(Debug)]
pub struct Watchdog {
    runner: Runner,
}

/// Builds a [`Watchdog`] over a guard; [`spawn`](WatchdogBuilder::spawn) validates the
/// configuration and starts it.
#[derive(Debug)]
#[must_use]
pub struct WatchdogBuilder {
    guard: Guard,
    config: WatchdogConfig,
}

/// Stops the watchdog when dropped or [stopped](WatchdogHandle::stop).
#[derive(Debug)]
pub struct WatchdogHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    /// A builder over `guard` with [`WatchdogConfig::default`]. The guard must have a
    /// direct connection config ([`Guard::connect`] sets one).
    pub fn builder(guard: &Guard) -> WatchdogBuilder {
        WatchdogBuilder {
            guard: guard.clone(),
            config: WatchdogConfig::default(),
        }
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
    /// Replaces the whole configuration.
    pub fn config(mut self, config: WatchdogConfig) -> Self {
        self.config = config;
        self
    }

    /// Validates the configuration and returns the watchdog, for the caller to
    /// [`run`](Watchdog::run) on its runtime. Turns connection tagging on in the guard when
    /// the configuration needs it.
    pub fn build(self) -> Result<Watchdog, BuildError> {
        let inner = &self.guard.inner;
        self.config.validate(inner.pool.status().max_size)?;
        let Some(pg) = inner.direct.clone() else {
            return Err(BuildError::field(
                "direct_connection",
                "the guard has no direct connection config: build it with Guard::connect or GuardBuilder::direct_connection",
            ));
        };
        let application = pg.get_application_name().map(str::to_string);
        let Some(selector) = Selector::new(&self.config.scope, application.as_deref()) else {
            return Err(BuildError::field(
                "scope",
                "Scope::Application needs an application_name in the guard's connection config",
            ));
        };
        if self.config.needs_tags() {
            let prefix = application.as_deref().unwrap_or_default();
            if !tag::usable_prefix(prefix) {
                return Err(BuildError::field(
                    "tag_connections",
                    "tagging needs an application_name of at most 23 characters of [A-Za-z0-9-_.:]",
                ));
            }
            // A second watchdog over the same guard keeps the first one's prefix.
            let _ = inner.tag_prefix.set(prefix.to_string());
        }
        let resizer = self
            .config
            .resize
            .enabled
            .then(|| Resizer::new(inner.pool.status().max_size));
        Ok(Watchdog {
            runner: Runner::new(Arc::downgrade(inner), self.config, pg, selector, resizer),
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
