//! The admission state: who holds a slot, who waits, in what order slots are handed out, and
//! who is told at once that it would not start in time.
//!
//! Everything here is plain data behind one short-held mutex; time is passed in, and the
//! decisions come from the pure cores in [`crate::controller`]. The slot counts and the
//! measured hold times live in the [`FastGate`] in front of it, which grants and releases
//! without the lock while nothing is wrong; this state machine decides everything else, and
//! is the model the gate is checked against (driven alone, it is the whole admission).

use super::gate::{FastGate, GateSettings, MAX_CEILING};
use super::outlook::Outlook;
use super::queue::{FairQueue, Grant, Waiter};
use crate::controller::{ClassCapacity, DrainEstimate, RetryJitter, StartRamp};
use crate::criticality::Criticality;
use crate::events::NonCriticalGate;
use crate::limit::UserKey;
use crate::monitor::{Level, LevelMachine, Pressure, Transition};
use crate::rejection::{Refusal, RejectionKind};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a refusal suggests when no hold time has been measured yet.
const UNKNOWN_RETRY: Duration = Duration::from_secs(1);

/// The result of asking for a slot.
#[derive(Debug)]
pub(crate) enum Admit {
    /// A slot is held now.
    Granted,
    /// The acquisition waits in the queue.
    Enqueued {
        id: u64,
        rx: oneshot::Receiver<Grant>,
    },
    /// Refused at once.
    Rejected(Refusal),
}

/// A level change, with the picture it was decided on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelChange {
    pub(crate) transition: Transition,
    pub(crate) utilization: f64,
    pub(crate) in_use: usize,
    pub(crate) max_size: usize,
    pub(crate) waiting: usize,
}

/// What a state change asks the guard to do once the lock is released.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Waiters granted a slot (already counted as held); a release grants one, so one or
    /// two are kept without an allocation under the lock.
    pub(crate) grants: SmallVec<[Waiter; 2]>,
    /// Waiters refused: their start would lie past their deadline, or the deadline passed.
    pub(crate) refusals: Vec<(Waiter, Refusal)>,
    /// A level change.
    pub(crate) transition: Option<LevelChange>,
    /// Set when the level returned to Normal: how long the episode lasted and its peak.
    pub(crate) recovered: Option<(Duration, f64)>,
    /// A waiter joined whose deadline comes before the deadline keeper's next run: the
    /// keeper must be woken to run earlier.
    pub(crate) deadline_earlier: bool,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    peak: f64,
}

/// How the admission state is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdmissionSettings {
    pub(crate) max_size: usize,
    pub(crate) reserve: usize,
    pub(crate) warning_utilization: f64,
    /// Most waiters per class.
    pub(crate) queue_depth: usize,
    /// Most waiters per class of one user (an anonymous caller counts as one user).
    pub(crate) user_queue_depth: usize,
    pub(crate) ramp: Duration,
}

#[derive(Debug)]
pub(crate) struct AdmissionState {
    settings: AdmissionSettings,
    capacity: ClassCapacity,
    /// The most slots the guard may hold, by the level machine and the reserve, before a
    /// grant must be decided here (the fast path's ceiling when nothing is used outside it).
    fast_ceiling: usize,
    /// The same at Warning, where the fast path only grants: below the critical line.
    warning_ceiling: usize,
    /// The slot counts by class, the measured hold times, and the lock-free path over them.
    gate: Arc<FastGate>,
    /// Slots granted here since the start (a waiter whose caller left is never counted);
    /// the gate counts its own.
    grants_total: u64,
    /// Connections in use outside the guard (from the sampler).
    pub(crate) external: usize,
    /// deadpool's own waiters (from the sampler).
    pub(crate) pool_waiting: usize,
    /// Server-wide utilization reported by the watchdog, in `[0, 1]`.
    pub(crate) server_utilization: f64,
    /// The waiters of each class. The oldest critical or standard waiter's wait escalates to
    /// Critical; deferred non-critical waiters keep the level at Warning, never more.
    queues: [FairQueue; 3],
    /// When the deadline keeper runs next to refuse the waiters whose deadline passed: no
    /// later than the earliest deadline of any waiter (`None`: it waits to be woken).
    next_expiry: Option<Instant>,
    next_id: u64,
    machine: LevelMachine,
    episode: Option<Episode>,
    peak_utilization: f64,
    ramp: StartRamp,
    jitter: RetryJitter,
}

