//! One leader per service and database for the duties that must not run once per replica
//! (reaping the orphaned sessions of instances that are gone): the watchdog that holds a
//! session-level `pg_try_advisory_lock` on its own connection. When the leader's session
//! ends (its process died, its connection was terminated), PostgreSQL releases the lock and
//! the next watchdog to ask, within one interval, takes it over.

use crate::identity::Identity;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_postgres::Client;

/// The advisory lock key of a service: FNV-1a of `poolguard:leader:{service}`.
pub(crate) fn lock_key(identity: &Identity) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("poolguard:leader:{}", identity.service()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Whether this watchdog leads, shared with its handle.
#[derive(Debug)]
pub(crate) struct Leadership {
    key: i64,
    instance: String,
    held: Arc<AtomicBool>,
}

impl Leadership {
    pub(crate) fn new(identity: &Identity, held: Arc<AtomicBool>) -> Self {
        Self {
            key: lock_key(identity),
            instance: identity.instance().to_string(),
            held,
        }
    }

    /// Whether this watchdog leads now: it keeps the lock as long as its session lives, and
    /// otherwise tries to take it (never waits for it).
    pub(crate) async fn refresh(&mut self, client: &Client) -> Result<bool, tokio_postgres::Error> {
        if self.held.load(Ordering::Acquire) {
            return Ok(true);
        }
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
            .await?;
        let got: bool = row.get(0);
        if got {
            self.held.store(true, Ordering::Release);
            tracing::info!(target: "poolguard::watchdog", instance = %self.instance, "leads the service's server-wide duties");
        }
        Ok(got)
    }

    /// Whether it leads (as of its last refresh).
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// The session is gone, and the lock with it.
    pub(crate) fn lost(&mut self) {
        if self.held.swap(false, Ordering::AcqRel) {
            tracing::warn!(target: "poolguard::watchdog", instance = %self.instance, "lost the lead with its session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_per_service_and_stable() {
        let a = Identity::new("api", "one").unwrap();
        let b = Identity::new("api", "two").unwrap();
        let c = Identity::new("billing", "one").unwrap();
        assert_eq!(lock_key(&a), lock_key(&b));
        assert_ne!(lock_key(&a), lock_key(&c));
    }
}
