//! Prompt building (redaction, budget) and summaries from stored incidents.

use super::*;
use crate::criticality::Criticality;
use crate::events::{Event, EventKind, Severity};
use crate::incident::{Incident, IncidentStore, IncidentTracker};
use crate::monitor::Level;
use std::time::{Duration, SystemTime};

const SECRETS: &[&str] = &[
    "ops.lead@example.com",
    "sk-proj-AbCdEf1234567890XyZabc",
    "hunter2",
    "app_user",
    "Tr0ub4dorX",
    "'Ann Smith'",
    "4111111111111111",
    "gsk_4Fq9ZrT1mN8pL2xV7cB3kH6jD0sW",
];

fn ev(ms: u64, kind: EventKind) -> Event {
    Event {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms),
        kind,
    }
}

fn level(from: Level, to: Level, util: f64) -> EventKind {
    EventKind::LevelChanged {
        from,
        to,
        utilization: util,
        in_use: (util * 20.0) as usize,
        max_size: 20,
        waiting: 0,
    }
}

fn custom(name: &str, message: &str) -> EventKind {
    EventKind::Custom {
        name: name.into(),
        severity: Severity::Warning,
        message: message.into(),
    }
}

fn secret_incident() -> Incident {
    let mut t = IncidentTracker::default();
    let events = [
        ev(0, level(Level::Normal, Level::Warning, 0.9)),
        ev(10, custom("slow_query", "SELECT * FROM users WHERE name = 'Ann Smith' AND card = '4111111111111111' by ops.lead@example.com")),
        ev(20, custom("dsn", "postgres://app_user:hunter2@db.internal:5432/app password=Tr0ub4dorX")),
        ev(30, custom("gsk_4Fq9ZrT1mN8pL2xV7cB3kH6jD0sW", "Authorization: Bearer sk-proj-AbCdEf1234567890XyZabc")),
        ev(40, EventKind::StatementTimedOut { class: Criticality::Standard, route: Some("/users/ops.lead@example.com".into()) }),
        ev(50, level(Level::Warning, Level::Normal, 0.5)),
    ];
    events.iter().find_map(|e| t.observe(e)).expect("closes")
}

#[test]
fn a_prompt_from_an_incident_full_of_secrets_contains_none() {
    let incident = secret_incident();
    let p = build_prompt(&incident, &Redactor::default(), DEFAULT_CONTEXT_TOKENS);
    let all = p.to_text();
    for s in SECRETS {
        assert!(!all.contains(s), "`{s}` leaked into the prompt:\n{all}");
    }
    // The evidence is still there, only the sensitive parts are gone.
    assert!(
        p.user
            .contains("postgres://[REDACTED]@db.internal:5432/app"),
        "{}",
        p.user
    );
    assert!(
        p.user.contains("Peak pool usage: 90% (18/20 connections)"),
        "{}",
        p.user
    );
    assert!(p
        .user
        .contains("Runaway statements stopped by statement_timeout"));
}

#[test]
fn the_prompt_asks_the_four_questions_and_allows_insufficient_context() {
    for needle in [
        "## Root cause",
        "## Business impact",
        "## Remediation",
        "## Prevention",
        "insufficient context",
    ] {
        assert!(
            SYSTEM_PROMPT.contains(needle),
            "system prompt lacks {needle}"
        );
    }
    assert_eq!(PROMPT_VERSION, "incident_analysis.v1");
}

#[test]
fn a_long_timeline_is_cut_in_the_middle_to_fit_the_budget() {
    let mut t = IncidentTracker::default();
    t.observe(&ev(0, level(Level::Normal, Level::Warning, 0.9)));
    for i in 1..60u64 {
        t.observe(&ev(i, custom(&format!("step{i}"), &"x".repeat(120))));
    }
    let incident = t
        .observe(&ev(999, level(Level::Warning, Level::Normal, 0.5)))
        .unwrap();
    let full = build_prompt(&incident, &Redactor::default(), 100_000);
    assert_eq!(full.timeline_omitted, 0);
    let p = build_prompt(&incident, &Redactor::default(), 600);
    assert!(
        estimate_tokens(&p.user) <= 600,
        "{} tokens",
        estimate_tokens(&p.user)
    );
    assert!(p.timeline_omitted > 0);
    assert!(p
        .user
        .contains(&format!("... {} events omitted ...", p.timeline_omitted)));
    // Head and tail survive.
    assert!(p.user.contains("+0 ms [warning]"), "{}", p.user);
    assert!(p.user.contains("+999 ms [info]"), "{}", p.user);
    assert!(!p.user.contains("step30:"));
}

