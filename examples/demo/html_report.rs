//! The replay report: one self-contained HTML file (inline CSS and SVG, no script) showing,
//! per scenario, the `off` and `full` runs side by side on the same axes: pool use with the
//! guard's level, critical latency, errors per second, and what every class of user got.
//!
//! A run is recorded by a [`Recorder`] started next to the app and finished once its load is
//! done; finished runs collect here until [`write`] renders them.

use crate::app::GuardMode;
use crate::load::{Class, Outcome, Sample};
use deadpool_postgres::Pool;
use poolguard::dashboard::chart::{nice_max, Chart, Mark, Series, XAxis};
use poolguard::dashboard::panels::{level_bands, level_color};
use poolguard::{Guard, Level};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where `cargo run --example demo` writes the report.
pub const DEFAULT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/poolguard-demo/report.html"
);

/// How often the pool is sampled.
const TICK: Duration = Duration::from_millis(250);
/// The width of a bin for latency and errors, in seconds.
const BIN: f64 = 0.5;

/// One sample of the pool (and of the guard's level, in `full`).
#[derive(Debug, Clone, Copy)]
struct Tick {
    at: f64,
    in_use: usize,
    max_size: usize,
    level: Option<Level>,
}

/// One finished run.
#[derive(Debug, Clone)]
pub struct RunTrace {
    pub scenario: String,
    pub mode: GuardMode,
    pub incident_at: Duration,
    ticks: Vec<Tick>,
    samples: Vec<Sample>,
}

/// Runs finished so far, in the order they finished.
static RUNS: Mutex<Vec<RunTrace>> = Mutex::new(Vec::new());

/// Samples the pool every 250 ms while a run goes on.
pub struct Recorder {
    task: tokio::task::JoinHandle<Vec<Tick>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Recorder {
    /// Starts sampling `pool` (and the level of `guard`, when there is one); times count from
    /// `start`.
    pub fn start(pool: Pool, guard: Option<Guard>, start: Instant) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = Vec::new();
            let mut every = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopped.changed() => break,
                }
                let s = pool.status();
                ticks.push(Tick {
                    at: start.elapsed().as_secs_f64(),
                    in_use: s.size.saturating_sub(s.available),
                    max_size: s.max_size,
                    level: guard.as_ref().map(Guard::level),
                });
            }
            ticks
        });
        Self { task, stop }
    }

    /// Stops sampling and keeps the run, with the requests `samples` the users sent.
    pub async fn finish(
        self,
        scenario: &str,
        mode: GuardMode,
        incident_at: Duration,
        samples: &[Sample],
    ) {
        let _ = self.stop.send(true);
        let ticks = self.task.await.unwrap_or_default();
        RUNS.lock().expect("not poisoned").push(RunTrace {
            scenario: scenario.to_string(),
            mode,
            incident_at,
            ticks,
            samples: samples.to_vec(),
        });
    }
}

/// Every run finished so far, taken out of the collection.
pub fn take_runs() -> Vec<RunTrace> {
    std::mem::take(&mut *RUNS.lock().expect("not poisoned"))
}

/// Renders `runs` to `path` (creating its directory); returns the absolute path.
pub fn write(path: &Path, runs: &[RunTrace]) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(runs))?;
    std::path::absolute(path)
}

/// A chart line: `(x, y)` points, `None` for a gap.
type Line = Vec<(f64, Option<f64>)>;

const CLASSES: [(Class, &str, &str); 3] = [
    (Class::Critical, "critical", "#cf222e"),
    (Class::Standard, "standard", "#0969da"),
    (Class::NonCritical, "non-critical", "#bc4c00"),
];

fn bins(end: f64) -> Vec<f64> {
    (0..=(end / BIN).ceil() as usize)
        .map(|i| i as f64 * BIN)
        .collect()
}

/// The `p` quantile (0..=1) of `values` (sorted in place).
fn quantile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p * (values.len() - 1) as f64).round() as usize;
    Some(values[rank.min(values.len() - 1)])
}

impl RunTrace {
    fn end(&self) -> f64 {
        let last_tick = self.ticks.last().map_or(0.0, |t| t.at);
        self.samples
            .iter()
            .map(|s| s.done().as_secs_f64())
            .fold(last_tick, f64::max)
    }

