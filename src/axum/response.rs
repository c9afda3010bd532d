//! Error responses: an [`Error`] answered with its status, a JSON reason and, for the errors
//! worth retrying, `Retry-After`.

use crate::error::{self, Error};
use axum::response::{IntoResponse, Response};
use axum::Json;

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
