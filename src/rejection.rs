//! Why the guard did not serve a request, and how that becomes an HTTP response.

use crate::criticality::Criticality;
use std::fmt;
use std::sync::OnceLock;
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
        let body = match self.static_body() {
            Some(body) => body.to_owned(),
            None => self.body_text(),
        };
        self.response_with(B::from(body))
    }

    /// [`to_response`](Rejection::to_response) without formatting anything: the body is a
    /// ready-made `&'static str` for `Retry-After` up to a minute (for body types such as
    /// axum's that take one without copying) and the header values are precomputed, so
    /// answering a refusal allocates only the response's header map.
    pub fn to_static_response<B: From<String> + From<&'static str>>(&self) -> http::Response<B> {
        match self.static_body() {
            Some(body) => self.response_with(B::from(body)),
            None => self.response_with(B::from(self.body_text())),
        }
    }

    fn body_text(&self) -> String {
        body_text(self.reason(), self.class, self.retry_after_secs())
    }

    /// The ready-made body for this refusal, when its `Retry-After` is in the common range.
    fn static_body(&self) -> Option<&'static str> {
        let secs = self.retry_after_secs() as usize;
        if secs > COMMON_SECS {
            return None;
        }
        let table = STATIC_BODIES.get_or_init(|| {
            let mut bodies = Vec::with_capacity(KINDS.len() * 3 * COMMON_SECS);
            for reason in KINDS {
                for class in Criticality::ALL {
                    for secs in 1..=COMMON_SECS as u64 {
                        bodies.push(body_text(reason, class, secs));
                    }
                }
            }
            bodies
        });
        let kind = KINDS.iter().position(|k| *k == self.reason())?;
        let at = (kind * 3 + self.class.index()) * COMMON_SECS + secs - 1;
        table.get(at).map(String::as_str)
    }

    fn response_with<B>(&self, body: B) -> http::Response<B> {
        let secs = self.retry_after_secs();
        let mut headers = http::HeaderMap::with_capacity(8);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let retry = number_value(secs);
        if let RejectionKind::RateLimited { limit } | RejectionKind::InFlightLimit { limit } =
            self.kind
        {
            headers.insert(RATELIMIT_LIMIT, number_value(u64::from(limit)));
            headers.insert(RATELIMIT_REMAINING, number_value(0));
            headers.insert(RATELIMIT_RESET, retry.clone());
        }
        headers.insert(http::header::RETRY_AFTER, retry);
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status();
        *response.headers_mut() = headers;
        response
    }
}

/// `Retry-After` values (in seconds) with a ready-made body and header value.
const COMMON_SECS: usize = 60;
/// Numbers with a ready-made header value (`Retry-After` seconds, `RateLimit-*` limits).
const COMMON_NUMBERS: u64 = 1024;
/// Every reason, in the order of the ready-made bodies.
const KINDS: [&str; 6] = [
    "shed",
    "queue_full",
    "queue_timeout",
    "rate_limited",
    "in_flight_limit",
    "pool_unavailable",
];
const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

static STATIC_BODIES: OnceLock<Vec<String>> = OnceLock::new();
static NUMBER_VALUES: OnceLock<Vec<http::HeaderValue>> = OnceLock::new();

fn body_text(reason: &str, class: Criticality, secs: u64) -> String {
    format!(r#"{{"error":"{reason}","class":"{class}","retry_after":{secs}}}"#)
}

/// The header value of `n`: a shared ready-made one (cloned without allocating) for
/// `0..1024`, formatted otherwise.
fn number_value(n: u64) -> http::HeaderValue {
    let table =
        NUMBER_VALUES.get_or_init(|| (0..COMMON_NUMBERS).map(http::HeaderValue::from).collect());
    match table.get(n as usize) {
        Some(v) => v.clone(),
        None => http::HeaderValue::from(n),
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
    fn ready_made_and_formatted_responses_agree() {
        for secs in [1, 59, 60, 61, 3600] {
            for kind in [
                RejectionKind::Shed,
                RejectionKind::QueueTimeout,
                RejectionKind::InFlightLimit { limit: 5000 },
                RejectionKind::RateLimited { limit: 7 },
            ] {
                let r = Rejection {
                    kind,
                    class: Criticality::Critical,
                    retry_after: Duration::from_secs(secs),
                };
                let owned: http::Response<String> = r.to_response();
                let ready: http::Response<String> = r.to_static_response();
                assert_eq!(owned.status(), ready.status());
                assert_eq!(owned.headers(), ready.headers());
                assert_eq!(owned.body(), &r.body_text());
                assert_eq!(ready.body(), &r.body_text());
                assert_eq!(owned.headers()["retry-after"], secs.to_string().as_str());
            }
        }
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
