//! The local rule-based summary: the seed's `[AUTO-RESOLVED]` alert text, built from an
//! incident's own figures, with no LLM involved.

use super::model::Incident;
use super::timefmt::clock_time;
use crate::events::Severity;
use std::fmt::Write as _;

/// The alert subject: `[AUTO-RESOLVED] Connection Pool Warning - System Self-Healed`, or
/// `[FAILED] ...` / `[ACTIVE] ...` when it did not (yet) heal.
pub fn subject(incident: &Incident) -> String {
    let title = incident.title();
    if incident.is_active() {
        format!("[ACTIVE] {title} - Self-Healing In Progress")
    } else if incident.auto_recovered() {
        format!("[AUTO-RESOLVED] {title} - System Self-Healed")
    } else {
        format!("[FAILED] {title}")
    }
}

/// One line on what happened to requests, or "No user impact recorded."
pub fn impact_line(incident: &Incident) -> String {
    let i = &incident.impact;
    if i.is_none() {
        return "No user impact recorded.".into();
    }
    let mut parts = Vec::new();
    for (n, what) in [
        (i.refused(), "refused (503)"),
        (i.queued(), "queued"),
        (i.rate_limited(), "rate-limited (429)"),
        (i.timed_out(), "timed out"),
        (i.failed, "self-heal failures"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut line = format!("Impact: {}.", parts.join(", "));
    if i.critical_failed() == 0 {
        line.push_str(" Critical requests were all served.");
    } else {
        let _ = write!(line, " {} critical requests failed.", i.critical_failed());
    }
    line
}

/// The full local summary: subject line, blank line, body.
pub fn local_summary(incident: &Incident) -> String {
    let mut s = subject(incident);
    s.push_str("\n\n");
    let pct = (incident.peak_utilization * 100.0).round();
    let at = clock_time(incident.opened_at);
    if incident.peak_severity == Severity::Failure && incident.max_size == 0 {
        let _ = writeln!(s, "A self-healing action failed at {at} UTC.");
    } else {
        let _ = writeln!(
            s,
            "The system detected high connection pool usage ({pct}%) at {at} UTC."
        );
    }
    if !incident.actions.is_empty() {
        s.push_str("\nSelf-healing actions taken:\n");
        for a in &incident.actions {
            let _ = writeln!(s, "- {}", a.describe());
        }
    }
    s.push('\n');
    let recovery = incident
        .recovery_time
        .map(|d| format!("{:.1} seconds", d.as_secs_f64()));
    match (&recovery, incident.auto_recovered()) {
        (Some(r), true) => {
            let _ = writeln!(s, "System recovered automatically in {r}.");
        }
        _ if incident.is_active() => s.push_str("Self-healing is still in progress.\n"),
        _ => s.push_str("Self-healing did not fully succeed: manual intervention required.\n"),
    }
    let _ = writeln!(s, "{}", impact_line(incident));
    s.push('\n');
    if incident.max_size > 0 {
        let _ = writeln!(
            s,
            "Peak usage: {}/{} connections ({pct}%)",
            incident.peak_in_use, incident.max_size
        );
    }
    if let Some(r) = recovery {
        let _ = writeln!(s, "Recovery time: {r}");
    }
    let status = if incident.is_active() {
        "ACTIVE"
    } else if incident.auto_recovered() {
        "RESOLVED"
    } else {
        "NEEDS ATTENTION"
    };
    let _ = write!(s, "Status: {status}");
    s
}
