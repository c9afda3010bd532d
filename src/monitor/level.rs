//! The pressure level and the pure state machine that moves between levels.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// How much pressure the pool is under.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Everything is served.
    #[default]
    Normal,
    /// Non-critical work is deferred (it waits for its slots instead of going straight to
    /// the pool) and per-user limits are tightened.
    Warning,
    /// Only the reserve is left: standard work queues, critical work is served first, and
    /// non-critical work beyond what already runs waits for the level to fall.
    Critical,
}

impl Level {
    /// A stable lower-case name, used in JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// The level as a number for the `poolguard_level` gauge: 0, 1 or 2.
    pub const fn as_gauge(self) -> f64 {
        match self {
            Level::Normal => 0.0,
            Level::Warning => 1.0,
            Level::Critical => 2.0,
        }
    }

    pub(crate) const fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) const fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Normal,
            1 => Level::Warning,
            _ => Level::Critical,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds the level machine works with (validated by
/// [`GuardConfig`](crate::config::GuardConfig)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Enter Warning at or above this utilization.
    pub warning: f64,
    /// Enter Critical at or above this utilization.
    pub critical: f64,
    /// Leave Critical (for Warning) once below this utilization for `min_dwell`.
    pub critical_recovery: f64,
    /// Leave Warning (for Normal) once below this utilization for `min_dwell`.
    pub warning_recovery: f64,
    /// How long pressure must stay below a recovery threshold before the level drops.
    pub min_dwell: Duration,
    /// Waiters older than this count as starvation and escalate to Critical.
    pub starvation: Duration,
}

/// What the pool looks like at one instant, as the level machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Pressure {
    /// The highest of pool utilization and server-wide utilization, in `[0, 1]`.
    pub utilization: f64,
    /// Acquisitions waiting for a slot, deferred non-critical ones included (they keep the
    /// level at Warning).
    pub waiting: usize,
    /// How long the oldest critical or standard waiter has waited (deferred non-critical
    /// work never counts as starvation).
    pub oldest_wait: Duration,
}

/// A level change decided by [`LevelMachine::observe`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The level before.
    pub from: Level,
    /// The level after.
    pub to: Level,
}

/// The pure level state machine: escalates at once, de-escalates with hysteresis and a
/// minimum dwell time. Time is passed in, so it is tested without a clock.
#[derive(Debug, Clone)]
pub struct LevelMachine {
    thresholds: Thresholds,
    level: Level,
    /// Since when pressure has been below the current level's recovery threshold.
    calm_since: Option<Instant>,
}

