//! [`RedisLimiter`]: the per-request check against Redis, with its local pre-check and
//! fallback, and [`SharedPermit`], the in-flight slot it grants.

use super::fallback::Fallback;
use super::precheck::{PreCheck, Refusal};
use super::script::{self, Verdict};
use super::stats::{Counters, SharedLimitStats};
use super::RedisLimits;
use crate::config::BuildError;
use crate::config::UserLimits;
use crate::criticality::Criticality;
use crate::events::{Event, EventBus, EventKind, Severity};
use crate::limit::check::{LimitCheck, UserPermit};
use crate::limit::UserKey;
use crate::monitor::Level;
use crate::rejection::{Rejection, RejectionKind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the first heartbeat (with the first connect) may take.
const FIRST_BEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// The per-user limits of a guard, kept in Redis and shared by every replica.
pub(crate) struct RedisLimiter {
    pub(super) config: RedisLimits,
    limits: UserLimits,
    pub(super) client: redis::Client,
    pub(super) connection: OnceLock<ConnectionManager>,
    check_script: redis::Script,
    pub(super) heartbeat_script: redis::Script,
    /// Whether requests go to Redis (false: the fallback answers them).
    available: AtomicBool,
    /// Whether an outage was announced and not yet its end.
    announced_down: AtomicBool,
    /// Live replicas from the last heartbeat; 0 before the first one.
    live: AtomicU32,
    precheck: PreCheck,
    fallback: Fallback,
    pub(super) counters: Counters,
    sequence: AtomicU64,
    events: EventBus,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A user's in-flight slot in Redis; removes it there (and from the pre-check's count)
/// when dropped. A removal that cannot reach Redis is left to the slot's lease.
#[derive(Debug)]
pub(crate) struct SharedPermit {
    limiter: Arc<RedisLimiter>,
    key: UserKey,
    member: String,
}

/// The handle [`Guard::share_limits`](crate::Guard::share_limits) returns: figures about the shared limits.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    limiter: Arc<RedisLimiter>,
}

impl SharedLimits {
    /// What the shared limiter did so far.
    pub fn stats(&self) -> SharedLimitStats {
        self.limiter.stats()
    }

    /// This replica's instance name.
    pub fn instance(&self) -> &str {
        &self.limiter.config.instance
    }
}

impl SharedLimits {
    /// The handle over a started limiter.
    pub(crate) fn over(limiter: Arc<RedisLimiter>) -> Self {
        Self { limiter }
    }
}

impl RedisLimiter {
    /// A limiter for `limits` shared through Redis as `config` says, publishing on `events`;
    /// not started (see [`start`](Self::start)). Fails when the settings are invalid.
    pub(crate) fn new(
        config: RedisLimits,
        limits: UserLimits,
        events: EventBus,
    ) -> Result<Arc<Self>, BuildError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| BuildError::field("redis.url", e.to_string()))?;
        let fallback_instances = config.fallback_instances;
        Ok(Arc::new(RedisLimiter {
            fallback: Fallback::new(limits.clone(), fallback_instances),
            limits,
            client,
            connection: OnceLock::new(),
            check_script: redis::Script::new(script::CHECK),
            heartbeat_script: redis::Script::new(script::HEARTBEAT),
            available: AtomicBool::new(false),
            announced_down: AtomicBool::new(false),
            live: AtomicU32::new(0),
            precheck: PreCheck::new(),
            counters: Counters::default(),
            sequence: AtomicU64::new(0),
            events,
            config,
        }))
    }

    /// Waits up to a second for a first heartbeat (connecting), then keeps beating in a task
    /// that ends with the limiter.
    pub(crate) async fn start(self: &Arc<Self>) {
        self.beat(FIRST_BEAT_TIMEOUT).await;
        tokio::spawn(super::heartbeat::run(Arc::downgrade(self)));
    }
}

impl RedisLimiter {
    pub(crate) fn stats(&self) -> SharedLimitStats {
        self.counters.snapshot(
            self.available.load(Ordering::Acquire),
            u64::from(self.live.load(Ordering::Relaxed)),
        )
    }

