//! Background jobs under the guard, without HTTP: each job acquires with
//! [`Guard::acquire`] as its class and, when the guard refuses
//! ([`Error::Rejected`]), waits the rejection's `retry_after` before trying the same item
//! again.
//!
//! ```text
//! cargo run --example background_job
//! ```
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway local PostgreSQL. Two jobs run side by
//! side, a non-critical report and a standard outbox. For two seconds the server is reported
//! 95 % full: the guard goes Critical, the report job is shed and backs off, the outbox job
//! keeps going. Then the pressure ends and the report job finishes once the guard lets
//! non-critical work back in.

use poolguard::testing::TestCluster;
use poolguard::{Criticality, Error, Guard, PoolOptions};
use std::time::{Duration, Instant};

/// Processes `items` work items as `class`, one connection each; returns how many times it
/// backed off.
async fn run_job(
    guard: Guard,
    name: &'static str,
    class: Criticality,
    items: u32,
    started: Instant,
) -> Result<u32, Error> {
    let mut backoffs = 0;
    let mut item = 1;
    while item <= items {
        match guard.acquire(class).await {
            Ok(conn) => {
                conn.query("SELECT pg_sleep(0.15)", &[]).await?;
                let t = started.elapsed().as_secs_f64();
                println!("[{t:5.2}s] {name:<6} item {item} done ({class})");
                item += 1;
            }
            Err(Error::Rejected(r)) => {
                let t = started.elapsed().as_secs_f64();
                println!(
                    "[{t:5.2}s] {name:<6} item {item} refused ({}, level {}), retrying in {:?}",
                    r.reason(),
                    guard.level(),
                    r.retry_after
                );
                backoffs += 1;
                tokio::time::sleep(r.retry_after).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(backoffs)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The database: a fresh one on DATABASE_URL when set, otherwise a throwaway local
    // server; both go away with `cluster`.
    let cluster = TestCluster::start().await?;
    let pg = cluster.pg_config();
    let options = PoolOptions {
        max_size: 10,
        ..PoolOptions::default()
    };
    let guard = Guard::builder_for(pg, &options)?.build()?;
    let started = Instant::now();

    // Simulated pressure: the whole server 95 % full from 0.4 s to 2.4 s.
    let pressure = {
        let guard = guard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            guard.report_server_utilization(0.95);
            println!(
                "[{:5.2}s] server 95% full -> level {}",
                started.elapsed().as_secs_f64(),
                guard.level()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            guard.report_server_utilization(0.2);
            println!(
                "[{:5.2}s] server back to 20%",
                started.elapsed().as_secs_f64()
            );
        })
    };

    let report = tokio::spawn(run_job(
        guard.clone(),
        "report",
        Criticality::NonCritical,
        8,
        started,
    ));
    let outbox = tokio::spawn(run_job(
        guard.clone(),
        "outbox",
        Criticality::Standard,
        8,
        started,
    ));
    let report_backoffs = report.await??;
    let outbox_backoffs = outbox.await??;
    pressure.await?;
    println!(
        "[{:5.2}s] finished: report backed off {report_backoffs} times, outbox {outbox_backoffs} times; level {}",
        started.elapsed().as_secs_f64(),
        guard.level()
    );
    Ok(())
}
