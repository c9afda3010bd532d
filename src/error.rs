//! The error type of acquisitions and of queries run through a guarded connection.

use crate::rejection::Rejection;
use std::fmt;
use std::time::Duration;

/// SQLSTATE of a statement stopped by `statement_timeout` (or a cancel request).
pub const QUERY_CANCELED: &str = "57014";

/// Whether a 57014 error came from `statement_timeout` (and not from a cancel request, such
/// as the watchdog's).
pub(crate) fn stopped_by_statement_timeout(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.message().contains("statement timeout"))
}

/// A database error in words, with what the server said: `tokio_postgres::Error`'s own
/// `Display` is only `db error` for an error the server sent; this adds its severity,
/// SQLSTATE, message, detail and hint (`db error: FATAL 53300: sorry, too many clients
/// already`). Other errors (I/O, closed connection, timeouts) keep their text and cause.
pub fn describe_db_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{e}: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

/// A pool error in words: a connection the pool could not open says what the server
/// answered (see [`describe_db_error`]).
pub fn describe_pool_error(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(pg) => format!("could not open a connection: {}", describe_db_error(pg)),
        other => other.to_string(),
    }
}

/// Whether the error is the connection's socket failing (its source is an I/O error).
fn io_failure(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// What can go wrong when acquiring a guarded connection or running a query on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The guard refused the acquisition (answered 429 or 503 with `Retry-After`).
    Rejected(Rejection),
    /// A statement was stopped by Postgres with SQLSTATE 57014 (`query_canceled`): it ran
    /// past `statement_timeout`, or a cancel request stopped it (the watchdog's, say);
    /// answered 504 with `statement_timeout` or `query_cancelled` as the reason.
    /// [`Error::hit_statement_timeout`] tells the two apart.
    ///
    /// Named `StatementTimeout` before 0.2.0; a match on the old name no longer compiles
    /// (an enum variant has no alias), rather than silently never matching.
    QueryCanceled(tokio_postgres::Error),
    /// Any other database error; answered 500.
    Db(tokio_postgres::Error),
    /// The connection was lost under the query: closed by the network or the server, or
    /// its backend was terminated or shut down (SQLSTATE class 08, 57P01..57P05); answered
    /// 503 with `Retry-After`, since a retry gets another connection. The connection is
    /// discarded by the pool.
    ConnectionLost(tokio_postgres::Error),
    /// A tracked query got no answer within the guard's client-side
    /// [`query_deadline`](crate::GuardConfig::query_deadline) (a stalled network, a server
    /// that stopped answering); answered 504 with `query_deadline` as the reason. The query
    /// was cancelled on the server and its connection is checked before reuse.
    QueryDeadline {
        /// The deadline that passed.
        after: Duration,
    },
    /// A handler asked for a guarded connection on a route without a guard layer; answered
    /// 500.
    MissingLayer,
}

impl Error {
    /// Classifies a query error: SQLSTATE 57014 becomes [`Error::QueryCanceled`]; a lost
    /// connection (closed, an I/O error, SQLSTATE class 08 or 57P01..57P05) becomes
    /// [`Error::ConnectionLost`].
    pub fn from_query(e: tokio_postgres::Error) -> Self {
        match e.code().map(|c| c.code()) {
            Some(QUERY_CANCELED) => Error::QueryCanceled(e),
            Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                Error::ConnectionLost(e)
            }
            Some(_) => Error::Db(e),
            None if e.is_closed() || io_failure(&e) => Error::ConnectionLost(e),
            None => Error::Db(e),
        }
    }

    /// How long a client should wait before retrying, for the errors answered 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Rejected(r) => Some(r.retry_after),
            Error::ConnectionLost(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Error::Rejected(r) => r.status(),
            Error::QueryCanceled(_) | Error::QueryDeadline { .. } => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            Error::ConnectionLost(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            Error::Db(_) | Error::MissingLayer => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether Postgres stopped the statement with SQLSTATE 57014 ([`Error::QueryCanceled`]):
    /// by `statement_timeout` or by a cancel request.
    pub fn is_query_canceled(&self) -> bool {
        matches!(self, Error::QueryCanceled(_))
    }

    /// Whether Postgres stopped the statement because it ran past `statement_timeout` (and
    /// not because of a cancel request, such as the watchdog's).
    pub fn hit_statement_timeout(&self) -> bool {
        matches!(self, Error::QueryCanceled(e) if stopped_by_statement_timeout(e))
    }

    /// Whether Postgres stopped the statement with SQLSTATE 57014, whether by
    /// `statement_timeout` or by a cancel request.
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `is_query_canceled` (true for every SQLSTATE 57014, cancels too); \
                `hit_statement_timeout` is true for the timeout alone"
    )]
    pub fn is_statement_timeout(&self) -> bool {
        self.is_query_canceled()
    }

    /// The rejection, if the guard refused the request.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Error::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::from_query(e)
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        Error::Rejected(r)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rejected(r) => r.fmt(f),
            Error::QueryCanceled(e) => {
                write!(f, "query canceled: {}", describe_db_error(e))
            }
            Error::Db(e) => write!(f, "database error: {}", describe_db_error(e)),
            Error::ConnectionLost(e) => {
                write!(f, "lost the database connection: {}", describe_db_error(e))
            }
            Error::QueryDeadline { after } => write!(
                f,
                "no answer from the database within the query deadline ({} ms)",
                after.as_millis()
            ),
            Error::MissingLayer => f.write_str(
                "no poolguard layer on this route: add .route_layer(guard.standard()) or similar \
                 (a layer built with context_extension(false) must run the handler in its own \
                 task: keep the default if a layer between them spawns the handler's future)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::QueryCanceled(e) | Error::Db(e) | Error::ConnectionLost(e) => Some(e),
            Error::MissingLayer | Error::QueryDeadline { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_a_gateway_timeout() {
        let e = Error::QueryDeadline {
            after: Duration::from_millis(1500),
        };
        assert_eq!(e.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert!(e.to_string().contains("1500 ms"));
    }

    #[test]
    #[allow(deprecated)]
    fn the_old_method_name_still_answers() {
        let e = Error::MissingLayer;
        assert!(!e.is_statement_timeout());
        assert!(!e.is_query_canceled());
        assert!(!e.hit_statement_timeout());
    }
}
