//! [`GuardBuilder`]: configuring and validating a guard, and starting its sampler.

use super::inner::GuardInner;
use super::window::WindowCounts;
use super::{Guard, GuardRef};
use crate::admission::{AdmissionSettings, HeldRegistry, Slots};
use crate::config::BuildError;
use crate::config::GuardConfig;
use crate::criticality::Criticality;
use crate::events::EventBus;
use crate::limit::UserLimiter;
use crate::metrics::GuardMetrics;
use crate::monitor::Level;
use crate::monitor::{LevelMachine, Thresholds};
use crate::stripes::Stripes;
use deadpool_postgres::{Pool, Timeouts};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;

/// Builds a [`Guard`]; [`build`](GuardBuilder::build) validates the configuration.
#[derive(Debug)]
#[must_use]
pub struct GuardBuilder {
    pub(super) pool: Pool,
    pub(super) config: GuardConfig,
    pub(super) direct: Option<tokio_postgres::Config>,
    pub(super) event_capacity: usize,
    /// Whether the pool resets session settings when a connection comes back (a pool from
    /// [`build_pool`](crate::pool::build_pool) does); per-class settings rely on it.
    pub(super) resets_sessions: bool,
    /// How every connection of the guard opens its TLS side.
    pub(super) tls: crate::tls::TlsConnector,
    /// The service and instance its connections are named with (set by `Guard::builder_for`).
    pub(super) identity: Option<crate::identity::Identity>,
}

impl GuardBuilder {
    /// Declares that the pool resets session settings (`RESET ALL`) when a connection comes
    /// back, as deadpool's `Clean` recycling does. Per-class `statement_timeout` overrides
    /// need it; pools from [`build_pool`](crate::pool::build_pool) and [`Guard::builder_for`] have it.
    pub fn pool_resets_sessions(mut self, resets: bool) -> Self {
        self.resets_sessions = resets;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: GuardConfig) -> Self {
        self.config = config;
        self
    }

    /// The connection config for the guard's own dedicated connections (the health check,
    /// the watchdog), which must work when the pool is full. [`Guard::builder_for`] sets it.
    pub fn direct_connection(mut self, pg: tokio_postgres::Config) -> Self {
        self.direct = Some(pg);
        self
    }

    /// The TLS connector for cancel requests, the health check and the watchdog; it should be
    /// the one the pool was built with ([`Guard::builder_for_tls`] sets it). Default: plain text.
    pub fn tls(mut self, tls: crate::tls::TlsConnector) -> Self {
        self.tls = tls;
        self
    }

