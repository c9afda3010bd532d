//! A guard over a pool that points nowhere, and the pieces the decision benchmark and the
//! allocation and virtual-time tests drive it with. Admission through `Guard::admit_slot`
//! never asks such a pool for a connection.

use http::{Request, Response};
use poolguard::limit::DefaultKeyExtractor;
use poolguard::{AcquireContext, Criticality, Guard, GuardConfig, RequestContext, UserLimits};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

/// The request body of these services.
pub type Body = String;

/// A pool of `max_size` whose server does not exist.
pub fn unreachable_pool(max_size: usize) -> deadpool_postgres::Pool {
    let pg: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
    let manager = deadpool_postgres::Manager::new(pg, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap()
}

/// A guard with `config` over an unreachable pool of 20 (call inside a runtime).
pub fn offline_guard(config: GuardConfig) -> Guard {
    Guard::builder(unreachable_pool(20))
        .config(config)
        .build()
        .unwrap()
}

/// A guard over an unreachable pool of 20 whose limits nothing reaches (call inside a
/// runtime).
pub fn generous_guard() -> Guard {
    offline_guard(GuardConfig {
        limits: generous_limits(),
        ..GuardConfig::default()
    })
}

/// Limits no benchmark or test reaches: what is measured is the check, not a refusal.
pub fn generous_limits() -> UserLimits {
    UserLimits {
        rate_per_second: 1_000_000_000,
        burst: 1_000_000_000,
        tight_rate_per_second: 1_000_000_000,
        tight_burst: 1_000_000_000,
        ..Default::default()
    }
}

/// The client is the only one: its `x-user-id` header is trusted.
pub fn trusted_user_header() -> DefaultKeyExtractor {
    DefaultKeyExtractor::trusting_header(http::HeaderName::from_static("x-user-id"), 64)
}

/// A request to a critical route from `user`.
pub fn request(user: &str) -> Request<Body> {
    Request::builder()
        .uri("/api/auth/session")
        .header("x-user-id", user)
        .body(String::new())
        .unwrap()
}

thread_local! {
    /// Slots taken by [`with_slot`] on this thread since it started: counted per thread, so
    /// that the count writes no line another core writes (the decision benchmark runs the
    /// handler on several threads at once to measure what the guard shares between them).
    static SLOTS_TAKEN: Cell<u64> = const { Cell::new(0) };
}

/// Slots taken by [`with_slot`] on the calling thread since it started.
pub fn slots_taken_on_this_thread() -> u64 {
    SLOTS_TAKEN.with(Cell::get)
}

/// The inner service of a guarded route that takes its slot as the `Conn` extractor does:
/// from the request's context (the copy in its extensions, borrowed; else the one current in
/// its task, cloned), with its class, user and deadline; released at once.
pub async fn with_slot(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let found = RequestContext::find_borrowed(req.extensions()).expect("under a guard layer");
    let ctx: &RequestContext = &found;
    let context = AcquireContext {
        user: ctx.user.clone(),
        route: None,
    };
    let slot = ctx
        .guard
        .admit_slot(ctx.class, context, ctx.deadline)
        .await
        .expect("a free pool admits at once");
    SLOTS_TAKEN.with(|taken| taken.set(taken.get() + 1));
    drop(slot);
    Ok(Response::new(String::new()))
}

/// Makes non-critical work of `guard` hopeless for a short deadline: one measured hold gives
/// it a drain rate, and a full server leaves it no slot, so a report that may wait a
/// millisecond is answered 503 at once.
pub async fn make_reports_hopeless(guard: &Guard) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let slot = guard
        .admit_slot(
            Criticality::NonCritical,
            AcquireContext::default(),
            deadline,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(slot);
    guard.report_server_utilization(1.0);
}
