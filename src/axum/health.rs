//! The `/health` route: [`Guard::health`] as JSON.

use crate::guard::Guard;
use axum::routing::{get, MethodRouter};
use axum::Json;

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
