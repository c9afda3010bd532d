//! The seed incidents, replayed for real: the reference app under concurrent HTTP load, once
//! on the bare pool (`off`) and once behind poolguard (`full`).

use crate::app::{self, AppOptions, GuardMode};
use crate::database::Database;
use crate::load::{percentile, Class, Load, Outcome, Requests, Sample};
use crate::report::ScenarioResult;
use metrics_exporter_prometheus::PrometheusHandle;
use poolguard::controller::ClassCapacity;
use poolguard::watchdog::WatchdogConfig;
use poolguard::{ClassTimeouts, GuardConfig, Level};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Every scenario, in the order the demo runs them.
pub const ALL: &[&str] = &[
    "dashboard-burst",
    "slow-query",
    "leaked-connections",
    "spam-capture",
];

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

impl Default for Plan {
    /// What every replay shares: pool 20, the seed's 30 s statement timeout, critical traffic
    /// 40/s and standard 20/s, the incident 1 s in, 7 s in all.
    fn default() -> Self {
        Self {
            pool_max: 20,
            statement_timeout: Duration::from_secs(30),
            critical_rate: 40.0,
            standard_rate: 20.0,
            incident_at: Duration::from_secs(1),
            total: Duration::from_secs(7),
            watchdog: quick_watchdog(),
        }
    }
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
    pool: deadpool_postgres::Pool,
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
        trust_user_header: true,
        tls: db.tls(),
        ..AppOptions::default()
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
        pool: app.pool,
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
        "dashboard-burst" | "leaked-connections" => Plan::default(),
        "slow-query" => Plan {
            total: Duration::from_secs(8),
            // The seed's "auto-kill queries > 30 s", scaled down: the watchdog stops
            // non-critical queries after 2 s, the rest after 3 s.
            watchdog: WatchdogConfig {
                kill_after: Duration::from_secs(3),
                kill_after_by_class: ClassTimeouts {
                    non_critical: Some(Duration::from_secs(2)),
                    ..ClassTimeouts::default()
                },
                ..quick_watchdog()
            },
            ..Plan::default()
        },
        "spam-capture" => Plan {
            standard_rate: 10.0,
            incident_at: Duration::from_millis(500),
            total: Duration::from_secs(9),
            ..Plan::default()
        },
        other => return Err(format!("unknown scenario `{other}`").into()),
    };
    if name == "spam-capture" {
        reset_messages(db).await?;
    }
    let running = start_app(db, metrics, &plan, mode).await?;
    let observability = match &running.guard {
        Some(g) => Some(crate::observability::attach(g, false, REPLAY_QUIET)?),
        None => None,
    };
    let load = Load::new(running.addr, Duration::from_secs(3));
    let recorder = crate::html_report::Recorder::start(
        running.pool.clone(),
        running.guard.clone(),
        load.start,
    );
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
    let at = || load.start.elapsed().as_secs_f64();
    let mut notes = Vec::new();
    let mut missed = None;
    let mut samples = Vec::new();
    // When the dashboard was fully loaded (dashboard-burst), from the run's start.
    let mut dashboard_loaded = None;
    match name {
        "dashboard-burst" => {
            println!(
                "  t={:.1}s  the dashboard opens: 160 report queries at once",
                at()
            );
            let opened = load.start.elapsed();
            let burst = load.burst(
                Class::NonCritical,
                "GET",
                format!("/api/reports/activity?ms={DASHBOARD_REPORT_MS}&widget=w{{n}}"),
                DASHBOARD_WIDGETS,
                "dashboard-user",
            );
            let burst = burst.await?;
            let (note, loaded) = dashboard_figures(&burst, opened, plan.pool_max);
            notes.push(note);
            dashboard_loaded = loaded;
            samples.extend(burst);
        }
        "slow-query" => {
            println!(
                "  t={:.1}s  25 report queries that would run for 120 s",
                at()
            );
            let burst = load.burst(
                Class::NonCritical,
                "GET",
                "/api/reports/activity?ms=120000&widget=slow{n}".into(),
                25,
                "analyst",
            );
            samples.extend(burst.await?);
        }
        "leaked-connections" => {
            println!("  t={:.1}s  another process grabs every free server connection for 4 s; report traffic picks up", at());
            let leak = leak_connections(db, Duration::from_secs(4));
            let reports = load.stream(
                Class::NonCritical,
                "GET",
                "/api/reports/activity?ms=300&widget=leak{n}",
                20.0,
                plan.total - plan.incident_at,
                20,
            );
            let held = leak.await??;
            println!(
                "  t={:.1}s  the other process let go of its {held} connections",
                at()
            );
            notes.push(format!(
                "another process held {held} server connections for 4 s"
            ));
            samples.extend(reports.await?);
        }
        _ => {
            let capture = spam_capture(&load, mode).await?;
            notes.extend(capture.notes);
            missed = capture.missed;
            samples.extend(capture.samples);
            let (invalid, captured, blocked) = spam_outcome(db).await?;
            notes.push(format!(
                "{captured} READY messages moved to SPAM_REVIEW, {invalid} invalid PROMOTED -> SPAM_REVIEW stored, {blocked} PROMOTED left as they were"
            ));
            if mode == GuardMode::Full && invalid > 0 && missed.is_none() {
                missed = Some(format!("{invalid} invalid transitions stored"));
            }
        }
    }
    for h in [critical, assign, standard] {
        samples.extend(h.await?);
    }
    progress.abort();
    recorder
        .finish(name, mode, plan.incident_at, &samples)
        .await;
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
        Some(o) => o.reports(REPLAY_QUIET + Duration::from_secs(3)).await,
        None => Vec::new(),
    };
    running.server.abort();
    drop(observability);
    if let Some(w) = running.watchdog {
        w.stop().await;
    }
    drop(running.guard);
    if let (Some(loaded), Some(normal)) = (dashboard_loaded, back_to_normal) {
        notes.push(format!(
            "back to Normal {:.1} s after the dashboard was fully loaded",
            normal.saturating_sub(loaded).as_secs_f64()
        ));
    }
    let mut result = ScenarioResult::from_samples(
        name,
        mode,
        &samples,
        plan.incident_at,
        after.outcome == Outcome::Ok,
        back_to_normal.map(|t| t.saturating_sub(plan.incident_at)),
    );
    result.notes = notes;
    result.missed = missed;
    Ok((result, reports))
}

