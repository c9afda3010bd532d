#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod admission;
#[cfg(feature = "axum")]
mod axum;
pub mod batch;
mod breaker;
mod config;
mod criticality;
#[cfg(feature = "admin")]
pub mod dashboard;
mod error;
pub mod events;
mod guard;
mod health;
pub mod identity;
pub mod incident;
pub mod layer;
pub mod limit;
pub mod metrics;
pub mod monitor;
mod pool;
mod rejection;
pub mod report;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod transition;
pub mod watchdog;

#[cfg(all(feature = "axum", feature = "prometheus"))]
pub use crate::axum::metrics_route;
#[cfg(feature = "axum")]
pub use crate::axum::Conn;
pub use admission::{GuardedConn, GuardedTransaction};
pub use config::{
    BuildError, ClassTimeouts, GuardConfig, UserLimits, FALLBACK_QUERY_DEADLINE,
    QUERY_DEADLINE_MARGIN,
};
pub use criticality::Criticality;
pub use error::{describe_db_error, describe_pool_error, Error, QUERY_CANCELED};
pub use guard::{AcquireContext, Guard, GuardBuilder, GuardStatus};
pub use health::{DatabaseHealth, HealthReport, PoolHealth};
pub use layer::{GuardLayer, RequestContext};
pub use limit::{DefaultKeyExtractor, KeyExtractor, UserKey};
pub use monitor::Level;
pub use pool::{build_pool, build_pool_tls, PoolOptions};
pub use rejection::{Rejection, RejectionKind};
