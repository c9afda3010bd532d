#![doc = include_str!("../README.md")]
//!
//! Every feature in the Features table builds on its own
//! (`cargo check --no-default-features --features <name>`); features only add items. On
//! docs.rs each feature-gated item carries a badge naming its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod admission;
#[doc = include_str!("../docs/architecture.md")]
pub mod architecture {}
#[cfg(feature = "axum")]
mod axum;
pub mod batch;
mod cancel;
mod clock;
mod config;
pub mod controller;
mod criticality;
#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
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
mod resize;
pub mod session;
pub mod single_flight;
mod stripes;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tls;
pub mod transition;
mod u64_hash;
pub mod watchdog;

#[cfg(all(feature = "axum", feature = "prometheus"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "axum", feature = "prometheus"))))]
pub use crate::axum::metrics_route;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::axum::Conn;
pub use admission::{GuardedConn, GuardedTransaction};
pub use config::{
    BuildError, ClassTimeouts, GuardConfig, UserLimits, FALLBACK_QUERY_DEADLINE,
    MAX_EARLY_RETRY_DELAY, QUERY_DEADLINE_MARGIN,
};
pub use criticality::Criticality;
pub use error::{describe_db_error, describe_pool_error, Error, QUERY_CANCELED};
#[doc(hidden)]
pub use guard::HeldSlot;
pub use guard::{AcquireContext, Guard, GuardBuilder, GuardStatus};
pub use health::{DatabaseHealth, HealthReport, PoolHealth};
pub use layer::{GuardLayer, RequestContext};
pub use limit::{DefaultKeyExtractor, KeyExtractor, UserKey};
pub use monitor::Level;
pub use pool::{build_pool, build_pool_tls, PoolOptions};
pub use rejection::{Rejection, RejectionKind};
