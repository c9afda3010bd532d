//! Redis (a real `redis-server` started by the harness) stopped under load and started
//! again: requests keep being answered by the local fallback at limit / N, within the bound,
//! and the shared limit returns once Redis is back.

mod common;

use common::{eventually, serve, HttpClient};
use poolguard::events::EventKind;
use poolguard::limit::redis::{RedisLimits, SharedLimits};
use poolguard::testing::TestRedis;
use poolguard::{Guard, GuardConfig, PoolOptions, UserKey, UserLimits};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RATE: u32 = 40;
const BURST: u32 = 10;
const PHASE: Duration = Duration::from_secs(2);

async fn replica(redis: &TestRedis, instance: &str) -> (Guard, SharedLimits, SocketAddr) {
    // The route never touches the database: the pool is never asked for a connection.
    let pg: tokio_postgres::Config = "postgres://app@127.0.0.1:9/app".parse().unwrap();
    let guard = Guard::builder_for(pg, &PoolOptions::default())
        .unwrap()
        .config(GuardConfig {
            limits: UserLimits {
                rate_per_second: RATE,
                burst: BURST,
                in_flight: 1000,
                tight_rate_per_second: RATE,
                tight_burst: BURST,
                tight_in_flight: 1000,
                ..UserLimits::default()
            },
            ..GuardConfig::default()
        })
        .build()
        .unwrap();
    let mut limits = RedisLimits::new(redis.url());
    limits.instance = instance.into();
    limits.heartbeat_interval = Duration::from_millis(200);
    limits.heartbeat_ttl = Duration::from_secs(1);
    limits.timeout = Duration::from_millis(100);
    let shared = guard.share_limits(limits).await.unwrap();
    let by_header = |h: &http::HeaderMap, _: &http::Extensions| {
        h.get("x-user-id")
            .map(|v| UserKey::from_untrusted(v.as_bytes(), 64))
    };
    let router = axum::Router::new()
        .route("/work", axum::routing::get(|| async { "ok" }))
        .layer(guard.standard().key_extractor(by_header));
    let addr = serve(router).await;
    (guard, shared, addr)
}

/// Loads both replicas as `user` for one phase: (served, slowest answer).
async fn load(addrs: &[SocketAddr], user: &str) -> (u64, Duration) {
    let deadline = Instant::now() + PHASE;
    let mut tasks = Vec::new();
    for addr in addrs {
        for _ in 0..3 {
            let client = HttpClient::new(*addr);
            let user = user.to_string();
            tasks.push(tokio::spawn(async move {
                let (mut served, mut slowest) = (0u64, Duration::ZERO);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let reply = client.get("/work", Some(&user)).await;
                    slowest = slowest.max(started.elapsed());
                    match reply.status {
                        200 => served += 1,
                        429 => {}
                        other => panic!("answered {other}: {}", reply.body),
                    }
                }
                (served, slowest)
            }));
        }
    }
    let (mut served, mut slowest) = (0, Duration::ZERO);
    for task in tasks {
        let (s, w) = task.await.unwrap();
        served += s;
        slowest = slowest.max(w);
    }
    (served, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_falls_back_locally_and_the_shared_limit_returns() {
    let redis = TestRedis::start().await.expect("start redis-server");
    let (guard_a, shared_a, addr_a) = replica(&redis, "replica-a").await;
    let (_guard_b, shared_b, addr_b) = replica(&redis, "replica-b").await;
    let addrs = [addr_a, addr_b];
    eventually(
        "both replicas see each other",
        Duration::from_secs(5),
        || async { shared_a.stats().live_instances == 2 && shared_b.stats().live_instances == 2 },
    )
    .await;
    let allowed = f64::from(BURST) + f64::from(RATE) * PHASE.as_secs_f64();
    let mut events = guard_a.subscribe();

    let (up, _) = load(&addrs, "carol").await;
    assert!(up as f64 <= 1.1 * allowed, "shared limit while up: {up}");

    redis.stop();
    let (down, slowest_down) = load(&addrs, "dave").await;
    let stats = shared_a.stats();
    println!(
        "limit {RATE}/s over {PHASE:?} on 2 replicas: Redis up {up} served; Redis down \
         {down} served (fallback limit / 2 each), slowest answer {slowest_down:?}; {stats:?}"
    );
    assert!(!stats.available);
    assert!(stats.fallback_checks > 0, "{stats:?}");
    // The outage is found by a request's failed round trip or by the heartbeat, whichever
    // comes first; after that no request asks Redis until it answers a heartbeat again.
    assert!(down > 0, "requests are served while Redis is down");
    assert!(
        down as f64 <= 1.1 * allowed,
        "the fallback (limit / 2 per replica) holds the limit: {down} > 1.1 x {allowed}"
    );
    assert!(
        slowest_down < Duration::from_secs(1),
        "no request waits long on Redis: {slowest_down:?}"
    );
    let mut saw_unavailable = false;
    while let Some(event) = events.try_recv() {
        if let EventKind::Custom { name, .. } = &event.kind {
            saw_unavailable |= name == "shared_limits_unavailable";
        }
    }
    assert!(saw_unavailable, "the outage is an event");

    redis.start_again().await.unwrap();
    eventually("Redis in use again", Duration::from_secs(15), || async {
        shared_a.stats().available && shared_b.stats().available
    })
    .await;
    let before = shared_a.stats().round_trips + shared_b.stats().round_trips;
    let (back, _) = load(&addrs, "erin").await;
    let after = shared_a.stats().round_trips + shared_b.stats().round_trips;
    println!("Redis back: {back} served, {} round trips", after - before);
    assert!(after > before, "checks go to Redis again");
    assert!(
        back as f64 <= 1.1 * allowed,
        "the shared limit returns: {back}"
    );
    let mut saw_restored = false;
    while let Some(event) = events.try_recv() {
        if let EventKind::Custom { name, .. } = &event.kind {
            saw_restored |= name == "shared_limits_restored";
        }
    }
    assert!(saw_restored, "the recovery is an event");
}
