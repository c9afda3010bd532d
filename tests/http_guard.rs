//! The guard in front of a real axum router, over a real socket and a real PostgreSQL.

mod common;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use common::{
    cluster, eventually, guard, guard_with, pool_options, quick_config, serve, HttpClient,
};
use poolguard::limit::DefaultKeyExtractor;
use poolguard::{Conn, Criticality, Error, Guard, GuardConfig, Level, PoolOptions, UserLimits};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

async fn select_one(State(hits): State<Hits>, conn: Conn) -> Result<String, Error> {
    hits.0.fetch_add(1, Ordering::SeqCst);
    let row = conn.query_one("SELECT 1", &[]).await?;
    Ok(row.get::<_, i32>(0).to_string())
}

async fn report(State(hits): State<Hits>, conn: Conn) -> Result<String, Error> {
    hits.0.fetch_add(1, Ordering::SeqCst);
    let _ = conn.query_one("SELECT 1", &[]).await?;
    Ok("report".into())
}

async fn sleep(Query(q): Query<HashMap<String, u64>>, conn: Conn) -> Result<String, Error> {
    let ms = q.get("ms").copied().unwrap_or(100) as f64 / 1000.0;
    conn.query("SELECT pg_sleep($1)", &[&ms]).await?;
    Ok("slept".into())
}

/// The test client plays a gateway that sets `x-user-id`: the routes trust it.
fn trusted(layer: poolguard::GuardLayer) -> poolguard::GuardLayer {
    layer.key_extractor(DefaultKeyExtractor::trusting_header(
        http::HeaderName::from_static("x-user-id"),
        64,
    ))
}

fn app(guard: &Guard, hits: Hits) -> Router {
    let critical = Router::new()
        .route("/crit", get(select_one))
        .route_layer(trusted(guard.critical()));
    let standard = Router::new()
        .route("/std", get(select_one))
        .route("/sleep", get(sleep))
        .route_layer(trusted(guard.standard()));
    let non_critical = Router::new()
        .route("/report", get(report))
        .route_layer(trusted(guard.non_critical()));
    Router::new()
        .merge(critical)
        .merge(standard)
        .merge(non_critical)
        .route("/unguarded", get(select_one))
        .route("/health", guard.health_route())
        .with_state(hits)
}

#[tokio::test]
async fn non_critical_is_deferred_at_warning_without_touching_the_pool_then_served() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, quick_config()).await;
    let hits = Hits::default();
    let http = HttpClient::new(serve(app(&guard, hits.clone())).await);

    assert_eq!(http.get("/report", Some("u1")).await.status, 200);
    assert_eq!(hits.0.load(Ordering::SeqCst), 1);

    let held: Vec<_> = futures_join(&guard, Criticality::Standard, 9).await;
    assert_eq!(guard.level(), Level::Warning);
    let before = (guard.status().granted, guard.pool().status().size);
    // Reports under pressure wait for a slot: the handler runs, its connection does not
    // come yet.
    let reports: Vec<_> = (0..5)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move { http.get("/report", Some("u1")).await.status })
        })
        .collect();
    eventually("reports deferred", Duration::from_secs(5), || async {
        guard.status().queued_by_class[0] == 5
    })
    .await;
    assert_eq!((guard.status().granted, guard.pool().status().size), before);
    // Critical and standard routes are still served.
    assert_eq!(http.get("/crit", Some("u2")).await.status, 200);

    drop(held);
    for r in reports {
        assert_eq!(
            r.await.unwrap(),
            200,
            "a deferred report is served, not refused"
        );
    }
    eventually("back to normal", Duration::from_secs(5), || async {
        guard.level() == Level::Normal
    })
    .await;
    for _ in 0..5 {
        assert_eq!(http.get("/report", Some("u1")).await.status, 200);
    }
}

