//! [`GuardBuilder`]: configuring and validating a guard, and starting its sampler.

use super::inner::GuardInner;
use super::window::WindowCounts;
use super::Guard;
use crate::admission::AdmissionState;
use crate::breaker::Breaker;
use crate::events::EventBus;
use crate::limit::UserLimiter;
use crate::metrics::GuardMetrics;
use crate::monitor::{LevelMachine, Thresholds};
use crate::{BuildError, GuardConfig, Level};
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::watch;

/// Builds a [`Guard`]; [`build`](GuardBuilder::build) validates the configuration.
#[derive(Debug)]
#[must_use]
pub struct GuardBuilder {
    pub(super) pool: Pool,
    pub(super) config: GuardConfig,
    pub(super) direct: Option<tokio_postgres::Config>,
    pub(super) event_capacity: usize,
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
