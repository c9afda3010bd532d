//! [`GuardInner`]: the shared state behind every clone of a guard, and how it changes: every
//! change of the admission state, a slot's release, a resize, a server reading. What a change
//! tells the world is in `publish.rs`; when a refused caller should come back, in
//! `retry_after.rs`.
//!
//! Every change of the admission state goes through [`GuardInner::change`]: the decision is
//! made under the admission lock, the level it leads to is published under the same lock (so
//! two racing changes can never leave a stale level published), and what it asks for —
//! grants, refusals, events — is carried out after the lock is released.

use super::window::WindowCounts;
use crate::admission::{AdmissionState, Effects, HeldRegistry, Slots};
use crate::config::GuardConfig;
use crate::criticality::Criticality;
use crate::events::{EventBus, NonCriticalGate};
use crate::limit::{UserKey, UserLimiter};
use crate::metrics::{GuardMetrics, Outcome};
use crate::monitor::Level;
use crate::stripes::Stripes;
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The newcomer estimate meaning "nothing measured yet".
pub(super) const UNKNOWN: u64 = u64::MAX;

/// The guard's state, behind the [`GuardRef`](super::GuardRef)s that count its users.
/// Aligned to 128 bytes: in its `Arc` the reference counts (written by each new `GuardRef`,
/// and by each slot granted from the queue) then have their lines to themselves, and reading
/// the fields below them does not wait for those writes.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct GuardInner {
    pub(crate) pool: Pool,
    pub(crate) config: GuardConfig,
    pub(crate) direct: Option<tokio_postgres::Config>,
    /// The TLS connector of the pool, cancel requests, the health check and the watchdog.
    pub(crate) tls: crate::tls::TlsConnector,
    /// The service and instance the pool's connections are named with.
    pub(crate) identity: Option<crate::identity::Identity>,
    /// The pool's slots: the lock-free gate and the admission state behind it.
    pub(super) slots: Slots,
    /// Refuses each queued acquisition when its deadline passes.
    pub(super) deadlines: super::deadlines::DeadlineKeeper,
    /// Connections held through the guard, for leak detection and the watchdog.
    pub(super) held: HeldRegistry,
    pub(super) level: AtomicU8,
    pub(crate) limits: UserLimiter,
    pub(crate) metrics: GuardMetrics,
    pub(crate) events: EventBus,
    pub(super) window: WindowCounts,
    pub(super) level_tx: watch::Sender<Level>,
    pub(super) timeouts: Timeouts,
    /// The client-side bound on each tracked query, per class (`Criticality::index`): worked
    /// out once from the config and the connection's own `statement_timeout`, which do not
    /// change after the build.
    pub(super) query_deadlines: [Duration; 3],
    /// Acquisitions holding a slot and inside `Pool::get`: deadpool counts them as waiting,
    /// but they are not starvation. Written twice by every checkout, so counted per thread
    /// (an entry adds one to its thread's copy, the exit takes one off its own thread's),
    /// and added up by the sampler.
    pub(super) pending_gets: Stripes<AtomicU64>,
    /// Refusals held by the early-retry pacing right now (`refusal_pacing.rs`).
    pub(super) delayed_refusals: AtomicUsize,
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
    /// The non-critical gate's state as last published (written under the admission lock).
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
    /// Reads the admission state under its lock.
    pub(super) fn read<R>(&self, f: impl FnOnce(&AdmissionState) -> R) -> R {
        self.slots.read(f)
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
        self.change_at(crate::clock::now(), |state, now, effects| {
            let (result, made) = f(state, now);
            *effects = made;
            result
        })
    }

    /// [`change`](Self::change) at `now`, a clock reading the caller made just before, with
    /// the change writing what follows into effects kept in place (the hand-off's and the
    /// queue's changes, made on every queued acquisition).
    pub(super) fn change_at<R>(
        self: &Arc<Self>,
        now: Instant,
        f: impl FnOnce(&mut AdmissionState, Instant, &mut Effects) -> R,
    ) -> R {
        let mut effects = Effects::default();
        let (result, breaker) = self.slots.change(now, |state| {
            let result = f(state, now, &mut effects);
            if effects.transition.is_some() {
                let level = state.level();
                self.level.store(level.to_u8(), Ordering::Release);
                self.level_tx
                    .send_if_modified(|l| std::mem::replace(l, level) != level);
                self.metrics.level.set(level.as_gauge());
            }
            let outlooks = state.outlooks(now);
            for class in Criticality::ALL {
                let (outlook, drain) = (outlooks[class.index()], state.drain(class));
                let estimate = outlook
                    .expected_start_micros(drain)
                    .map_or(UNKNOWN, |us| us.min(UNKNOWN - 1));
                self.estimates[class.index()].store(estimate, Ordering::Relaxed);
                let interval = outlook.start_interval_micros(drain).unwrap_or(0);
                self.start_intervals[class.index()].store(interval, Ordering::Relaxed);
            }
            let b = breaker_to_u8(state.breaker(now));
            // Written only here, under the admission lock: a plain load and store.
            let changed = self.breaker.load(Ordering::Relaxed) != b;
            if changed {
                self.breaker.store(b, Ordering::Relaxed);
            }
            (result, changed.then(|| breaker_from_u8(b)))
        });
        self.apply(effects, breaker, now);
        result
    }

    /// A slot of `class` came back (a [`SlotPermit`] given back by its holder or dropped),
    /// held for `held` when a connection was handed out on it, with that connection's
    /// registry id; `at` is the holder's clock reading of the release, if it made one, and
    /// the hand-off runs at it.
    pub(crate) fn release_slot(
        self: &Arc<Self>,
        class: Criticality,
        held: Option<Duration>,
        registry_id: Option<u64>,
        at: Option<Instant>,
    ) {
        if let Some(id) = registry_id {
            self.held.remove(id);
        }
        if !self.slots.release(class, held) {
            let now = at.unwrap_or_else(crate::clock::now);
            self.change_at(now, |s, now, effects| {
                s.after_release_into(class, held, now, effects)
            });
        }
    }

    /// Connections held longer than `after`, each reported once.
    pub(crate) fn take_leaks(&self, after: Duration) -> Vec<crate::admission::Leak> {
        self.held.take_leaks(after, crate::clock::now())
    }

    /// The route and user of the held connection with registry id `id`.
    pub(crate) fn held_route(&self, id: u64) -> Option<(Option<Arc<str>>, Option<UserKey>)> {
        self.held.route_of(id)
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
}

/// Lets the sampler hold the guard weakly.
pub(crate) type WeakInner = Weak<GuardInner>;
