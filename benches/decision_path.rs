//! The guard's per-request decision path, and `guard.acquire` against a bare `pool.get`.
//!
//! Run: `cargo bench --bench decision_path`. Every group has its baseline in the same run:
//! `bare` (the service alone) and `generic` (tower's ConcurrencyLimit + LoadShed + Timeout);
//! compare ratios, not absolute times.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use poolguard::monitor::{LevelMachine, Pressure, Thresholds};
use poolguard::testing::TestCluster;
use poolguard::{Criticality, Guard, GuardConfig, PoolOptions, UserKey};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder, ServiceExt};

type Body = String;

fn request(user: &str) -> Request<Body> {
    Request::builder()
        .uri("/api/auth/session")
        .header("x-user-id", user)
        .body(String::new())
        .unwrap()
}

async fn ok(_: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(String::new()))
}

/// A guard whose pool points nowhere: the decision path never touches it.
fn offline_guard(rt: &tokio::runtime::Runtime) -> Guard {
    let _enter = rt.enter();
    let pg: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
    let config = GuardConfig {
        limits: poolguard::UserLimits {
            rate_per_second: 1_000_000_000,
            burst: 1_000_000_000,
            tight_rate_per_second: 1_000_000_000,
            tight_burst: 1_000_000_000,
            ..Default::default()
        },
        ..GuardConfig::default()
    };
    Guard::connect(pg, &PoolOptions::default())
        .unwrap()
        .config(config)
        .build()
        .unwrap()
}

fn layer_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guard = offline_guard(&rt);
    let mut group = c.benchmark_group("decision_path");

    let mut bare = tower::service_fn(ok);
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| {
            let fut = bare.call(request("user-1"));
            async move { fut.await.unwrap() }
        })
    });

    group.bench_function("generic_tower_stack", |b| {
        b.to_async(&rt).iter_batched(
            || {
                ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(20)
                    .timeout(Duration::from_secs(10))
                    .service(tower::service_fn(ok))
            },
            |svc| async move { svc.oneshot(request("user-1")).await.unwrap() },
            BatchSize::SmallInput,
        )
    });

    let mut critical = ServiceBuilder::new()
        .layer(guard.critical().key_extractor(trusted_user_header()))
        .service(tower::service_fn(ok));
    group.bench_function("poolguard_admit_critical", |b| {
        b.to_async(&rt).iter(|| {
            let fut = critical.call(request("user-1"));
            async move { fut.await.unwrap() }
        })
    });

    let mut non_critical = ServiceBuilder::new()
        .layer(guard.non_critical().key_extractor(trusted_user_header()))
        .service(tower::service_fn(ok));
    // Under pressure a report is deferred, not shed: the layer only checks (without a lock)
    // that it can still start before its deadline, and passes it on.
    guard.report_server_utilization(0.9);
    group.bench_function("poolguard_defer_non_critical", |b| {
        b.to_async(&rt).iter(|| {
            let fut = non_critical.call(request("user-1"));
            async move {
                let resp = fut.await.unwrap();
                assert_eq!(resp.status(), 200);
                resp
            }
        })
    });
    guard.report_server_utilization(0.0);
    group.finish();
}

fn pure_cores(c: &mut Criterion) {
    let mut group = c.benchmark_group("pure");
    let mut machine = LevelMachine::new(Thresholds {
        warning: 0.85,
        critical: 0.92,
        critical_recovery: 0.88,
        warning_recovery: 0.80,
        min_dwell: Duration::from_millis(500),
        starvation: Duration::from_millis(200),
    });
    let now = Instant::now();
    let mut u = 0.0f64;
    group.bench_function("level_machine_observe", |b| {
        b.iter(|| {
            u = (u + 0.013) % 1.0;
            machine.observe(
                Pressure {
                    utilization: u,
                    waiting: 0,
                    oldest_wait: Duration::ZERO,
                },
                now,
            )
        })
    });
    group.bench_function("user_key_from_header", |b| {
        b.iter(|| UserKey::from_untrusted(b"user-123456", 64))
    });
    group.finish();
}

fn acquire_vs_pool_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(TestCluster::start()).expect("PostgreSQL");
    let guard = rt.block_on(async {
        Guard::connect(cluster.pg_config(), &PoolOptions::default())
            .unwrap()
            .build()
            .unwrap()
    });
    let pool = guard.pool().clone();
    // Warm the pool so both measure checkout, not connect.
    rt.block_on(async {
        let conns: Vec<_> = futures_warm(&guard).await;
        drop(conns);
    });
    let mut group = c.benchmark_group("acquire");
    group.bench_function("bare_pool_get", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(pool.get().await.unwrap()) })
    });
    group.bench_function("guard_acquire", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(guard.acquire(Criticality::Standard).await.unwrap()) })
    });
    group.finish();
    drop(guard);
    drop(cluster);
}

async fn futures_warm(guard: &Guard) -> Vec<poolguard::GuardedConn> {
    let mut v = Vec::new();
    for _ in 0..4 {
        v.push(guard.acquire(Criticality::Critical).await.unwrap());
    }
    v
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = layer_path, pure_cores, acquire_vs_pool_get
}
criterion_main!(benches);

/// The benchmark's client is the only one: its `x-user-id` header is trusted.
fn trusted_user_header() -> poolguard::limit::DefaultKeyExtractor {
    poolguard::limit::DefaultKeyExtractor::trusting_header(
        http::HeaderName::from_static("x-user-id"),
        64,
    )
}
