//! [`GuardInner`]: the shared state behind every clone of a guard, and what it does when a
//! slot is released, the level changes or the sampler ticks.

use super::window::WindowCounts;
use crate::admission::{AdmissionState, Effects, SlotPermit};
use crate::breaker::Breaker;
use crate::events::{Event, EventBus, EventKind};
use crate::limit::{UserKey, UserLimiter};
use crate::metrics::{GuardMetrics, Outcome};
use crate::rejection::{Rejection, RejectionKind};
use crate::{Criticality, GuardConfig, Level};
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct GuardInner {
    pub(crate) pool: Pool,
    pub(crate) config: GuardConfig,
    pub(crate) direct: Option<tokio_postgres::Config>,
    /// The TLS connector of the pool, cancel requests, the health check and the watchdog.
    pub(crate) tls: crate::tls::TlsConnector,
    /// The service and instance the pool's connections are named with.
    pub(crate) identity: Option<crate::identity::Identity>,
    pub(super) state: Mutex<AdmissionState>,
    pub(super) level: AtomicU8,
    pub(crate) breaker: Breaker,
    pub(crate) limits: UserLimiter,
    pub(crate) metrics: GuardMetrics,
    pub(crate) events: EventBus,
    pub(super) window: WindowCounts,
    /// Exponential average of hold times, in microseconds.
    pub(super) avg_hold_us: AtomicU64,
    pub(super) level_tx: watch::Sender<Level>,
    pub(super) timeouts: Timeouts,
    /// Acquisitions holding a slot and inside `Pool::get`: deadpool counts them as waiting,
    /// but they are not starvation.
    pub(super) pending_gets: AtomicUsize,
    /// The queue length and the slots open to non-critical work, as of the last sample:
    /// enough for a `Retry-After` estimate, without taking the admission lock on every
    /// refusal.
    pub(super) queued_hint: AtomicUsize,
    pub(super) capacity_hint: AtomicUsize,
    pub(crate) health_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Set by the watchdog when it needs to tell connections apart: each checkout then sets
    /// `application_name` to `{prefix}:{class}:{registry id}`.
    pub(crate) tag_prefix: OnceLock<String>,
    /// The last server-wide connection count the watchdog read.
    pub(crate) headroom: Mutex<Option<crate::watchdog::ServerHeadroom>>,
}

impl GuardInner {
    pub(super) fn lock(&self) -> MutexGuard<'_, AdmissionState> {
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
        let queued = self.queued_hint.load(Ordering::Relaxed);
        let capacity = self.capacity_hint.load(Ordering::Relaxed).max(1);
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

    /// Changes the number of slots the guard hands out (after the pool was resized). A
    /// reserve given as a share of the pool follows the new size; more slots may grant
    /// waiters at once, fewer simply stop granting until enough connections come back.
    pub(crate) fn set_max_size(self: &Arc<Self>, max_size: usize) {
        let effects = {
            let mut s = self.lock();
            // A reserve given as a share of the pool (the default) follows its size.
            s.reserve = self.config.reserve_for(max_size);
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
            // Transitions are decided under the lock but carried out after it, so two of
            // them can be carried out in the opposite order. Publish the level the machine
            // is at now, never a stale one.
            let s = self.status();
            let current = s.level;
            self.level.store(current.to_u8(), Ordering::Release);
            self.level_tx
                .send_if_modified(|l| std::mem::replace(l, current) != current);
            self.metrics.level.set(current.as_gauge());
            crate::metrics::level_entered(t.to);
            self.events.publish(Event::now(EventKind::LevelChanged {
                from: t.from,
                to: t.to,
                utilization: s.utilization.max(s.server_utilization),
                in_use: s.in_use,
                max_size: s.max_size,
                waiting: s.queued + s.pool_waiting,
            }));
            if let Some(state) = self.breaker.on_level(current, Instant::now()) {
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
        self.queued_hint.store(s.queued, Ordering::Relaxed);
        self.capacity_hint
            .store(s.max_size.saturating_sub(s.reserve), Ordering::Relaxed);
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

/// Lets the sampler hold the guard weakly.
pub(crate) type WeakInner = Weak<GuardInner>;
