//! When a refused caller should come back: the newcomer estimates the last change published,
//! bounded jitter, and returns booked one start interval apart.

use super::inner::{GuardInner, UNKNOWN};
use crate::controller::RetryJitter;
use crate::criticality::Criticality;
use crate::rejection::{Rejection, RejectionKind};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The `Retry-After` of a refusal when nothing better is known.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest `Retry-After` ever sent.
const MAX_RETRY: Duration = Duration::from_secs(60);

impl GuardInner {
    /// When a newcomer of `class` can expect to start, from the last change; `None` before
    /// anything was measured.
    pub(crate) fn estimate(&self, class: Criticality) -> Option<Duration> {
        match self.estimates[class.index()].load(Ordering::Relaxed) {
            UNKNOWN => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// A refusal answered at once when a request of `class` could not start within the
    /// `allowed` wait (`None` when it can, or when nothing was measured yet). No lock, and
    /// the clock is read only to book the return of a refused request.
    pub(crate) fn deadline_refusal(
        &self,
        class: Criticality,
        allowed: Duration,
    ) -> Option<Rejection> {
        let estimate = self.estimate(class)?;
        (estimate > allowed).then(|| {
            let wait = self.jittered(estimate.saturating_sub(allowed), estimate);
            Rejection {
                kind: RejectionKind::Shed,
                class,
                retry_after: self.book_return(class, wait),
            }
        })
    }

    /// Books the return of a caller of `class` told to wait at least `wait`: its turn is the
    /// later of `now + wait` and one start interval after the last booked return. Returns
    /// how long it should wait (never more than a minute).
    pub(crate) fn book_return(&self, class: Criticality, wait: Duration) -> Duration {
        let now = crate::clock::now();
        let slot = &self.returns[class.index()];
        let interval = self.start_intervals[class.index()].load(Ordering::Relaxed);
        let now = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let earliest = now + wait.as_micros() as u64;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let at = earliest
                .max(current)
                .min(now + MAX_RETRY.as_micros() as u64);
            match slot.compare_exchange_weak(
                current,
                at + interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::from_micros(at - now),
                Err(seen) => current = seen,
            }
        }
    }

    /// `wait` with the jitter bounded by `estimate`, from a counter spread by a
    /// multiplicative hash.
    fn jittered(&self, wait: Duration, estimate: Duration) -> Duration {
        RetryJitter::spread_wait(wait, estimate, self.next_random()).min(MAX_RETRY)
    }

    /// A uniformly spread value for a jitter: a counter spread by a multiplicative hash.
    pub(super) fn next_random(&self) -> u64 {
        let n = self.jitter_seq.fetch_add(1, Ordering::Relaxed);
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }

    /// A rejection of `kind` for `class`, with `Retry-After` from the class's estimate and
    /// a booked return.
    pub(crate) fn rejection(&self, kind: RejectionKind, class: Criticality) -> Rejection {
        Rejection {
            kind,
            class,
            retry_after: self.book_return(class, self.retry_after_for(kind, class)),
        }
    }

    fn retry_after_for(&self, kind: RejectionKind, class: Criticality) -> Duration {
        let estimate = self.estimate(class).unwrap_or(DEFAULT_RETRY);
        let estimate = match kind {
            RejectionKind::PoolUnavailable => estimate.max(DEFAULT_RETRY),
            _ => estimate,
        };
        self.jittered(estimate, estimate)
    }

    pub(crate) fn retry_after(&self, kind: RejectionKind) -> Duration {
        self.retry_after_for(kind, Criticality::NonCritical)
    }
}

#[cfg(test)]
mod tests {
    use crate::criticality::Criticality;
    use crate::guard::{AcquireContext, Guard};
    use crate::limit::UserKey;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn as_user(i: usize) -> AcquireContext {
        AcquireContext {
            user: Some(UserKey::new(format!("user-{i}"))),
            route: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_read_without_the_lock_is_the_one_the_state_gives() {
        let guard = Guard::of_four_unreachable_slots();
        let class = Criticality::Standard;
        let deadline = || crate::clock::now() + Duration::from_secs(60);
        assert_eq!(guard.inner.estimate(class), Some(Duration::ZERO));

        // One hold of 800 ms measured, then every standard slot held.
        let first = guard
            .admit_slot(class, as_user(0), deadline())
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(800)).await;
        drop(first);
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(
                guard
                    .admit_slot(class, as_user(i), deadline())
                    .await
                    .unwrap(),
            );
        }
        // Five waiters queue behind them, each its own user.
        let waiters: Vec<_> = (10..15)
            .map(|i| {
                let guard = guard.clone();
                tokio::spawn(async move { guard.admit_slot(class, as_user(i), deadline()).await })
            })
            .collect();
        while guard.inner.read(|s| s.queued_of(class)) < 5 {
            tokio::task::yield_now().await;
        }

        // Five ahead of a newcomer, three slots draining: it starts at the second round of
        // releases, 1.6 s from now, and starts follow each other every 800 / 3 ms.
        let now = crate::clock::now();
        let state_says = guard.inner.read(|s| s.newcomer_estimate(class, now));
        assert_eq!(state_says, Some(Duration::from_millis(1600)));
        assert_eq!(guard.inner.estimate(class), state_says);
        assert_eq!(
            guard.inner.start_intervals[class.index()].load(Ordering::Relaxed),
            266_666
        );
        // Critical work may still take the reserve at once.
        assert_eq!(
            guard.inner.estimate(Criticality::Critical),
            Some(Duration::ZERO)
        );

        // A release at once hands its slot to the oldest waiter: four are left ahead of a
        // newcomer, and the hold of 0 ms it measured takes the average to 640 ms, so the
        // newcomer starts at the second round of releases, 1.28 s from now.
        drop(held.pop());
        assert_eq!(guard.inner.read(|s| s.queued_of(class)), 4);
        let now = crate::clock::now();
        let state_says = guard.inner.read(|s| s.newcomer_estimate(class, now));
        assert_eq!(state_says, Some(Duration::from_millis(1280)));
        assert_eq!(guard.inner.estimate(class), state_says);
        for waiter in &waiters {
            waiter.abort();
        }
    }
}
