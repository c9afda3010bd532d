//! Status transitions that cannot go wrong: a policy of allowed `from -> to` edges, enforced
//! inside one SQL statement, reported as self-heal events, and optionally backed by a
//! database trigger.
//!
//! - [`TransitionPolicy`]: the states and allowed edges, built in code or loaded from TOML or
//!   JSON; [`check`](TransitionPolicy::check) is pure and allocates nothing.
//! - [`GuardedUpdate`]: moves one row to a new status only if the policy allows it from the
//!   row's current status, atomically, and tells applied, blocked (with the current status)
//!   and not found apart. Each blocked attempt logs
//!   `[SELF-HEAL] Blocked invalid transition: PROMOTED -> SPAM_REVIEW`.
//! - [`TransitionReport`]: counts a run's outcomes and publishes one
//!   [`EventKind::TransitionsBlocked`](crate::events::EventKind::TransitionsBlocked) summary;
//!   [`BlockedSpike`] warns when many attempts are blocked in a short window.
//! - [`TransitionTrigger`]: the same policy as a `BEFORE UPDATE` trigger (opt-in).
//!
//! ```no_run
//! use poolguard::events::EventBus;
//! use poolguard::transition::{GuardedUpdate, TransitionPolicy, TransitionReport};
//! use std::sync::Arc;
//!
//! # async fn run(client: &tokio_postgres::Client, ids: &[i64]) -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Arc::new(
//!     TransitionPolicy::builder()
//!         .states(["READY", "PROMOTED", "COMPLETED", "SPAM_REVIEW"])
//!         .allow("READY", "PROMOTED")
//!         .allow("READY", "SPAM_REVIEW")
//!         .allow("PROMOTED", "COMPLETED")
//!         .build()?,
//! );
//! assert!(policy.check("PROMOTED", "SPAM_REVIEW").is_err());
//!
//! let update = GuardedUpdate::new(policy.clone(), "messages", "id", "status")?;
//! let bus = EventBus::new(64);
//! let mut report = TransitionReport::new();
//! for id in ids {
//!     report.record(&update.apply(client, id, "SPAM_REVIEW").await?);
//! }
//! println!("{report}"); // 150 valid, 5 blocked: PROMOTED -> SPAM_REVIEW (5)
//! report.finish("spam-capture", &bus);
//! # Ok(()) }
//! ```

mod error;
mod ident;
mod load;
mod policy;
mod report;
mod spike;
mod trigger;
mod update;

pub use crate::events::BlockedPair;
pub use error::{IdentError, PolicyError, UpdateError};
pub use ident::{QualifiedName, MAX_IDENT_LEN};
pub use policy::{
    BlockReason, Blocked, PolicyBuilder, StateId, TransitionPolicy, MAX_STATES, MAX_STATE_NAME_LEN,
};
pub use report::TransitionReport;
pub use spike::{BlockedSpike, SPIKE_EVENT};
pub use trigger::{TransitionTrigger, TRIGGER_SQLSTATE};
pub use update::{GuardedUpdate, TransitionOutcome};
