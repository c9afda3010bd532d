//! [`GuardInner`]: the shared state behind every clone of a guard, and what it does when a
//! slot is released, the level changes or the sampler ticks.
//!
//! Every change of the admission state goes through [`GuardInner::change`]: the decision is
//! made under the admission lock, the level it leads to is published under the same lock (so
//! two racing changes can never leave a stale level published), and what it asks for —
//! grants, refusals, events — is carried out after the lock is released.

use super::window::WindowCounts;
use crate::admission::{AdmissionState, Effects, SlotPermit};
use crate::controller::RetryJitter;
use crate::criticality::Criticality;
use crate::events::{Event, EventBus, EventKind, NonCriticalGate};
use crate::limit::{UserKey, UserLimiter};
use crate::metrics::{GuardMetrics, Outcome};
use crate::monitor::Level;
use crate::rejection::{Rejection, RejectionKind};
use crate::GuardConfig;
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The newcomer estimate meaning "nothing measured yet".
const UNKNOWN: u64 = u64::MAX;
/// The `Retry-After` of a refusal when nothing better is known.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest `Retry-After` ever sent.
const MAX_RETRY: Duration = Duration::from_secs(60);

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
    pub(crate) limits: UserLimiter,
    pub(crate) metrics: GuardMetrics,
    pub(crate) events: EventBus,
    pub(super) window: WindowCounts,
    pub(super) level_tx: watch::Sender<Level>,
    pub(super) timeouts: Timeouts,
    /// Acquisitions holding a slot and inside `Pool::get`: deadpool counts them as waiting,
    /// but they are not starvation.
    pub(super) pending_gets: AtomicUsize,
    /// When a newcomer of each class can expect to start, in microseconds ([`UNKNOWN`] before
    /// a hold was measured), as of the last change: the layer refuses a request that cannot
    /// meet its deadline from this, without taking the admission lock.
    pub(super) estimates: [AtomicU64; 3],
    /// The time between two starts of each class at its drain rate, in microseconds, as of
    /// the last change (0 before a hold was measured).
    pub(super) start_intervals: [AtomicU64; 3],
    /// The latest return time booked for a refused caller of each class, in microseconds
    /// since `epoch`: every refusal books the next free turn after it, so refused callers are
    /// told to come back one after another at the drain rate, not all at once.
    pub(super) returns: [AtomicU64; 3],
    pub(super) epoch: Instant,
    /// The non-critical gate's state as last published.
    pub(super) breaker: AtomicU8,
    /// Feeds the jitter of refusals made outside the admission lock.
    pub(super) jitter_seq: AtomicU64,
    pub(crate) health_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Set by the watchdog when it needs to tell connections apart: each checkout then sets
    /// `application_name` to `{prefix}:{class}:{registry id}`.
    pub(crate) tag_prefix: OnceLock<String>,
    /// The last server-wide connection count the watchdog read.
    pub(crate) headroom: Mutex<Option<crate::watchdog::ServerUse>>,
    /// The per-user limits shared in Redis, once [`Guard::share_limits`](crate::Guard::share_limits) ran.
    #[cfg(feature = "redis")]
    pub(crate) shared_limits: OnceLock<Arc<crate::limit::redis::RedisLimiter>>,
    /// Identical read-only queries in flight, for [`Guard::query_shared`](super::Guard::query_shared).
    pub(crate) shared_queries: crate::single_flight::SingleFlight,
}

fn breaker_to_u8(b: NonCriticalGate) -> u8 {
    match b {
        NonCriticalGate::Direct => 0,
        NonCriticalGate::Deferred => 1,
        NonCriticalGate::Ramping => 2,
    }
}

