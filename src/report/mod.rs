//! The incident reporter: redaction, the analysis prompt, an LLM client for OpenAI-compatible
//! endpoints, deduplication, a call/token budget, sinks, and daily/weekly summaries.
//!
//! Closed incidents flow through a background task, never the request path:
//! redact -> dedupe -> budget -> LLM (or dry run, or the local rule-based summary when no
//! endpoint is configured) -> analysis stored with the incident -> sinks (alert sinks first).
//!
//! The HTTP parts ([`LlmClient`], [`WebhookSink`]) need feature `llm`; `https://` endpoints
//! need `llm-tls`. Everything else is always available.
//!
//! ```no_run
//! use poolguard::events::EventBus;
//! use poolguard::incident::IncidentStore;
//! use poolguard::report::spawn_incident_pipeline;
//! use poolguard::report::{JsonLinesSink, LogSink, Reporter, ReporterConfig};
//!
//! # async fn run() {
//! let bus = EventBus::new(1024);
//! let store = IncidentStore::default();
//! let builder = Reporter::builder(ReporterConfig::default())
//!     .store(store.clone())
//!     .sink(LogSink)
//!     .sink(JsonLinesSink::new("incidents.jsonl"));
//! #[cfg(feature = "llm")]
//! let builder = match poolguard::report::LlmConfig::from_env() {
//!     Some(cfg) => builder.llm(poolguard::report::LlmClient::new(cfg)),
//!     None => builder,
//! };
//! let (reporter, _worker) = builder.spawn().expect("redaction patterns compile");
//! let _pipeline = spawn_incident_pipeline(&bus, store, Some(reporter));
//! # }
//! ```
// Without the feature the items named above are not built, and neither are their links.
#![cfg_attr(not(feature = "llm"), allow(rustdoc::broken_intra_doc_links))]

mod budget;
mod dedupe;
#[cfg(feature = "llm")]
mod http;
#[cfg(feature = "llm")]
mod llm;
mod pipeline;
mod prompt;
mod recommend;
mod redact;
mod reporter;
mod sinks;
mod stats;
mod summary;
#[cfg(test)]
mod tests;

pub use budget::{Budget, BudgetConfig, BudgetLimit};
#[cfg(feature = "redis")]
pub use dedupe::SharedDedupe;
pub use dedupe::{Dedupe, DedupeDecision, DEFAULT_DEDUPE_WINDOW};
#[cfg(feature = "llm")]
pub use llm::{Completion, LlmClient, LlmConfig, LlmError};
pub use pipeline::{spawn_incident_pipeline, spawn_incident_pipeline_with};
pub use prompt::{
    build_prompt, estimate_tokens, Prompt, DEFAULT_CONTEXT_TOKENS, PROMPT_VERSION, SYSTEM_PROMPT,
};
pub use redact::{redact, PatternError, Redactor};
pub use reporter::{Reporter, ReporterBuilder, ReporterConfig};
#[cfg(feature = "llm")]
pub use sinks::WebhookSink;
pub use sinks::{CallbackSink, IncidentReport, JsonLinesSink, LogSink, Sink, SinkError, SinkStage};
pub use stats::ReporterStats;
pub use summary::{summarize, Direction, Period, Summary, TopIssue, Trend};
