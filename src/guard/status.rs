//! [`GuardStatus`]: a snapshot of the guard and its pool.

use super::inner::GuardInner;
use crate::criticality::Criticality;
use crate::events::NonCriticalGate;
use crate::monitor::Level;

/// A consistent-enough picture of the guard and its pool at one instant. Like deadpool's
/// `Status`, the numbers are read at slightly different moments and need not add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GuardStatus {
    /// The pressure level.
    pub level: Level,
    /// The non-critical gate: deferred above Normal (non-critical work waits for its slots,
    /// not sent straight to the pool), ramping while its start ramp runs, direct otherwise.
    /// Serialized as `breaker`, its name before 0.2.0.
    #[serde(rename = "breaker")]
    pub non_critical_gate: NonCriticalGate,
    /// The old name of [`non_critical_gate`](GuardStatus::non_critical_gate), holding the
    /// same value.
    #[deprecated(since = "0.2.0", note = "renamed to `non_critical_gate`")]
    #[serde(skip)]
    pub breaker: NonCriticalGate,
    /// The pool's maximum size.
    pub max_size: usize,
    /// Connections the pool currently holds (idle and in use).
    pub size: usize,
    /// Idle connections in the pool.
    pub available: usize,
    /// Connections in use: through the guard plus outside it.
    pub in_use: usize,
    /// Slots held through the guard.
    pub granted: usize,
    /// Connections in use that were taken from the pool outside the guard.
    pub external: usize,
    /// Acquisitions waiting in the guard's queue.
    pub queued: usize,
    /// Waiting acquisitions by class: non-critical, standard, critical.
    pub queued_by_class: [usize; 3],
    /// Waiters inside deadpool itself.
    pub pool_waiting: usize,
    /// Slots only critical work may use.
    pub reserve: usize,
    /// Pool utilization, `in_use / max_size`.
    pub utilization: f64,
    /// Server-wide utilization fed in by
    /// [`Guard::report_server_utilization`](super::Guard::report_server_utilization).
    pub server_utilization: f64,
    /// Highest utilization seen since the guard was built.
    pub peak_utilization: f64,
    /// Per-user refusals held right now before they are answered, because their users came
    /// back before their `Retry-After`
    /// ([`UserLimits::early_retry_delay`](crate::UserLimits::early_retry_delay)).
    pub refusals_held: usize,
}

impl GuardInner {
    pub(crate) fn status(&self) -> GuardStatus {
        let pool = self.pool.status();
        // `breaker` is kept, deprecated, next to `non_critical_gate`.
        #[allow(deprecated)]
        self.read(|s| {
            let gate = s.breaker(crate::clock::now());
            GuardStatus {
                level: s.level(),
                non_critical_gate: gate,
                breaker: gate,
                max_size: s.max_size(),
                size: pool.size,
                available: pool.available,
                in_use: s.in_use(),
                granted: s.granted(),
                external: s.external,
                queued: s.queued(),
                queued_by_class: Criticality::ALL.map(|c| s.queued_of(c)),
                pool_waiting: pool.waiting,
                reserve: s.reserve(),
                utilization: s.pool_utilization(),
                server_utilization: s.server_utilization,
                peak_utilization: s.peak_utilization(),
                refusals_held: self.refusals_held(),
            }
        })
    }
}
