//! The overload benchmark: the same load against `off`, `generic` and `full` in one run —
//! steady critical traffic and a trickle of reports, then a sustained 2x report overload on
//! top for 20 s (report clients come back at `Retry-After`, as a browser front end would),
//! then the overload removed.

use crate::app::{self, AppOptions, GuardMode};
use crate::database::Database;
use crate::load::{percentile, Class, Load, Outcome, Requests, Sample};
use metrics_exporter_prometheus::PrometheusHandle;
use poolguard::controller::ClassCapacity;
use poolguard::events::EventKind;
use poolguard::incident::DEFAULT_QUIET_PERIOD;
use poolguard::{GuardConfig, Level};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const POOL_MAX: usize = 20;
const CRITICAL_RATE: f64 = 50.0;
/// Reports before and after the overload.
const BACKGROUND_RATE: f64 = 10.0;
/// How long each report holds its connection.
const REPORT_MS: u64 = 200;
/// The overload, as a multiple of what the report slots serve.
const OVERLOAD: f64 = 2.0;
const UNLOADED: Duration = Duration::from_secs(3);
const BURST: Duration = Duration::from_secs(20);
const AFTER: Duration = Duration::from_secs(6);

/// The slots reports may use in this pool (under the warning line, never the reserve).
fn report_slots() -> usize {
    let c = GuardConfig::default();
    ClassCapacity::new(POOL_MAX, c.reserve_for(POOL_MAX), c.warning_utilization)
        .non_critical_ceiling
}

/// Reports per second the report slots serve: the free capacity.
fn report_capacity() -> f64 {
    report_slots() as f64 * 1000.0 / REPORT_MS as f64
}

/// One mode's figures.
pub struct Row {
    mode: GuardMode,
    critical_total: usize,
    critical_ok: usize,
    unloaded_p99: Duration,
    loaded_p50: Duration,
    loaded_p99: Duration,
    /// Report requests sent during the overload, and how many of them were served.
    reports: Requests,
    /// Reports whose query ran inside the overload window: goodput.
    served_in_burst: usize,
    /// Attempts refused with `Retry-After`.
    refused: usize,
    /// Attempts that failed otherwise or got no answer.
    failed: usize,
    transitions: Option<usize>,
    incidents: Option<usize>,
    /// From the end of the overload (no new reports) to Normal.
    normal_after_burst: Option<Duration>,
    /// From the last answer to a report client of the overload (its last retry) to Normal.
    normal_after_backlog: Option<Duration>,
    /// From Normal to the incident's close.
    incident_closed_after: Option<Duration>,
}

impl Row {
    fn critical_success(&self) -> f64 {
        100.0 * self.critical_ok as f64 / self.critical_total.max(1) as f64
    }

    fn p99_ratio(&self) -> f64 {
        self.loaded_p99.as_secs_f64() / self.unloaded_p99.as_secs_f64().max(1e-6)
    }

    /// Report goodput during the overload as a share of what the report slots could serve.
    fn goodput(&self) -> f64 {
        100.0 * self.served_in_burst as f64 / (report_capacity() * BURST.as_secs_f64())
    }
}

async fn serve(
    app: axum::Router,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok((addr, task))
}

