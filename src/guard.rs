//! The guard: the cheap-to-clone handle that owns admission, levels, limits and events.

use crate::admission::{AdmissionState, Admit, Effects, GuardedConn, SlotPermit};
use crate::breaker::Breaker;
use crate::events::{BreakerState, Event, EventBus, EventKind, EventSubscriber, OutcomeCounts};
use crate::limit::{UserKey, UserLimiter};
use crate::metrics::{GuardMetrics, Outcome};
use crate::monitor::{LevelMachine, Thresholds};
use crate::pool::{build_pool, PoolOptions};
use crate::rejection::{Rejection, RejectionKind};
use crate::{BuildError, Criticality, Error, GuardConfig, Level};
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};
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

/// Builds a [`Guard`]; [`build`](GuardBuilder::build) validates the configuration.
#[derive(Debug)]
#[must_use]
pub struct GuardBuilder {
    pool: Pool,
    config: GuardConfig,
    direct: Option<tokio_postgres::Config>,
    event_capacity: usize,
}

/// Who an acquisition is for: the user key (for fairness) and a route or caller label (for
/// events). Both optional.
#[derive(Debug, Clone, Default)]
pub struct AcquireContext {
    /// The user the acquisition is made for.
    pub user: Option<UserKey>,
    /// The route or caller label, shown in events.
    pub route: Option<Arc<str>>,
}

/// A consistent-enough picture of the guard and its pool at one instant. Like deadpool's
/// `Status`, the numbers are read at slightly different moments and need not add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GuardStatus {
    /// The pressure level.
    pub level: Level,
    /// The state of the non-critical breaker.
    pub breaker: BreakerState,
    /// The pool's maximum size.
    pub max_size: usize,
    /// Connections the pool currently holds (idle and in use).
    pub size: usize,
    /// Idle connections in the pool.
    pub available: usize,
    /// Connections in use: through the guard plus outside it.
    pub in_use: usize,
    /// Slots held through the guard.
    pub granted: usize,
    /// Connections in use that were taken from the pool outside the guard.
    pub external: usize,
    /// Acquisitions waiting in the guard's queue.
    pub queued: usize,
    /// Waiting acquisitions by class: non-critical, standard, critical.
    pub queued_by_class: [usize; 3],
    /// Waiters inside deadpool itself.
    pub pool_waiting: usize,
    /// Slots only critical work may use.
    pub reserve: usize,
    /// Pool utilization, `in_use / max_size`.
    pub utilization: f64,
    /// Server-wide utilization fed in by [`Guard::report_server_utilization`].
    pub server_utilization: f64,
    /// Highest utilization seen since the guard was built.
    pub peak_utilization: f64,
}

#[derive(Debug)]
pub(crate) struct GuardInner {
    pub(crate) pool: Pool,
    pub(crate) config: GuardConfig,
    pub(crate) direct: Option<tokio_postgres::Config>,
    state: Mutex<AdmissionState>,
    level: AtomicU8,
    pub(crate) breaker: Breaker,
    pub(crate) limits: UserLimiter,
    pub(crate) metrics: GuardMetrics,
    pub(crate) events: EventBus,
    window: WindowCounts,
    /// Exponential average of hold times, in microseconds.
    avg_hold_us: AtomicU64,
    level_tx: watch::Sender<Level>,
    timeouts: Timeouts,
    /// Acquisitions holding a slot and inside `Pool::get`: deadpool counts them as waiting,
    /// but they are not starvation.
    pending_gets: AtomicUsize,
    pub(crate) health_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Set by the watchdog when it needs to tell connections apart: each checkout then sets
    /// `application_name` to `{prefix}:{class}:{registry id}`.
    pub(crate) tag_prefix: OnceLock<String>,
    /// The last server-wide connection count the watchdog read.
    pub(crate) headroom: Mutex<Option<crate::watchdog::ServerHeadroom>>,
}

