//! The fault suite's rig: a real PostgreSQL (optionally behind the [`Proxy`]), a guard and its
//! watchdog serving a small app over a real socket, a load that records every answer, and
//! the invariants every fault test asserts through [`Rig::check`]:
//!
//! 1. every request is answered, within its deadline plus a small bound;
//! 2. pool accounting is exact afterwards: no slot held or queued, no connection in use, the
//!    server holds exactly the pool's connections, none `idle in transaction`;
//! 3. nothing is stored that the policy forbids: a refused request (429, 503) stored nothing,
//!    an acknowledged one (200) stored its write, and every write is whole (both of its rows
//!    or neither: a transaction is never half-committed).

use super::proxy::Proxy;
use super::{serve, HttpClient};
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolguard::limit::DefaultKeyExtractor;
use poolguard::testing::{ClusterOptions, TestCluster};
use poolguard::watchdog::{Watchdog, WatchdogConfig, WatchdogHandle};
use poolguard::{Conn, Error, Guard, GuardConfig, GuardLayer, PoolOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The service name of the rig's pool.
pub const SERVICE: &str = "faults";
/// The rig's instance name.
pub const INSTANCE: &str = "rig";
/// The application name of the rig's pool connections (`{service}:{instance}`).
pub const APP: &str = "faults:rig";

/// How a rig is set up.
#[derive(Debug, Clone)]
pub struct RigOptions {
    pub max_connections: u32,
    pub pool_size: usize,
    pub via_proxy: bool,
    pub watchdog: bool,
    pub statement_timeout: Duration,
    pub query_deadline: Duration,
    pub config: GuardConfig,
    pub watchdog_config: WatchdogConfig,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self {
            max_connections: 30,
            pool_size: 4,
            via_proxy: false,
            watchdog: true,
            statement_timeout: Duration::from_secs(1),
            query_deadline: Duration::from_millis(1500),
            config: GuardConfig {
                max_queue_wait: Duration::from_secs(1),
                pool_wait_timeout: Duration::from_secs(1),
                pool_create_timeout: Duration::from_secs(1),
                pool_recycle_timeout: Duration::from_secs(1),
                min_dwell: Duration::from_millis(200),
                sample_interval: Duration::from_millis(20),
                breaker_ramp: Duration::from_millis(200),
                ..GuardConfig::default()
            },
            watchdog_config: WatchdogConfig {
                interval: Duration::from_millis(200),
                query_timeout: Duration::from_millis(700),
                reconnect_backoff_max: Duration::from_millis(400),
                ..WatchdogConfig::default()
            },
        }
    }
}

/// One answer (or its absence).
#[derive(Debug, Clone)]
pub struct Record {
    pub id: u64,
    pub path: String,
    /// `None`: no answer within the bound (or the connection failed).
    pub status: Option<u16>,
    pub body: String,
    pub latency: Duration,
}

/// A running rig.
pub struct Rig {
    pub pg: TestCluster,
    pub proxy: Option<Proxy>,
    pub guard: Guard,
    pub watchdog: Option<WatchdogHandle>,
    pub http: HttpClient,
    pub addr: SocketAddr,
    pub admin: tokio_postgres::Client,
    pub options: RigOptions,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    next_id: Arc<AtomicU64>,
    /// `/health` keeps a dedicated connection under the pool's application name.
    health_checked: AtomicBool,
}

/// The answers of a run, and when its fault ended.
#[derive(Debug, Default)]
pub struct Ledger {
    pub records: Vec<Record>,
}

impl Ledger {
    pub fn sent(&self) -> usize {
        self.records.len()
    }

    pub fn answered(&self) -> usize {
        self.records.iter().filter(|r| r.status.is_some()).count()
    }

