//! Allocations on the request path, counted by a global allocator that only this test binary
//! installs: an admitted request (layer, key, rate check, in-flight cap, controller, slot
//! admission and release) allocates nothing once warm when its context stays in its task, and
//! only the extension's storage when the layer also puts it in the request's extensions; a
//! refused one allocates only what its response needs.

use http::{Request, Response};
use poolguard::{
    AcquireContext, Criticality, Guard, GuardConfig, RequestContext, UserKey, UserLimits,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder};

/// Counts the allocations of the thread that turned counting on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

mod common;

use common::offline::{generous_limits as generous, request, trusted_user_header, Body};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A guard whose pool points nowhere: admission never asks it for a connection.
fn offline_guard(limits: UserLimits) -> Guard {
    common::offline::offline_guard(GuardConfig {
        limits,
        ..GuardConfig::default()
    })
}

static SLOT_TAKEN: AtomicBool = AtomicBool::new(false);

/// The bare service plus the slot the `Conn` extractor would take: admitted and released as
/// `acquire` does, minus `Pool::get`.
fn with_slot(
    guard: Guard,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    tower::service_fn(move |_req: Request<Body>| {
        let guard = guard.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(1);
            let slot = guard
                .admit_slot(Criticality::Critical, AcquireContext::default(), deadline)
                .await
                .expect("a free pool admits at once");
            SLOT_TAKEN.store(true, Ordering::Relaxed);
            drop(slot);
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    })
}

/// The critical layer of these tests, trusting `x-user-id`, with or without the copy of each
/// request's context in its extensions.
fn critical(guard: &Guard, copy: bool) -> poolguard::GuardLayer {
    guard
        .critical()
        .key_extractor(trusted_user_header())
        .context_extension(copy)
}

/// The most allocations one request through `svc` made, over 100 requests after 200 to warm
/// up.
fn per_request<S>(rt: &tokio::runtime::Runtime, svc: &mut S, user: &str) -> u64
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    for _ in 0..200 {
        let req = request(user);
        drop(rt.block_on(svc.call(req)));
    }
    let mut worst = 0;
    for _ in 0..100 {
        let req = request(user);
        let (resp, n) = allocations(|| rt.block_on(svc.call(req)));
        drop(resp);
        worst = worst.max(n);
    }
    worst
}

/// The most allocations of one request of `user-1` through a critical layer of `guard` that
/// keeps the context in the request's task, its handler taking its slot as `Conn` does (see
/// [`per_request`]); checks that the handler found the context and took its slot every time.
fn in_task_per_request(rt: &tokio::runtime::Runtime, guard: &Guard) -> u64 {
    let mut guarded = ServiceBuilder::new()
        .layer(critical(guard, false))
        .service(tower::service_fn(common::offline::with_slot));
    let taken = common::offline::slots_taken_on_this_thread();
    let count = per_request(rt, &mut guarded, "user-1");
    // The handler found the context in its task and took its slot on every request.
    assert_eq!(common::offline::slots_taken_on_this_thread() - taken, 300);
    count
}

#[test]
fn an_admitted_request_allocates_nothing_of_its_own() {
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(generous());

    let mut bare = with_slot(guard.clone());
    let bare_count = per_request(&rt, &mut bare, "user-1");

    let mut guarded = ServiceBuilder::new()
        .layer(critical(&guard, true))
        .service(with_slot(guard.clone()));
    let guarded_count = per_request(&rt, &mut guarded, "user-1");
    assert!(SLOT_TAKEN.load(Ordering::Relaxed));

    // What the handler's context costs the request itself: its slot in the request's
    // extensions (the map, and the boxed value), which `Conn` and handlers read it from.
    let context = RequestContext {
        class: Criticality::Critical,
        user: Some(UserKey::new("user-1")),
        guard: guard.clone(),
        deadline: Instant::now(),
    };
    let mut req = request("user-1");
    let ((), extension_count) = allocations(|| {
        req.extensions_mut().insert(context);
    });
    drop(req);
    println!(
        "allocations per request: bare+slot {bare_count}, guarded {guarded_count}, \
         of which the request's extension storage {extension_count}"
    );
    assert_eq!(
        guarded_count,
        bare_count + extension_count,
        "the decision allocated {} times per admitted request",
        guarded_count - bare_count - extension_count
    );
}

