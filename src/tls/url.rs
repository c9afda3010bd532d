//! [`PgUrl`]: a connection URL (or `key=value` string) whose `sslmode` and `sslrootcert` are
//! read here, since tokio-postgres knows neither `verify-ca`/`verify-full` nor `sslrootcert`.

use super::{SslMode, TlsConnector};
use crate::config::BuildError;
use std::path::PathBuf;

/// A parsed connection string: the tokio-postgres config and the TLS connector its `sslmode`
/// and `sslrootcert` ask for.
#[derive(Debug, Clone)]
pub struct PgUrl {
    /// Everything but the TLS parameters, parsed by tokio-postgres (its `sslmode` set to what
    /// it understands: `require` for the verifying modes).
    pub config: tokio_postgres::Config,
    /// The connector for the pool, cancel requests and the watchdog.
    pub tls: TlsConnector,
    /// The `sslmode` asked for (`prefer` when absent, as in libpq).
    pub ssl_mode: SslMode,
    /// The `sslrootcert` file, when given.
    pub root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Parses `postgres://…?sslmode=…&sslrootcert=…` or `host=… sslmode=…`. Invalid input
    /// fails naming the field (`sslmode`, `sslrootcert`, or `url` for what tokio-postgres
    /// refuses); the CA file is read here, so a missing or empty one fails now, not at the
    /// first connection.
    pub fn parse(url: &str) -> Result<PgUrl, BuildError> {
        let (rest, mode, root) = split_tls_params(url)?;
        let ssl_mode = match mode {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let root_cert = root.filter(|r| !r.is_empty()).map(PathBuf::from);
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| BuildError::field("url", format!("is not a PostgreSQL URL: {e}")))?;
        let tls = TlsConnector::new(ssl_mode, root_cert.as_deref())?;
        tls.prepare(&mut config);
        Ok(PgUrl {
            config,
            tls,
            ssl_mode,
            root_cert,
        })
    }
}

/// The string without `sslmode` / `sslrootcert`, and their (decoded) values.
type Split = (String, Option<String>, Option<String>);

fn split_tls_params(url: &str) -> Result<Split, BuildError> {
    let trimmed = url.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_key_values(trimmed)
    }
}

fn split_url(url: &str) -> Result<Split, BuildError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None, None));
    };
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value, "sslmode")?),
            "sslrootcert" => root = Some(percent_decode(value, "sslrootcert")?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root))
}

fn percent_decode(value: &str, field: &'static str) -> Result<String, BuildError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3).unwrap_or("");
                let byte = u8::from_str_radix(hex, 16)
                    .map_err(|_| BuildError::field(field, "has a bad %-escape"))?;
                out.push(byte);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BuildError::field(field, "is not UTF-8"))
}

/// `key=value` pairs separated by spaces; values may be single-quoted with `\` escapes.
fn split_key_values(text: &str) -> Result<Split, BuildError> {
    let (mut mode, mut root) = (None, None);
    let mut kept = String::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut raw = String::new();
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            raw.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            raw.push('=');
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'\'') {
                raw.push(chars.next().unwrap_or('\''));
                let mut closed = false;
                while let Some(c) = chars.next() {
                    raw.push(c);
                    match c {
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                raw.push(escaped);
                                value.push(escaped);
                            }
                        }
                        '\'' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(BuildError::field("url", "has an unterminated quoted value"));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    raw.push(c);
                    chars.next();
                }
            }
        }
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => {
                if !kept.is_empty() {
                    kept.push(' ');
                }
                kept.push_str(&raw);
            }
        }
    }
    Ok((kept, mode, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) =
            split_tls_params("host=h sslmode = require sslrootcert='/a b/ca.pem' dbname=db")
                .unwrap();
        assert_eq!(rest, "host=h dbname=db");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/a b/ca.pem"));

        let (rest, mode, _) = split_tls_params("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/db", None));
    }

    #[test]
    fn modes_tokio_postgres_does_not_know_still_parse() {
        let url = PgUrl::parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(url.ssl_mode, SslMode::Disable);
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let bad = PgUrl::parse("postgres://u@h/db?sslmode=sometimes").unwrap_err();
        assert!(matches!(
            bad,
            BuildError::InvalidConfig {
                field: "sslmode",
                ..
            }
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn verifying_modes_need_a_readable_root_certificate() {
        let err =
            PgUrl::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::InvalidConfig {
                    field: "sslrootcert",
                    ..
                }
            ),
            "{err}"
        );
        let url = PgUrl::parse("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            url.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_modes_without_the_feature_name_sslmode() {
        let err = PgUrl::parse("postgres://u@h/db?sslmode=require").unwrap_err();
        assert!(matches!(
            err,
            BuildError::InvalidConfig {
                field: "sslmode",
                ..
            }
        ));
    }
}
