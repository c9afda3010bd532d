//! [`Identity`]: which service, and which running instance of it, a connection belongs to.
//!
//! Every pooled connection is opened with `application_name = '{service}:{instance}'`; a
//! tagged checkout sets `{service}:{instance}:{class}:{id}` and the watchdog's own session is
//! `{service}:{instance}:watchdog`. Replicas of one service (and services that keep the
//! default name) thereby stay apart in `pg_stat_activity`: each watchdog acts on its own
//! instance's backends only, and counts the live instances of its service from the names.

use crate::config::BuildError;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest instance name: room for the service, the class and a 20-digit registry id
/// within PostgreSQL's 63-byte `application_name`.
pub(crate) const MAX_INSTANCE_LEN: usize = 24;

/// A service and one running instance of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    service: String,
    instance: String,
}

impl Identity {
    /// `service` (the pool's `application_name`) and `instance`; the error names the field.
    pub fn new(service: &str, instance: &str) -> Result<Self, BuildError> {
        if instance.is_empty()
            || instance.len() > MAX_INSTANCE_LEN
            || !instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(BuildError::field(
                "instance",
                format!("must be 1 to {MAX_INSTANCE_LEN} characters of [A-Za-z0-9-_.]"),
            ));
        }
        let name = format!("{service}:{instance}");
        if name.len() > 63 {
            return Err(BuildError::field(
                "application_name",
                "with `:` and the instance it must fit in 63 characters",
            ));
        }
        Ok(Identity {
            service: service.to_string(),
            instance: instance.to_string(),
        })
    }

    /// `service` with the default instance of this process (see [`default_instance`]).
    pub fn with_default_instance(service: &str) -> Result<Self, BuildError> {
        Self::new(service, &default_instance())
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `{service}:{instance}`: the `application_name` of the instance's pooled connections.
    pub fn application_name(&self) -> String {
        format!("{}:{}", self.service, self.instance)
    }

    /// `{service}:{instance}:watchdog`: the watchdog's own session.
    pub fn watchdog_name(&self) -> String {
        let mut name = format!("{}:watchdog", self.application_name());
        name.truncate(63);
        name
    }

    /// The instance of this service an `application_name` belongs to, if it is one of the
    /// service's (`{service}:{instance}` or `{service}:{instance}:…`).
    pub fn instance_of<'a>(&self, application: &'a str) -> Option<&'a str> {
        let rest = application
            .strip_prefix(self.service.as_str())?
            .strip_prefix(':')?;
        let instance = rest.split(':').next()?;
        (!instance.is_empty()).then_some(instance)
    }
}

/// A name unique to this guard on this machine: the end of the host name (where Kubernetes
/// pod names keep their unique part), the process id and, from the second guard of a
/// process on, a counter. `api-7f9c8d6b5-x2k4q` with pid 1 gives `6b5-x2k4q-1`.
pub fn default_instance() -> String {
    static GUARDS: AtomicU64 = AtomicU64::new(0);
    let nth = GUARDS.fetch_add(1, Ordering::Relaxed);
    let host = host_name();
    let label = host.split('.').next().unwrap_or_default();
    let clean: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let tail = &clean[clean.len().saturating_sub(9)..];
    let tail = tail.trim_start_matches(['-', '_']);
    let pid = std::process::id();
    let base = if tail.is_empty() {
        format!("pid{pid}")
    } else {
        format!("{tail}-{pid}")
    };
    if nth == 0 {
        base
    } else {
        format!("{base}-{nth}")
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_service_and_instance_and_parse_back() {
        let id = Identity::new("billing", "pod-7").unwrap();
        assert_eq!(id.application_name(), "billing:pod-7");
        assert_eq!(id.watchdog_name(), "billing:pod-7:watchdog");
        assert_eq!(id.instance_of("billing:pod-7"), Some("pod-7"));
        assert_eq!(id.instance_of("billing:pod-8:standard:12"), Some("pod-8"));
        assert_eq!(id.instance_of("billing"), None);
        assert_eq!(id.instance_of("billing-worker:pod-7"), None);
        assert!(matches!(
            Identity::new("billing", "a:b"),
            Err(BuildError::InvalidConfig {
                field: "instance",
                ..
            })
        ));
    }

    #[test]
    fn default_instances_differ_per_guard_and_fit() {
        let (a, b) = (default_instance(), default_instance());
        assert_ne!(a, b);
        for name in [a, b] {
            Identity::new("poolguard", &name).unwrap();
        }
    }
}
