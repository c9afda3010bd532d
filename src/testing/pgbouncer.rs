//! [`TestPgBouncer`]: a throwaway PgBouncer in front of a [`TestCluster`], for tests of
//! what works behind a pooler.
//!
//! Debian's `pgbouncer` binary (found on `PATH` or in `/usr/sbin`) runs in the foreground in
//! its own temporary directory, on a free loopback port, as the `postgres` (or `nobody`) OS
//! user when this process is root (PgBouncer refuses to run as root). Clients authenticate
//! with `auth_type = trust` against a userlist holding the cluster's user. Every database
//! name is forwarded to the cluster (`* = host=.. port=..`). Dropping it kills the process and
//! removes the directory; a PgBouncer that is never dropped is killed once this process ends.
//!
//! ```no_run
//! use poolguard::testing::{PgBouncerOptions, PoolMode, TestCluster, TestPgBouncer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::start().await?;
//! let bouncer = TestPgBouncer::start(
//!     &cluster,
//!     PgBouncerOptions {
//!         pool_mode: PoolMode::Transaction,
//!         ..PgBouncerOptions::default()
//!     },
//! )
//! .await?;
//! let (client, connection) = bouncer.pg_config().connect(tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! client.simple_query("SELECT 1").await?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::error::{io_error, ClusterError};
use super::process::ServerProcess;
use super::TestCluster;

/// PgBouncer's `pool_mode`: when a server connection goes back to PgBouncer's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client disconnects: session state (`SET`) stays with the client.
    Session,
    /// After each transaction: consecutive transactions of one client may run on different
    /// server connections, so a session `SET` does not stick.
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// How the test PgBouncer is configured.
///
/// | field | default |
/// | --- | --- |
/// | `pool_mode` | [`PoolMode::Transaction`] |
/// | `default_pool_size` | 10 |
/// | `settings` | none |
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// `pool_mode`.
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per user and database.
    pub default_pool_size: u32,
    /// Further `[pgbouncer]` settings (`name`, `value`), written as given.
    pub settings: Vec<(String, String)>,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        Self {
            pool_mode: PoolMode::Transaction,
            default_pool_size: 10,
            settings: Vec::new(),
        }
    }
}

/// A PgBouncer this process started in front of a [`TestCluster`].
#[derive(Debug)]
pub struct TestPgBouncer {
    process: ServerProcess,
    user: String,
    dbname: String,
}

impl TestPgBouncer {
    /// Starts PgBouncer in front of `cluster` and waits until it listens.
    pub async fn start(
        cluster: &TestCluster,
        options: PgBouncerOptions,
    ) -> Result<TestPgBouncer, ClusterError> {
        let binary = find_pgbouncer()?;
        let pg = cluster.pg_config();
        let (host, port) = match (pg.get_hosts().first(), pg.get_ports().first()) {
            (Some(tokio_postgres::config::Host::Tcp(host)), Some(port)) => (host.clone(), *port),
            _ => ("127.0.0.1".to_string(), cluster.port()),
        };
        let user = pg.get_user().unwrap_or("postgres").to_string();
        let dbname = pg.get_dbname().unwrap_or("postgres").to_string();
        let process = ServerProcess::prepare("pgbouncer")?;
        let userlist = process.write_file("userlist.txt", &format!("\"{user}\" \"\"\n"))?;
        let mut ini = format!(
            "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = {}\n\
             default_pool_size = {}\nmax_client_conn = 500\n\
             admin_users = {user}\n",
            process.port,
            userlist.display(),
            options.pool_mode.as_str(),
            options.default_pool_size,
        );
        for (name, value) in &options.settings {
            ini.push_str(&format!("{name} = {value}\n"));
        }
        let config = process.write_file("pgbouncer.ini", &ini)?;
        let mut command = Command::new(binary);
        command.arg(&config);
        process.launch(command).await?;
        Ok(TestPgBouncer {
            process,
            user,
            dbname,
        })
    }

    /// PgBouncer's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `postgres://USER@127.0.0.1:PORT/DB`, the cluster's user and database through PgBouncer.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.user, self.process.port, self.dbname
        )
    }

    /// A connection config for [`url`](Self::url).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.process.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// PgBouncer's log so far (it names refused startup parameters, closed server
    /// connections, ...).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_file()).unwrap_or_default()
    }

    /// The directory PgBouncer runs in.
    pub fn dir(&self) -> &Path {
        &self.process.root
    }
}

/// `pgbouncer` on `PATH`, else Debian's `/usr/sbin/pgbouncer`.
fn find_pgbouncer() -> Result<PathBuf, ClusterError> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbouncer"));
    on_path
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io_error("find `pgbouncer` (install Debian's pgbouncer package)")(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            ))
        })
}
