//! Server-wide connection use: client connections in use on the whole server against the number
//! ordinary roles may open, fed into the guard's level so a calm pool still escalates when
//! another process fills the server.
//!
//! A lost reading is not a calm one. While the watchdog cannot read the server (its
//! connection is gone, a query timed out, it cannot reconnect) the last reading is held, and
//! marked stale (`stale` in `/health`, `poolguard_server_reading_stale` 1, one
//! `server_reading_stale` event per episode); when the server refuses the watchdog's
//! connection because it is full (SQLSTATE 53300), the reading moves to full. The level
//! therefore never falls to Normal for want of a reading while the server is still full.

use super::watched::WatchedGuard;
use crate::events::{Event, EventKind, Severity};
use crate::metrics::{SERVER_CONNECTIONS, SERVER_MAX_CONNECTIONS, SERVER_READING_STALE};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_postgres::Client;

/// Connections in use on the whole server, read by the watchdog each interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerUse {
    /// Client backends connected to the server (every database, role and application).
    pub used: u32,
    /// `max_connections` less `superuser_reserved_connections` and, from PostgreSQL 16,
    /// `reserved_connections`: what ordinary roles may open.
    pub usable: u32,
    /// `used / usable`, capped at 1.
    pub utilization: f64,
    /// When it was read.
    pub sampled_at: SystemTime,
    /// The watchdog could not read the server since `sampled_at`: this is the last reading,
    /// held (or raised to full when the server refused a connection as full).
    pub stale: bool,
}

impl ServerUse {
    /// Connections still free for ordinary roles.
    pub fn free(&self) -> u32 {
        self.usable.saturating_sub(self.used)
    }
}

/// Reads the server's connection count and limits. `reserved_connections` is read with
/// `missing_ok`, so servers before PostgreSQL 16 count it as zero.
pub(crate) async fn read(client: &Client) -> Result<ServerUse, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend')::int8, \
                    current_setting('max_connections')::int8, \
                    current_setting('superuser_reserved_connections')::int8, \
                    coalesce(current_setting('reserved_connections', true)::int8, 0)",
            &[],
        )
        .await?;
    let (used, max, su, reserved): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let usable = (max - su - reserved).max(1);
    let to_u32 = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(ServerUse {
        used: to_u32(used),
        usable: to_u32(usable),
        utilization: (used as f64 / usable as f64).clamp(0.0, 1.0),
        sampled_at: SystemTime::now(),
        stale: false,
    })
}

/// Why the watchdog has no fresh reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// The connection was lost, a query timed out, or a reconnect failed.
    Unreachable,
    /// The server refused the watchdog's connection: too many clients (SQLSTATE 53300).
    Full,
}

/// Raises a [`EventKind::ServerPressure`] event once per episode (above the guard's warning
/// threshold, cleared below its warning recovery threshold), and a `server_reading_stale`
/// event once per episode without a fresh reading (and once more if the server then refuses
/// the watchdog as full).
#[derive(Debug, Default)]
pub(crate) struct PressureAlarm {
    raised: bool,
    /// Why the reading is stale, while it is.
    stale: Option<Unreadable>,
}

impl PressureAlarm {
    /// Publishes the reading: stores it on the guard, feeds the level, sets the gauges; the
    /// event only when `announce` (one replica of a service speaks for the server).
    pub(crate) fn publish(&mut self, guard: &Arc<dyn WatchedGuard>, h: ServerUse, announce: bool) {
        if self.stale.take().is_some() {
            tracing::info!(target: "poolguard::watchdog", used = h.used, usable = h.usable, "server reading fresh again");
        }
        self.store(guard, h);
        let (raise_at, clear_below) = guard.server_pressure_bounds();
        if announce && !self.raised && h.utilization >= raise_at {
            self.raised = true;
            guard
                .events()
                .publish(Event::now(EventKind::ServerPressure {
                    used: h.used,
                    usable: h.usable,
                    utilization: h.utilization,
                }));
        } else if self.raised && h.utilization < clear_below {
            self.raised = false;
        }
    }

    fn store(&self, guard: &Arc<dyn WatchedGuard>, h: ServerUse) {
        guard.replace_server_use(Some(h));
        metrics::gauge!(SERVER_CONNECTIONS).set(f64::from(h.used));
        metrics::gauge!(SERVER_MAX_CONNECTIONS).set(f64::from(h.usable));
        metrics::gauge!(SERVER_READING_STALE).set(if h.stale { 1.0 } else { 0.0 });
        Arc::clone(guard).report_server_utilization(h.utilization);
    }

    /// The server cannot be read: hold the last reading (or raise it to full when the server
    /// said it is full), mark it stale, and say so once per episode.
    pub(crate) fn unreadable(
        &mut self,
        guard: &Arc<dyn WatchedGuard>,
        why: Unreadable,
        detail: &str,
    ) {
        let last = guard.server_use();
        let held = match (last, why) {
            (Some(h), Unreadable::Unreachable) => Some(ServerUse { stale: true, ..h }),
            (Some(h), Unreadable::Full) => Some(ServerUse {
                used: h.used.max(h.usable),
                utilization: 1.0,
                stale: true,
                ..h
            }),
            (None, Unreadable::Unreachable) => None,
            // Never read, but the server says it is full: that is a reading.
            (None, Unreadable::Full) => {
                Arc::clone(guard).report_server_utilization(1.0);
                metrics::gauge!(SERVER_READING_STALE).set(1.0);
                None
            }
        };
        if let Some(h) = held {
            self.store(guard, h);
        }
        // Once per episode, and again if it turns out the server is full.
        if self.stale == Some(why) || self.stale == Some(Unreadable::Full) {
            return;
        }
        self.stale = Some(why);
        let holding = match (held, why) {
            (Some(h), Unreadable::Full) => format!(
                "the server refused it as full: server use held at {} of {} (100 %)",
                h.used, h.usable
            ),
            (Some(h), Unreadable::Unreachable) => format!(
                "server use held at its last reading, {} of {} ({:.0} %)",
                h.used,
                h.usable,
                h.utilization * 100.0
            ),
            (None, Unreadable::Full) => {
                "the server refused it as full: server use set to 100 %".into()
            }
            (None, Unreadable::Unreachable) => "no reading yet".into(),
        };
        tracing::warn!(target: "poolguard::watchdog", detail, "server reading stale");
        guard.events().publish(Event::now(EventKind::Custom {
            name: "server_reading_stale".into(),
            severity: Severity::Warning,
            message: format!(
                "the watchdog cannot read the server ({detail}); {holding} until it can"
            ),
        }));
    }

    /// The watchdog stops: withdraw its reading, so it does not hold the level up.
    pub(crate) fn clear(&mut self, guard: &Arc<dyn WatchedGuard>) {
        let had = guard.replace_server_use(None).is_some();
        if had || self.stale.is_some() {
            Arc::clone(guard).report_server_utilization(0.0);
        }
        metrics::gauge!(SERVER_READING_STALE).set(0.0);
        self.raised = false;
        self.stale = None;
    }
}
