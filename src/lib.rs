#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod config;
mod criticality;
pub mod events;
pub mod incident;
pub mod metrics;
pub mod monitor;
pub mod report;

pub use config::{BuildError, ClassTimeouts, GuardConfig, UserLimits};
pub use criticality::Criticality;
pub use monitor::Level;
