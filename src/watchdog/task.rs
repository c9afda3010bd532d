//! The watchdog loop: its own connection (never one of the pool's), reconnected with capped
//! exponential backoff, and one pass of every check per interval.
//!
//! A watchdog query that times out (a stalled network, a server that stopped answering) ends
//! the connection: the next interval reconnects, instead of asking a dead connection again
//! forever. Meanwhile the server reading is held, marked stale (see [`server_use`]).

use super::activity::Selector;
use super::killer::SlowQueryKiller;
use super::reaper::IdleReaper;
use super::replicas::Replicas;
use super::server_use::{self, PressureAlarm, Unreadable};
use super::watched::WatchedGuard;
use super::WatchdogConfig;
use crate::events::{Event, EventKind};
use crate::resize::{ResizeInput, Resizer};
use crate::tls::TlsConnector;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;

/// The first wait before reconnecting; doubled on every failure up to the configured cap.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Everything one watchdog keeps between intervals.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) guard: Weak<dyn WatchedGuard>,
    pub(crate) config: WatchdogConfig,
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) selector: Selector,
    pub(crate) resizer: Option<Resizer>,
    /// How the watchdog's connection opens its TLS side, and the name it carries.
    pub(crate) tls: TlsConnector,
    pub(crate) session_name: String,
    pub(crate) replicas: Option<Replicas>,
    killer: SlowQueryKiller,
    reaper: IdleReaper,
    alarm: PressureAlarm,
}

impl Runner {
    pub(crate) fn new(
        guard: Weak<dyn WatchedGuard>,
        config: WatchdogConfig,
        pg: tokio_postgres::Config,
        selector: Selector,
        resizer: Option<Resizer>,
        (tls, session_name): (TlsConnector, String),
        replicas: Option<Replicas>,
    ) -> Self {
        Self {
            guard,
            config,
            pg,
            selector,
            resizer,
            tls,
            session_name,
            replicas,
            killer: SlowQueryKiller::default(),
            reaper: IdleReaper::default(),
            alarm: PressureAlarm::default(),
        }
    }

