//! The dashboard end to end: a real PostgreSQL, a real incident, real HTTP, and the page
//! rendered by headless Chromium.

mod common;

use bytes::Bytes;
use common::{cluster, eventually, guard, quick_config, serve};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use poolguard::dashboard::{Dashboard, DashboardConfig, CHARTS_PATH, PAGE_PATH, STATUS_PATH};
use poolguard::incident::IncidentStore;
use poolguard::report::spawn_incident_pipeline;
use poolguard::report::{Reporter, ReporterConfig};
use poolguard::watchdog::{Watchdog, WatchdogConfig};
use poolguard::Criticality;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "dashboard-test-token-7f3a";
const WAIT: Duration = Duration::from_secs(15);

/// GET `path`, with `Authorization: Bearer <token>` when given: (status, www-authenticate, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Option<String>, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, www, String::from_utf8_lossy(&body).into_owned())
}

async fn status_json(addr: SocketAddr) -> Value {
    let (status, _, body) = get(addr, STATUS_PATH, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the status route serves JSON")
}

fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; artifacts go next to it.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the test-artifacts directory");
    dir
}

/// Runs headless Chromium (`chromium`, or the binary named by POOLGUARD_CHROMIUM) on `url`
/// with `mode` (`--dump-dom` or `--screenshot=<path>`); returns stdout, or `None` when the
/// browser is absent and POOLGUARD_SKIP_BROWSER=1.
async fn chromium(url: &str, mode: &str) -> Option<String> {
    chromium_sized(url, mode, (1280, 1000)).await
}

