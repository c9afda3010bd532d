//! The self-healing dashboard (feature `admin`): an HTML page at `/admin/self-healing`, its
//! JSON at `/admin/self-healing/status` and its charts at `/admin/self-healing/charts`.
//!
//! Charts of the last 15 minutes come first, drawn as inline SVG from a [`History`] ring the
//! dashboard fills once a second: pool use with the warning, critical and recovery thresholds
//! and the level as background bands; requests per second by class and outcome; critical
//! acquire-wait p50/p99 and hold-time p99; server connections against `max_connections`;
//! incidents marked on the time axis.
//!
//! It also shows the current level and pool use, server headroom, the active incident and
//! recent ones with their analyses, what the guard prevented over the last 24 hours (timeouts,
//! invalid transitions blocked, pool recoveries, auto-retries, shed and rate-limited requests),
//! recent events and the daily report. Every free-text field is redacted with
//! [`Redactor`] before it is served.
//!
//! # Access
//!
//! With [`DashboardConfig::bearer_token`] set, every route requires
//! `Authorization: Bearer <token>` (401 with `WWW-Authenticate: Bearer` otherwise). A browser
//! opens the page by URL, so the HTML route also accepts `?token=<token>`; its script then
//! sends the token as a header to the JSON and chart routes. The trade-off: a token in a URL
//! can end up in browser history, bookmarks and the access logs of proxies in between. The page is served
//! with `Referrer-Policy: no-referrer` and `Cache-Control: no-store`, but prefer a header
//! (a reverse proxy that adds it, say) where you can, and use a token only for this page.
//!
//! Without a token the dashboard answers loopback peers only (403 otherwise), which needs the
//! peer address: serve the app with `into_make_service_with_connect_info::<SocketAddr>()`.
//! Behind a reverse proxy on the same host every request would look like loopback, so without
//! a token requests carrying `Forwarded`, `X-Forwarded-For` or `X-Real-IP` are refused (403):
//! set a token to serve the dashboard through a proxy.
//!
//! An empty or whitespace-only token is treated as a misconfiguration: it authorises nobody
//! (every request gets 401) and [`Dashboard::router`] logs an error.
//!
//! ```no_run
//! use poolguard::dashboard::{Dashboard, DashboardConfig};
//! use poolguard::incident::IncidentStore;
//! use poolguard::report::spawn_incident_pipeline;
//! use poolguard::Guard;
//! use std::net::SocketAddr;
//!
//! # async fn run(guard: Guard) {
//! let store = IncidentStore::default();
//! let _pipeline = spawn_incident_pipeline(guard.events(), store.clone(), None);
//! let config = DashboardConfig {
//!     bearer_token: std::env::var("ADMIN_TOKEN").ok(),
//!     ..DashboardConfig::default()
//! };
//! let dashboard = Dashboard::new(guard.clone(), store, config);
//! let _subscriber = dashboard.spawn();
//! let app = axum::Router::new().merge(dashboard.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .await
//!     .unwrap();
//! # }
//! ```

mod auth;
pub mod chart;
mod history;
mod page;
pub mod panels;
mod snapshot;
mod stats;
mod store;
#[cfg(test)]
mod tests;

pub use history::{History, HistoryPoint, OutcomeRate, DEFAULT_HISTORY_POINTS};
pub use snapshot::{
    AnalysisView, EventView, IncidentView, PoolView, QueuedView, ServerView, Snapshot,
};
pub use stats::{HourlyCounters, PreventionStats};
pub use store::{DashboardStore, SubscriberTask, DEFAULT_RECENT_EVENTS};

use crate::guard::Guard;
use crate::incident::IncidentStore;
use crate::report::Redactor;
use auth::{authorize, TokenSources};
use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The path of the HTML page.
pub const PAGE_PATH: &str = "/admin/self-healing";
/// The path of the JSON snapshot.
pub const STATUS_PATH: &str = "/admin/self-healing/status";
/// The path of the charts (an HTML fragment of inline SVG figures), which the page's script
/// fetches on every refresh.
pub const CHARTS_PATH: &str = "/admin/self-healing/charts";

/// How the dashboard behaves. Plain data with defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// The token every admin route requires as `Authorization: Bearer <token>` (the page also
    /// as `?token=`). `None`: loopback peers only, and no request forwarded by a proxy. An
    /// empty or whitespace-only token authorises nobody (401 to every request).
    pub bearer_token: Option<String>,
    /// Recent events kept and shown. Default 200.
    pub recent_events: usize,
    /// Closed incidents shown. Default 10.
    pub recent_incidents: usize,
    /// How often the page refreshes. Default 2 s.
    pub refresh: Duration,
    /// Points of history kept for the charts, one a second. Default 900 (15 minutes).
    pub history_points: usize,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("recent_events", &self.recent_events)
            .field("recent_incidents", &self.recent_incidents)
            .field("refresh", &self.refresh)
            .field("history_points", &self.history_points)
            .finish()
    }
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            recent_events: DEFAULT_RECENT_EVENTS,
            recent_incidents: 10,
            refresh: Duration::from_secs(2),
            history_points: DEFAULT_HISTORY_POINTS,
        }
    }
}