    pub fn longest(&self) -> Duration {
        self.records
            .iter()
            .map(|r| r.latency)
            .max()
            .unwrap_or_default()
    }

    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r.status.unwrap_or(0)).or_insert(0) += 1;
        }
        m
    }

    pub fn count(&self, status: u16) -> usize {
        self.records
            .iter()
            .filter(|r| r.status == Some(status))
            .count()
    }
}

fn trusted(layer: GuardLayer) -> GuardLayer {
    layer.key_extractor(DefaultKeyExtractor::trusting_header(
        http::HeaderName::from_static("x-user-id"),
        64,
    ))
}

/// What the write route fails with: a bad request, or the guard's error.
pub enum WriteError {
    BadId,
    Guard(Error),
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        WriteError::Guard(e)
    }
}

impl axum::response::IntoResponse for WriteError {
    fn into_response(self) -> axum::response::Response {
        match self {
            WriteError::BadId => (http::StatusCode::BAD_REQUEST, "bad id").into_response(),
            WriteError::Guard(e) => e.into_response(),
        }
    }
}

/// `GET /write?id=N&ms=M`: one transaction writing two rows for `id` around a sleep of `M` ms.
async fn write(
    Query(q): Query<HashMap<String, String>>,
    mut conn: Conn,
) -> Result<String, WriteError> {
    let id: i64 = q
        .get("id")
        .and_then(|v| v.parse().ok())
        .ok_or(WriteError::BadId)?;
    let ms: f64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let tx = conn.transaction().await?;
    tx.execute("INSERT INTO writes (id, part) VALUES ($1, 'a')", &[&id])
        .await?;
    tx.execute("SELECT pg_sleep($1)", &[&(ms / 1000.0)]).await?;
    tx.execute("INSERT INTO writes (id, part) VALUES ($1, 'b')", &[&id])
        .await?;
    tx.commit().await?;
    Ok("written".into())
}

/// `GET /read?ms=M`: one query sleeping `M` ms.
async fn read(Query(q): Query<HashMap<String, String>>, conn: Conn) -> Result<String, Error> {
    let ms: f64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    conn.execute("SELECT pg_sleep($1)", &[&(ms / 1000.0)])
        .await?;
    Ok("read".into())
}

/// `GET /pid`: the backend pid of the connection it got.
async fn pid(conn: Conn) -> Result<String, Error> {
    let row = conn.query_one("SELECT pg_backend_pid()", &[]).await?;
    Ok(row.get::<_, i32>(0).to_string())
}

impl Rig {
    pub async fn start(options: RigOptions) -> Rig {
        let pg = TestCluster::start_with(ClusterOptions {
            max_connections: options.max_connections,
            ..ClusterOptions::default()
        })
        .await
        .expect("start a throwaway PostgreSQL");
        let admin = pg.connect().await.unwrap();
        admin
            .batch_execute(
                "CREATE TABLE writes (id bigint NOT NULL, part text NOT NULL, \
                 PRIMARY KEY (id, part))",
            )
            .await
            .unwrap();
        let proxy = if options.via_proxy {
            Some(Proxy::start(SocketAddr::from(([127, 0, 0, 1], pg.port()))).await)
        } else {
            None
        };
        let target = match &proxy {
            Some(p) => p.config_for(&pg.pg_config()),
            None => pg.pg_config(),
        };
        let pool_options = PoolOptions {
            max_size: options.pool_size,
            statement_timeout: options.statement_timeout,
            application_name: SERVICE.into(),
            instance: Some(INSTANCE.into()),
            connect_timeout: Duration::from_secs(1),
            keepalive_idle: Some(Duration::from_secs(1)),
            keepalive_interval: Duration::from_secs(1),
            keepalive_retries: 2,
            tcp_user_timeout: Some(Duration::from_secs(3)),
            ..PoolOptions::default()
        };
        let config = GuardConfig {
            query_deadline: Some(options.query_deadline),
            ..options.config.clone()
        };
        let guard = Guard::builder_for(target, &pool_options)
            .unwrap()
            .config(config)
            .build()
            .unwrap();
        let watchdog = options.watchdog.then(|| {
            Watchdog::builder(&guard)
                .config(options.watchdog_config.clone())
                .spawn()
                .unwrap()
        });
        let router = Router::new()
            .route("/write", get(write))
            .route("/read", get(read))
            .route("/pid", get(pid))
            .route_layer(trusted(guard.standard()))
            .merge(
                Router::new()
                    .route("/crit", get(read))
                    .route_layer(trusted(guard.critical())),
            )
            .route("/health", guard.health_route());
        let addr = serve(router).await;
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        Rig {
            pg,
            proxy,
            guard,
            watchdog,
            http: HttpClient::new(addr),
            addr,
            admin,
            options,
            client,
            next_id: Arc::new(AtomicU64::new(1)),
            health_checked: AtomicBool::new(false),
        }
    }

