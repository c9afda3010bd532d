//! Overhead of the guard on the request path: throughput and latency of `SELECT 1` through
//! a real axum router and a real PostgreSQL at concurrency 32 and 256 (a pool of 20: the
//! second queues most requests), guarded vs bare, measured in one run.
//!
//! The rounds come in pairs, one round of each stack, and the pairs alternate which stack
//! goes first, so drift and order hit both alike. On a small machine that shares its cores
//! with the client and the database, one round's rate moves by a tenth from the next one's:
//! besides the ratio of all rounds, each concurrency prints the ratio of each pair and a 95 %
//! confidence interval of their geometric mean, the figure to read a goal against.
//!
//! Every allocation in the process (client, server, tokio-postgres) is counted, so each
//! stack's allocations and bytes per request are printed too: a figure that does not move
//! with the machine's load, and whose difference is what the guard allocates per request.
//!
//! Run: `cargo bench --bench overhead` (6 pairs of 3 s rounds per concurrency, about 90 s);
//! `POOLGUARD_OVERHEAD_PAIRS=30 cargo bench --bench overhead` narrows the interval.

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
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting what it hands out (a reallocation counts as one
/// allocation of its new size).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes allocated so far.
fn allocated() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

const CONCURRENCY: [usize; 2] = [32, 256];
const ROUND: Duration = Duration::from_secs(3);
/// Pairs of rounds per concurrency unless `POOLGUARD_OVERHEAD_PAIRS` says otherwise.
const PAIRS: usize = 6;

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
    /// Allocations and bytes allocated in the process during the round.
    allocated: (u64, u64),
}

async fn hammer(addr: SocketAddr, concurrency: usize) -> Measured {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let started = Instant::now();
    let allocated_before = allocated();
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
        allocated: (0, 0),
    };
    for w in workers {
        let (lat, errors) = w.await.unwrap();
        m.requests += lat.len();
        m.errors += errors;
        m.latencies.extend(lat);
    }
    m.elapsed = started.elapsed();
    let allocated_after = allocated();
    m.allocated = (
        allocated_after.0 - allocated_before.0,
        allocated_after.1 - allocated_before.1,
    );
    m
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

/// Requests served per second in one round.
fn rate(m: &Measured) -> f64 {
    m.requests as f64 / m.elapsed.as_secs_f64()
}

/// Student's t for a two-sided 95 % interval with `df` degrees of freedom: from the table up
/// to 30, past it from its expansion in `1 / df` around the normal quantile (within 0.001
/// of Student's t from 30 degrees on).
fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if let Some(&t) = TABLE.get(df.max(1) - 1) {
        return t;
    }
    let (z, n) = (1.959_964_f64, df as f64);
    z + (z.powi(3) + z) / (4.0 * n)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
}

/// The geometric mean of `ratios` and its 95 % confidence interval (on their logarithms).
fn mean_with_interval(ratios: &[f64]) -> (f64, f64, f64) {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = t95(logs.len() - 1) * (var / n).sqrt();
    (mean.exp(), (mean - half).exp(), (mean + half).exp())
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

        let pairs = std::env::var("POOLGUARD_OVERHEAD_PAIRS")
            .ok()
            .map(|v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 2)
                    .expect("POOLGUARD_OVERHEAD_PAIRS: a whole number of at least 2")
            })
            .unwrap_or(PAIRS);
        for concurrency in CONCURRENCY {
            let (mut bare_all, mut guarded_all) = (Vec::new(), Vec::new());
            for pair in 0..pairs {
                if pair % 2 == 0 {
                    bare_all.push(hammer(bare_addr, concurrency).await);
                    guarded_all.push(hammer(guarded_addr, concurrency).await);
                } else {
                    guarded_all.push(hammer(guarded_addr, concurrency).await);
                    bare_all.push(hammer(bare_addr, concurrency).await);
                }
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
            // Allocations and bytes per request served, all rounds of a stack together.
            let per_request = |runs: &[Measured]| {
                let requests = runs.iter().map(|m| m.requests).sum::<usize>().max(1) as f64;
                let count: u64 = runs.iter().map(|m| m.allocated.0).sum();
                let bytes: u64 = runs.iter().map(|m| m.allocated.1).sum();
                (count as f64 / requests, bytes as f64 / requests)
            };
            let (b_allocs, b_bytes) = per_request(&bare_all);
            let (g_allocs, g_bytes) = per_request(&guarded_all);
            // The spread of one stack's rounds: the noise a ratio has to be read against.
            let spread = |runs: &[Measured]| {
                let rates: Vec<f64> = runs.iter().map(rate).collect();
                let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let max = rates.iter().copied().fold(0.0, f64::max);
                format!("{min:.0}–{max:.0}")
            };
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "overhead: SELECT 1 through axum + PostgreSQL, concurrency {concurrency}, pool 20, \
                 {pairs} pairs of rounds of {} s",
                ROUND.as_secs()
            );
            println!(
                "| stack | requests/s | rounds (requests/s) | p50 (µs) | p99 (µs) | errors \
                 | allocations / request | bytes allocated / request |"
            );
            println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
            println!(
                "| bare pool | {b_rps:.0} | {} | {:.0} | {:.0} | {b_err} | {b_allocs:.1} \
                 | {b_bytes:.0} |",
                spread(&bare_all),
                us(b50),
                us(b99)
            );
            println!(
                "| poolguard | {g_rps:.0} | {} | {:.0} | {:.0} | {g_err} | {g_allocs:.1} \
                 | {g_bytes:.0} |",
                spread(&guarded_all),
                us(g50),
                us(g99)
            );
            println!(
                "| guarded / bare (allocations: guarded − bare) | {:.3} | | {:.3} | {:.3} | | {:+.1} \
                 | {:+.0} |",
                g_rps / b_rps,
                us(g50) / us(b50),
                us(g99) / us(b99),
                g_allocs - b_allocs,
                g_bytes - b_bytes
            );
            let ratios: Vec<f64> = bare_all
                .iter()
                .zip(&guarded_all)
                .map(|(b, g)| rate(g) / rate(b))
                .collect();
            let (mean, low, high) = mean_with_interval(&ratios);
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            println!();
            println!(
                "throughput guarded / bare, pair by pair: {}",
                each.join(" ")
            );
            println!(
                "geometric mean of the pairs {mean:.3}, 95 % confidence interval {low:.3}–{high:.3}"
            );
            println!();
        }
        drop(guard);
        drop(cluster);
    });
}