#[tokio::test]
async fn a_report_that_cannot_meet_its_deadline_is_answered_503_at_once() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 4, GuardConfig::default()).await;
    let app = Router::new()
        .route("/report", get(sleep))
        .route_layer(guard.non_critical().deadline(Duration::from_millis(1500)));
    let http = HttpClient::new(serve(app).await);
    // Measure the reports' hold (3 slots of 4 are theirs): about 1 s.
    let fill = |ms: u64| {
        (0..3)
            .map(|_| {
                let http = http.clone();
                let path = format!("/report?ms={ms}");
                tokio::spawn(async move { http.get(&path, Some("u1")).await.status })
            })
            .collect::<Vec<_>>()
    };
    for r in fill(1000) {
        assert_eq!(r.await.unwrap(), 200);
    }
    let long = fill(4000);
    eventually("slots taken", Duration::from_secs(5), || async {
        guard.status().granted == 3
    })
    .await;
    // Three more could start in about 1 s; the next would take about 2 s, past 1.5 s.
    let waiting = fill(100);
    eventually("three wait", Duration::from_secs(5), || async {
        guard.status().queued_by_class[0] == 3
    })
    .await;
    let asked = Instant::now();
    let r = http.get("/report?ms=100", Some("u2")).await;
    assert_eq!(r.status, 503);
    assert!(asked.elapsed() < Duration::from_millis(750), "told at once");
    assert!(r.body.contains("\"shed\""));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    for w in waiting {
        assert_eq!(w.await.unwrap(), 503, "not started past its deadline");
    }
    for l in long {
        assert_eq!(l.await.unwrap(), 200);
    }
}

async fn futures_join(guard: &Guard, class: Criticality, n: usize) -> Vec<poolguard::GuardedConn> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(guard.acquire(class).await.unwrap());
    }
    held
}

#[tokio::test]
async fn per_user_limits_answer_429_and_tighten_at_warning() {
    let pg = cluster(40).await;
    let config = GuardConfig {
        limits: UserLimits {
            rate_per_second: 1,
            burst: 30,
            in_flight: 8,
            tight_rate_per_second: 1,
            tight_burst: 30,
            tight_in_flight: 2,
            max_key_len: 64,
            ..UserLimits::default()
        },
        ..quick_config()
    };
    let guard = guard(&pg, 20, config).await;
    let http = HttpClient::new(serve(app(&guard, Hits::default())).await);

    // In-flight cap at Normal: 8 sleeping requests of one user, the 9th is refused.
    let sleepers: Vec<_> = (0..8)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move { http.get("/sleep?ms=1500", Some("alice")).await.status })
        })
        .collect();
    eventually("8 in flight", Duration::from_secs(5), || async {
        guard.status().granted == 8
    })
    .await;
    let r = http.get("/std", Some("alice")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("ratelimit-limit"), Some("8"));
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("in_flight_limit"));
    assert_eq!(
        http.get("/std", Some("bob")).await.status,
        200,
        "other users unaffected"
    );
    for s in sleepers {
        assert_eq!(s.await.unwrap(), 200);
    }

    // At Warning (here from server-wide pressure) the cap is 2.
    guard.report_server_utilization(0.9);
    assert_eq!(guard.level(), Level::Warning);
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move { http.get("/sleep?ms=1000", Some("carol")).await.status })
        })
        .collect();
    eventually("2 in flight", Duration::from_secs(5), || async {
        guard.status().granted == 2
    })
    .await;
    assert_eq!(http.get("/crit", Some("carol")).await.status, 429);
    for s in sleepers {
        assert_eq!(s.await.unwrap(), 200);
    }
    guard.report_server_utilization(0.0);
    eventually("back to normal", Duration::from_secs(5), || async {
        guard.level() == Level::Normal
    })
    .await;

    // The rate: a burst of 30 then 429 with a Retry-After from the GCRA.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(http.get("/crit", Some("dave")).await.status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((5..=10).contains(&limited), "{statuses:?}");
    assert_eq!(&statuses[..30], &[200; 30][..]);
}

