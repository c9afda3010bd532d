//! Several guards and watchdogs on one PostgreSQL: two services that keep the default name,
//! and two instances of one service, never cancel each other's queries; a wider scope names
//! another instance's backend as such.

mod common;

use common::{cluster, guard_with, pool_options, quick_config};
use poolguard::events::{EventKind, EventSubscriber};
use poolguard::watchdog::{Scope, Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{Criticality, Error, Guard, PoolOptions, QUERY_CANCELED};
use std::time::Duration;

fn watchdog(guard: &Guard, kill_after: Duration, scope: Scope) -> WatchdogHandle {
    Watchdog::builder(guard)
        .config(WatchdogConfig {
            interval: Duration::from_millis(200),
            kill_after,
            scope,
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap()
}

fn options(service: &str, instance: Option<&str>) -> PoolOptions {
    PoolOptions {
        application_name: service.to_string(),
        instance: instance.map(str::to_string),
        statement_timeout: Duration::from_secs(120),
        ..pool_options(4)
    }
}

fn cancelled(e: &Error) -> bool {
    matches!(e, Error::Db(e) | Error::QueryCanceled(e)
        if e.code().map(|c| c.code()) == Some(QUERY_CANCELED))
}

/// The applications of every backend the watchdog behind `sub` cancelled or terminated.
fn acted_on(sub: &mut EventSubscriber) -> Vec<(Option<String>, Option<String>)> {
    let mut acted = Vec::new();
    while let Some(event) = sub.try_recv() {
        if let EventKind::QueryCancelled { backend, .. }
        | EventKind::BackendTerminated { backend, .. } = event.kind
        {
            acted.push((backend.application, backend.other_instance));
        }
    }
    acted
}

/// `strict` kills after 1 s, `patient` after a minute. A 3 s query of `patient` survives
/// `strict`'s watchdog, while `strict`'s own 30 s query is cancelled by it.
async fn strict_never_touches_patient(strict: &Guard, patient: &Guard) {
    let mut strict_events = strict.subscribe();
    let _strict_dog = watchdog(strict, Duration::from_secs(1), Scope::Application);
    let _patient_dog = watchdog(patient, Duration::from_secs(60), Scope::Application);
    let slow = patient.acquire(Criticality::Standard).await.unwrap();
    let own = strict.acquire(Criticality::Standard).await.unwrap();
    let (theirs, ours) = tokio::join!(
        slow.query("SELECT pg_sleep(3)", &[]),
        own.query("SELECT pg_sleep(30)", &[]),
    );
    theirs.expect("the other guard's query runs to its end");
    let ours = ours.expect_err("the strict watchdog does stop its own guard's query");
    assert!(cancelled(&ours), "{ours:?}");
    let patient_name = patient.identity().unwrap().application_name();
    let strict_name = strict.identity().unwrap().application_name();
    assert_ne!(patient_name, strict_name);
    let acted = acted_on(&mut strict_events);
    assert!(
        acted
            .iter()
            .all(|(app, _)| app.as_deref() == Some(strict_name.as_str())),
        "acted only on its own backends ({strict_name}): {acted:?}"
    );
    assert!(!acted.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_with_default_settings_never_cancel_each_others_queries() {
    let pg = cluster(40).await;
    // Both keep application_name "poolguard" and the default instance.
    let a = guard_with(&pg, options("poolguard", None), quick_config()).await;
    let b = guard_with(&pg, options("poolguard", None), quick_config()).await;
    strict_never_touches_patient(&a, &b).await;
    strict_never_touches_patient(&b, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_service_never_cancel_each_others_queries() {
    let pg = cluster(40).await;
    let a = guard_with(&pg, options("api", Some("pod-a")), quick_config()).await;
    let b = guard_with(&pg, options("api", Some("pod-b")), quick_config()).await;
    strict_never_touches_patient(&a, &b).await;
    strict_never_touches_patient(&b, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wider_scope_names_another_instances_backend_as_such() {
    let pg = cluster(40).await;
    let a = guard_with(&pg, options("api", Some("pod-a")), quick_config()).await;
    let b = guard_with(&pg, options("api", Some("pod-b")), quick_config()).await;
    let mut events = a.subscribe();
    let _dog = watchdog(&a, Duration::from_secs(1), Scope::Database);
    let conn = b.acquire(Criticality::Standard).await.unwrap();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    assert!(cancelled(&err), "{err:?}");
    // The client can see its cancel before the watchdog has published what it did: wait for
    // the event, within a bound.
    let wanted = (Some("api:pod-b".to_string()), Some("pod-b".to_string()));
    let mut acted = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !acted.contains(&wanted) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let EventKind::QueryCancelled { backend, .. }
                | EventKind::BackendTerminated { backend, .. } = event.kind
                {
                    acted.push((backend.application, backend.other_instance));
                }
            }
            _ => break,
        }
    }
    assert!(acted.contains(&wanted), "{acted:?}");
}
