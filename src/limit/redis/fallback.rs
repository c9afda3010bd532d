//! The local limiter that answers while Redis is unavailable: the guard's limits divided by
//! the number of live replicas, so N replicas together still stay near the shared limit.

use crate::config::UserLimits;
use crate::limit::UserLimiter;
use std::sync::{Arc, Mutex};

/// `limits` / `replicas`, each figure at least 1.
pub(super) fn divided(limits: &UserLimits, replicas: u32) -> UserLimits {
    let n = replicas.max(1);
    let part = |v: u32| v.div_ceil(n).max(1);
    UserLimits {
        rate_per_second: part(limits.rate_per_second),
        burst: part(limits.burst),
        in_flight: part(limits.in_flight),
        tight_rate_per_second: part(limits.tight_rate_per_second),
        tight_burst: part(limits.tight_burst),
        tight_in_flight: part(limits.tight_in_flight),
        ..limits.clone()
    }
}

/// The fallback limiter for the current replica count, rebuilt when the count changes.
#[derive(Debug)]
pub(super) struct Fallback {
    limits: UserLimits,
    current: Mutex<(u32, Arc<UserLimiter>)>,
}

impl Fallback {
    pub(super) fn new(limits: UserLimits, replicas: u32) -> Self {
        let limiter = Arc::new(UserLimiter::new(divided(&limits, replicas)));
        Self {
            limits,
            current: Mutex::new((replicas, limiter)),
        }
    }

    /// The limiter for `replicas` live replicas.
    pub(super) fn limiter(&self, replicas: u32) -> Arc<UserLimiter> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != replicas {
            *current = (
                replicas,
                Arc::new(UserLimiter::new(divided(&self.limits, replicas))),
            );
        }
        current.1.clone()
    }

    pub(super) fn housekeeping(&self) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.1.housekeeping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_divided_and_never_reach_zero() {
        let l = UserLimits {
            rate_per_second: 30,
            burst: 10,
            in_flight: 2,
            ..UserLimits::default()
        };
        let d = divided(&l, 3);
        assert_eq!((d.rate_per_second, d.burst, d.in_flight), (10, 4, 1));
        assert_eq!(divided(&l, 0).rate_per_second, 30);
    }
}
