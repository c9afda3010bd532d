//! The admission state: who holds a slot, who waits, and in what order slots are handed out.
//!
//! Everything here is plain data behind one short-held mutex in the guard; time is passed in.

use super::held::HeldRegistry;
use super::queue::{FairQueue, Waiter};
use crate::limit::UserKey;
use crate::monitor::{LevelMachine, Pressure, Transition};
use crate::rejection::RejectionKind;
use crate::{Criticality, Level};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The result of asking for a slot.
#[derive(Debug)]
pub(crate) enum Admit {
    /// A slot is held now.
    Granted,
    /// The acquisition waits in the queue.
    Enqueued {
        id: u64,
        rx: oneshot::Receiver<super::queue::Grant>,
    },
    /// Refused at once.
    Rejected(RejectionKind),
}

/// What a state change asks the guard to do once the lock is released.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Waiters granted a slot (already counted as held).
    pub(crate) grants: Vec<Waiter>,
    /// Waiters refused (non-critical waiters when the level left Normal).
    pub(crate) rejects: Vec<Waiter>,
    /// A level change.
    pub(crate) transition: Option<Transition>,
    /// Set when the level returned to Normal: how long the episode lasted and its peak.
    pub(crate) recovered: Option<(Duration, f64)>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    peak: f64,
}

#[derive(Debug)]
pub(crate) struct AdmissionState {
    pub(crate) max_size: usize,
    pub(crate) reserve: usize,
    queue_depth: usize,
    /// Slots held through the guard.
    pub(crate) granted: usize,
    /// Connections in use outside the guard (from the sampler).
    pub(crate) external: usize,
    /// deadpool's own waiters (from the sampler).
    pub(crate) pool_waiting: usize,
    /// Server-wide utilization reported by the watchdog, in `[0, 1]`.
    pub(crate) server_utilization: f64,
    queues: [FairQueue; 3],
    ages: BTreeSet<(Instant, u64)>,
    next_id: u64,
    machine: LevelMachine,
    episode: Option<Episode>,
    pub(crate) peak_utilization: f64,
    /// Connections held through the guard, for leak detection and the watchdog.
    pub(crate) held: HeldRegistry,
}

impl AdmissionState {
    pub(crate) fn new(
        max_size: usize,
        reserve: usize,
        queue_depth: usize,
        machine: LevelMachine,
    ) -> Self {
        Self {
            max_size,
            reserve,
            queue_depth,
            granted: 0,
            external: 0,
            pool_waiting: 0,
            server_utilization: 0.0,
            queues: Default::default(),
            ages: BTreeSet::new(),
            next_id: 0,
            machine,
            episode: None,
            peak_utilization: 0.0,
            held: HeldRegistry::default(),
        }
    }

    pub(crate) fn level(&self) -> Level {
        self.machine.level()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queues.iter().map(FairQueue::len).sum()
    }

    pub(crate) fn queued_of(&self, class: Criticality) -> usize {
        self.queues[class.index()].len()
    }

    pub(crate) fn in_use(&self) -> usize {
        self.granted + self.external
    }

    fn free(&self) -> usize {
        self.max_size.saturating_sub(self.in_use())
    }

    pub(crate) fn pool_utilization(&self) -> f64 {
        self.in_use() as f64 / self.max_size as f64
    }

    pub(crate) fn pressure(&self, now: Instant) -> Pressure {
        let oldest_wait = self
            .ages
            .first()
            .map(|(t, _)| now.saturating_duration_since(*t))
            .unwrap_or_default();
        Pressure {
            utilization: self
                .pool_utilization()
                .max(self.server_utilization)
                .min(1.0),
            waiting: self.queued() + self.pool_waiting,
            oldest_wait,
        }
    }

    /// Whether a newcomer of `class` may take a free slot right now without overtaking
    /// anyone who waits at the same or a higher priority.
    fn may_take_now(&self, class: Criticality) -> bool {
        let ahead_waiting = Criticality::ALL
            .iter()
            .filter(|c| **c >= class)
            .any(|c| !self.queues[c.index()].is_empty());
        if ahead_waiting {
            return false;
        }
        match class {
            Criticality::Critical => self.free() > 0,
            _ => self.free() > self.reserve,
        }
    }

