//! The reference app: a small task-tracker API on PostgreSQL, served three ways —
//! `off` (the bare pool), `generic` (the bare pool behind tower's ConcurrencyLimit + LoadShed
//! + Timeout, what a team would pick instead) and `full` (poolguard).

use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use deadpool_postgres::Pool;
use metrics_exporter_prometheus::PrometheusHandle;
use poolguard::limit::DefaultKeyExtractor;
use poolguard::tls::TlsConnector;
use poolguard::watchdog::{Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{Conn, Guard, GuardConfig, PoolOptions};
use serde_json::json;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tower::ServiceBuilder;

/// How the app protects its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// The bare pool.
    Off,
    /// tower's ConcurrencyLimit + LoadShed + Timeout in front of the bare pool.
    Generic,
    /// poolguard.
    Full,
}

impl FromStr for GuardMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(GuardMode::Off),
            "generic" => Ok(GuardMode::Generic),
            "full" => Ok(GuardMode::Full),
            other => Err(format!(
                "--guard must be off, generic or full, not `{other}`"
            )),
        }
    }
}

impl fmt::Display for GuardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuardMode::Off => "off",
            GuardMode::Generic => "generic",
            GuardMode::Full => "full",
        })
    }
}

/// What the app is built with.
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub pool_max: usize,
    pub mode: GuardMode,
    pub statement_timeout: Duration,
    pub guard_config: GuardConfig,
    /// The watchdog (slow-query killer, idle-transaction reaper, server headroom), in `full`
    /// mode.
    pub watchdog: WatchdogConfig,
    /// Key per-user limits by the `x-user-id` header (else by the `UserKey` extension, then
    /// the peer address). Only for a client you control: the in-process replays and
    /// benchmarks, whose load generator is the only client (their default), or `serve
    /// --trust-user-header` behind a gateway that sets the header. `serve` defaults to off.
    pub trust_user_header: bool,
    /// This replica's instance name (`None`: unique per process).
    pub instance: Option<String>,
    /// The watchdog's own direct URL (`None`: the pool's server).
    pub watchdog_url: Option<String>,
    /// How the guarded pool opens TLS (`DATABASE_URL`'s `sslmode`; plain for a local server).
    pub tls: TlsConnector,
    /// Per-user limits shared in this Redis, in `full` mode.
    pub redis: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            pool_max: 20,
            mode: GuardMode::Full,
            statement_timeout: Duration::from_secs(30),
            guard_config: GuardConfig::default(),
            watchdog: WatchdogConfig::default(),
            trust_user_header: true,
            instance: None,
            watchdog_url: None,
            tls: TlsConnector::plain(),
            redis: None,
        }
    }
}

/// A built app: its router and what it runs on.
pub struct App {
    pub router: Router,
    pub guard: Option<Guard>,
    pub watchdog: Option<WatchdogHandle>,
    /// The pool the app uses (behind the guard or bare).
    pub pool: Pool,
}

#[derive(Clone)]
struct AppState {
    pool: Pool,
    guarded: bool,
}

impl FromRef<AppState> for Pool {
    fn from_ref(s: &AppState) -> Pool {
        s.pool.clone()
    }
}

/// Creates the app's tables and sample rows (idempotent).
pub async fn prepare_schema(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sessions (
                 user_id text PRIMARY KEY, token text NOT NULL, last_seen timestamptz NOT NULL);
             CREATE TABLE IF NOT EXISTS tasks (
                 id bigint PRIMARY KEY, title text NOT NULL, assignee text,
                 status text NOT NULL DEFAULT 'open');
             INSERT INTO tasks (id, title)
                 SELECT g, 'task ' || g FROM generate_series(1, 1000) g
                 ON CONFLICT DO NOTHING;
             CREATE TABLE IF NOT EXISTS feed (
                 id bigserial PRIMARY KEY, body text NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO feed (body)
                 SELECT 'message ' || g FROM generate_series(1, 200) g
                 WHERE NOT EXISTS (SELECT 1 FROM feed);",
        )
        .await?;
    crate::spam::create_schema(client).await?;
    let empty: i64 = client
        .query_one("SELECT count(*) FROM messages", &[])
        .await?
        .get(0);
    if empty == 0 {
        crate::spam::seed_messages(client, crate::spam::DEFAULT_READY_SPAM, 42).await?;
    }
    Ok(())
}

