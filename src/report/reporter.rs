//! The reporter: a background task that turns closed incidents into analyses and reports.
//! redact -> dedupe -> budget -> LLM (or dry run, or the local summary) -> store -> sinks.

use super::budget::{Budget, BudgetConfig};
use super::dedupe::{Dedupe, DedupeDecision, DEFAULT_DEDUPE_WINDOW};
use super::prompt::{build_prompt, DEFAULT_CONTEXT_TOKENS};
use super::redact::{PatternError, Redactor};
use super::sinks::{deliver_all, IncidentReport, Sink};
use super::stats::{Counters, ReporterStats};
use crate::incident::{local, Analysis, AnalysisKind, Incident, IncidentStore};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How the reporter behaves. Plain data with documented defaults.
///
/// | field | default | meaning |
/// | --- | --- | --- |
/// | `dedupe_window` | 1 h | same-signature incidents in this window are analysed once |
/// | `budget` | see [`BudgetConfig`] | LLM calls and tokens per hour and day |
/// | `dry_run` | false | build the prompt and hand it to the sinks instead of calling |
/// | `context_tokens` | 1500 | budget for the incident context in the prompt |
/// | `queue_capacity` | 64 | closed incidents waiting for the reporter; more are dropped |
/// | `redact_patterns` | none | extra regexes whose matches become `[REDACTED]` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReporterConfig {
    /// Same-signature incidents within this window are analysed once.
    #[serde(with = "crate::config::millis")]
    pub dedupe_window: Duration,
    /// Limits on LLM use.
    pub budget: BudgetConfig,
    /// Write the exact prompt to the sinks and log, without any HTTP call.
    pub dry_run: bool,
    /// Budget for the incident context, in estimated tokens (chars / 4).
    pub context_tokens: usize,
    /// Closed incidents that may wait for the reporter; beyond it they are dropped and counted.
    pub queue_capacity: usize,
    /// Extra redaction regexes.
    pub redact_patterns: Vec<String>,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            budget: BudgetConfig::default(),
            dry_run: false,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            queue_capacity: 64,
            redact_patterns: Vec::new(),
        }
    }
}

/// The handle that accepts closed incidents. Cheap to clone; the background task ends once
/// every clone is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Incident>,
    counters: Arc<Counters>,
}

/// Builds a [`Reporter`] and its background task.
#[must_use]
pub struct ReporterBuilder {
    config: ReporterConfig,
    store: Option<IncidentStore>,
    sinks: Vec<Box<dyn Sink>>,
    #[cfg(feature = "llm")]
    llm: Option<super::llm::LlmClient>,
    #[cfg(feature = "redis")]
    shared_dedupe: Option<super::dedupe::SharedDedupe>,
}

impl std::fmt::Debug for ReporterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterBuilder")
            .field("config", &self.config)
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ReporterBuilder {
    /// Stores each analysis with its incident in `store`.
    pub fn store(mut self, store: IncidentStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a sink. Alert sinks run before record sinks, otherwise in the order added.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Analyses incidents with this LLM client. Without one, the local summary is used.
    #[cfg(feature = "llm")]
    pub fn llm(mut self, client: super::llm::LlmClient) -> Self {
        self.llm = Some(client);
        self
    }

    /// Dedupes incidents across replicas in Redis (one analysis per incident cluster-wide),
    /// with the local dedupe as the fallback while Redis is unreachable.
    #[cfg(feature = "redis")]
    pub fn shared_dedupe(mut self, dedupe: super::dedupe::SharedDedupe) -> Self {
        self.shared_dedupe = Some(dedupe);
        self
    }

    /// Compiles the redaction rules and spawns the background task. Must be called inside a
    /// Tokio runtime. Fails only on an invalid `redact_patterns` entry.
    pub fn spawn(self) -> Result<(Reporter, JoinHandle<()>), PatternError> {
        let redactor = Redactor::with_patterns(&self.config.redact_patterns)?;
        let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            dedupe: Dedupe::new(self.config.dedupe_window),
            budget: Budget::new(self.config.budget),
            config: self.config,
            redactor,
            store: self.store,
            sinks: self.sinks,
            #[cfg(feature = "llm")]
            llm: self.llm,
            #[cfg(feature = "redis")]
            shared_dedupe: self.shared_dedupe,
            counters: counters.clone(),
        };
        let handle = tokio::spawn(worker.run(rx));
        Ok((Reporter { tx, counters }, handle))
    }
}

impl Reporter {
    /// A builder with `config`, no sinks, no store and no LLM.
    pub fn builder(config: ReporterConfig) -> ReporterBuilder {
        ReporterBuilder {
            config,
            store: None,
            sinks: Vec::new(),
            #[cfg(feature = "llm")]
            llm: None,
            #[cfg(feature = "redis")]
            shared_dedupe: None,
        }
    }

    /// Queues a closed incident without waiting; `false` (and counted) if the queue is full
    /// or the task has stopped.
    pub fn submit(&self, incident: Incident) -> bool {
        let ok = self.tx.try_send(incident).is_ok();
        self.counters.inc(if ok { 0 } else { 1 }, 1);
        if !ok {
            tracing::warn!(target: "poolguard::report", "reporter queue full: incident report dropped");
        }
        ok
    }

