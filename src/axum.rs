//! axum integration: the [`Conn`] extractor, error responses, and the `/health` and
//! `/metrics` routes.

use crate::layer::RequestContext;
use crate::{error, AcquireContext, Criticality, Error, Guard, GuardedConn};
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A guarded connection acquired with the route's class.
///
/// The route must be under a guard layer ([`Guard::critical`], [`Guard::standard`],
/// [`Guard::non_critical`]); without one the request is answered 500, naming the problem.
/// Refusals become 429/503 responses with `Retry-After`.
#[derive(Debug)]
pub struct Conn(pub GuardedConn);

impl<S: Send + Sync> FromRequestParts<S> for Conn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let ctx = parts
            .extensions
            .get::<RequestContext>()
            .ok_or(Error::MissingLayer)?;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| Arc::<str>::from(p.as_str()));
        let conn = ctx
            .guard
            .acquire_until(
                ctx.class,
                AcquireContext {
                    user: ctx.user.clone(),
                    route,
                },
                ctx.deadline,
            )
            .await?;
        Ok(Conn(conn))
    }
}

impl Deref for Conn {
    type Target = GuardedConn;

    fn deref(&self) -> &GuardedConn {
        &self.0
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut GuardedConn {
        &mut self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Criticality {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .map(|c| c.class)
            .unwrap_or_default())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let reason = match &self {
            Error::Rejected(r) => return r.to_static_response(),
            // The same SQLSTATE (57014) covers the timeout and a cancel (the watchdog's).
            Error::QueryCanceled(e) if !error::stopped_by_statement_timeout(e) => "query_cancelled",
            Error::QueryCanceled(_) => "statement_timeout",
            Error::Db(_) => "database_error",
            Error::QueryDeadline { .. } => "query_deadline",
            Error::ConnectionLost(_) => "connection_lost",
            Error::MissingLayer => "route_not_guarded",
        };
        if let Error::Db(e) = &self {
            tracing::warn!(target: "poolguard", error = %error::describe_db_error(e), "database error answered 500");
        }
        if let Error::ConnectionLost(e) = &self {
            tracing::warn!(target: "poolguard", error = %error::describe_db_error(e), "connection lost under a query; answered 503");
        }
        let body = serde_json::json!({ "error": reason });
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl Guard {
    /// A `GET` route serving [`Guard::health`] as JSON: 200 while the database answers,
    /// 503 when it does not.
    pub fn health_route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let guard = self.clone();
        get(move || {
            let guard = guard.clone();
            async move {
                let report = guard.health().await;
                let status = if report.is_available() {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                (status, Json(report))
            }
        })
    }
}

/// A `GET` route rendering the Prometheus scrape from `handle`.
#[cfg(feature = "prometheus")]
pub fn metrics_route<S: Clone + Send + Sync + 'static>(
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> MethodRouter<S> {
    get(move || {
        let handle = handle.clone();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                handle.render(),
            )
        }
    })
}
