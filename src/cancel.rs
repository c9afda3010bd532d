//! Sending a cancel request that a pooler does not lose.
//!
//! `CancelToken::cancel_query` writes the 16-byte request, shuts its side down and closes
//! at once. PostgreSQL reads the request before it sees the close; PgBouncer (1.18) forwards
//! a cancel over a new server connection and drops it when its client has already gone, which
//! a quick close often wins. [`send_cancel`] therefore keeps the TCP connection open after the
//! request until the other side closes it (both PostgreSQL and PgBouncer do once the cancel is
//! dealt with), or a short bound passes.

use crate::tls::{SslMode, TlsConnector};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::{CancelToken, NoTls};

/// The longest a cancel request may take: connect, send, and wait for the close.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a cancel for `token`'s connection to the first TCP host of `pg` (the address the
/// connection was made to), waiting for the other side to close. When the connection had
/// to be encrypted (`sslmode=require` and up), `CancelToken::cancel_query` with `tls`;
/// without a TCP address, plain `CancelToken::cancel_query`. Whether the request was
/// delivered.
pub(crate) async fn send_cancel(
    token: &CancelToken,
    pg: Option<&tokio_postgres::Config>,
    tls: &TlsConnector,
) -> bool {
    // A cancel needs TLS only where the connection had to be encrypted; under `prefer` the
    // plain request below works everywhere and is the one a pooler does not lose.
    let must_encrypt = matches!(
        tls.ssl_mode(),
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    );
    if must_encrypt && tls.can_encrypt() {
        return matches!(
            tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tls.clone())).await,
            Ok(Ok(()))
        );
    }
    let address = pg.and_then(
        |pg| match (pg.get_hosts().first(), pg.get_ports().first()) {
            (Some(Host::Tcp(host)), Some(port)) => Some((host.clone(), *port)),
            (Some(Host::Tcp(host)), None) => Some((host.clone(), 5432)),
            _ => None,
        },
    );
    let Some((host, port)) = address else {
        return matches!(
            tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await,
            Ok(Ok(()))
        );
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, async {
        let mut tcp = TcpStream::connect((host.as_str(), port)).await.ok()?;
        // The token writes into one end of a pipe; the request is copied to the server and
        // the connection held open until the server closes it.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let written = token.cancel_query_raw(ours, NoTls).await.is_ok();
        let mut request = Vec::new();
        theirs.read_to_end(&mut request).await.ok()?;
        tcp.write_all(&request).await.ok()?;
        tcp.flush().await.ok()?;
        Some((written, tcp))
    })
    .await
    .ok()
    .flatten()
    {
        Some((written, mut tcp)) => {
            // Delivered; waiting for the close only keeps a pooler from dropping it.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, tcp.read_to_end(&mut rest)).await;
            written
        }
        None => false,
    }
}