/// The incident quiet period in the replays (shorter than the default 10 s, so each replay
/// ends soon after its incident): an incident closes once the level stayed Normal this long.
const REPLAY_QUIET: Duration = Duration::from_secs(2);

/// The dashboard's widgets, each one report query.
const DASHBOARD_WIDGETS: usize = 160;
/// How long each widget's query holds its connection.
const DASHBOARD_REPORT_MS: u64 = 800;

/// The dashboard as its user saw it: how many widgets were served, when the last one was
/// (against the physical limit: every widget's hold over the slots non-critical work may use),
/// and how often a retry at `Retry-After` was served. Returns the line and the time the
/// dashboard was fully loaded, from the run's start.
fn dashboard_figures(
    burst: &[Sample],
    opened: Duration,
    pool_max: usize,
) -> (String, Option<Duration>) {
    let config = GuardConfig::default();
    let slots = ClassCapacity::new(
        pool_max,
        config.reserve_for(pool_max),
        config.warning_utilization,
    )
    .non_critical_ceiling;
    let limit =
        Duration::from_millis(DASHBOARD_REPORT_MS) * DASHBOARD_WIDGETS as u32 / slots as u32;
    let reports = Requests::of(burst, Class::NonCritical);
    let loaded = reports.last_served.map(|t| t.saturating_sub(opened));
    let loaded_text = match (loaded, reports.served == reports.total) {
        (Some(d), true) => format!(
            "fully loaded after {:.2} s; physical limit {:.2} s ({DASHBOARD_WIDGETS} x {DASHBOARD_REPORT_MS} ms over {slots} slots): {:.2}x (goal <= 1.15x)",
            d.as_secs_f64(),
            limit.as_secs_f64(),
            d.as_secs_f64() / limit.as_secs_f64()
        ),
        _ => "never fully loaded".to_string(),
    };
    let retries = match reports.first_retry_success() {
        Some(p) => format!(
            "; {} widgets refused at first, {} of them served on their first retry at Retry-After ({p:.0} %, goal >= 90 %)",
            reports.retried, reports.first_retry_ok
        ),
        None => "; no widget was refused".to_string(),
    };
    (
        format!(
            "dashboard: {}/{} widgets served, {loaded_text}{retries}",
            reports.served, reports.total
        ),
        loaded.map(|d| d + opened),
    )
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

/// Opens connections as another application until the server refuses, holds them for
/// `hold`, then closes them. Returns how many it held. On a server the demo does not own
/// (`DATABASE_URL`) it takes only the seed's 20, so it never fills someone else's server.
fn leak_connections(
    db: &Database,
    hold: Duration,
) -> tokio::task::JoinHandle<Result<usize, tokio_postgres::Error>> {
    let mut pg = db.pg_config();
    pg.application_name("report-exporter");
    let tls = db.tls();
    let most = if db.is_external() { 20 } else { 500 };
    tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < most {
            match pg.connect(tls.clone()).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    held.push(client);
                }
                Err(_) => break,
            }
        }
        let n = held.len();
        tokio::time::sleep(hold).await;
        drop(held);
        Ok(n)
    })
}

