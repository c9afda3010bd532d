//! Incident assembly from event sequences, severity mapping, signatures and the local summary.

use super::*;
use crate::criticality::Criticality;
use crate::events::{Event, EventKind, NonCriticalGate, OutcomeCounts, Severity};
use crate::monitor::Level;
use std::time::{Duration, SystemTime};

pub(crate) fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_063_620_200)
}

pub(crate) fn at(ms: u64, kind: EventKind) -> Event {
    Event {
        at: t0() + Duration::from_millis(ms),
        kind,
    }
}

pub(crate) fn level(from: Level, to: Level, util: f64) -> EventKind {
    EventKind::LevelChanged {
        from,
        to,
        utilization: util,
        in_use: (util * 100.0).round() as usize,
        max_size: 100,
        waiting: 3,
    }
}

pub(crate) fn summary(
    shed: [u64; 3],
    queued: [u64; 3],
    limited: [u64; 3],
    timed_out: [u64; 3],
) -> EventKind {
    EventKind::RequestsSummary {
        window: Duration::from_secs(1),
        counts: OutcomeCounts {
            served: [10, 10, 10],
            shed,
            queued,
            rate_limited: limited,
            timed_out,
            ..OutcomeCounts::default()
        },
    }
}

/// Warning -> non-critical deferred -> Critical -> two summaries -> Warning -> Normal (+ Recovered after).
pub(crate) fn episode() -> Vec<Event> {
    vec![
        at(0, level(Level::Normal, Level::Warning, 0.85)),
        at(
            200,
            EventKind::NonCriticalGateChanged {
                state: NonCriticalGate::Deferred,
            },
        ),
        at(500, level(Level::Warning, Level::Critical, 0.95)),
        at(600, summary([4, 0, 0], [0, 7, 0], [0, 2, 0], [0, 0, 0])),
        at(700, summary([1, 0, 0], [0, 3, 0], [0, 0, 0], [0, 1, 0])),
        at(750, level(Level::Critical, Level::Warning, 0.87)),
        at(800, level(Level::Warning, Level::Normal, 0.70)),
        at(
            810,
            EventKind::Recovered {
                after: Duration::from_millis(800),
                peak_utilization: 0.95,
            },
        ),
    ]
}

pub(crate) fn closed_incident() -> Incident {
    let mut t = IncidentTracker::default();
    let closed: Vec<Incident> = episode().iter().filter_map(|e| t.observe(e)).collect();
    assert_eq!(closed.len(), 1, "one episode makes one incident");
    closed.into_iter().next().unwrap()
}

#[test]
fn an_episode_becomes_one_incident_with_peak_actions_impact_and_recovery() {
    let mut t = IncidentTracker::default();
    let events = episode();
    for e in &events[..6] {
        assert!(t.observe(e).is_none(), "closed too early at {:?}", e.kind);
    }
    assert!(t.active().is_some());
    let i = t.observe(&events[6]).expect("Normal closes the incident");
    assert!(t.active().is_none());
    assert!(
        t.observe(&events[7]).is_none(),
        "Recovered after close opens nothing"
    );

    assert_eq!(i.id, 1);
    assert_eq!(i.opened_at, t0());
    assert_eq!(i.closed_at, Some(t0() + Duration::from_millis(800)));
    assert_eq!(i.recovery_time, Some(Duration::from_millis(800)));
    assert_eq!(i.peak_level, Level::Critical);
    assert_eq!(i.peak_severity, Severity::Critical);
    assert_eq!(i.peak_utilization, 0.95);
    assert_eq!((i.peak_in_use, i.max_size), (95, 100));
    assert_eq!(
        i.actions,
        vec![
            Action::LimitsTightened,
            Action::NonCriticalDeferred,
            Action::EmergencyMeasures,
            Action::RequestsShed,
            Action::RequestsQueued,
            Action::RateLimited,
        ]
    );
    assert_eq!(i.impact.refused(), 5);
    assert_eq!(i.impact.queued(), 10);
    assert_eq!(i.impact.rate_limited(), 2);
    assert_eq!(i.impact.timed_out(), 1);
    assert_eq!(i.impact.failed, 0);
    assert_eq!(i.impact.critical_failed(), 0);
    assert_eq!(i.timeline.len(), 7);
    assert!(i.auto_recovered());
}

#[test]
fn recovered_closes_too_and_its_duration_counts() {
    let mut t = IncidentTracker::default();
    t.observe(&at(0, level(Level::Normal, Level::Warning, 0.86)));
    let i = t
        .observe(&at(
            300,
            EventKind::Recovered {
                after: Duration::from_millis(450),
                peak_utilization: 0.9,
            },
        ))
        .expect("Recovered closes");
    assert_eq!(i.recovery_time, Some(Duration::from_millis(450)));
    assert_eq!(i.peak_utilization, 0.9);
}