    /// How many events each subscriber may fall behind before the oldest are dropped.
    /// Default 1024.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Validates the configuration and starts the guard's two tasks, the sampler and the
    /// deadline keeper that refuses queued acquisitions at their deadline (both stop when the
    /// last clone of the guard is dropped). Must be called inside a Tokio runtime; the tasks
    /// run on that runtime.
    pub fn build(self) -> Result<Guard, BuildError> {
        let max_size = self.pool.status().max_size;
        self.config.validate(max_size)?;
        let overrides = Criticality::ALL
            .iter()
            .any(|c| self.config.class_statement_timeout.get(*c).is_some());
        if overrides && !self.resets_sessions {
            return Err(BuildError::field(
                "class_statement_timeout",
                "needs a pool that resets session settings on recycle, or an override would \
                 outlive its checkout: build the pool with build_pool / Guard::builder_for, or \
                 declare it with pool_resets_sessions(true)",
            ));
        }
        if self.event_capacity == 0 {
            return Err(BuildError::field("event_capacity", "must be at least 1"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        crate::pool::require_runtime(&self.pool)?;
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
        let settings = AdmissionSettings {
            max_size,
            reserve,
            warning_utilization: c.warning_utilization,
            queue_depth: c.queue_depth,
            user_queue_depth: c.user_queue_depth,
            ramp: c.breaker_ramp,
        };
        // Any varying value seeds the Retry-After jitter.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED);
        let slots = Slots::new(settings, LevelMachine::new(thresholds), seed);
        let timeouts = Timeouts {
            wait: Some(c.pool_wait_timeout),
            create: Some(c.pool_create_timeout),
            recycle: Some(c.pool_recycle_timeout),
        };
        let statement_timeout = self
            .direct
            .as_ref()
            .and_then(crate::pool::statement_timeout_of);
        let mut query_deadlines = [Duration::ZERO; 3];
        for class in Criticality::ALL {
            query_deadlines[class.index()] = c.query_deadline_for(class, statement_timeout);
        }
        let metrics = GuardMetrics::register();
        metrics.pool_max.set(max_size as f64);
        let inner = Arc::new(GuardInner {
            limits: UserLimiter::new(c.limits.clone()),
            slots,
            deadlines: Default::default(),
            held: HeldRegistry::default(),
            level: AtomicU8::new(Level::Normal.to_u8()),
            metrics,
            events: EventBus::new(self.event_capacity),
            window: WindowCounts::default(),
            level_tx: watch::channel(Level::Normal).0,
            timeouts,
            query_deadlines,
            pending_gets: Stripes::default(),
            delayed_refusals: AtomicUsize::new(0),
            estimates: Default::default(),
            start_intervals: Default::default(),
            returns: Default::default(),
            epoch: crate::clock::now(),
            breaker: AtomicU8::new(0),
            jitter_seq: AtomicU64::new(seed),
            health_conn: tokio::sync::Mutex::new(None),
            tag_prefix: OnceLock::new(),
            headroom: Mutex::new(None),
            #[cfg(feature = "redis")]
            shared_limits: OnceLock::new(),
            shared_queries: Default::default(),
            pool: self.pool,
            direct: self.direct,
            tls: self.tls,
            identity: self.identity,
            config: self.config,
        });
        runtime.spawn(super::sampler::run_sampler(Arc::downgrade(&inner)));
        inner.deadlines.start(&runtime, Arc::downgrade(&inner));
        Ok(Guard {
            inner: GuardRef::new(inner),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::BuildError;
    use crate::config::ClassTimeouts;
    use crate::config::GuardConfig;
    use crate::config::{FALLBACK_QUERY_DEADLINE, QUERY_DEADLINE_MARGIN};
    use crate::criticality::Criticality;
    use crate::guard::Guard;
    use std::time::Duration;

    /// A guard with `config` over a pool declared to reset session settings, cancelling
    /// through `direct` when given.
    fn resetting_guard(config: GuardConfig, direct: Option<tokio_postgres::Config>) -> Guard {
        let builder = Guard::builder(crate::pool::unreachable_pool(4))
            .config(config)
            .pool_resets_sessions(true);
        match direct {
            Some(direct) => builder.direct_connection(direct),
            None => builder,
        }
        .build()
        .unwrap()
    }

    /// The default config with a `statement_timeout` override of `timeout` for non-critical
    /// work.
    fn non_critical_override(timeout: Duration) -> GuardConfig {
        GuardConfig {
            class_statement_timeout: ClassTimeouts {
                non_critical: Some(timeout),
                ..ClassTimeouts::default()
            },
            ..GuardConfig::default()
        }
    }

    #[tokio::test]
    async fn class_overrides_need_a_pool_that_resets_sessions() {
        let config = non_critical_override(Duration::from_millis(250));
        let refused = Guard::builder(crate::pool::unreachable_pool(4))
            .config(config.clone())
            .build();
        assert!(matches!(
            refused,
            Err(BuildError::InvalidConfig {
                field: "class_statement_timeout",
                ..
            })
        ));
        resetting_guard(config, None);
    }

    #[tokio::test]
    async fn each_class_gets_the_query_deadline_its_statement_timeouts_call_for() {
        let config = non_critical_override(Duration::from_secs(90));
        let direct: tokio_postgres::Config =
            "postgres://nobody@127.0.0.1:1/none?options=-c%20statement_timeout%3D5000"
                .parse()
                .unwrap();
        let guard = resetting_guard(config.clone(), Some(direct));
        let connection_timeout = Some(Duration::from_secs(5));
        for class in Criticality::ALL {
            assert_eq!(
                guard.inner.query_deadlines[class.index()],
                config.query_deadline_for(class, connection_timeout),
                "{class}"
            );
        }
        // The class override and the connection's own setting both count, each where it
        // applies.
        assert_ne!(
            guard.inner.query_deadlines[Criticality::NonCritical.index()],
            guard.inner.query_deadlines[Criticality::Standard.index()]
        );
        // The values themselves: the longer of the class's and the connection's timeouts,
        // plus the margin.
        let deadline =
            |guard: &Guard, class: Criticality| guard.inner.query_deadlines[class.index()];
        assert_eq!(
            deadline(&guard, Criticality::NonCritical),
            Duration::from_secs(90) + QUERY_DEADLINE_MARGIN
        );
        for class in [Criticality::Standard, Criticality::Critical] {
            assert_eq!(
                deadline(&guard, class),
                Duration::from_secs(5) + QUERY_DEADLINE_MARGIN,
                "{class}"
            );
        }
        let without_direct = resetting_guard(config.clone(), None);
        assert_eq!(
            without_direct.inner.query_deadlines[Criticality::Standard.index()],
            config.query_deadline_for(Criticality::Standard, None)
        );
        // Without the connection's settings only the override is known.
        assert_eq!(
            deadline(&without_direct, Criticality::Standard),
            FALLBACK_QUERY_DEADLINE
        );
        assert_eq!(
            deadline(&without_direct, Criticality::NonCritical),
            Duration::from_secs(90) + QUERY_DEADLINE_MARGIN
        );
    }
}
