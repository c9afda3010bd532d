//! The watchdog loop: its own connection (never one of the pool's), reconnected with capped
//! exponential backoff, and one pass of every check per interval.

use super::activity::Selector;
use super::headroom::{self, PressureAlarm};
use super::killer::SlowQueryKiller;
use super::reaper::IdleReaper;
use super::replicas::Replicas;
use super::resize::{self, ResizeInput, Resizer};
use super::WatchdogConfig;
use crate::events::{Event, EventKind};
use crate::guard::{GuardInner, WeakInner};
use crate::tls::TlsConnector;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;

/// The first wait before reconnecting; doubled on every failure up to the configured cap.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Everything one watchdog keeps between intervals.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) guard: WeakInner,
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
        guard: WeakInner,
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
            let Some(inner) = self.guard.upgrade() else {
                return;
            };
            self.report_leaks(&inner);
            if client.as_ref().is_none_or(Client::is_closed) {
                if client.take().is_some() {
                    tracing::warn!(target: "poolguard::watchdog", "lost its connection; reconnecting");
                    self.lost(&inner);
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
                        tracing::warn!(target: "poolguard::watchdog", error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach Postgres");
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(self.config.reconnect_backoff_max);
                        continue;
                    }
                }
            }
            let c = client.as_ref().expect("connected above");
            match tokio::time::timeout(self.config.query_timeout * 3, self.tick(&inner, c)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "poolguard::watchdog", error = %e, "check failed");
                }
                Err(_) => {
                    tracing::warn!(target: "poolguard::watchdog", "check timed out; reconnecting");
                    client = None;
                    self.lost(&inner);
                }
            }
        }
        if let Some(inner) = self.guard.upgrade() {
            self.alarm.clear(&inner);
        }
    }

    /// Opens the watchdog's own connection, named `{service}:{instance}:watchdog`.
    async fn connect(&self) -> Result<Client, String> {
        let mut pg = self.pg.clone();
        pg.application_name(&self.session_name);
        let connecting = pg.connect(self.tls.clone());
        let (client, connection) = tokio::time::timeout(self.config.query_timeout, connecting)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Forgets what depended on the lost connection.
    fn lost(&mut self, inner: &Arc<GuardInner>) {
        self.alarm.clear(inner);
        self.killer.reset();
        if let Some(replicas) = &mut self.replicas {
            replicas.lost();
        }
    }

    fn report_leaks(&self, inner: &GuardInner) {
        for leak in inner.take_leaks(self.config.leak_after) {
            inner.events.publish(Event::now(EventKind::ConnectionLeak {
                class: leak.class,
                route: leak.route.map(|r| r.to_string()),
                user: leak.user.map(|u| u.as_str().to_string()),
                held: leak.held,
            }));
        }
    }

    /// One pass: server headroom, slow queries, idle transactions, resize.
    async fn tick(
        &mut self,
        inner: &Arc<GuardInner>,
        client: &Client,
    ) -> Result<(), tokio_postgres::Error> {
        let limit = self.config.query_timeout;
        let timed_out = || {
            tracing::warn!(target: "poolguard::watchdog", "a watchdog query timed out");
        };
        let Ok(h) = tokio::time::timeout(limit, headroom::read(client)).await else {
            timed_out();
            return Ok(());
        };
        let h = h?;
        let announce = self.replicas.as_ref().is_none_or(Replicas::announces);
        self.alarm.publish(inner, h, announce);
        let Ok(backends) = tokio::time::timeout(limit, self.selector.scan(client)).await else {
            timed_out();
            return Ok(());
        };
        let backends = backends?;
        let mut budget = self.config.max_kills_per_interval;
        if let Some(replicas) = &mut self.replicas {
            budget = replicas.tick(client, inner, &self.config, &h).await?;
        }
        self.killer
            .tick(client, inner, &self.config, &backends, &mut budget)
            .await;
        self.reaper
            .tick(client, inner, &self.config, &backends, &mut budget)
            .await;
        if let Some(resizer) = &mut self.resizer {
            let s = inner.status();
            let input = ResizeInput {
                current: s.max_size,
                open: s.size,
                waiting: s.queued + s.pool_waiting,
                level: s.level,
                headroom: h,
            };
            if let Some((to, reason)) = resizer.decide(&self.config.resize, &input) {
                resize::apply(inner, s.max_size, to, reason);
            }
        }
        Ok(())
    }
}
