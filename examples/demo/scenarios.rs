//! The seed incidents, replayed for real: the reference app under concurrent HTTP load, once
//! on the bare pool (`off`) and once behind poolguard (`full`).

use crate::app::{self, AppOptions, GuardMode};
use crate::database::Database;
use crate::load::{percentile, Class, Load, Outcome, Sample};
use crate::report::ScenarioResult;
use metrics_exporter_prometheus::PrometheusHandle;
use poolguard::watchdog::WatchdogConfig;
use poolguard::{ClassTimeouts, GuardConfig, Level};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every scenario, in the order the demo runs them.
pub const ALL: &[&str] = &["dashboard-burst", "slow-query"];

/// What a scenario sets up around the app.
struct Plan {
    pool_max: usize,
    statement_timeout: Duration,
    /// Steady critical requests per second, for the whole run.
    critical_rate: f64,
    /// Steady standard requests per second.
    standard_rate: f64,
    /// When the incident starts, from the run's start.
    incident_at: Duration,
    /// How long the run lasts.
    total: Duration,
    /// The watchdog in `full` mode.
    watchdog: WatchdogConfig,
}

/// The watchdog at a replay's pace: it looks four times a second.
fn quick_watchdog() -> WatchdogConfig {
    WatchdogConfig {
        interval: Duration::from_millis(250),
        cancel_grace: Duration::from_secs(1),
        ..WatchdogConfig::default()
    }
}

/// A running app under test.
struct Running {
    addr: SocketAddr,
    guard: Option<poolguard::Guard>,
    watchdog: Option<poolguard::watchdog::WatchdogHandle>,
    server: tokio::task::JoinHandle<()>,
}

