//! Knowing what happened: the incident pipeline, the reporter (an LLM when
//! `POOLGUARD_LLM_BASE_URL` / `POOLGUARD_LLM_MODEL` / `POOLGUARD_LLM_API_KEY` are set, the
//! local rule-based summary otherwise) and the `/admin/self-healing` dashboard.

use poolguard::dashboard::{Dashboard, DashboardConfig};
use poolguard::incident::{IncidentStore, IncidentTracker};
use poolguard::report::spawn_incident_pipeline_with;
use poolguard::report::{
    JsonLinesSink, LlmClient, LlmConfig, LogSink, Reporter, ReporterConfig, SharedDedupe,
};
use poolguard::Guard;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What keeps running beside the app; dropping it stops the background tasks.
pub struct Observability {
    pub store: IncidentStore,
    pub dashboard: axum::Router,
    tasks: Vec<JoinHandle<()>>,
    _subscriber: poolguard::dashboard::SubscriberTask,
}

impl Drop for Observability {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Attaches incidents, the reporter and the dashboard to `guard`; an incident closes once the
/// level has stayed Normal for `quiet`.
pub fn attach(
    guard: &Guard,
    log_reports: bool,
    quiet: Duration,
) -> Result<Observability, Box<dyn std::error::Error>> {
    attach_shared(guard, log_reports, quiet, None)
}

/// [`attach`], with incident analyses deduplicated across every replica sharing the Redis at
/// `redis` (one LLM analysis per incident cluster-wide).
pub fn attach_shared(
    guard: &Guard,
    log_reports: bool,
    quiet: Duration,
    redis: Option<&str>,
) -> Result<Observability, Box<dyn std::error::Error>> {
    let store = IncidentStore::default();
    let llm = LlmConfig::from_env();
    match &llm {
        Some(c) => tracing::info!("incident analyses by {} at {}", c.model, c.base_url),
        None => {
            tracing::info!("no POOLGUARD_LLM_BASE_URL: incidents get the local rule-based summary")
        }
    }
    let config = ReporterConfig {
        // POOLGUARD_LLM_DRY_RUN=1 writes the exact prompt instead of calling the endpoint.
        dry_run: std::env::var("POOLGUARD_LLM_DRY_RUN").is_ok_and(|v| v == "1"),
        ..ReporterConfig::default()
    };
    let mut builder = Reporter::builder(config).store(store.clone());
    if log_reports {
        builder = builder.sink(LogSink);
    }
    if let Ok(path) = std::env::var("POOLGUARD_INCIDENT_FILE") {
        builder = builder.sink(JsonLinesSink::new(path));
    }
    if let Some(config) = llm {
        builder = builder.llm(LlmClient::new(config));
    }
    if let Some(url) = redis {
        let instance = guard
            .identity()
            .map(|i| i.instance().to_string())
            .unwrap_or_else(poolguard::identity::default_instance);
        builder = builder.shared_dedupe(SharedDedupe::new(url, "poolguard-demo:", instance)?);
        tracing::info!("incident analyses deduplicated across replicas in Redis at {url}");
    }
    let (reporter, worker) = builder.spawn()?;
    let tracker = IncidentTracker::default().quiet_period(quiet);
    let pipeline =
        spawn_incident_pipeline_with(guard.events(), store.clone(), Some(reporter), tracker);
    let dashboard = Dashboard::new(
        guard.clone(),
        store.clone(),
        DashboardConfig {
            bearer_token: std::env::var("POOLGUARD_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
            ..DashboardConfig::default()
        },
    );
    let subscriber = dashboard.spawn();
    Ok(Observability {
        store,
        dashboard: dashboard.router(),
        tasks: vec![worker, pipeline],
        _subscriber: subscriber,
    })
}

impl Observability {
    /// Waits up to `limit` for every incident to close and carry its analysis; returns the
    /// reports as text, newest last.
    pub async fn reports(&self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let incidents = self.store.all();
            let pending = self.store.active().is_some()
                || incidents
                    .iter()
                    .any(|i| i.closed_at.is_some() && i.analysis.is_none());
            if !pending || tokio::time::Instant::now() >= deadline {
                return incidents
                    .iter()
                    .map(|i| match &i.analysis {
                        Some(a) => format!("{}\n{}", i.title(), a.text),
                        None if i.is_active() => format!("{} (still active)", i.title()),
                        None => format!("{} (no analysis yet)", i.title()),
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