#[test]
fn an_admitted_request_allocates_nothing_when_its_context_stays_out_of_the_extensions() {
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(generous());

    let mut bare = with_slot(guard.clone());
    let guarded_count = in_task_per_request(&rt, &guard);
    let bare_count = per_request(&rt, &mut bare, "user-1");
    println!("allocations per request: bare+slot {bare_count}, guarded {guarded_count}");
    assert_eq!(bare_count, 0, "the slot alone allocated");
    assert_eq!(
        guarded_count, 0,
        "the decision allocated {guarded_count} times per admitted request"
    );
}

#[test]
fn an_admitted_request_at_warning_allocates_nothing_either() {
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(generous());
    // The server's reported use holds the level at Warning, with no one waiting: the
    // caller's tight rate is checked too, and the slot is granted and given back on the
    // gate while the level machine stays steady.
    guard.report_server_utilization(0.86);
    assert_eq!(guard.level(), poolguard::Level::Warning);

    let guarded_count = in_task_per_request(&rt, &guard);
    assert_eq!(guard.level(), poolguard::Level::Warning);
    assert_eq!(
        guarded_count, 0,
        "the decision allocated {guarded_count} times per admitted request at Warning"
    );
}

/// Behind axum's router (which puts its own extensions in first and allocates for its own
/// work), what the copy of the context in the extensions costs: the difference between the
/// same route with and without it.
#[test]
fn behind_axum_the_context_copy_costs_one_allocation() {
    use axum::routing::get;
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(generous());
    async fn handler(ctx: RequestContext) -> &'static str {
        let slot = ctx
            .guard
            .admit_slot(ctx.class, AcquireContext::default(), ctx.deadline)
            .await
            .expect("a free pool admits at once");
        drop(slot);
        "ok"
    }
    let per_route = |copy: bool| {
        let mut router = axum::Router::new()
            .route("/api/auth/session", get(handler))
            .route_layer(critical(&guard, copy));
        let mut worst = 0;
        for i in 0..300 {
            let req = request("user-1");
            let (resp, n) = allocations(|| rt.block_on(router.call(req)));
            assert_eq!(resp.unwrap().status(), 200);
            if i >= 200 {
                worst = worst.max(n);
            }
        }
        worst
    };
    let without = per_route(false);
    let with = per_route(true);
    println!("allocations per request behind axum: {without} without the copy, {with} with it");
    assert_eq!(with - without, 1, "the copy's cost in allocations");
}

#[test]
fn a_rate_limited_answer_allocates_only_its_response() {
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(UserLimits {
        rate_per_second: 1,
        burst: 1,
        ..Default::default()
    });
    let mut guarded = ServiceBuilder::new()
        .layer(guard.standard().key_extractor(trusted_user_header()))
        .service(with_slot(guard.clone()));
    let count = per_request(&rt, &mut guarded, "user-1");
    let resp = rt.block_on(guarded.call(request("user-1"))).unwrap();
    assert_eq!(resp.status(), 429);
    println!("allocations per 429 (String body): {count}");
    // The header map (its index and entries) and the `String` body; with a body type that
    // takes a `&'static str` as is (axum's), only the header map.
    assert!(count <= 3, "a 429 allocated {count} times");
}

#[test]
fn a_shed_answer_allocates_only_its_response() {
    let rt = runtime();
    let _enter = rt.enter();
    let guard = offline_guard(generous());
    // One measured hold gives non-critical work a drain rate; with the server full, a report
    // that may wait a millisecond cannot start in time and is told so at once.
    rt.block_on(common::offline::make_reports_hopeless(&guard));
    let mut reports = ServiceBuilder::new()
        .layer(
            guard
                .non_critical()
                .deadline(Duration::from_millis(1))
                .key_extractor(trusted_user_header()),
        )
        .service(with_slot(guard.clone()));
    let count = per_request(&rt, &mut reports, "user-1");
    let resp = rt.block_on(reports.call(request("user-1"))).unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    println!("allocations per shed 503 (String body): {count}");
    assert!(count <= 3, "a 503 allocated {count} times");
}