#[test]
fn severity_maps_to_titles_and_failures_report_at_once() {
    let mut t = IncidentTracker::default();
    // Info outside an incident opens nothing.
    assert!(t
        .observe(&at(
            0,
            EventKind::NonCriticalGateChanged {
                state: NonCriticalGate::Direct
            }
        ))
        .is_none());
    assert!(t.active().is_none());
    // A failure outside an incident is a one-event incident, closed at once.
    let failure = EventKind::QueryAbandoned {
        class: Criticality::Standard,
        route: Some("/reports".into()),
        cancel_sent: false,
    };
    let f = t
        .observe(&at(10, failure.clone()))
        .expect("failure reported at once");
    assert_eq!(f.peak_severity, Severity::Failure);
    assert_eq!(
        f.title(),
        "Self-Heal Failure - Manual Intervention Required"
    );
    assert_eq!(f.timeline.len(), 1);
    assert_eq!(f.recovery_time, None);
    assert!(!f.auto_recovered());
    assert_eq!(f.routes, vec!["/reports".to_string()]);
    // Inside an incident, a failure is counted and the incident stays open.
    assert!(t
        .observe(&at(20, level(Level::Normal, Level::Warning, 0.86)))
        .is_none());
    assert!(t.observe(&at(30, failure)).is_none());
    let w = t
        .observe(&at(40, level(Level::Warning, Level::Normal, 0.5)))
        .unwrap();
    assert_eq!(w.impact.failed, 1);
    assert_eq!(w.peak_level, Level::Warning);
    assert!(
        !w.auto_recovered(),
        "a failed action is not a clean self-heal"
    );
    let warn = IncidentTracker::default()
        .observe(&at(0, level(Level::Normal, Level::Warning, 0.86)))
        .map(|_| ());
    assert!(warn.is_none());
    assert_eq!(closed_incident().title(), "Connection Pool Critical");
}

#[test]
fn signature_ignores_times_and_figures_but_not_the_peak() {
    let a = closed_incident();
    let mut t = IncidentTracker::default();
    let shifted: Vec<Event> = episode()
        .into_iter()
        .map(|mut e| {
            e.at += Duration::from_secs(1800);
            e
        })
        .collect();
    let b = shifted.iter().find_map(|e| t.observe(e)).unwrap();
    assert_eq!(a.signature(), b.signature());
    let mut t = IncidentTracker::default();
    t.observe(&at(0, level(Level::Normal, Level::Warning, 0.86)));
    let c = t
        .observe(&at(9, level(Level::Warning, Level::Normal, 0.5)))
        .unwrap();
    assert_ne!(a.signature(), c.signature());
}

#[test]
fn the_timeline_is_bounded_and_keeps_head_and_tail() {
    let mut t = IncidentTracker::new(8, DEFAULT_IDLE_CLOSE);
    t.observe(&at(0, level(Level::Normal, Level::Warning, 0.86)));
    for i in 1..=20 {
        t.observe(&at(
            i,
            EventKind::StatementTimedOut {
                class: Criticality::Standard,
                route: None,
            },
        ));
    }
    let i = t
        .observe(&at(100, level(Level::Warning, Level::Normal, 0.5)))
        .unwrap();
    assert_eq!(i.timeline.len(), 8);
    assert_eq!(i.timeline_omitted, 14);
    assert_eq!(i.timeline[0].at, t0());
    assert_eq!(i.timeline[7].at, t0() + Duration::from_millis(100));
}

#[test]
fn an_incident_that_never_left_normal_closes_when_idle() {
    let mut t = IncidentTracker::new(16, Duration::from_secs(60));
    let e = at(
        0,
        EventKind::StatementTimedOut {
            class: Criticality::Critical,
            route: Some("/pay".into()),
        },
    );
    assert!(t.observe(&e).is_none());
    assert!(t.close_if_idle(t0() + Duration::from_secs(59)).is_none());
    let i = t
        .close_if_idle(t0() + Duration::from_secs(60))
        .expect("idle closes");
    assert_eq!(i.title(), "Statement Timeouts");
    assert_eq!(i.actions, vec![Action::StatementTimeouts]);
    assert!(i.auto_recovered());
}

