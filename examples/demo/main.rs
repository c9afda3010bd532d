//! poolguard's reference app and incident replay.
//!
//! ```text
//! cargo run --example demo                       # replay every seed incident, off vs full
//! cargo run --example demo -- scenario NAME      # one scenario (dashboard-burst, slow-query, ...)
//! cargo run --release --example demo -- serve --help   # the reference app over HTTP (see its options)
//! cargo run --release --example demo -- overload # the overload benchmark: off vs generic vs full
//! ```
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway local PostgreSQL.

// Built as a test too (its replay report test): `main` and what only it uses are idle there.
#![cfg_attr(test, allow(dead_code))]

mod app;
mod cli;
mod database;
mod html_report;
mod load;
mod observability;
mod overload;
mod report;
mod scenarios;
mod spam;

use app::{AppOptions, GuardMode};
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match (cli.replay_names(), cli.command) {
        (Some(names), _) => replay(&names).await,
        (None, Some(Command::Serve(s))) => serve(s).await.map(|_| true),
        (None, Some(Command::Overload)) => overload::run().await,
        (None, _) => unreachable!("every other command is a replay"),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,tokio_postgres=warn,deadpool=warn,deadpool.postgres=error")
    });
    // Colour only for a person at a terminal; a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false)
        .compact()
        .init();
}

async fn serve(s: cli::Serve) -> Result<(), Box<dyn std::error::Error>> {
    let db = database::Database::open_for_serve(s.pool_max + 10).await?;
    let metrics = poolguard::metrics::install_prometheus()?;
    if let Some(pool_name) = &s.otel_metric_names {
        poolguard::metrics::otel::enable(pool_name);
    }
    let mut guard_config = poolguard::GuardConfig::default();
    if let Some(hold) = s.early_retry_delay {
        guard_config.limits.early_retry_delay = hold;
    }
    guard_config.class_statement_timeout.standard = s.standard_statement_timeout;
    let options = AppOptions {
        guard_config,
        pool_max: s.pool_max as usize,
        mode: s.mode,
        redis: s.redis.clone(),
        watchdog: poolguard::watchdog::WatchdogConfig {
            kill_after: s.kill_after,
            ..Default::default()
        },
        trust_user_header: s.trust_user_header,
        instance: s.instance.clone(),
        watchdog_url: s.watchdog_url.clone(),
        tls: db.tls(),
        ..AppOptions::default()
    };
    app::prepare_schema(&db.connect().await?).await?;
    let app = app::build(db.pg_config(), &options, metrics).await?;
    let observability = match &app.guard {
        Some(guard) => Some(observability::attach_shared(
            guard,
            true,
            poolguard::incident::DEFAULT_QUIET_PERIOD,
            s.redis.as_deref(),
        )?),
        None => None,
    };
    let router = match &observability {
        Some(o) => app.router.merge(o.dashboard.clone()),
        None => app.router,
    };
    let listener = tokio::net::TcpListener::bind(s.listen).await?;
    tracing::info!(
        "reference app ({} mode, pool {}) listening on http://{}",
        options.mode,
        options.pool_max,
        listener.local_addr()?
    );
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    drop(observability);
    if let Some(w) = app.watchdog {
        w.stop().await;
    }
    drop(app.guard);
    drop(db);
    Ok(())
}

/// Replays each scenario with the guard off and full; prints the comparison table.
/// Returns whether every `full` run met its expectation.
async fn replay(names: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let db = database::Database::open(80).await?;
    app::prepare_schema(&db.connect().await?).await?;
    let metrics = poolguard::metrics::install_prometheus()?;
    let mut results = Vec::new();
    let mut reports = Vec::new();
    for name in names {
        for mode in [GuardMode::Off, GuardMode::Full] {
            println!("\n=== {name} with --guard {mode} ===");
            let (result, incident_reports) = scenarios::run(name, mode, &db, &metrics).await?;
            println!("{}", result.verdict());
            results.push(result);
            reports.extend(incident_reports.into_iter().map(|r| (name.clone(), r)));
        }
    }
    println!("\n=== incident reports (from the full runs) ===");
    for (name, report) in &reports {
        println!("\n--- {name} ---\n{report}");
    }
    println!("\n=== outcome comparison (measured) ===\n");
    println!("{}", report::comparison_table(&results));
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| r.missed_expectation().map(|w| (r.name.clone(), w)))
        .collect();
    for (name, why) in &failed {
        println!("MISSED: {name}: {why}");
    }
    let report = html_report::write(
        std::path::Path::new(html_report::DEFAULT_PATH),
        &html_report::take_runs(),
    )?;
    println!(
        "replay report (off vs full, per scenario): {}",
        report.display()
    );
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(failed.is_empty())
}
