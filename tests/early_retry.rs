//! Early-retry pacing over real HTTP: a user that comes back before the `Retry-After` it was
//! told gets its next refusal held (`UserLimits::early_retry_delay`), bounded by the hold, the
//! told `Retry-After` and the route's deadline; a user that waits as told, another user, and a
//! guard without pacing are answered at once; a held refusal the client gives up on leaves
//! no slot behind; past `max_delayed_refusals` refusals are answered at once.
//!
//! The routes touch no database: every answer here is the layer's own. One test shares the
//! limits in a real Redis (harness-started), where refusals come back after a round trip.

mod common;

use axum::routing::get;
use axum::Router;
use common::offline::{offline_guard, trusted_user_header};
use common::{eventually, serve, HttpClient, Reply};
use poolguard::limit::redis::RedisLimits;
use poolguard::testing::TestRedis;
use poolguard::{Guard, GuardConfig, GuardLayer, UserLimits};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// One request per second, no burst beyond the first: the second request of a user is
/// refused with `Retry-After: 1`.
fn paced(delay: Duration, most_held: usize) -> GuardConfig {
    GuardConfig {
        limits: UserLimits {
            rate_per_second: 1,
            burst: 1,
            tight_rate_per_second: 1,
            tight_burst: 1,
            early_retry_delay: delay,
            max_delayed_refusals: most_held,
            ..UserLimits::default()
        },
        ..GuardConfig::default()
    }
}

async fn app(guard: &Guard, layer: impl Fn(&Guard) -> GuardLayer) -> SocketAddr {
    let router = Router::new()
        .route("/work", get(|| async { "done" }))
        .route_layer(layer(guard).key_extractor(trusted_user_header()));
    serve(router).await
}

async fn timed(client: &HttpClient, user: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = client.get("/work", Some(user)).await;
    (reply, started.elapsed())
}

/// Waits until `guard` holds `n` refusals (`what`), failing the test after `limit`.
async fn refusals_held_become(guard: &Guard, n: usize, what: &str, limit: Duration) {
    eventually(what, limit, || {
        let guard = guard.clone();
        async move { guard.status().refusals_held == n }
    })
    .await;
}

/// The configured hold; each held answer waits between half of it and all of it.
const HOLD: Duration = Duration::from_secs(1);
/// Far below the hold, far above a loopback answer on a loaded machine.
const AT_ONCE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_user_back_before_its_retry_after_is_answered_after_the_hold() {
    let guard = offline_guard(paced(HOLD, 16));
    let client = HttpClient::new(app(&guard, Guard::standard).await);

    let (first, _) = timed(&client, "looper").await;
    assert_eq!(first.status, 200);
    // The first refusal is answered at once and tells the user when to come back.
    let (refused, took) = timed(&client, "looper").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(took < AT_ONCE, "a first refusal took {took:?}");

    // Back at once, ignoring it: refused again, after the hold.
    let held = tokio::spawn({
        let client = client.clone();
        async move { timed(&client, "looper").await }
    });
    refusals_held_become(&guard, 1, "the refusal is held", Duration::from_secs(2)).await;
    // Meanwhile another user is answered at once.
    let (other, took) = timed(&client, "other").await;
    assert_eq!(other.status, 200);
    assert!(took < AT_ONCE, "another user waited {took:?}");

    let (again, took) = held.await.unwrap();
    assert_eq!(again.status, 429);
    assert!(
        took >= HOLD / 2,
        "an early retry was answered after {took:?}"
    );
    assert!(took < HOLD + Duration::from_secs(2), "held for {took:?}");
    // Its `Retry-After` counts from the answer: still at least a second.
    assert_eq!(again.header("retry-after"), Some("1"));
    assert_eq!(guard.status().refusals_held, 0);
}

#[tokio::test]
async fn a_user_that_waits_as_told_is_never_held() {
    let guard = offline_guard(paced(HOLD, 16));
    let client = HttpClient::new(app(&guard, Guard::standard).await);
    assert_eq!(timed(&client, "patient").await.0.status, 200);
    let (refused, _) = timed(&client, "patient").await;
    assert_eq!(refused.status, 429);
    let told: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(told) + Duration::from_millis(50)).await;
    let (back, took) = timed(&client, "patient").await;
    assert_eq!(back.status, 200, "a token refilled while the user waited");
    assert!(took < AT_ONCE);
    // Spent again and refused: a first refusal since it came back in time, answered at once.
    let (refused, took) = timed(&client, "patient").await;
    assert_eq!(refused.status, 429);
    assert!(
        took < AT_ONCE,
        "a user that waited as told was held {took:?}"
    );
}

