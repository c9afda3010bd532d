//! Overhead of the guard on the request path: throughput and latency of `SELECT 1` through
//! a real axum router and a real PostgreSQL at concurrency 32 and 256 (a pool of 20: the
//! second queues most requests), guarded vs bare, measured in one run (alternating rounds,
//! so drift hits both alike). Each stack's slowest and fastest round are printed too: on a
//! small machine they are the noise a ratio has to be read against.
//!
//! Run: `cargo bench --bench overhead`.

#[path = "../tests/common/mod.rs"]
mod common;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolguard::testing::TestCluster;
use poolguard::{Conn, Error, Guard, PoolOptions};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CONCURRENCY: [usize; 2] = [32, 256];
const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 5;

async fn bare(State(pool): State<Pool>) -> Result<&'static str, (http::StatusCode, String)> {
    let conn = pool
        .get()
        .await
        .map_err(|e| (http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    conn.query_one("SELECT 1", &[])
        .await
        .map_err(|e| (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok("1")
}

async fn guarded(conn: Conn) -> Result<&'static str, Error> {
    conn.query_one("SELECT 1", &[]).await?;
    Ok("1")
}

struct Measured {
    requests: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn hammer(addr: SocketAddr, concurrency: usize) -> Measured {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let started = Instant::now();
    let until = started + ROUND;
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                let uri: http::Uri = format!("http://{addr}/q").parse().unwrap();
                while Instant::now() < until {
                    let req = http::Request::get(uri.clone())
                        .header("x-user-id", format!("user-{i}"))
                        .body(Empty::new())
                        .unwrap();
                    let t = Instant::now();
                    match client.request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.into_body().collect().await;
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut m = Measured {
        requests: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for w in workers {
        let (lat, errors) = w.await.unwrap();
        m.requests += lat.len();
        m.errors += errors;
        m.latencies.extend(lat);
    }
    m.elapsed = started.elapsed();
    m
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = TestCluster::start().await.expect("PostgreSQL");
        let options = PoolOptions {
            max_size: 20,
            ..PoolOptions::default()
        };
        // Users get a generous quota: this measures overhead, not limiting.
        let config = poolguard::GuardConfig {
            limits: poolguard::UserLimits {
                rate_per_second: 1_000_000,
                burst: 1_000_000,
                in_flight: 1000,
                tight_rate_per_second: 1_000_000,
                tight_burst: 1_000_000,
                tight_in_flight: 1000,
                ..Default::default()
            },
            ..Default::default()
        };
        let guard = Guard::builder_for(cluster.pg_config(), &options)
            .unwrap()
            .config(config)
            .build()
            .unwrap();
        let (bare_pool, _) = poolguard::build_pool(cluster.pg_config(), &options).unwrap();
        let bare_addr =
            common::serve(Router::new().route("/q", get(bare)).with_state(bare_pool)).await;
        let guarded_addr = common::serve(
            Router::new().route("/q", get(guarded)).route_layer(
                guard
                    .standard()
                    .key_extractor(common::offline::trusted_user_header()),
            ),
        )
        .await;
        // Warm both pools.
        hammer(bare_addr, 32).await;
        hammer(guarded_addr, 32).await;

        for concurrency in CONCURRENCY {
            let (mut bare_all, mut guarded_all) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                bare_all.push(hammer(bare_addr, concurrency).await);
                guarded_all.push(hammer(guarded_addr, concurrency).await);
            }
            let summary = |runs: &[Measured]| {
                let requests: usize = runs.iter().map(|m| m.requests).sum();
                let errors: usize = runs.iter().map(|m| m.errors).sum();
                let secs: f64 = runs.iter().map(|m| m.elapsed.as_secs_f64()).sum();
                let mut lat: Vec<Duration> =
                    runs.iter().flat_map(|m| m.latencies.clone()).collect();
                lat.sort();
                (
                    requests as f64 / secs,
                    pct(&lat, 50.0),
                    pct(&lat, 99.0),
                    errors,
                )
            };
            let (b_rps, b50, b99, b_err) = summary(&bare_all);
            let (g_rps, g50, g99, g_err) = summary(&guarded_all);
            // The spread of one stack's rounds: the noise a ratio has to be read against.
            let spread = |runs: &[Measured]| {
                let rates: Vec<f64> = runs
                    .iter()
                    .map(|m| m.requests as f64 / m.elapsed.as_secs_f64())
                    .collect();
                let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let max = rates.iter().copied().fold(0.0, f64::max);
                format!("{min:.0}–{max:.0}")
            };
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "overhead: SELECT 1 through axum + PostgreSQL, concurrency {concurrency}, pool 20, \
                 {ROUNDS} alternating rounds of {} s",
                ROUND.as_secs()
            );
            println!("| stack | requests/s | rounds (requests/s) | p50 (µs) | p99 (µs) | errors |");
            println!("| --- | --- | --- | --- | --- | --- |");
            println!(
                "| bare pool | {b_rps:.0} | {} | {:.0} | {:.0} | {b_err} |",
                spread(&bare_all),
                us(b50),
                us(b99)
            );
            println!(
                "| poolguard | {g_rps:.0} | {} | {:.0} | {:.0} | {g_err} |",
                spread(&guarded_all),
                us(g50),
                us(g99)
            );
            println!(
                "| ratio guarded / bare | {:.3} | | {:.3} | {:.3} | |",
                g_rps / b_rps,
                us(g50) / us(b50),
                us(g99) / us(b99)
            );
            println!();
        }
        drop(guard);
        drop(cluster);
    });
}
