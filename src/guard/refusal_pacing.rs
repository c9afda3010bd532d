//! Refusals held before they are answered, for clients that ignore `Retry-After`
//! ([`UserLimits::early_retry_delay`](crate::UserLimits::early_retry_delay)).
//!
//! A client that comes back before the `Retry-After` it was told is refused again, but its
//! answer waits on a timer first: a retry loop or a flood over keep-alive connections then
//! gets one answer per connection per hold instead of as many as the machine can write, and
//! the CPU that answering it at full speed would take stays with the routes that matter.
//! A held refusal costs one timer and one counter slot; a cancelled one (the client went
//! away) gives its slot back when it is dropped. A refusal decided after a round trip (the
//! limits shared in Redis) is held the same way, through a [`LateRefusal`] made before the
//! check.

use super::inner::GuardInner;
use crate::limit::UserKey;
use crate::rejection::Rejection;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pin_project! {
    /// The wait of one held refusal; holds one of the guard's
    /// [`max_delayed_refusals`](crate::UserLimits::max_delayed_refusals) slots until dropped.
    #[derive(Debug)]
    pub(crate) struct RefusalDelay {
        #[pin]
        sleep: tokio::time::Sleep,
        held: HeldRefusal,
    }
}

impl Future for RefusalDelay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

/// What a refusal decided after the request was let through the layer (by the limits shared
/// in Redis) needs in order to be held: the guard, the user and the request's deadline. Made
/// only while pacing is on ([`GuardInner::late_refusal`]).
#[derive(Debug)]
pub(crate) struct LateRefusal {
    inner: Arc<GuardInner>,
    key: UserKey,
    deadline: Instant,
}

impl LateRefusal {
    /// As [`GuardInner::pace_refusal`], now, within the deadline the request had when the
    /// layer let it through.
    pub(crate) fn pace(&self, rejection: &mut Rejection) -> Option<Pin<Box<RefusalDelay>>> {
        self.inner
            .pace_refusal_at(&self.key, rejection, crate::clock::now(), self.deadline)
    }
}

/// One slot of the guard's count of held refusals.
#[derive(Debug)]
struct HeldRefusal {
    inner: Arc<GuardInner>,
}

impl Drop for HeldRefusal {
    fn drop(&mut self) {
        self.inner.delayed_refusals.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GuardInner {
    /// Whether refusals of users back before their `Retry-After` are held
    /// ([`UserLimits::early_retry_delay`](crate::UserLimits::early_retry_delay) set).
    pub(crate) fn paces_refusals(&self) -> bool {
        !self.config.limits.early_retry_delay.is_zero()
    }

    /// [`pace_refusal_at`](Self::pace_refusal_at) for a request refused now that may still
    /// wait `allowed`. With pacing off it reads no clock: a 429 answered at once costs none.
    pub(crate) fn pace_refusal(
        self: &Arc<Self>,
        key: &UserKey,
        rejection: &mut Rejection,
        allowed: Duration,
    ) -> Option<Pin<Box<RefusalDelay>>> {
        if !self.paces_refusals() {
            return None;
        }
        let now = crate::clock::now();
        self.pace_refusal_at(key, rejection, now, now + allowed)
    }

    /// Notes that `key` was refused at `now` with `rejection`, and, when the user came back
    /// before its last `Retry-After`, holds the answer: the configured delay spread over its
    /// second half, at most the `Retry-After` the user was told and what is left of the
    /// request's `deadline`. A held answer's `Retry-After` is shortened by the hold, so it
    /// still counts from when the answer is sent. `None`: answer at once. Pacing must be on
    /// ([`paces_refusals`](Self::paces_refusals)).
    fn pace_refusal_at(
        self: &Arc<Self>,
        key: &UserKey,
        rejection: &mut Rejection,
        now: Instant,
        deadline: Instant,
    ) -> Option<Pin<Box<RefusalDelay>>> {
        let limits = &self.config.limits;
        let told = Duration::from_secs(rejection.retry_after_secs());
        let window = self.limits.retry_window(key);
        // A user back in time is held for nothing (no jitter is drawn for it).
        let hold = if window.came_back_early() {
            self.spread(limits.early_retry_delay)
                .min(told)
                .min(deadline.saturating_duration_since(now))
        } else {
            Duration::ZERO
        };
        let held = if hold.is_zero() {
            None
        } else {
            self.take_refusal_slot()
        };
        let Some(held) = held else {
            self.limits.tell(window, told);
            return None;
        };
        rejection.retry_after = rejection.retry_after.saturating_sub(hold);
        self.limits.tell(
            window,
            hold + Duration::from_secs(rejection.retry_after_secs()),
        );
        self.metrics.refusals_delayed.increment(1);
        let until = tokio::time::Instant::from_std(now + hold);
        Some(Box::pin(RefusalDelay {
            sleep: tokio::time::sleep_until(until),
            held,
        }))
    }

    /// What a later refusal of `key`'s request needs to be held; `None` while pacing is off.
    pub(crate) fn late_refusal(
        self: &Arc<Self>,
        key: &UserKey,
        deadline: Instant,
    ) -> Option<LateRefusal> {
        if !self.paces_refusals() {
            return None;
        }
        Some(LateRefusal {
            inner: self.clone(),
            key: key.clone(),
            deadline,
        })
    }

    /// `hold` spread uniformly over `[hold / 2, hold]`: answers held at the same moment are
    /// not sent at the same moment, so a flood's connections do not come back as one wave.
    fn spread(&self, hold: Duration) -> Duration {
        let half = hold / 2;
        let span = (hold - half).as_nanos().max(1) as u64;
        half + Duration::from_nanos(self.next_random() % span)
    }

    fn take_refusal_slot(self: &Arc<Self>) -> Option<HeldRefusal> {
        let most = self.config.limits.max_delayed_refusals;
        self.delayed_refusals
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()?;
        Some(HeldRefusal {
            inner: self.clone(),
        })
    }

    /// Refusals held right now.
    pub(crate) fn refusals_held(&self) -> usize {
        self.delayed_refusals.load(Ordering::Acquire)
    }
}
