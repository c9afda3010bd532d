//! A spike of blocked transitions: many refused attempts in a short window usually mean a
//! code path targets the wrong rows (the seed's spam capture scanning PROMOTED messages).

use crate::events::{Event, EventBus, EventKind, Severity};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The [`EventKind::Custom`] name of a spike event.
pub const SPIKE_EVENT: &str = "transition_spike";

/// Raises a Warning event when `threshold` blocked attempts happen within `window`. One
/// event per spike: after raising, it stays quiet for one `window`. Time is passed in, so
/// tests drive it with made-up instants.
#[derive(Debug, Clone)]
pub struct BlockedSpike {
    operation: String,
    threshold: usize,
    window: Duration,
    /// The most recent blocked attempts, at most `threshold`.
    hits: VecDeque<Instant>,
    last_alert: Option<Instant>,
}

impl BlockedSpike {
    /// A detector for `operation` (named in the event); `threshold` is at least 1.
    pub fn new(operation: impl Into<String>, threshold: usize, window: Duration) -> Self {
        let threshold = threshold.max(1);
        Self {
            operation: operation.into(),
            threshold,
            window,
            hits: VecDeque::with_capacity(threshold),
            last_alert: None,
        }
    }

    /// Notes a blocked `from -> to` attempt at `now`; returns the Warning event if this
    /// attempt completes a spike.
    pub fn record_at(&mut self, now: Instant, from: &str, to: &str) -> Option<Event> {
        while let Some(&oldest) = self.hits.front() {
            if now.saturating_duration_since(oldest) >= self.window
                || self.hits.len() >= self.threshold
            {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        self.hits.push_back(now);
        let quiet = self
            .last_alert
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window);
        if self.hits.len() < self.threshold || !quiet {
            return None;
        }
        self.last_alert = Some(now);
        Some(Event::now(EventKind::Custom {
            name: SPIKE_EVENT.to_string(),
            severity: Severity::Warning,
            message: format!(
                "{} invalid status transitions blocked within {:.1} s in {} (latest: {} -> {}); this may indicate a code bug",
                self.threshold,
                self.window.as_secs_f64(),
                self.operation,
                from.escape_debug(),
                to.escape_debug(),
            ),
        }))
    }

    /// Notes a blocked attempt now and publishes the spike event, if any, on `bus`.
    pub fn observe(&mut self, from: &str, to: &str, bus: &EventBus) -> bool {
        match self.record_at(Instant::now(), from, to) {
            Some(event) => {
                bus.publish(event);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn many_blocked_in_a_window_raise_one_warning() {
        let t0 = Instant::now();
        let mut d = BlockedSpike::new("spam-capture", 5, 10 * S);
        for i in 0..4 {
            assert!(d.record_at(t0 + i * S, "PROMOTED", "SPAM_REVIEW").is_none());
        }
        let e = d.record_at(t0 + 4 * S, "PROMOTED", "SPAM_REVIEW").unwrap();
        assert_eq!(e.severity(), Severity::Warning);
        let m = e.message();
        assert!(m.contains("5 invalid status transitions blocked within 10.0 s in spam-capture"));
        assert!(m.contains("PROMOTED -> SPAM_REVIEW"), "{m}");
        assert!(m.contains("may indicate a code bug"), "{m}");
        // Still spiking, but quiet for one window after the alert.
        for i in 5..14 {
            assert!(d.record_at(t0 + i * S, "PROMOTED", "SPAM_REVIEW").is_none());
        }
        assert!(d
            .record_at(t0 + 14 * S, "PROMOTED", "SPAM_REVIEW")
            .is_some());
    }

    #[test]
    fn spread_out_attempts_never_alert() {
        let t0 = Instant::now();
        let mut d = BlockedSpike::new("scan", 3, 10 * S);
        for i in 0..100 {
            assert!(d.record_at(t0 + i * 5 * S, "A", "B").is_none(), "{i}");
        }
        assert!(d.hits.len() <= 3);
    }

    #[test]
    fn observe_publishes_on_the_bus() {
        let bus = EventBus::new(4);
        let mut sub = bus.subscribe();
        let mut d = BlockedSpike::new("scan", 1, 60 * S);
        assert!(d.observe("A", "B", &bus));
        assert!(!d.observe("A", "B", &bus));
        let e = sub.try_recv().unwrap();
        assert!(matches!(e.kind, EventKind::Custom { ref name, .. } if name == SPIKE_EVENT));
    }
}
