//! [`TlsConnector`]: the one connector behind every connection the guard opens.

use super::SslMode;
use crate::config::BuildError;
use std::path::Path;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;

/// Opens the TLS side of every connection of a guard (pool, cancel requests, health check,
/// watchdog) the way its `sslmode` says. Cheap to clone.
///
/// Without the `tls` feature it only connects in plain text (`disable`, and `prefer`, which
/// then falls back to plain text); [`TlsConnector::new`] refuses the other modes.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    mode: SslMode,
    #[cfg(feature = "tls")]
    config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for TlsConnector {
    fn default() -> Self {
        Self::plain()
    }
}

impl TlsConnector {
    /// Plain text only (`sslmode=disable`).
    pub fn plain() -> Self {
        TlsConnector {
            mode: SslMode::Disable,
            #[cfg(feature = "tls")]
            config: None,
        }
    }

    /// A connector for `mode`, trusting the certificates in the PEM file `root_cert` (needed by
    /// `verify-ca` and `verify-full`; with `require` it turns on the chain check, as in libpq).
    /// Without `root_cert` the verifying modes read `~/.postgresql/root.crt`, as libpq does.
    /// Errors name `sslmode` or `sslrootcert`.
    pub fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<Self, BuildError> {
        if mode == SslMode::Disable {
            return Ok(Self::plain());
        }
        #[cfg(feature = "tls")]
        {
            let (mode, config) = super::roots::client_config(mode, root_cert)?;
            Ok(TlsConnector {
                mode,
                config: Some(config),
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = root_cert;
            if mode == SslMode::Prefer {
                return Ok(TlsConnector { mode });
            }
            Err(BuildError::field(
                "sslmode",
                format!("`{mode}` needs poolguard's `tls` feature"),
            ))
        }
    }

    /// The connector a tokio-postgres config asks for by its own `sslmode` (which is only
    /// ever disable, prefer or require).
    pub fn for_config(pg: &tokio_postgres::Config) -> Result<Self, BuildError> {
        use tokio_postgres::config::SslMode as Wire;
        match pg.get_ssl_mode() {
            Wire::Disable => Ok(Self::plain()),
            Wire::Require => Self::new(SslMode::Require, None),
            _ => Self::new(SslMode::Prefer, None),
        }
    }

    /// The `sslmode` it connects with (`require` given a root certificate is `verify-ca`).
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// Whether connections are encrypted when the server offers TLS.
    pub fn can_encrypt(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.config.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Tells tokio-postgres what it needs to know of the mode: `require` for the verifying
    /// ones, and `disable` for `prefer` when this connector cannot encrypt.
    pub fn prepare(&self, pg: &mut tokio_postgres::Config) {
        let wire = if self.mode == SslMode::Prefer && !self.can_encrypt() {
            SslMode::Disable.wire()
        } else {
            self.mode.wire()
        };
        pg.ssl_mode(wire);
    }
}

#[cfg(feature = "tls")]
impl MakeTlsConnect<Socket> for TlsConnector {
    type Stream = super::TlsStream;
    type TlsConnect = super::TlsHandshake;
    type Error = super::TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Self::Error> {
        // A plain connector is only asked by a connection whose config it did not prepare
        // (a cancel for a pool built elsewhere): it then behaves as `prefer`.
        let config = match &self.config {
            Some(config) => config.clone(),
            None => super::roots::unverified_config(),
        };
        super::TlsHandshake::new(config, self.mode, host)
    }
}

#[cfg(not(feature = "tls"))]
impl MakeTlsConnect<Socket> for TlsConnector {
    type Stream = tokio_postgres::tls::NoTlsStream;
    type TlsConnect = tokio_postgres::NoTls;
    type Error = tokio_postgres::tls::NoTlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Self::Error> {
        <tokio_postgres::NoTls as MakeTlsConnect<Socket>>::make_tls_connect(
            &mut tokio_postgres::NoTls,
            host,
        )
    }
}