    /// What the reporter has done so far.
    pub fn stats(&self) -> ReporterStats {
        self.counters.snapshot()
    }
}

struct Worker {
    config: ReporterConfig,
    redactor: Redactor,
    dedupe: Dedupe,
    budget: Budget,
    store: Option<IncidentStore>,
    sinks: Vec<Box<dyn Sink>>,
    #[cfg(feature = "llm")]
    llm: Option<super::llm::LlmClient>,
    #[cfg(feature = "redis")]
    shared_dedupe: Option<super::dedupe::SharedDedupe>,
    counters: Arc<Counters>,
}

fn analysis(kind: AnalysisKind, text: String) -> Analysis {
    Analysis {
        kind,
        text,
        model: None,
        tokens: None,
        duplicate_of: None,
        error: None,
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Incident>) {
        while let Some(incident) = rx.recv().await {
            self.handle(incident).await;
        }
    }

    async fn handle(&mut self, mut incident: Incident) {
        let now = incident.closed_at.unwrap_or(incident.opened_at);
        let summary = local::local_summary(&incident);
        let signature = incident.signature();
        #[cfg(feature = "redis")]
        let decision = match &self.shared_dedupe {
            Some(shared) => {
                shared
                    .check(&mut self.dedupe, &signature, incident.id, now)
                    .await
            }
            None => self.dedupe.check(&signature, incident.id, now),
        };
        #[cfg(not(feature = "redis"))]
        let decision = self.dedupe.check(&signature, incident.id, now);
        let a = match decision {
            DedupeDecision::Duplicate { of } => {
                self.counters.inc(6, 1);
                Analysis {
                    duplicate_of: Some(of),
                    ..analysis(
                        AnalysisKind::Duplicate,
                        format!("Same signature as incident #{of} within the dedupe window; see its analysis."),
                    )
                }
            }
            DedupeDecision::Analyse => self.analyse(&incident, &summary, now).await,
        };
        if let Some(store) = &self.store {
            store.set_analysis(incident.id, a.clone());
        }
        let text = match a.kind {
            AnalysisKind::Llm => format!("{summary}\n\nAnalysis:\n{}", a.text),
            AnalysisKind::DryRun => format!("{summary}\n\n[DRY RUN] prompt not sent:\n{}", a.text),
            AnalysisKind::LocalSummary => summary,
            _ => format!(
                "{summary}\n\nNote: {}",
                a.error.as_deref().unwrap_or(&a.text)
            ),
        };
        let report = IncidentReport {
            subject: self.redactor.redact(&local::subject(&incident)),
            text: self.redactor.redact(&text),
            incident: {
                incident.analysis = Some(a);
                incident
            },
        };
        let failed = deliver_all(&self.sinks, &report).await;
        self.counters.inc(8, failed as u64);
    }

    async fn analyse(
        &mut self,
        incident: &Incident,
        summary: &str,
        now: std::time::SystemTime,
    ) -> Analysis {
        let prompt = build_prompt(incident, &self.redactor, self.config.context_tokens);
        if self.config.dry_run {
            self.counters.inc(5, 1);
            tracing::info!(target: "poolguard::report", incident = incident.id, "[SELF-HEAL] dry run, prompt not sent:\n{}", prompt.to_text());
            return analysis(AnalysisKind::DryRun, prompt.to_text());
        }
        #[cfg(feature = "llm")]
        if let Some(llm) = &self.llm {
            let estimate = (prompt.estimated_tokens() + llm.config().max_tokens as usize) as u64;
            if let Err(limit) = self.budget.check(now, estimate) {
                self.counters.inc(7, 1);
                tracing::info!(target: "poolguard::report", incident = incident.id, ?limit, "LLM budget spent: local summary used");
                return Analysis {
                    error: Some(format!("LLM budget spent ({limit:?}); local summary used")),
                    ..analysis(AnalysisKind::BudgetExceeded, summary.to_string())
                };
            }
            return match llm.complete(&prompt).await {
                Ok(c) => {
                    self.budget.record(now, c.total_tokens.unwrap_or(estimate));
                    self.counters.inc(2, 1);
                    Analysis {
                        model: Some(c.model),
                        tokens: c.total_tokens,
                        ..analysis(AnalysisKind::Llm, self.redactor.redact(&c.content))
                    }
                }
                Err(e) => {
                    self.budget.record(now, estimate);
                    self.counters.inc(3, 1);
                    tracing::warn!(target: "poolguard::report", incident = incident.id, "LLM analysis failed: {e}");
                    Analysis {
                        error: Some(e.to_string()),
                        ..analysis(AnalysisKind::LlmFailed, summary.to_string())
                    }
                }
            };
        }
        let _ = (now, &self.budget);
        self.counters.inc(4, 1);
        analysis(AnalysisKind::LocalSummary, summary.to_string())
    }
}
