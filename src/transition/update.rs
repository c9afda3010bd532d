//! The guarded update: one statement that moves a row to a new status only if its current
//! status is an allowed source, and reports the status it had, atomically.

use super::error::{IdentError, UpdateError};
use super::ident::{self, QualifiedName};
use super::policy::TransitionPolicy;
use super::report;
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// What a guarded update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The row moved from `from` to `to`.
    Applied {
        /// The status the row had.
        from: String,
        /// The status it has now.
        to: String,
    },
    /// The row's status may not move to `to`; nothing was written.
    Blocked {
        /// The status the row had when checked (`None` for SQL `NULL`).
        current: Option<String>,
        /// The refused target status.
        to: String,
    },
    /// No row has this id.
    NotFound,
}

/// Applies status changes to one table, enforcing a [`TransitionPolicy`] inside the
/// statement itself.
///
///
/// The statement (identifiers checked and double-quoted, never taken raw):
///
/// ```sql
/// UPDATE "messages" AS "pg_new" SET "status" = $1
/// FROM (SELECT "id", "status" FROM "messages"
///       WHERE "id" = $2 AND "status" = ANY($3) FOR UPDATE) AS "pg_old"
/// WHERE "pg_new"."id" = "pg_old"."id"
/// RETURNING "pg_old"."status"
/// ```
///
/// `$3` is the list of states the policy allows to move to `$1`. The sub-select locks the row
/// and, under READ COMMITTED, re-checks the filter against the newest version if another
/// writer got there first, so the returned old status is the one actually replaced. When no
/// row is updated, `SELECT "status" ... WHERE "id" = $1` tells a blocked transition (with the
/// status seen then) from a missing row. A row that changed in between is reported as blocked
/// with the status it had; no invalid transition is ever stored.
///
/// The id column should be unique; the status column a text type (`text`, `varchar`). In a
/// REPEATABLE READ or SERIALIZABLE transaction a concurrent change surfaces as a
/// serialization failure (SQLSTATE 40001) in [`UpdateError::Db`]; retry the transaction.
#[derive(Debug, Clone)]
pub struct GuardedUpdate {
    policy: Arc<TransitionPolicy>,
    table: QualifiedName,
    update_sql: String,
    select_sql: String,
    /// Allowed sources by target state id, passed as `$3`.
    sources: Vec<Vec<String>>,
}

