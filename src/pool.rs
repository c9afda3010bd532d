//! Building a deadpool-postgres pool whose every connection carries the guard's session
//! settings.
//!
//! `statement_timeout`, `idle_in_transaction_session_timeout` and `application_name` are sent
//! as startup options, so they are the session defaults of every connection the pool ever
//! creates: `RESET ALL` during recycling returns to them instead of undoing them, which a
//! `SET` on checkout would not survive. Behind a pooler that refuses startup options, pick
//! another [`SessionSettings`] mode.

use crate::config::BuildError;
use crate::identity::Identity;
use crate::session::{self, SessionSettings, SessionTimeouts};
use crate::tls::TlsConnector;
use deadpool_postgres::{Hook, HookError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;

/// How the pool and its connections are set up. Every field has a default.
///
/// | field | default |
/// | --- | --- |
/// | `max_size` | 20 |
/// | `statement_timeout` | 30 s |
/// | `idle_in_transaction_timeout` | 60 s |
/// | `application_name` | `"poolguard"` |
/// | `instance` | unique per guard: host, pid ([`default_instance`](crate::identity::default_instance)) |
/// | `connect_timeout` | 5 s |
/// | `keepalive_idle` | 10 s (`None` turns TCP keepalive off) |
/// | `keepalive_interval` | 5 s |
/// | `keepalive_retries` | 3 |
/// | `tcp_user_timeout` | 20 s (`None` leaves the system default) |
/// | `session_settings` | [`SessionSettings::StartupOptions`] |
///
/// The TCP settings apply to every connection built from the config: the pool's, the
/// watchdog's, the health check's and the cancel requests'. Keepalive finds a peer that went
/// away while the connection is idle (after about `idle + interval * retries`, 25 s by
/// default); `TCP_USER_TIMEOUT` closes a connection whose sent data stays unacknowledged that
/// long (Linux only). Neither bounds a query whose bytes are accepted but never answered (a
/// stalled proxy): the guard's client-side
/// [`query_deadline`](crate::GuardConfig::query_deadline) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// `statement_timeout` of every connection: a longer statement is stopped by Postgres
    /// (SQLSTATE 57014).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout`: a session idle inside a transaction this long is
    /// ended by Postgres.
    pub idle_in_transaction_timeout: Duration,
    /// The service name: connections are named `{application_name}:{instance}` (see
    /// [`Identity`]); the watchdog uses it to find this instance's backends.
    pub application_name: String,
    /// This replica's name within the service (`None`: unique per guard, from the host name
    /// and process id). Set it to the pod or host name to read it back in `pg_stat_activity`.
    pub instance: Option<String>,
    /// The longest a new connection may take to open.
    pub connect_timeout: Duration,
    /// Idle time before the first TCP keepalive probe; `None` turns keepalive off.
    pub keepalive_idle: Option<Duration>,
    /// Time between unanswered keepalive probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is closed.
    pub keepalive_retries: u32,
    /// `TCP_USER_TIMEOUT`: the longest sent data may stay unacknowledged before the
    /// connection is closed; `None` leaves the system default (which retransmits for
    /// about 15 minutes).
    pub tcp_user_timeout: Option<Duration>,
    /// How `statement_timeout` and `idle_in_transaction_session_timeout` reach the server:
    /// startup options (direct), `SET` after connect (PgBouncer session pooling) or role
    /// defaults (PgBouncer transaction pooling).
    pub session_settings: SessionSettings,
}

impl SessionTimeouts for PoolOptions {
    fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    fn idle_in_transaction_timeout(&self) -> Duration {
        self.idle_in_transaction_timeout
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 20,
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            application_name: "poolguard".to_string(),
            instance: None,
            connect_timeout: Duration::from_secs(5),
            keepalive_idle: Some(Duration::from_secs(10)),
            keepalive_interval: Duration::from_secs(5),
            keepalive_retries: 3,
            tcp_user_timeout: Some(Duration::from_secs(20)),
            session_settings: SessionSettings::default(),
        }
    }
}

