//! Watching pool pressure: the level state machine and the status snapshot.

mod level;

pub use level::{Level, LevelMachine, Pressure, Thresholds, Transition};
