//! The alert rules against a real Prometheus server (Debian's `prometheus`, started here on
//! a free loopback port) scraping a real app over a real PostgreSQL, under an overload:
//! without the guard the seed's pool alert fires; with the guard it cannot (standard work
//! never takes the critical reserve, so active / max stops at 0.90), and the pressure,
//! acquire-wait and refusal alerts fire instead.

mod common;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::cluster;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use poolguard::limit::DefaultKeyExtractor;
use poolguard::metrics::{POOL_ACTIVE, POOL_IDLE, POOL_MAX, POOL_WAITING};
use poolguard::{Conn, Error, Guard, GuardConfig, PoolOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// A Prometheus server in a temporary directory; killed and removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Option<Prometheus> {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "poolguard-prometheus-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
        std::fs::copy(rules, dir.join("alerts.yml")).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - alerts.yml\n\
                 scrape_configs:\n  - job_name: poolguard-test\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let mut command = Command::new(binary);
        if is_root() {
            // Servers run unprivileged: as `nobody`, still a direct child (so the kill on
            // drop reaches the server itself).
            use std::os::unix::process::CommandExt;
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("a+rwX")
                .arg(&dir)
                .status();
            command.uid(65534).gid(65534);
        }
        let child = command
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        Some(Prometheus {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// The state (`pending` / `firing`) of every active alert, by name.
    async fn alerts(&self, http: &HttpClient) -> Vec<(String, String)> {
        let Some(body) = get_text(http, &format!("http://{}/api/v1/alerts", self.addr)).await
        else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// One instant value of `expr`.
    async fn value(&self, http: &HttpClient, expr: &str) -> Option<f64> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.addr,
            expr.replace(' ', "%20").replace('/', "%2F")
        );
        let v: serde_json::Value = serde_json::from_str(&get_text(http, &url).await?).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `alert` is pending or firing; returns how long it took.
    async fn wait_for(&self, http: &HttpClient, alert: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self
                .alerts(http)
                .await
                .iter()
                .any(|(name, _)| name == alert)
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{alert} never became pending; active: {:?}",
                self.alerts(http).await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn get_text(http: &HttpClient, url: &str) -> Option<String> {
    let req = http::Request::get(url).body(Empty::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), http.request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// `clients` loops sending `GET path` as distinct users until `stop`.
fn flood(
    http: HttpClient,
    addr: SocketAddr,
    path: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
) {
    for i in 0..clients {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{addr}{path}"))
                    .header("x-user-id", format!("user-{i}"))
                    .body(Empty::new())
                    .unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    if let Ok(r) = http.request(req).await {
                        let _ = r.into_body().collect().await;
                    }
                })
                .await;
            }
        });
    }
}

async fn bare_slow(State(pool): State<deadpool_postgres::Pool>) -> &'static str {
    if let Ok(c) = pool.get().await {
        let _ = c.execute("SELECT pg_sleep(0.3)", &[]).await;
    }
    "slow"
}

async fn guarded_slow(conn: Conn) -> Result<&'static str, Error> {
    conn.execute("SELECT pg_sleep(0.3)", &[]).await?;
    Ok("slow")
}

fn metrics_route(handle: PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_fire_for_their_incidents_on_a_real_prometheus() {
    let handle = poolguard::metrics::install_prometheus().unwrap();
    let pg = cluster(40).await;
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(128)
        .build_http();

    // One app address, two lives: the bare pool first, then the guard, on the same gauges.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = listener.local_addr().unwrap();
    drop(listener);
    let Some(prometheus) = Prometheus::start(app_addr) else {
        eprintln!("no prometheus binary (apt-get install prometheus); skipped");
        return;
    };

    // Without the guard: the pool's gauges, sampled as `demo serve --guard off` does.
    let (pool, _) = poolguard::build_pool(
        pg.pg_config(),
        &PoolOptions {
            max_size: 10,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let sampling = Arc::new(AtomicBool::new(true));
    {
        let (pool, sampling) = (pool.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let s = pool.status();
                metrics::gauge!(POOL_ACTIVE).set(s.size.saturating_sub(s.available) as f64);
                metrics::gauge!(POOL_MAX).set(s.max_size as f64);
                metrics::gauge!(POOL_IDLE).set(s.available as f64);
                metrics::gauge!(POOL_WAITING).set(s.waiting as f64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let bare = Router::new()
        .route("/slow", get(bare_slow))
        .with_state(pool.clone())
        .merge(metrics_route(handle.clone()));
    let server = tokio::spawn(serve_on(app_addr, bare));
    let stop = Arc::new(AtomicBool::new(false));
    flood(http.clone(), app_addr, "/slow", 40, stop.clone());
    let seed = prometheus
        .wait_for(&http, "DatabaseConnectionPoolHigh", Duration::from_secs(40))
        .await;
    println!(
        "ALERT | guard off | DatabaseConnectionPoolHigh pending after {} ms",
        seed.as_millis()
    );
    stop.store(true, Ordering::Relaxed);
    sampling.store(false, Ordering::Relaxed);
    server.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(pool);

    // With the guard, the same flood.
    let guard = Guard::builder_for(
        pg.pg_config(),
        &PoolOptions {
            max_size: 10,
            ..PoolOptions::default()
        },
    )
    .unwrap()
    .config(GuardConfig {
        max_queue_wait: Duration::from_secs(1),
        ..GuardConfig::default()
    })
    .build()
    .unwrap();
    let trusted =
        DefaultKeyExtractor::trusting_header(http::HeaderName::from_static("x-user-id"), 64);
    let guarded = Router::new()
        .route("/slow", get(guarded_slow))
        .route_layer(guard.standard().key_extractor(trusted))
        .merge(metrics_route(handle.clone()));
    let server = tokio::spawn(serve_on(app_addr, guarded));
    let stop = Arc::new(AtomicBool::new(false));
    flood(http.clone(), app_addr, "/slow", 40, stop.clone());
    let limit = Duration::from_secs(40);
    for alert in [
        "PoolguardPressure",
        "PoolguardSlowAcquire",
        "PoolguardRefusingRequests",
    ] {
        let took = prometheus.wait_for(&http, alert, limit).await;
        println!(
            "ALERT | guard full | {alert} pending after {} ms",
            took.as_millis()
        );
    }
    // Meanwhile the seed's ratio stays at the reserve line and its alert is quiet.
    let mut highest = 0.0f64;
    for _ in 0..8 {
        if let Some(v) = prometheus
            .value(&http, "db_connection_pool_active / db_connection_pool_max")
            .await
        {
            highest = highest.max(v);
        }
        let active = prometheus.alerts(&http).await;
        assert!(
            !active
                .iter()
                .any(|(name, _)| name == "DatabaseConnectionPoolHigh"),
            "the seed alert sees a guarded flood: {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("ALERT | guard full | db_connection_pool_active / db_connection_pool_max at most {highest:.2}");
    assert!(highest <= 0.9 + 1e-9 && highest > 0.5, "{highest}");
    stop.store(true, Ordering::Relaxed);
    server.abort();
}

async fn serve_on(addr: SocketAddr, router: Router) {
    // The previous life may still hold the port for a moment.
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let _ = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
}
