//! The opt-in database trigger generated from a transition policy.

use super::error::IdentError;
use super::ident::{self, QualifiedName};
use super::policy::TransitionPolicy;
use tokio_postgres::GenericClient;

/// The SQLSTATE the trigger raises for an invalid transition.
pub const TRIGGER_SQLSTATE: &str = "PT001";

/// The generated trigger function and trigger for one table.
///
/// Defence in depth (opt-in): a PL/pgSQL trigger generated from the same policy, so even
/// writes that bypass [`GuardedUpdate`](super::GuardedUpdate) cannot store an invalid
/// transition.
///
/// The trigger fires `BEFORE UPDATE OF <status>` on every row. Updates that keep the status
/// unchanged pass (they store no transition); any other `OLD -> NEW` pair that is not an edge
/// of the policy raises an exception with SQLSTATE [`TRIGGER_SQLSTATE`] (`PT001`, a class
/// PostgreSQL does not use) and the message `invalid status transition: FROM -> TO`. A `NULL`
/// old or new status is never an allowed edge.
#[derive(Debug, Clone)]
pub struct TransitionTrigger {
    table: QualifiedName,
    function: QualifiedName,
    sql: String,
}

impl TransitionTrigger {
    /// The trigger for `table` (`name` or `schema.name`), named `<table>_status_guard` (both
    /// the function, in the table's schema, and the trigger).
    pub fn new(
        policy: &TransitionPolicy,
        table: &str,
        status_column: &str,
    ) -> Result<Self, IdentError> {
        let parsed = QualifiedName::parse("table", table)?;
        let name = format!("{}_status_guard", parsed.name());
        Self::named(policy, table, status_column, &name)
    }

    /// The trigger for `table` with an explicit function and trigger name.
    pub fn named(
        policy: &TransitionPolicy,
        table: &str,
        status_column: &str,
        name: &str,
    ) -> Result<Self, IdentError> {
        let table = QualifiedName::parse("table", table)?;
        let function = table.sibling("function", name)?;
        let status = ident::column("status_column", status_column)?;
        let trigger = ident::quote(name);
        let edges: Vec<String> = policy
            .edges()
            .map(|(f, t)| format!("({}, {})", ident::literal(f), ident::literal(t)))
            .collect();
        let allowed = if edges.is_empty() {
            "FALSE".to_string()
        } else {
            format!("(OLD.{status}, NEW.{status}) IN ({})", edges.join(", "))
        };
        let message = ident::literal(&format!("table {table}: invalid status transition"));
        let sql = format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $poolguard$\n\
             BEGIN\n\
             \x20 IF NEW.{status} IS NOT DISTINCT FROM OLD.{status} THEN\n\
             \x20   RETURN NEW;\n\
             \x20 END IF;\n\
             \x20 IF {allowed} THEN\n\
             \x20   RETURN NEW;\n\
             \x20 END IF;\n\
             \x20 RAISE EXCEPTION 'invalid status transition: % -> %', OLD.{status}, NEW.{status}\n\
             \x20   USING ERRCODE = '{TRIGGER_SQLSTATE}', DETAIL = {message};\n\
             END\n\
             $poolguard$;\n\
             DROP TRIGGER IF EXISTS {trigger} ON {table};\n\
             CREATE TRIGGER {trigger} BEFORE UPDATE OF {status} ON {table}\n\
             \x20 FOR EACH ROW EXECUTE FUNCTION {function}();\n"
        );
        Ok(Self {
            table,
            function,
            sql,
        })
    }

    /// The table guarded.
    pub fn table(&self) -> &QualifiedName {
        &self.table
    }

    /// The trigger function (the trigger has the same unqualified name).
    pub fn function(&self) -> &QualifiedName {
        &self.function
    }

    /// The whole script: `CREATE OR REPLACE FUNCTION`, `DROP TRIGGER IF EXISTS`,
    /// `CREATE TRIGGER`. Safe to run again.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The script removing the trigger and its function.
    pub fn drop_sql(&self) -> String {
        format!(
            "DROP TRIGGER IF EXISTS {} ON {};\nDROP FUNCTION IF EXISTS {}();\n",
            ident::quote(self.function.name()),
            self.table,
            self.function
        )
    }

    /// Installs (or replaces) the trigger. The script runs as one simple-protocol batch, so
    /// outside a transaction it is applied atomically.
    pub async fn install<C>(&self, client: &C) -> Result<(), tokio_postgres::Error>
    where
        C: GenericClient + Sync + ?Sized,
    {
        client.batch_execute(&self.sql).await
    }

    /// Removes the trigger and its function.
    pub async fn uninstall<C>(&self, client: &C) -> Result<(), tokio_postgres::Error>
    where
        C: GenericClient + Sync + ?Sized,
    {
        client.batch_execute(&self.drop_sql()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TransitionPolicy {
        TransitionPolicy::builder()
            .states(["READY", "PROMOTED", "SPAM_REVIEW"])
            .allow("READY", "SPAM_REVIEW")
            .allow("READY", "PROMOTED")
            .build()
            .unwrap()
    }

    #[test]
    fn script_lists_every_edge_and_quotes_names() {
        let t = TransitionTrigger::new(&policy(), "app.messages", "status").unwrap();
        let sql = t.sql();
        assert!(sql.contains(
            "CREATE OR REPLACE FUNCTION \"app\".\"messages_status_guard\"() RETURNS trigger"
        ));
        assert!(sql.contains(
            "(OLD.\"status\", NEW.\"status\") IN (('READY', 'PROMOTED'), ('READY', 'SPAM_REVIEW'))"
        ));
        assert!(sql.contains("USING ERRCODE = 'PT001'"));
        assert!(sql
            .contains("DROP TRIGGER IF EXISTS \"messages_status_guard\" ON \"app\".\"messages\";"));
        assert!(sql.contains("BEFORE UPDATE OF \"status\" ON \"app\".\"messages\""));
        assert!(sql.contains("DETAIL = 'table \"app\".\"messages\": invalid status transition'"));
    }

    #[test]
    fn a_policy_without_edges_allows_only_same_status() {
        let p = TransitionPolicy::builder().state("A").build().unwrap();
        let t = TransitionTrigger::named(&p, "t", "s", "t_guard").unwrap();
        assert!(t.sql().contains("IF FALSE THEN"));
    }

    #[test]
    fn hostile_names_are_refused() {
        let p = policy();
        let e = TransitionTrigger::new(&p, "t; DROP TABLE x", "status").unwrap_err();
        assert_eq!(e.field, "table");
        let e = TransitionTrigger::new(&p, "t", "status'--").unwrap_err();
        assert_eq!(e.field, "status_column");
        let e = TransitionTrigger::named(&p, "t", "status", "fn()").unwrap_err();
        assert_eq!(e.field, "function");
        // The default name must fit in 63 bytes too.
        let long = "t".repeat(60);
        let e = TransitionTrigger::new(&p, &long, "status").unwrap_err();
        assert_eq!(e.field, "function");
    }
}
