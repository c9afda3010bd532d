//! How the guard's session settings (`statement_timeout`,
//! `idle_in_transaction_session_timeout`) reach the server: [`SessionSettings`].
//!
//! A direct connection takes them as startup options. A pooler changes the picture:
//! PgBouncer refuses the `options` startup parameter (`unsupported startup parameter:
//! options`), and in transaction pooling a session `SET` lands on whichever server
//! connection ran that one transaction, so it neither sticks for the next query nor stays
//! out of other clients' sessions. What works there is a default that every server
//! connection starts with: a role (or role-in-database) default set once with
//! `ALTER ROLE .. SET`, which [`apply_role_defaults`] does for the connected role and
//! [`SessionSettings::RoleDefaults`] checks on every new connection.
//!
//! | where the pool connects | mode | what the guard does |
//! | --- | --- | --- |
//! | PostgreSQL directly | [`StartupOptions`](SessionSettings::StartupOptions) (default) | `options=-c ..` at connect; `RESET ALL` returns to them |
//! | PgBouncer, `pool_mode = session` | [`SetAfterConnect`](SessionSettings::SetAfterConnect) | `SET ..` after connect and after each recycle's `RESET ALL` |
//! | PgBouncer, `pool_mode = transaction` | [`RoleDefaults`](SessionSettings::RoleDefaults) | sends nothing; every new connection checks the values and fails, naming the fix, when they differ |

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_postgres::Client;

/// The two session timeouts these settings carry; [`PoolOptions`](crate::PoolOptions)
/// implements it, so every function here takes a `&PoolOptions`.
pub trait SessionTimeouts {
    /// `statement_timeout`: a statement running longer is stopped by the server.
    fn statement_timeout(&self) -> Duration;
    /// `idle_in_transaction_session_timeout`: a session idle inside a transaction this long
    /// is ended by the server.
    fn idle_in_transaction_timeout(&self) -> Duration;
}

/// How session settings reach the server. Default: [`StartupOptions`](Self::StartupOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionSettings {
    /// Startup options (`options=-c statement_timeout=..`) on every connection: for direct
    /// connections to PostgreSQL. PgBouncer refuses them.
    #[default]
    StartupOptions,
    /// `SET` right after each connection is made and again after each recycle's
    /// `RESET ALL`: for PgBouncer in session pooling (one server connection per client
    /// connection for its whole life). Wrong under transaction pooling, where a `SET`
    /// lands on one random server connection.
    SetAfterConnect,
    /// Nothing is sent: the settings are role defaults every server connection starts with
    /// (set once with [`apply_role_defaults`] or `ALTER ROLE .. IN DATABASE .. SET`). Each
    /// new pool connection reads them and fails, naming the command to run, when they differ
    /// from the configured ones. For PgBouncer in transaction pooling; works everywhere.
    /// Per-class `statement_timeout` overrides are refused in this mode (they are session
    /// `SET`s).
    RoleDefaults,
}

impl SessionSettings {
    /// A stable lower-case name, as in config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionSettings::StartupOptions => "startup_options",
            SessionSettings::SetAfterConnect => "set_after_connect",
            SessionSettings::RoleDefaults => "role_defaults",
        }
    }

    /// Whether a connection's session state belongs to it from checkout to return, so a
    /// `SET` on checkout is undone by the recycle's `RESET ALL` (false under transaction
    /// pooling).
    pub const fn owns_session(self) -> bool {
        !matches!(self, SessionSettings::RoleDefaults)
    }
}

/// The `SET` statements for `options`' session settings.
pub(crate) fn set_statements(options: &impl SessionTimeouts) -> String {
    format!(
        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        options.statement_timeout().as_millis(),
        options.idle_in_transaction_timeout().as_millis()
    )
}

/// The statement that makes `options`' settings the defaults of the connected role in the
/// connected database (`ALTER ROLE current_user IN DATABASE current_database() SET ..`).
/// An ordinary role may set its own defaults; they apply to sessions started afterwards (for
/// PgBouncer: server connections it opens afterwards; `RECONNECT` in its admin console
/// renews the others).
pub fn role_defaults_sql(options: &impl SessionTimeouts) -> String {
    let set = |name: &str, ms: u128| {
        format!(
            "EXECUTE format('ALTER ROLE %I IN DATABASE %I SET {name} = %L', \
             current_user, current_database(), '{ms}ms');"
        )
    };
    format!(
        "DO $$BEGIN {} {} END$$",
        set("statement_timeout", options.statement_timeout().as_millis()),
        set(
            "idle_in_transaction_session_timeout",
            options.idle_in_transaction_timeout().as_millis()
        ),
    )
}

/// Runs [`role_defaults_sql`] on `client` (one statement: it works through PgBouncer in any
/// pooling mode). Run it once, as the role the pool connects as, before the guard's pool
/// opens connections in [`SessionSettings::RoleDefaults`] mode.
pub async fn apply_role_defaults(
    client: &Client,
    options: &impl SessionTimeouts,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&role_defaults_sql(options)).await
}

/// Reads the session's settings and names the fix when they differ from `options`.
pub(crate) async fn check_role_defaults(
    client: &Client,
    options: &impl SessionTimeouts,
) -> Result<(), String> {
    let rows = client
        .simple_query(
            "SELECT setting FROM pg_settings WHERE name IN \
             ('statement_timeout', 'idle_in_transaction_session_timeout') ORDER BY name DESC",
        )
        .await
        .map_err(|e| format!("read the session settings: {}", describe(&e)))?;
    let values: Vec<u128> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .collect();
    let wanted = [
        options.statement_timeout().as_millis(),
        options.idle_in_transaction_timeout().as_millis(),
    ];
    if values.as_slice() == wanted {
        return Ok(());
    }
    Err(format!(
        "session_settings = role_defaults, but the server's statement_timeout / \
         idle_in_transaction_session_timeout are {values:?} ms, not {wanted:?} ms: run, as the \
         pool's role, `{}` (poolguard::session::apply_role_defaults)",
        role_defaults_sql(options)
    ))
}

/// An error with the server's message and SQLSTATE when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolOptions;

    #[test]
    fn set_statements_carry_both_timeouts() {
        let options = PoolOptions {
            statement_timeout: Duration::from_millis(1500),
            ..PoolOptions::default()
        };
        assert_eq!(
            set_statements(&options),
            "SET statement_timeout = 1500; SET idle_in_transaction_session_timeout = 60000"
        );
        assert!(role_defaults_sql(&options).contains("'1500ms'"));
    }

    #[test]
    fn only_role_defaults_gives_up_the_session() {
        assert!(SessionSettings::StartupOptions.owns_session());
        assert!(SessionSettings::SetAfterConnect.owns_session());
        assert!(!SessionSettings::RoleDefaults.owns_session());
        assert_eq!(SessionSettings::default(), SessionSettings::StartupOptions);
    }
}
