//! The 24-hour prevention counters: what the guard prevented, in hourly buckets so old hours
//! roll off. Pure counting; time is passed in.

use crate::events::{Event, EventKind, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hours kept.
const HOURS: u64 = 24;

/// What the guard prevented or absorbed over a window (the last 24 hours on the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PreventionStats {
    /// Runaway work stopped before it held a connection for long: statements stopped by
    /// `statement_timeout`, queries of dropped requests cancelled on the server, and events
    /// whose kind names a cancel, timeout or batching.
    pub timeouts_prevented: u64,
    /// Invalid status transitions blocked by the transition policy.
    pub transitions_blocked: u64,
    /// Returns to Normal after an episode of pressure.
    pub pool_recoveries: u64,
    /// Acquisitions that waited in the priority queue for a connection instead of failing
    /// (from the request summaries; some of them may still have timed out).
    pub auto_retries: u64,
    /// Requests answered 503: shed at once (their deadline could not be met), refused for a
    /// full queue, or left without a connection by the pool.
    pub requests_shed: u64,
    /// Requests answered 429 by a per-user limit.
    pub rate_limited: u64,
    /// Events of warning severity or above.
    pub warnings: u64,
    /// Events of failure severity: a self-heal action that did not work.
    pub failures: u64,
    /// Every event counted, by its kind name (`level_changed`, `custom:<name>`, ...).
    pub by_kind: BTreeMap<String, u64>,
}

impl PreventionStats {
    /// Adds one event's contribution.
    pub fn record(&mut self, event: &Event) {
        let name = event.kind.tag();
        match &event.kind {
            EventKind::StatementTimedOut { .. } | EventKind::QueryAbandoned { .. } => {
                self.timeouts_prevented += 1;
            }
            EventKind::TransitionsBlocked { blocked, .. } => {
                self.transitions_blocked += blocked.iter().map(|b| b.count).sum::<u64>();
            }
            EventKind::Recovered { .. } => self.pool_recoveries += 1,
            EventKind::RequestsSummary { counts, .. } => {
                let sum = |a: &[u64; 3]| a.iter().sum::<u64>();
                self.auto_retries += sum(&counts.queued);
                self.requests_shed += sum(&counts.refused());
                self.rate_limited += sum(&counts.rate_limited);
            }
            // Kinds added elsewhere (and custom events) are recognised by name only.
            _ => {
                let n = name.to_ascii_lowercase();
                if ["cancel", "timeout", "timed_out", "batch"]
                    .iter()
                    .any(|w| n.contains(w))
                {
                    self.timeouts_prevented += 1;
                }
            }
        }
        let severity = event.severity();
        if severity >= Severity::Warning {
            self.warnings += 1;
        }
        if severity == Severity::Failure {
            self.failures += 1;
        }
        *self.by_kind.entry(name).or_default() += 1;
    }

    /// Adds another window's counts to these.
    pub fn add(&mut self, other: &PreventionStats) {
        self.timeouts_prevented += other.timeouts_prevented;
        self.transitions_blocked += other.transitions_blocked;
        self.pool_recoveries += other.pool_recoveries;
        self.auto_retries += other.auto_retries;
        self.requests_shed += other.requests_shed;
        self.rate_limited += other.rate_limited;
        self.warnings += other.warnings;
        self.failures += other.failures;
        for (k, v) in &other.by_kind {
            *self.by_kind.entry(k.clone()).or_default() += v;
        }
    }
}

fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 3600
}

/// [`PreventionStats`] in 24 hourly buckets. A bucket is reused (and cleared) when its slot
/// comes round again, so counts older than 24 hours drop out.
#[derive(Debug, Clone, Default)]
pub struct HourlyCounters {
    /// Slot `hour % 24`: the hour it holds and its counts.
    buckets: [Option<(u64, PreventionStats)>; HOURS as usize],
}

impl HourlyCounters {
    /// Counts `event` in the hour of its own timestamp. `now` decides what is too old (more
    /// than 24 hours back: ignored) or in the future (clock skew: counted in the current hour).
    pub fn record(&mut self, event: &Event, now: SystemTime) {
        let current = hour_of(now);
        let hour = hour_of(event.at).min(current);
        if hour + HOURS <= current {
            return;
        }
        let slot = &mut self.buckets[(hour % HOURS) as usize];
        match slot {
            Some((h, stats)) if *h == hour => stats.record(event),
            Some((h, _)) if *h > hour => {} // the slot already holds a newer hour
            _ => {
                let mut stats = PreventionStats::default();
                stats.record(event);
                *slot = Some((hour, stats));
            }
        }
    }

    /// The sum over the 24 hours ending with the hour of `now`.
    pub fn totals(&self, now: SystemTime) -> PreventionStats {
        let current = hour_of(now);
        let mut total = PreventionStats::default();
        for (hour, stats) in self.buckets.iter().flatten() {
            if *hour <= current && hour + HOURS > current {
                total.add(stats);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transition::BlockedPair;
    use std::time::Duration;

    fn at(hours: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000) + Duration::from_secs_f64(hours * 3600.0)
    }

    fn event(hours: f64, kind: EventKind) -> Event {
        Event {
            at: at(hours),
            kind,
        }
    }

    fn recovered(hours: f64) -> Event {
        event(
            hours,
            EventKind::Recovered {
                after: Duration::from_secs(1),
                peak_utilization: 0.9,
            },
        )
    }

    #[test]
    fn counts_each_kind_where_it_belongs() {
        let mut s = PreventionStats::default();
        s.record(&recovered(0.0));
        s.record(&event(
            0.0,
            EventKind::TransitionsBlocked {
                operation: "spam-capture".into(),
                valid: 10,
                blocked: vec![BlockedPair {
                    from: "sent".into(),
                    to: "draft".into(),
                    count: 5,
                }],
                not_found: 0,
            },
        ));
        s.record(&event(
            0.0,
            EventKind::StatementTimedOut {
                class: crate::criticality::Criticality::Standard,
                route: None,
            },
        ));
        s.record(&event(
            0.0,
            EventKind::Custom {
                name: "batch_split".into(),
                severity: Severity::Failure,
                message: String::new(),
            },
        ));
        assert_eq!(s.pool_recoveries, 1);
        assert_eq!(s.transitions_blocked, 5);
        assert_eq!(s.timeouts_prevented, 2);
        assert_eq!((s.warnings, s.failures), (2, 1));
        assert_eq!(s.by_kind["custom:batch_split"], 1);
    }

    #[test]
    fn old_hours_roll_off() {
        let mut c = HourlyCounters::default();
        c.record(&recovered(0.1), at(0.2));
        c.record(&recovered(5.5), at(5.6));
        c.record(&recovered(5.7), at(5.8));
        assert_eq!(c.totals(at(6.0)).pool_recoveries, 3);
        // 23 hours after hour 0 it still counts; 24 hours after, it is gone.
        assert_eq!(c.totals(at(23.9)).pool_recoveries, 3);
        assert_eq!(c.totals(at(24.0)).pool_recoveries, 2);
        // Hour 24 reuses hour 0's slot and starts from zero.
        c.record(&recovered(24.5), at(24.5));
        assert_eq!(c.totals(at(24.5)).pool_recoveries, 3);
        assert_eq!(c.totals(at(30.0)).pool_recoveries, 1);
        // An event older than 24 hours is ignored; a future one counts now.
        c.record(&recovered(1.0), at(30.0));
        c.record(&recovered(40.0), at(30.0));
        assert_eq!(c.totals(at(30.0)).pool_recoveries, 2);
    }
}