/// The seed's platform limit, scaled down twofold with the per-item cost (5 ms, not 10 ms):
/// the 1,418 items still need about 1.4 times the limit.
const PLATFORM_LIMIT: Duration = Duration::from_secs(5);
const ITEM_COST_MS: u64 = 5;

struct Capture {
    samples: Vec<Sample>,
    notes: Vec<String>,
    missed: Option<String>,
}

/// Restores the seeded messages and remembers each one's status before the capture.
async fn reset_messages(db: &Database) -> Result<(), Box<dyn std::error::Error>> {
    let client = db.connect().await?;
    client
        .batch_execute("DROP TABLE IF EXISTS messages_before; TRUNCATE messages RESTART IDENTITY")
        .await?;
    crate::spam::seed_messages(&client, crate::spam::DEFAULT_READY_SPAM, 42).await?;
    client
        .batch_execute("CREATE TABLE messages_before AS SELECT id, status FROM messages")
        .await?;
    Ok(())
}

/// (invalid transitions stored, READY captured, PROMOTED spam left alone).
async fn spam_outcome(db: &Database) -> Result<(i64, i64, i64), Box<dyn std::error::Error>> {
    let client = db.connect().await?;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE b.status = 'PROMOTED' AND m.status = 'SPAM_REVIEW'),
                    count(*) FILTER (WHERE b.status = 'READY' AND m.status = 'SPAM_REVIEW'),
                    count(*) FILTER (WHERE b.status = 'PROMOTED' AND m.status = 'PROMOTED'
                                     AND m.body ILIKE ANY($1))
             FROM messages m JOIN messages_before b USING (id)",
            &[&crate::spam::SPAM_PATTERNS.to_vec()],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The user clicks "Capture spam" until it is done, each click bounded by the platform limit.
async fn spam_capture(load: &Load, mode: GuardMode) -> Result<Capture, Box<dyn std::error::Error>> {
    let mut user = load.clone();
    user.patience = PLATFORM_LIMIT;
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    let mut cursor = String::new();
    let mut clicks = 0;
    let mut failed_clicks = 0;
    let mut missed = None;
    println!(
        "  t={:.1}s  the user clicks \"Capture spam\": 1,418 items at {ITEM_COST_MS} ms each, {} s platform limit",
        load.start.elapsed().as_secs_f64(),
        PLATFORM_LIMIT.as_secs()
    );
    loop {
        clicks += 1;
        let path = match mode {
            GuardMode::Full => format!(
                "/api/spam/capture?budget_ms={}&item_cost_ms={ITEM_COST_MS}{cursor}",
                PLATFORM_LIMIT.as_millis()
            ),
            _ => format!("/api/spam/capture?item_cost_ms={ITEM_COST_MS}"),
        };
        let (sample, body) = user
            .send_with_body(Class::Standard, "POST", &path, "spam-admin")
            .await;
        samples.push(sample);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match sample.outcome {
            Outcome::Ok => {
                let message = answer["message"].as_str().unwrap_or("done").to_string();
                println!(
                    "  t={:.1}s  click {clicks}: {} ({:.1} s) {}",
                    load.start.elapsed().as_secs_f64(),
                    message,
                    sample.latency.as_secs_f64(),
                    answer["report"]["summary"].as_str().unwrap_or("")
                );
                if answer["done"].as_bool().unwrap_or(true) {
                    break;
                }
                let c = &answer["cursor"];
                cursor = format!(
                    "&after={}&processed={}&chunks={}",
                    c["after"].as_i64().unwrap_or(0),
                    c["processed"].as_u64().unwrap_or(0),
                    c["chunks"].as_u64().unwrap_or(0)
                );
            }
            other => {
                failed_clicks += 1;
                println!(
                    "  t={:.1}s  click {clicks}: the user sees an error ({other:?} after {:.1} s); the work done so far is partial",
                    load.start.elapsed().as_secs_f64(),
                    sample.latency.as_secs_f64()
                );
                if mode == GuardMode::Full {
                    missed = Some(format!("capture click {clicks} failed: {other:?}"));
                }
            }
        }
        if clicks >= 30 {
            missed = Some("capture did not finish in 30 clicks".into());
            break;
        }
    }
    notes.push(format!(
        "{clicks} clicks, {failed_clicks} of them answered with an error"
    ));
    Ok(Capture {
        samples,
        notes,
        missed,
    })
}
