//! The guard's per-request decision path, and `guard.acquire` against a bare `pool.get`.
//!
//! Run: `cargo bench --bench decision_path -- --warm-up-time 1 --measurement-time 3`. Every
//! group has its baseline in the same run: `bare` (the service alone) and `generic` (tower's
//! ConcurrencyLimit + LoadShed + Timeout); compare ratios, not absolute times.
//!
//! `decision/*` is the whole decision for an admitted request: layer, key, rate check,
//! in-flight cap, controller, and the slot admitted and released as `Conn` does (without the
//! database round trip), against the bare service (`admitted_context_in_task`: with the
//! layer's `context_extension(false)`, which allocates nothing; `admitted_watched`: the same on
//! a guard a watchdog watches, whose slots are also recorded in the registry of held
//! connections the watchdog reads; `admitted_at_warning`: the same at Warning, no one waiting)
//! and against `floor`, the least
//! an admission layer with a bounded wait does (tower's ConcurrencyLimit and Timeout), and the
//! two refusals (`shed`: a report that cannot start in time; `rate_limited`: a caller whose
//! quota is spent), each also over the bare service itself (`*_over_bare`: what the guard
//! adds, without the room the admitted route's handler takes in the layer's future);
//! `decision_threads/*` runs it on 1, 2, 4 and 8 threads at once and reports the cost per
//! request and core (flat when nothing is contended): `admitted` with every thread's requests
//! from the same four users, `admitted_own_users` with four users per thread, so that only
//! the guard's own lines are shared between the cores. `saturated/*/256/{1,2}` runs 256 tasks
//! over 18 slots on 1 and 2 workers, through the guard and through a tokio semaphore: the cost
//! of an acquisition that waits and is handed its slot (on one worker, with no one to contend
//! with). `pure/*` times the level machine, a user key, and what the decision is made of one
//! operation at a time: a clock read, a locked add, a plain add, and a refusal's header map
//! copied from a ready-made one or built. `decision_prometheus/*` runs
//! the admitted decision again with the Prometheus exporter installed (last, since it installs
//! the process's recorder).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{Request, Response};
use poolguard::monitor::{LevelMachine, Pressure, Thresholds};
use poolguard::testing::TestCluster;
use poolguard::{Criticality, Guard, GuardConfig, PoolOptions, UserKey, UserLimits};
use std::convert::Infallible;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "../tests/common/mod.rs"]
mod common;

use common::offline::{request, trusted_user_header, with_slot, Body};

async fn ok(_: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(String::new()))
}

/// A guard whose pool points nowhere: the decision path never touches it.
fn offline_guard(rt: &tokio::runtime::Runtime) -> Guard {
    let _enter = rt.enter();
    common::offline::generous_guard()
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
    // What the decision is made of, one operation at a time: a read of the monotonic clock
    // (an admitted request makes three: its deadline, its grant, its release), one locked
    // add on a line no other core writes (an admitted request makes about twenty: slot,
    // reference counts, locks, rate cell), and the plain add that replaces one where a
    // thread has its stripe alone.
    group.bench_function("clock_read", |b| b.iter(Instant::now));
    let counter = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("locked_add", |b| {
        b.iter(|| counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });
    group.bench_function("plain_add", |b| {
        b.iter(|| {
            let n = counter.load(std::sync::atomic::Ordering::Relaxed);
            counter.store(n + 1, std::sync::atomic::Ordering::Relaxed)
        })
    });
    // What a refusal's headers cost, made and dropped: a copy of a ready-made map of five
    // static entries (a 429's) and of one, and the five inserted one by one.
    let ready_429 = refusal_headers(5);
    let ready_one = refusal_headers(1);
    group.bench_function("header_map_copy/5", |b| b.iter(|| ready_429.clone()));
    group.bench_function("header_map_copy/1", |b| b.iter(|| ready_one.clone()));
    group.bench_function("header_map_built/5", |b| b.iter(|| refusal_headers(5)));
    group.finish();
}

/// The first `entries` of a 429's headers, each name and value static, inserted one by one.
fn refusal_headers(entries: usize) -> http::HeaderMap {
    use http::{HeaderName, HeaderValue};
    const ALL: [(HeaderName, HeaderValue); 5] = [
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from_static("10"),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from_static("0"),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from_static("5"),
        ),
        (http::header::RETRY_AFTER, HeaderValue::from_static("5")),
    ];
    let mut headers = http::HeaderMap::with_capacity(entries);
    for (name, value) in ALL.into_iter().take(entries) {
        headers.insert(name, value);
    }
    headers
}