    /// Asks for a slot for `class`.
    pub(crate) fn admit(
        &mut self,
        class: Criticality,
        user: Option<UserKey>,
        now: Instant,
    ) -> (Admit, Effects) {
        if class == Criticality::NonCritical && self.level() != Level::Normal {
            return (Admit::Rejected(RejectionKind::Shed), Effects::default());
        }
        if self.may_take_now(class) {
            self.granted += 1;
            return (Admit::Granted, self.observe(now));
        }
        if self.queued() >= self.queue_depth {
            return (
                Admit::Rejected(RejectionKind::QueueFull),
                Effects::default(),
            );
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.queues[class.index()].push(
            user,
            Waiter {
                id,
                enqueued: now,
                tx,
            },
        );
        self.ages.insert((now, id));
        (Admit::Enqueued { id, rx }, self.observe(now))
    }

    /// A waiter's caller gave up: forget it. Returns whether it was still queued (if not, it
    /// was granted and the grant will be released by whoever drops it).
    pub(crate) fn cancel(
        &mut self,
        class: Criticality,
        user: &Option<UserKey>,
        id: u64,
        enqueued: Instant,
    ) -> bool {
        let removed = self.queues[class.index()].remove(user, id);
        if removed {
            self.ages.remove(&(enqueued, id));
        }
        removed
    }

    /// A slot was given back (with the registry id of its connection, if one was handed out).
    pub(crate) fn release(&mut self, held: Option<u64>, now: Instant) -> Effects {
        if let Some(id) = held {
            self.held.remove(id);
        }
        self.granted = self.granted.saturating_sub(1);
        self.observe(now)
    }

    /// Re-evaluates the level and hands free slots to waiters, highest priority first.
    pub(crate) fn observe(&mut self, now: Instant) -> Effects {
        let mut effects = Effects::default();
        self.dispatch(&mut effects);
        let pressure = self.pressure(now);
        self.peak_utilization = self.peak_utilization.max(pressure.utilization);
        if let Some(episode) = &mut self.episode {
            episode.peak = episode.peak.max(pressure.utilization);
        }
        if let Some(t) = self.machine.observe(pressure, now) {
            effects.transition = Some(t);
            match (t.from, t.to) {
                (Level::Normal, _) => {
                    self.episode = Some(Episode {
                        since: now,
                        peak: pressure.utilization,
                    })
                }
                (_, Level::Normal) => {
                    effects.recovered = self
                        .episode
                        .take()
                        .map(|e| (now.saturating_duration_since(e.since), e.peak));
                }
                _ => {}
            }
            if t.to != Level::Normal {
                // Non-critical work is shed above Normal: waiting ones are told so now.
                effects
                    .rejects
                    .extend(self.queues[Criticality::NonCritical.index()].drain());
                for w in &effects.rejects {
                    self.ages.remove(&(w.enqueued, w.id));
                }
            }
            // A level change can open room for waiters (e.g. back to Normal).
            self.dispatch(&mut effects);
        }
        effects
    }

    fn dispatch(&mut self, effects: &mut Effects) {
        while let Some(class) = self.next_class_to_serve() {
            let Some(w) = self.queues[class.index()].pop() else {
                break;
            };
            self.ages.remove(&(w.enqueued, w.id));
            self.granted += 1;
            effects.grants.push(w);
        }
    }

    fn next_class_to_serve(&self) -> Option<Criticality> {
        let free = self.free();
        if free == 0 {
            return None;
        }
        if !self.queues[Criticality::Critical.index()].is_empty() {
            return Some(Criticality::Critical);
        }
        if free <= self.reserve {
            return None;
        }
        if !self.queues[Criticality::Standard.index()].is_empty() {
            return Some(Criticality::Standard);
        }
        if self.level() == Level::Normal
            && !self.queues[Criticality::NonCritical.index()].is_empty()
        {
            return Some(Criticality::NonCritical);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Thresholds;

    fn state(max: usize, reserve: usize) -> AdmissionState {
        AdmissionState::new(
            max,
            reserve,
            8,
            LevelMachine::new(Thresholds {
                warning: 0.85,
                critical: 0.92,
                critical_recovery: 0.88,
                warning_recovery: 0.80,
                min_dwell: Duration::from_millis(500),
                starvation: Duration::from_millis(200),
            }),
        )
    }

    fn granted(a: &Admit) -> bool {
        matches!(a, Admit::Granted)
    }

    #[test]
    fn reserve_is_only_for_critical() {
        let now = Instant::now();
        let mut s = state(10, 2);
        for _ in 0..8 {
            assert!(granted(&s.admit(Criticality::Standard, None, now).0));
        }
        assert!(matches!(
            s.admit(Criticality::Standard, None, now).0,
            Admit::Enqueued { .. }
        ));
        assert!(granted(&s.admit(Criticality::Critical, None, now).0));
        assert!(granted(&s.admit(Criticality::Critical, None, now).0));
        assert_eq!(s.level(), Level::Critical);
    }

    #[test]
    fn released_slots_go_to_critical_waiters_first() {
        let now = Instant::now();
        let mut s = state(4, 1);
        for _ in 0..3 {
            s.admit(Criticality::Standard, None, now);
        }
        s.admit(Criticality::Critical, None, now);
        let (std_wait, _) = s.admit(Criticality::Standard, None, now);
        let (crit_wait, _) = s.admit(Criticality::Critical, None, now);
        let (Admit::Enqueued { id: std_id, .. }, Admit::Enqueued { id: crit_id, .. }) =
            (std_wait, crit_wait)
        else {
            panic!("both should wait");
        };
        let effects = s.release(None, now);
        assert_eq!(effects.grants.len(), 1);
        assert_eq!(effects.grants[0].id, crit_id);
        // The next release leaves one free slot: the reserve. Standard still waits.
        let effects = s.release(None, now);
        assert!(effects.grants.is_empty());
        let effects = s.release(None, now);
        assert_eq!(effects.grants[0].id, std_id);
    }

    #[test]
    fn non_critical_is_shed_above_normal_and_queued_ones_are_told() {
        let now = Instant::now();
        let mut s = state(10, 1);
        for _ in 0..9 {
            s.admit(Criticality::Standard, None, now);
        }
        // 9/10 = 0.9: Warning. Non-critical is refused.
        assert_eq!(s.level(), Level::Warning);
        assert!(matches!(
            s.admit(Criticality::NonCritical, None, now).0,
            Admit::Rejected(RejectionKind::Shed)
        ));
    }

    #[test]
    fn queue_depth_is_bounded() {
        let now = Instant::now();
        let mut s = state(1, 0);
        s.admit(Criticality::Standard, None, now);
        for _ in 0..8 {
            assert!(matches!(
                s.admit(Criticality::Standard, None, now).0,
                Admit::Enqueued { .. }
            ));
        }
        assert!(matches!(
            s.admit(Criticality::Critical, None, now).0,
            Admit::Rejected(RejectionKind::QueueFull)
        ));
    }

    #[test]
    fn a_cancelled_waiter_is_never_granted() {
        let now = Instant::now();
        let mut s = state(1, 0);
        s.admit(Criticality::Standard, None, now);
        let (Admit::Enqueued { id, .. }, _) = s.admit(Criticality::Standard, None, now) else {
            panic!("should wait");
        };
        assert!(s.cancel(Criticality::Standard, &None, id, now));
        let effects = s.release(None, now);
        assert!(effects.grants.is_empty());
        assert_eq!(s.granted, 0);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn recovery_reports_duration_and_peak() {
        let t0 = Instant::now();
        let mut s = state(10, 1);
        for _ in 0..10 {
            s.admit(Criticality::Critical, None, t0);
        }
        for _ in 0..10 {
            s.release(None, t0 + Duration::from_millis(100));
        }
        s.observe(t0 + Duration::from_millis(600));
        let effects = s.observe(t0 + Duration::from_millis(1100));
        let (after, peak) = effects.recovered.expect("back to normal");
        assert_eq!(after, Duration::from_millis(1100));
        assert_eq!(peak, 1.0);
    }
}
