//! Per-user limits keyed by your own notion of a user, two ways:
//!
//! 1. an authentication middleware (`axum::middleware::from_fn`) validates a bearer token
//!    and inserts a [`poolguard::UserKey`] extension, which the guard's default extractor
//!    reads first;
//! 2. a closure given to [`GuardLayer::key_extractor`](poolguard::GuardLayer::key_extractor)
//!    that reads an `x-api-key` header.
//!
//! ```text
//! cargo run --example custom_key
//! ```
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway local PostgreSQL. Requests are made
//! in-process with `tower::ServiceExt::oneshot`. The guard is pushed to Warning (as if the
//! server were 90 % full), where each user may have 5 requests in flight: the 6th
//! concurrent request of the same user is answered 429 while other users are still served.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use poolguard::{testing::TestCluster, Conn, Error, Guard, PoolOptions, UserKey};
use std::time::Duration;
use tower::ServiceExt;

/// A slow query, so concurrent requests overlap.
async fn slow(conn: Conn) -> Result<&'static str, Error> {
    conn.query("SELECT pg_sleep(0.4)", &[]).await?;
    Ok("done")
}

/// Way 1: validate the bearer token and attach the user it belongs to.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = match token {
        Some("token-alice") => "alice",
        Some("token-bob") => "bob",
        _ => return StatusCode::UNAUTHORIZED.into_response(),
    };
    request.extensions_mut().insert(UserKey::new(user));
    next.run(request).await
}

/// Way 2: a key extractor closure; requests without the header have no per-user limit.
fn api_key(headers: &HeaderMap, _: &Extensions) -> Option<UserKey> {
    let key = headers.get("x-api-key")?;
    Some(UserKey::from_untrusted(key.as_bytes(), 64))
}

/// Sends `n` concurrent requests built by `make`, returns their statuses in start order.
async fn burst(app: &Router, n: usize, make: impl Fn(usize) -> Request) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let request = make(i);
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.oneshot(request).await.map(|r| r.status().as_u16())
        }));
        // Let each request take its in-flight slot before the next one starts.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.ok().and_then(Result::ok).unwrap_or(0));
    }
    statuses
}

fn get_with(path: &str, header: (&str, &str)) -> Request {
    Request::get(path)
        .header(header.0, header.1)
        .body(Body::empty())
        .expect("a valid request")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The database: a fresh one on DATABASE_URL when set, otherwise a throwaway local
    // server; both go away with `cluster`.
    let cluster = TestCluster::start().await?;
    let pg = cluster.pg_config();
    let options = PoolOptions {
        max_size: 20,
        ..PoolOptions::default()
    };
    let guard = Guard::builder_for(pg, &options)?.build()?;

    let app = Router::new()
        // Way 1: the auth middleware runs first (added last, so outermost) and sets the key.
        .merge(
            Router::new()
                .route("/api/messages", get(slow))
                .route_layer(guard.standard())
                .layer(middleware::from_fn(authenticate)),
        )
        // Way 2: the guard layer finds the key itself.
        .merge(
            Router::new()
                .route("/api/v2/messages", get(slow))
                .route_layer(guard.standard().key_extractor(api_key)),
        );

    let no_token = app
        .clone()
        .oneshot(Request::get("/api/messages").body(Body::empty())?)
        .await?;
    println!("no token                 -> {}", no_token.status().as_u16());

    // As if the whole server were 90 % full: the guard enters Warning and tightens the
    // per-user limits (5 in flight).
    guard.report_server_utilization(0.9);
    println!("level                    -> {}", guard.level());

    let statuses = burst(&app, 7, |i| {
        let token = if i < 6 {
            "Bearer token-alice"
        } else {
            "Bearer token-bob"
        };
        get_with("/api/messages", ("authorization", token))
    })
    .await;
    println!("bearer: alice x6, bob    -> {statuses:?}");

    let statuses = burst(&app, 7, |i| {
        let key = if i < 6 { "key-acme" } else { "key-globex" };
        get_with("/api/v2/messages", ("x-api-key", key))
    })
    .await;
    println!("api key: acme x6, globex -> {statuses:?}");
    Ok(())
}
