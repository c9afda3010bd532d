//! The `[SELF-HEAL]` text of each event.

use super::{ActionOutcome, BackendInfo, Event, EventKind, NonCriticalGate, ResizeReason};
use crate::criticality::Criticality;
use crate::monitor::Level;
use std::time::Duration;

impl Event {
    /// The `[SELF-HEAL]` log line for this event (without the prefix).
    pub fn message(&self) -> String {
        match &self.kind {
            EventKind::LevelChanged {
                from,
                to,
                utilization,
                in_use,
                max_size,
                waiting,
            } => {
                let pct = (utilization * 100.0).round();
                let pool_share = *in_use as f64 / (*max_size).max(1) as f64;
                // The level follows the higher of pool and server-wide use: say which it is.
                let (at, of) = if (utilization - pool_share).abs() > 0.005 {
                    (
                        format!("Server connections at {pct}%"),
                        format!("pool {in_use}/{max_size}"),
                    )
                } else {
                    (
                        format!("Connection pool at {pct}%"),
                        format!("{in_use}/{max_size}"),
                    )
                };
                match (from, to) {
                    (_, Level::Critical) => format!(
                        "CRITICAL: {at} ({of}, {waiting} waiting) - Emergency measures: non-critical work deferred, standard queued, critical served first"
                    ),
                    (Level::Normal, Level::Warning) => format!(
                        "{at} ({of}, {waiting} waiting) - Warning threshold: non-critical work deferred, per-user limits tightened"
                    ),
                    (Level::Critical, Level::Warning) => {
                        format!("Recovered to {at} ({of}) - queued work draining")
                    }
                    (_, Level::Normal) => format!("{at} ({of}) - Normal operations resumed"),
                    _ => format!("Level {from} -> {to}: {at} ({of})"),
                }
            }
            EventKind::NonCriticalGateChanged { state } => match state {
                NonCriticalGate::Deferred => "Non-critical work deferred: it waits for its slots instead of going straight to the pool".to_string(),
                NonCriticalGate::Ramping => {
                    "Non-critical work coming back on a ramp"
                        .to_string()
                }
                NonCriticalGate::Direct => {
                    "Non-critical work fully served again".to_string()
                }
            },
            EventKind::RequestsSummary { window, counts } => {
                let sum = |a: &[u64; 3]| a.iter().sum::<u64>();
                format!(
                    "Last {} ms: {} served, {} refused (503), {} deferred, {} rate-limited, {} timed out (critical: {} served, {} refused)",
                    window.as_millis(),
                    sum(&counts.served),
                    sum(&counts.refused()),
                    sum(&counts.queued),
                    sum(&counts.rate_limited),
                    sum(&counts.timed_out),
                    counts.served[Criticality::Critical.index()],
                    counts.refused()[Criticality::Critical.index()],
                )
            }
            EventKind::StatementTimedOut { class, route } => format!(
                "Statement timeout stopped a {class} query{}",
                route_suffix(route)
            ),
            EventKind::QueryAbandoned {
                class,
                route,
                cancel_sent,
            } => format!(
                "Request dropped mid-query ({class}{}): {}; connection checked before reuse",
                route_suffix(route),
                if *cancel_sent {
                    "server-side cancel sent"
                } else {
                    "cancel could not be sent"
                }
            ),
            EventKind::Recovered {
                after,
                peak_utilization,
            } => format!(
                "System fully recovered after {:.1} s (peak {}%)",
                after.as_secs_f64(),
                (peak_utilization * 100.0).round()
            ),
            EventKind::TransitionsBlocked {
                operation,
                valid,
                blocked,
                not_found,
            } => super::transitions::blocked_message(operation, *valid, blocked, *not_found),
            EventKind::QueryCancelled {
                backend,
                running,
                outcome,
            } => action_message(
                "cancel",
                "Cancelled",
                "query running",
                *running,
                backend,
                *outcome,
            ),
            EventKind::BackendTerminated {
                backend,
                running,
                outcome,
            } => action_message(
                "terminate",
                "Terminated",
                "backend ignoring cancel, query running",
                *running,
                backend,
                *outcome,
            ),
            EventKind::IdleInTransactionReaped {
                backend,
                idle,
                outcome,
            } => action_message(
                "terminate",
                "Terminated",
                "session idle in transaction for",
                *idle,
                backend,
                *outcome,
            ),
            EventKind::ConnectionLeak {
                class,
                route,
                user,
                held,
            } => format!(
                "Possible connection leak: {class} connection held {:.1} s{}{}",
                held.as_secs_f64(),
                route_suffix(route),
                user.as_deref()
                    .map(|u| format!(" for user {u}"))
                    .unwrap_or_default()
            ),
            EventKind::PoolResized { from, to, reason } => match reason {
                ResizeReason::Waiting => {
                    format!("Pool grown {from} -> {to}: acquisitions kept waiting")
                }
                ResizeReason::Recovered => {
                    format!("Pool shrunk {from} -> {to}: pressure is over")
                }
                ResizeReason::ServerFull => {
                    format!("Pool shrunk {from} -> {to}: the server is running out of connections")
                }
                ResizeReason::BudgetShare => {
                    format!("Pool resized {from} -> {to}: this replica's share of the connection budget")
                }
            },
            EventKind::ServerPressure {
                used,
                usable,
                utilization,
            } => format!(
                "Server connections at {}% ({used}/{usable}) across every client",
                (utilization * 100.0).round()
            ),
            EventKind::Custom { name, message, .. } => format!("{name}: {message}"),
            EventKind::BatchProgress {
                operation,
                chunk,
                chunk_size,
                processed,
                total,
                done,
                paused,
            } => super::batch::batch_message(
                operation,
                *chunk,
                *chunk_size,
                *processed,
                *total,
                *done,
                *paused,
            ),
        }
    }
}