async fn measure(
    mode: GuardMode,
    db: &Database,
    metrics: &PrometheusHandle,
) -> Result<Row, Box<dyn std::error::Error>> {
    let options = AppOptions {
        pool_max: POOL_MAX,
        mode,
        ..AppOptions::default()
    };
    let app = app::build(db.pg_config(), &options, metrics.clone()).await?;
    let (addr, server) = serve(app.router).await?;
    let observability = match &app.guard {
        Some(g) => Some(crate::observability::attach(
            g,
            false,
            DEFAULT_QUIET_PERIOD,
        )?),
        None => None,
    };
    let mut events = app.guard.as_ref().map(|g| g.subscribe());
    let load = Load::new(addr, Duration::from_secs(5));

    let _ = load
        .send(Class::Critical, "GET", "/api/auth/session", "warm")
        .await;
    let total = UNLOADED + BURST + AFTER;
    let critical = load.stream(
        Class::Critical,
        "GET",
        "/api/auth/session",
        CRITICAL_RATE,
        total,
        100,
    );
    let background = load.stream(
        Class::NonCritical,
        "GET",
        leak(format!(
            "/api/reports/activity?ms={REPORT_MS}&widget=bg{{n}}"
        )),
        BACKGROUND_RATE,
        total,
        20,
    );
    tokio::time::sleep(UNLOADED).await;
    let burst_start = load.start.elapsed();
    let burst = load.stream(
        Class::NonCritical,
        "GET",
        leak(format!(
            "/api/reports/activity?ms={REPORT_MS}&widget=b{{n}}"
        )),
        report_capacity() * OVERLOAD,
        BURST,
        200,
    );
    tokio::time::sleep(BURST).await;
    let burst_end = load.start.elapsed();
    let burst_samples = burst.await?;
    let mut samples: Vec<Sample> = Vec::new();
    for h in [critical, background] {
        samples.extend(h.await?);
    }
    server.abort();

    // The incident closes once the level has stayed Normal for the quiet period: watch for it.
    let mut closed_seen = None;
    let incidents = match &observability {
        Some(o) => {
            let limit = Instant::now() + DEFAULT_QUIET_PERIOD + Duration::from_secs(10);
            while Instant::now() < limit {
                if o.store.active().is_none() && !o.store.all().is_empty() {
                    closed_seen = Some(std::time::SystemTime::now());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut all = o.store.all();
            all.extend(o.store.active());
            Some(all)
        }
        None => None,
    };
    // Level changes and the moment the level was last back at Normal.
    let mut transitions = Vec::new();
    let mut last_normal = None;
    if let Some(sub) = events.as_mut() {
        while let Some(e) = sub.try_recv() {
            if let EventKind::LevelChanged { to, .. } = e.kind {
                transitions.push(to);
                if to == Level::Normal {
                    last_normal = Some(e.at);
                }
            }
        }
    }
    if let Some(w) = app.watchdog {
        w.stop().await;
    }
    drop(observability);
    drop(app.guard);

    let reports = Requests::of(&burst_samples, Class::NonCritical);
    let wall = |d: Duration| std::time::SystemTime::now() - (load.start.elapsed() - d);
    let normal_after = |from: Duration| {
        last_normal
            .map(|n| n.duration_since(wall(from)).unwrap_or_default())
            .filter(|_| mode == GuardMode::Full)
    };
    let incident_closed_after = closed_seen
        .zip(last_normal)
        .and_then(|(closed, normal)| closed.duration_since(normal).ok());
    let mut row = summarize(mode, &samples, &burst_samples, burst_start, burst_end);
    row.reports = reports;
    row.transitions = app_is_full(mode).then_some(transitions.len());
    row.incidents = incidents.map(|i| i.len());
    row.normal_after_burst = normal_after(burst_end);
    let last_answer = burst_samples.iter().map(|s| s.done()).max();
    row.normal_after_backlog = last_answer.and_then(normal_after);
    row.incident_closed_after = incident_closed_after;
    Ok(row)
}

fn app_is_full(mode: GuardMode) -> bool {
    mode == GuardMode::Full
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn summarize(
    mode: GuardMode,
    samples: &[Sample],
    burst: &[Sample],
    burst_start: Duration,
    burst_end: Duration,
) -> Row {
    let critical: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.class == Class::Critical)
        .collect();
    let unloaded: Vec<&Sample> = critical
        .iter()
        .copied()
        .filter(|s| s.sent < burst_start)
        .collect();
    let loaded: Vec<&Sample> = critical
        .iter()
        .copied()
        .filter(|s| s.sent >= burst_start && s.sent < burst_end)
        .collect();
    // Goodput: reports (of either stream) whose query ran inside the overload window.
    let hold = Duration::from_millis(REPORT_MS);
    let served_in_burst = samples
        .iter()
        .chain(burst)
        .filter(|s| s.class == Class::NonCritical && s.outcome == Outcome::Ok)
        .filter(|s| s.done() >= burst_start + hold && s.done() <= burst_end)
        .count();
    Row {
        mode,
        critical_total: loaded.len(),
        critical_ok: loaded.iter().filter(|s| s.outcome == Outcome::Ok).count(),
        unloaded_p99: percentile(&unloaded, 99.0).unwrap_or_default(),
        loaded_p50: percentile(&loaded, 50.0).unwrap_or_default(),
        loaded_p99: percentile(&loaded, 99.0).unwrap_or_default(),
        reports: Requests::default(),
        served_in_burst,
        refused: burst
            .iter()
            .filter(|s| s.outcome == Outcome::Deferred)
            .count(),
        failed: burst
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_) | Outcome::TimedOut))
            .count(),
        transitions: None,
        incidents: None,
        normal_after_burst: None,
        normal_after_backlog: None,
        incident_closed_after: None,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

fn count(n: Option<usize>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// Runs the benchmark and prints its table. Returns whether `full` met the bar: >= 99 %
/// critical success with a loaded p99 within 1.5x of its unloaded p99 (or 5 ms), report
/// goodput >= 85 % of the free capacity, at most 4 level transitions and one incident.
pub async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let db = Database::open(60).await?;
    app::prepare_schema(&db.connect().await?).await?;
    let metrics = poolguard::metrics::install_prometheus()?;
    println!(
        "overload: pool {POOL_MAX}, reports may use {} slots ({:.0} reports/s of {REPORT_MS} ms); \
         critical {CRITICAL_RATE}/s and reports {BACKGROUND_RATE}/s throughout; reports at \
         {OVERLOAD}x that capacity ({:.0}/s, each a distinct widget, refused ones retried at \
         Retry-After) for {} s after {} s unloaded, then {} s after",
        report_slots(),
        report_capacity(),
        report_capacity() * OVERLOAD,
        BURST.as_secs(),
        UNLOADED.as_secs(),
        AFTER.as_secs()
    );
    let mut rows = Vec::new();
    for mode in [GuardMode::Off, GuardMode::Generic, GuardMode::Full] {
        println!("  running --guard {mode} ...");
        rows.push(measure(mode, &db, &metrics).await?);
    }
    println!();
    println!("| guard | critical success (overload) | critical p99 unloaded / overload (ms) | p99 ratio | report goodput (share of free capacity) | reports sent / served | refused (Retry-After) / failed attempts | first retries served | level transitions | incidents | back to Normal after the overload / its last answer | incident closed after Normal |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.1} % ({}/{}) | {} / {} | {:.2}x | {:.0} % ({} in {} s) | {} / {} | {} / {} | {} | {} | {} | {} / {} | {} |",
            r.mode,
            r.critical_success(),
            r.critical_ok,
            r.critical_total,
            ms(r.unloaded_p99),
            ms(r.loaded_p99),
            r.p99_ratio(),
            r.goodput(),
            r.served_in_burst,
            BURST.as_secs(),
            r.reports.total,
            r.reports.served,
            r.refused,
            r.failed,
            r.reports
                .first_retry_success()
                .map(|p| format!("{p:.0} % ({}/{})", r.reports.first_retry_ok, r.reports.retried))
                .unwrap_or_else(|| "-".into()),
            count(r.transitions),
            count(r.incidents),
            secs(r.normal_after_burst),
            secs(r.normal_after_backlog),
            secs(r.incident_closed_after),
        );
    }
    let full = rows
        .iter()
        .find(|r| r.mode == GuardMode::Full)
        .expect("full ran");
    println!(
        "\nfull: goodput {:.0} % of the free capacity (goal >= 85 %), {} level transitions (goal <= 4), {} incident(s) (goal 1), critical p99 {:.2}x unloaded (goal <= 1.5x); loaded p50 {} ms; total time {:.0} s",
        full.goodput(),
        count(full.transitions),
        count(full.incidents),
        full.p99_ratio(),
        ms(full.loaded_p50),
        started.elapsed().as_secs_f64()
    );
    let p99_ok = full.loaded_p99 <= (full.unloaded_p99 * 3 / 2).max(Duration::from_millis(5));
    Ok(full.critical_success() >= 99.0
        && p99_ok
        && full.goodput() >= 85.0
        && full.transitions.is_some_and(|t| t <= 4)
        && full.incidents == Some(1))
}
