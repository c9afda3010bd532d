//! Deduplication: incidents with the same signature within a window are analysed once; later
//! ones point at the first. [`Dedupe`] is pure (time is passed in) and per process;
//! [`SharedDedupe`] (feature `redis`) makes it one analysis per incident across every
//! replica, with the local one as its fallback.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Default dedupe window (the seed's one hour).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(3600);

/// What to do with an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupeDecision {
    /// The first with this signature in the window: analyse it.
    Analyse,
    /// Seen within the window: reference incident `of` instead.
    Duplicate {
        /// The first incident with this signature.
        of: u64,
    },
}

/// Remembers the first incident of each signature for one window.
#[derive(Debug, Clone)]
pub struct Dedupe {
    window: Duration,
    first: HashMap<String, (u64, SystemTime)>,
    analysed: u64,
    duplicates: u64,
}

impl Dedupe {
    /// A dedupe with `window` (zero turns deduplication off).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            first: HashMap::new(),
            analysed: 0,
            duplicates: 0,
        }
    }

    /// Decides for incident `id` with `signature` at `now`, and remembers it if it is first.
    pub fn check(&mut self, signature: &str, id: u64, now: SystemTime) -> DedupeDecision {
        let window = self.window;
        self.first
            .retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < window);
        if let Some((of, _)) = self.first.get(signature) {
            self.duplicates += 1;
            return DedupeDecision::Duplicate { of: *of };
        }
        if !window.is_zero() {
            self.first.insert(signature.to_string(), (id, now));
        }
        self.analysed += 1;
        DedupeDecision::Analyse
    }

    /// Incidents let through for analysis.
    pub fn analysed(&self) -> u64 {
        self.analysed
    }

    /// Incidents skipped as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// Dedupe across replicas (feature `redis`): the first replica to claim an incident
/// signature in Redis (`SET key NX PX window`) analyses it, every other replica within the
/// window reports it as a duplicate. When Redis cannot be reached within
/// [`SharedDedupe::TIMEOUT`], the reporter's local [`Dedupe`] decides instead (each replica
/// then analyses its own copy once), and the fallback is counted.
#[cfg(feature = "redis")]
#[derive(Clone)]
pub struct SharedDedupe {
    client: redis::Client,
    connection: std::sync::Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
    key_prefix: String,
    instance: String,
    fallbacks: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for SharedDedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDedupe")
            .field("key_prefix", &self.key_prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
impl SharedDedupe {
    /// The longest one decision waits for Redis.
    pub const TIMEOUT: Duration = Duration::from_millis(500);

    /// Dedupe in the Redis at `url`, keys under `key_prefix` (e.g. `"poolguard:"`),
    /// claims made as `instance`. Connects on first use. Fails on an invalid URL.
    pub fn new(
        url: &str,
        key_prefix: impl Into<String>,
        instance: impl Into<String>,
    ) -> Result<Self, crate::config::BuildError> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::config::BuildError::field("redis.url", e.to_string()))?;
        Ok(Self {
            client,
            connection: Default::default(),
            key_prefix: key_prefix.into(),
            instance: instance.into(),
            fallbacks: Default::default(),
        })
    }

    /// Decisions the local dedupe made because Redis could not be reached.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decides for incident `id` with `signature` at `now`, in Redis, or in `local` when
    /// Redis does not answer in time. A zero window turns deduplication off.
    pub async fn check(
        &self,
        local: &mut Dedupe,
        signature: &str,
        id: u64,
        now: SystemTime,
    ) -> DedupeDecision {
        if local.window.is_zero() {
            return local.check(signature, id, now);
        }
        match tokio::time::timeout(Self::TIMEOUT, self.claim(signature, id, local.window)).await {
            Ok(Ok(decision)) => {
                match decision {
                    DedupeDecision::Analyse => local.analysed += 1,
                    DedupeDecision::Duplicate { .. } => local.duplicates += 1,
                }
                decision
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".into(),
                };
                tracing::warn!(target: "poolguard::report", incident = id, "shared dedupe unavailable ({why}): deciding locally");
                self.fallbacks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                local.check(signature, id, now)
            }
        }
    }

    async fn claim(
        &self,
        signature: &str,
        id: u64,
        window: Duration,
    ) -> redis::RedisResult<DedupeDecision> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                let settings = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Self::TIMEOUT)
                    .set_response_timeout(Self::TIMEOUT)
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), settings)
            })
            .await?;
        let mut connection = connection.clone();
        let key = format!("{}incident:{signature}", self.key_prefix);
        let mut claim = redis::cmd("SET");
        claim
            .arg(&key)
            .arg(format!("{id}@{}", self.instance))
            .arg("NX")
            .arg("PX")
            .arg(window.as_millis() as u64);
        let claimed: Option<String> = claim.query_async(&mut connection).await?;
        if claimed.is_some() {
            return Ok(DedupeDecision::Analyse);
        }
        let first: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        let of = first
            .as_deref()
            .and_then(|v| v.split('@').next()?.parse().ok())
            .unwrap_or(0);
        tracing::info!(target: "poolguard::report", incident = id, first = first.as_deref().unwrap_or("?"), "incident already analysed by a replica");
        Ok(DedupeDecision::Duplicate { of })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_signature_within_the_window_is_analysed_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = Dedupe::new(DEFAULT_DEDUPE_WINDOW);
        assert_eq!(d.check("a", 1, t0), DedupeDecision::Analyse);
        assert_eq!(
            d.check("a", 2, t0 + Duration::from_secs(3599)),
            DedupeDecision::Duplicate { of: 1 }
        );
        assert_eq!(
            d.check("b", 3, t0 + Duration::from_secs(10)),
            DedupeDecision::Analyse
        );
        // The window is counted from the first one, not extended by duplicates.
        assert_eq!(
            d.check("a", 4, t0 + Duration::from_secs(3600)),
            DedupeDecision::Analyse
        );
        assert_eq!(
            d.check("a", 5, t0 + Duration::from_secs(3700)),
            DedupeDecision::Duplicate { of: 4 }
        );
        assert_eq!((d.analysed(), d.duplicates()), (3, 2));
    }

    #[test]
    fn a_zero_window_turns_it_off() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut d = Dedupe::new(Duration::ZERO);
        assert_eq!(d.check("a", 1, t0), DedupeDecision::Analyse);
        assert_eq!(d.check("a", 2, t0), DedupeDecision::Analyse);
    }
}