fn acquire_vs_pool_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(TestCluster::start()).expect("PostgreSQL");
    let guard = rt.block_on(async {
        Guard::builder_for(cluster.pg_config(), &PoolOptions::default())
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

/// One request of `user-1` through `svc`, answered without waiting, with `status` (checked
/// in debug builds).
fn answered<S>(svc: &mut S, status: u16) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let resp = svc.call(request("user-1")).now_or_never().unwrap().unwrap();
    debug_assert_eq!(resp.status(), status);
    resp
}

/// One request of `user-1` through `svc` once it is ready, answered without waiting, with
/// `status` (checked in debug builds): for services that take a permit when they are ready.
fn answered_when_ready<S>(svc: &mut S, status: u16) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().unwrap().unwrap();
    let resp = ready
        .call(request("user-1"))
        .now_or_never()
        .unwrap()
        .unwrap();
    debug_assert_eq!(resp.status(), status);
    resp
}

/// A critical route of `guard` that takes its slot as `Conn` does, its layer keeping the
/// context only current in the request's task (`context_extension(false)`).
fn admitted_in_task(
    guard: &Guard,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> {
    ServiceBuilder::new()
        .layer(
            guard
                .critical()
                .key_extractor(trusted_user_header())
                .context_extension(false),
        )
        .service(tower::service_fn(with_slot))
}

fn whole_decision(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guard = offline_guard(&rt);
    let mut group = c.benchmark_group("decision");
    let mut bare = tower::service_fn(ok);
    group.bench_function("bare", |b| b.iter(|| answered(&mut bare, 200)));

    // The floor: the least an admission layer with a bounded wait does, tower's
    // ConcurrencyLimit (a slot counted by a semaphore, taken when the service is ready and
    // given back with the response) and Timeout (a timer on the call) over the bare service.
    // No key, no per-user limit, no controller, no registry.
    let mut floor = ServiceBuilder::new()
        .concurrency_limit(20)
        .timeout(Duration::from_secs(5))
        .service(tower::service_fn(ok));
    group.bench_function("floor", |b| {
        // The timer needs the runtime's context.
        let _enter = rt.enter();
        b.iter(|| answered_when_ready(&mut floor, 200))
    });

    let mut guarded = ServiceBuilder::new()
        .layer(guard.critical().key_extractor(trusted_user_header()))
        .service(tower::service_fn(with_slot));
    group.bench_function("admitted", |b| b.iter(|| answered(&mut guarded, 200)));

    // The same with the context only current in the request's task, not in its extensions:
    // nothing allocated.
    let mut in_task = admitted_in_task(&guard);
    group.bench_function("admitted_context_in_task", |b| {
        b.iter(|| answered(&mut in_task, 200))
    });

    // The same on a guard a watchdog watches: each slot is also recorded in the registry of
    // held connections the watchdog reads (and forgotten when it comes back).
    let watched_guard = offline_guard(&rt);
    watched_guard.watch_held();
    let mut watched = admitted_in_task(&watched_guard);
    group.bench_function("admitted_watched", |b| {
        b.iter(|| answered(&mut watched, 200))
    });

    // The same at Warning (the server reported at 86 % of its connections) with no one
    // waiting: the grant takes no lock, the release goes to the lock (where the level
    // machine sees the use fall), and the caller's tight rate is checked too.
    let warning_guard = offline_guard(&rt);
    warning_guard.report_server_utilization(0.86);
    let mut at_warning = admitted_in_task(&warning_guard);
    group.bench_function("admitted_at_warning", |b| {
        b.iter(|| answered(&mut at_warning, 200))
    });

    // A report that may wait a millisecond while the server is full, after one measured
    // hold: answered 503 at once, before its key or quota is looked at.
    let shed_guard = offline_guard(&rt);
    rt.block_on(common::offline::make_reports_hopeless(&shed_guard));
    let hopeless_report = shed_guard
        .non_critical()
        .deadline(Duration::from_millis(1))
        .key_extractor(trusted_user_header());
    let mut shed = ServiceBuilder::new()
        .layer(hopeless_report.clone())
        .service(tower::service_fn(with_slot));
    group.bench_function("shed", |b| b.iter(|| answered(&mut shed, 503)));

    // A caller whose quota is spent: its key and rate cell are looked at, then 429.
    let spent_guard = {
        let _enter = rt.enter();
        common::offline::offline_guard(GuardConfig {
            limits: UserLimits {
                rate_per_second: 1,
                burst: 1,
                ..Default::default()
            },
            ..GuardConfig::default()
        })
    };
    let spent_caller = spent_guard.critical().key_extractor(trusted_user_header());
    let mut spent = ServiceBuilder::new()
        .layer(spent_caller.clone())
        .service(tower::service_fn(with_slot));
    answered(&mut spent, 200);
    group.bench_function("rate_limited", |b| b.iter(|| answered(&mut spent, 429)));

    // The same two refusals with the bare service inside, in place of the admitted route's
    // handler: a refused request never reaches it, but the layer's future has room for the
    // inner one, and each move of the request's future copies that room. With `bare`'s
    // service inside, the difference to `bare` is the guard's alone.
    let mut shed_over_bare = ServiceBuilder::new()
        .layer(hopeless_report)
        .service(tower::service_fn(ok));
    group.bench_function("shed_over_bare", |b| {
        b.iter(|| answered(&mut shed_over_bare, 503))
    });
    let mut spent_over_bare = ServiceBuilder::new()
        .layer(spent_caller)
        .service(tower::service_fn(ok));
    group.bench_function("rate_limited_over_bare", |b| {
        b.iter(|| answered(&mut spent_over_bare, 429))
    });
    group.finish();
}

/// `iters` requests on each of `threads` threads at once through a clone of `svc`, each
/// thread cycling through the users `users` gives it (by its index); returns the wall time
/// times the cores in use, over all requests: the cost of one request on one core, the same
/// at every thread count when nothing is contended.
fn on_threads<S>(
    svc: &S,
    threads: usize,
    iters: u64,
    users: fn(usize) -> [&'static str; 4],
) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send,
    S::Future: Send,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|scope| {
        for thread in 0..threads {
            let mut svc = svc.clone();
            let start = &start;
            let users = users(thread);
            scope.spawn(move || {
                start.wait();
                for i in 0..iters {
                    let user = users[i as usize % users.len()];
                    let resp = svc.call(request(user)).now_or_never().unwrap().unwrap();
                    std::hint::black_box(resp);
                }
            });
        }
        start.wait();
        Instant::now()
    });
    let wall = elapsed.elapsed();
    wall * threads.min(cores) as u32 / threads as u32
}

