//! The deployment files stay in step with the code: every path docker-compose.yml and the
//! Prometheus config reference exists, and every metric the alert rules and their tests use
//! is one poolguard exports (a constant in `src/metrics.rs`).
//!
//! No YAML parser: the files are simple enough to scan line by line; `promtool` checks the
//! Prometheus files in CI. The Grafana dashboard is JSON: every PromQL expression in it is
//! checked by `promtool` (as recording rules) and against the exported metric names.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The value after `key:` on lines whose trimmed text starts with `key:`, unquoted.
fn values_of<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}:");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
        .filter(|v| !v.is_empty())
        .collect()
}

/// The items of the block list under the first line `key:` (lines `- item` that follow).
fn list_under<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}:"));
    let Some(head) = lines.next() else {
        return Vec::new();
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect()
}

/// The string constants of `src/metrics.rs` and `src/metrics/otel.rs`.
fn exported_metrics() -> BTreeSet<String> {
    let text = read("src/metrics.rs") + &read("src/metrics/otel.rs");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": &str = \""))
        .filter_map(|(_, rest)| rest.strip_suffix("\";"))
        .map(str::to_owned)
        .collect()
}

/// Identifiers in `text` that look like poolguard's metric names; a histogram's series
/// (`_bucket`, `_sum`, `_count`) count as the histogram.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["db_connection_pool_", "poolguard_", "db_client_connection_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s).filter(|h| h.ends_with("_seconds")))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

fn assert_exists(base: &Path, rel: &str, what: &str) {
    let path = base.join(rel);
    assert!(
        path.exists(),
        "{what} `{rel}` does not exist ({})",
        path.display()
    );
}

#[test]
fn yaml_files_have_no_tabs() {
    for rel in [
        "docker-compose.yml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/poolguard.yml",
    ] {
        let text = read(rel);
        assert!(!text.contains('\t'), "{rel} indents with a tab");
    }
}

#[test]
fn compose_references_existing_files() {
    let compose = read("docker-compose.yml");
    for service in ["postgres:", "app:", "prometheus:"] {
        assert!(
            compose.lines().any(|l| l == format!("  {service}")),
            "docker-compose.yml has no `{service}` service"
        );
    }
    let contexts = values_of(&compose, "context");
    assert_eq!(contexts, ["."], "the app is built from the repository root");
    let dockerfiles = values_of(&compose, "dockerfile");
    assert_eq!(dockerfiles, ["deploy/Dockerfile"]);
    for d in &dockerfiles {
        assert_exists(&root(), d, "build.dockerfile");
    }

    let volumes = list_under(&compose, "volumes");
    assert!(!volumes.is_empty(), "prometheus mounts its config");
    for v in volumes {
        let source = v.split(':').next().unwrap_or_default();
        if source.starts_with("./") || source.starts_with("../") {
            assert_exists(&root(), source, "volume source");
        }
    }
    assert!(compose.contains("./deploy/prometheus:/etc/prometheus"));
    assert!(compose.contains("postgres://postgres:postgres@postgres:5432/postgres"));
    assert!(compose.contains("condition: service_healthy"));
    assert!(compose.contains("pg_isready"));
}

#[test]
fn dockerfile_builds_the_demo_example() {
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked --example demo"));
    assert!(dockerfile.contains("target/release/examples/demo"));
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("name = \"demo\""),
        "Cargo.toml declares the demo example"
    );
    assert_exists(&root(), "examples/demo/main.rs", "the demo example");
    assert_exists(&root(), "Cargo.lock", "the lock file `--locked` needs");
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

#[test]
fn prometheus_config_scrapes_the_app_and_loads_the_rules() {
    let config = read("deploy/prometheus/prometheus.yml");
    let base = root().join("deploy/prometheus");
    let rules = list_under(&config, "rule_files");
    assert_eq!(rules, ["alerts.yml"]);
    for r in rules {
        assert_exists(&base, r, "rule file");
    }
    assert!(config.contains("\"app:8080\""), "scrapes the app service");
    assert_eq!(values_of(&config, "metrics_path"), ["/metrics"]);

    // The app listens where Prometheus scrapes it.
    let compose = read("docker-compose.yml");
    assert!(compose.contains("\"--listen\", \"0.0.0.0:8080\""));

    let tests = read("deploy/prometheus/alerts_test.yml");
    for r in list_under(&tests, "rule_files") {
        assert_exists(&base, r, "rule file of the tests");
    }
}

