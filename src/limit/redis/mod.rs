//! Per-user limits shared by every replica, in Redis (feature `redis`).
//!
//! With [`Guard::share_limits`](crate::Guard::share_limits) a guard checks each request's
//! per-user limits in Redis instead of in the process, so a user limited to L requests per
//! second gets L across all replicas, not N × L:
//!
//! * **One round trip.** One server-side Lua script checks the GCRA rate (the normal quota,
//!   and the tight one at Warning and above), then the in-flight cap, and spends the rate
//!   token and takes the in-flight slot only when every check passes. Time is Redis's own
//!   (`TIME`), so replicas with skewed clocks agree.
//! * **A local pre-check first.** A user Redis refused for the rate is refused locally until
//!   the time Redis named (GCRA's next allowed time never moves earlier), and a user whose
//!   requests on this replica alone already fill the in-flight cap is refused locally: neither
//!   costs a round trip.
//! * **Bounded waits.** The request path waits at most [`RedisLimits::timeout`] for Redis. A
//!   timeout or error switches the replica to a local limiter at limit / N (N = live
//!   replicas, from the heartbeats every replica writes; [`RedisLimits::fallback_instances`]
//!   before the first one is read) and publishes a `shared_limits_unavailable` event; while
//!   Redis is unavailable no request waits on it. A background task probes it each heartbeat
//!   and switches back, with a `shared_limits_restored` event.
//! * **No leaked in-flight counts.** Each in-flight slot is a member of the user's sorted
//!   set, named after its replica, with a lease ([`RedisLimits::in_flight_lease`]); it is
//!   removed when the request ends, expires with its lease, and is dropped as soon as its
//!   replica's heartbeat has expired (a replica that died).
//!
//! A guard without [`share_limits`](crate::Guard::share_limits) keeps its in-process
//! limiter, exactly as without the feature.

mod fallback;
mod heartbeat;
mod limiter;
mod precheck;
mod script;
mod stats;

pub use limiter::SharedLimits;
pub(crate) use limiter::{RedisLimiter, SharedPermit};
pub use stats::SharedLimitStats;

use crate::config::BuildError;
use std::time::Duration;

/// Where and how the shared limits live in Redis. The quotas themselves are the guard's
/// [`UserLimits`](crate::config::UserLimits).
///
/// | field | default |
/// | --- | --- |
/// | `url` | (required) |
/// | `instance` | `"{hostname}-{pid}"` |
/// | `key_prefix` | `"poolguard:"` |
/// | `timeout` | 50 ms |
/// | `heartbeat_interval` | 500 ms |
/// | `heartbeat_ttl` | 3 s |
/// | `fallback_instances` | 1 |
/// | `in_flight_lease` | 60 s |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisLimits {
    /// The Redis URL (`redis://host:port/db`).
    pub url: String,
    /// This replica's name, unique among the replicas sharing the limits.
    pub instance: String,
    /// The prefix of every key (lets several services share one Redis).
    pub key_prefix: String,
    /// The longest a request waits for Redis before the local fallback answers it.
    pub timeout: Duration,
    /// How often this replica writes its heartbeat (and probes Redis while it is
    /// unavailable).
    pub heartbeat_interval: Duration,
    /// A replica whose last heartbeat is older than this is gone: it no longer counts as
    /// live and its in-flight slots are dropped.
    pub heartbeat_ttl: Duration,
    /// The replica count the fallback divides by before any heartbeat was read.
    pub fallback_instances: u32,
    /// The lease of one in-flight slot: a slot whose release never reached Redis is gone
    /// after it. Keep it above your longest request.
    pub in_flight_lease: Duration,
}

impl RedisLimits {
    /// Settings for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Self {
            url: url.into(),
            instance: format!("{host}-{}", std::process::id()),
            key_prefix: "poolguard:".into(),
            timeout: Duration::from_millis(50),
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_ttl: Duration::from_secs(3),
            fallback_instances: 1,
            in_flight_lease: Duration::from_secs(60),
        }
    }

    /// Checks the settings; the error names the first bad field.
    pub fn validate(&self) -> Result<(), BuildError> {
        if redis::Client::open(self.url.as_str()).is_err() {
            return Err(BuildError::field("redis.url", "not a valid Redis URL"));
        }
        if self.instance.is_empty()
            || self.instance.len() > 64
            || !self
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(BuildError::field(
                "redis.instance",
                "must be 1 to 64 characters of [A-Za-z0-9-_.]",
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(1) {
            return Err(BuildError::field(
                "redis.timeout",
                "must be more than zero and at most 1 s (the request path waits this long)",
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(BuildError::field(
                "redis.heartbeat_interval",
                "must be more than zero",
            ));
        }
        if self.heartbeat_ttl < self.heartbeat_interval * 2 {
            return Err(BuildError::field(
                "redis.heartbeat_ttl",
                "must be at least twice heartbeat_interval",
            ));
        }
        if self.fallback_instances == 0 {
            return Err(BuildError::field(
                "redis.fallback_instances",
                "must be at least 1",
            ));
        }
        if self.in_flight_lease < Duration::from_secs(1) {
            return Err(BuildError::field(
                "redis.in_flight_lease",
                "must be at least 1 s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_the_field() {
        let field = |limits: RedisLimits| match limits.validate() {
            Err(BuildError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let ok = RedisLimits::new("redis://127.0.0.1:6379/");
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        assert_eq!(field(RedisLimits::new("http://x")), "redis.url");
        let bad = |f: fn(&mut RedisLimits)| {
            let mut l = ok.clone();
            f(&mut l);
            field(l)
        };
        assert_eq!(bad(|l| l.instance = "a:b".into()), "redis.instance");
        assert_eq!(bad(|l| l.timeout = Duration::ZERO), "redis.timeout");
        assert_eq!(
            bad(|l| l.heartbeat_ttl = Duration::from_millis(600)),
            "redis.heartbeat_ttl"
        );
        assert_eq!(
            bad(|l| l.fallback_instances = 0),
            "redis.fallback_instances"
        );
    }
}
