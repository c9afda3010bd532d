//! Overhead of the guard on the request path: throughput and latency of `SELECT 1` through
//! a real axum router and a real PostgreSQL at concurrency 32 and 256 (a pool of 20: the
//! second queues most requests), measured in one run for three stacks:
//!
//! - `bare`: the handler takes a connection from a bare pool;
//! - `floor`: the least an admission layer with a bounded wait does. A route layer waits up to
//!   5 s for one of 18 permits of a tokio semaphore (the slots a standard route may hold),
//!   answers 503 when none came, and holds the permit until the response is made; the handler
//!   bounds its query with a timer. No key, no per-user limit, no priority, no registry;
//! - `poolguard`: a standard route behind the guard's layer, the handler's `Conn` admitted by
//!   the guard.
//!
//! Each round runs every stack once, in an order rotated from one round to the next, so drift
//! and order hit all alike. On a small machine that shares its cores with the client and the
//! database, one round's rate moves by a tenth from the next one's: besides the ratio of all
//! rounds, each concurrency prints the ratio within each round and a 95 % confidence interval
//! of their geometric mean, for `poolguard / bare`, `floor / bare` and `poolguard / floor`.
//!
//! Every allocation in the process (client, server, tokio-postgres) is counted, so each
//! stack's allocations and bytes per request are printed too: a figure that does not move
//! with the machine's load, and whose difference is what a stack allocates per request.
//!
//! Run: `cargo bench --bench overhead` (6 rounds of 3 s per stack and concurrency, about
//! 2 minutes); `POOLGUARD_OVERHEAD_ROUNDS=30 cargo bench --bench overhead` narrows the
//! intervals. `POOLGUARD_OVERHEAD_ONLY=<stack>` runs one stack alone for one round at
//! concurrency 256, as `bench/overhead_instructions.sh` does to count its instructions per
//! request under callgrind.

#[path = "../tests/common/mod.rs"]
mod common;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use deadpool_postgres::Pool;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolguard::testing::TestCluster;
use poolguard::{Conn, Error, Guard, PoolOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

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
/// Rounds per concurrency unless `POOLGUARD_OVERHEAD_ROUNDS` says otherwise.
const ROUNDS: usize = 6;
/// The floor's permits: the slots a standard route may hold in a pool of 20 (the guard keeps
/// the last two for critical work).
const FLOOR_PERMITS: usize = 18;
/// The floor's longest wait for a permit: the guard's default `max_queue_wait`.
const FLOOR_WAIT: Duration = Duration::from_secs(5);
/// The floor's bound on a query, as the guard bounds each tracked one.
const FLOOR_QUERY_DEADLINE: Duration = Duration::from_secs(30);

async fn bare(State(pool): State<Pool>) -> Result<&'static str, (StatusCode, String)> {
    let conn = pool
        .get()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    conn.query_one("SELECT 1", &[])
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok("1")
}

/// The floor's admission: a permit within [`FLOOR_WAIT`], held until the response is made.
async fn floor_admission(
    State(slots): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(FLOOR_WAIT, slots.acquire()).await {
        Ok(Ok(_permit)) => next.run(request).await,
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
        )
            .into_response(),
    }
}

/// The floor's handler: the bare one, its query bounded by [`FLOOR_QUERY_DEADLINE`].
async fn floor(State(pool): State<Pool>) -> Result<&'static str, (StatusCode, String)> {
    let conn = pool
        .get()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tokio::time::timeout(FLOOR_QUERY_DEADLINE, conn.query_one("SELECT 1", &[]))
        .await
        .map_err(|_| (StatusCode::GATEWAY_TIMEOUT, "query deadline".to_string()))?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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

