//! [`ClusterError`] and the small constructors that wrap I/O and PostgreSQL errors in it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a [`TestCluster`](super::TestCluster) could not be started, stopped or reached.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// No directory holding both `initdb` and `postgres` (in a working state) was found.
    BinariesNotFound {
        /// The directories that were looked in, in order.
        searched: Vec<PathBuf>,
    },
    /// A file-system or process operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A helper command (`initdb`, `cp`, ..) exited unsuccessfully.
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard output and error.
        output: String,
    },
    /// The server process exited while starting.
    ServerExited {
        /// How it ended.
        status: ExitStatus,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server did not accept a connection in time.
    StartTimeout {
        /// How long was waited.
        waited: Duration,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// Talking to the server failed.
    Postgres {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: tokio_postgres::Error,
    },
    /// `DATABASE_URL` is not a usable connection string.
    InvalidDatabaseUrl {
        /// Why it was rejected.
        reason: String,
    },
    /// The operation needs a server this process started, but `DATABASE_URL` was used.
    External {
        /// The operation that was refused.
        operation: &'static str,
    },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::BinariesNotFound { searched } => {
                write!(
                    f,
                    "PostgreSQL server binaries not found (looked on PATH, in `pg_config --bindir`, \
                     under /usr/lib/postgresql/*/bin). Install them: `apt-get install -y postgresql`, \
                     or set DATABASE_URL to a server you own."
                )?;
                if !searched.is_empty() {
                    let dirs: Vec<String> =
                        searched.iter().map(|d| d.display().to_string()).collect();
                    write!(f, " Searched: {}.", dirs.join(", "))?;
                }
                Ok(())
            }
            ClusterError::Io { context, source } => write!(f, "{context}: {source}"),
            ClusterError::CommandFailed {
                command,
                status,
                output,
            } => write!(f, "`{command}` failed ({status}):\n{output}"),
            ClusterError::ServerExited { status, log_tail } => write!(
                f,
                "the PostgreSQL server exited while starting ({status}); end of its log:\n{log_tail}"
            ),
            ClusterError::StartTimeout { waited, log_tail } => write!(
                f,
                "the PostgreSQL server did not accept connections within {waited:?}; end of its log:\n{log_tail}"
            ),
            ClusterError::Postgres { context, source } => write!(f, "{context}: {source}"),
            ClusterError::InvalidDatabaseUrl { reason } => {
                write!(f, "DATABASE_URL is not usable: {reason}")
            }
            ClusterError::External { operation } => write!(
                f,
                "`{operation}` is not available: the cluster is a database on the server named by \
                 DATABASE_URL, which this process does not control (unset DATABASE_URL to get a \
                 local server)"
            ),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Io { source, .. } => Some(source),
            ClusterError::Postgres { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(super) fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

pub(super) fn pg_error(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Postgres { context, source }
}