    /// The replica count the fallback divides by.
    fn replicas(&self) -> u32 {
        match self.live.load(Ordering::Relaxed) {
            0 => self.config.fallback_instances,
            n => n,
        }
    }

    /// Checks one request of `key`: the pre-check, then the fallback while Redis is
    /// unavailable, else a bounded round trip, after which `refused_after_round_trip` runs
    /// if Redis refused.
    pub(crate) fn check(
        self: &Arc<Self>,
        key: &UserKey,
        level: Level,
        class: Criticality,
        refused_after_round_trip: impl FnOnce() + Send + 'static,
    ) -> LimitCheck {
        let tight = level != Level::Normal;
        let cap = if tight {
            self.limits.tight_in_flight
        } else {
            self.limits.in_flight
        };
        if let Some(refusal) = self.precheck.refuses(key, cap, Instant::now()) {
            Counters::add(&self.counters.refused_locally);
            return LimitCheck::Ready(Err(self.refusal(refusal, tight, cap, class)));
        }
        if !self.available.load(Ordering::Acquire) {
            return LimitCheck::Ready(self.local(key, level, class));
        }
        let this = self.clone();
        let key = key.clone();
        LimitCheck::Pending(Box::pin(async move {
            let verdict = this.ask(&key, tight, cap, level, class).await;
            if verdict.is_err() {
                refused_after_round_trip();
            }
            verdict
        }))
    }

    fn local(
        &self,
        key: &UserKey,
        level: Level,
        class: Criticality,
    ) -> Result<UserPermit, Rejection> {
        Counters::add(&self.counters.fallback_checks);
        self.fallback
            .limiter(self.replicas())
            .check(key, level, class)
            .map(UserPermit::from)
    }

    fn refusal(&self, refusal: Refusal, tight: bool, cap: u32, class: Criticality) -> Rejection {
        match refusal {
            Refusal::Rate(retry_after) => Rejection {
                kind: RejectionKind::RateLimited {
                    limit: if tight {
                        self.limits.tight_burst
                    } else {
                        self.limits.burst
                    },
                },
                class,
                retry_after,
            },
            Refusal::InFlight => Rejection {
                kind: RejectionKind::InFlightLimit { limit: cap },
                class,
                retry_after: Duration::from_secs(1),
            },
        }
    }

