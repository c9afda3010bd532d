//! The watchdog's plain-data configuration, with documented defaults and validation that names
//! the bad field.

use super::budget::ConnectionBudget;
use crate::config::BuildError;
use crate::config::ClassTimeouts;
use crate::resize::AutoResize;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which backends the watchdog may cancel, terminate or reap.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Backends whose `application_name` is the pool's application name, or that name
    /// followed by `:` (so `poolguard` and the tag `poolguard:standard:17` are in scope, but
    /// `poolguard-worker` is not). The default: the watchdog never touches another
    /// application's sessions.
    #[default]
    Application,
    /// Backends connected as this role, whatever their application.
    Role(String),
    /// Every client backend of the pool's database.
    Database,
}

/// Everything the watchdog decides with. Every field has a default (the [`Default`] impl);
/// durations are milliseconds when (de)serialized.
///
/// | field | default | meaning |
/// | --- | --- | --- |
/// | `interval` | 1 s | how often `pg_stat_activity` is read |
/// | `kill_after` | 30 s | an active query older than this is cancelled |
/// | `kill_after_by_class` | none | per-class overrides (needs tagged connections, below) |
/// | `cancel_grace` | 5 s | after a cancel, a query still running is terminated |
/// | `max_kills_per_interval` | 10 | cancels and terminations per interval, oldest first |
/// | `scope` | [`Scope::Application`] | whose backends may be touched |
/// | `dry_run` | false | only report what would be done |
/// | `idle_in_transaction_after` | 60 s | sessions idle in a transaction this long are terminated |
/// | `leak_after` | 30 s | a connection held through the guard this long (handed out since a watchdog started) is reported once |
/// | `tag_connections` | false | set `application_name` per checkout (implied by class overrides) |
/// | `reconnect_backoff_max` | 5 s | cap of the reconnect backoff (starting at 100 ms) |
/// | `query_timeout` | 5 s | the longest one watchdog query may take |
/// | `resize` | off | see [`AutoResize`] |
/// | `elect_leader` | true | take part in electing the service's leader (orphan reaping) |
/// | `budget` | off | size the pool from the service's share of the server, see [`ConnectionBudget`] |
///
/// **Replicas.** With a guard from [`Guard::builder_for`](crate::Guard::builder_for) the default scope
/// is this instance's own backends in this database (`{service}:{instance}` and its tags).
/// `max_kills_per_interval` is for the whole service: each of N live watchdogs spends at most
/// a 1/N share of it (at least 1).
///
/// **Per-class limits.** Postgres cannot tell which of the guard's connections serves which
/// class. When a per-class override is set (or `tag_connections`), every checkout sets
/// `application_name = '{app}:{class}:{id}'`: one extra statement per checkout, sent with the
/// class `statement_timeout` if there is one, ahead of the caller's first query (no round trip
/// of its own); `RESET ALL` restores it on recycle. The watchdog reads the class, and through
/// the id the route, from `pg_stat_activity`.
/// Connections handed out before the watchdog started are untagged and use `kill_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchdogConfig {
    /// How often the watchdog reads the server.
    #[serde(with = "crate::config::millis")]
    pub interval: Duration,
    /// An `active` query running longer than this is cancelled.
    #[serde(with = "crate::config::millis")]
    pub kill_after: Duration,
    /// Per-class overrides of `kill_after` (e.g. shorter for non-critical work).
    pub kill_after_by_class: ClassTimeouts,
    /// How long a cancelled query may keep running before its backend is terminated.
    #[serde(with = "crate::config::millis")]
    pub cancel_grace: Duration,
    /// Most cancels and terminations per interval (the oldest queries go first).
    pub max_kills_per_interval: usize,
    /// Whose backends the watchdog may act on.
    pub scope: Scope,
    /// Report (as events) what would be done, and do nothing.
    pub dry_run: bool,
    /// A session `idle in transaction` (or aborted) longer than this is terminated.
    #[serde(with = "crate::config::millis")]
    pub idle_in_transaction_after: Duration,
    /// A connection held through the guard longer than this is reported as a possible leak
    /// (one handed out since a watchdog first watched the guard: connections held before
    /// are not in the registry the report is read from).
    #[serde(with = "crate::config::millis")]
    pub leak_after: Duration,
    /// Tag every checkout's `application_name` with its class and registry id, so events
    /// name the route of the backend acted on.
    pub tag_connections: bool,
    /// The longest wait between reconnect attempts when Postgres is away.
    #[serde(with = "crate::config::millis")]
    pub reconnect_backoff_max: Duration,
    /// The longest a single watchdog query may take.
    #[serde(with = "crate::config::millis")]
    pub query_timeout: Duration,
    /// Pool auto-resize (off by default).
    pub resize: AutoResize,
    /// Take part in electing one leader per service and database (an advisory lock on the
    /// watchdog's session); the leader reaps the idle transactions of instances that are
    /// gone (no watchdog session connected).
    pub elect_leader: bool,
    /// Size the pool from the service's share of the server's connections (off by default).
    pub budget: ConnectionBudget,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            kill_after: Duration::from_secs(30),
            kill_after_by_class: ClassTimeouts::default(),
            cancel_grace: Duration::from_secs(5),
            max_kills_per_interval: 10,
            scope: Scope::Application,
            dry_run: false,
            idle_in_transaction_after: Duration::from_secs(60),
            leak_after: Duration::from_secs(30),
            tag_connections: false,
            reconnect_backoff_max: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            resize: AutoResize::default(),
            elect_leader: true,
            budget: ConnectionBudget::default(),
        }
    }
}