    fn pool_use(&self) -> Line {
        self.ticks
            .iter()
            .map(|t| {
                (
                    t.at,
                    Some(100.0 * t.in_use as f64 / t.max_size.max(1) as f64),
                )
            })
            .collect()
    }

    /// Critical latency quantile `p` of the requests sent in each bin, in ms, whatever
    /// their answer (a timed-out request counts with the time the user waited).
    fn critical_latency(&self, end: f64, p: f64) -> Line {
        bins(end)
            .into_iter()
            .map(|b| {
                let mut v: Vec<f64> = self
                    .samples
                    .iter()
                    .filter(|s| s.class == Class::Critical)
                    .filter(|s| (b..b + BIN).contains(&s.sent.as_secs_f64()))
                    .map(|s| s.latency.as_secs_f64() * 1000.0)
                    .collect();
                (b + BIN / 2.0, quantile(&mut v, p))
            })
            .collect()
    }

    /// Answers other than 2xx (and requests never answered) per second, by the time the
    /// user got them.
    fn errors(&self, class: Class, end: f64) -> Line {
        bins(end)
            .into_iter()
            .map(|b| {
                let n = self
                    .samples
                    .iter()
                    .filter(|s| s.class == class && s.outcome != Outcome::Ok)
                    .filter(|s| (b..b + BIN).contains(&s.done().as_secs_f64()))
                    .count();
                (b + BIN / 2.0, Some(n as f64 / BIN))
            })
            .collect()
    }

    fn outcome_table(&self) -> String {
        let mut html = String::from(
            "<table><thead><tr><th>class</th><th>sent</th><th>2xx</th><th>refused (429/503)</th><th>other errors</th><th>no answer</th><th>2xx p50 / p99</th></tr></thead><tbody>",
        );
        for (class, label, _) in CLASSES {
            let of: Vec<&Sample> = self.samples.iter().filter(|s| s.class == class).collect();
            if of.is_empty() {
                continue;
            }
            let count = |f: &dyn Fn(Outcome) -> bool| of.iter().filter(|s| f(s.outcome)).count();
            let ms = |p| {
                crate::load::percentile(&of, p).map_or("-".to_string(), |d: Duration| {
                    format!("{} ms", d.as_millis())
                })
            };
            let _ = write!(
                html,
                "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td></tr>",
                of.len(),
                count(&|o| o == Outcome::Ok),
                count(&|o| o == Outcome::Deferred),
                count(&|o| matches!(o, Outcome::Failed(_))),
                count(&|o| o == Outcome::TimedOut),
                ms(50.0),
                ms(99.0),
            );
        }
        html.push_str("</tbody></table>");
        html
    }
}

fn max_of(series: &[&[(f64, Option<f64>)]]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.iter().filter_map(|p| p.1))
        .fold(0.0, f64::max)
}

