//! The `/metrics` route: the Prometheus scrape.

use axum::routing::{get, MethodRouter};

/// A `GET` route rendering the Prometheus scrape from `handle`.
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
