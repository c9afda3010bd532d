//! Pool resizing: [`AutoResize`] (the configuration) and [`Resizer`] (the decision: grow by a
//! step under sustained waiting while the server has room, shrink back toward the original
//! size once the pressure is over). Pure: the watchdog feeds it each interval's figures and
//! applies its answer through the guard it watches.

mod config;
mod resizer;

pub use config::AutoResize;
pub(crate) use resizer::{ResizeInput, Resizer};