/// The four users every thread's requests come from.
fn shared_users(_thread: usize) -> [&'static str; 4] {
    ["user-1", "user-2", "user-3", "user-4"]
}

/// Four users of each thread's own (up to eight threads): no user's entry is written from
/// two cores, so what is left shared is the guard's own lines.
fn own_users(thread: usize) -> [&'static str; 4] {
    const OWN: [[&str; 4]; 8] = [
        ["t0-1", "t0-2", "t0-3", "t0-4"],
        ["t1-1", "t1-2", "t1-3", "t1-4"],
        ["t2-1", "t2-2", "t2-3", "t2-4"],
        ["t3-1", "t3-2", "t3-3", "t3-4"],
        ["t4-1", "t4-2", "t4-3", "t4-4"],
        ["t5-1", "t5-2", "t5-3", "t5-4"],
        ["t6-1", "t6-2", "t6-3", "t6-4"],
        ["t7-1", "t7-2", "t7-3", "t7-4"],
    ];
    OWN[thread % OWN.len()]
}

fn decision_threads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let guard = offline_guard(&rt);
    let bare = tower::service_fn(ok);
    let guarded = ServiceBuilder::new()
        .layer(guard.critical().key_extractor(trusted_user_header()))
        .service(tower::service_fn(with_slot));
    let mut group = c.benchmark_group("decision_threads");
    for threads in [1, 2, 4, 8] {
        group.bench_function(format!("bare/{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&bare, threads, iters, shared_users))
        });
        group.bench_function(format!("admitted/{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&guarded, threads, iters, shared_users))
        });
        group.bench_function(format!("admitted_own_users/{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&guarded, threads, iters, own_users))
        });
    }
    group.finish();
}