/// Huge, non-printable and missing keys are served, and each stays one bounded identity: the
/// same hostile key is limited as one user, a key differing in its last byte is another user,
/// and a request without a key is keyed by its peer address.
#[tokio::test]
async fn hostile_user_keys_are_handled() {
    let pg = cluster(20).await;
    let config = GuardConfig {
        limits: UserLimits {
            in_flight: 1,
            tight_in_flight: 1,
            ..UserLimits::default()
        },
        ..GuardConfig::default()
    };
    let guard = guard(&pg, 6, config).await;
    let http = HttpClient::new(serve(app(&guard, Hits::default())).await);
    let huge = "x".repeat(8000);
    let other_huge = format!("{}y", "x".repeat(7999));
    for key in [huge.as_str(), "\u{fc}-\u{f1}\tkey"] {
        // One request of this key holds its only in-flight slot ...
        let holder = {
            let http = http.clone();
            let key = key.to_string();
            tokio::spawn(async move { http.get("/sleep?ms=1500", Some(&key)).await.status })
        };
        eventually(
            "the first request holds a slot",
            Duration::from_secs(5),
            || async { guard.status().granted == 1 },
        )
        .await;
        // ... so the same key is refused as the same user, whatever its length or bytes.
        let r = http.get("/std", Some(key)).await;
        assert_eq!(r.status, 429, "{key:.20}: {}", r.body);
        // A key that differs only at its end is another user.
        if key == huge {
            assert_eq!(http.get("/std", Some(&other_huge)).await.status, 200);
        }
        assert_eq!(holder.await.unwrap(), 200);
    }
    assert_eq!(
        http.get("/std", None).await.status,
        200,
        "peer address as fallback"
    );
}

#[tokio::test]
async fn statement_timeout_is_answered_504() {
    let pg = cluster(20).await;
    let options = PoolOptions {
        statement_timeout: Duration::from_millis(300),
        ..pool_options(4)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let http = HttpClient::new(serve(app(&guard, Hits::default())).await);
    let r = http.get("/sleep?ms=5000", Some("u")).await;
    assert_eq!(r.status, 504);
    assert!(r.body.contains("statement_timeout"));
    assert_eq!(http.get("/std", Some("u")).await.status, 200);
}

#[tokio::test]
async fn a_route_without_a_guard_layer_says_so() {
    let pg = cluster(20).await;
    let guard = guard(&pg, 2, GuardConfig::default()).await;
    let http = HttpClient::new(serve(app(&guard, Hits::default())).await);
    let r = http.get("/unguarded", None).await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("route_not_guarded"));
}

#[tokio::test]
async fn health_answers_quickly_while_the_pool_is_full() {
    let pg = cluster(20).await;
    let guard = guard(&pg, 3, GuardConfig::default()).await;
    let http = HttpClient::new(serve(app(&guard, Hits::default())).await);
    let r = http.get("/health", None).await;
    assert_eq!(r.status, 200);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"]["status"], "ok");
    assert_eq!(body["pool"]["max"], 3);

    let held = futures_join(&guard, Criticality::Critical, 3).await;
    let started = Instant::now();
    let r = http.get("/health", None).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["level"], "critical");
    assert_eq!(
        body["database"]["status"], "ok",
        "checked over the dedicated connection"
    );
    assert_eq!(body["pool"]["in_use"], 3);
    drop(held);
}

/// What a handler sees of its request's context: its class as the `RequestContext` and
/// `Criticality` extractors read it and as `Conn` was acquired with, the caller, whether a
/// copy was in the extensions, the class `RequestContext::current` finds in the handler's
/// task, and the answer of the database through `Conn`.
async fn context_report(
    ctx: poolguard::RequestContext,
    class: Criticality,
    copy: Option<axum::Extension<poolguard::RequestContext>>,
    conn: Conn,
) -> Result<String, Error> {
    let row = conn.query_one("SELECT 1", &[]).await?;
    Ok(format!(
        "{:?} {:?} conn={:?} user={} extension={} current={:?} db={}",
        ctx.class,
        class,
        conn.class(),
        ctx.user.as_ref().map_or("-", |u| u.as_str()),
        copy.is_some(),
        poolguard::RequestContext::current().map(|c| c.class),
        row.get::<_, i32>(0)
    ))
}

