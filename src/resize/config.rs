//! [`AutoResize`]: when and how far the pool may grow and shrink.

use serde::{Deserialize, Serialize};

/// Growing the pool under sustained waiting, within the server's headroom. Off by default.
///
/// | field | default |
/// | --- | --- |
/// | `enabled` | false |
/// | `ceiling` | 0 (must be set above the pool's size when enabled) |
/// | `step` | 2 |
/// | `grow_after` | 3 intervals with acquisitions waiting |
/// | `shrink_after` | 30 intervals at Normal with nobody waiting |
/// | `margin` | 5 connections left free on the server |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoResize {
    /// Whether the watchdog may resize the pool at all.
    pub enabled: bool,
    /// The pool never grows beyond this size.
    pub ceiling: usize,
    /// Connections added or removed per step.
    pub step: usize,
    /// Consecutive intervals with acquisitions waiting before the pool grows a step.
    pub grow_after: u32,
    /// Consecutive intervals at Normal with nobody waiting before the pool shrinks a step
    /// toward its original size.
    pub shrink_after: u32,
    /// Server connections left free for everyone else: the pool never grows past
    /// `usable - (used by others) - margin`.
    pub margin: u32,
}

impl Default for AutoResize {
    fn default() -> Self {
        Self {
            enabled: false,
            ceiling: 0,
            step: 2,
            grow_after: 3,
            shrink_after: 30,
            margin: 5,
        }
    }
}
