//! TLS against a real PostgreSQL serving `ssl=on` with a certificate from a certificate
//! authority this test generates: every `sslmode`, a wrong host name, an unknown authority,
//! cancel requests and the watchdog over TLS.

mod common;

use common::{eventually, quick_config};
use poolguard::events::EventKind;
use poolguard::testing::{ClusterOptions, ServerTls, TestCluster};
use poolguard::tls::{PgUrl, SslMode};
use poolguard::watchdog::{Watchdog, WatchdogConfig};
use poolguard::{Criticality, Guard, PoolOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::time::Duration;

/// A server with TLS on, the CA file that signed its certificate (for `localhost` only) and a
/// second CA file that did not.
struct TlsServer {
    cluster: TestCluster,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

async fn tls_server() -> TlsServer {
    let (ca, ca_key) = authority("poolguard test CA");
    let (other_ca, _) = authority("someone else's CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "poolguard-tls-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    let other_ca_file = dir.join("other-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&other_ca_file, other_ca.pem()).unwrap();
    let cluster = TestCluster::start_local(ClusterOptions {
        max_connections: 40,
        tls: Some(ServerTls {
            cert_pem: server.pem(),
            key_pem: server_key.serialize_pem(),
        }),
        ..ClusterOptions::default()
    })
    .await
    .expect("start PostgreSQL with ssl=on");
    TlsServer {
        cluster,
        ca_file,
        other_ca_file,
        _dir: TempDir(dir),
    }
}

impl TlsServer {
    /// A URL to the server by `host` (always reached at 127.0.0.1) with these parameters.
    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{params}",
            self.cluster.port()
        )
    }

    fn verify_full(&self, host: &str) -> String {
        self.url(
            host,
            &format!("sslmode=verify-full&sslrootcert={}", self.ca_file.display()),
        )
    }
}

fn options(instance: &str) -> PoolOptions {
    PoolOptions {
        max_size: 4,
        instance: Some(instance.to_string()),
        statement_timeout: Duration::from_secs(120),
        ..PoolOptions::default()
    }
}

/// Whether each of the pool's backends (named `poolguard:{instance}`) uses TLS, read by an
/// observer connected without TLS.
async fn ssl_of_backends(server: &TlsServer, instance: &str) -> Vec<bool> {
    let observer = server.cluster.connect().await.unwrap();
    observer
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&format!("poolguard:{instance}")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Holds all four of the pool's connections at once and runs a query on each.
async fn open_all(guard: &Guard) {
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(guard.acquire(Criticality::Critical).await.expect("acquire"));
    }
    for conn in &held {
        conn.query_one("SELECT 1", &[]).await.unwrap();
    }
}

/// The error and every cause below it, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_full_encrypt_every_pool_backend() {
    let server = tls_server().await;
    for (instance, url) in [
        ("require", server.url("127.0.0.1", "sslmode=require")),
        ("verify-full", server.verify_full("localhost")),
        (
            "verify-ca",
            server.url(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={}", server.ca_file.display()),
            ),
        ),
    ] {
        let guard = Guard::builder_for_url(&url, &options(instance))
            .unwrap()
            .config(quick_config())
            .build()
            .unwrap();
        open_all(&guard).await;
        let ssl = ssl_of_backends(&server, instance).await;
        assert_eq!(ssl.len(), 4, "{instance}: {ssl:?}");
        assert!(
            ssl.iter().all(|s| *s),
            "{instance}: every backend is on TLS: {ssl:?}"
        );
        let health = guard.health().await;
        assert_eq!(
            health.database.status, "ok",
            "{instance}: {:?}",
            health.database
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_still_connects_in_plain_text() {
    let server = tls_server().await;
    let guard = Guard::builder_for_url(
        &server.url("127.0.0.1", "sslmode=disable"),
        &options("plain"),
    )
    .unwrap()
    .build()
    .unwrap();
    open_all(&guard).await;
    let ssl = ssl_of_backends(&server, "plain").await;
    assert_eq!(ssl, vec![false; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_host_the_certificate_does_not_name_fails_saying_so() {
    let server = tls_server().await;
    // The certificate names `localhost`; the server is asked for as 127.0.0.1.
    let url = PgUrl::parse(&server.verify_full("127.0.0.1")).unwrap();
    assert_eq!(url.ssl_mode, SslMode::VerifyFull);
    let Err(err) = url.config.connect(url.tls.clone()).await else {
        panic!("the host name does not match, yet it connected");
    };
    let text = chain(&err);
    eprintln!("{text}");
    assert!(text.contains("sslmode=verify-full"), "{text}");
    assert!(text.contains("does not name this host"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    // The pool refuses the same way: nothing is connected, the guard answers with a refusal.
    let guard = Guard::builder_for_url(&server.verify_full("127.0.0.1"), &options("wrong-host"))
        .unwrap()
        .build()
        .unwrap();
    let pooled = guard.pool().get().await.expect_err("no connection");
    assert!(
        chain(&pooled).contains("does not name this host"),
        "{}",
        chain(&pooled)
    );
    assert!(ssl_of_backends(&server, "wrong-host").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_authority_is_refused_under_verify_ca() {
    let server = tls_server().await;
    let url = PgUrl::parse(&server.url(
        "localhost",
        &format!(
            "sslmode=verify-ca&sslrootcert={}",
            server.other_ca_file.display()
        ),
    ))
    .unwrap();
    let Err(err) = url.config.connect(url.tls.clone()).await else {
        panic!("another authority's certificate was accepted");
    };
    let text = chain(&err);
    assert!(
        text.contains("not signed by a certificate authority in sslrootcert"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_query_is_cancelled_through_tls() {
    let server = tls_server().await;
    let guard = Guard::builder_for_url(&server.verify_full("localhost"), &options("cancel"))
        .unwrap()
        .build()
        .unwrap();
    let mut sub = guard.subscribe();
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        conn.query("SELECT pg_sleep(60)", &[]),
    )
    .await;
    assert!(abandoned.is_err(), "the caller gave up");
    drop(conn);
    let sent = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::QueryAbandoned { cancel_sent, .. } = sub.recv().await.unwrap().kind {
                return cancel_sent;
            }
        }
    })
    .await
    .expect("an abandoned-query event");
    assert!(sent, "the cancel request reached the server over TLS");
    let observer = server.cluster.connect().await.unwrap();
    eventually("the query stops", Duration::from_secs(10), || async {
        observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' \
                 AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_connects_over_tls_and_cancels_a_slow_query() {
    let server = tls_server().await;
    let guard = Guard::builder_for_url(&server.verify_full("localhost"), &options("watched"))
        .unwrap()
        .build()
        .unwrap();
    let _watchdog = Watchdog::builder(&guard)
        .config(WatchdogConfig {
            interval: Duration::from_millis(200),
            kill_after: Duration::from_secs(1),
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    let conn = guard.acquire(Criticality::Standard).await.unwrap();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    let code = match &err {
        poolguard::Error::QueryCanceled(e) | poolguard::Error::Db(e) => {
            e.code().map(|c| c.code().to_string())
        }
        _ => None,
    };
    assert_eq!(code.as_deref(), Some(poolguard::QUERY_CANCELED), "{err:?}");
    let observer = server.cluster.connect().await.unwrap();
    let ssl: bool = observer
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'poolguard:watched:watchdog'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the watchdog's own session is on TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_uses_its_own_url_and_its_tls() {
    let server = tls_server().await;
    // The pool in plain text, the watchdog over verify-full: its session shows which URL it used.
    let guard = Guard::builder_for_url(
        &server.url("127.0.0.1", "sslmode=disable"),
        &options("own-url"),
    )
    .unwrap()
    .build()
    .unwrap();
    let bad = Watchdog::builder(&guard).url("postgres://h/db?sslmode=maybe");
    assert!(
        matches!(
            bad,
            Err(poolguard::BuildError::InvalidConfig {
                field: "sslmode",
                ..
            })
        ),
        "{bad:?}"
    );
    let _watchdog = Watchdog::builder(&guard)
        .url(&server.verify_full("localhost"))
        .unwrap()
        .config(WatchdogConfig {
            interval: Duration::from_millis(200),
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    open_all(&guard).await;
    let observer = server.cluster.connect().await.unwrap();
    eventually("the watchdog connects", Duration::from_secs(10), || async {
        observer
            .query_opt(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'poolguard:own-url:watchdog'",
                &[],
            )
            .await
            .unwrap()
            .is_some_and(|r| r.get::<_, bool>(0))
    })
    .await;
    assert_eq!(ssl_of_backends(&server, "own-url").await, vec![false; 4]);
}
