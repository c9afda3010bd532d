//! Pool pressure: the level state machine, pure (time is passed in). The sampler task that
//! feeds it lives with the guard it reads.

mod level;

pub use level::{Level, LevelMachine, Pressure, Thresholds, Transition};