/// [`chromium`] with a window of `(width, height)` pixels.
async fn chromium_sized(url: &str, mode: &str, window: (u32, u32)) -> Option<String> {
    let browser = std::env::var("POOLGUARD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = tempdir("chromium-profile");
    let run = tokio::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--window-size={},{}", window.0, window.1))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(90), run).await {
        Err(_) => panic!("chromium did not finish within 90 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("POOLGUARD_SKIP_BROWSER").as_deref() == Ok("1") {
                eprintln!(
                    "`{browser}` is not installed; browser check skipped (POOLGUARD_SKIP_BROWSER=1)"
                );
                return None;
            }
            panic!(
                "`{browser}` is not installed: run `apt-get install -y chromium` (CI installs it), \
                 or set POOLGUARD_SKIP_BROWSER=1 to skip the browser check"
            );
        }
        Ok(Err(e)) => panic!("chromium could not start: {e}"),
        Ok(Ok(out)) => out,
    };
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tempdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_real_incident_shows_on_the_dashboard_and_in_the_browser() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, quick_config()).await;
    let store = IncidentStore::default();
    let (reporter, _worker) = Reporter::builder(ReporterConfig::default())
        .store(store.clone())
        .spawn()
        .unwrap();
    let _pipeline = spawn_incident_pipeline(guard.events(), store.clone(), Some(reporter));
    let config = DashboardConfig {
        bearer_token: Some(TOKEN.into()),
        ..DashboardConfig::default()
    };
    let dashboard = Dashboard::new(guard.clone(), store.clone(), config);
    let _subscriber = dashboard.spawn();
    // The watchdog reads the server's connections, which the server chart draws.
    let watchdog = Watchdog::builder(&guard)
        .config(WatchdogConfig {
            interval: Duration::from_millis(250),
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    let addr = serve(axum::Router::new().merge(dashboard.router())).await;

    // Access control.
    for (path, token) in [
        (CHARTS_PATH, None),
        (STATUS_PATH, None),
        (STATUS_PATH, Some("wrong-token")),
        (PAGE_PATH, None),
        (PAGE_PATH, Some("dashboard-test-token-7f3b")),
    ] {
        let (status, www, _) = get(addr, path, token).await;
        assert_eq!(status, 401, "{path} with {token:?}");
        assert!(www.unwrap_or_default().starts_with("Bearer"));
    }
    let (status, _, _) = get(addr, &format!("{STATUS_PATH}?token={TOKEN}"), None).await;
    assert_eq!(
        status, 401,
        "the JSON route takes the token from the header only"
    );
    let calm = status_json(addr).await;
    assert_eq!(calm["pool"]["level"], "normal");
    assert!(calm["active_incident"].is_null());
    // The watchdog may already have read the server (its first pass runs at once): calm
    // either way.
    assert!(
        calm["server"].is_null() || calm["server"]["utilization"].as_f64().unwrap_or(0.0) < 0.85,
        "{}",
        calm["server"]
    );

    // Calm traffic for a few seconds: served requests of every class.
    let calm_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < calm_until {
        for class in Criticality::ALL {
            let conn = guard.acquire(class).await.unwrap();
            conn.simple_query("SELECT 1").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Hold every connection: Critical, with an active incident.
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(guard.acquire(Criticality::Standard).await.unwrap());
    }
    held.push(guard.acquire(Criticality::Critical).await.unwrap());
    eventually("an active incident on the dashboard", WAIT, || async {
        let v = status_json(addr).await;
        v["pool"]["level"] == "critical" && v["active_incident"]["peak_level"] == "critical"
    })
    .await;
    // Non-critical work keeps arriving and is refused while the pool is full.
    let refusing_until = std::time::Instant::now() + Duration::from_secs(3);
    let mut refused = 0;
    while std::time::Instant::now() < refusing_until {
        if guard.acquire(Criticality::NonCritical).await.is_err() {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused > 0, "non-critical acquisitions are refused");

    // The history ring holds the incident, one point a second.
    let points = dashboard.history().points();
    assert!(points.len() >= 5, "{} points", points.len());
    assert!(points.iter().any(|p| p.level == poolguard::Level::Critical));
    assert!(points.iter().any(|p| p.server_connections.is_some()));
    let charts = {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = http::Request::get(format!("http://{addr}{CHARTS_PATH}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    assert_charts_hold_the_incident(&charts);
    let v = status_json(addr).await;
    assert_eq!(v["pool"]["in_use"], 10);
    assert_eq!(v["pool"]["max_size"], 10);
    assert_eq!(v["active_incident"]["title"], "Connection Pool Critical");
    assert_eq!(v["active_incident"]["active"], true);
    assert!(v["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["severity"] == "critical" && e["kind"] == "level_changed"));

    // The page, as a browser renders it after its script ran.
    let (status, _, html) = get(addr, PAGE_PATH, Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(html.contains("level-critical") && html.contains("Connection Pool Critical"));
    let url = format!("http://{addr}{PAGE_PATH}?token={TOKEN}");
    if let Some(dom) = chromium(&url, "--dump-dom").await {
        assert!(
            dom.contains("data-rendered=\"script\""),
            "the page's script did not render the JSON: {dom}"
        );
        // The charts as the browser holds them after its script refreshed them.
        assert_charts_hold_the_incident(&dom);
        assert!(dom.contains("status level-critical"), "{dom}");
        assert!(dom.contains("Connection Pool Critical"), "{dom}");
        assert!(dom.contains("10/10"), "{dom}");
        let shot = artifacts_dir().join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        chromium(&url, &format!("--screenshot={}", shot.display())).await;
        let size = std::fs::metadata(&shot)
            .expect("a screenshot was written")
            .len();
        assert!(
            size > 10_000,
            "the screenshot is suspiciously small: {size} bytes"
        );
        eprintln!("dashboard screenshot: {}", shot.display());
        let narrow = artifacts_dir().join("dashboard-narrow.png");
        let _ = std::fs::remove_file(&narrow);
        chromium_sized(
            &url,
            &format!("--screenshot={}", narrow.display()),
            (420, 1400),
        )
        .await;
        assert!(
            std::fs::metadata(&narrow)
                .expect("a narrow screenshot")
                .len()
                > 10_000
        );
    }
    watchdog.stop().await;

    // Release: the incident closes with the local analysis and moves to recent incidents.
    held.clear();
    eventually("the incident closes with an analysis", WAIT, || async {
        let v = status_json(addr).await;
        v["active_incident"].is_null()
            && v["recent_incidents"][0]["analysis"]["kind"] == "local_summary"
    })
    .await;
    let v = status_json(addr).await;
    assert_eq!(v["pool"]["level"], "normal");
    let closed = &v["recent_incidents"][0];
    assert_eq!(closed["title"], "Connection Pool Critical");
    assert_eq!(closed["active"], false);
    assert!(closed["analysis"]["text"]
        .as_str()
        .unwrap()
        .contains("[AUTO-RESOLVED] Connection Pool Critical"));
    assert!(v["stats_24h"]["pool_recoveries"].as_u64().unwrap() >= 1);
    assert!(v["daily_summary"]
        .as_str()
        .unwrap()
        .contains("Connection Pool Critical"));
}

/// How many points the series `name` of the chart `chart` drew in `html` (0 if absent).
fn drawn_points(html: &str, chart: &str, name: &str) -> usize {
    let Some(start) = html.find(&format!("data-chart=\"{chart}\"")) else {
        return 0;
    };
    let figure = &html[start..];
    let figure = &figure[..figure.find("</figure>").unwrap_or(figure.len())];
    let key = format!("data-series=\"{name}\" data-points=\"");
    figure
        .find(&key)
        .map(|i| {
            let rest = &figure[i + key.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .unwrap_or(0)
}

/// The charts show the live incident: pool use over several seconds with a critical band and
/// the thresholds, served and refused requests, critical latency, the server's connections
/// against its limit, and the incident marked on the time axis.
fn assert_charts_hold_the_incident(html: &str) {
    let pool = drawn_points(html, "pool-use", "pool use");
    assert!(pool >= 5, "pool use drew {pool} points: {html}");
    assert!(
        html.contains("<title>level critical</title>"),
        "no critical band: {html}"
    );
    for rule in ["critical", "warning", "recovery"] {
        assert!(
            html.contains(&format!("data-rule=\"{rule} ")),
            "no {rule} line"
        );
    }
    let served = drawn_points(html, "requests-per-second-critical", "served");
    assert!(served >= 3, "critical served drew {served} points");
    // Non-critical work is refused or held back while the pool is full: whichever outcome
    // the guard gives it (shed, queued, timed out, ...), it is drawn.
    let held_back = [
        "shed",
        "queued",
        "deferred",
        "queue full",
        "timed out",
        "pool unavailable",
    ]
    .iter()
    .map(|o| drawn_points(html, "requests-per-second-non-critical", o))
    .max()
    .unwrap_or(0);
    assert!(
        held_back >= 3,
        "non-critical refusals drew {held_back} points: {html}"
    );
    let p99 = drawn_points(html, "critical-latency-ms-acquire-wait-hold", "wait p99");
    assert!(p99 >= 2, "critical p99 drew {p99} points");
    let server = drawn_points(html, "server-connections", "server connections");
    assert!(server >= 2, "server connections drew {server} points");
    assert!(
        html.contains("max_connections (usable)"),
        "no server limit line"
    );
    assert!(
        html.contains("data-mark=\"#1 opened\""),
        "the incident is not marked: {html}"
    );
}

#[tokio::test]
async fn without_a_token_loopback_clients_are_served() {
    let pg = cluster(20).await;
    let guard = guard(&pg, 4, quick_config()).await;
    let dashboard = Dashboard::new(guard, IncidentStore::default(), DashboardConfig::default());
    let _subscriber = dashboard.spawn();
    let addr = serve(axum::Router::new().merge(dashboard.router())).await;
    let (status, _, body) = get(addr, STATUS_PATH, None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pool"]["max_size"], 4);
    let (status, _, html) = get(addr, PAGE_PATH, None).await;
    assert_eq!(status, 200);
    assert!(html.starts_with("<!doctype html>"));
    // A bearer header is not needed, and not refused either.
    let (status, _, _) = get(addr, STATUS_PATH, Some("anything")).await;
    assert_eq!(status, 200);
}
