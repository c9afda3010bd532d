//! The census of a service on the server: which of its instances are connected, which of them
//! have a live watchdog, and how many connections it and everyone else hold, all from one read
//! of `pg_stat_activity` (an instance is named in every `application_name` it opens).

use super::activity::{Backend, BACKEND_COLUMNS};
use crate::identity::Identity;
use std::collections::BTreeSet;
use tokio_postgres::Client;

/// One interval's census.
#[derive(Debug, Clone, Default)]
pub(crate) struct Census {
    /// Instances of the service holding at least one connection (this one included).
    pub(crate) instances: BTreeSet<String>,
    /// Instances whose watchdog session is connected.
    pub(crate) watched: BTreeSet<String>,
    /// Client connections of the service (every instance, watchdog sessions included).
    pub(crate) service_connections: u32,
    /// Client connections of this instance.
    pub(crate) own_connections: u32,
    /// Client connections of everyone else on the server.
    pub(crate) other_connections: u32,
    /// Sessions of instances without a live watchdog, idle inside a transaction, in this
    /// database.
    pub(crate) orphans: Vec<Backend>,
}

impl Census {
    /// Counts `rows` of (backend, in this database) for `identity`'s service.
    pub(crate) fn count(identity: &Identity, rows: Vec<(Backend, bool)>) -> Census {
        let mut census = Census::default();
        census.instances.insert(identity.instance().to_string());
        census.watched.insert(identity.instance().to_string());
        let mut idle_in_transaction = Vec::new();
        for (backend, here) in rows {
            let app = backend.application.as_deref().unwrap_or("");
            let Some(instance) = identity.instance_of(app) else {
                census.other_connections += 1;
                continue;
            };
            census.service_connections += 1;
            if instance == identity.instance() {
                census.own_connections += 1;
                continue;
            }
            census.instances.insert(instance.to_string());
            if app
                .strip_prefix(identity.service())
                .and_then(|r| r.strip_prefix(':'))
                == Some(&format!("{instance}:watchdog"))
            {
                census.watched.insert(instance.to_string());
            } else if here && backend.is_idle_in_transaction() {
                idle_in_transaction.push((instance.to_string(), backend));
            }
        }
        census.orphans = idle_in_transaction
            .into_iter()
            .filter(|(instance, _)| !census.watched.contains(instance))
            .map(|(_, b)| b)
            .collect();
        census
    }

    /// Watchdogs sharing the service's duties (at least this one).
    pub(crate) fn watchdogs(&self) -> usize {
        self.watched.len().max(1)
    }
}

/// Reads every client backend of the server once.
pub(crate) async fn read(
    client: &Client,
    identity: &Identity,
) -> Result<Census, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {BACKEND_COLUMNS}, datname = current_database() \
         FROM pg_stat_activity \
         WHERE backend_type = 'client backend'"
    );
    let rows = client.query(&sql, &[]).await?;
    let rows = rows
        .iter()
        .map(|r| {
            (
                Backend::from_row(r),
                r.get::<_, Option<bool>>(9).unwrap_or(false),
            )
        })
        .collect();
    Ok(Census::count(identity, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backend(app: &str, state: &str) -> Backend {
        Backend {
            pid: 1,
            role: None,
            application: Some(app.to_string()),
            state: state.to_string(),
            query: String::new(),
            query_start: None,
            state_change: None,
            running: Duration::ZERO,
            in_state: Duration::ZERO,
        }
    }

    #[test]
    fn instances_watchdogs_and_orphans_are_told_apart() {
        let me = Identity::new("api", "a").unwrap();
        let rows = vec![
            (backend("api:a:watchdog", "active"), true),
            (backend("api:a", "idle"), true),
            (backend("api:b:watchdog", "active"), true),
            (backend("api:b:standard:4", "idle in transaction"), true),
            (backend("api:c", "idle in transaction"), true),
            (backend("api:c", "idle in transaction"), false),
            (backend("billing:x", "active"), true),
            (backend("psql", "idle"), true),
        ];
        let c = Census::count(&me, rows);
        assert_eq!(c.instances.len(), 3);
        assert_eq!(c.watchdogs(), 2);
        assert_eq!(c.service_connections, 6);
        assert_eq!(c.own_connections, 2);
        assert_eq!(c.other_connections, 2);
        // c has no watchdog: its idle transaction in this database is an orphan; b's is not.
        assert_eq!(c.orphans.len(), 1);
        assert_eq!(c.orphans[0].application.as_deref(), Some("api:c"));
    }
}