/// Builds the app over `pg` in `options.mode`.
pub async fn build(
    pg: tokio_postgres::Config,
    options: &AppOptions,
    metrics: PrometheusHandle,
) -> Result<App, Box<dyn std::error::Error>> {
    let pool_options = PoolOptions {
        max_size: options.pool_max,
        statement_timeout: options.statement_timeout,
        application_name: "poolguard-demo".into(),
        instance: options.instance.clone(),
        ..PoolOptions::default()
    };
    let guard = match options.mode {
        GuardMode::Full => Some(
            Guard::builder_for_tls(pg.clone(), options.tls.clone(), &pool_options)?
                .config(options.guard_config.clone())
                .build()?,
        ),
        _ => None,
    };
    let pool = match &guard {
        Some(g) => g.pool().clone(),
        // The bare pool as a team would set it up by default: no session timeouts, deadpool's
        // default (unbounded) wait.
        None => {
            let manager = deadpool_postgres::Manager::new(pg.clone(), options.tls.clone());
            Pool::builder(manager).max_size(options.pool_max).build()?
        }
    };
    if let (Some(guard), Some(url)) = (&guard, &options.redis) {
        let shared = guard
            .share_limits(poolguard::limit::redis::RedisLimits::new(url.as_str()))
            .await?;
        tracing::info!(
            instance = shared.instance(),
            "per-user limits shared in Redis at {url}"
        );
    }
    let watchdog = match &guard {
        Some(g) => {
            let mut builder = Watchdog::builder(g).config(options.watchdog.clone());
            if let Some(url) = &options.watchdog_url {
                builder = builder.url(url)?;
            }
            Some(builder.spawn()?)
        }
        None => None,
    };
    let state = AppState {
        pool: pool.clone(),
        guarded: guard.is_some(),
    };
    let critical = Router::new()
        .route("/api/auth/session", get(session))
        .route("/api/tasks/assign", post(assign_task));
    let standard = Router::new().route("/api/messages", get(messages));
    // Without the guard, the spam capture is the naive one: everything in one request, no
    // validation.
    let standard = match &guard {
        Some(_) => standard,
        None => standard.route("/api/spam/capture", post(naive_spam_capture)),
    };
    let non_critical = Router::new().route("/api/reports/activity", get(activity_report));
    let keyed = |layer: poolguard::GuardLayer| {
        if options.trust_user_header {
            layer.key_extractor(DefaultKeyExtractor::trusting_header(
                axum::http::HeaderName::from_static("x-user-id"),
                options.guard_config.limits.max_key_len,
            ))
        } else {
            layer
        }
    };
    if guard.is_none() {
        export_pool_gauges(&pool);
    }
    let api = match (&guard, options.mode) {
        (Some(g), _) => critical
            .route_layer(keyed(g.critical()))
            .merge(standard.route_layer(keyed(g.standard())))
            .merge(non_critical.route_layer(keyed(g.non_critical())))
            .merge(crate::spam::routes(g.clone(), crate::spam::policy()).with_state(())),
        (None, GuardMode::Generic) => critical.merge(standard).merge(non_critical).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(generic_error))
                .load_shed()
                .concurrency_limit(options.pool_max)
                .timeout(Duration::from_secs(10)),
        ),
        (None, _) => critical.merge(standard).merge(non_critical),
    };
    let health = match &guard {
        Some(g) => g.health_route(),
        None => get(bare_health),
    };
    let router = api
        .route("/health", health)
        .route("/metrics", poolguard::metrics_route(metrics))
        .with_state(state);
    Ok(App {
        router,
        guard,
        watchdog,
        pool,
    })
}