/// The largest use that keeps every class's grant free of effects: within the reserve line,
/// under the non-critical ceiling, and below the warning utilization `warning` exactly as the
/// level machine compares it.
fn fast_ceiling(capacity: &ClassCapacity, warning: f64) -> usize {
    below(
        capacity
            .ceiling(Criticality::Standard)
            .min(capacity.non_critical_ceiling),
        capacity.max_size,
        warning,
    )
}

/// The largest use that keeps a critical or standard grant at Warning free of effects:
/// within the reserve line and below the critical utilization `critical` exactly as the level
/// machine compares it (non-critical work is not granted on the fast path at Warning).
fn warning_ceiling(capacity: &ClassCapacity, critical: f64) -> usize {
    below(
        capacity.ceiling(Criticality::Standard),
        capacity.max_size,
        critical,
    )
}

/// The largest use up to `n` (and the gate's most) whose utilization of `max` is below
/// `line`, compared as the level machine compares it.
fn below(n: usize, max: usize, line: f64) -> usize {
    let mut n = n.min(MAX_CEILING);
    while n > 0 && n as f64 / max as f64 >= line {
        n -= 1;
    }
    n
}

/// `slots` rounded up to a whole slot, as `slots.ceil() as usize` (0 for a negative or NaN
/// `slots`), without the library call that `ceil` is on the baseline x86-64 target: every
/// change reads the server's use in slots.
fn ceil_slots(slots: f64) -> usize {
    let whole = slots as usize;
    if (whole as f64) < slots {
        whole.saturating_add(1)
    } else {
        whole
    }
}

impl AdmissionState {
    /// A state over `gate`, which holds its slot counts (a gate of its own when the state is
    /// driven alone).
    pub(crate) fn new(
        settings: AdmissionSettings,
        machine: LevelMachine,
        seed: u64,
        gate: Arc<FastGate>,
    ) -> Self {
        let capacity = ClassCapacity::new(
            settings.max_size,
            settings.reserve,
            settings.warning_utilization,
        );
        Self {
            fast_ceiling: fast_ceiling(&capacity, machine.thresholds().warning),
            warning_ceiling: warning_ceiling(&capacity, machine.thresholds().critical),
            capacity,
            settings,
            gate,
            grants_total: 0,
            external: 0,
            pool_waiting: 0,
            server_utilization: 0.0,
            queues: Default::default(),
            next_expiry: None,
            next_id: 0,
            machine,
            episode: None,
            peak_utilization: 0.0,
            ramp: StartRamp::new(settings.ramp),
            jitter: RetryJitter::new(seed),
        }
    }

    /// What the fast path may do until the next change: grant and release while the level is
    /// Normal, no one waits and the use stays within the ceiling (non-critical work only
    /// outside a ramp and while the server has room for it); while the level machine is
    /// steady at Warning (no one waits, no calm is timed and the use is at or above the
    /// recovery line), grant below the critical line (a grant only raises the use) and
    /// release down to the fewest slots that keep it steady.
    pub(crate) fn gate_settings(&self, now: Instant) -> GateSettings {
        if self.queued() > 0 || self.pool_waiting > 0 {
            // Someone waits: every grant and release goes to the lock.
            return GateSettings::CLOSED;
        }
        let open = self.level() == Level::Normal;
        // The pressure is read only when it can let the gate grant.
        let steady = (self.level() == Level::Warning)
            .then(|| self.pressure(now))
            .filter(|pressure| self.machine.steady_at_warning(pressure));
        let release_floor = match steady {
            Some(pressure) => self.release_floor(&pressure),
            None if open => usize::MAX,
            // At Critical, or at Warning with a calm timed or the use below the recovery
            // line: the level machine must see every change.
            None => return GateSettings::CLOSED,
        };
        let grants_only = steady.is_some();
        let server = self.server_slots();
        let ceiling = if open {
            self.fast_ceiling
        } else {
            self.warning_ceiling
        };
        GateSettings {
            open,
            grants_only,
            non_critical: !self.ramp.is_ramping(now) && server < self.capacity.non_critical_ceiling,
            ceiling: ceiling.saturating_sub(self.external),
            release_floor,
        }
    }

