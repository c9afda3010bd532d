//! What a scenario run measured, and the outcome comparison table.

use crate::app::GuardMode;
use crate::load::{percentile, Class, Outcome, Requests, Sample};
use crate::scenarios::baseline_p99;
use std::time::Duration;

/// The figures of one scenario in one mode.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub name: String,
    pub mode: GuardMode,
    pub critical_total: usize,
    pub critical_ok: usize,
    pub critical_p99: Option<Duration>,
    pub baseline_p99: Duration,
    /// 5xx answers and requests that got no answer in time, all classes.
    pub errors_seen: usize,
    /// 429/503 with `Retry-After`: refused, told when to come back.
    pub deferred: usize,
    /// Critical and standard requests that failed without a retry time (reports never served
    /// are counted apart, in `reports_lost`).
    pub lost: usize,
    /// The reports (non-critical requests) as their users saw them: served in the end or not.
    pub reports: Requests,
    /// Reports never served, other than runaway queries the guard stopped on purpose (504).
    pub reports_lost: usize,
    /// From the incident's start until critical requests were fast and successful again.
    pub recovered_after: Option<Duration>,
    /// From the incident's start until the guard's level was back to Normal.
    pub normal_after: Option<Duration>,
    /// Steps an operator would have to take (the app had not recovered by itself).
    pub manual_steps: u32,
    /// Scenario-specific findings, printed under the verdict.
    pub notes: Vec<String>,
    /// A scenario-specific expectation `full` missed.
    pub missed: Option<String>,
}

impl ScenarioResult {
    pub fn from_samples(
        name: &str,
        mode: GuardMode,
        samples: &[Sample],
        incident_at: Duration,
        healthy_at_end: bool,
        normal_after: Option<Duration>,
    ) -> Self {
        let critical: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.class == Class::Critical)
            .collect();
        let critical_ok = critical.iter().filter(|s| s.outcome == Outcome::Ok).count();
        let baseline = baseline_p99(samples, incident_at);
        let slow = (baseline * 3).max(Duration::from_millis(100));
        let last_bad = critical
            .iter()
            .filter(|s| s.sent >= incident_at && (s.outcome != Outcome::Ok || s.latency > slow))
            .map(|s| s.done())
            .max();
        let recovered_after = if healthy_at_end {
            Some(
                last_bad
                    .map(|t| t.saturating_sub(incident_at))
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        let is_error = |s: &&Sample| matches!(s.outcome, Outcome::Failed(_) | Outcome::TimedOut);
        let reports = Requests::of(samples, Class::NonCritical);
        // A report whose last attempt was stopped as a runaway query (504) was meant to be.
        let mut last_attempt: std::collections::HashMap<u64, &Sample> = Default::default();
        for s in samples.iter().filter(|s| s.class == Class::NonCritical) {
            let e = last_attempt.entry(s.request).or_insert(s);
            if s.attempt > e.attempt {
                *e = s;
            }
        }
        let stopped = last_attempt
            .values()
            .filter(|s| s.outcome == Outcome::Failed(504))
            .count();
        Self {
            name: name.to_string(),
            mode,
            critical_total: critical.len(),
            critical_ok,
            critical_p99: percentile(&critical, 99.0),
            baseline_p99: baseline,
            errors_seen: samples.iter().filter(is_error).count(),
            deferred: samples
                .iter()
                .filter(|s| s.outcome == Outcome::Deferred)
                .count(),
            lost: samples
                .iter()
                .filter(|s| s.class != Class::NonCritical)
                .filter(is_error)
                .count(),
            reports,
            reports_lost: reports.total.saturating_sub(reports.served + stopped),
            recovered_after,
            normal_after,
            manual_steps: if healthy_at_end { 0 } else { 1 },
            notes: Vec::new(),
            missed: None,
        }
    }

    pub fn critical_success(&self) -> f64 {
        if self.critical_total == 0 {
            return 0.0;
        }
        100.0 * self.critical_ok as f64 / self.critical_total as f64
    }

    /// What `full` must achieve; `None` when it did.
    pub fn missed_expectation(&self) -> Option<String> {
        if self.mode != GuardMode::Full {
            return None;
        }
        if let Some(why) = &self.missed {
            return Some(why.clone());
        }
        if self.critical_success() < 99.0 {
            return Some(format!(
                "critical success {:.1} % < 99 %",
                self.critical_success()
            ));
        }
        if self.lost > 0 {
            return Some(format!("{} critical/standard requests lost", self.lost));
        }
        if self.reports_lost > 0 {
            return Some(format!(
                "{} of {} reports never served",
                self.reports_lost, self.reports.total
            ));
        }
        match self.recovered_after {
            None => Some("did not recover by itself".into()),
            Some(d) if d > Duration::from_secs(6) => {
                Some(format!("recovered after {:.1} s > 6 s", d.as_secs_f64()))
            }
            _ => None,
        }
    }

    pub fn verdict(&self) -> String {
        let recovered = match self.recovered_after {
            Some(d) => format!("recovered in {:.1} s", d.as_secs_f64()),
            None => "NOT recovered".into(),
        };
        let status = match (self.mode, self.missed_expectation()) {
            (GuardMode::Full, None) => "PASS".to_string(),
            (GuardMode::Full, Some(why)) => format!("FAIL ({why})"),
            _ => "measured".to_string(),
        };
        let notes: String = self.notes.iter().map(|n| format!("\n    {n}")).collect();
        format!(
            "verdict {} [{}]: critical {:.1} % ({}/{}), {} errors seen, {} lost, reports served {}/{}, {} deferred with Retry-After, {} -> {}{}",
            self.name,
            self.mode,
            self.critical_success(),
            self.critical_ok,
            self.critical_total,
            self.errors_seen,
            self.lost + self.reports_lost,
            self.reports.served,
            self.reports.total,
            self.deferred,
            recovered,
            status,
            notes
        )
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "not by itself".into())
}

/// The seed's outcome comparison, from measured figures.
pub fn comparison_table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | guard | critical success | critical p99 (baseline) | errors seen by users | requests lost | reports served | deferred (Retry-After) | time to recover | back to Normal | manual steps |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {:.1} % | {} ({}) | {} | {} | {}/{} | {} | {} | {} | {} |\n",
            r.name,
            r.mode,
            r.critical_success(),
            ms(r.critical_p99),
            ms(Some(r.baseline_p99)),
            r.errors_seen,
            r.lost + r.reports_lost,
            r.reports.served,
            r.reports.total,
            r.deferred,
            secs(r.recovered_after),
            r.normal_after
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            r.manual_steps,
        ));
    }
    out
}
