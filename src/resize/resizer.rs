//! [`Resizer`]: the auto-resize decision, pure (the caller passes each interval's figures and
//! applies the answer).

use super::config::AutoResize;
use crate::events::ResizeReason;
use crate::monitor::Level;

/// What one interval looked like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResizeInput {
    /// The pool's current maximum size.
    pub(crate) current: usize,
    /// Connections the pool has open (counted in the server's `used`).
    pub(crate) open: usize,
    /// Acquisitions waiting (the guard's queue and deadpool's).
    pub(crate) waiting: usize,
    /// The guard's level.
    pub(crate) level: Level,
    /// Client connections on the whole server (every database, role and application).
    pub(crate) server_used: u32,
    /// What ordinary roles may open on the server.
    pub(crate) server_usable: u32,
}

/// Counts consecutive intervals and decides on resizes.
#[derive(Debug)]
pub(crate) struct Resizer {
    original: usize,
    waiting_streak: u32,
    calm_streak: u32,
}

impl Resizer {
    pub(crate) fn new(original: usize) -> Self {
        Self {
            original,
            waiting_streak: 0,
            calm_streak: 0,
        }
    }

    /// The size the server allows this pool: usable, less what everyone else holds, less the
    /// margin.
    fn server_limit(cfg: &AutoResize, input: &ResizeInput) -> usize {
        let others = (input.server_used as usize).saturating_sub(input.open);
        (input.server_usable as usize)
            .saturating_sub(others)
            .saturating_sub(cfg.margin as usize)
    }

    /// The new size and why, if the pool should be resized now.
    pub(crate) fn decide(
        &mut self,
        cfg: &AutoResize,
        input: &ResizeInput,
    ) -> Option<(usize, ResizeReason)> {
        let limit = Self::server_limit(cfg, input);
        let current = input.current;
        if current > self.original && limit < current {
            // Others need the server's connections: give back what we added.
            self.waiting_streak = 0;
            return Some((limit.max(self.original), ResizeReason::ServerFull));
        }
        if input.waiting > 0 {
            self.calm_streak = 0;
            self.waiting_streak += 1;
            if self.waiting_streak >= cfg.grow_after {
                let target = (current + cfg.step).min(cfg.ceiling).min(limit);
                if target > current {
                    self.waiting_streak = 0;
                    return Some((target, ResizeReason::Waiting));
                }
            }
            return None;
        }
        self.waiting_streak = 0;
        if input.level == Level::Normal {
            self.calm_streak += 1;
        } else {
            self.calm_streak = 0;
        }
        if self.calm_streak >= cfg.shrink_after && current > self.original {
            self.calm_streak = 0;
            let target = current.saturating_sub(cfg.step).max(self.original);
            return Some((target, ResizeReason::Recovered));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(current: usize, waiting: usize, used: u32, usable: u32) -> ResizeInput {
        ResizeInput {
            current,
            open: current,
            waiting,
            level: if waiting > 0 {
                Level::Critical
            } else {
                Level::Normal
            },
            server_used: used,
            server_usable: usable,
        }
    }

    fn cfg() -> AutoResize {
        AutoResize {
            enabled: true,
            ceiling: 12,
            step: 4,
            grow_after: 2,
            shrink_after: 3,
            margin: 2,
        }
    }

    #[test]
    fn grows_after_sustained_waiting_up_to_the_ceiling() {
        let mut r = Resizer::new(4);
        let c = cfg();
        assert_eq!(r.decide(&c, &input(4, 3, 10, 100)), None);
        assert_eq!(
            r.decide(&c, &input(4, 3, 10, 100)),
            Some((8, ResizeReason::Waiting))
        );
        r.decide(&c, &input(8, 3, 14, 100));
        assert_eq!(
            r.decide(&c, &input(8, 3, 14, 100)),
            Some((12, ResizeReason::Waiting))
        );
        r.decide(&c, &input(12, 3, 18, 100));
        assert_eq!(r.decide(&c, &input(12, 3, 18, 100)), None, "ceiling");
    }

    #[test]
    fn never_grows_past_the_server_headroom() {
        let mut r = Resizer::new(4);
        let c = cfg();
        // usable 20, others hold 12: the pool may have 20 - 12 - 2 = 6.
        r.decide(&c, &input(4, 3, 16, 20));
        assert_eq!(
            r.decide(&c, &input(4, 3, 16, 20)),
            Some((6, ResizeReason::Waiting))
        );
        r.decide(&c, &input(6, 3, 18, 20));
        assert_eq!(r.decide(&c, &input(6, 3, 18, 20)), None);
        // Others take two more: the pool gives back what it added.
        assert_eq!(
            r.decide(&c, &input(6, 3, 20, 20)),
            Some((4, ResizeReason::ServerFull))
        );
    }

    #[test]
    fn shrinks_back_after_recovery_but_not_below_the_original() {
        let mut r = Resizer::new(4);
        let c = cfg();
        assert_eq!(r.decide(&c, &input(10, 0, 10, 100)), None);
        assert_eq!(r.decide(&c, &input(10, 0, 10, 100)), None);
        assert_eq!(
            r.decide(&c, &input(10, 0, 10, 100)),
            Some((6, ResizeReason::Recovered))
        );
        for _ in 0..2 {
            r.decide(&c, &input(6, 0, 6, 100));
        }
        assert_eq!(
            r.decide(&c, &input(6, 0, 6, 100)),
            Some((4, ResizeReason::Recovered))
        );
        for _ in 0..5 {
            assert_eq!(r.decide(&c, &input(4, 0, 4, 100)), None);
        }
    }
}