fn incident_at(
    title_level: Level,
    failure: bool,
    closed_secs_ago: u64,
    end: SystemTime,
) -> Incident {
    let mut t = IncidentTracker::default();
    let base = end - Duration::from_secs(closed_secs_ago) - Duration::from_secs(1);
    let e = |ms: u64, kind| Event {
        at: base + Duration::from_millis(ms),
        kind,
    };
    t.observe(&e(0, level(Level::Normal, Level::Warning, 0.86)));
    if title_level == Level::Critical {
        t.observe(&e(100, level(Level::Warning, Level::Critical, 0.95)));
    }
    if failure {
        t.observe(&e(
            200,
            EventKind::QueryAbandoned {
                class: Criticality::Standard,
                route: None,
                cancel_sent: false,
            },
        ));
    }
    t.observe(&e(1000, level(title_level, Level::Normal, 0.5)))
        .unwrap()
}

#[test]
fn daily_summary_counts_recoveries_trends_and_recommends() {
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_028_800); // 2025-11-25T00:00Z
    let store = IncidentStore::new(50);
    for i in [
        incident_at(Level::Critical, false, 3600, end),
        incident_at(Level::Critical, false, 7200, end),
        incident_at(Level::Warning, true, 600, end),
        incident_at(Level::Warning, false, 86_400 + 600, end), // previous day
        incident_at(Level::Warning, false, 86_400 + 900, end), // previous day
    ] {
        store.insert_closed(i);
    }
    let s = summarize(&store.all(), Period::Daily, end);
    assert_eq!(s.incidents, 3);
    assert_eq!(s.auto_recoveries, 2);
    assert_eq!(s.issues_prevented, 2);
    assert!((s.success_rate - 66.666).abs() < 0.01, "{}", s.success_rate);
    assert_eq!(s.total_actions, 2 + 2 + 1);
    assert_eq!(s.top_issues[0].title, "Connection Pool Critical");
    assert_eq!(
        (s.top_issues[0].count, s.top_issues[0].auto_recovered),
        (2, 2)
    );
    let crit = s
        .trends
        .iter()
        .find(|t| t.title == "Connection Pool Critical")
        .unwrap();
    assert_eq!(
        (crit.previous, crit.current, crit.direction),
        (0, 2, Direction::Increasing)
    );
    let warn = s
        .trends
        .iter()
        .find(|t| t.title == "Connection Pool Warning")
        .unwrap();
    assert_eq!(
        (warn.previous, warn.current, warn.direction),
        (2, 0, Direction::Decreasing)
    );
    assert!(s
        .recommendations
        .iter()
        .any(|r| r.contains("1 self-heal action(s) failed")));
    assert!(s
        .recommendations
        .iter()
        .any(|r| r.contains("Pool reached Critical 2 time(s)")));
    let text = s.to_text();
    assert!(
        text.starts_with("Subject: Self-Healing System Report - 2025-11-24 to 2025-11-25"),
        "{text}"
    );
    assert!(text.contains("- Success Rate: 66.7%"), "{text}");
    assert!(
        text.contains("1. Connection Pool Critical: 2 (2 auto-recovered)"),
        "{text}"
    );
    assert!(
        text.contains("- Connection Pool Warning: Decreasing (2 -> 0)"),
        "{text}"
    );
    let json = s.to_json();
    assert_eq!(json["period"], "daily");
    assert_eq!(json["auto_recoveries"], 2);
    assert_eq!(json["trends"].as_array().unwrap().len(), 3);
}

#[test]
fn a_quiet_week_has_full_success_and_says_so() {
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_028_800);
    let s = summarize(&[], Period::Weekly, end);
    assert_eq!((s.incidents, s.success_rate), (0, 100.0));
    assert_eq!(
        s.recommendations,
        vec!["No incidents: no action needed".to_string()]
    );
    assert!(s
        .to_text()
        .starts_with("Subject: Self-Healing System Weekly Report - 2025-11-18"));
}
