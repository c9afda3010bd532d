//! [`BuildError`]: why a guard, pool or cluster could not be built.

use std::fmt;

/// Why a guard, pool or cluster could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration field holds a value the guard cannot work with.
    InvalidConfig {
        /// The field, as it is spelled in [`GuardConfig`](crate::config::GuardConfig) or
        /// [`PoolOptions`](crate::pool::PoolOptions).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `build()` was called outside a Tokio runtime; the guard spawns its sampler there.
    NoRuntime,
    /// deadpool refused to build the pool.
    Pool(String),
}

impl BuildError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        BuildError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidConfig { field, reason } => {
                write!(f, "invalid poolguard config: `{field}` {reason}")
            }
            BuildError::NoRuntime => f.write_str(
                "poolguard must be built inside a Tokio runtime (it spawns its sampler task)",
            ),
            BuildError::Pool(e) => write!(f, "could not build the connection pool: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_names_field() {
        let e = BuildError::field("queue_depth", "must be at least 1");
        assert_eq!(
            e.to_string(),
            "invalid poolguard config: `queue_depth` must be at least 1"
        );
    }
}
