//! [`ClusterOptions`]: how a test cluster is set up.

/// How a [`TestCluster`](super::TestCluster) is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The server's `max_connections` (default 100). Ignored when `DATABASE_URL` is used:
    /// an existing server's limit cannot be changed.
    pub max_connections: u32,
    /// Extra server settings, passed as `-c name=value` after the built-in ones (so they may
    /// override e.g. `fsync` or `shared_buffers`; default none). With `DATABASE_URL`
    /// they are applied to the fresh database with `ALTER DATABASE .. SET name = value`.
    pub settings: Vec<(String, String)>,
    /// Serve TLS with this certificate and key (`ssl=on`; default none). Needs a local server:
    /// [`TestCluster::start_local`](super::TestCluster::start_local) ignores `DATABASE_URL`.
    pub tls: Option<ServerTls>,
}

/// A server certificate and its private key, both PEM, e.g. made with `rcgen` by a test that
/// also holds the certificate authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain the server presents, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 100,
            settings: Vec::new(),
            tls: None,
        }
    }
}
