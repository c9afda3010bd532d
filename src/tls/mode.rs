//! [`SslMode`]: libpq's `sslmode` values.

use crate::config::BuildError;
use std::fmt;

/// How a connection uses TLS, as libpq's `sslmode` says it (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain text otherwise.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, with a certificate that chains up to `sslrootcert`.
    VerifyCa,
    /// TLS, with a certificate that chains up to `sslrootcert` and names the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Parses a libpq `sslmode` value; the error names `sslmode`.
    pub fn parse(value: &str) -> Result<SslMode, BuildError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(BuildError::field(
                    "sslmode",
                    "`allow` (plain text first) is not supported: use `prefer` or `disable`",
                ))
            }
            other => {
                return Err(BuildError::field(
                    "sslmode",
                    format!(
                        "`{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                    ),
                ))
            }
        })
    }

    /// Whether the server's certificate must chain up to a trusted root.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// What tokio-postgres is told: it knows only disable, prefer and require.
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_parses_and_maps_to_what_tokio_postgres_knows() {
        use tokio_postgres::config::SslMode as Wire;
        for (text, wire) in [
            ("disable", Wire::Disable),
            ("prefer", Wire::Prefer),
            ("require", Wire::Require),
            ("verify-ca", Wire::Require),
            ("verify-full", Wire::Require),
        ] {
            let mode = SslMode::parse(text).unwrap();
            assert_eq!(mode.as_str(), text);
            assert_eq!(mode.wire(), wire);
        }
        assert!(matches!(
            SslMode::parse("verify_full"),
            Err(BuildError::InvalidConfig {
                field: "sslmode",
                ..
            })
        ));
    }
}
