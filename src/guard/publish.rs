//! What the guard tells the world after a change: grants and refusals sent to waiters, level
//! and gate events, the sampler's gauges, request summaries.

use super::inner::GuardInner;
use crate::admission::{Effects, SlotPermit};
use crate::criticality::Criticality;
use crate::events::{Event, EventKind, NonCriticalGate};
use crate::metrics::Outcome;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl GuardInner {
    pub(crate) fn note_hold_time(&self, class: Criticality, held: Duration) {
        self.metrics.hold_time(class, held.as_secs_f64());
    }

    pub(crate) fn note_statement_timeout(&self, class: Criticality, route: Option<Arc<str>>) {
        self.count(class, Outcome::TimedOut);
        self.events
            .publish(Event::now(EventKind::StatementTimedOut {
                class,
                route: route.as_deref().map(str::to_string),
            }));
    }

    /// Carries out what a state change decided, outside the lock.
    pub(super) fn apply(
        self: &Arc<Self>,
        effects: Effects,
        breaker: Option<NonCriticalGate>,
        now: Instant,
    ) {
        for waiter in effects.grants {
            // If the caller is gone the permit comes back and its drop releases the slot.
            let _ = waiter
                .tx
                .send(Ok(SlotPermit::new(self.clone(), waiter.class, now)));
        }
        for (waiter, mut refusal) in effects.refusals {
            refusal.retry_after = self.book_return(waiter.class, refusal.retry_after);
            let _ = waiter.tx.send(Err(refusal));
        }
        if effects.deadline_earlier {
            self.deadlines.wake();
        }
        if let Some(change) = effects.transition {
            let t = change.transition;
            crate::metrics::level_entered(t.to);
            self.events.publish(Event::now(EventKind::LevelChanged {
                from: t.from,
                to: t.to,
                utilization: change.utilization,
                in_use: change.in_use,
                max_size: change.max_size,
                waiting: change.waiting,
            }));
        }
        if let Some(state) = breaker {
            self.events
                .publish(Event::now(EventKind::NonCriticalGateChanged { state }));
        }
        if let Some((after, peak_utilization)) = effects.recovered {
            self.events.publish(Event::now(EventKind::Recovered {
                after,
                peak_utilization,
            }));
        }
    }

    /// One sampler tick: reads the pool, re-evaluates the level, updates gauges.
    pub(crate) fn sample(self: &Arc<Self>) {
        let pool = self.pool.status();
        let pool_in_use = pool.size.saturating_sub(pool.available);
        let pending = self.gets_pending();
        self.change(|s, now| {
            s.external = pool_in_use.saturating_sub(s.granted());
            s.pool_waiting = pool.waiting.saturating_sub(pending);
            ((), s.observe(now))
        });
        let s = self.status();
        let m = &self.metrics;
        m.pool_active.set(s.in_use as f64);
        m.pool_max.set(s.max_size as f64);
        m.pool_idle.set(s.available as f64);
        m.pool_waiting.set((s.queued + s.pool_waiting) as f64);
        m.queue_depth.set(s.queued as f64);
        // What the level machine sees: server-wide pressure counts when it is the higher.
        m.utilization
            .set(s.utilization.max(s.server_utilization).min(1.0));
        m.level.set(s.level.as_gauge());
    }

    /// Emits the requests summary of the last window if anything but serving happened.
    pub(crate) fn summarize(&self, window: Duration) {
        let counts = self.window.take();
        if !counts.is_quiet() {
            self.events
                .publish(Event::now(EventKind::RequestsSummary { window, counts }));
        }
    }

    pub(crate) fn housekeeping(&self) {
        self.limits.housekeeping();
    }
}