impl PoolOptions {
    /// Checks the options; the error names the first bad field.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.max_size == 0 {
            return Err(BuildError::field(
                "max_size",
                "the pool must hold at least one connection",
            ));
        }
        if self.statement_timeout < Duration::from_millis(1) {
            return Err(BuildError::field(
                "statement_timeout",
                "must be at least 1 ms",
            ));
        }
        if self.idle_in_transaction_timeout < Duration::from_millis(1) {
            return Err(BuildError::field(
                "idle_in_transaction_timeout",
                "must be at least 1 ms",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(BuildError::field(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        if self
            .keepalive_idle
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(BuildError::field(
                "keepalive_idle",
                "must be at least 1 s (TCP keepalive counts whole seconds)",
            ));
        }
        if self.keepalive_interval < Duration::from_secs(1) {
            return Err(BuildError::field(
                "keepalive_interval",
                "must be at least 1 s (TCP keepalive counts whole seconds)",
            ));
        }
        if self.keepalive_retries == 0 {
            return Err(BuildError::field("keepalive_retries", "must be at least 1"));
        }
        if self
            .tcp_user_timeout
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err(BuildError::field(
                "tcp_user_timeout",
                "must be at least 1 ms",
            ));
        }
        let name = &self.application_name;
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(BuildError::field(
                "application_name",
                "must be 1 to 63 characters of [A-Za-z0-9-_.:]",
            ));
        }
        if let Some(instance) = &self.instance {
            Identity::new(name, instance)?;
        }
        Ok(())
    }

    /// The identity connections get: the configured instance, or a fresh default one (each
    /// call without an `instance` makes a new one).
    pub fn identity(&self) -> Result<Identity, BuildError> {
        match &self.instance {
            Some(instance) => Identity::new(&self.application_name, instance),
            None => Identity::with_default_instance(&self.application_name),
        }
    }

    /// Applies the session settings to a connection config (appended to any `options`
    /// already there) in [`SessionSettings::StartupOptions`] mode, named as
    /// [`identity`](Self::identity) says; in the other modes only `application_name` and the
    /// connect timeout.
    pub fn apply(&self, pg: &mut tokio_postgres::Config) -> Result<Identity, BuildError> {
        let identity = self.identity()?;
        self.apply_as(pg, &identity);
        Ok(identity)
    }

    fn apply_as(&self, pg: &mut tokio_postgres::Config, identity: &Identity) {
        pg.application_name(identity.application_name());
        pg.connect_timeout(self.connect_timeout);
        match self.keepalive_idle {
            Some(idle) => {
                pg.keepalives(true)
                    .keepalives_idle(idle)
                    .keepalives_interval(self.keepalive_interval)
                    .keepalives_retries(self.keepalive_retries);
            }
            None => {
                pg.keepalives(false);
            }
        }
        if let Some(timeout) = self.tcp_user_timeout {
            pg.tcp_user_timeout(timeout);
        }
        if self.session_settings != SessionSettings::StartupOptions {
            return;
        }
        let ours = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        );
        let options = match pg.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {ours}"),
            _ => ours,
        };
        pg.options(&options);
    }
}

