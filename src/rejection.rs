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
        let secs = self.retry_after_secs();
        let body = match self.static_body(secs) {
            Some(body) => body.to_owned(),
            None => self.body_text(),
        };
        self.response_with(B::from(body), secs)
    }

    /// [`to_response`](Rejection::to_response) without formatting anything: the body is a
    /// ready-made `&'static str` for `Retry-After` up to a minute (for body types such as
    /// axum's that take one without copying) and the header values are precomputed, so
    /// answering a refusal allocates only the response's header map.
    pub fn to_static_response<B: From<String> + From<&'static str>>(&self) -> http::Response<B> {
        let secs = self.retry_after_secs();
        match self.static_body(secs) {
            Some(body) => self.response_with(B::from(body), secs),
            None => self.response_with(B::from(self.body_text()), secs),
        }
    }

    fn body_text(&self) -> String {
        body_text(self.reason(), self.class, self.retry_after_secs())
    }

    /// The ready-made body for this refusal, when its `Retry-After` (`secs`, as
    /// [`retry_after_secs`](Self::retry_after_secs) says) is in the common range.
    fn static_body(&self, secs: u64) -> Option<&'static str> {
        let secs = secs as usize;
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
        let at = (self.kind_index() * 3 + self.class.index()) * COMMON_SECS + secs - 1;
        table.get(at).map(String::as_str)
    }

    /// Where this refusal's reason is in [`KINDS`].
    fn kind_index(&self) -> usize {
        match self.kind {
            RejectionKind::Shed => 0,
            RejectionKind::QueueFull => 1,
            RejectionKind::QueueTimeout => 2,
            RejectionKind::RateLimited { .. } => 3,
            RejectionKind::InFlightLimit { .. } => 4,
            RejectionKind::PoolUnavailable => 5,
        }
    }

    /// The limit a 429 names in `RateLimit-Limit`; `None` for a 503.
    fn limit(&self) -> Option<u32> {
        match self.kind {
            RejectionKind::RateLimited { limit } | RejectionKind::InFlightLimit { limit } => {
                Some(limit)
            }
            _ => None,
        }
    }

    /// The response with `body`, for a `Retry-After` of `secs`.
    fn response_with<B>(&self, body: B, secs: u64) -> http::Response<B> {
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status();
        *response.headers_mut() = self.headers(secs);
        response
    }

    /// The response's headers for a `Retry-After` of `secs`: up to a minute a copy of a
    /// ready-made map (two allocations, no header hashed, every value static), built
    /// otherwise. A 429's map names its limit already for a limit under
    /// [`COMMON_NUMBERS`]; for a larger one the limit is written into the copy.
    fn headers(&self, secs: u64) -> http::HeaderMap {
        let limit = self.limit();
        if secs > COMMON_SECS as u64 {
            return built_headers(limit, secs);
        }
        let at = secs as usize - 1;
        let Some(limit) = limit else {
            return READY_UNAVAILABLE.get_or_init(|| ready_headers(None))[at].clone();
        };
        if let Some(ready) = READY_LIMITED.get(limit as usize) {
            return ready.get_or_init(|| ready_headers(Some(limit)))[at].clone();
        }
        let mut headers = READY_UNNAMED_LIMIT.get_or_init(|| ready_headers(Some(0)))[at].clone();
        // Found by walking the five entries: cheaper than hashing the name.
        if let Some((_, value)) = headers
            .iter_mut()
            .find(|(name, _)| **name == RATELIMIT_LIMIT)
        {
            *value = number_value(u64::from(limit));
        }
        headers
    }
}

