//! Where the demo's data lives: `DATABASE_URL`, or a throwaway local PostgreSQL.

use poolguard::testing::{ClusterOptions, TestCluster};

/// The server the demo runs against.
pub struct Database {
    cluster: TestCluster,
}

impl Database {
    /// Opens `DATABASE_URL` (a fresh database on it) or starts a local server allowing
    /// `max_connections`.
    pub async fn open(max_connections: u32) -> Result<Self, poolguard::testing::ClusterError> {
        let cluster = TestCluster::start_with(ClusterOptions {
            max_connections,
            ..ClusterOptions::default()
        })
        .await?;
        if cluster.is_external() {
            tracing::info!("using DATABASE_URL (a fresh database on it)");
        } else {
            tracing::info!(
                "started a throwaway PostgreSQL on port {} (max_connections {max_connections})",
                cluster.port()
            );
        }
        Ok(Self { cluster })
    }

    /// Whether this is a server we do not own (`DATABASE_URL`).
    pub fn is_external(&self) -> bool {
        self.cluster.is_external()
    }

    pub fn pg_config(&self) -> tokio_postgres::Config {
        self.cluster.pg_config()
    }

    /// The TLS connector `DATABASE_URL`'s `sslmode` and `sslrootcert` ask for.
    pub fn tls(&self) -> poolguard::tls::TlsConnector {
        self.cluster.tls()
    }

    pub async fn connect(
        &self,
    ) -> Result<tokio_postgres::Client, poolguard::testing::ClusterError> {
        self.cluster.connect().await
    }
}
