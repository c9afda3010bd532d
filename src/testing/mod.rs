//! Throwaway PostgreSQL clusters for tests, examples and benchmarks (feature `testing`).
//!
//! [`TestCluster::start`] gives every test its own real PostgreSQL server: a fresh data
//! directory in a unique temporary directory, a free loopback port, trust authentication
//! for the `postgres` user, and settings tuned for speed over durability (`fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off`). Dropping the [`TestCluster`] kills the
//! server and deletes the directory.
//!
//! To keep many clusters cheap, `initdb` runs once per machine and PostgreSQL major version
//! into a cached template directory (`<temp dir>/poolguard-pg-template-<major>-<uid>`, where
//! `uid` owns the server files); each cluster starts from a copy of it.
//!
//! * **Binaries** are looked up on `PATH`, in `pg_config --bindir`, then under
//!   `/usr/lib/postgresql/*/bin` (highest version first); see [`find_binaries`].
//! * **Root**: `initdb` and `postgres` refuse to run as root, so when the process is root
//!   they (and the template copy) run as the `postgres` OS user, or `nobody` when there is
//!   none, via [`CommandExt::uid`](std::os::unix::process::CommandExt::uid) /
//!   [`gid`](std::os::unix::process::CommandExt::gid); the server is then still a
//!   direct child of this process.
//! * **Cleanup**: dropping the cluster stops the server and deletes its directory. A cluster
//!   that is never dropped (kept in a `static`, or the process exits or is killed) is cleaned
//!   up by a small watchdog shell process once this process has ended.
//! * **`DATABASE_URL`**: when set, no server is started. The cluster creates a fresh,
//!   uniquely named database on that server, points [`TestCluster::url`] and
//!   [`TestCluster::pg_config`] at it and drops it again on drop. In that mode
//!   [`ClusterOptions::max_connections`] cannot be chosen, [`ClusterOptions::settings`] are
//!   applied with `ALTER DATABASE .. SET`, and [`TestCluster::stop`] /
//!   [`TestCluster::restart`] fail with [`ClusterError::External`]. Its `sslmode` and
//!   `sslrootcert` are honoured ([`TestCluster::tls`] is the connector they ask for).
//!
//! ```no_run
//! use poolguard::testing::{ClusterOptions, TestCluster};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::start_with(ClusterOptions {
//!     max_connections: 20,
//!     ..ClusterOptions::default()
//! })
//! .await?;
//! let client = cluster.connect().await?;
//! let row = client.query_one("SELECT 1 + 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 2);
//!
//! // Build a deadpool-postgres pool against the same server.
//! let manager = deadpool_postgres::Manager::new(cluster.pg_config(), tokio_postgres::NoTls);
//! let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;
//! # drop(pool);
//! # Ok(())
//! # }
//! ```

mod binaries;
mod cleanup;
mod error;
mod external;
mod options;
mod pgbouncer;
mod process;
mod readiness;
mod redis;
mod server;
mod template;
mod user;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use binaries::{find_binaries, find_binaries_in, PgBinaries};
pub use error::ClusterError;
pub use options::{ClusterOptions, ServerTls};
pub use pgbouncer::{PgBouncerOptions, PoolMode, TestPgBouncer};
pub use redis::TestRedis;

use crate::tls::TlsConnector;
use external::{connect_config, ExternalDatabase};
use server::LocalServer;

/// The database user of a local cluster (created by `initdb -U`).
const SUPERUSER: &str = "postgres";
/// The database a local cluster's URL points at.
const DEFAULT_DATABASE: &str = "postgres";

/// A throwaway PostgreSQL server (or, with `DATABASE_URL`, a throwaway database).
///
/// Dropping it shuts the server down immediately and deletes its directory (or drops the
/// database); drop never panics and may happen inside or outside a tokio runtime.
#[derive(Debug)]
pub struct TestCluster {
    target: Target,
}