/// `[SELF-HEAL] Cancelled query running 31.2 s (pid 1234, app poolguard): SELECT pg_sleep(?)`
fn action_message(
    verb: &str,
    done: &str,
    what: &str,
    took: Duration,
    backend: &BackendInfo,
    outcome: ActionOutcome,
) -> String {
    let lead = match outcome {
        ActionOutcome::Done => done.to_string(),
        ActionOutcome::DryRun => format!("Dry run: would {verb}"),
        ActionOutcome::Gone => format!("Did not need to {verb}"),
        ActionOutcome::Failed => format!("Could not {verb}"),
    };
    let mut who = format!("pid {}", backend.pid);
    if let Some(app) = &backend.application {
        who.push_str(&format!(", app {app}"));
    }
    if let Some(instance) = &backend.other_instance {
        who.push_str(&format!(", another instance: {instance}"));
    }
    if let Some(route) = &backend.route {
        who.push_str(&format!(", route {route}"));
    }
    format!(
        "{lead} {what} {:.1} s ({who}): {}",
        took.as_secs_f64(),
        backend.fingerprint
    )
}

fn route_suffix(route: &Option<String>) -> String {
    route
        .as_deref()
        .map(|r| format!(" on {r}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::level;
    use crate::events::Severity;

    #[test]
    fn server_driven_levels_say_so() {
        let e = Event::now(EventKind::LevelChanged {
            from: Level::Normal,
            to: Level::Warning,
            utilization: 0.95,
            in_use: 2,
            max_size: 20,
            waiting: 0,
        });
        let m = e.message();
        assert!(
            m.starts_with("Server connections at 95% (pool 2/20, 0 waiting)"),
            "{m}"
        );
    }

    #[test]
    fn critical_message_reads_like_the_seed() {
        let m = level(Level::Warning, Level::Critical).message();
        assert!(
            m.starts_with("CRITICAL: Connection pool at 92% (92/100"),
            "{m}"
        );
    }

    #[test]
    fn a_cancel_reads_like_a_self_heal_line() {
        let e = Event::now(EventKind::QueryCancelled {
            backend: BackendInfo {
                pid: 1234,
                role: Some("app".into()),
                application: Some("poolguard".into()),
                class: None,
                route: None,
                other_instance: None,
                fingerprint: "SELECT pg_sleep(?)".into(),
            },
            running: Duration::from_millis(31_240),
            outcome: ActionOutcome::Done,
        });
        assert_eq!(
            e.message(),
            "Cancelled query running 31.2 s (pid 1234, app poolguard): SELECT pg_sleep(?)"
        );
        assert_eq!(e.severity(), Severity::Warning);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "query_cancelled");
        assert_eq!(json["outcome"], "done");
        assert_eq!(json["backend"]["pid"], 1234);
    }
}