#[tokio::test]
async fn without_pacing_every_refusal_is_answered_at_once() {
    let guard = offline_guard(paced(Duration::ZERO, 16));
    let client = HttpClient::new(app(&guard, Guard::standard).await);
    assert_eq!(timed(&client, "looper").await.0.status, 200);
    for _ in 0..5 {
        let (refused, took) = timed(&client, "looper").await;
        assert_eq!(refused.status, 429);
        assert!(took < AT_ONCE, "a refusal took {took:?}");
    }
}

#[tokio::test]
async fn a_hold_ends_by_the_route_deadline() {
    let guard = offline_guard(paced(Duration::from_secs(10), 16));
    let route_deadline = Duration::from_millis(400);
    let client = HttpClient::new(app(&guard, |g| g.standard().deadline(route_deadline)).await);
    assert_eq!(timed(&client, "looper").await.0.status, 200);
    assert_eq!(timed(&client, "looper").await.0.status, 429);
    let (held, took) = timed(&client, "looper").await;
    assert_eq!(held.status, 429);
    // Held, but not for the told second nor for the configured ten: for the deadline.
    assert!(took >= route_deadline, "answered after {took:?}");
    assert!(
        took < Duration::from_millis(950),
        "held past its deadline: {took:?}"
    );
}

#[tokio::test]
async fn past_the_cap_refusals_are_answered_at_once() {
    let guard = offline_guard(paced(Duration::from_secs(5), 1));
    let addr = app(&guard, Guard::standard).await;
    let client = HttpClient::new(addr);
    assert_eq!(timed(&client, "looper").await.0.status, 200);
    assert_eq!(timed(&client, "looper").await.0.status, 429);
    let first_held = tokio::spawn({
        let client = client.clone();
        async move { timed(&client, "looper").await }
    });
    refusals_held_become(&guard, 1, "one refusal is held", Duration::from_secs(2)).await;
    let (second, took) = timed(&client, "looper").await;
    assert_eq!(second.status, 429);
    assert!(
        took < AT_ONCE,
        "the cap of one held a second refusal {took:?}"
    );
    first_held.abort();
}

#[tokio::test]
async fn a_held_refusal_the_client_gives_up_on_leaves_nothing_held() {
    let guard = offline_guard(paced(Duration::from_secs(10), 16));
    let addr = app(&guard, |g| g.standard().deadline(Duration::from_secs(30))).await;
    let client = HttpClient::new(addr);
    assert_eq!(timed(&client, "looper").await.0.status, 200);
    assert_eq!(timed(&client, "looper").await.0.status, 429);

    // An early retry on a connection of its own, closed while its answer is held.
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /work HTTP/1.1\r\nhost: test\r\nx-user-id: looper\r\n\r\n")
        .await
        .unwrap();
    refusals_held_become(&guard, 1, "the refusal is held", Duration::from_secs(2)).await;
    drop(socket);
    // The server drops the request's future when the connection closes: well before the
    // ten-second hold would have ended.
    refusals_held_become(
        &guard,
        0,
        "the held refusal is given back",
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn refusals_from_limits_shared_in_redis_are_held_too() {
    let redis = TestRedis::start().await.expect("start redis-server");
    let guard = offline_guard(paced(HOLD, 16));
    let shared = guard
        .share_limits(RedisLimits::new(redis.url()))
        .await
        .unwrap();
    assert!(shared.stats().available, "the limits are in Redis");
    let client = HttpClient::new(app(&guard, Guard::standard).await);

    assert_eq!(timed(&client, "looper").await.0.status, 200);
    let (refused, took) = timed(&client, "looper").await;
    assert_eq!(refused.status, 429);
    assert!(took < AT_ONCE, "a first refusal took {took:?}");
    let (held, took) = timed(&client, "looper").await;
    assert_eq!(held.status, 429);
    assert!(
        took >= HOLD / 2,
        "an early retry was answered after {took:?}"
    );
    assert_eq!(guard.status().refusals_held, 0);
}
