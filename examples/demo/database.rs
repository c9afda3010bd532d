//! Where the demo's data lives.
//!
//! * `demo serve` uses the database `DATABASE_URL` names, as it is: the app creates its tables
//!   there if they are missing and never drops anything. Without `DATABASE_URL` it starts a
//!   throwaway local PostgreSQL.
//! * The replays, the overload benchmark and the tests change and reset their data, so they
//!   always run on a throwaway database: a local server, or with `DATABASE_URL` a fresh
//!   database on that server, dropped at the end.

use poolguard::testing::{ClusterError, ClusterOptions, TestCluster};
use poolguard::tls::{PgUrl, TlsConnector};

/// The server the demo runs against.
pub enum Database {
    /// A throwaway server or database, removed when dropped.
    Throwaway(TestCluster),
    /// A database someone else owns (`DATABASE_URL` for `serve`), with the TLS its
    /// `sslmode` and `sslrootcert` ask for.
    Given(PgUrl),
}

impl Database {
    /// A throwaway database: a local server allowing `max_connections`, or a fresh database
    /// on the server `DATABASE_URL` names.
    pub async fn open(max_connections: u32) -> Result<Self, ClusterError> {
        let cluster = TestCluster::start_with(ClusterOptions {
            max_connections,
            ..ClusterOptions::default()
        })
        .await?;
        if cluster.is_external() {
            tracing::info!(
                "using a fresh database on the DATABASE_URL server (dropped at the end)"
            );
        } else {
            tracing::info!(
                "started a throwaway PostgreSQL on port {} (max_connections {max_connections})",
                cluster.port()
            );
        }
        Ok(Self::Throwaway(cluster))
    }

    /// For `serve`: the database `DATABASE_URL` names, or a throwaway local server allowing
    /// `max_connections` without it.
    pub async fn open_for_serve(max_connections: u32) -> Result<Self, ClusterError> {
        Self::open_for_serve_from(std::env::var("DATABASE_URL").ok(), max_connections).await
    }

    /// [`open_for_serve`](Database::open_for_serve) with the value of `DATABASE_URL` given.
    pub async fn open_for_serve_from(
        database_url: Option<String>,
        max_connections: u32,
    ) -> Result<Self, ClusterError> {
        match database_url {
            Some(url) if !url.trim().is_empty() => {
                let db = Self::given(&url)?;
                // Fail early, with the server's message, if it cannot be reached.
                db.connect().await?;
                tracing::info!("using the database DATABASE_URL names");
                Ok(db)
            }
            _ => Self::open(max_connections).await,
        }
    }

    /// The database the connection string `url` names, used as it is.
    pub fn given(url: &str) -> Result<Self, ClusterError> {
        let url = PgUrl::parse(url).map_err(|e| ClusterError::InvalidDatabaseUrl {
            reason: e.to_string(),
        })?;
        Ok(Self::Given(url))
    }

    /// Whether this is a server we do not own.
    pub fn is_external(&self) -> bool {
        match self {
            Self::Throwaway(c) => c.is_external(),
            Self::Given(_) => true,
        }
    }

    pub fn pg_config(&self) -> tokio_postgres::Config {
        match self {
            Self::Throwaway(c) => c.pg_config(),
            Self::Given(url) => url.config.clone(),
        }
    }

    /// The TLS connector `DATABASE_URL`'s `sslmode` and `sslrootcert` ask for.
    pub fn tls(&self) -> TlsConnector {
        match self {
            Self::Throwaway(c) => c.tls(),
            Self::Given(url) => url.tls.clone(),
        }
    }

    pub async fn connect(&self) -> Result<tokio_postgres::Client, ClusterError> {
        match self {
            Self::Throwaway(c) => c.connect().await,
            Self::Given(url) => {
                let (client, connection) =
                    url.config
                        .connect(url.tls.clone())
                        .await
                        .map_err(|source| ClusterError::Postgres {
                            context: "connect to DATABASE_URL".into(),
                            source,
                        })?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{self, AppOptions, GuardMode};
    use tower::ServiceExt;

    /// Table names and databases on the server, to compare before and after.
    async fn inventory(client: &tokio_postgres::Client) -> (Vec<String>, Vec<String>) {
        let tables = client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let databases = client
            .query("SELECT datname::text FROM pg_database ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (tables, databases)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_on_a_given_database_keeps_foreign_tables_and_data() {
        let server = Database::open(40).await.unwrap();
        let Database::Throwaway(cluster) = &server else {
            unreachable!()
        };
        // The user's database: their own table and data, and one table the app also uses.
        let owner = server.connect().await.unwrap();
        owner
            .batch_execute(
                "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
                 CREATE TABLE sessions (
                     user_id text PRIMARY KEY, token text NOT NULL, last_seen timestamptz NOT NULL);
                 INSERT INTO sessions VALUES ('existing-user', 'kept-token', now());",
            )
            .await
            .unwrap();
        let (tables_before, databases_before) = inventory(&owner).await;

        // What `demo serve` does with DATABASE_URL, twice (a restart).
        let db = Database::open_for_serve_from(Some(cluster.url()), 40)
            .await
            .unwrap();
        assert!(matches!(db, Database::Given(_)));
        for _ in 0..2 {
            app::prepare_schema(&db.connect().await.unwrap())
                .await
                .unwrap();
            let options = AppOptions {
                pool_max: 4,
                mode: GuardMode::Off,
                tls: db.tls(),
                ..AppOptions::default()
            };
            let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle();
            let app = app::build(db.pg_config(), &options, handle).await.unwrap();
            let reply = app
                .router
                .oneshot(
                    http::Request::get("/api/auth/session")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(reply.status().is_success(), "{}", reply.status());
        }

        let (tables_after, databases_after) = inventory(&owner).await;
        assert_eq!(
            databases_after, databases_before,
            "no database was created or dropped"
        );
        for t in &tables_before {
            assert!(tables_after.contains(t), "table {t} was dropped");
        }
        for t in ["tasks", "feed", "messages"] {
            assert!(tables_after.iter().any(|x| x == t), "the app created {t}");
        }
        let customers: Vec<(i32, String)> = owner
            .query("SELECT id, name FROM customers ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(customers, [(1, "Ada".into()), (2, "Grace".into())]);
        let token: String = owner
            .query_one(
                "SELECT token FROM sessions WHERE user_id = 'existing-user'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(token, "kept-token");
    }
}