    /// The fewest slots held through the guard at which the level machine, steady at
    /// Warning under `pressure`, stays steady: a release that leaves fewer could start its
    /// calm, and must be observed. Asked of the machine itself (its comparison, on the
    /// utilization the slots would make), by bisection: the use only grows with the slots.
    fn release_floor(&self, pressure: &Pressure) -> usize {
        let steady_with = |granted| {
            self.machine.steady_at_warning(&Pressure {
                utilization: self.utilization_with(granted),
                ..*pressure
            })
        };
        // Steady with every slot held now; with none, the server's use alone may keep it so.
        let (mut unsteady, mut steady) = (0, self.granted());
        if steady_with(unsteady) {
            return 0;
        }
        while steady - unsteady > 1 {
            let mid = unsteady + (steady - unsteady) / 2;
            if steady_with(mid) {
                steady = mid;
            } else {
                unsteady = mid;
            }
        }
        steady
    }

    /// Folds the grants the gate made at Warning since the last change into the episode's
    /// peak (and the peak utilization), as observing each of them would have: a change under
    /// the lock calls it before it decides anything.
    pub(crate) fn fold_fast_grants(&mut self) {
        let Some(peak) = self.gate.take_peak_since_change() else {
            return;
        };
        let utilization = self.utilization_with(peak);
        self.peak_utilization = self.peak_utilization.max(utilization);
        if let Some(episode) = &mut self.episode {
            episode.peak = episode.peak.max(utilization);
        }
    }

    /// Changes the pool size (after a resize) and the reserve that goes with it.
    pub(crate) fn resize(&mut self, max_size: usize, reserve: usize) {
        self.settings.reserve = reserve;
        self.settings.max_size = max_size.max(reserve + 1);
        self.capacity = ClassCapacity::new(
            self.settings.max_size,
            reserve,
            self.settings.warning_utilization,
        );
        self.fast_ceiling = fast_ceiling(&self.capacity, self.machine.thresholds().warning);
        self.warning_ceiling = warning_ceiling(&self.capacity, self.machine.thresholds().critical);
    }

    pub(crate) fn level(&self) -> Level {
        self.machine.level()
    }

    pub(crate) fn max_size(&self) -> usize {
        self.settings.max_size
    }

    pub(crate) fn reserve(&self) -> usize {
        self.settings.reserve
    }

    /// Slots held through the guard.
    pub(crate) fn granted(&self) -> usize {
        self.gate.total()
    }

    /// Slots held through the guard by `class`.
    pub(crate) fn granted_of(&self, class: Criticality) -> usize {
        self.gate.count(class)
    }

    /// Slots granted since the start, here and on the fast path.
    pub(crate) fn grants_total(&self) -> u64 {
        self.grants_total + self.gate.fast_grants()
    }

    /// Slots granted on the fast path since the start.
    #[cfg(test)]
    pub(crate) fn fast_grants(&self) -> u64 {
        self.gate.fast_grants()
    }

    /// The highest utilization seen since the start (a fast grant counts with the use outside
    /// the guard as it is now).
    pub(crate) fn peak_utilization(&self) -> f64 {
        let fast = (self.gate.peak() + self.external) as f64 / self.settings.max_size as f64;
        self.peak_utilization.max(fast.min(1.0))
    }

    /// The measured hold time of `class` (fed by every release, on the fast path too), as a
    /// drain estimate.
    pub(crate) fn drain(&self, class: Criticality) -> DrainEstimate {
        self.gate.holds.estimate(class)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queues.iter().map(FairQueue::len).sum()
    }