async fn hammer(addr: SocketAddr, concurrency: usize, round: Duration) -> Measured {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let started = Instant::now();
    let allocated_before = allocated();
    let until = started + round;
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

/// One stack under measurement: its name in the tables and where it is served.
struct Stack {
    name: &'static str,
    addr: SocketAddr,
}

/// All rounds of one stack at one concurrency, summed up.
struct Summary {
    /// Requests served per second over all rounds.
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// Allocations and bytes allocated per request served.
    allocations: f64,
    bytes: f64,
    /// The slowest and the fastest round, in requests per second.
    slowest: f64,
    fastest: f64,
}

impl Summary {
    fn of(runs: &[Measured]) -> Self {
        let requests: usize = runs.iter().map(|m| m.requests).sum();
        let secs: f64 = runs.iter().map(|m| m.elapsed.as_secs_f64()).sum();
        let mut latencies: Vec<Duration> = runs.iter().flat_map(|m| m.latencies.clone()).collect();
        latencies.sort();
        let served = requests.max(1) as f64;
        let rates: Vec<f64> = runs.iter().map(rate).collect();
        Self {
            rate: requests as f64 / secs,
            p50: pct(&latencies, 50.0),
            p99: pct(&latencies, 99.0),
            errors: runs.iter().map(|m| m.errors).sum(),
            allocations: runs.iter().map(|m| m.allocated.0).sum::<u64>() as f64 / served,
            bytes: runs.iter().map(|m| m.allocated.1).sum::<u64>() as f64 / served,
            slowest: rates.iter().copied().fold(f64::INFINITY, f64::min),
            fastest: rates.iter().copied().fold(0.0, f64::max),
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Prints the tables of one concurrency: each stack, each comparison of all rounds, and each
/// comparison round by round with its interval.
fn report(concurrency: usize, rounds: usize, stacks: &[Stack], runs: &[Vec<Measured>]) {
    let summaries: Vec<Summary> = runs.iter().map(|r| Summary::of(r)).collect();
    println!(
        "overhead: SELECT 1 through axum + PostgreSQL, concurrency {concurrency}, pool 20, \
         {rounds} rounds of {} s per stack",
        ROUND.as_secs()
    );
    println!(
        "| stack | requests/s | rounds (requests/s) | p50 (µs) | p99 (µs) | errors \
         | allocations / request | bytes allocated / request |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (stack, s) in stacks.iter().zip(&summaries) {
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.0} | {:.0} | {} | {:.1} | {:.0} |",
            stack.name,
            s.rate,
            s.slowest,
            s.fastest,
            us(s.p50),
            us(s.p99),
            s.errors,
            s.allocations,
            s.bytes
        );
    }
    // Which stack is compared with which: poolguard and the floor with bare, and poolguard
    // with the floor.
    let comparisons = [(2, 0), (1, 0), (2, 1)];
    for &(a, b) in &comparisons {
        let (sa, sb) = (&summaries[a], &summaries[b]);
        println!(
            "| {} / {} (allocations: difference) | {:.3} | | {:.3} | {:.3} | | {:+.1} | {:+.0} |",
            stacks[a].name,
            stacks[b].name,
            sa.rate / sb.rate,
            us(sa.p50) / us(sb.p50),
            us(sa.p99) / us(sb.p99),
            sa.allocations - sb.allocations,
            sa.bytes - sb.bytes
        );
    }
    println!();
    for &(a, b) in &comparisons {
        let ratios: Vec<f64> = runs[a]
            .iter()
            .zip(&runs[b])
            .map(|(x, y)| rate(x) / rate(y))
            .collect();
        let (mean, low, high) = mean_with_interval(&ratios);
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "throughput {} / {}, round by round: {}",
            stacks[a].name,
            stacks[b].name,
            each.join(" ")
        );
        println!("  geometric mean {mean:.3}, 95 % confidence interval {low:.3}–{high:.3}");
    }
    println!();
}

/// Concurrency and length of the one round of a stack run alone.
const ALONE_CONCURRENCY: usize = 256;
const ALONE_ROUND: Duration = Duration::from_secs(10);

/// One round of `stack` alone at concurrency 256, after a warm-up at the same concurrency,
/// for `bench/overhead_instructions.sh`, which counts it under callgrind. With standard input
/// not a terminal, the round starts once a line (or its end) is read from it, so the script
/// can start counting after the warm-up. Prints the requests served and the errors.
async fn one_stack_alone(stack: &Stack) {
    hammer(stack.addr, ALONE_CONCURRENCY, ROUND).await;
    println!("warmed up");
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .expect("read standard input");
    }
    let m = hammer(stack.addr, ALONE_CONCURRENCY, ALONE_ROUND).await;
    println!("requests served: {}", m.requests);
    println!("errors: {}", m.errors);
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
        let (floor_pool, _) = poolguard::build_pool(cluster.pg_config(), &options).unwrap();
        let floor_slots = Arc::new(Semaphore::new(FLOOR_PERMITS));
        let stacks = [
            Stack {
                name: "bare",
                addr: common::serve(Router::new().route("/q", get(bare)).with_state(bare_pool))
                    .await,
            },
            Stack {
                name: "floor",
                addr: common::serve(
                    Router::new()
                        .route("/q", get(floor))
                        .with_state(floor_pool)
                        .route_layer(axum::middleware::from_fn_with_state(
                            floor_slots,
                            floor_admission,
                        )),
                )
                .await,
            },
            Stack {
                name: "poolguard",
                addr: common::serve(
                    Router::new().route("/q", get(guarded)).route_layer(
                        guard
                            .standard()
                            .key_extractor(common::offline::trusted_user_header()),
                    ),
                )
                .await,
            },
        ];
        if let Ok(only) = std::env::var("POOLGUARD_OVERHEAD_ONLY") {
            let stack = stacks.iter().find(|s| s.name == only).unwrap_or_else(|| {
                panic!("POOLGUARD_OVERHEAD_ONLY: bare, floor or poolguard, not {only:?}")
            });
            return one_stack_alone(stack).await;
        }
        // Warm every pool.
        for stack in &stacks {
            hammer(stack.addr, 32, ROUND).await;
        }

        let rounds = std::env::var("POOLGUARD_OVERHEAD_ROUNDS")
            .ok()
            .map(|v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 2)
                    .expect("POOLGUARD_OVERHEAD_ROUNDS: a whole number of at least 2")
            })
            .unwrap_or(ROUNDS);
        for concurrency in CONCURRENCY {
            let mut runs: Vec<Vec<Measured>> = stacks.iter().map(|_| Vec::new()).collect();
            for round in 0..rounds {
                // The order rotates, so each stack runs first, second and last as often.
                for k in 0..stacks.len() {
                    let i = (k + round) % stacks.len();
                    runs[i].push(hammer(stacks[i].addr, concurrency, ROUND).await);
                }
            }
            report(concurrency, rounds, &stacks, &runs);
        }
        drop(guard);
        drop(cluster);
    });
}