/// Without the guard nothing samples the pool: export the same pool gauges the guard does
/// (`db_connection_pool_*`), so a dashboard or alert compares the two modes on one scale.
/// Stops when the pool is dropped.
fn export_pool_gauges(pool: &Pool) {
    use poolguard::metrics::{POOL_ACTIVE, POOL_IDLE, POOL_MAX, POOL_WAITING};
    let weak = pool.weak();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while let Some(pool) = weak.upgrade() {
            let s = pool.status();
            drop(pool);
            metrics::gauge!(POOL_ACTIVE).set(s.size.saturating_sub(s.available) as f64);
            metrics::gauge!(POOL_MAX).set(s.max_size as f64);
            metrics::gauge!(POOL_IDLE).set(s.available as f64);
            metrics::gauge!(POOL_WAITING).set(s.waiting as f64);
            tick.tick().await;
        }
    });
}

async fn generic_error(err: BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        (StatusCode::GATEWAY_TIMEOUT, "request timed out").into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response()
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
    }
}

/// A connection: through the guard in `full` mode, straight from the pool otherwise.
enum Db {
    Guarded(Conn),
    Bare(deadpool_postgres::Object),
}

impl FromRequestParts<AppState> for Db {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.guarded {
            Ok(Db::Guarded(Conn::from_request_parts(parts, state).await?))
        } else {
            Ok(Db::Bare(state.pool.get().await.map_err(AppError::Pool)?))
        }
    }
}

impl Db {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, AppError> {
        match self {
            Db::Guarded(c) => Ok(c.query(sql, params).await?),
            Db::Bare(c) => c.query(sql, params).await.map_err(AppError::Db),
        }
    }
}

/// What a handler can fail with.
pub enum AppError {
    Guard(poolguard::Error),
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
}

impl From<poolguard::Error> for AppError {
    fn from(e: poolguard::Error) -> Self {
        AppError::Guard(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Guard(e) => e.into_response(),
            // What an unguarded app typically does: a 500 for anything the pool throws.
            AppError::Pool(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("database unavailable: {e}"),
            )
                .into_response(),
            AppError::Db(e) => {
                let status = if e.code().map(|c| c.code()) == Some(poolguard::QUERY_CANCELED) {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (status, format!("database error: {e}")).into_response()
            }
        }
    }
}

fn user_of(headers: &HeaderMap) -> String {
    headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .chars()
        .take(64)
        .collect()
}

/// Critical: sign-in / session refresh.
async fn session(headers: HeaderMap, db: Db) -> Result<Json<serde_json::Value>, AppError> {
    let user = user_of(&headers);
    let rows = db
        .query(
            "INSERT INTO sessions (user_id, token, last_seen)
             VALUES ($1, md5($1 || clock_timestamp()::text), now())
             ON CONFLICT (user_id) DO UPDATE SET last_seen = now()
             RETURNING token",
            &[&user],
        )
        .await?;
    let token: String = rows[0].get(0);
    Ok(Json(json!({ "user": user, "token": token })))
}

/// Critical: assign a task to the caller.
async fn assign_task(headers: HeaderMap, db: Db) -> Result<Json<serde_json::Value>, AppError> {
    let user = user_of(&headers);
    let pick = 1
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos() as i64)
            % 1000;
    let rows = db
        .query(
            "UPDATE tasks SET assignee = $1, status = 'assigned' WHERE id = $2 RETURNING id, title",
            &[&user, &pick],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Json(json!({ "task": null, "assignee": user })));
    };
    let (id, title): (i64, String) = (row.get(0), row.get(1));
    Ok(Json(
        json!({ "task": id, "title": title, "assignee": user }),
    ))
}

/// Standard: the message feed.
async fn messages(db: Db) -> Result<Json<serde_json::Value>, AppError> {
    let rows = db
        .query("SELECT id, body FROM feed ORDER BY id DESC LIMIT 20", &[])
        .await?;
    let items: Vec<_> = rows
        .iter()
        .map(|r| json!({ "id": r.get::<_, i64>(0), "body": r.get::<_, String>(1) }))
        .collect();
    Ok(Json(json!({ "messages": items })))
}