fn breaker_from_u8(v: u8) -> NonCriticalGate {
    match v {
        0 => NonCriticalGate::Direct,
        1 => NonCriticalGate::Deferred,
        _ => NonCriticalGate::Ramping,
    }
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

    /// Runs one change of the admission state under its lock, publishes the level it leads to
    /// before the lock is released, then carries out the rest.
    pub(super) fn change<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut AdmissionState, Instant) -> (R, Effects),
    ) -> R {
        let now = Instant::now();
        let (result, effects, breaker) = {
            let mut state = self.lock();
            let (result, effects) = f(&mut state, now);
            if effects.transition.is_some() {
                let level = state.level();
                self.level.store(level.to_u8(), Ordering::Release);
                self.level_tx
                    .send_if_modified(|l| std::mem::replace(l, level) != level);
                self.metrics.level.set(level.as_gauge());
            }
            for class in Criticality::ALL {
                let e = state
                    .newcomer_estimate(class, now)
                    .map_or(UNKNOWN, |d| d.as_micros().min(u64::MAX as u128 - 1) as u64);
                self.estimates[class.index()].store(e, Ordering::Relaxed);
                let i = state
                    .start_interval(class)
                    .map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64);
                self.start_intervals[class.index()].store(i, Ordering::Relaxed);
            }
            let b = breaker_to_u8(state.breaker(now));
            let changed = self.breaker.swap(b, Ordering::AcqRel) != b;
            (result, effects, changed.then(|| breaker_from_u8(b)))
        };
        self.apply(effects, breaker);
        result
    }

    /// When a newcomer of `class` can expect to start, from the last change; `None` before
    /// anything was measured.
    pub(crate) fn estimate(&self, class: Criticality) -> Option<Duration> {
        match self.estimates[class.index()].load(Ordering::Relaxed) {
            UNKNOWN => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// A refusal answered at once when a request of `class` could not start before
    /// `deadline` (`None` when it can, or when nothing was measured yet). No lock.
    pub(crate) fn deadline_refusal(
        &self,
        class: Criticality,
        deadline: Instant,
        now: Instant,
    ) -> Option<Rejection> {
        let estimate = self.estimate(class)?;
        let allowed = deadline.saturating_duration_since(now);
        (estimate > allowed).then(|| {
            let wait = self.jittered(estimate.saturating_sub(allowed), estimate);
            Rejection {
                kind: RejectionKind::Shed,
                class,
                retry_after: self.book_return(class, wait),
            }
        })
    }

    /// Books the return of a caller of `class` told to wait at least `wait`: its turn is the
    /// later of `now + wait` and one start interval after the last booked return. Returns
    /// how long it should wait (never more than a minute).
    pub(crate) fn book_return(&self, class: Criticality, wait: Duration) -> Duration {
        let slot = &self.returns[class.index()];
        let interval = self.start_intervals[class.index()].load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_micros() as u64;
        let earliest = now + wait.as_micros() as u64;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let at = earliest
                .max(current)
                .min(now + MAX_RETRY.as_micros() as u64);
            match slot.compare_exchange_weak(
                current,
                at + interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::from_micros(at - now),
                Err(seen) => current = seen,
            }
        }
    }

    /// `wait` with the jitter bounded by `estimate`, from a counter spread by a
    /// multiplicative hash.
    fn jittered(&self, wait: Duration, estimate: Duration) -> Duration {
        let n = self.jitter_seq.fetch_add(1, Ordering::Relaxed);
        let random = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        RetryJitter::spread_wait(wait, estimate, random).min(MAX_RETRY)
    }

    /// A rejection of `kind` for `class`, with `Retry-After` from the class's estimate and
    /// a booked return.
    pub(crate) fn rejection(&self, kind: RejectionKind, class: Criticality) -> Rejection {
        Rejection {
            kind,
            class,
            retry_after: self.book_return(class, self.retry_after_for(kind, class)),
        }
    }

    fn retry_after_for(&self, kind: RejectionKind, class: Criticality) -> Duration {
        let estimate = self.estimate(class).unwrap_or(DEFAULT_RETRY);
        let estimate = match kind {
            RejectionKind::PoolUnavailable => estimate.max(DEFAULT_RETRY),
            _ => estimate,
        };
        self.jittered(estimate, estimate)
    }

    pub(crate) fn retry_after(&self, kind: RejectionKind) -> Duration {
        self.retry_after_for(kind, Criticality::NonCritical)
    }

    /// A slot of `class` came back (called by [`SlotPermit`]'s drop), held for `held` when a
    /// connection was handed out on it, with that connection's registry id.
    pub(crate) fn release_slot(
        self: &Arc<Self>,
        class: Criticality,
        held: Option<Duration>,
        registry_id: Option<u64>,
    ) {
        self.change(|s, now| ((), s.release(class, held, registry_id, now)));
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
        let reserve = self.config.reserve_for(max_size);
        self.change(|s, now| {
            s.resize(max_size, reserve);
            ((), s.observe(now))
        });
        self.metrics.pool_max.set(max_size as f64);
    }

    /// Feeds server-wide utilization into the level.
    pub(crate) fn set_server_utilization(self: &Arc<Self>, utilization: f64) {
        let u = if utilization.is_finite() {
            utilization.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.change(|s, now| {
            s.server_utilization = u;
            ((), s.observe(now))
        });
    }

    pub(crate) fn note_hold_time(&self, class: Criticality, held: Duration) {
        self.metrics.hold_time(class, held.as_secs_f64());
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
    fn apply(self: &Arc<Self>, effects: Effects, breaker: Option<NonCriticalGate>) {
        for waiter in effects.grants {
            // If the caller is gone the permit comes back and its drop releases the slot.
            let _ = waiter
                .tx
                .send(Ok(SlotPermit::new(self.clone(), waiter.class)));
        }
        for (waiter, mut refusal) in effects.refusals {
            refusal.retry_after = self.book_return(waiter.class, refusal.retry_after);
            let _ = waiter.tx.send(Err(refusal));
        }
        if let Some(change) = effects.transition {
            let t = change.transition;
            crate::metrics::level_entered(t.to);
            self.events.publish(Event::now(EventKind::LevelChanged {
                from: t.from,
                to: t.to,
                utilization: change.utilization,
                in_use: change.in_use,
                max_size: change.max_size,
                waiting: change.waiting,
            }));
        }
        if let Some(state) = breaker {
            self.events
                .publish(Event::now(EventKind::NonCriticalGateChanged { state }));
        }
        if let Some((after, peak_utilization)) = effects.recovered {
            self.events.publish(Event::now(EventKind::Recovered {
                after,
                peak_utilization,
            }));
        }
    }

    /// One sampler tick: reads the pool, re-evaluates the level, updates gauges.
    pub(crate) fn sample(self: &Arc<Self>) {
        let pool = self.pool.status();
        let pool_in_use = pool.size.saturating_sub(pool.available);
        let pending = self.pending_gets.load(Ordering::Relaxed);
        self.change(|s, now| {
            s.external = pool_in_use.saturating_sub(s.granted());
            s.pool_waiting = pool.waiting.saturating_sub(pending);
            ((), s.observe(now))
        });
        let s = self.status();
        let m = &self.metrics;
        m.pool_active.set(s.in_use as f64);
        m.pool_max.set(s.max_size as f64);
        m.pool_idle.set(s.available as f64);
        m.pool_waiting.set((s.queued + s.pool_waiting) as f64);
        m.queue_depth.set(s.queued as f64);
        // What the level machine sees: server-wide pressure counts when it is the higher.
        m.utilization
            .set(s.utilization.max(s.server_utilization).min(1.0));
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
