//! Daily and weekly summaries from stored incidents: actions, issues prevented,
//! auto-recoveries, success rate, top issues, trends against the previous period, and
//! recommendations. As text and as JSON.

use crate::incident::{timefmt, Incident};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// The period a summary covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The 24 hours before the end.
    Daily,
    /// The 7 days before the end.
    Weekly,
}

impl Period {
    /// The length of the period.
    pub fn length(self) -> Duration {
        match self {
            Period::Daily => Duration::from_secs(86_400),
            Period::Weekly => Duration::from_secs(7 * 86_400),
        }
    }
}

/// Which way a count moved against the previous period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More than before.
    Increasing,
    /// Fewer than before.
    Decreasing,
    /// The same.
    Stable,
}

/// One kind of incident and how often it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopIssue {
    /// The incident title, e.g. `Connection Pool Warning`.
    pub title: String,
    /// Incidents with this title in the period.
    pub count: u64,
    /// How many of them recovered on their own.
    pub auto_recovered: u64,
}

/// A title's count now against the previous period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trend {
    /// The incident title.
    pub title: String,
    /// Count in the previous period.
    pub previous: u64,
    /// Count in this period.
    pub current: u64,
    /// Which way it moved.
    pub direction: Direction,
}

/// A daily or weekly report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Daily or weekly.
    pub period: Period,
    /// Start of the period (inclusive).
    pub start: SystemTime,
    /// End of the period (exclusive).
    pub end: SystemTime,
    /// Incidents closed in the period.
    pub incidents: u64,
    /// Self-healing actions taken (distinct actions per incident, summed).
    pub total_actions: u64,
    /// Incidents handled without any critical request failing and without a failed action.
    pub issues_prevented: u64,
    /// Incidents that returned to Normal on their own.
    pub auto_recoveries: u64,
    /// Auto-recoveries over incidents, in percent (100 when there were none).
    pub success_rate: f64,
    /// Requests refused with 503, queued, rate-limited and timed out, summed.
    pub requests_affected: u64,
    /// Incident titles by count, most frequent first (at most five).
    pub top_issues: Vec<TopIssue>,
    /// Every title seen in either period, against the previous period.
    pub trends: Vec<Trend>,
    /// What to look at, derived from the figures.
    pub recommendations: Vec<String>,
}

fn in_window(i: &Incident, start: SystemTime, end: SystemTime) -> bool {
    let at = i.closed_at.unwrap_or(i.opened_at);
    at >= start && at < end
}

fn by_title<'a>(incidents: impl Iterator<Item = &'a Incident>) -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for i in incidents {
        let e = m.entry(i.title()).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(i.auto_recovered());
    }
    m
}

/// Summarises the closed incidents of the `period` ending at `end`, against the period before.
pub fn summarize(incidents: &[Incident], period: Period, end: SystemTime) -> Summary {
    let start = end
        .checked_sub(period.length())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let prev_start = start
        .checked_sub(period.length())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let closed = || incidents.iter().filter(|i| !i.is_active());
    let current: Vec<&Incident> = closed().filter(|i| in_window(i, start, end)).collect();
    let now_titles = by_title(current.iter().copied());
    let prev_titles = by_title(closed().filter(|i| in_window(i, prev_start, start)));
    let n = current.len() as u64;
    let auto = current.iter().filter(|i| i.auto_recovered()).count() as u64;
    let prevented = current
        .iter()
        .filter(|i| i.impact.critical_failed() == 0 && i.impact.failed == 0)
        .count() as u64;
    let affected = current
        .iter()
        .map(|i| {
            i.impact.refused() + i.impact.queued() + i.impact.rate_limited() + i.impact.timed_out()
        })
        .sum();
    let mut top_issues: Vec<TopIssue> = now_titles
        .iter()
        .map(|(t, (c, a))| TopIssue {
            title: t.clone(),
            count: *c,
            auto_recovered: *a,
        })
        .collect();
    top_issues.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.title.cmp(&b.title)));
    top_issues.truncate(5);
    let mut titles: Vec<&String> = now_titles.keys().chain(prev_titles.keys()).collect();
    titles.sort();
    titles.dedup();
    let trends = titles
        .into_iter()
        .map(|t| {
            let current = now_titles.get(t).map_or(0, |v| v.0);
            let previous = prev_titles.get(t).map_or(0, |v| v.0);
            let direction = match current.cmp(&previous) {
                std::cmp::Ordering::Greater => Direction::Increasing,
                std::cmp::Ordering::Less => Direction::Decreasing,
                std::cmp::Ordering::Equal => Direction::Stable,
            };
            Trend {
                title: t.clone(),
                previous,
                current,
                direction,
            }
        })
        .collect::<Vec<_>>();
    let mut summary = Summary {
        period,
        start,
        end,
        incidents: n,
        total_actions: current.iter().map(|i| i.actions.len() as u64).sum(),
        issues_prevented: prevented,
        auto_recoveries: auto,
        success_rate: if n == 0 {
            100.0
        } else {
            auto as f64 * 100.0 / n as f64
        },
        requests_affected: affected,
        top_issues,
        trends,
        recommendations: Vec::new(),
    };
    summary.recommendations = super::recommend::recommend(&current, &summary);
    summary
}

impl Summary {
    /// The report as e-mail-ready text.
    pub fn to_text(&self) -> String {
        let name = match self.period {
            Period::Daily => "Self-Healing System Report",
            Period::Weekly => "Self-Healing System Weekly Report",
        };
        let mut s = format!(
            "Subject: {name} - {} to {}\n\nSummary:\n",
            timefmt::date(self.start),
            timefmt::date(self.end)
        );
        let _ = writeln!(s, "- Incidents: {}", self.incidents);
        let _ = writeln!(s, "- Total Self-Healing Actions: {}", self.total_actions);
        let _ = writeln!(s, "- Issues Prevented: {}", self.issues_prevented);
        let _ = writeln!(s, "- Auto-Recoveries: {}", self.auto_recoveries);
        let _ = writeln!(s, "- Success Rate: {:.1}%", self.success_rate);
        let _ = writeln!(
            s,
            "- Requests refused (503), queued, rate-limited or timed out: {}",
            self.requests_affected
        );
        if !self.top_issues.is_empty() {
            s.push_str("\nTop Issues:\n");
            for (n, t) in self.top_issues.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "{}. {}: {} ({} auto-recovered)",
                    n + 1,
                    t.title,
                    t.count,
                    t.auto_recovered
                );
            }
        }
        if !self.trends.is_empty() {
            s.push_str("\nTrends (previous -> this period):\n");
            for t in &self.trends {
                let d = match t.direction {
                    Direction::Increasing => "Increasing",
                    Direction::Decreasing => "Decreasing",
                    Direction::Stable => "Stable",
                };
                let _ = writeln!(s, "- {}: {d} ({} -> {})", t.title, t.previous, t.current);
            }
        }
        s.push_str("\nRecommendations:\n");
        for rec in &self.recommendations {
            let _ = writeln!(s, "- {rec}");
        }
        s
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
