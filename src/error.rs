//! The error type of acquisitions and of queries run through a guarded connection.

use crate::Rejection;
use std::fmt;

/// SQLSTATE of a statement stopped by `statement_timeout` (or a cancel request).
pub const QUERY_CANCELED: &str = "57014";

/// Whether a 57014 error came from `statement_timeout` (and not from a cancel request, such
/// as the watchdog's).
pub(crate) fn stopped_by_statement_timeout(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.message().contains("statement timeout"))
}

/// What can go wrong when acquiring a guarded connection or running a query on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The guard refused the acquisition (answered 429 or 503 with `Retry-After`).
    Rejected(Rejection),
    /// A statement was stopped by Postgres with SQLSTATE 57014: it ran past
    /// `statement_timeout`, or it was cancelled (by the watchdog, say); answered 504 with
    /// `statement_timeout` or `query_cancelled` as the reason.
    StatementTimeout(tokio_postgres::Error),
    /// Any other database error; answered 500.
    Db(tokio_postgres::Error),
    /// A handler asked for a guarded connection on a route without a guard layer; answered
    /// 500.
    MissingLayer,
}

impl Error {
    /// Classifies a query error: SQLSTATE 57014 becomes [`Error::StatementTimeout`].
    pub fn from_query(e: tokio_postgres::Error) -> Self {
        if e.code().map(|c| c.code()) == Some(QUERY_CANCELED) {
            Error::StatementTimeout(e)
        } else {
            Error::Db(e)
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Error::Rejected(r) => r.status(),
            Error::StatementTimeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            Error::Db(_) | Error::MissingLayer => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is a statement timeout.
    pub fn is_statement_timeout(&self) -> bool {
        matches!(self, Error::StatementTimeout(_))
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
            Error::StatementTimeout(e) => write!(f, "statement timed out: {e}"),
            Error::Db(e) => write!(f, "database error: {e}"),
            Error::MissingLayer => f.write_str(
                "no poolguard layer on this route: add .route_layer(guard.standard()) or similar",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::StatementTimeout(e) | Error::Db(e) => Some(e),
            Error::MissingLayer => None,
        }
    }
}