    /// Runs until the guard is dropped or `stop` says so (or its sender is dropped).
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut client: Option<Client> = None;
        let mut backoff = INITIAL_BACKOFF;
        let mut next_attempt = Instant::now();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
            }
            let Some(guard) = self.guard.upgrade() else {
                return;
            };
            self.report_leaks(&*guard);
            if client.as_ref().is_none_or(Client::is_closed) {
                if client.take().is_some() {
                    tracing::warn!(target: "poolguard::watchdog", "lost its connection; reconnecting");
                    self.lost();
                    self.alarm.unreadable(
                        &guard,
                        Unreadable::Unreachable,
                        "its connection was lost",
                    );
                }
                if Instant::now() < next_attempt {
                    continue;
                }
                match self.connect().await {
                    Ok(c) => {
                        tracing::info!(target: "poolguard::watchdog", "connected");
                        client = Some(c);
                        backoff = INITIAL_BACKOFF;
                    }
                    Err(e) => {
                        tracing::warn!(target: "poolguard::watchdog", error = %e.text, retry_in_ms = backoff.as_millis() as u64, "cannot reach Postgres");
                        let why = if e.server_full {
                            Unreadable::Full
                        } else {
                            Unreadable::Unreachable
                        };
                        self.alarm.unreadable(&guard, why, &e.text);
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(self.config.reconnect_backoff_max);
                        continue;
                    }
                }
            }
            let c = client.as_ref().expect("connected above");
            let check = tokio::time::timeout(self.config.query_timeout * 3, self.tick(&guard, c));
            let failure = match check.await {
                Ok(Ok(())) => continue,
                Ok(Err(TickError::Query(e))) => {
                    let text = crate::error::describe_db_error(&e);
                    tracing::warn!(target: "poolguard::watchdog", error = %text, "check failed");
                    if !c.is_closed() {
                        continue;
                    }
                    text
                }
                Ok(Err(TickError::TimedOut(what))) => format!("{what} got no answer"),
                Err(_) => "the check got no answer".to_string(),
            };
            // The connection stopped answering: drop it (its socket is closed) and reconnect
            // on the next interval. The killer keeps what it cancelled: the same query on the
            // same backend is still due for termination after the grace period.
            tracing::warn!(target: "poolguard::watchdog", error = %failure, "dropping its connection; reconnecting");
            client = None;
            self.lost();
            self.alarm
                .unreadable(&guard, Unreadable::Unreachable, &failure);
            next_attempt = Instant::now();
        }
        if let Some(guard) = self.guard.upgrade() {
            self.alarm.clear(&guard);
        }
    }

    /// Opens the watchdog's own connection, named `{service}:{instance}:watchdog`.
    async fn connect(&self) -> Result<Client, ConnectError> {
        let mut pg = self.pg.clone();
        pg.application_name(&self.session_name);
        let connecting = pg.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(self.config.query_timeout, connecting)
            .await
            .map_err(|_| ConnectError {
                text: "connect timed out".into(),
                server_full: false,
            })?
            .map_err(|e| ConnectError {
                server_full: e.code()
                    == Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
                text: crate::error::describe_db_error(&e),
            })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Forgets what depended on the lost connection: the replica's leadership (its
    /// advisory lock was held by that session). The server reading is held, not forgotten
    /// (see [`server_use`]), and the killer keeps what it cancelled.
    fn lost(&mut self) {
        if let Some(replicas) = &mut self.replicas {
            replicas.lost();
        }
    }

    fn report_leaks(&self, guard: &dyn WatchedGuard) {
        for leak in guard.take_leaks(self.config.leak_after) {
            guard
                .events()
                .publish(Event::now(EventKind::ConnectionLeak {
                    class: leak.class,
                    route: leak.route.map(|r| r.to_string()),
                    user: leak.user,
                    held: leak.held,
                }));
        }
    }

    /// One pass: server use, slow queries, idle transactions, resize. The killer and the
    /// reaper each have their own budget of `max_kills_per_interval`, so a storm of slow
    /// queries never starves the reaping of idle transactions.
    async fn tick(
        &mut self,
        guard: &Arc<dyn WatchedGuard>,
        client: &Client,
    ) -> Result<(), TickError> {
        let limit = self.config.query_timeout;
        let h = tokio::time::timeout(limit, server_use::read(client))
            .await
            .map_err(|_| TickError::TimedOut("the server reading"))??;
        let announce = self.replicas.as_ref().is_none_or(Replicas::announces);
        self.alarm.publish(guard, h, announce);
        let backends = tokio::time::timeout(limit, self.selector.scan(client))
            .await
            .map_err(|_| TickError::TimedOut("the pg_stat_activity scan"))??;
        let mut budget = self.config.max_kills_per_interval;
        if let Some(replicas) = &mut self.replicas {
            budget = replicas.tick(client, guard, &self.config, &h).await?;
        }
        let mut kill_budget = budget;
        self.killer
            .tick(client, &**guard, &self.config, &backends, &mut kill_budget)
            .await;
        let mut reap_budget = budget;
        self.reaper
            .tick(client, &**guard, &self.config, &backends, &mut reap_budget)
            .await;
        if let Some(resizer) = &mut self.resizer {
            let pool = guard.pool_figures();
            let input = ResizeInput {
                current: pool.max_size,
                open: pool.open,
                waiting: pool.waiting,
                level: pool.level,
                server_used: h.used,
                server_usable: h.usable,
            };
            if let Some((to, reason)) = resizer.decide(&self.config.resize, &input) {
                Arc::clone(guard).resize_pool(pool.max_size, to, reason);
            }
        }
        Ok(())
    }
}

/// A connection attempt that failed.
#[derive(Debug)]
struct ConnectError {
    /// What went wrong, with the server's message and SQLSTATE.
    text: String,
    /// The server refused it as full (SQLSTATE 53300).
    server_full: bool,
}

/// Why one pass of the checks stopped.
#[derive(Debug)]
enum TickError {
    /// A query failed.
    Query(tokio_postgres::Error),
    /// A query got no answer within `query_timeout`.
    TimedOut(&'static str),
}

impl From<tokio_postgres::Error> for TickError {
    fn from(e: tokio_postgres::Error) -> Self {
        TickError::Query(e)
    }
}
