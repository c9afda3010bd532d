//! The guard as the watchdog sees it: [`WatchedGuard`] over the guard's shared state, and
//! [`Watchdog::builder`] over a [`Guard`].

use super::inner::GuardInner;
use super::Guard;
use crate::events::{Event, EventBus, EventKind, ResizeReason};
use crate::identity::Identity;
use crate::tls::TlsConnector;
use crate::watchdog::{
    HeldTooLong, PoolFigures, ServerUse, Watchdog, WatchdogBuilder, WatchedGuard,
};
use std::sync::Arc;
use std::time::Duration;

impl Watchdog {
    /// A builder over `guard` with [`WatchdogConfig::default`](crate::watchdog::WatchdogConfig).
    /// The guard must have a direct connection config ([`Guard::builder_for`] sets one).
    pub fn builder(guard: &Guard) -> WatchdogBuilder {
        WatchdogBuilder::over(guard.inner.state().clone())
    }
}

impl WatchedGuard for GuardInner {
    fn events(&self) -> &EventBus {
        &self.events
    }

    fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    fn direct_connection(&self) -> Option<(tokio_postgres::Config, TlsConnector)> {
        self.direct.clone().map(|pg| (pg, self.tls.clone()))
    }

    fn pool_figures(&self) -> PoolFigures {
        let s = self.status();
        PoolFigures {
            max_size: s.max_size,
            open: s.size,
            waiting: s.queued + s.pool_waiting,
            level: s.level,
        }
    }

    fn server_pressure_bounds(&self) -> (f64, f64) {
        (
            self.config.warning_utilization,
            self.config.warning_recovery,
        )
    }

    fn tag_prefix(&self) -> Option<&str> {
        self.tag_prefix.get().map(String::as_str)
    }

    fn enable_tags(&self, prefix: &str) {
        let _ = self.tag_prefix.set(prefix.to_string());
    }

    fn watch_held(&self) {
        self.held.watch();
    }

    fn held_route(&self, id: u64) -> Option<Arc<str>> {
        GuardInner::held_route(self, id).and_then(|(route, _)| route)
    }

    fn take_leaks(&self, after: Duration) -> Vec<HeldTooLong> {
        GuardInner::take_leaks(self, after)
            .into_iter()
            .map(|leak| HeldTooLong {
                class: leak.class,
                route: leak.route,
                user: leak.user.map(|u| u.as_str().to_string()),
                held: leak.held,
            })
            .collect()
    }

    fn server_use(&self) -> Option<ServerUse> {
        *self.headroom.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replace_server_use(&self, reading: Option<ServerUse>) -> Option<ServerUse> {
        let mut stored = self.headroom.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *stored, reading)
    }

    fn report_server_utilization(self: Arc<Self>, utilization: f64) {
        self.set_server_utilization(utilization);
    }

    fn resize_pool(self: Arc<Self>, from: usize, to: usize, reason: ResizeReason) {
        self.pool.resize(to);
        self.set_max_size(to);
        self.events
            .publish(Event::now(EventKind::PoolResized { from, to, reason }));
    }
}
