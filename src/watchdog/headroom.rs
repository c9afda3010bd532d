//! Server-wide headroom: client connections in use on the whole server against the number
//! ordinary roles may open, fed into the guard's level so a calm pool still escalates when
//! another process fills the server.

use crate::events::{Event, EventKind};
use crate::guard::GuardInner;
use crate::metrics::{SERVER_CONNECTIONS, SERVER_MAX_CONNECTIONS};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_postgres::Client;

/// Connections in use on the whole server, read by the watchdog each interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServerHeadroom {
    /// Client backends connected to the server (every database, role and application).
    pub used: u32,
    /// `max_connections` less `superuser_reserved_connections` and, from PostgreSQL 16,
    /// `reserved_connections`: what ordinary roles may open.
    pub usable: u32,
    /// `used / usable`, capped at 1.
    pub utilization: f64,
    /// When it was read.
    pub sampled_at: SystemTime,
}

impl ServerHeadroom {
    /// Connections still free for ordinary roles.
    pub fn free(&self) -> u32 {
        self.usable.saturating_sub(self.used)
    }
}

/// Reads the server's connection count and limits. `reserved_connections` is read with
/// `missing_ok`, so servers before PostgreSQL 16 count it as zero.
pub(crate) async fn read(client: &Client) -> Result<ServerHeadroom, tokio_postgres::Error> {
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
    Ok(ServerHeadroom {
        used: to_u32(used),
        usable: to_u32(usable),
        utilization: (used as f64 / usable as f64).clamp(0.0, 1.0),
        sampled_at: SystemTime::now(),
    })
}

/// Raises a [`EventKind::ServerPressure`] event once per episode (above the guard's warning
/// threshold, cleared below its warning recovery threshold).
#[derive(Debug, Default)]
pub(crate) struct PressureAlarm {
    raised: bool,
}

impl PressureAlarm {
    /// Publishes the reading: stores it on the guard, feeds the level, sets the gauges; the
    /// event only when `announce` (one replica of a service speaks for the server).
    pub(crate) fn publish(&mut self, inner: &Arc<GuardInner>, h: ServerHeadroom, announce: bool) {
        *inner.headroom.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        metrics::gauge!(SERVER_CONNECTIONS).set(f64::from(h.used));
        metrics::gauge!(SERVER_MAX_CONNECTIONS).set(f64::from(h.usable));
        inner.set_server_utilization(h.utilization);
        if announce && !self.raised && h.utilization >= inner.config.warning_utilization {
            self.raised = true;
            inner.events.publish(Event::now(EventKind::ServerPressure {
                used: h.used,
                usable: h.usable,
                utilization: h.utilization,
            }));
        } else if self.raised && h.utilization < inner.config.warning_recovery {
            self.raised = false;
        }
    }

    /// The server cannot be read: forget the reading, so a stale one does not hold the
    /// level up.
    pub(crate) fn clear(&mut self, inner: &Arc<GuardInner>) {
        let had = inner
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if had {
            inner.set_server_utilization(0.0);
        }
        self.raised = false;
    }
}
