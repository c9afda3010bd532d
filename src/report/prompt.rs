//! The analysis prompt: the versioned instructions in `prompts/incident_analysis.v1.md` and
//! the redacted incident as context, cut to a token budget.

use super::redact::Redactor;
use crate::incident::{local, timefmt, Incident};
use std::fmt::Write as _;

/// The version of the instructions, recorded with every analysis.
pub const PROMPT_VERSION: &str = "incident_analysis.v1";

/// The instructions sent as the system message.
pub const SYSTEM_PROMPT: &str = include_str!("../../prompts/incident_analysis.v1.md");

/// Default budget for the context (user message), in estimated tokens.
pub const DEFAULT_CONTEXT_TOKENS: usize = 1500;

/// A rough token count: one token per four characters.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// The messages for one chat-completions call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// [`PROMPT_VERSION`].
    pub version: &'static str,
    /// The system message ([`SYSTEM_PROMPT`]).
    pub system: String,
    /// The user message: the redacted incident.
    pub user: String,
    /// Timeline events left out to fit the budget.
    pub timeline_omitted: usize,
}

impl Prompt {
    /// Estimated tokens of both messages.
    pub fn estimated_tokens(&self) -> usize {
        estimate_tokens(&self.system) + estimate_tokens(&self.user)
    }

    /// Both messages as one text, as the dry run writes it.
    pub fn to_text(&self) -> String {
        format!(
            "--- system ({}) ---\n{}\n--- user ---\n{}",
            self.version, self.system, self.user
        )
    }
}

fn header(incident: &Incident) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Incident #{}: {}", incident.id, incident.title());
    let _ = writeln!(s, "Opened: {}", timefmt::rfc3339(incident.opened_at));
    if let Some(c) = incident.closed_at {
        let _ = writeln!(s, "Closed: {}", timefmt::rfc3339(c));
    }
    if let Some(r) = incident.recovery_time {
        let _ = writeln!(s, "Recovery time: {:.1} s", r.as_secs_f64());
    }
    let _ = writeln!(
        s,
        "Peak level: {}; peak severity: {}",
        incident.peak_level,
        incident.peak_severity.as_str()
    );
    if incident.max_size > 0 {
        let _ = writeln!(
            s,
            "Peak pool usage: {:.0}% ({}/{} connections)",
            incident.peak_utilization * 100.0,
            incident.peak_in_use,
            incident.max_size
        );
    }
    s.push_str("Actions taken:\n");
    if incident.actions.is_empty() {
        s.push_str("- none recorded\n");
    }
    for a in &incident.actions {
        let _ = writeln!(s, "- {}", a.describe());
    }
    let c = &incident.impact.counts;
    let _ = writeln!(
        s,
        "Requests by class [non_critical, standard, critical]: served {:?}, shed {:?}, queued {:?}, rate_limited {:?}, timed_out {:?}; self-heal failures: {}",
        c.served, c.shed, c.queued, c.rate_limited, c.timed_out, incident.impact.failed
    );
    let _ = writeln!(s, "{}", local::impact_line(incident));
    if !incident.routes.is_empty() {
        let _ = writeln!(
            s,
            "Routes with stopped or abandoned queries: {}",
            incident.routes.join(", ")
        );
    }
    s
}

/// Builds the prompt for `incident`: every line is redacted, then the timeline is cut from
/// the middle (the head and the tail are kept) until the context fits `context_tokens`.
pub fn build_prompt(incident: &Incident, redactor: &Redactor, context_tokens: usize) -> Prompt {
    let head = redactor.redact(&header(incident));
    let mut lines: Vec<String> = incident
        .timeline
        .iter()
        .map(|e| {
            let offset = e.at.duration_since(incident.opened_at).unwrap_or_default();
            redactor.redact(&format!(
                "+{} ms [{}] {}",
                offset.as_millis(),
                e.severity().as_str(),
                e.message()
            ))
        })
        .collect();
    let mut omitted = incident.timeline_omitted;
    let mut cut_at = None;
    let size = |lines: &[String]| {
        estimate_tokens(&head) + lines.iter().map(|l| estimate_tokens(l) + 1).sum::<usize>() + 16
    };
    while lines.len() > 2 && size(&lines) > context_tokens {
        let mid = lines.len() / 2;
        lines.remove(mid);
        omitted += 1;
        cut_at = Some(mid);
    }
    if cut_at.is_none() && incident.timeline_omitted > 0 {
        cut_at = Some(lines.len() / 2);
    }
    if let Some(at) = cut_at {
        lines.insert(at, format!("... {omitted} events omitted ..."));
    }
    let mut user = head;
    user.push_str("\nTimeline (offsets from the first event):\n");
    for l in &lines {
        user.push_str(l);
        user.push('\n');
    }
    let max_chars = context_tokens.saturating_mul(4);
    if user.chars().count() > max_chars {
        user = user.chars().take(max_chars.saturating_sub(12)).collect();
        user.push_str("\n[truncated]");
    }
    Prompt {
        version: PROMPT_VERSION,
        system: SYSTEM_PROMPT.to_string(),
        user,
        timeline_omitted: omitted,
    }
}