/// The activity report's query: it holds its connection about `$1` ms; `$2` names the
/// widget asking (a distinct question per widget).
const ACTIVITY_REPORT: &str = "SELECT count(*), pg_sleep($1::float8 / 1000.0)::text, $2::text
     FROM tasks WHERE status = 'assigned'";

/// Non-critical: an activity report whose query holds its connection about `ms`. Behind the
/// guard it runs through single-flight: widgets asking the same question (same `ms`, same
/// `widget`) at the same time share one execution.
async fn activity_report(
    Query(q): Query<HashMap<String, String>>,
    State(state): State<AppState>,
    ctx: Option<poolguard::RequestContext>,
    route: Option<axum::extract::MatchedPath>,
) -> Result<Json<serde_json::Value>, AppError> {
    let ms: f64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(200.0);
    let widget = q.get("widget").cloned().unwrap_or_default();
    let assigned: i64 = match ctx {
        Some(ctx) => {
            let context = poolguard::AcquireContext {
                user: ctx.user.clone(),
                route: route.map(|r| std::sync::Arc::from(r.as_str())),
            };
            let rows = ctx
                .guard
                .query_shared_until(
                    ctx.class,
                    context,
                    ctx.deadline,
                    ACTIVITY_REPORT,
                    &[&ms, &widget],
                )
                .await?;
            rows[0].get(0)
        }
        None => {
            let conn = state.pool.get().await.map_err(AppError::Pool)?;
            let rows = conn
                .query(ACTIVITY_REPORT, &[&ms, &widget])
                .await
                .map_err(AppError::Db)?;
            rows[0].get(0)
        }
    };
    Ok(Json(json!({ "assigned": assigned, "held_ms": ms })))
}

/// The spam capture as it was before: one request scans every matching READY *and* PROMOTED
/// message and moves it to SPAM_REVIEW, without checking the transition.
async fn naive_spam_capture(
    Query(q): Query<HashMap<String, String>>,
    db: Db,
) -> Result<Json<serde_json::Value>, AppError> {
    let item_ms: f64 = q
        .get("item_cost_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::spam::DEFAULT_ITEM_COST_MS as f64);
    let patterns: Vec<String> = crate::spam::SPAM_PATTERNS
        .iter()
        .map(|p| p.to_string())
        .collect();
    let rows = db
        .query(
            "SELECT id FROM messages WHERE status IN ('READY', 'PROMOTED') AND body ILIKE ANY($1) ORDER BY id",
            &[&patterns],
        )
        .await?;
    let mut captured = 0u64;
    for row in &rows {
        let id: i64 = row.get(0);
        db.query(
            "UPDATE messages SET status = 'SPAM_REVIEW' WHERE id = $1 RETURNING pg_sleep($2::float8 / 1000.0)::text",
            &[&id, &item_ms],
        )
        .await?;
        captured += 1;
    }
    Ok(Json(json!({ "captured": captured, "done": true })))
}

/// `/health` for the unguarded modes: the pool status and a `SELECT 1` through the pool.
async fn bare_health(State(pool): State<Pool>) -> (StatusCode, Json<serde_json::Value>) {
    let s = pool.status();
    let db = tokio::time::timeout(Duration::from_secs(2), async {
        let c = pool.get().await.map_err(|e| e.to_string())?;
        c.simple_query("SELECT 1").await.map_err(|e| e.to_string())
    })
    .await;
    let (status, database) = match db {
        Ok(Ok(_)) => (StatusCode::OK, json!({ "status": "ok" })),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unhealthy", "error": e }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unhealthy", "error": "no connection within 2 s" }),
        ),
    };
    let healthy = status == StatusCode::OK;
    (
        status,
        Json(json!({
            "status": if healthy { "ok" } else { "degraded" },
            "database": database,
            "pool": { "size": s.size, "available": s.available, "waiting": s.waiting, "max": s.max_size },
        })),
    )
}
