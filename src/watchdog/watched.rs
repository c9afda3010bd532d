//! [`WatchedGuard`]: the narrow view of the guard the watchdog works through. The guard
//! implements it; the watchdog never reaches into the guard's fields.

use super::server_use::ServerUse;
use crate::criticality::Criticality;
use crate::events::{EventBus, ResizeReason};
use crate::identity::Identity;
use crate::monitor::Level;
use crate::tls::TlsConnector;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// The pool's figures the resize decisions read, at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PoolFigures {
    /// The pool's maximum size (the guard's slot count).
    pub(crate) max_size: usize,
    /// Connections the pool has open (idle and in use).
    pub(crate) open: usize,
    /// Acquisitions waiting: the guard's queue and deadpool's own waiters.
    pub(crate) waiting: usize,
    /// The guard's level.
    pub(crate) level: Level,
}

/// A connection held through the guard longer than the leak bound.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeldTooLong {
    /// The class it was acquired as.
    pub(crate) class: Criticality,
    /// The route or caller label holding it, when known.
    pub(crate) route: Option<Arc<str>>,
    /// The user holding it, when known.
    pub(crate) user: Option<String>,
    /// How long it has been held.
    pub(crate) held: Duration,
}

/// What the watchdog reads from, and reports to, the guard it watches: the held-connection
/// registry (a tagged backend's route, leaks), the pool's figures, the server use it read,
/// pool resizes, the tag prefix and the event bus.
pub(crate) trait WatchedGuard: Debug + Send + Sync + 'static {
    /// The bus the watchdog publishes its events on.
    fn events(&self) -> &EventBus;

    /// The service and instance the guard's connections are named with, if any.
    fn identity(&self) -> Option<&Identity>;

    /// The guard's dedicated connection config and TLS connector, if it has one.
    fn direct_connection(&self) -> Option<(tokio_postgres::Config, TlsConnector)>;

    /// The pool's figures now.
    fn pool_figures(&self) -> PoolFigures;

    /// The utilizations at which server pressure is raised and cleared (the guard's warning
    /// threshold and its recovery threshold).
    fn server_pressure_bounds(&self) -> (f64, f64);

    /// The prefix of the guard's connection tags, once tagging is on.
    fn tag_prefix(&self) -> Option<&str>;

    /// Turns connection tagging on with `prefix` (a second call keeps the first prefix).
    fn enable_tags(&self, prefix: &str);

    /// Starts recording held connections in the registry the watchdog reads (its leaks and
    /// its route look-ups): from now on, every connection handed out is recorded.
    fn watch_held(&self);

    /// The route of the held connection with registry id `id`.
    fn held_route(&self, id: u64) -> Option<Arc<str>>;

    /// Connections held longer than `after`, each returned once.
    fn take_leaks(&self, after: Duration) -> Vec<HeldTooLong>;

    /// The server use stored last.
    fn server_use(&self) -> Option<ServerUse>;

    /// Stores `reading` (or withdraws it with `None`) and returns the previous one.
    fn replace_server_use(&self, reading: Option<ServerUse>) -> Option<ServerUse>;

    /// Feeds server-wide utilization into the guard's level.
    fn report_server_utilization(self: Arc<Self>, utilization: f64);

    /// Resizes the pool and the guard's slot count from `from` to `to`, and says why.
    fn resize_pool(self: Arc<Self>, from: usize, to: usize, reason: ResizeReason);
}