/// The `statement_timeout` that [`PoolOptions::apply`] put in a connection config's startup
/// options (the last one wins, as on the server); `None` when there is none.
pub(crate) fn statement_timeout_of(pg: &tokio_postgres::Config) -> Option<Duration> {
    let options = pg.get_options()?;
    options
        .split_whitespace()
        .rev()
        .filter_map(|word| word.strip_prefix("statement_timeout="))
        .find_map(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Refuses a deadpool pool built without a runtime (`Pool::builder(..).runtime(..)`): every
/// acquisition with a timeout fails on it (`NoRuntimeSpecified`), and the guard always passes
/// timeouts, so it would answer every request 503. deadpool has no accessor for the runtime;
/// its `Debug` output names it.
pub(crate) fn require_runtime(pool: &Pool) -> Result<(), BuildError> {
    if format!("{pool:?}").contains("runtime: None") {
        return Err(BuildError::field(
            "pool",
            "the pool has no runtime, so none of its timeouts can work and every acquire \
             would fail: build it with .runtime(deadpool_postgres::Runtime::Tokio1), or use \
             build_pool / Guard::builder_for",
        ));
    }
    Ok(())
}

/// The recycle statement that returns a connection to its startup session, as deadpool's
/// `Clean` recycling does (the same statements, keeping prepared statements), and refuses
/// one still inside a transaction (a handler ran `BEGIN` and returned early).
///
/// The refusal: in the implicit transaction of one simple query `now()` equals
/// `statement_timestamp()`; inside an older open transaction it does not, and then the cast
/// of the message to a number fails (SQLSTATE 22P02, the message in the server's words). The
/// failed recycle makes deadpool discard the connection, and closing it rolls the transaction
/// back on the server, so its writes are never committed by the next borrower. A connection
/// in a failed transaction already fails on the first statement. The check is an expression
/// of the one `SELECT` the reset needs anyway (`pg_advisory_unlock_all()`): a `DO` block would
/// compile its PL/pgSQL on every checkout, which costs the server about as much as the rest
/// of the reset.
const RESET_SESSION: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES; \
    SELECT pg_advisory_unlock_all(), CASE WHEN now() = statement_timestamp() THEN 0 \
    ELSE ('connection returned inside a transaction begun at ' || now()::text)::int END;";

/// The recycle statement: [`RESET_SESSION`]; in [`SessionSettings::SetAfterConnect`] mode
/// followed by the `SET`s again.
fn recycle_sql(options: &PoolOptions) -> String {
    match options.session_settings {
        SessionSettings::SetAfterConnect => {
            format!("{RESET_SESSION} {}", session::set_statements(options))
        }
        _ => RESET_SESSION.to_string(),
    }
}

/// The `post_create` hook of the session mode: `SET` the settings, or check the role
/// defaults; `None` for startup options.
fn session_hook(options: &PoolOptions) -> Option<Hook> {
    let options = options.clone();
    let mode = options.session_settings;
    if mode == SessionSettings::StartupOptions {
        return None;
    }
    Some(Hook::async_fn(move |client, _| {
        let options = options.clone();
        Box::pin(async move {
            match mode {
                SessionSettings::SetAfterConnect => client
                    .batch_execute(&session::set_statements(&options))
                    .await
                    .map_err(HookError::Backend),
                _ => session::check_role_defaults(client, &options)
                    .await
                    .map_err(HookError::message),
            }
        })
    }))
}

/// Builds a pool over `pg` with the session settings of `options` on every connection. On
/// return to the pool a connection is checked and reset: one still inside a transaction is
/// discarded, the others are returned to exactly the startup settings (`RESET ALL` and the
/// rest of deadpool's `Clean` recycling). deadpool's own timeouts are set here too, as a
/// backstop; the guard always passes its configured ones.
///
/// The returned config is `pg` with the settings applied; the guard uses it for its own
/// dedicated connections (health checks, watchdog). TLS follows `pg`'s own `sslmode`
/// ([`TlsConnector::for_config`]); [`build_pool_tls`] takes a connector.
pub fn build_pool(
    pg: tokio_postgres::Config,
    options: &PoolOptions,
) -> Result<(Pool, tokio_postgres::Config), BuildError> {
    let tls = TlsConnector::for_config(&pg)?;
    build_pool_tls(pg, &tls, options)
}

/// [`build_pool`] whose connections open their TLS side with `tls` (from
/// [`PgUrl`](crate::tls::PgUrl), which honours `sslmode` and `sslrootcert`).
pub fn build_pool_tls(
    pg: tokio_postgres::Config,
    tls: &TlsConnector,
    options: &PoolOptions,
) -> Result<(Pool, tokio_postgres::Config), BuildError> {
    build_pool_as(pg, tls, options).map(|(pool, pg, _)| (pool, pg))
}

/// [`build_pool_tls`], also returning the identity the connections were named with.
pub(crate) fn build_pool_as(
    mut pg: tokio_postgres::Config,
    tls: &TlsConnector,
    options: &PoolOptions,
) -> Result<(Pool, tokio_postgres::Config, Identity), BuildError> {
    options.validate()?;
    let identity = options.identity()?;
    options.apply_as(&mut pg, &identity);
    tls.prepare(&mut pg);
    let manager = Manager::from_config(
        pg.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Custom(recycle_sql(options)),
        },
    );
    let mut builder = Pool::builder(manager);
    if let Some(hook) = session_hook(options) {
        builder = builder.post_create(hook);
    }
    let pool = builder
        .max_size(options.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| BuildError::Pool(e.to_string()))?;
    Ok((pool, pg, identity))
}

/// A pool of `max_size` over a server that does not exist, for unit tests that never check a
/// connection out (a guard built over it works; only `Pool::get` would fail).
#[cfg(test)]
pub(crate) fn unreachable_pool(max_size: usize) -> Pool {
    let pg: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
    let manager = Manager::new(pg, tokio_postgres::NoTls);
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_startup_options() {
        let mut pg: tokio_postgres::Config =
            "postgres://u@localhost/db?options=-c%20search_path%3Dapp"
                .parse()
                .unwrap();
        let options = PoolOptions {
            instance: Some("pod-1".into()),
            ..PoolOptions::default()
        };
        options.apply(&mut pg).unwrap();
        assert_eq!(
            pg.get_options(),
            Some("-c search_path=app -c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000")
        );
        assert_eq!(pg.get_application_name(), Some("poolguard:pod-1"));
    }

    #[test]
    fn the_reset_runs_every_statement_of_deadpools_clean_recycling() {
        let clean = RecyclingMethod::Clean.query().unwrap();
        let ours: Vec<&str> = RESET_SESSION.split(';').map(str::trim).collect();
        for statement in clean.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let found = ours
                .iter()
                .any(|s| *s == statement || s.starts_with(&format!("{statement},")));
            assert!(found, "{statement:?} is missing from the reset");
        }
    }

    #[test]
    fn bad_options_name_the_field() {
        let bad = PoolOptions {
            application_name: "x'; DROP".into(),
            ..PoolOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(BuildError::InvalidConfig {
                field: "application_name",
                ..
            })
        ));
        let zero = PoolOptions {
            max_size: 0,
            ..PoolOptions::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(BuildError::InvalidConfig {
                field: "max_size",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_pool_without_a_runtime_fails_at_build() {
        let pg: tokio_postgres::Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let manager = Manager::new(pg, tokio_postgres::NoTls);
        let bare = Pool::builder(manager).max_size(2).build().unwrap();
        match crate::Guard::builder(bare).build() {
            Err(BuildError::InvalidConfig {
                field: "pool",
                reason,
            }) => {
                assert!(reason.contains("runtime"), "{reason}")
            }
            other => panic!("built a guard that would refuse every acquire: {other:?}"),
        }
    }

    #[test]
    fn tcp_settings_reach_the_connection_config() {
        let mut pg: tokio_postgres::Config = "postgres://u@localhost/db".parse().unwrap();
        PoolOptions::default().apply(&mut pg).unwrap();
        assert!(pg.get_keepalives());
        assert_eq!(pg.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
        assert_eq!(statement_timeout_of(&pg), Some(Duration::from_secs(30)));
        let off = PoolOptions {
            keepalive_idle: None,
            ..PoolOptions::default()
        };
        let mut pg: tokio_postgres::Config = "postgres://u@localhost/db".parse().unwrap();
        off.apply(&mut pg).unwrap();
        assert!(!pg.get_keepalives());
        let bad = PoolOptions {
            keepalive_interval: Duration::from_millis(10),
            ..PoolOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(BuildError::InvalidConfig {
                field: "keepalive_interval",
                ..
            })
        ));
    }
}