    pub(crate) fn queued_of(&self, class: Criticality) -> usize {
        self.queues[class.index()].len()
    }

    pub(crate) fn in_use(&self) -> usize {
        self.granted() + self.external
    }

    pub(crate) fn pool_utilization(&self) -> f64 {
        self.in_use() as f64 / self.settings.max_size as f64
    }

    /// The state of the non-critical gate: open (deferred, not straight to the pool) above
    /// Normal, half-open while the start ramp runs (or is held at Critical), closed
    /// otherwise.
    pub(crate) fn breaker(&self, now: Instant) -> NonCriticalGate {
        if self.level() != Level::Normal {
            NonCriticalGate::Deferred
        } else if self.ramp.is_ramping(now) {
            NonCriticalGate::Ramping
        } else {
            NonCriticalGate::Direct
        }
    }

    /// The utilization the level machine sees with `granted` slots held through the guard:
    /// the pool's use (with what is used outside the guard) or the server's, whichever is
    /// higher. One place for the arithmetic, so that a grant the gate made alone is folded in
    /// with exactly the figure its observation would have had.
    fn utilization_with(&self, granted: usize) -> f64 {
        ((granted + self.external) as f64 / self.settings.max_size as f64)
            .max(self.server_utilization)
            .min(1.0)
    }

    pub(crate) fn pressure(&self, now: Instant) -> Pressure {
        let oldest_wait = [Criticality::Critical, Criticality::Standard]
            .iter()
            .filter_map(|c| self.queues[c.index()].oldest_enqueued())
            .min()
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        Pressure {
            utilization: self.utilization_with(self.granted()),
            waiting: self.queued() + self.pool_waiting,
            oldest_wait,
        }
    }

    /// Slots in use as non-critical work must see them: the pool's, or the server's share
    /// of this pool when another process holds the server (a report would need a
    /// connection the server does not have).
    fn in_use_for(&self, class: Criticality) -> usize {
        let pool = self.in_use();
        if class != Criticality::NonCritical {
            return pool;
        }
        pool.max(self.server_slots())
    }

    /// The server's use in slots of this pool.
    fn server_slots(&self) -> usize {
        ceil_slots(self.server_utilization * self.settings.max_size as f64)
    }

    /// Whether one more acquisition of `class` may start now, by capacity alone (at every
    /// level: non-critical work keeps under the warning line by its budget).
    fn may_start(&self, class: Criticality, now: Instant) -> bool {
        // The ramp bounds non-critical work alone: read only for it.
        let (share, floor) = if class == Criticality::NonCritical {
            (self.ramp.share(now), self.ramp.floor(now))
        } else {
            (1.0, 0)
        };
        self.capacity.may_start(
            class,
            self.in_use_for(class),
            self.granted_of(class),
            share,
            floor,
        )
    }

    /// Whether a newcomer of `class` may take a slot right now without overtaking anyone who
    /// waits at the same or a higher priority.
    fn may_take_now(&self, class: Criticality, now: Instant) -> bool {
        let ahead_waiting = Criticality::ALL
            .iter()
            .filter(|c| **c >= class)
            .any(|c| !self.queues[c.index()].is_empty());
        !ahead_waiting && self.may_start(class, now)
    }

    /// Waiters that start before a newcomer of `class`: its own queue and every higher one.
    fn ahead_of_newcomer(&self, class: Criticality) -> usize {
        Criticality::ALL
            .iter()
            .filter(|c| **c >= class)
            .map(|c| self.queues[c.index()].len())
            .sum()
    }

    /// The slots that drain `class`'s queue: its budget given what the other classes use.
    fn draining_slots(&self, class: Criticality) -> usize {
        let others = self.in_use_for(class) - self.granted_of(class);
        self.capacity.budget(class, others).max(1)
    }

    /// When the waiter with `ahead` waiters in front of it in `class` can expect to start;
    /// `None` before the class's first measured hold.
    fn expected_start(&self, class: Criticality, ahead: usize) -> Option<Duration> {
        self.drain(class)
            .expected_start(ahead, self.draining_slots(class))
    }