#[test]
fn the_local_summary_reads_like_the_seed_alert() {
    let text = local_summary(&closed_incident());
    let expected_lines = [
        "[AUTO-RESOLVED] Connection Pool Critical - System Self-Healed",
        "The system detected high connection pool usage (95%) at 09:40:20 UTC.",
        "- Non-critical endpoints deferred (queued, not refused)",
        "- Rate limiting applied to the heaviest users",
        "System recovered automatically in 0.8 seconds.",
        "Impact: 5 refused (503), 10 queued, 2 rate-limited (429), 1 timed out. Critical requests were all served.",
        "Peak usage: 95/100 connections (95%)",
        "Recovery time: 0.8 seconds",
        "Status: RESOLVED",
    ];
    for line in expected_lines {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.starts_with(expected_lines[0]));
}

#[test]
fn watchdog_actions_and_their_routes_are_part_of_the_incident() {
    use crate::events::{ActionOutcome, BackendInfo};
    let mut t = IncidentTracker::default();
    let at = |ms: u64| t0() + Duration::from_millis(ms);
    let backend = BackendInfo {
        pid: 42,
        role: Some("app".into()),
        application: Some("poolguard:non_critical:7".into()),
        class: Some(Criticality::NonCritical),
        route: Some("/api/reports/activity".into()),
        other_instance: None,
        fingerprint: "SELECT pg_sleep(?)".into(),
    };
    let events = [
        Event {
            at: at(0),
            kind: EventKind::ServerPressure {
                used: 95,
                usable: 97,
                utilization: 0.98,
            },
        },
        Event {
            at: at(100),
            kind: EventKind::QueryCancelled {
                backend: backend.clone(),
                running: Duration::from_secs(31),
                outcome: ActionOutcome::Done,
            },
        },
        Event {
            at: at(200),
            kind: EventKind::BackendTerminated {
                backend,
                running: Duration::from_secs(36),
                outcome: ActionOutcome::Done,
            },
        },
    ];
    for e in &events {
        assert!(t.observe(e).is_none());
    }
    let active = t.active().expect("a Warning event opens an incident");
    assert_eq!(
        active.actions,
        vec![
            Action::ServerPressure,
            Action::SlowQueriesCancelled,
            Action::BackendsTerminated
        ]
    );
    assert_eq!(active.routes, vec!["/api/reports/activity".to_string()]);
}

fn quiet_tracker() -> IncidentTracker {
    IncidentTracker::default().quiet_period(Duration::from_secs(10))
}

#[test]
fn a_flap_inside_the_quiet_period_continues_the_same_incident() {
    let mut t = quiet_tracker();
    let events = [
        at(0, level(Level::Normal, Level::Warning, 0.85)),
        at(1_000, level(Level::Warning, Level::Normal, 0.70)),
        at(3_000, level(Level::Normal, Level::Warning, 0.86)),
        at(5_000, level(Level::Warning, Level::Normal, 0.60)),
        at(
            5_010,
            EventKind::Recovered {
                after: Duration::from_millis(2_000),
                peak_utilization: 0.86,
            },
        ),
    ];
    for e in &events {
        assert!(t.observe(e).is_none(), "closed too early at {:?}", e.kind);
    }
    // Normal since 5 s: not closed 9.9 s later, closed at 10 s, as of the return to Normal.
    assert!(t
        .close_if_quiet(t0() + Duration::from_millis(14_900))
        .is_none());
    let i = t
        .close_if_quiet(t0() + Duration::from_millis(15_000))
        .expect("quiet for 10 s");
    assert_eq!(i.id, 1);
    assert_eq!(i.closed_at, Some(t0() + Duration::from_secs(5)));
    assert_eq!(i.recovery_time, Some(Duration::from_secs(5)));
    let changes = i
        .timeline
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LevelChanged { .. }))
        .count();
    assert_eq!(changes, 4, "both flaps are in the one incident");
    assert!(t.active().is_none());
    assert!(t.close_if_quiet(t0() + Duration::from_secs(60)).is_none());
}

#[test]
fn an_escalation_after_the_quiet_period_is_a_new_incident() {
    let mut t = quiet_tracker();
    t.observe(&at(0, level(Level::Normal, Level::Warning, 0.85)));
    t.observe(&at(1_000, level(Level::Warning, Level::Normal, 0.70)));
    // The next escalation comes 12 s later, before any tick: the first incident closes then.
    let first = t
        .observe(&at(13_000, level(Level::Normal, Level::Warning, 0.9)))
        .expect("the quiet period had passed");
    assert_eq!(first.id, 1);
    assert_eq!(first.closed_at, Some(t0() + Duration::from_secs(1)));
    assert_eq!(t.active().map(|i| i.id), Some(2));
}
