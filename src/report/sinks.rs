//! Where reports go: `[SELF-HEAL]` log lines, a JSON-lines file, a webhook, a callback.
//! Alert sinks run before record sinks ("alert first, record second"); a failing sink is
//! logged and the others still run.

use crate::incident::Incident;
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// What a sink receives: the incident (with its analysis) and the text to show people.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentReport {
    /// The alert subject, e.g. `[AUTO-RESOLVED] Connection Pool Warning - System Self-Healed`.
    pub subject: String,
    /// Subject, local summary and analysis, ready for chat or e-mail.
    pub text: String,
    /// The incident, with `analysis` filled in.
    pub incident: Incident,
}

/// When a sink runs relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SinkStage {
    /// Tells people (webhook, pager): runs first.
    Alert,
    /// Keeps a record (log, file): runs after every alert sink.
    Record,
}

/// Why a sink failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError(pub String);

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SinkError {}

/// A destination for incident reports. Runs on the reporter's background task.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// When it runs; [`SinkStage::Record`] unless overridden.
    fn stage(&self) -> SinkStage {
        SinkStage::Record
    }
    /// Delivers one report.
    fn deliver<'a>(&'a self, report: &'a IncidentReport) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Runs every sink, alert stage first; returns how many failed. Failures are logged.
pub(crate) async fn deliver_all(sinks: &[Box<dyn Sink>], report: &IncidentReport) -> usize {
    let mut failed = 0;
    for stage in [SinkStage::Alert, SinkStage::Record] {
        for sink in sinks.iter().filter(|s| s.stage() == stage) {
            if let Err(e) = sink.deliver(report).await {
                failed += 1;
                tracing::warn!(
                    target: "poolguard::report",
                    sink = sink.name(),
                    incident = report.incident.id,
                    "sink failed: {e}"
                );
            }
        }
    }
    failed
}

/// Writes `[SELF-HEAL]` lines through `tracing` (target `poolguard::report`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }
    fn deliver<'a>(&'a self, report: &'a IncidentReport) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for line in report.text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(target: "poolguard::report", "[SELF-HEAL] {line}");
            }
            Ok(())
        })
    }
}

/// Appends each report as one JSON object per line to a file (created if missing).
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: PathBuf,
}

impl JsonLinesSink {
    /// A sink appending to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &str {
        "json_lines"
    }
    fn deliver<'a>(&'a self, report: &'a IncidentReport) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut line =
                serde_json::to_vec(report).map_err(|e| SinkError(format!("serialize: {e}")))?;
            line.push(b'\n');
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                f.write_all(&line)
            })
            .await
            .map_err(|e| SinkError(format!("writer task: {e}")))?
            .map_err(|e| SinkError(format!("{}: {e}", self.path.display())))
        })
    }
}

type Callback = dyn Fn(&IncidentReport) -> Result<(), SinkError> + Send + Sync;

/// Calls a closure with each report. Runs at [`SinkStage::Record`] unless made an alert.
pub struct CallbackSink {
    f: Arc<Callback>,
    stage: SinkStage,
}

impl fmt::Debug for CallbackSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSink")
            .field("stage", &self.stage)
            .finish()
    }
}

impl CallbackSink {
    /// A sink calling `f`.
    pub fn new(
        f: impl Fn(&IncidentReport) -> Result<(), SinkError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            f: Arc::new(f),
            stage: SinkStage::Record,
        }
    }

    /// Runs it with the alert sinks, before any record sink.
    #[must_use]
    pub fn alert(mut self) -> Self {
        self.stage = SinkStage::Alert;
        self
    }
}

impl Sink for CallbackSink {
    fn name(&self) -> &str {
        "callback"
    }
    fn stage(&self) -> SinkStage {
        self.stage
    }
    fn deliver<'a>(&'a self, report: &'a IncidentReport) -> BoxFuture<'a, Result<(), SinkError>> {
        let r = (self.f)(report);
        Box::pin(async move { r })
    }
}

/// POSTs `{"text": ..., "subject": ..., "incident_id": ...}` as JSON: the `text` field suits
/// Slack-style incoming webhooks and e-mail gateways. Only the redacted text leaves the
/// process, not the raw incident. An alert sink. Feature `llm`.
#[cfg(feature = "llm")]
#[derive(Debug, Clone)]
pub struct WebhookSink {
    url: String,
    timeout: std::time::Duration,
    http: super::http::HttpClient,
}

#[cfg(feature = "llm")]
impl WebhookSink {
    /// A webhook to `url` with a 10 s timeout. Must be built inside a Tokio runtime.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: std::time::Duration::from_secs(10),
            http: super::http::HttpClient::new(),
        }
    }

    /// Changes the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[cfg(feature = "llm")]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }
    fn stage(&self) -> SinkStage {
        SinkStage::Alert
    }
    fn deliver<'a>(&'a self, report: &'a IncidentReport) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&serde_json::json!({
                "text": report.text,
                "subject": report.subject,
                "incident_id": report.incident.id,
            }))
            .map_err(|e| SinkError(format!("serialize: {e}")))?;
            match self
                .http
                .post_json(&self.url, None, body, self.timeout)
                .await
            {
                Ok((s, _)) if (200..300).contains(&s) => Ok(()),
                Ok((s, _)) => Err(SinkError(format!("webhook answered {s}"))),
                Err(super::http::HttpError::TooLarge(limit)) => Err(SinkError(format!(
                    "webhook response larger than {limit} bytes"
                ))),
                Err(e) => Err(SinkError(format!("webhook: {e:?}"))),
            }
        })
    }
}