impl GuardedUpdate {
    /// Prepares the statements for `table` (`name` or `schema.name`). Every identifier must
    /// match `^[A-Za-z_][A-Za-z0-9_]{0,62}$`; anything else is refused here, before any SQL.
    /// Names are written double-quoted, hence case-sensitive: pass them as PostgreSQL stores
    /// them (lower case for names created unquoted).
    pub fn new(
        policy: Arc<TransitionPolicy>,
        table: &str,
        id_column: &str,
        status_column: &str,
    ) -> Result<Self, IdentError> {
        let table = QualifiedName::parse("table", table)?;
        let id = ident::column("id_column", id_column)?;
        let status = ident::column("status_column", status_column)?;
        let update_sql = format!(
            "UPDATE {table} AS \"pg_new\" SET {status} = $1 \
             FROM (SELECT {id}, {status} FROM {table} \
             WHERE {id} = $2 AND {status} = ANY($3) FOR UPDATE) AS \"pg_old\" \
             WHERE \"pg_new\".{id} = \"pg_old\".{id} \
             RETURNING \"pg_old\".{status}"
        );
        let select_sql = format!("SELECT {status} FROM {table} WHERE {id} = $1");
        let sources = policy
            .states()
            .map(|to| {
                policy
                    .allowed_sources(to)
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .collect();
        Ok(Self {
            policy,
            table,
            update_sql,
            select_sql,
            sources,
        })
    }

    /// The policy enforced.
    pub fn policy(&self) -> &Arc<TransitionPolicy> {
        &self.policy
    }

    /// The table updated.
    pub fn table(&self) -> &QualifiedName {
        &self.table
    }

    /// The guarded `UPDATE` statement.
    pub fn update_sql(&self) -> &str {
        &self.update_sql
    }

    /// The follow-up `SELECT` run when no row was updated.
    pub fn select_sql(&self) -> &str {
        &self.select_sql
    }

    /// Moves the row `id` to status `to` if the policy allows it from the row's current
    /// status. A target unknown to the policy is refused before the database is touched.
    ///
    /// Works with anything implementing [`GenericClient`]: a `tokio_postgres::Client`, a
    /// transaction, or a deadpool object through `&**object`. Blocked attempts are logged as
    /// `[SELF-HEAL] Blocked invalid transition: FROM -> TO` and counted in
    /// [`TRANSITIONS_BLOCKED`](crate::metrics::TRANSITIONS_BLOCKED); applied ones in
    /// [`TRANSITIONS_APPLIED`](crate::metrics::TRANSITIONS_APPLIED).
    pub async fn apply<C>(
        &self,
        client: &C,
        id: &(dyn ToSql + Sync),
        to: &str,
    ) -> Result<TransitionOutcome, UpdateError>
    where
        C: GenericClient + Sync + ?Sized,
    {
        let to_id = self
            .policy
            .state(to)
            .ok_or_else(|| UpdateError::UnknownTarget(to.to_string()))?;
        let sources = &self.sources[to_id.index()];
        if !sources.is_empty() {
            let row = client
                .query_opt(&self.update_sql, &[&to, id, sources])
                .await?;
            if let Some(row) = row {
                let from: String = row.try_get(0)?;
                report::note_applied(&self.policy, &from, to_id);
                return Ok(TransitionOutcome::Applied {
                    from,
                    to: to.to_string(),
                });
            }
        }
        match client.query_opt(&self.select_sql, &[id]).await? {
            None => Ok(TransitionOutcome::NotFound),
            Some(row) => {
                let current: Option<String> = row.try_get(0)?;
                report::note_blocked(&self.policy, current.as_deref(), to_id, &self.table);
                Ok(TransitionOutcome::Blocked {
                    current,
                    to: to.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<TransitionPolicy> {
        Arc::new(
            TransitionPolicy::builder()
                .states(["READY", "PROMOTED", "SPAM_REVIEW"])
                .allow("READY", "SPAM_REVIEW")
                .allow("READY", "PROMOTED")
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn statements_quote_every_identifier() {
        let g = GuardedUpdate::new(policy(), "app.messages", "id", "status").unwrap();
        assert_eq!(
            g.update_sql(),
            "UPDATE \"app\".\"messages\" AS \"pg_new\" SET \"status\" = $1 \
             FROM (SELECT \"id\", \"status\" FROM \"app\".\"messages\" \
             WHERE \"id\" = $2 AND \"status\" = ANY($3) FOR UPDATE) AS \"pg_old\" \
             WHERE \"pg_new\".\"id\" = \"pg_old\".\"id\" RETURNING \"pg_old\".\"status\""
        );
        assert_eq!(
            g.select_sql(),
            "SELECT \"status\" FROM \"app\".\"messages\" WHERE \"id\" = $1"
        );
        let spam = g.policy().state("SPAM_REVIEW").unwrap();
        assert_eq!(g.sources[spam.index()], ["READY"]);
    }

    #[test]
    fn hostile_identifiers_fail_with_the_field_named() {
        let e = GuardedUpdate::new(policy(), "t", "id", "status; DROP TABLE x").unwrap_err();
        assert_eq!(e.field, "status_column");
        let e = GuardedUpdate::new(policy(), "t", "\"id\"", "status").unwrap_err();
        assert_eq!(e.field, "id_column");
        let e = GuardedUpdate::new(policy(), "", "id", "status").unwrap_err();
        assert_eq!(e.field, "table");
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}
