//! The batch report: what a run of guarded updates did, summarised as one self-heal event;
//! and the per-attempt log line and metrics of the guarded update.

use super::ident::QualifiedName;
use super::policy::{StateId, TransitionPolicy};
use super::update::TransitionOutcome;
use crate::events::{BlockedPair, Event, EventBus, EventKind};
use crate::metrics::{TRANSITIONS_APPLIED, TRANSITIONS_BLOCKED};
use metrics::SharedString;
use std::collections::BTreeMap;
use std::fmt;

/// How a row's status is shown when it is SQL `NULL`.
const NULL_STATUS: &str = "(null)";
/// The metric label for a current status the policy does not know.
const UNKNOWN_LABEL: &str = "(unknown)";

/// Outcomes accumulated over a run (a scan, a batch job). Merge the reports of parallel
/// workers with [`merge`](TransitionReport::merge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionReport {
    valid: u64,
    not_found: u64,
    blocked: BTreeMap<(String, String), u64>,
}

impl TransitionReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one outcome.
    pub fn record(&mut self, outcome: &TransitionOutcome) {
        match outcome {
            TransitionOutcome::Applied { .. } => self.valid += 1,
            TransitionOutcome::Blocked { current, to } => {
                self.record_blocked(current.as_deref().unwrap_or(NULL_STATUS), to)
            }
            TransitionOutcome::NotFound => self.not_found += 1,
        }
    }

    /// Counts one blocked attempt (for transitions checked outside the guarded update).
    pub fn record_blocked(&mut self, from: &str, to: &str) {
        *self
            .blocked
            .entry((from.to_string(), to.to_string()))
            .or_default() += 1;
    }

    /// Adds another report's counts to this one.
    pub fn merge(&mut self, other: &TransitionReport) {
        self.valid += other.valid;
        self.not_found += other.not_found;
        for (pair, n) in &other.blocked {
            *self.blocked.entry(pair.clone()).or_default() += n;
        }
    }

    /// Transitions applied.
    pub fn valid(&self) -> u64 {
        self.valid
    }

    /// Transitions blocked, all pairs together.
    pub fn blocked(&self) -> u64 {
        self.blocked.values().sum()
    }

    /// Attempts whose row did not exist.
    pub fn not_found(&self) -> u64 {
        self.not_found
    }

    /// Every attempt counted: valid + blocked + not found.
    pub fn attempts(&self) -> u64 {
        self.valid + self.blocked() + self.not_found
    }

    /// Blocked attempts per pair, most frequent first (ties by name).
    pub fn blocked_pairs(&self) -> Vec<BlockedPair> {
        let mut pairs: Vec<BlockedPair> = self
            .blocked
            .iter()
            .map(|((from, to), &count)| BlockedPair {
                from: from.clone(),
                to: to.clone(),
                count,
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.count));
        pairs
    }

    /// Publishes the run's summary as a [`EventKind::TransitionsBlocked`] self-heal event
    /// (`[SELF-HEAL] Prevented N invalid status transitions in OPERATION: ...`) if anything was
    /// blocked, and returns it. A clean run publishes nothing.
    pub fn finish(&self, operation: &str, bus: &EventBus) -> Option<Event> {
        if self.blocked.is_empty() {
            return None;
        }
        let event = Event::now(EventKind::TransitionsBlocked {
            operation: operation.to_string(),
            valid: self.valid,
            blocked: self.blocked_pairs(),
            not_found: self.not_found,
        });
        bus.publish(event.clone());
        Some(event)
    }
}

/// `150 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)`, with `, 2 not found` when any.
impl fmt::Display for TransitionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} valid, {} blocked", self.valid, self.blocked())?;
        for (i, pair) in self.blocked_pairs().iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{pair}")?;
        }
        if self.not_found > 0 {
            write!(f, ", {} not found", self.not_found)?;
        }
        Ok(())
    }
}