    /// [`expected_start`](Self::expected_start) in seconds: what a comparison with a
    /// waiter's allowed wait needs, without making a `Duration` unless it refuses.
    fn expected_start_secs(&self, class: Criticality, ahead: usize) -> Option<f64> {
        self.drain(class)
            .expected_start_secs(ahead, self.draining_slots(class))
    }

    /// What a newcomer of each class (by `Criticality::index`) faces now: the
    /// [`outlook`](Self::outlook) of every class from one reading of the counts, the queues,
    /// the server's use and the ramp (what every change publishes).
    pub(crate) fn outlooks(&self, now: Instant) -> [Outlook; 3] {
        let own = self.gate.counts();
        let queued = Criticality::ALL.map(|c| self.queues[c.index()].len());
        let pool = own.iter().sum::<usize>() + self.external;
        let server = self.server_slots();
        let (share, floor) = (self.ramp.share(now), self.ramp.floor(now));
        // Waiters of each class and every higher one (`ALL` goes from least to most
        // important): the sums from the top down.
        let critical = queued[Criticality::Critical.index()];
        let standard_up = critical + queued[Criticality::Standard.index()];
        let all = standard_up + queued[Criticality::NonCritical.index()];
        let at_or_above = [all, standard_up, critical];
        // A loop, not `ALL.map`: the closure `map` calls would not be inlined.
        let mut outlooks = [Outlook::NONE; 3];
        for class in Criticality::ALL {
            let i = class.index();
            let in_use = if class == Criticality::NonCritical {
                pool.max(server)
            } else {
                pool
            };
            let ahead = at_or_above[i];
            outlooks[i] = Outlook {
                at_once: ahead == 0 && self.capacity.may_start(class, in_use, own[i], share, floor),
                ahead,
                slots: self.capacity.budget(class, in_use - own[i]).max(1),
            };
        }
        outlooks
    }

    /// What a newcomer of `class` faces now: whether it may take a slot at once, how many
    /// wait ahead of it, and the slots that drain its class.
    #[cfg(test)]
    pub(crate) fn outlook(&self, class: Criticality, now: Instant) -> Outlook {
        Outlook {
            at_once: self.may_take_now(class, now),
            ahead: self.ahead_of_newcomer(class),
            slots: self.draining_slots(class),
        }
    }

    /// When a newcomer of `class` can expect to start: now if it may take a slot, otherwise
    /// from its place in the queue; `None` when nothing was measured yet. (The guard
    /// publishes it in microseconds, from the [`outlook`](Self::outlook).)
    #[cfg(test)]
    pub(crate) fn newcomer_estimate(&self, class: Criticality, now: Instant) -> Option<Duration> {
        self.outlook(class, now).expected_start(self.drain(class))
    }

    /// A refusal of `kind` for a waiter expected to start `estimate` from now that would
    /// wait at most `allowed`: it is told to come back once its start would fit.
    fn refusal(
        &mut self,
        kind: RejectionKind,
        estimate: Option<Duration>,
        allowed: Duration,
    ) -> Refusal {
        let estimate = estimate.unwrap_or(UNKNOWN_RETRY);
        Refusal {
            kind,
            retry_after: self.jitter.come_back_after(estimate, allowed),
        }
    }

    /// Asks for a slot for `class`, to start by `deadline`. (The guard uses
    /// [`admit_into`](Self::admit_into).)
    #[cfg(test)]
    pub(crate) fn admit(
        &mut self,
        class: Criticality,
        user: Option<UserKey>,
        deadline: Instant,
        now: Instant,
    ) -> (Admit, Effects) {
        let mut effects = Effects::default();
        let admit = self.admit_into(class, user, deadline, now, &mut effects);
        (admit, effects)
    }

