//! Why the guard did not serve a request, and how that becomes an HTTP response.

use crate::Criticality;
use std::fmt;
use std::time::Duration;

/// What kind of refusal a [`Rejection`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// Refused at once: the request could not start before its deadline (its place in the
    /// queue over the measured drain rate lies past it), 503 with the estimate as
    /// `Retry-After`.
    Shed,
    /// The admission queue is at its depth limit (503).
    QueueFull,
    /// The acquisition reached its deadline without getting a slot (503).
    QueueTimeout,
    /// The caller's rate limit is spent (429).
    RateLimited {
        /// The burst size of the quota in force.
        limit: u32,
    },
    /// The caller already has the most requests in flight it may have (429).
    InFlightLimit {
        /// The in-flight cap in force.
        limit: u32,
    },
    /// A slot was granted but the pool could not hand out a connection in time (503).
    PoolUnavailable,
}

/// A refusal decided by the admission state: what kind, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) kind: RejectionKind,
    pub(crate) retry_after: Duration,
}

/// A request the guard refused, with the time after which retrying makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub kind: RejectionKind,
    /// The class of the refused request.
    pub class: Criticality,
    /// When to retry; sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Duration,
}

impl Rejection {
    /// The HTTP status for this refusal: 429 for per-user limits, 503 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            RejectionKind::RateLimited { .. } | RejectionKind::InFlightLimit { .. } => {
                http::StatusCode::TOO_MANY_REQUESTS
            }
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable reason, used in response bodies.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            RejectionKind::Shed => "shed",
            RejectionKind::QueueFull => "queue_full",
            RejectionKind::QueueTimeout => "queue_timeout",
            RejectionKind::RateLimited { .. } => "rate_limited",
            RejectionKind::InFlightLimit { .. } => "in_flight_limit",
            RejectionKind::PoolUnavailable => "pool_unavailable",
        }
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis() as u64;
        ms.div_ceil(1000).max(1)
    }

    /// Builds the response: status, `Retry-After`, `RateLimit-*` for per-user limits, and a
    /// small JSON body. Works for any body type that can be made from a `String`.
    pub fn to_response<B: From<String>>(&self) -> http::Response<B> {
        let secs = self.retry_after_secs();
        let body = format!(
            r#"{{"error":"{}","class":"{}","retry_after":{}}}"#,
            self.reason(),
            self.class,
            secs
        );
        let mut builder = http::Response::builder()
            .status(self.status())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::RETRY_AFTER, secs);
        if let RejectionKind::RateLimited { limit } | RejectionKind::InFlightLimit { limit } =
            self.kind
        {
            builder = builder
                .header("ratelimit-limit", limit)
                .header("ratelimit-remaining", 0)
                .header("ratelimit-reset", secs);
        }
        builder
            .body(B::from(body))
            .expect("static headers are valid")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} request refused ({}); retry after {} s",
            self.class,
            self.reason(),
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_is_429_with_headers() {
        let r = Rejection {
            kind: RejectionKind::RateLimited { limit: 20 },
            class: Criticality::Standard,
            retry_after: Duration::from_millis(1200),
        };
        let resp: http::Response<String> = r.to_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["ratelimit-limit"], "20");
        assert!(resp.body().contains(r#""error":"rate_limited""#));
    }

    #[test]
    fn shed_is_503_with_at_least_one_second() {
        let r = Rejection {
            kind: RejectionKind::Shed,
            class: Criticality::NonCritical,
            retry_after: Duration::ZERO,
        };
        let resp: http::Response<String> = r.to_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
}
