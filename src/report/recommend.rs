//! Recommendations for a summary, derived from its incidents and figures.

use super::summary::{Direction, Summary};
use crate::incident::{Action, Incident};
use crate::monitor::Level;

/// What to look at, most urgent first.
pub(crate) fn recommend(current: &[&Incident], s: &Summary) -> Vec<String> {
    let mut r = Vec::new();
    let failures: u64 = current.iter().map(|i| i.impact.failed).sum();
    if failures > 0 {
        r.push(format!(
            "{failures} self-heal action(s) failed: manual investigation required"
        ));
    }
    let critical = current
        .iter()
        .filter(|i| i.peak_level == Level::Critical)
        .count();
    if critical > 0 {
        r.push(format!(
            "Pool reached Critical {critical} time(s): review the heaviest routes' query counts or raise max_size"
        ));
    }
    let critical_failed: u64 = current.iter().map(|i| i.impact.critical_failed()).sum();
    if critical_failed > 0 {
        r.push(format!(
            "{critical_failed} critical request(s) failed: consider a larger critical_reserve"
        ));
    }
    if current
        .iter()
        .any(|i| i.actions.contains(&Action::StatementTimeouts))
    {
        let mut routes: Vec<&str> = current
            .iter()
            .flat_map(|i| i.routes.iter().map(String::as_str))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        let on = if routes.is_empty() {
            String::new()
        } else {
            format!(" on {}", routes.join(", "))
        };
        r.push(format!(
            "Statements hit statement_timeout{on}: review those queries and their indexes"
        ));
    }
    if s.trends
        .iter()
        .any(|t| t.direction == Direction::Increasing && t.previous > 0)
    {
        r.push(
            "Some incident types are increasing: check recent deploys and traffic growth".into(),
        );
    }
    if r.is_empty() {
        r.push(if s.incidents == 0 {
            "No incidents: no action needed".into()
        } else {
            "Every incident self-healed: no manual intervention required".into()
        });
    }
    r
}