async fn start_app(
    db: &Database,
    metrics: &PrometheusHandle,
    plan: &Plan,
    mode: GuardMode,
) -> Result<Running, Box<dyn std::error::Error>> {
    let options = AppOptions {
        pool_max: plan.pool_max,
        mode,
        statement_timeout: plan.statement_timeout,
        guard_config: GuardConfig::default(),
        watchdog: plan.watchdog.clone(),
    };
    let app = app::build(db.pg_config(), &options, metrics.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = app.router;
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok(Running {
        addr,
        guard: app.guard,
        watchdog: app.watchdog,
        server,
    })
}

/// Runs scenario `name` in `mode`.
pub async fn run(
    name: &str,
    mode: GuardMode,
    db: &Database,
    metrics: &PrometheusHandle,
) -> Result<(ScenarioResult, Vec<String>), Box<dyn std::error::Error>> {
    let plan = match name {
        "dashboard-burst" => Plan {
            pool_max: 20,
            statement_timeout: Duration::from_secs(30),
            critical_rate: 40.0,
            standard_rate: 20.0,
            incident_at: Duration::from_secs(1),
            total: Duration::from_secs(7),
            watchdog: quick_watchdog(),
        },
        "slow-query" => Plan {
            pool_max: 20,
            // The seed's 30 s statement timeout; the watchdog stops non-critical queries
            // sooner (the seed's "auto-kill queries > 30 s", scaled down to 2 s here).
            statement_timeout: Duration::from_secs(30),
            critical_rate: 40.0,
            standard_rate: 20.0,
            incident_at: Duration::from_secs(1),
            total: Duration::from_secs(8),
            watchdog: WatchdogConfig {
                kill_after: Duration::from_secs(3),
                kill_after_by_class: ClassTimeouts {
                    non_critical: Some(Duration::from_secs(2)),
                    ..ClassTimeouts::default()
                },
                ..quick_watchdog()
            },
        },
        other => return Err(format!("unknown scenario `{other}`").into()),
    };
    let running = start_app(db, metrics, &plan, mode).await?;
    let observability = match &running.guard {
        Some(g) => Some(crate::observability::attach(g, false)?),
        None => None,
    };
    let load = Load::new(running.addr, Duration::from_secs(3));
    let level_log = running
        .guard
        .as_ref()
        .map(|g| watch_levels(g.clone(), load.start));

    let critical = load.stream(
        Class::Critical,
        "GET",
        "/api/auth/session",
        plan.critical_rate,
        plan.total,
        50,
    );
    let assign = load.stream(
        Class::Critical,
        "POST",
        "/api/tasks/assign",
        plan.critical_rate / 4.0,
        plan.total,
        50,
    );
    let standard = load.stream(
        Class::Standard,
        "GET",
        "/api/messages",
        plan.standard_rate,
        plan.total,
        50,
    );
    let progress = spawn_progress(load.clone(), plan.total);

    tokio::time::sleep(plan.incident_at).await;
    let incident = match name {
        "dashboard-burst" => {
            println!(
                "  t={:.1}s  the dashboard opens: 160 report queries at once",
                load.start.elapsed().as_secs_f64()
            );
            load.burst(
                Class::NonCritical,
                "GET",
                "/api/reports/activity?ms=800".into(),
                160,
                "dashboard-user",
            )
        }
        _ => {
            println!(
                "  t={:.1}s  25 report queries that would run for 120 s",
                load.start.elapsed().as_secs_f64()
            );
            load.burst(
                Class::NonCritical,
                "GET",
                "/api/reports/activity?ms=120000".into(),
                25,
                "analyst",
            )
        }
    };

    let mut samples = Vec::new();
    for h in [critical, assign, standard, incident] {
        samples.extend(h.await?);
    }
    progress.abort();
    // Is the app healthy again at the end, or does someone have to step in?
    let after = load
        .send(Class::Critical, "GET", "/api/auth/session", "after-check")
        .await;
    let back_to_normal = match (&running.guard, level_log) {
        (Some(g), Some((task, last_normal))) => {
            task.abort();
            let at = *last_normal.lock().expect("not poisoned");
            at.filter(|_| g.level() == Level::Normal)
        }
        _ => None,
    };
    let reports = match &observability {
        Some(o) => o.reports(Duration::from_secs(3)).await,
        None => Vec::new(),
    };
    running.server.abort();
    drop(observability);
    if let Some(w) = running.watchdog {
        w.stop().await;
    }
    drop(running.guard);
    let result = ScenarioResult::from_samples(
        name,
        mode,
        &samples,
        plan.incident_at,
        after.outcome == Outcome::Ok,
        back_to_normal.map(|t| t.saturating_sub(plan.incident_at)),
    );
    Ok((result, reports))
}

type LastNormal = std::sync::Arc<std::sync::Mutex<Option<Duration>>>;

/// Records when the level last came back to Normal.
fn watch_levels(
    guard: poolguard::Guard,
    start: Instant,
) -> (tokio::task::JoinHandle<()>, LastNormal) {
    let last_normal = LastNormal::default();
    let record = last_normal.clone();
    let task = tokio::spawn(async move {
        let mut rx = guard.watch_level();
        while rx.changed().await.is_ok() {
            if *rx.borrow_and_update() == Level::Normal {
                *record.lock().expect("not poisoned") = Some(start.elapsed());
            }
        }
    });
    (task, last_normal)
}

/// Prints a line per second: what users are getting right now.
fn spawn_progress(load: Load, total: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut prev = [[0u64; 4]; 3];
        while load.start.elapsed() < total {
            tick.tick().await;
            let now = [Class::Critical, Class::Standard, Class::NonCritical].map(|c| load.live(c));
            let d = |c: usize, i: usize| now[c][i] - prev[c][i];
            println!(
                "  t={:>2.0}s  critical {:>3} ok {:>3} failed | standard {:>3} ok {:>3} failed | reports {:>3} ok {:>3} refused {:>3} failed",
                load.start.elapsed().as_secs_f64(),
                d(0, 0),
                d(0, 2) + d(0, 3) + d(0, 1),
                d(1, 0),
                d(1, 2) + d(1, 3) + d(1, 1),
                d(2, 0),
                d(2, 1),
                d(2, 2) + d(2, 3),
            );
            prev = now;
        }
    })
}

/// The critical samples' baseline p99 before the incident.
pub fn baseline_p99(samples: &[Sample], incident_at: Duration) -> Duration {
    let before: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.class == Class::Critical && s.sent < incident_at)
        .collect();
    percentile(&before, 99.0).unwrap_or(Duration::from_millis(20))
}
