//! The health report: is the database reachable, and how is the pool doing.
//!
//! The database check uses the guard's own dedicated connection (never one from the pool),
//! so `/health` answers quickly even when the pool is full.

use crate::guard::Guard;

use crate::monitor::Level;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long the health check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The `/health` body, shaped like the seeds' health endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// `ok` when the database answers and the level is Normal, `degraded` otherwise.
    pub status: &'static str,
    /// The pressure level.
    pub level: Level,
    /// The database check.
    pub database: DatabaseHealth,
    /// The pool.
    pub pool: PoolHealth,
    /// Connections in use on the whole server, as the watchdog read them last; absent
    /// without a running watchdog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<crate::watchdog::ServerUse>,
}

/// Whether the database answered.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseHealth {
    /// `ok`, `unhealthy`, or `unknown` when the guard has no dedicated connection config.
    pub status: &'static str,
    /// Round trip of `SELECT 1`, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why the check failed, with the server's severity, SQLSTATE and message when it sent
    /// one (`db error: FATAL 53300: sorry, too many clients already`).
    pub error: Option<String>,
}

/// Pool figures.
#[derive(Debug, Clone, Serialize)]
pub struct PoolHealth {
    /// Connections the pool holds.
    pub size: usize,
    /// Idle connections.
    pub available: usize,
    /// Connections in use.
    pub in_use: usize,
    /// Acquisitions waiting (the guard's queue and deadpool's).
    pub waiting: usize,
    /// Maximum size.
    pub max: usize,
    /// `in_use / max`.
    pub utilization: f64,
}

impl HealthReport {
    /// Whether the database is reachable (the report is served 200 then, 503 otherwise).
    pub fn is_available(&self) -> bool {
        self.database.status != "unhealthy"
    }
}

impl Guard {
    /// Checks the database over the dedicated connection and reports the pool.
    pub async fn health(&self) -> HealthReport {
        let database = self.check_database().await;
        let s = self.status();
        let status = if database.status == "ok" && s.level == Level::Normal {
            "ok"
        } else {
            "degraded"
        };
        HealthReport {
            status,
            level: s.level,
            database,
            pool: PoolHealth {
                size: s.size,
                available: s.available,
                in_use: s.in_use,
                waiting: s.queued + s.pool_waiting,
                max: s.max_size,
                utilization: s.utilization,
            },
            server: self.server_use(),
        }
    }

    async fn check_database(&self) -> DatabaseHealth {
        let Some(pg) = self.inner.direct.clone() else {
            return DatabaseHealth {
                status: "unknown",
                latency_ms: None,
                error: Some("no dedicated connection configured".into()),
            };
        };
        let started = Instant::now();
        let result = tokio::time::timeout(CHECK_TIMEOUT, async {
            let mut slot = self.inner.health_conn.lock().await;
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                let (client, connection) = pg.connect(self.inner.tls.clone()).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                *slot = Some(client);
            }
            let client = slot.as_ref().expect("just connected");
            let outcome = client.simple_query("SELECT 1").await;
            if outcome.is_err() {
                *slot = None;
            }
            outcome.map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => DatabaseHealth {
                status: "ok",
                latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                error: None,
            },
            Ok(Err(e)) => DatabaseHealth {
                status: "unhealthy",
                latency_ms: None,
                error: Some(crate::error::describe_db_error(&e)),
            },
            Err(_) => {
                // A connection that stopped answering may never report itself closed:
                // start over with a fresh one next time.
                if let Ok(mut slot) = self.inner.health_conn.try_lock() {
                    *slot = None;
                }
                DatabaseHealth {
                    status: "unhealthy",
                    latency_ms: None,
                    error: Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
                }
            }
        }
    }
}