impl LevelMachine {
    /// A machine at [`Level::Normal`].
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            level: Level::Normal,
            calm_since: None,
        }
    }

    /// The thresholds it works with.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Whether observing `p`, or `p` with more of the pool in use (below the critical line),
    /// leaves the machine as it is: at Warning, nothing waiting, no calm being timed, and the
    /// use at or above the recovery line. What lets a grant at Warning skip the observation.
    pub(crate) fn steady_at_warning(&self, p: &Pressure) -> bool {
        self.level == Level::Warning
            && self.calm_since.is_none()
            && p.waiting == 0
            && !self.calm_below(Level::Warning, p)
    }

    /// The level this pressure asks for, before hysteresis.
    fn demanded(&self, p: &Pressure) -> Level {
        let t = &self.thresholds;
        let starving = p.waiting > 0 && p.oldest_wait >= t.starvation;
        if p.utilization >= t.critical || starving {
            Level::Critical
        } else if p.utilization >= t.warning || p.waiting > 0 {
            Level::Warning
        } else {
            Level::Normal
        }
    }

    /// Whether this pressure is calm enough to step down one level from `level`.
    fn calm_below(&self, level: Level, p: &Pressure) -> bool {
        let t = &self.thresholds;
        match level {
            Level::Normal => false,
            Level::Warning => p.utilization < t.warning_recovery && p.waiting == 0,
            Level::Critical => {
                p.utilization < t.critical_recovery
                    && !(p.waiting > 0 && p.oldest_wait >= t.starvation)
            }
        }
    }

    /// Feeds one observation; returns the transition if the level changed.
    ///
    /// Escalation happens on the first observation that demands it. De-escalation steps down
    /// one level at a time, once pressure has stayed below that level's recovery threshold for
    /// the minimum dwell time.
    pub fn observe(&mut self, p: Pressure, now: Instant) -> Option<Transition> {
        let from = self.level;
        let demanded = self.demanded(&p);
        if demanded > self.level {
            self.level = demanded;
            self.calm_since = None;
            return Some(Transition { from, to: demanded });
        }
        if !self.calm_below(self.level, &p) {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.thresholds.min_dwell {
            return None;
        }
        self.level = match self.level {
            Level::Critical => Level::Warning,
            _ => Level::Normal,
        };
        // Stepping down restarts the dwell for the next step.
        self.calm_since = if self.calm_below(self.level, &p) {
            Some(now)
        } else {
            None
        };
        Some(Transition {
            from,
            to: self.level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            warning: 0.85,
            critical: 0.92,
            critical_recovery: 0.88,
            warning_recovery: 0.80,
            min_dwell: Duration::from_millis(500),
            starvation: Duration::from_millis(200),
        }
    }

    fn util(u: f64) -> Pressure {
        Pressure {
            utilization: u,
            ..Pressure::default()
        }
    }

    #[test]
    fn escalates_at_thresholds_immediately() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        assert_eq!(m.observe(util(0.84), t0), None);
        let tr = m.observe(util(0.85), t0).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Normal, Level::Warning));
        let tr = m.observe(util(0.92), t0).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Warning, Level::Critical));
    }

    #[test]
    fn jumps_straight_to_critical() {
        let mut m = LevelMachine::new(thresholds());
        let tr = m.observe(util(1.0), Instant::now()).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Normal, Level::Critical));
    }

    #[test]
    fn hysteresis_holds_critical_between_recovery_and_threshold() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        m.observe(util(0.95), t0);
        // 0.90 is below critical but above the 0.88 recovery threshold: stays Critical.
        assert_eq!(m.observe(util(0.90), t0 + Duration::from_secs(10)), None);
        assert_eq!(m.level(), Level::Critical);
    }

    #[test]
    fn recovery_needs_the_minimum_dwell() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        m.observe(util(0.95), t0);
        assert_eq!(m.observe(util(0.87), t0), None);
        assert_eq!(m.observe(util(0.87), t0 + Duration::from_millis(499)), None);
        let tr = m
            .observe(util(0.87), t0 + Duration::from_millis(500))
            .unwrap();
        assert_eq!((tr.from, tr.to), (Level::Critical, Level::Warning));
    }

    #[test]
    fn a_spike_during_dwell_restarts_it() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        m.observe(util(0.86), t0);
        m.observe(util(0.5), t0);
        m.observe(util(0.82), t0 + Duration::from_millis(300));
        assert_eq!(m.observe(util(0.5), t0 + Duration::from_millis(600)), None);
        assert_eq!(m.level(), Level::Warning);
        let tr = m
            .observe(util(0.5), t0 + Duration::from_millis(1100))
            .unwrap();
        assert_eq!(tr.to, Level::Normal);
    }

    #[test]
    fn steps_down_one_level_at_a_time() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        m.observe(util(1.0), t0);
        m.observe(util(0.1), t0);
        let tr = m
            .observe(util(0.1), t0 + Duration::from_millis(500))
            .unwrap();
        assert_eq!(tr.to, Level::Warning);
        assert_eq!(m.observe(util(0.1), t0 + Duration::from_millis(900)), None);
        let tr = m
            .observe(util(0.1), t0 + Duration::from_millis(1000))
            .unwrap();
        assert_eq!(tr.to, Level::Normal);
    }

    #[test]
    fn waiters_mean_warning_and_starvation_means_critical() {
        let t0 = Instant::now();
        let mut m = LevelMachine::new(thresholds());
        let waiting = Pressure {
            utilization: 0.5,
            waiting: 1,
            oldest_wait: Duration::from_millis(10),
        };
        assert_eq!(m.observe(waiting, t0).unwrap().to, Level::Warning);
        let starving = Pressure {
            oldest_wait: Duration::from_millis(250),
            ..waiting
        };
        assert_eq!(m.observe(starving, t0).unwrap().to, Level::Critical);
        // Waiters still present keep Warning from clearing.
        m.observe(waiting, t0);
        m.observe(waiting, t0 + Duration::from_secs(1));
        assert_eq!(m.level(), Level::Warning);
        assert_eq!(m.observe(waiting, t0 + Duration::from_secs(5)), None);
    }
}
