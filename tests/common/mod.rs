//! Shared set-up for the integration tests: a real PostgreSQL, a guard over it, a real HTTP
//! server and client.
#![allow(dead_code, unreachable_pub)]

pub mod faults;
pub mod offline;
pub mod proxy;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolguard::testing::{ClusterOptions, TestCluster};
use poolguard::{Guard, GuardConfig, PoolOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A fresh server allowing `max_connections`.
pub async fn cluster(max_connections: u32) -> TestCluster {
    TestCluster::start_with(ClusterOptions {
        max_connections,
        ..ClusterOptions::default()
    })
    .await
    .expect("start a throwaway PostgreSQL")
}

/// Pool options for tests: `max_size` connections, the given statement timeout.
pub fn pool_options(max_size: usize) -> PoolOptions {
    PoolOptions {
        max_size,
        ..PoolOptions::default()
    }
}

/// A guard over a new pool of `max_size` on `cluster`.
pub async fn guard(cluster: &TestCluster, max_size: usize, config: GuardConfig) -> Guard {
    guard_with(cluster, pool_options(max_size), config).await
}

/// A guard with explicit pool options.
pub async fn guard_with(cluster: &TestCluster, options: PoolOptions, config: GuardConfig) -> Guard {
    Guard::builder_for(cluster.pg_config(), &options)
        .expect("pool options are valid")
        .config(config)
        .build()
        .expect("guard config is valid")
}

/// A config with quick recovery, for tests that walk through levels.
pub fn quick_config() -> GuardConfig {
    GuardConfig {
        min_dwell: Duration::from_millis(100),
        sample_interval: Duration::from_millis(20),
        breaker_ramp: Duration::from_millis(200),
        ..GuardConfig::default()
    }
}

/// Serves `router` on a loopback port; returns its address.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// One HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP/1 client over TCP.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
}

impl HttpClient {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn new(addr: SocketAddr) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        Self { client, addr }
    }

    /// GET `path` as `user` (sent in `x-user-id` when given).
    pub async fn get(&self, path: &str, user: Option<&str>) -> Reply {
        let mut req = http::Request::get(format!("http://{}{}", self.addr, path));
        if let Some(user) = user {
            req = req.header("x-user-id", user);
        }
        let resp = self
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .expect("the server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Polls `check` every 20 ms until it is true, failing the test after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Backends of the service `app` (`application_name` is `{app}:{instance}…`) in `state`
/// (e.g. "active", "idle in transaction").
pub async fn backends(client: &tokio_postgres::Client, app: &str, state: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE left(application_name, length($1) + 1) = $1 || ':' AND state = $2",
            &[&app, &state],
        )
        .await
        .unwrap()
        .get(0)
}

/// A `history (seq, id, old, new)` table that a trigger on `table` fills with every stored
/// change of its `status` column: the ground truth for "no invalid transition was stored".
pub async fn record_status_history(
    client: &tokio_postgres::Client,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "CREATE TABLE history (seq bigserial PRIMARY KEY, id bigint, old text, new text);
             CREATE FUNCTION record_history() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF OLD.status IS DISTINCT FROM NEW.status THEN
                 INSERT INTO history (id, old, new) VALUES (OLD.id, OLD.status, NEW.status);
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER zz_history AFTER UPDATE ON {table}
               FOR EACH ROW EXECUTE FUNCTION record_history();"
        ))
        .await
}

/// The value of `series` (name and labels, exactly as printed) in a Prometheus scrape.
pub fn scrape_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("series {series} missing from:\n{scrape}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