/// Acquisitions through `acquire` by `tasks` tasks at once on a runtime of `workers`, each
/// holding its slot over one yield; returns the wall time over all of them. More tasks than
/// slots: most acquisitions wait, and every release hands its slot on.
fn saturated<A, Fut, P>(workers: usize, tasks: usize, iters: u64, acquire: A) -> Duration
where
    A: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = P> + Send,
    P: Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let per_task = iters.div_ceil(tasks as u64);
    rt.block_on(async move {
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let acquire = acquire.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        let permit = acquire(task).await;
                        tokio::task::yield_now().await;
                        drop(permit);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        started.elapsed() * iters as u32 / (per_task * tasks as u64) as u32
    })
}

/// Saturated admission: 256 tasks (each its own user) over the 18 slots standard work may
/// hold in a pool of 20, through the guard (queue, level, hand-off under the admission lock)
/// and through a tokio semaphore of 18 permits (what a bare pool's checkout waits on), in one
/// run.
fn saturated_admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("saturated");
    for workers in [1, 2] {
        group.bench_function(format!("tokio_semaphore/256/{workers}"), |b| {
            b.iter_custom(|iters| {
                let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(18));
                saturated(workers, 256, iters, move |_| {
                    let semaphore = semaphore.clone();
                    async move { semaphore.acquire_owned().await.unwrap() }
                })
            })
        });
        group.bench_function(format!("guard/256/{workers}"), |b| {
            b.iter_custom(|iters| {
                let setup = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let guard = offline_guard(&setup);
                let users: std::sync::Arc<[UserKey]> = (0..256)
                    .map(|i| UserKey::new(format!("user-{i}")))
                    .collect();
                saturated(workers, 256, iters, move |task| {
                    let guard = guard.clone();
                    let context = poolguard::AcquireContext {
                        user: Some(users[task].clone()),
                        route: None,
                    };
                    async move {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        guard
                            .admit_slot(Criticality::Standard, context, deadline)
                            .await
                            .expect("admitted within a minute")
                    }
                })
            })
        });
    }
    group.finish();
}

/// The admitted decision with the Prometheus exporter installed, as an application that is
/// scraped runs it (`poolguard::metrics::install_prometheus`): every request's count and its
/// wait and hold records go to the exporter's handles. Against `bare` in the same group.
fn with_prometheus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = poolguard::metrics::install_prometheus().expect("no recorder installed yet");
    let guard = offline_guard(&rt);
    let mut group = c.benchmark_group("decision_prometheus");
    let mut bare = tower::service_fn(ok);
    group.bench_function("bare", |b| b.iter(|| answered(&mut bare, 200)));
    let mut in_task = admitted_in_task(&guard);
    group.bench_function("admitted_context_in_task", |b| {
        b.iter(|| answered(&mut in_task, 200))
    });
    group.finish();
    // What a scrape would find: the requests were recorded.
    assert!(handle.render().contains("poolguard_requests_total"));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    // Last: it installs the process's metrics recorder, which every guard built after it
    // records to.
    targets = whole_decision, decision_threads, saturated_admission, layer_path, pure_cores, acquire_vs_pool_get, with_prometheus
}
criterion_main!(benches);
