//! [`ClassCapacity`]: how many of the pool's slots each class may use.

use crate::criticality::Criticality;

/// The slot budget of each class for one pool size.
///
/// - Critical work may use every slot; the last `reserve` slots are its alone.
/// - Standard work may use every slot but the reserve.
/// - Non-critical work may keep the pool below the warning line: together with what critical
///   and standard work (and connections taken outside the guard) use, at most
///   [`non_critical_ceiling`](ClassCapacity::non_critical_ceiling) slots are in use after it
///   starts. It never takes the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCapacity {
    /// The pool's size.
    pub max_size: usize,
    /// Slots only critical work may take.
    pub reserve: usize,
    /// The most slots in use (all classes) after a non-critical start.
    pub non_critical_ceiling: usize,
}

impl ClassCapacity {
    /// The budget for a pool of `max_size` with `reserve` critical slots and the warning line
    /// at `warning_utilization` (in `(0, 1]`).
    ///
    /// The ceiling is the largest use that stays below the line (one slot under
    /// `ceil(warning × max_size)`), never more than the slots outside the reserve, and at least
    /// one when any slot lies outside the reserve (a tiny pool still serves its reports).
    pub fn new(max_size: usize, reserve: usize, warning_utilization: f64) -> Self {
        let reserve = reserve.min(max_size.saturating_sub(1));
        let outside_reserve = max_size - reserve;
        let line = (warning_utilization * max_size as f64 - 1e-9)
            .ceil()
            .max(0.0) as usize;
        let ceiling = line
            .saturating_sub(1)
            .min(outside_reserve)
            .max(outside_reserve.min(1));
        Self {
            max_size,
            reserve,
            non_critical_ceiling: ceiling,
        }
    }

    /// The most slots in use after work of `class` starts.
    pub fn ceiling(&self, class: Criticality) -> usize {
        match class {
            Criticality::Critical => self.max_size,
            Criticality::Standard => self.max_size - self.reserve,
            Criticality::NonCritical => self.non_critical_ceiling,
        }
    }

    /// Slots `class` may use while `others` slots are used by every other class (and outside
    /// the guard), before any ramp.
    pub fn budget(&self, class: Criticality, others: usize) -> usize {
        self.ceiling(class).saturating_sub(others)
    }

    /// Whether one more acquisition of `class` may start now, with `in_use` slots in use in
    /// total and `own` of them held by `class`, under a non-critical share of `share` (the
    /// [`StartRamp`](super::StartRamp), `1.0` outside a ramp) that never goes below `floor`
    /// running (what was already running when the ramp began).
    pub fn may_start(
        &self,
        class: Criticality,
        in_use: usize,
        own: usize,
        share: f64,
        floor: usize,
    ) -> bool {
        if in_use >= self.ceiling(class) {
            return false;
        }
        if class != Criticality::NonCritical {
            return true;
        }
        let budget = self.budget(class, in_use.saturating_sub(own));
        // Rounded down by the cast (the product is never negative): no library call.
        let ramped = ((budget as f64) * share.clamp(0.0, 1.0)) as usize;
        own < ramped.max(floor).max(1).min(budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_critical_keeps_the_pool_under_the_warning_line() {
        let c = ClassCapacity::new(20, 2, 0.85);
        // 17 of 20 is 85 %: the line. Non-critical may bring use to 16 at most.
        assert_eq!(c.non_critical_ceiling, 16);
        assert_eq!(c.ceiling(Criticality::Standard), 18);
        assert_eq!(c.ceiling(Criticality::Critical), 20);
        assert!(c.may_start(Criticality::NonCritical, 15, 15, 1.0, 0));
        assert!(!c.may_start(Criticality::NonCritical, 16, 16, 1.0, 0));
    }

    #[test]
    fn critical_and_standard_use_shrinks_the_non_critical_budget() {
        let c = ClassCapacity::new(20, 2, 0.85);
        // Three standard and one critical slot in use: non-critical gets 12.
        assert_eq!(c.budget(Criticality::NonCritical, 4), 12);
        assert!(c.may_start(Criticality::NonCritical, 15, 11, 1.0, 0));
        assert!(!c.may_start(Criticality::NonCritical, 16, 12, 1.0, 0));
        // Standard still goes up to the reserve, critical to the last slot.
        assert!(c.may_start(Criticality::Standard, 17, 13, 1.0, 0));
        assert!(!c.may_start(Criticality::Standard, 18, 14, 1.0, 0));
        assert!(c.may_start(Criticality::Critical, 19, 1, 1.0, 0));
        assert!(!c.may_start(Criticality::Critical, 20, 1, 1.0, 0));
    }

    #[test]
    fn the_reserve_is_never_given_to_non_critical_work() {
        // A warning line above the reserve boundary: the reserve still wins.
        let c = ClassCapacity::new(10, 3, 1.0);
        assert_eq!(c.non_critical_ceiling, 7);
        // A tiny pool keeps one slot for its reports.
        assert_eq!(ClassCapacity::new(1, 0, 0.85).non_critical_ceiling, 1);
        assert_eq!(ClassCapacity::new(2, 1, 0.85).non_critical_ceiling, 1);
    }

    #[test]
    fn a_ramp_share_limits_non_critical_starts() {
        let c = ClassCapacity::new(20, 2, 0.85);
        // Half the budget of 16 during a ramp: 8 may run.
        assert!(c.may_start(Criticality::NonCritical, 7, 7, 0.5, 0));
        assert!(!c.may_start(Criticality::NonCritical, 8, 8, 0.5, 0));
        // Work already running when the ramp began keeps its slots.
        assert!(c.may_start(Criticality::NonCritical, 11, 11, 0.1, 12));
        assert!(!c.may_start(Criticality::NonCritical, 12, 12, 0.1, 12));
        // A ramp never stops non-critical work entirely.
        assert!(c.may_start(Criticality::NonCritical, 0, 0, 0.0, 0));
        assert!(!c.may_start(Criticality::NonCritical, 1, 1, 0.0, 0));
    }
}