/// The charts of one scenario: a column per run, a row per measure, each row on one axis.
fn scenario_html(name: &str, runs: &[&RunTrace]) -> String {
    // Rounded up to four whole ticks.
    let end = (runs.iter().map(|r| r.end()).fold(1.0, f64::max) / 4.0).ceil() * 4.0;
    let x = XAxis::Offset { from: 0.0, to: end };
    let latency: Vec<[Line; 2]> = runs
        .iter()
        .map(|r| [r.critical_latency(end, 0.5), r.critical_latency(end, 0.99)])
        .collect();
    let errors: Vec<Vec<Line>> = runs
        .iter()
        .map(|r| CLASSES.iter().map(|c| r.errors(c.0, end)).collect())
        .collect();
    let latency_max = nice_max(max_of(
        &latency
            .iter()
            .flatten()
            .map(Vec::as_slice)
            .collect::<Vec<_>>(),
    ));
    let errors_max = nice_max(max_of(
        &errors
            .iter()
            .flatten()
            .map(Vec::as_slice)
            .collect::<Vec<_>>(),
    ));
    let mut columns = String::new();
    for (i, run) in runs.iter().enumerate() {
        let incident = vec![Mark {
            x: run.incident_at.as_secs_f64(),
            label: "incident".into(),
            color: "#57606a".into(),
        }];
        let levels: Vec<(f64, Level)> = run
            .ticks
            .iter()
            .filter_map(|t| t.level.map(|l| (t.at, l)))
            .collect();
        let bands = level_bands(&levels);
        let level_note = match run.mode {
            GuardMode::Full => {
                let worst = levels.iter().map(|l| l.1).max().unwrap_or(Level::Normal);
                format!(
                    "level reached: <b style=\"color:{}\">{}</b> (bands)",
                    level_color(worst),
                    worst.as_str()
                )
            }
            _ => "no guard: no level".to_string(),
        };
        let mut col = format!(
            "<div class=\"run mode-{mode}\" data-run=\"{name}/{mode}\"><h3>--guard {mode}</h3><p class=\"muted\">{level_note}</p>",
            mode = run.mode,
        );
        col.push_str(
            &Chart {
                y_max: Some(100.0),
                series: vec![Series::new("pool use", "#0969da", run.pool_use())],
                bands: bands.clone(),
                marks: incident.clone(),
                ..Chart::new("Pool use", "%", x)
            }
            .to_html(),
        );
        let [p50, p99] = &latency[i];
        col.push_str(
            &Chart {
                y_max: Some(latency_max),
                series: vec![
                    Series::new("p50", "#1a7f37", p50.clone()),
                    Series::new("p99", "#cf222e", p99.clone()),
                ],
                bands: bands.clone(),
                marks: incident.clone(),
                empty_note: "no critical requests".into(),
                ..Chart::new("Critical latency, ms (every answer)", "", x)
            }
            .to_html(),
        );
        col.push_str(
            &Chart {
                y_max: Some(errors_max),
                series: CLASSES
                    .iter()
                    .zip(&errors[i])
                    .map(|((_, label, color), pts)| Series::new(label, color, pts.clone()))
                    .collect(),
                bands,
                marks: incident,
                ..Chart::new("Errors per second (not 2xx, or no answer)", "", x)
            }
            .to_html(),
        );
        col.push_str(&run.outcome_table());
        col.push_str("</div>");
        columns.push_str(&col);
    }
    format!(
        "<section class=\"scenario\" id=\"{name}\"><h2>{name}</h2><div class=\"runs\">{columns}</div></section>"
    )
}

/// The whole report.
pub fn render(runs: &[RunTrace]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    let body: String = names
        .iter()
        .map(|n| {
            let of: Vec<&RunTrace> = runs.iter().filter(|r| r.scenario == *n).collect();
            scenario_html(n, &of)
        })
        .collect();
    let index: String = names
        .iter()
        .map(|n| format!("<a href=\"#{n}\">{n}</a>"))
        .collect::<Vec<_>>()
        .join(" · ");
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>poolguard replay report</title><style>{CSS}</style></head>
<body><header><h1>poolguard replay: off vs full</h1>
<p>Each seed incident replayed for real against PostgreSQL, once on the bare pool (<b>off</b>) and once behind poolguard (<b>full</b>). Both runs of a scenario share their axes. Pool use is sampled every {tick} ms; latency and errors are binned by {bin} s.</p>
<nav>{index}</nav></header>
<main>{body}</main></body></html>
"#,
        tick = TICK.as_millis(),
        bin = BIN,
    )
}

