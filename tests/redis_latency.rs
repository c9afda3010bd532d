//! The latency the shared limits add to a request, against the in-process limiter, in one
//! run: the guard layer over a handler that answers at once, called through tower, once
//! with limits in the process and once with limits in a real Redis (harness-started).
//! Prints p50 / p99 in µs.

use poolguard::limit::redis::RedisLimits;
use poolguard::testing::TestRedis;
use poolguard::{Guard, GuardConfig, PoolOptions, UserKey, UserLimits};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt};

const REQUESTS: usize = 4000;
const USERS: usize = 100;

fn guard() -> Guard {
    // The handler never touches the database: the pool is never asked for a connection.
    let pg: tokio_postgres::Config = "postgres://app@127.0.0.1:9/app".parse().unwrap();
    Guard::builder_for(pg, &PoolOptions::default())
        .unwrap()
        .config(GuardConfig {
            limits: UserLimits {
                rate_per_second: 1_000_000,
                burst: 1_000_000,
                in_flight: 1000,
                tight_rate_per_second: 1_000_000,
                tight_burst: 1_000_000,
                tight_in_flight: 1000,
                ..UserLimits::default()
            },
            ..GuardConfig::default()
        })
        .build()
        .unwrap()
}

fn service(
    guard: &Guard,
) -> impl Service<http::Request<()>, Response = http::Response<String>, Error = Infallible> + Clone
{
    let by_header = |h: &http::HeaderMap, _: &http::Extensions| {
        h.get("x-user-id")
            .map(|v| UserKey::from_untrusted(v.as_bytes(), 64))
    };
    tower::ServiceBuilder::new()
        .layer(guard.standard().key_extractor(by_header))
        .service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new("ok".to_string()))
        })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

#[tokio::test]
async fn shared_limits_add_one_round_trip_per_request() {
    let redis = TestRedis::start().await.expect("start redis-server");
    let local_guard = guard();
    let shared_guard = guard();
    let mut limits = RedisLimits::new(redis.url());
    limits.timeout = Duration::from_millis(500);
    let shared = shared_guard.share_limits(limits).await.unwrap();
    assert!(shared.stats().available);
    let local = service(&local_guard);
    let remote = service(&shared_guard);

    let mut timings = [Vec::new(), Vec::new()];
    // Interleaved, so both see the same machine load.
    for i in 0..REQUESTS {
        for (which, svc) in [&local, &remote].into_iter().enumerate() {
            let req = http::Request::get("/")
                .header("x-user-id", format!("user-{}", i % USERS))
                .body(())
                .unwrap();
            let started = Instant::now();
            let response = svc.clone().oneshot(req).await.unwrap();
            timings[which].push(started.elapsed());
            assert_eq!(response.status(), 200);
        }
    }
    let [mut local_t, mut remote_t] = timings;
    local_t.sort();
    remote_t.sort();
    let (l50, l99) = (percentile(&local_t, 0.5), percentile(&local_t, 0.99));
    let (r50, r99) = (percentile(&remote_t, 0.5), percentile(&remote_t, 0.99));
    println!(
        "per-request latency over {REQUESTS} requests ({} build): in-process limiter p50 \
         {l50:.1} µs, p99 {l99:.1} µs; Redis limiter p50 {r50:.1} µs, p99 {r99:.1} µs; added \
         p50 {:.1} µs, p99 {:.1} µs",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        r50 - l50,
        r99 - l99,
    );
    let stats = shared.stats();
    assert_eq!(stats.round_trips as usize, REQUESTS, "{stats:?}");
    assert_eq!(stats.fallback_checks, 0, "{stats:?}");
}