/// A layer with `context_extension(false)` leaves the context in the request's task only:
/// `Conn`, the `RequestContext` and `Criticality` extractors find it there, a handler's
/// `Extension<RequestContext>` does not (with the default it does). Under an outer guard layer
/// the inner one changes only the class: the caller's quota is spent once per request, by the
/// outer layer, whichever of the two keeps its context out of the extensions.
#[tokio::test]
async fn the_context_can_stay_in_the_request_task_and_nested_layers_spend_the_quota_once() {
    let pg = cluster(20).await;
    let config = GuardConfig {
        limits: UserLimits {
            rate_per_second: 1,
            burst: 4,
            tight_rate_per_second: 1,
            tight_burst: 4,
            max_key_len: 64,
            ..UserLimits::default()
        },
        ..quick_config()
    };
    let guard = guard(&pg, 4, config).await;
    let in_task = Router::new()
        .route("/in-task", get(context_report))
        .route_layer(trusted(guard.critical()).context_extension(false));
    let default = Router::new()
        .route("/default", get(context_report))
        .route_layer(trusted(guard.critical()));
    // Nested: the whole router under a standard layer, a critical one on the route.
    let nested = |outer_copy: bool, inner_copy: bool| {
        Router::new()
            .route("/nested", get(context_report))
            .route_layer(trusted(guard.critical()).context_extension(inner_copy))
            .layer(trusted(guard.standard()).context_extension(outer_copy))
    };
    let http = HttpClient::new(serve(in_task.merge(default)).await);

    let r = http.get("/in-task", Some("ann")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "Critical Critical conn=Critical user=ann extension=false current=Some(Critical) db=1"
    );
    let r = http.get("/default", Some("bob")).await;
    assert_eq!(
        r.body,
        "Critical Critical conn=Critical user=bob extension=true current=Some(Critical) db=1"
    );

    for (outer_copy, inner_copy) in [(false, false), (true, false), (false, true), (true, true)] {
        let http = HttpClient::new(serve(nested(outer_copy, inner_copy)).await);
        let user = format!("nested-{outer_copy}-{inner_copy}");
        let statuses: Vec<u16> = futures_util::future::join_all(
            (0..6).map(|_| async { http.get("/nested", Some(&user)).await.status }),
        )
        .await;
        let served = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(
            served, 4,
            "outer copy {outer_copy}, inner copy {inner_copy}: a burst of 4 serves 4 of 6, \
             got {statuses:?}"
        );
        let r = http.get("/nested", Some("nested-class")).await;
        assert_eq!(
            r.body,
            format!(
                "Critical Critical conn=Critical user=nested-class extension={} current=Some(Critical) db=1",
                outer_copy || inner_copy
            )
        );
    }
}

/// A layer in between that runs the rest of the request in a task of its own (here one that
/// spawns the handler's future) takes the request's extensions along, not the layer's task:
/// the handler then finds the context only in the extensions, which the layer fills by
/// default; with `context_extension(false)` the route says that no guard context reached it.
/// `tower::buffer` is not such a layer: its worker makes the handler's future, but the future
/// is polled in the request's task.
#[tokio::test]
async fn a_layer_that_spawns_the_handler_needs_the_context_in_the_extensions() {
    use axum::error_handling::HandleErrorLayer;
    use tower::{ServiceBuilder, ServiceExt};
    let pg = cluster(20).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let spawned = |copy: bool| {
        let handler = get(context_report);
        let spawning = tower::service_fn(move |req: axum::extract::Request| {
            let handler = handler.clone();
            async move { tokio::spawn(handler.oneshot(req)).await.unwrap() }
        });
        Router::new()
            .route_service("/spawned", spawning)
            .route_layer(trusted(guard.critical()).context_extension(copy))
    };
    let buffered = |copy: bool| {
        let handler = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }))
            .layer(tower::buffer::BufferLayer::new(8))
            .service(get(context_report));
        Router::new()
            .route_service("/buffered", handler)
            .route_layer(trusted(guard.critical()).context_extension(copy))
    };
    for copy in [true, false] {
        let http = HttpClient::new(serve(spawned(copy).merge(buffered(copy))).await);
        let r = http.get("/spawned", Some("ann")).await;
        if copy {
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(
                r.body,
                "Critical Critical conn=Critical user=ann extension=true current=None db=1"
            );
        } else {
            assert_eq!(r.status, 500);
            assert!(r.body.contains("route_not_guarded"), "{}", r.body);
        }
        let r = http.get("/buffered", Some("bob")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body,
            format!("Critical Critical conn=Critical user=bob extension={copy} current=Some(Critical) db=1")
        );
    }
}