/// The dashboard: reads the guard, the incident store and its own event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    guard: Guard,
    incidents: IncidentStore,
    store: DashboardStore,
    history: History,
    config: DashboardConfig,
    redactor: Redactor,
}

impl Dashboard {
    /// A dashboard over `guard` and the incidents in `incidents`, redacting with the built-in
    /// rules. Call [`spawn`](Dashboard::spawn) to start recording events.
    pub fn new(guard: Guard, incidents: IncidentStore, config: DashboardConfig) -> Self {
        Self::with_redactor(guard, incidents, config, Redactor::default())
    }

    /// [`new`](Dashboard::new) with a redactor carrying the application's own patterns.
    pub fn with_redactor(
        guard: Guard,
        incidents: IncidentStore,
        config: DashboardConfig,
        redactor: Redactor,
    ) -> Self {
        let store = DashboardStore::new(config.recent_events);
        let history = History::new(config.history_points);
        Self {
            inner: Arc::new(Inner {
                guard,
                incidents,
                store,
                history,
                config,
                redactor,
            }),
        }
    }

    /// Starts the background tasks: the subscriber that keeps recent events and the 24-hour
    /// counters, and the sampler that adds a point to the charts' history every second. They
    /// stop when the returned handle is dropped, or when the guard is gone. Must be called
    /// inside a Tokio runtime.
    pub fn spawn(&self) -> SubscriberTask {
        let sampler = self
            .inner
            .history
            .spawn(&self.inner.guard, Duration::from_secs(1));
        self.inner
            .store
            .spawn(self.inner.guard.events())
            .with_sampler(sampler)
    }

    /// The charts' history.
    pub fn history(&self) -> &History {
        &self.inner.history
    }

    /// The charts as the page shows them now: an HTML fragment of `<figure>`s with inline
    /// SVG, as served by [`CHARTS_PATH`].
    pub fn charts_html(&self) -> String {
        let i = &self.inner;
        let mut incidents: Vec<_> = i.incidents.active().into_iter().collect();
        incidents.extend(i.incidents.recent(i.config.recent_incidents));
        panels::render(
            &i.history.points(),
            &incidents,
            i.guard.config(),
            SystemTime::now(),
        )
    }

    /// The dashboard's event store.
    pub fn store(&self) -> &DashboardStore {
        &self.inner.store
    }

    /// The snapshot the JSON route would serve now.
    pub fn snapshot(&self) -> Snapshot {
        let i = &self.inner;
        let sources = snapshot::Sources {
            status: i.guard.status(),
            incidents: &i.incidents,
            store: &i.store,
            redactor: &i.redactor,
            recent_events: i.config.recent_events,
            recent_incidents: i.config.recent_incidents,
            refresh_ms: i.config.refresh.as_millis().max(250) as u64,
        };
        Snapshot::build(&sources, SystemTime::now())
    }

    /// The page at [`PAGE_PATH`] and the JSON at [`STATUS_PATH`], to `.merge` into the app.
    /// Without a token this logs a warning that the dashboard is unauthenticated and answers
    /// loopback clients only; with an empty or whitespace-only token it logs an error, since
    /// such a token refuses every request.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        match self.inner.config.bearer_token.as_deref() {
            None => tracing::warn!(
                target: "poolguard::dashboard",
                "the self-healing dashboard has no bearer token: it is unauthenticated and answers loopback clients only"
            ),
            Some(t) if !auth::token_is_usable(t) => tracing::error!(
                target: "poolguard::dashboard",
                "the self-healing dashboard bearer token is empty: every request will be refused with 401; set a non-empty token or none"
            ),
            Some(_) => {}
        }
        let page = self.clone();
        let status = self.clone();
        let charts = self.clone();
        Router::new()
            .route(
                PAGE_PATH,
                get(move |req: Request| {
                    let d = page.clone();
                    async move { d.serve(req, TokenSources::HeaderOrQuery) }
                }),
            )
            .route(
                STATUS_PATH,
                get(move |req: Request| {
                    let d = status.clone();
                    async move { d.serve(req, TokenSources::Header) }
                }),
            )
            .route(
                CHARTS_PATH,
                get(move |req: Request| {
                    let d = charts.clone();
                    async move { d.serve_charts(req) }
                }),
            )
    }

    fn serve_charts(&self, req: Request) -> Response {
        let token = self.inner.config.bearer_token.as_deref();
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>();
        if let Err(denied) = authorize(token, TokenSources::Header, req.headers(), req.uri(), peer)
        {
            return denied.into_response();
        }
        (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            Html(self.charts_html()),
        )
            .into_response()
    }

    fn serve(&self, req: Request, sources: TokenSources) -> Response {
        let token = self.inner.config.bearer_token.as_deref();
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>();
        if let Err(denied) = authorize(token, sources, req.headers(), req.uri(), peer) {
            return denied.into_response();
        }
        let snap = self.snapshot();
        let common = [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ];
        match sources {
            TokenSources::Header => (common, Json(snap)).into_response(),
            TokenSources::HeaderOrQuery => (
                common,
                [(
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                )],
                Html(page::render(&snap, &self.charts_html())),
            )
                .into_response(),
        }
    }
}