/// A label from the policy's finite state set, never from the database or the caller.
fn label(policy: &TransitionPolicy, state: Option<StateId>) -> SharedString {
    match state {
        Some(id) => SharedString::from(policy.shared_name(id).clone()),
        None => SharedString::const_str(UNKNOWN_LABEL),
    }
}

/// Counts an applied transition.
pub(crate) fn note_applied(policy: &TransitionPolicy, from: &str, to: StateId) {
    metrics::counter!(
        TRANSITIONS_APPLIED,
        "from" => label(policy, policy.state(from)),
        "to" => label(policy, Some(to))
    )
    .increment(1);
}

/// Logs and counts a blocked transition at the moment it happens.
pub(crate) fn note_blocked(
    policy: &TransitionPolicy,
    current: Option<&str>,
    to: StateId,
    table: &QualifiedName,
) {
    let from = current.and_then(|c| policy.state(c));
    metrics::counter!(
        TRANSITIONS_BLOCKED,
        "from" => label(policy, from),
        "to" => label(policy, Some(to))
    )
    .increment(1);
    let shown = current.unwrap_or(NULL_STATUS);
    let allowed = current.map(|c| policy.allowed_from(c)).unwrap_or_default();
    tracing::warn!(
        target: "poolguard::self_heal",
        table = %table,
        allowed = ?allowed,
        "[SELF-HEAL] Blocked invalid transition: {} -> {}",
        shown.escape_debug(),
        policy.name(to),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    fn seed_run() -> TransitionReport {
        let mut r = TransitionReport::new();
        for _ in 0..150 {
            r.record(&TransitionOutcome::Applied {
                from: "READY".into(),
                to: "SPAM_REVIEW".into(),
            });
        }
        for _ in 0..5 {
            r.record(&TransitionOutcome::Blocked {
                current: Some("PROMOTED".into()),
                to: "SPAM_REVIEW".into(),
            });
        }
        r
    }

    #[test]
    fn display_reads_like_the_scan_result() {
        let mut r = seed_run();
        assert_eq!(
            r.to_string(),
            "150 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)"
        );
        r.record(&TransitionOutcome::NotFound);
        r.record_blocked("COMPLETED", "SPAM_REVIEW");
        assert_eq!(
            r.to_string(),
            "150 valid, 6 blocked: PROMOTED -> SPAM_REVIEW (5), COMPLETED -> SPAM_REVIEW (1), 1 not found"
        );
        assert_eq!(r.attempts(), 157);
        assert_eq!(TransitionReport::new().to_string(), "0 valid, 0 blocked");
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = seed_run();
        a.merge(&seed_run());
        assert_eq!((a.valid(), a.blocked(), a.not_found()), (300, 10, 0));
        assert_eq!(a.blocked_pairs()[0].count, 10);
    }

    #[test]
    fn finish_publishes_the_summary_only_when_something_was_blocked() {
        let bus = EventBus::new(8);
        let mut sub = bus.subscribe();
        assert!(TransitionReport::new()
            .finish("spam-capture", &bus)
            .is_none());
        let e = seed_run().finish("spam-capture", &bus).unwrap();
        assert_eq!(
            e.message(),
            "Prevented 5 invalid status transitions in spam-capture: PROMOTED -> SPAM_REVIEW (5); 150 valid"
        );
        assert_eq!(e.severity(), Severity::Info);
        assert_eq!(sub.try_recv(), Some(e.clone()));
        assert!(sub.try_recv().is_none());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "transitions_blocked");
        assert_eq!(json["blocked"][0]["from"], "PROMOTED");
    }

    #[test]
    fn null_status_is_shown_apart_from_states() {
        let mut r = TransitionReport::new();
        r.record(&TransitionOutcome::Blocked {
            current: None,
            to: "READY".into(),
        });
        assert_eq!(r.to_string(), "0 valid, 1 blocked: (null) -> READY (1)");
    }
}
