//! TLS to PostgreSQL: one connector for the pool, cancel requests, the health check and the
//! watchdog, chosen from the URL's `sslmode` and `sslrootcert`.
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! | --- | --- | --- | --- |
//! | `disable` | no | – | – |
//! | `prefer` (the default) | if the server offers it (feature `tls`) | no | no |
//! | `require` | yes | no (as `verify-ca` when `sslrootcert` is given, like libpq) | no |
//! | `verify-ca` | yes | chain up to `sslrootcert` | no |
//! | `verify-full` | yes | chain up to `sslrootcert` | yes |
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`; [`PgUrl::parse`] takes
//! `sslmode` and `sslrootcert` out of the URL (or `key=value` string) before handing the rest
//! to tokio-postgres, and builds the matching [`TlsConnector`]. The TLS modes need the `tls`
//! feature (rustls with the ring provider); without it `prefer` connects in plain text and the
//! others are refused at build, naming `sslmode`.
//!
//! ```no_run
//! use poolguard::tls::PgUrl;
//! use poolguard::{Guard, PoolOptions};
//!
//! # async fn start() -> Result<(), poolguard::BuildError> {
//! let url = PgUrl::parse(
//!     "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
//! )?;
//! let guard = Guard::builder_for_tls(url.config, url.tls, &PoolOptions::default())?.build()?;
//! # drop(guard);
//! # Ok(())
//! # }
//! ```

mod connector;
mod mode;
#[cfg(feature = "tls")]
mod roots;
#[cfg(feature = "tls")]
mod stream;
mod url;
#[cfg(feature = "tls")]
mod verify;

pub use connector::TlsConnector;
pub use mode::SslMode;
#[cfg(feature = "tls")]
pub use stream::{TlsError, TlsHandshake, TlsStream};
pub use url::PgUrl;