#[derive(Debug)]
enum Target {
    Local(LocalServer),
    External(ExternalDatabase),
}

impl TestCluster {
    /// Starts a cluster with [`ClusterOptions::default`].
    pub async fn start() -> Result<TestCluster, ClusterError> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Starts a cluster with `opts`, or creates a database on `DATABASE_URL` when that is set
    /// (then `max_connections` is ignored; see the [module docs](self)).
    pub async fn start_with(opts: ClusterOptions) -> Result<TestCluster, ClusterError> {
        let target = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => {
                Target::External(ExternalDatabase::create(url, &opts).await?)
            }
            _ => Target::Local(LocalServer::start(opts).await?),
        };
        Ok(TestCluster { target })
    }

    /// Starts a local server with `opts` even when `DATABASE_URL` is set (for what an
    /// existing server cannot be made to do, such as serving TLS with a test's certificate).
    pub async fn start_local(opts: ClusterOptions) -> Result<TestCluster, ClusterError> {
        Ok(TestCluster {
            target: Target::Local(LocalServer::start(opts).await?),
        })
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:PORT/postgres` for a local server.
    pub fn url(&self) -> String {
        match &self.target {
            Target::Local(server) => format!(
                "postgres://{SUPERUSER}@127.0.0.1:{}/{DEFAULT_DATABASE}",
                server.port
            ),
            Target::External(external) => external.url(),
        }
    }

    /// A connection config for the same target as [`url`](Self::url), e.g. for
    /// `deadpool_postgres::Manager::new`.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        match &self.target {
            Target::Local(server) => server.config(DEFAULT_DATABASE),
            Target::External(external) => external.config(),
        }
    }

    /// The TLS connector for [`pg_config`](Self::pg_config): the one `DATABASE_URL`'s
    /// `sslmode` and `sslrootcert` ask for, plain text for a local server.
    pub fn tls(&self) -> TlsConnector {
        match &self.target {
            Target::Local(_) => TlsConnector::plain(),
            Target::External(external) => external.tls(),
        }
    }

    /// Opens a connection (with [`tls`](Self::tls)) and spawns its connection task on the
    /// current tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ClusterError> {
        let context = format!("connect to {}", self.url());
        connect_config(&self.pg_config(), &self.tls(), &context).await
    }

    /// The server's TCP port on 127.0.0.1 (the `DATABASE_URL` port in external mode).
    pub fn port(&self) -> u16 {
        match &self.target {
            Target::Local(server) => server.port,
            Target::External(external) => external.port(),
        }
    }

    /// Whether this cluster is a database on the server named by `DATABASE_URL`.
    pub fn is_external(&self) -> bool {
        matches!(self.target, Target::External(_))
    }

    /// The server's data directory; `None` in external mode.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.local().map(LocalServer::data_dir)
    }

    /// The file the server logs to; `None` in external mode.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.local().map(LocalServer::log_file)
    }

    /// Stops the server with a fast shutdown, keeping its data directory; does nothing when
    /// already stopped. Fails with [`ClusterError::External`] in external mode.
    pub async fn stop(&self) -> Result<(), ClusterError> {
        self.local_or("stop")?.stop().await
    }

    /// Stops the server if it runs, starts it again on the same port and data directory and
    /// waits until it accepts connections. Fails with [`ClusterError::External`] in external
    /// mode.
    pub async fn restart(&self) -> Result<(), ClusterError> {
        self.local_or("restart")?.restart().await
    }

    fn local(&self) -> Option<&LocalServer> {
        match &self.target {
            Target::Local(server) => Some(server),
            Target::External(_) => None,
        }
    }

    fn local_or(&self, operation: &'static str) -> Result<&LocalServer, ClusterError> {
        self.local().ok_or(ClusterError::External { operation })
    }
}

/// A name no other cluster of any process will pick: pid, a process-wide counter, time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("{}-{count}-{nanos}", std::process::id())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