    /// Asks for a slot for `class`, to start by `deadline`; what follows is added to
    /// `effects`, which the caller keeps in place across the change.
    pub(crate) fn admit_into(
        &mut self,
        class: Criticality,
        user: Option<UserKey>,
        deadline: Instant,
        now: Instant,
        effects: &mut Effects,
    ) -> Admit {
        if self.may_take_now(class, now) {
            self.grant(class);
            self.observe_into(now, effects);
            return Admit::Granted;
        }
        let ahead = self.ahead_of_newcomer(class);
        let estimate_secs = self.expected_start_secs(class, ahead);
        let allowed = deadline.saturating_duration_since(now);
        let queue = &mut self.queues[class.index()];
        let queue_full = queue.len() >= self.settings.queue_depth;
        let per_user = user.is_some();
        // One look-up of the user's queue serves its depth and the waiter's place.
        let joining = queue.join(user);
        let refused =
            if queue_full || (per_user && joining.queued() >= self.settings.user_queue_depth) {
                Some(RejectionKind::QueueFull)
            } else if estimate_secs.is_some_and(|e| e > allowed.as_secs_f64()) {
                Some(RejectionKind::Shed)
            } else {
                None
            };
        if let Some(kind) = refused {
            drop(joining);
            let estimate = estimate_secs.map(Duration::from_secs_f64);
            return Admit::Rejected(self.refusal(kind, estimate, allowed));
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline_earlier = self.next_expiry.is_none_or(|at| deadline < at);
        if deadline_earlier {
            self.next_expiry = Some(deadline);
        }
        let (tx, rx) = oneshot::channel();
        joining.push(Waiter {
            id,
            class,
            enqueued: now,
            deadline,
            tx,
        });
        self.observe_into(now, effects);
        effects.deadline_earlier |= deadline_earlier;
        Admit::Enqueued { id, rx }
    }

    /// Refuses every waiter whose deadline is at or before `cutoff` (`now` when the deadline
    /// keeper runs: no waiter starts after its deadline, and none waits past it), then books
    /// the keeper's next run at the earliest deadline left. Returns that run (`None`: no one
    /// waits) and what the departures lead to.
    pub(crate) fn expire(&mut self, cutoff: Instant, now: Instant) -> (Option<Instant>, Effects) {
        let mut expired = Vec::new();
        for class in Criticality::ALL {
            for w in self.queues[class.index()].take_expired(cutoff) {
                if w.tx.is_closed() {
                    // Its caller left: it never runs.
                    continue;
                }
                let estimate = self.expected_start(class, self.queues[class.index()].len());
                let r = self.refusal(RejectionKind::QueueTimeout, estimate, Duration::ZERO);
                expired.push((w, r));
            }
        }
        // Fewer waiters can lower the level or open room.
        let mut effects = self.observe(now);
        effects.refusals.splice(0..0, expired);
        self.next_expiry = self
            .queues
            .iter()
            .filter_map(FairQueue::earliest_deadline)
            .min();
        (self.next_expiry, effects)
    }

    fn grant(&mut self, class: Criticality) {
        self.gate.add(class);
        self.grants_total += 1;
    }

    /// A waiter's caller gave up: forget it. Returns whether it was still queued (if not, it
    /// was granted or refused, and a grant is released by whoever drops it).
    pub(crate) fn cancel(&mut self, class: Criticality, user: &Option<UserKey>, id: u64) -> bool {
        self.queues[class.index()].remove(user, id).is_some()
    }

    /// A slot of `class` was given back, with how long it was held if a connection was
    /// handed out on it (a grant whose caller had left measures nothing). The whole release
    /// when the state is driven alone, as the model.
    #[cfg(test)]
    pub(crate) fn release(
        &mut self,
        class: Criticality,
        held: Option<Duration>,
        now: Instant,
    ) -> Effects {
        self.gate.release(class);
        self.after_release(class, held, now)
    }

    /// What follows a release whose slot was already taken off the gate's count. (The guard
    /// uses [`after_release_into`](Self::after_release_into).)
    #[cfg(test)]
    pub(crate) fn after_release(
        &mut self,
        class: Criticality,
        held: Option<Duration>,
        now: Instant,
    ) -> Effects {
        let mut effects = Effects::default();
        self.after_release_into(class, held, now, &mut effects);
        effects
    }

    /// What follows a release whose slot was already taken off the gate's count: the hold
    /// time is measured, the level re-evaluated and the slot handed on; what follows is
    /// added to `effects`.
    pub(crate) fn after_release_into(
        &mut self,
        class: Criticality,
        held: Option<Duration>,
        now: Instant,
        effects: &mut Effects,
    ) {
        if let Some(held) = held {
            self.gate.holds.record(class, held);
        }
        self.observe_into(now, effects);
        self.refuse_hopeless(class, now, effects);
    }

    /// Refuses, newest first, the waiters of `class` whose expected start now lies past their
    /// deadline: they are told at once (with the estimate as `Retry-After`), not at the
    /// deadline.
    fn refuse_hopeless(&mut self, class: Criticality, now: Instant, effects: &mut Effects) {
        let first = effects.refusals.len();
        while let Some(tail_deadline) = self.queues[class.index()].last_deadline() {
            let ahead = self.ahead_of_newcomer(class) - 1;
            let Some(estimate_secs) = self.expected_start_secs(class, ahead) else {
                break;
            };
            let allowed = tail_deadline.saturating_duration_since(now);
            if estimate_secs <= allowed.as_secs_f64() {
                break;
            }
            let Some(w) = self.queues[class.index()].pop_last() else {
                break;
            };
            let estimate = Duration::from_secs_f64(estimate_secs);
            let r = self.refusal(RejectionKind::Shed, Some(estimate), allowed);
            effects.refusals.push((w, r));
        }
        // Oldest first: their returns are booked in the order they would have started.
        effects.refusals[first..].reverse();
    }

    /// Re-evaluates the level and hands free slots to waiters, highest priority first.
    pub(crate) fn observe(&mut self, now: Instant) -> Effects {
        let mut effects = Effects::default();
        self.observe_into(now, &mut effects);
        effects
    }

    /// [`observe`](Self::observe), adding what follows to `effects`.
    fn observe_into(&mut self, now: Instant, effects: &mut Effects) {
        self.dispatch(now, effects);
        let pressure = self.pressure(now);
        self.peak_utilization = self.peak_utilization.max(pressure.utilization);
        if let Some(episode) = &mut self.episode {
            episode.peak = episode.peak.max(pressure.utilization);
        }
        if let Some(t) = self.machine.observe(pressure, now) {
            effects.transition = Some(LevelChange {
                transition: t,
                utilization: pressure.utilization,
                in_use: self.in_use(),
                max_size: self.settings.max_size,
                waiting: pressure.waiting,
            });
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
            match t.to {
                // At Critical, reports that run keep their slots; beyond them only a tenth of
                // the budget may start until the level falls.
                Level::Critical => {
                    let running = self.granted_of(Criticality::NonCritical);
                    self.ramp.hold(running)
                }
                // Out of Critical, what non-critical work did not run comes back on the ramp.
                _ if t.from == Level::Critical => {
                    let running = self.granted_of(Criticality::NonCritical);
                    self.ramp.start(now, running)
                }
                _ => {}
            }
            // A level change can open room for waiters (e.g. out of Critical).
            self.dispatch(now, effects);
        }
    }

    fn dispatch(&mut self, now: Instant, effects: &mut Effects) {
        while let Some(class) = self.next_class_to_serve(now) {
            let Some(w) = self.queues[class.index()].pop() else {
                break;
            };
            if w.tx.is_closed() {
                // Its caller left: it never runs.
                continue;
            }
            if w.deadline <= now {
                // Never started after its deadline.
                let estimate = self.expected_start(class, self.queues[class.index()].len());
                let r = self.refusal(RejectionKind::QueueTimeout, estimate, Duration::ZERO);
                effects.refusals.push((w, r));
                continue;
            }
            self.grant(class);
            effects.grants.push(w);
        }
    }

    fn next_class_to_serve(&self, now: Instant) -> Option<Criticality> {
        Criticality::ALL
            .iter()
            .rev()
            .copied()
            .find(|c| !self.queues[c.index()].is_empty())
            .filter(|c| self.may_start(*c, now))
    }
}

#[cfg(test)]
mod tests;
