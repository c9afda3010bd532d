//! axum integration: the [`Conn`] extractor, error responses, and the `/health` and
//! `/metrics` routes, one file each.

mod extractor;
mod health;
#[cfg(feature = "prometheus")]
mod metrics;
mod response;
mod route_names;

pub use extractor::Conn;
#[cfg(feature = "prometheus")]
pub use metrics::metrics_route;