    /// The longest any request may take: queue wait, pool wait, connect, one query deadline,
    /// and a margin for a loaded machine.
    pub fn bound(&self) -> Duration {
        let c = &self.options.config;
        c.max_queue_wait
            + c.pool_wait_timeout
            + c.pool_create_timeout
            + self.options.query_deadline
            + Duration::from_secs(2)
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the rig runs through the proxy")
    }

    /// `GET /health`, parsed.
    pub async fn health(&self) -> (Option<u16>, serde_json::Value) {
        self.health_checked.store(true, Ordering::SeqCst);
        let r = self.send(0, "/health", "probe").await;
        (r.status, serde_json::from_str(&r.body).unwrap_or_default())
    }

    /// A fresh request id (for `/write`).
    pub fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request as `user`, waiting at most [`bound`](Self::bound) (plus a second, to
    /// tell a late answer from none).
    pub async fn send(&self, id: u64, path: &str, user: &str) -> Record {
        send_with(
            &self.client,
            self.addr,
            id,
            path,
            user,
            self.bound() + Duration::from_secs(1),
        )
        .await
    }

    /// Sends one request and gives up on it after `limit` (the client goes away: the server
    /// sees its connection closed).
    pub async fn send_within(&self, path: &str, user: &str, limit: Duration) -> Record {
        send_with(&self.client, self.addr, self.id(), path, user, limit).await
    }

    /// `workers` clients sending `path(id)` back to back until `stop` is set; returns every
    /// answer. Each user is one worker.
    pub fn load(
        &self,
        workers: usize,
        path: impl Fn(u64) -> String + Send + Sync + 'static,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Ledger> {
        self.load_as("user", workers, path, stop)
    }

    /// [`load`](Self::load) with users named `{prefix}-{worker}`.
    pub fn load_as(
        &self,
        prefix: &str,
        workers: usize,
        path: impl Fn(u64) -> String + Send + Sync + 'static,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Ledger> {
        let path = Arc::new(path);
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for w in 0..workers {
            let (client, addr, ids, path, records, stop) = (
                self.client.clone(),
                self.addr,
                self.next_id.clone(),
                path.clone(),
                records.clone(),
                stop.clone(),
            );
            let limit = self.bound() + Duration::from_secs(1);
            let user = format!("{prefix}-{w}");
            handles.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let r = send_with(&client, addr, id, &path(id), &user, limit).await;
                    let refused = matches!(r.status, Some(429) | Some(503));
                    records.lock().unwrap().push(r);
                    if refused {
                        // A client honouring Retry-After roughly: back off a little.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        tokio::spawn(async move {
            for h in handles {
                h.await.unwrap();
            }
            let records = std::mem::take(&mut *records.lock().unwrap());
            Ledger { records }
        })
    }

    /// Time from `since` until a plain request is served again (polled every 20 ms, at
    /// most 30 s).
    pub async fn recovery(&self, since: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.send(0, "/read?ms=0", "probe").await;
            if r.status == Some(200) {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "never recovered: last answer {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts the three invariants of the module docs and prints the fault's figures as one
    /// `FAULT | name | answered/sent | longest | recovery` line.
    pub async fn check(&self, name: &str, ledger: &Ledger, recovery: Duration) {
        let bound = self.bound();
        println!(
            "FAULT | {name} | {}/{} | {} ms | {} ms | {:?}",
            ledger.answered(),
            ledger.sent(),
            ledger.longest().as_millis(),
            recovery.as_millis(),
            ledger.statuses()
        );
        // 1. Every request answered within its bound.
        for r in &ledger.records {
            assert!(r.status.is_some(), "{name}: no answer: {r:?}");
            assert!(
                r.latency <= bound,
                "{name}: answered after {:?} (bound {bound:?}): {r:?}",
                r.latency
            );
            assert_ne!(r.status, Some(500), "{name}: a 500: {r:?}");
        }
        self.check_accounting(name).await;
        self.check_stored(name, ledger).await;
    }

    /// Invariant 2: no slot, queue entry or connection left in use; the server holds the
    /// pool's connections and nothing more, none idle in a transaction.
    pub async fn check_accounting(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.guard.status();
            let pool = self.guard.pool().status();
            let rows = self
                .admin
                .query(
                    "SELECT state FROM pg_stat_activity WHERE application_name = $1",
                    &[&APP],
                )
                .await
                .unwrap();
            let states: Vec<String> = rows
                .iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                .collect();
            let idle_in_tx = states
                .iter()
                .filter(|s| s.starts_with("idle in transaction"))
                .count();
            let exact = s.granted == 0
                && s.queued == 0
                && pool.size == pool.available
                && pool.size <= pool.max_size
                && idle_in_tx == 0
                && states.len() >= pool.size
                && states.len()
                    <= pool.size + usize::from(self.health_checked.load(Ordering::SeqCst))
                && states.iter().all(|s| s == "idle");
            if exact {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: accounting not exact: granted {} queued {} pool {pool:?} server {states:?}",
                s.granted,
                s.queued
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Invariant 3: what is stored is what the policy allows.
    pub async fn check_stored(&self, name: &str, ledger: &Ledger) {
        let rows = self
            .admin
            .query("SELECT id, count(*) FROM writes GROUP BY id", &[])
            .await
            .unwrap();
        let stored: HashMap<i64, i64> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .collect();
        for (id, parts) in &stored {
            assert_eq!(
                *parts, 2,
                "{name}: write {id} stored half ({parts} of 2 rows)"
            );
        }
        // The id a write request asked for, as the route parses it.
        let written_id = |r: &Record| -> Option<i64> {
            let query = r.path.strip_prefix("/write?")?;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("id="))
                .and_then(|v| v.parse().ok())
        };
        for r in &ledger.records {
            let Some(id) = written_id(r) else {
                continue;
            };
            match r.status {
                Some(200) => assert!(
                    stored.contains_key(&id),
                    "{name}: acknowledged write lost: {r:?}"
                ),
                // A refusal (the request never ran); a lost connection may have lost it
                // after COMMIT reached the server, so it proves nothing either way.
                Some(429) | Some(503) if !r.body.contains("connection_lost") => assert!(
                    !stored.contains_key(&id),
                    "{name}: a refused request stored its write: {r:?}"
                ),
                _ => {}
            }
        }
    }

    /// Backend pids of the pool's connections on the server.
    pub async fn pool_pids(&self) -> HashSet<i32> {
        self.admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&APP],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

async fn send_with(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    id: u64,
    path: &str,
    user: &str,
    limit: Duration,
) -> Record {
    let started = Instant::now();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("x-user-id", user)
        .body(Empty::new())
        .unwrap();
    let answer = tokio::time::timeout(limit, async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
    .ok()
    .flatten();
    Record {
        id,
        path: path.to_string(),
        status: answer.as_ref().map(|a| a.0),
        body: answer.map(|a| a.1).unwrap_or_default(),
        latency: started.elapsed(),
    }
}