#[test]
fn alert_rules_use_exported_metric_names() {
    let exported = exported_metrics();
    assert!(
        exported.contains("db_connection_pool_active"),
        "{exported:?}"
    );
    for rel in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        let used = metric_names_in(&read(rel));
        assert!(!used.is_empty(), "{rel} uses no poolguard metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{rel} uses metrics src/metrics.rs does not define: {unknown:?}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_and_a_test() {
    let alerts = read("deploy/prometheus/alerts.yml");
    let names = values_of(&alerts, "- alert");
    assert!(names.len() >= 8, "{names:?}");
    let severities = values_of(&alerts, "severity");
    assert_eq!(severities.len(), names.len(), "one severity per alert");
    for s in &severities {
        assert!(
            ["info", "warning", "critical"].contains(s),
            "unknown severity {s}"
        );
    }
    assert_eq!(
        values_of(&alerts, "summary").len(),
        names.len(),
        "one summary per alert"
    );
    assert_eq!(
        values_of(&alerts, "description").len(),
        names.len(),
        "one description per alert"
    );

    // The seed incident's alert, unchanged.
    assert!(alerts.contains("expr: db_connection_pool_active / db_connection_pool_max > 0.95"));
    // Under the guard that ratio stops at the reserve line: alerts on the level, the wait
    // for a connection and the refusals cover the incident (tests/faults_alerts.rs sees them
    // fire on a real Prometheus).
    for (alert, metric) in [
        ("PoolguardPressure", "poolguard_level"),
        (
            "PoolguardSlowAcquire",
            "poolguard_acquire_wait_seconds_bucket",
        ),
        ("PoolguardRefusingRequests", "poolguard_requests_total"),
        (
            "PoolguardServerReadingStale",
            "poolguard_server_reading_stale",
        ),
    ] {
        assert!(names.contains(&alert), "{alert} missing: {names:?}");
        let rule = alerts
            .split("- alert: ")
            .find(|r| r.starts_with(alert))
            .unwrap();
        assert!(rule.contains(metric), "{alert} does not read {metric}");
    }

    let tests = read("deploy/prometheus/alerts_test.yml");
    let tested: BTreeSet<_> = values_of(&tests, "alertname").into_iter().collect();
    for name in &names {
        assert!(tested.contains(name), "alert {name} has no promtool test");
    }
}

const GRAFANA_DASHBOARD: &str = "deploy/grafana/dashboards/poolguard.json";

/// Every `expr` of every panel target in the Grafana dashboard (rows' nested panels too),
/// with the panel's title.
fn grafana_expressions() -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(GRAFANA_DASHBOARD)).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's built-in range variables, replaced by durations so Prometheus tools parse the
/// expression.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "30s")
        .replace("$__range", "1h")
}

#[test]
fn grafana_expressions_pass_promtool_and_name_exported_metrics() {
    let exprs = grafana_expressions();
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());
    // What the dashboard must show.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for metric in [
        "db_connection_pool_active",
        "poolguard_level",
        "poolguard_requests_total",
        "poolguard_acquire_wait_seconds_bucket",
        "poolguard_connection_hold_seconds_bucket",
        "poolguard_server_max_connections",
        "poolguard_queries_cancelled_total",
        "poolguard_backends_terminated_total",
        "poolguard_transitions_blocked_total",
        "poolguard_events_dropped_total",
        "poolguard_refusals_delayed_total",
    ] {
        assert!(
            all.contains(metric),
            "the dashboard does not chart {metric}"
        );
    }

    let exported = exported_metrics();
    for (title, expr) in &exprs {
        assert!(
            !expr.contains('$') || expr.contains("$__"),
            "{title}: template variable in {expr}"
        );
        let used: BTreeSet<String> = metric_names_in(expr)
            .into_iter()
            .map(|m| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s));
                base.map_or(m.clone(), str::to_owned)
            })
            .collect();
        assert!(
            !used.is_empty(),
            "{title}: `{expr}` uses no poolguard metric"
        );
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{title}: `{expr}` uses metrics poolguard does not export: {unknown:?}"
        );
    }

    // Each expression as a recording rule: promtool parses and checks every one.
    let mut rules = String::from("groups:\n  - name: grafana-dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(&without_grafana_variables(expr)).unwrap();
        rules.push_str(&format!(
            "      - record: grafana:panel_expression:{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grafana-rules");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard_rules.yml");
    fs::write(&file, &rules).unwrap();
    let out = match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert_eq!(
                std::env::var("POOLGUARD_SKIP_PROMTOOL").as_deref(),
                Ok("1"),
                "`promtool` is not installed: `apt-get install -y prometheus` (CI installs it), \
                 or set POOLGUARD_SKIP_PROMTOOL=1 to skip this check"
            );
            return;
        }
        Err(e) => panic!("promtool could not start: {e}"),
    };
    assert!(
        out.status.success(),
        "promtool rejects a dashboard expression:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{} rules found", exprs.len())),
        "promtool did not check every expression: {said}"
    );
}

#[test]
fn grafana_is_provisioned_with_the_dashboard_and_prometheus() {
    let compose = read("docker-compose.yml");
    assert!(
        compose.lines().any(|l| l == "  grafana:"),
        "a grafana service"
    );
    for mount in [
        "./deploy/grafana/provisioning:/etc/grafana/provisioning",
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards",
    ] {
        assert!(compose.contains(mount), "grafana mounts {mount}");
        assert_exists(&root(), mount.split(':').next().unwrap(), "grafana volume");
    }
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(values_of(&datasource, "url"), ["http://prometheus:9090"]);
    assert_eq!(values_of(&datasource, "uid"), ["prometheus"]);
    let provider = read("deploy/grafana/provisioning/dashboards/poolguard.yml");
    assert_eq!(
        values_of(&provider, "path"),
        ["/var/lib/grafana/dashboards"]
    );
    // Every panel reads the provisioned data source; ids are unique and panels do not
    // overlap on Grafana's 24-column grid.
    let dashboard: serde_json::Value = serde_json::from_str(&read(GRAFANA_DASHBOARD)).unwrap();
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "prometheus", "{}", p["title"]);
        }
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
    }
}
