//! Snapshot tests: what reaches the JSON and the page is redacted and complete.

use super::snapshot::{Snapshot, Sources};
use super::store::DashboardStore;
use crate::events::{Event, EventKind, NonCriticalGate, Severity};
use crate::guard::GuardStatus;
use crate::incident::{IncidentStore, IncidentTracker};
use crate::monitor::Level;
use crate::report::Redactor;
use std::time::SystemTime;

const EMAIL: &str = "dba.oncall@example.com";
const PASSWORD: &str = "hunter2hunter2";

#[allow(deprecated)]
fn status(level: Level, in_use: usize) -> GuardStatus {
    GuardStatus {
        level,
        non_critical_gate: NonCriticalGate::Deferred,
        breaker: NonCriticalGate::Deferred,
        max_size: 10,
        size: 10,
        available: 10 - in_use,
        in_use,
        granted: in_use,
        external: 0,
        queued: 3,
        queued_by_class: [0, 2, 1],
        pool_waiting: 0,
        reserve: 2,
        utilization: in_use as f64 / 10.0,
        server_utilization: 0.0,
        peak_utilization: 1.0,
        refusals_held: 0,
    }
}

fn leaky() -> Event {
    Event::now(EventKind::Custom {
        name: "watchdog".into(),
        severity: Severity::Failure,
        message: format!(
            "reconnect to postgres://app:{PASSWORD}@db.internal/orders failed; paging {EMAIL}"
        ),
    })
}

fn snapshot(store: &DashboardStore, incidents: &IncidentStore, level: Level) -> Snapshot {
    let redactor = Redactor::default();
    let sources = Sources {
        status: status(level, 10),
        incidents,
        store,
        redactor: &redactor,
        recent_events: 50,
        recent_incidents: 5,
        refresh_ms: 2000,
    };
    Snapshot::build(&sources, SystemTime::now())
}

#[test]
fn secrets_in_event_messages_never_reach_the_json_or_the_page() {
    let store = DashboardStore::default();
    let incidents = IncidentStore::default();
    let event = leaky();
    assert!(
        event.message().contains(EMAIL),
        "the raw message carries it"
    );
    store.record(event.clone(), SystemTime::now());
    // The same event as a one-event incident, so timelines are checked too.
    let incident = IncidentTracker::default()
        .observe(&event)
        .expect("a failure closes at once");
    incidents.insert_closed(incident);

    let snap = snapshot(&store, &incidents, Level::Critical);
    let json = serde_json::to_string(&snap).unwrap();
    for secret in [EMAIL, PASSWORD, "app:"] {
        assert!(!json.contains(secret), "`{secret}` leaked into {json}");
    }
    assert!(json.contains("[EMAIL]"), "{json}");
    assert!(json.contains("postgres://[REDACTED]@db.internal"), "{json}");
    assert_eq!(snap.events.len(), 1);
    assert_eq!(snap.recent_incidents[0].timeline.len(), 1);

    let html = super::page::render(&snap, "");
    assert!(!html.contains(EMAIL) && !html.contains(PASSWORD));
}

#[test]
fn the_snapshot_carries_pool_stats_and_a_null_server_section() {
    let store = DashboardStore::default();
    store.record(
        Event::now(EventKind::Recovered {
            after: std::time::Duration::from_millis(800),
            peak_utilization: 0.92,
        }),
        SystemTime::now(),
    );
    let snap = snapshot(&store, &IncidentStore::default(), Level::Critical);
    let v = serde_json::to_value(&snap).unwrap();
    assert_eq!(v["pool"]["level"], "critical");
    assert_eq!(v["pool"]["in_use"], 10);
    assert_eq!(v["pool"]["queued"]["standard"], 2);
    assert!(v["server"].is_null());
    assert!(v["active_incident"].is_null());
    assert_eq!(v["stats_24h"]["pool_recoveries"], 1);
    assert!(v["daily_summary"]
        .as_str()
        .unwrap()
        .contains("Self-Healing System Report"));
    let html = super::page::render(&snap, "");
    assert!(html.contains("level-critical") && html.contains("10/10"));
}