fn at_least(field: &'static str, d: Duration, min: Duration) -> Result<(), BuildError> {
    if d < min {
        Err(BuildError::field(
            field,
            format!("must be at least {} ms", min.as_millis()),
        ))
    } else {
        Ok(())
    }
}

impl WatchdogConfig {
    /// Checks every field against a pool of `pool_size` connections; the error names the first
    /// bad field.
    pub fn validate(&self, pool_size: usize) -> Result<(), BuildError> {
        let ms = Duration::from_millis;
        at_least("interval", self.interval, ms(10))?;
        at_least("kill_after", self.kill_after, ms(100))?;
        for class in crate::criticality::Criticality::ALL {
            if let Some(d) = self.kill_after_by_class.get(class) {
                at_least("kill_after_by_class", d, ms(100))?;
            }
        }
        at_least("cancel_grace", self.cancel_grace, ms(1))?;
        if self.max_kills_per_interval == 0 {
            return Err(BuildError::field(
                "max_kills_per_interval",
                "must be at least 1 (use dry_run to act on nothing)",
            ));
        }
        if let Scope::Role(role) = &self.scope {
            if role.is_empty() {
                return Err(BuildError::field("scope", "the role name is empty"));
            }
        }
        at_least(
            "idle_in_transaction_after",
            self.idle_in_transaction_after,
            ms(100),
        )?;
        at_least("leak_after", self.leak_after, ms(1))?;
        at_least("reconnect_backoff_max", self.reconnect_backoff_max, ms(100))?;
        at_least("query_timeout", self.query_timeout, ms(10))?;
        self.budget.validate()?;
        let r = &self.resize;
        if r.enabled && self.budget.enabled {
            return Err(BuildError::field(
                "budget.enabled",
                "resize and budget both size the pool: enable one of them",
            ));
        }
        if r.enabled {
            if r.ceiling <= pool_size {
                return Err(BuildError::field(
                    "resize.ceiling",
                    format!("must be above the pool's size ({pool_size}) when resize is enabled"),
                ));
            }
            if r.step == 0 {
                return Err(BuildError::field("resize.step", "must be at least 1"));
            }
            if r.grow_after == 0 || r.shrink_after == 0 {
                return Err(BuildError::field(
                    "resize.grow_after",
                    "grow_after and shrink_after must be at least 1 interval",
                ));
            }
        }
        Ok(())
    }

    /// Whether checkouts must carry their class in `application_name`.
    pub(crate) fn needs_tags(&self) -> bool {
        self.tag_connections
            || crate::criticality::Criticality::ALL
                .iter()
                .any(|c| self.kill_after_by_class.get(*c).is_some())
    }

    /// The kill threshold of a backend of `class` (untagged backends use `kill_after`).
    pub(crate) fn kill_after_for(
        &self,
        class: Option<crate::criticality::Criticality>,
    ) -> Duration {
        class
            .and_then(|c| self.kill_after_by_class.get(c))
            .unwrap_or(self.kill_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        WatchdogConfig::default().validate(10).unwrap();
        let bad = WatchdogConfig {
            max_kills_per_interval: 0,
            ..WatchdogConfig::default()
        };
        assert!(matches!(
            bad.validate(10),
            Err(BuildError::InvalidConfig {
                field: "max_kills_per_interval",
                ..
            })
        ));
        let resize = WatchdogConfig {
            resize: AutoResize {
                enabled: true,
                ceiling: 10,
                ..AutoResize::default()
            },
            ..WatchdogConfig::default()
        };
        assert!(matches!(
            resize.validate(10),
            Err(BuildError::InvalidConfig {
                field: "resize.ceiling",
                ..
            })
        ));
    }

    #[test]
    fn reads_from_toml_with_defaults() {
        let c: WatchdogConfig = toml::from_str(
            "kill_after = 10000\nscope = { role = \"app\" }\n[resize]\nenabled = true\nceiling = 40\n",
        )
        .unwrap();
        assert_eq!(c.kill_after, Duration::from_secs(10));
        assert_eq!(c.scope, Scope::Role("app".into()));
        assert_eq!(c.resize.ceiling, 40);
        assert_eq!(c.resize.step, 2);
        assert_eq!(c.interval, Duration::from_secs(1));
    }

    #[test]
    fn class_overrides_imply_tags() {
        let mut c = WatchdogConfig::default();
        assert!(!c.needs_tags());
        c.kill_after_by_class.non_critical = Some(Duration::from_secs(5));
        assert!(c.needs_tags());
        assert_eq!(
            c.kill_after_for(Some(crate::criticality::Criticality::NonCritical)),
            Duration::from_secs(5)
        );
        assert_eq!(c.kill_after_for(None), Duration::from_secs(30));
    }
}