    async fn ask(
        self: &Arc<Self>,
        key: &UserKey,
        tight: bool,
        cap: u32,
        level: Level,
        class: Criticality,
    ) -> Result<UserPermit, Rejection> {
        let Some(mut connection) = self.connection.get().cloned() else {
            return self.local(key, level, class);
        };
        let prefix = &self.config.key_prefix;
        let member = format!(
            "{}:{}",
            self.config.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let l = &self.limits;
        let mut invocation = self.check_script.prepare_invoke();
        invocation
            .key(format!("{prefix}rate:{key}"))
            .key(format!("{prefix}rate-tight:{key}"))
            .key(format!("{prefix}in-flight:{key}"))
            .key(format!("{prefix}instances"))
            .arg(script::emission_us(l.rate_per_second))
            .arg(l.burst)
            .arg(u8::from(tight))
            .arg(script::emission_us(l.tight_rate_per_second))
            .arg(l.tight_burst)
            .arg(cap)
            .arg(&member)
            .arg(self.config.in_flight_lease.as_micros() as u64)
            .arg(self.config.heartbeat_ttl.as_millis() as u64);
        let reply = tokio::time::timeout(
            self.config.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let reply = match reply {
            Err(_) => {
                Counters::add(&self.counters.timeouts);
                self.unavailable(&format!(
                    "no answer within {} ms",
                    self.config.timeout.as_millis()
                ));
                return self.local(key, level, class);
            }
            Ok(Err(e)) => {
                Counters::add(&self.counters.errors);
                self.unavailable(&e.to_string());
                return self.local(key, level, class);
            }
            Ok(Ok(reply)) => reply,
        };
        Counters::add(&self.counters.round_trips);
        match Verdict::parse(&reply) {
            Some(Verdict::Allowed) => {
                self.precheck.enter(key);
                Ok(UserPermit::Shared {
                    _permit: Box::new(SharedPermit {
                        limiter: self.clone(),
                        key: key.clone(),
                        member,
                    }),
                })
            }
            Some(Verdict::RateLimited { retry_after, .. }) => {
                self.precheck
                    .refused_until(key, Instant::now() + retry_after);
                Err(self.refusal(Refusal::Rate(retry_after), tight, cap, class))
            }
            Some(Verdict::InFlight) => Err(self.refusal(Refusal::InFlight, tight, cap, class)),
            None => {
                Counters::add(&self.counters.errors);
                self.unavailable(&format!("unexpected answer {reply:?}"));
                self.local(key, level, class)
            }
        }
    }

    /// Switches to the fallback (with an event, once per outage).
    pub(super) fn unavailable(&self, why: &str) {
        self.available.store(false, Ordering::Release);
        if !self.announced_down.swap(true, Ordering::AcqRel) {
            let replicas = self.replicas();
            self.events.publish(Event::now(EventKind::Custom {
                name: "shared_limits_unavailable".into(),
                severity: Severity::Warning,
                message: format!(
                    "Redis at {} unreachable ({why}): per-user limits fall back to this \
                     replica's share, limit / {replicas}",
                    self.config.url
                ),
            }));
        }
    }

    /// One heartbeat: connect if needed, record this replica, read the live count. On
    /// success Redis is used again (with an event when it was not).
    pub(super) async fn beat(&self, timeout: Duration) -> bool {
        let connection = match self.connection.get() {
            Some(c) => c.clone(),
            None => {
                let settings = ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(200);
                let made = tokio::time::timeout(
                    timeout,
                    ConnectionManager::new_with_config(self.client.clone(), settings),
                )
                .await;
                match made {
                    Ok(Ok(c)) => self.connection.get_or_init(|| c).clone(),
                    Ok(Err(e)) => {
                        self.unavailable(&e.to_string());
                        return false;
                    }
                    Err(_) => {
                        self.unavailable("connect timed out");
                        return false;
                    }
                }
            }
        };
        let mut connection = connection;
        let mut invocation = self.heartbeat_script.prepare_invoke();
        invocation
            .key(format!("{}instances", self.config.key_prefix))
            .arg(&self.config.instance)
            .arg(self.config.heartbeat_ttl.as_millis() as u64);
        match tokio::time::timeout(timeout, invocation.invoke_async::<u32>(&mut connection)).await {
            Ok(Ok(live)) => {
                self.live.store(live.max(1), Ordering::Relaxed);
                self.available.store(true, Ordering::Release);
                if self.announced_down.swap(false, Ordering::AcqRel) {
                    self.events.publish(Event::now(EventKind::Custom {
                        name: "shared_limits_restored".into(),
                        severity: Severity::Info,
                        message: format!(
                            "Redis at {} answers again: per-user limits are shared by {live} \
                             live replicas",
                            self.config.url
                        ),
                    }));
                }
                true
            }
            Ok(Err(e)) => {
                self.unavailable(&e.to_string());
                false
            }
            Err(_) => {
                self.unavailable("heartbeat timed out");
                false
            }
        }
    }

    pub(super) fn housekeeping(&self) {
        self.precheck.housekeeping(Instant::now());
        self.fallback.housekeeping();
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        let limiter = &self.limiter;
        limiter.precheck.leave(&self.key, Instant::now());
        let (Some(connection), Ok(runtime)) = (
            limiter.connection.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        // Tried even while the fallback answers: a slot left behind would count against the
        // user until its lease ends (this replica's heartbeat keeps it from being pruned).
        let key = format!("{}in-flight:{}", limiter.config.key_prefix, self.key);
        let member = std::mem::take(&mut self.member);
        let timeout = limiter.config.timeout;
        runtime.spawn(async move {
            let mut connection = connection;
            let mut remove = redis::cmd("ZREM");
            remove.arg(key).arg(member);
            let _ = tokio::time::timeout(timeout, remove.query_async::<i64>(&mut connection)).await;
        });
    }
}