/// Outcome counts since the last `RequestsSummary` event.
#[derive(Debug, Default)]
struct WindowCounts([[AtomicU64; 3]; 5]);

impl WindowCounts {
    fn add(&self, class: Criticality, outcome: Outcome) {
        self.0[outcome as usize][class.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> OutcomeCounts {
        let take = |o: Outcome| {
            let row = &self.0[o as usize];
            [0, 1, 2].map(|i| row[i].swap(0, Ordering::Relaxed))
        };
        OutcomeCounts {
            served: take(Outcome::Served),
            shed: take(Outcome::Shed),
            queued: take(Outcome::Queued),
            rate_limited: take(Outcome::RateLimited),
            timed_out: take(Outcome::TimedOut),
        }
    }
}

impl GuardBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: GuardConfig) -> Self {
        self.config = config;
        self
    }

    /// The connection config for the guard's own dedicated connections (the health check,
    /// the watchdog), which must work when the pool is full. [`Guard::connect`] sets it.
    pub fn direct_connection(mut self, pg: tokio_postgres::Config) -> Self {
        self.direct = Some(pg);
        self
    }

    /// How many events each subscriber may fall behind before the oldest are dropped.
    /// Default 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Validates the configuration and starts the guard's sampler task (which stops when
    /// the last clone of the guard is dropped). Must be called inside a Tokio runtime.
    pub fn build(self) -> Result<Guard, BuildError> {
        let max_size = self.pool.status().max_size;
        self.config.validate(max_size)?;
        if self.event_capacity == 0 {
            return Err(BuildError::field("event_capacity", "must be at least 1"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let c = &self.config;
        let thresholds = Thresholds {
            warning: c.warning_utilization,
            critical: c.critical_utilization,
            critical_recovery: c.critical_recovery,
            warning_recovery: c.warning_recovery,
            min_dwell: c.min_dwell,
            starvation: c.starvation_after,
        };
        let reserve = c.reserve_for(max_size);
        let state = AdmissionState::new(
            max_size,
            reserve,
            c.queue_depth,
            LevelMachine::new(thresholds),
        );
        let timeouts = Timeouts {
            wait: Some(c.pool_wait_timeout),
            create: Some(c.pool_create_timeout),
            recycle: Some(c.pool_recycle_timeout),
        };
        let metrics = GuardMetrics::register();
        metrics.pool_max.set(max_size as f64);
        let inner = Arc::new(GuardInner {
            breaker: Breaker::new(c.breaker_ramp, Instant::now()),
            limits: UserLimiter::new(c.limits.clone()),
            state: Mutex::new(state),
            level: AtomicU8::new(Level::Normal.to_u8()),
            metrics,
            events: EventBus::new(self.event_capacity),
            window: WindowCounts::default(),
            avg_hold_us: AtomicU64::new(0),
            level_tx: watch::channel(Level::Normal).0,
            timeouts,
            pending_gets: AtomicUsize::new(0),
            health_conn: tokio::sync::Mutex::new(None),
            tag_prefix: OnceLock::new(),
            headroom: Mutex::new(None),
            pool: self.pool,
            direct: self.direct,
            config: self.config,
        });
        runtime.spawn(crate::monitor::run_sampler(Arc::downgrade(&inner)));
        Ok(Guard { inner })
    }
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
        }
    }

    /// Builds the pool with `options` (statement timeout, application name, ...) over `pg`
    /// and returns a builder for a guard over it, with the dedicated connection set.
    pub fn connect(
        pg: tokio_postgres::Config,
        options: &PoolOptions,
    ) -> Result<GuardBuilder, BuildError> {
        let (pool, pg) = build_pool(pg, options)?;
        Ok(Guard::builder(pool).direct_connection(pg))
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
        Level::from_u8(self.inner.level.load(Ordering::Acquire))
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

    /// The estimated time until a refused request of `class` is worth retrying, from the
    /// current queue and the average hold time.
    pub fn retry_after(&self, kind: RejectionKind) -> Duration {
        self.inner.retry_after(kind)
    }
}

impl GuardInner {
    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    pub(crate) fn count(&self, class: Criticality, outcome: Outcome) {
        self.metrics.request(class, outcome);
        self.window.add(class, outcome);
    }

    pub(crate) fn rejection(&self, kind: RejectionKind, class: Criticality) -> Rejection {
        Rejection {
            kind,
            class,
            retry_after: self.retry_after(kind),
        }
    }

    pub(crate) fn retry_after(&self, kind: RejectionKind) -> Duration {
        let (queued, capacity) = {
            let s = self.lock();
            (s.queued(), s.max_size.saturating_sub(s.reserve).max(1))
        };
        let avg_hold = match self.avg_hold_us.load(Ordering::Relaxed) {
            0 => Duration::from_millis(50),
            us => Duration::from_micros(us),
        };
        let drain = avg_hold.mul_f64((queued + 1) as f64 / capacity as f64);
        let estimate = match kind {
            // The breaker closes only after the level has been calm for the dwell time.
            RejectionKind::Shed => drain + self.config.min_dwell,
            RejectionKind::PoolUnavailable => drain.max(Duration::from_secs(1)),
            _ => drain,
        };
        estimate.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    async fn acquire(
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
                tracing::warn!(target: "poolguard", error = %e, %class, "pool could not hand out a connection");
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

    /// A slot came back (called by [`SlotPermit`]'s drop), with the registry id of the
    /// connection handed out on it.
    pub(crate) fn release_slot(self: &Arc<Self>, held: Option<u64>) {
        let effects = self.lock().release(held, Instant::now());
        self.apply(effects);
    }

    /// Records a connection handed out through the guard; returns its registry id.
    pub(crate) fn register_held(
        &self,
        class: Criticality,
        route: Option<Arc<str>>,
        user: Option<UserKey>,
    ) -> u64 {
        self.lock().held.insert(class, route, user, Instant::now())
    }

    /// Connections held longer than `after`, each reported once.
    pub(crate) fn take_leaks(&self, after: Duration) -> Vec<crate::admission::Leak> {
        self.lock().held.take_leaks(after, Instant::now())
    }

    /// The route and user of the held connection with registry id `id`.
    pub(crate) fn held_route(&self, id: u64) -> Option<(Option<Arc<str>>, Option<UserKey>)> {
        self.lock()
            .held
            .get(id)
            .map(|h| (h.route.clone(), h.user.clone()))
    }

    /// Changes the number of slots the guard hands out (after the pool was resized). The
    /// reserve stays; more slots may grant waiters at once, fewer simply stop granting until
    /// enough connections come back.
    pub(crate) fn set_max_size(self: &Arc<Self>, max_size: usize) {
        let effects = {
            let mut s = self.lock();
            s.max_size = max_size.max(s.reserve + 1);
            s.observe(Instant::now())
        };
        self.metrics.pool_max.set(max_size as f64);
        self.apply(effects);
    }

    /// Feeds server-wide utilization into the level.
    pub(crate) fn set_server_utilization(self: &Arc<Self>, utilization: f64) {
        let u = if utilization.is_finite() {
            utilization.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let effects = {
            let mut state = self.lock();
            state.server_utilization = u;
            state.observe(Instant::now())
        };
        self.apply(effects);
    }

    pub(crate) fn note_hold_time(&self, class: Criticality, held: Duration) {
        self.metrics.hold_time(class, held.as_secs_f64());
        let us = held.as_micros().min(u64::MAX as u128) as u64;
        let old = self.avg_hold_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.avg_hold_us.store(new.max(1), Ordering::Relaxed);
    }

    pub(crate) fn note_statement_timeout(&self, class: Criticality, route: Option<Arc<str>>) {
        self.count(class, Outcome::TimedOut);
        self.events
            .publish(Event::now(EventKind::StatementTimedOut {
                class,
                route: route.as_deref().map(str::to_string),
            }));
    }

    /// Carries out what a state change decided, outside the lock.
    pub(crate) fn apply(self: &Arc<Self>, effects: Effects) {
        for waiter in effects.grants {
            // If the caller is gone the permit comes back and its drop releases the slot.
            let _ = waiter.tx.send(Ok(SlotPermit::new(self.clone())));
        }
        for waiter in effects.rejects {
            let _ = waiter.tx.send(Err(RejectionKind::Shed));
        }
        if let Some(t) = effects.transition {
            self.level.store(t.to.to_u8(), Ordering::Release);
            self.level_tx.send_replace(t.to);
            self.metrics.level.set(t.to.as_gauge());
            crate::metrics::level_entered(t.to);
            let s = self.status();
            self.events.publish(Event::now(EventKind::LevelChanged {
                from: t.from,
                to: t.to,
                utilization: s.utilization.max(s.server_utilization),
                in_use: s.in_use,
                max_size: s.max_size,
                waiting: s.queued + s.pool_waiting,
            }));
            if let Some(state) = self.breaker.on_level(t.to, Instant::now()) {
                self.events
                    .publish(Event::now(EventKind::BreakerChanged { state }));
            }
        }
        if let Some((after, peak_utilization)) = effects.recovered {
            self.events.publish(Event::now(EventKind::Recovered {
                after,
                peak_utilization,
            }));
        }
    }

    pub(crate) fn status(&self) -> GuardStatus {
        let pool = self.pool.status();
        let s = self.lock();
        GuardStatus {
            level: s.level(),
            breaker: self.breaker.state(),
            max_size: s.max_size,
            size: pool.size,
            available: pool.available,
            in_use: s.in_use(),
            granted: s.granted,
            external: s.external,
            queued: s.queued(),
            queued_by_class: Criticality::ALL.map(|c| s.queued_of(c)),
            pool_waiting: pool.waiting,
            reserve: s.reserve,
            utilization: s.pool_utilization(),
            server_utilization: s.server_utilization,
            peak_utilization: s.peak_utilization,
        }
    }

    /// One sampler tick: reads the pool, re-evaluates the level, updates gauges.
    pub(crate) fn sample(self: &Arc<Self>, now: Instant) {
        let pool = self.pool.status();
        let pool_in_use = pool.size.saturating_sub(pool.available);
        let effects = {
            let mut s = self.lock();
            s.external = pool_in_use.saturating_sub(s.granted);
            s.pool_waiting = pool
                .waiting
                .saturating_sub(self.pending_gets.load(Ordering::Relaxed));
            s.observe(now)
        };
        self.apply(effects);
        let s = self.status();
        let m = &self.metrics;
        m.pool_active.set(s.in_use as f64);
        m.pool_max.set(s.max_size as f64);
        m.pool_idle.set(s.available as f64);
        m.pool_waiting.set((s.queued + s.pool_waiting) as f64);
        m.queue_depth.set(s.queued as f64);
        m.utilization.set(s.utilization);
        m.level.set(s.level.as_gauge());
    }

    /// Emits the requests summary of the last window if anything but serving happened.
    pub(crate) fn summarize(&self, window: Duration) {
        let counts = self.window.take();
        if !counts.is_quiet() {
            self.events
                .publish(Event::now(EventKind::RequestsSummary { window, counts }));
        }
    }

    pub(crate) fn housekeeping(&self) {
        self.limits.housekeeping();
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
    fn leave_queue(self) {
        // Drop does the work.
    }
}

impl Drop for QueuedWaiter<'_> {
    fn drop(&mut self) {
        let removed = self
            .inner
            .lock()
            .cancel(self.class, &self.user, self.id, self.enqueued);
        if removed {
            // Leaving the queue can lower the pressure.
            let effects = self.inner.lock().observe(Instant::now());
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

/// Lets the sampler hold the guard weakly.
pub(crate) type WeakInner = Weak<GuardInner>;
