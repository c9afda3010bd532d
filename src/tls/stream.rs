//! The handshake and the encrypted stream tokio-postgres runs over, and the error that says
//! why a handshake failed.

use super::SslMode;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect};
use tokio_postgres::Socket;

/// One pending TLS handshake with a host.
pub struct TlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    mode: SslMode,
    host: String,
}

impl fmt::Debug for TlsHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsHandshake")
            .field("host", &self.host)
            .field("mode", &self.mode)
            .finish()
    }
}

impl TlsHandshake {
    pub(super) fn new(
        config: Arc<ClientConfig>,
        mode: SslMode,
        host: &str,
    ) -> Result<Self, TlsError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError {
            host: host.to_string(),
            mode,
            cause: "the host is not a DNS name or IP address a certificate can name (TLS needs \
                    a TCP host, not a Unix socket)"
                .into(),
        })?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
            mode,
            host: host.to_string(),
        })
    }
}

impl TlsConnect<Socket> for TlsHandshake {
    type Stream = TlsStream;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, TlsError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            match self.connector.connect(self.name, stream).await {
                Ok(stream) => Ok(TlsStream(stream)),
                Err(e) => Err(TlsError::from_io(&self.host, self.mode, e)),
            }
        })
    }
}

/// A TLS session with the server.
#[derive(Debug)]
pub struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM then authenticates without channel binding (its default, `prefer`, allows it).
        ChannelBinding::none()
    }
}

/// Why a TLS handshake failed, naming the host, the mode and the cause.
#[derive(Debug, Clone)]
pub struct TlsError {
    host: String,
    mode: SslMode,
    cause: String,
}

impl TlsError {
    fn from_io(host: &str, mode: SslMode, e: io::Error) -> Self {
        let hint = match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {
                " (the server's certificate does not name this host: connect with a host name \
                 the certificate holds, or use sslmode=verify-ca to check the chain only)"
            }
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
                " (the server's certificate is not signed by a certificate authority in \
                 sslrootcert)"
            }
            _ => "",
        };
        TlsError {
            host: host.to_string(),
            mode,
            cause: format!("{e}{hint}"),
        }
    }

    /// The host the handshake was with.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `sslmode` it was made under.
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS with {} (sslmode={}) failed: {}",
            self.host, self.mode, self.cause
        )
    }
}

impl std::error::Error for TlsError {}
