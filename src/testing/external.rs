//! The `DATABASE_URL` mode: a fresh database on a server this process does not control.

use std::sync::mpsc;
use std::time::Duration;

use super::error::{pg_error, ClusterError};
use super::options::ClusterOptions;
use super::unique_suffix;
use crate::tls::{PgUrl, TlsConnector};

/// How long drop waits for an external database to be dropped.
const EXTERNAL_DROP_TIMEOUT: Duration = Duration::from_secs(15);

/// A fresh database on a server named by `DATABASE_URL`.
#[derive(Debug)]
pub(super) struct ExternalDatabase {
    admin_url: String,
    admin_config: tokio_postgres::Config,
    tls: TlsConnector,
    database: String,
}

impl ExternalDatabase {
    pub(super) async fn create(
        admin_url: String,
        options: &ClusterOptions,
    ) -> Result<Self, ClusterError> {
        let PgUrl {
            config: admin_config,
            tls,
            ..
        } = PgUrl::parse(&admin_url).map_err(|e| ClusterError::InvalidDatabaseUrl {
            reason: e.to_string(),
        })?;
        let database = format!("poolguard_test_{}", unique_suffix().replace('-', "_"));
        let client = connect_config(&admin_config, &tls, "connect to DATABASE_URL").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
            .await
            .map_err(pg_error(format!("CREATE DATABASE {database}")))?;
        let external = ExternalDatabase {
            admin_url,
            admin_config,
            tls,
            database,
        };
        // From here on, dropping `external` drops the database again.
        for (name, value) in &options.settings {
            let sql = format!(
                "ALTER DATABASE {} SET {} = {}",
                quote_ident(&external.database),
                quote_ident(name),
                quote_literal(value)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(pg_error(format!("apply setting {name}={value}")))?;
        }
        Ok(external)
    }

    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut config = self.admin_config.clone();
        config.dbname(&self.database);
        config
    }

    pub(super) fn tls(&self) -> TlsConnector {
        self.tls.clone()
    }

    pub(super) fn url(&self) -> String {
        with_database(&self.admin_url, &self.database)
    }

    pub(super) fn port(&self) -> u16 {
        self.admin_config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(5432)
    }

    /// Drops the database from a fresh thread with its own runtime (drop may run inside or
    /// outside a runtime), waiting at most [`EXTERNAL_DROP_TIMEOUT`].
    fn drop_database(&self) {
        let config = self.admin_config.clone();
        let tls = self.tls.clone();
        let drop_sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.database));
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("poolguard-drop-db".into())
            .spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(async {
                        let work = async {
                            let client = connect_config(&config, &tls, "connect to drop")
                                .await
                                .ok()?;
                            // `WITH (FORCE)` (PostgreSQL 13+) ends sessions still connected.
                            let forced = format!("{drop_sql} WITH (FORCE)");
                            if client.batch_execute(&forced).await.is_err() {
                                client.batch_execute(&drop_sql).await.ok()?;
                            }
                            Some(())
                        };
                        let _ = tokio::time::timeout(EXTERNAL_DROP_TIMEOUT, work).await;
                    });
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(EXTERNAL_DROP_TIMEOUT + Duration::from_secs(1));
        }
    }
}

impl Drop for ExternalDatabase {
    fn drop(&mut self) {
        self.drop_database();
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Points a connection string at another database: the path of a URL, or a `dbname=`
/// appended to a key=value string (later keys win).
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = ["postgres://", "postgresql://"]
        .iter()
        .find(|scheme| url.starts_with(*scheme))
        .map(|scheme| scheme.len())
    else {
        return format!("{url} dbname={database}");
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after_authority) = rest.split_at(authority_end);
    let query = after_authority
        .find('?')
        .map(|i| &after_authority[i..])
        .unwrap_or("");
    format!("{}{authority}/{database}{query}", &url[..scheme_end])
}

pub(super) async fn connect_config(
    config: &tokio_postgres::Config,
    tls: &TlsConnector,
    context: &str,
) -> Result<tokio_postgres::Client, ClusterError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(pg_error(context))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "test cluster connection ended with an error");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_database_of_urls_and_key_value_strings() {
        assert_eq!(
            with_database("postgres://u:p@h:5433/app?sslmode=disable", "t1"),
            "postgres://u:p@h:5433/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "t1"), "postgresql://h/t1");
        assert_eq!(
            with_database("postgres://h?x=1", "t1"),
            "postgres://h/t1?x=1"
        );
        assert_eq!(
            with_database("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