const CSS: &str = r#"
:root { --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
header { padding: 16px 24px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 6px; } h2 { font-size: 17px; margin: 0 0 10px; } h3 { font-size: 15px; margin: 0; }
header p { margin: 4px 0; color: var(--muted); max-width: 900px; }
nav a { color: #0969da; }
main { padding: 12px 24px; }
.scenario { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin-bottom: 16px; }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); gap: 12px 24px; }
.run { min-width: 0; border-top: 4px solid #cf222e; padding-top: 8px; }
.run.mode-full { border-top-color: #1a7f37; }
.muted { color: var(--muted); margin: 2px 0 8px; }
.chart { margin: 0 0 10px; min-width: 0; }
.chart figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
.chart svg { display: block; width: 100%; height: auto; }
.chart .tick { font-size: 11px; fill: var(--muted); }
.chart .mark-label { font-size: 10.5px; }
.chart .empty { font-size: 12px; fill: var(--muted); font-style: italic; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 14px; height: 3px; margin-right: 5px; vertical-align: middle; }
.legend i.band { height: 10px; opacity: .35; }
table { width: 100%; border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 4px 6px; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; }
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{app, database::Database, scenarios};

    /// `<target>/test-artifacts`, from the test binary's own path
    /// (`<target>/debug/examples/demo-<hash>`).
    fn artifacts_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test binary lives under <target>/<profile>/examples");
        let dir = target.join("test-artifacts");
        std::fs::create_dir_all(&dir).expect("create the test-artifacts directory");
        dir
    }

    /// Headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=<path>`); `None`
    /// when it is absent and POOLGUARD_SKIP_BROWSER=1.
    async fn chromium(url: &str, mode: &str) -> Option<String> {
        let browser = std::env::var("POOLGUARD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = std::env::temp_dir().join(format!("poolguard-report-{}", std::process::id()));
        let run = tokio::process::Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--disable-background-networking", "--hide-scrollbars"])
            .arg("--window-size=1280,1250")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(mode)
            .arg(url)
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(Duration::from_secs(90), run).await {
            Err(_) => panic!("chromium did not finish within 90 s"),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("POOLGUARD_SKIP_BROWSER").as_deref() == Ok("1") {
                    return None;
                }
                panic!("`{browser}` is not installed (or set POOLGUARD_SKIP_BROWSER=1)");
            }
            Ok(Err(e)) => panic!("chromium could not start: {e}"),
            Ok(Ok(out)) => out,
        };
        let _ = std::fs::remove_dir_all(&profile);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `data-points` of series `name` in the run column `run` of `html`.
    fn points(html: &str, run: &str, chart: &str, name: &str) -> usize {
        let col = &html[html.find(&format!("data-run=\"{run}\"")).expect(run)..];
        let fig = &col[col.find(&format!("data-chart=\"{chart}\"")).expect(chart)..];
        let fig = &fig[..fig.find("</figure>").unwrap()];
        let key = format!("data-series=\"{name}\" data-points=\"");
        fig.find(&key).map_or(0, |i| {
            let rest = &fig[i + key.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_real_replay_renders_as_a_report_with_both_runs_on_shared_axes() {
        let db = Database::open(80).await.unwrap();
        app::prepare_schema(&db.connect().await.unwrap())
            .await
            .unwrap();
        let metrics = poolguard::metrics::install_prometheus().unwrap();
        for mode in [GuardMode::Off, GuardMode::Full] {
            scenarios::run("dashboard-burst", mode, &db, &metrics)
                .await
                .unwrap();
        }
        let runs = take_runs();
        assert_eq!(runs.len(), 2);
        let path = write(&artifacts_dir().join("replay-report.html"), &runs).unwrap();
        let html = std::fs::read_to_string(&path).unwrap();
        for run in ["dashboard-burst/off", "dashboard-burst/full"] {
            // 7 s sampled every 250 ms, and one latency bin every 0.5 s.
            assert!(points(&html, run, "pool-use", "pool use") >= 20, "{run}");
            assert!(
                points(&html, run, "critical-latency-ms-every-answer", "p99") >= 10,
                "{run}"
            );
            assert!(
                points(
                    &html,
                    run,
                    "errors-per-second-not-2xx-or-no-answer",
                    "critical"
                ) >= 10,
                "{run}"
            );
        }
        // The full run shows the level it reached; the off run has none.
        assert!(
            html.contains("<title>level warning</title>")
                || html.contains("<title>level critical</title>")
        );
        assert_eq!(
            html.matches("<th>class</th>").count(),
            2,
            "an outcome table per run"
        );
        // Both columns share the y axis of each row: the same top tick on both sides.
        let tops: Vec<&str> = html
            .split("data-chart=\"critical-latency-ms-every-answer\"")
            .skip(1)
            .map(|fig| {
                let ticks: Vec<&str> = fig.split("class=\"tick\"").collect();
                ticks[5]
                    .split('>')
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(tops.len(), 2);
        assert_eq!(tops[0], tops[1], "off and full share the latency axis");

        let url = format!("file://{}", path.display());
        if let Some(dom) = chromium(&url, "--dump-dom").await {
            assert!(dom.contains("data-run=\"dashboard-burst/full\""));
            assert!(points(&dom, "dashboard-burst/off", "pool-use", "pool use") >= 20);
            let shot = artifacts_dir().join("replay-report.png");
            let _ = std::fs::remove_file(&shot);
            chromium(&url, &format!("--screenshot={}", shot.display())).await;
            let size = std::fs::metadata(&shot).expect("a screenshot").len();
            assert!(
                size > 10_000,
                "the screenshot is suspiciously small: {size} bytes"
            );
            eprintln!("replay report screenshot: {}", shot.display());
        }
    }
}
