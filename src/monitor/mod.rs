//! Watching pool pressure: the level state machine and the sampler task.

mod level;
mod sampler;

pub use level::{Level, LevelMachine, Pressure, Thresholds, Transition};
pub(crate) use sampler::run_sampler;
