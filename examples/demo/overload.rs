//! The overload benchmark: the same load against `off`, `generic` and `full` in one run —
//! steady critical traffic, then a 10x non-critical burst on top, then the burst removed.

use crate::app::{self, AppOptions, GuardMode};
use crate::database::Database;
use crate::load::{percentile, Class, Load, Outcome, Sample};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::time::Duration;

const POOL_MAX: usize = 20;
const CRITICAL_RATE: f64 = 50.0;
/// Non-critical traffic before the burst; the burst is ten times this.
const NON_CRITICAL_RATE: f64 = 20.0;
/// How long each non-critical report holds its connection.
const REPORT_MS: u64 = 200;
const UNLOADED: Duration = Duration::from_secs(3);
const BURST: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(4);

/// One mode's figures.
pub struct Row {
    mode: GuardMode,
    critical_total: usize,
    critical_ok: usize,
    unloaded_p50: Duration,
    unloaded_p99: Duration,
    loaded_p50: Duration,
    loaded_p99: Duration,
    nc_served: usize,
    /// Non-critical acquisitions that waited in the guard's queue (`full` only).
    nc_queued: Option<u64>,
    nc_refused: usize,
    nc_failed: usize,
    nc_timed_out: usize,
    rejection_p50: Option<Duration>,
    recovered_after: Option<Duration>,
}

impl Row {
    fn critical_success(&self) -> f64 {
        100.0 * self.critical_ok as f64 / self.critical_total.max(1) as f64
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
    let mut events = app.guard.as_ref().map(|g| g.subscribe());
    let load = Load::new(addr, Duration::from_secs(5));
    let report = format!("/api/reports/activity?ms={REPORT_MS}");
    let report: &'static str = Box::leak(report.into_boxed_str());

    // Warm the pool, then the unloaded phase.
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
        report,
        NON_CRITICAL_RATE,
        total,
        20,
    );
    tokio::time::sleep(UNLOADED).await;
    let burst = load.stream(
        Class::NonCritical,
        "GET",
        report,
        NON_CRITICAL_RATE * 10.0,
        BURST,
        200,
    );
    let mut samples: Vec<Sample> = Vec::new();
    for h in [critical, background, burst] {
        samples.extend(h.await?);
    }
    server.abort();
    if let Some(w) = app.watchdog {
        w.stop().await;
    }
    // Let the last requests summary out, then count what the guard queued.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let nc_queued = events.as_mut().map(|sub| {
        let mut queued = 0;
        while let Some(e) = sub.try_recv() {
            if let poolguard::events::EventKind::RequestsSummary { counts, .. } = e.kind {
                queued += counts.queued[0];
            }
        }
        queued
    });
    drop(app.guard);
    let mut row = summarize(mode, &samples);
    row.nc_queued = nc_queued;
    Ok(row)
}

fn summarize(mode: GuardMode, samples: &[Sample]) -> Row {
    let in_phase = |s: &&Sample, from: Duration, to: Duration| s.sent >= from && s.sent < to;
    let critical: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.class == Class::Critical)
        .collect();
    let unloaded: Vec<&Sample> = critical
        .iter()
        .copied()
        .filter(|s| in_phase(s, Duration::ZERO, UNLOADED))
        .collect();
    let loaded: Vec<&Sample> = critical
        .iter()
        .copied()
        .filter(|s| in_phase(s, UNLOADED, UNLOADED + BURST))
        .collect();
    let non_critical: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.class == Class::NonCritical && s.sent >= UNLOADED && s.sent < UNLOADED + BURST
        })
        .collect();
    let unloaded_p99 = percentile(&unloaded, 99.0).unwrap_or_default();
    let slow = (unloaded_p99 * 3 / 2).max(Duration::from_millis(5));
    // Recovered: the last critical request after the burst began that failed or was slow.
    let last_bad = critical
        .iter()
        .filter(|s| s.sent >= UNLOADED && (s.outcome != Outcome::Ok || s.latency > slow))
        .map(|s| s.done())
        .max();
    let end_of_burst = UNLOADED + BURST;
    let recovered_after = match last_bad {
        None => Some(Duration::ZERO),
        Some(t) if t < UNLOADED + BURST + AFTER - Duration::from_millis(500) => {
            Some(t.saturating_sub(end_of_burst))
        }
        Some(_) => None,
    };
    let rejected: Vec<&Sample> = non_critical
        .iter()
        .copied()
        .filter(|s| s.outcome == Outcome::Deferred)
        .collect();
    let mut rejection_latencies: Vec<Duration> = rejected.iter().map(|s| s.latency).collect();
    rejection_latencies.sort();
    Row {
        mode,
        critical_total: loaded.len(),
        critical_ok: loaded.iter().filter(|s| s.outcome == Outcome::Ok).count(),
        unloaded_p50: percentile(&unloaded, 50.0).unwrap_or_default(),
        unloaded_p99,
        loaded_p50: percentile(&loaded, 50.0).unwrap_or_default(),
        loaded_p99: percentile(&loaded, 99.0).unwrap_or_default(),
        nc_served: non_critical
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .count(),
        nc_queued: None,
        nc_refused: rejected.len(),
        nc_failed: non_critical
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
            .count(),
        nc_timed_out: non_critical
            .iter()
            .filter(|s| s.outcome == Outcome::TimedOut)
            .count(),
        rejection_p50: rejection_latencies
            .get(rejection_latencies.len() / 2)
            .copied(),
        recovered_after,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Runs the benchmark and prints its table. Returns whether `full` met the bar: >= 99 %
/// critical success with a loaded p99 within 1.5x of its unloaded p99 (or 5 ms).
pub async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let db = Database::open(60).await?;
    app::prepare_schema(&db.connect().await?).await?;
    let metrics = poolguard::metrics::install_prometheus()?;
    println!(
        "overload: pool {POOL_MAX}; critical {CRITICAL_RATE}/s throughout; non-critical {NON_CRITICAL_RATE}/s, \
         x10 for {} s after {} s unloaded, then {} s after; each report holds a connection {REPORT_MS} ms",
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
    println!("| guard | critical success (burst) | critical p50 / p99 unloaded (ms) | critical p50 / p99 burst (ms) | p99 ratio | non-critical served / queued / refused / failed / timed out | rejection p50 (ms) | time to recover |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.1} % ({}/{}) | {} / {} | {} / {} | {:.2}x | {} / {} / {} / {} / {} | {} | {} |",
            r.mode,
            r.critical_success(),
            r.critical_ok,
            r.critical_total,
            ms(r.unloaded_p50),
            ms(r.unloaded_p99),
            ms(r.loaded_p50),
            ms(r.loaded_p99),
            r.loaded_p99.as_secs_f64() / r.unloaded_p99.as_secs_f64().max(1e-6),
            r.nc_served,
            r.nc_queued.map(|q| q.to_string()).unwrap_or_else(|| "-".into()),
            r.nc_refused,
            r.nc_failed,
            r.nc_timed_out,
            r.rejection_p50.map(ms).unwrap_or_else(|| "-".into()),
            r.recovered_after
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "not within the run".into()),
        );
    }
    let full = rows
        .iter()
        .find(|r| r.mode == GuardMode::Full)
        .expect("full ran");
    let p99_ok = full.loaded_p99 <= (full.unloaded_p99 * 3 / 2).max(Duration::from_millis(5));
    Ok(full.critical_success() >= 99.0 && p99_ok)
}