/// `Retry-After` values (in seconds) with a ready-made body and header value.
const COMMON_SECS: usize = 60;
/// Numbers with a ready-made header value (`Retry-After` seconds, `RateLimit-*` limits).
const COMMON_NUMBERS: u64 = 1024;
/// Every reason, in the order of the ready-made bodies ([`Rejection::kind_index`]).
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
static NUMBER_TEXTS: OnceLock<Vec<String>> = OnceLock::new();
/// A 503's headers (`Content-Type` and `Retry-After`) for each `Retry-After` of
/// `1..=COMMON_SECS` seconds, at `[secs - 1]`.
static READY_UNAVAILABLE: OnceLock<Box<[http::HeaderMap]>> = OnceLock::new();
/// A 429's headers for each limit under [`COMMON_NUMBERS`] (at `[limit]`, made the first time
/// a refusal names that limit), by `Retry-After` as [`READY_UNAVAILABLE`].
static READY_LIMITED: [OnceLock<Box<[http::HeaderMap]>>; COMMON_NUMBERS as usize] =
    [const { OnceLock::new() }; COMMON_NUMBERS as usize];
/// A 429's headers with `RateLimit-Limit` left to fill in, for larger limits.
static READY_UNNAMED_LIMIT: OnceLock<Box<[http::HeaderMap]>> = OnceLock::new();

/// The headers of a refusal naming `limit` (a 429) or none (a 503) for each `Retry-After`
/// of `1..=COMMON_SECS` seconds, at `[secs - 1]`.
fn ready_headers(limit: Option<u32>) -> Box<[http::HeaderMap]> {
    (1..=COMMON_SECS as u64)
        .map(|secs| built_headers(limit, secs))
        .collect()
}

fn body_text(reason: &str, class: Criticality, secs: u64) -> String {
    format!(r#"{{"error":"{reason}","class":"{class}","retry_after":{secs}}}"#)
}

/// The headers of a refusal naming `limit` (a 429) or none (a 503), built one by one.
fn built_headers(limit: Option<u32>, secs: u64) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(if limit.is_some() { 5 } else { 2 });
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let retry = number_value(secs);
    if let Some(limit) = limit {
        headers.insert(RATELIMIT_LIMIT, number_value(u64::from(limit)));
        headers.insert(RATELIMIT_REMAINING, number_value(0));
        headers.insert(RATELIMIT_RESET, retry.clone());
    }
    headers.insert(http::header::RETRY_AFTER, retry);
    headers
}

/// The header value of `n`: for `0..1024` one over a ready-made text that lives as long as
/// the program (copied and dropped without touching a reference count), formatted
/// otherwise.
fn number_value(n: u64) -> http::HeaderValue {
    let texts = NUMBER_TEXTS.get_or_init(|| (0..COMMON_NUMBERS).map(|n| n.to_string()).collect());
    match texts.get(n as usize) {
        Some(text) => http::HeaderValue::from_static(text),
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
                RejectionKind::QueueFull,
                RejectionKind::QueueTimeout,
                RejectionKind::InFlightLimit { limit: 5000 },
                RejectionKind::RateLimited { limit: 7 },
                RejectionKind::PoolUnavailable,
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
    fn ready_made_headers_are_the_ones_built_one_by_one() {
        for secs in 1..=COMMON_SECS as u64 + 1 {
            for (kind, limit) in [
                (RejectionKind::Shed, None),
                (RejectionKind::PoolUnavailable, None),
                (RejectionKind::RateLimited { limit: 1 }, Some(1)),
                (RejectionKind::RateLimited { limit: 1023 }, Some(1023)),
                (RejectionKind::InFlightLimit { limit: 1024 }, Some(1024)),
                (RejectionKind::InFlightLimit { limit: 0 }, Some(0)),
            ] {
                let r = Rejection {
                    kind,
                    class: Criticality::Standard,
                    retry_after: Duration::from_secs(secs),
                };
                let built = built_headers(limit, secs);
                assert_eq!(r.retry_after_secs(), secs);
                assert_eq!(r.headers(secs), built, "{kind:?}, {secs} s");
                assert_eq!(built["retry-after"], secs.to_string().as_str());
                if let Some(limit) = limit {
                    assert_eq!(built["ratelimit-limit"], limit.to_string().as_str());
                    assert_eq!(built["ratelimit-reset"], secs.to_string().as_str());
                }
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
