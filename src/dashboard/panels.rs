//! The dashboard's chart panels, drawn from the [`History`](super::history::History) ring: pool use
//! with the level's thresholds and bands, requests per second by class and outcome, critical
//! latency and the server's connections, with incidents marked on the time axis.

use super::chart::{Band, Chart, Mark, Rule, Series, XAxis};
use super::history::HistoryPoint;
use crate::config::GuardConfig;
use crate::criticality::Criticality;
use crate::incident::Incident;
use crate::monitor::Level;
use std::time::{SystemTime, UNIX_EPOCH};

/// The shortest time span a chart shows, so the first seconds are not stretched.
const MIN_SPAN_SECS: f64 = 60.0;

/// The colour of a level's band and of the lines of its thresholds.
pub fn level_color(level: Level) -> &'static str {
    match level {
        Level::Normal => "#1a7f37",
        Level::Warning => "#d4a72c",
        Level::Critical => "#cf222e",
    }
}

/// A colour for the outcome named `outcome`: fixed for the outcomes people know, from a
/// palette for any other.
pub fn outcome_color(outcome: &str) -> &'static str {
    match outcome {
        "served" => "#1a7f37",
        "queued" | "deferred" => "#0969da",
        "shed" => "#bc4c00",
        "queue_full" => "#8a4600",
        "pool_unavailable" => "#82071e",
        "rate_limited" => "#8250df",
        "timed_out" => "#cf222e",
        other => {
            const PALETTE: [&str; 5] = ["#57606a", "#1b7c83", "#bf3989", "#4d2d00", "#6e7781"];
            let h = other
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31) + b as usize);
            PALETTE[h % PALETTE.len()]
        }
    }
}

/// Runs of points at the same level other than Normal, as bands.
pub fn level_bands(points: &[(f64, Level)]) -> Vec<Band> {
    let mut bands = Vec::new();
    let mut run: Option<(f64, Level)> = None;
    for (i, &(at, level)) in points.iter().enumerate() {
        let next = points.get(i + 1).map_or(at + 1.0, |p| p.0);
        match run {
            Some((_, l)) if l == level => {}
            _ => run = (level != Level::Normal).then_some((at, level)),
        }
        if let Some((from, l)) = run {
            let ends = points.get(i + 1).is_none_or(|p| p.1 != l);
            if ends {
                bands.push(Band {
                    from,
                    to: next,
                    color: level_color(l).to_string(),
                    label: format!("level {}", l.as_str()),
                });
                run = None;
            }
        }
    }
    bands
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn incident_marks(incidents: &[Incident], from: f64) -> Vec<Mark> {
    let mut marks = Vec::new();
    for i in incidents {
        let opened = secs(i.opened_at);
        if opened >= from {
            marks.push(Mark {
                x: opened,
                label: format!("#{} opened", i.id),
                color: "#cf222e".into(),
            });
        }
        if let Some(closed) = i.closed_at.map(secs).filter(|c| *c >= from) {
            marks.push(Mark {
                x: closed,
                label: format!("#{} closed", i.id),
                color: "#1a7f37".into(),
            });
        }
    }
    marks
}

/// Every chart of the dashboard, as HTML.
pub(crate) fn render(
    points: &[HistoryPoint],
    incidents: &[Incident],
    config: &GuardConfig,
    now: SystemTime,
) -> String {
    let right = secs(now);
    let left = points
        .first()
        .map_or(right - MIN_SPAN_SECS, |p| p.at)
        .min(right - MIN_SPAN_SECS);
    let x = XAxis::Clock {
        from: left,
        to: right,
    };
    let marks = incident_marks(incidents, left);
    let line = |f: &dyn Fn(&HistoryPoint) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        points.iter().map(|p| (p.at, f(p))).collect()
    };
    let bands = level_bands(&points.iter().map(|p| (p.at, p.level)).collect::<Vec<_>>());
    let pct = |u: f64| (u * 100.0).round();
    let rule = |y: f64, label: &str, color: &str| Rule {
        y: pct(y),
        label: format!("{label} {}%", pct(y)),
        color: color.to_string(),
    };

    let mut html = String::new();
    html.push_str(
        &Chart {
            y_max: Some(100.0),
            series: vec![Series::new(
                "pool use",
                "#0969da",
                line(&|p| Some(p.utilization * 100.0)),
            )],
            bands: bands.clone(),
            rules: vec![
                rule(
                    config.critical_utilization,
                    "critical",
                    level_color(Level::Critical),
                ),
                rule(
                    config.warning_utilization,
                    "warning",
                    level_color(Level::Warning),
                ),
                rule(
                    config.warning_recovery,
                    "recovery",
                    level_color(Level::Normal),
                ),
            ],
            marks: marks.clone(),
            ..Chart::new("Pool use", "%", x)
        }
        .to_html(),
    );
    for class in Criticality::ALL.iter().rev() {
        let c = class.index();
        let names: Vec<&'static str> = points
            .iter()
            .flat_map(|p| p.requests.iter().map(|r| r.outcome))
            .fold(Vec::new(), |mut v, o| {
                if !v.contains(&o) {
                    v.push(o);
                }
                v
            });
        // Outcomes that never happened to this class stay out of the legend.
        let series = names
            .into_iter()
            .filter(|o| {
                points.iter().any(|p| {
                    p.requests
                        .iter()
                        .any(|r| r.outcome == *o && r.per_second[c] > 0.0)
                })
            })
            .map(|o| {
                Series::new(
                    &o.replace('_', " "),
                    outcome_color(o),
                    line(&|p| {
                        p.requests
                            .iter()
                            .find(|r| r.outcome == o)
                            .map(|r| r.per_second[c])
                    }),
                )
            })
            .collect();
        html.push_str(
            &Chart {
                series,
                bands: bands.clone(),
                marks: marks.clone(),
                empty_note: "no requests yet".into(),
                ..Chart::new(
                    &format!("Requests per second: {}", class.as_str().replace('_', "-")),
                    "",
                    x,
                )
            }
            .to_html(),
        );
    }
    let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
    html.push_str(
        &Chart {
            series: vec![
                Series::new("wait p50", "#1a7f37", line(&|p| ms(p.critical_wait_p50))),
                Series::new("wait p99", "#cf222e", line(&|p| ms(p.critical_wait_p99))),
                Series {
                    dashed: true,
                    ..Series::new("hold p99", "#8250df", line(&|p| ms(p.critical_hold_p99)))
                },
            ],
            bands: bands.clone(),
            marks: marks.clone(),
            empty_note: "no critical requests yet".into(),
            ..Chart::new("Critical latency, ms (acquire wait, hold)", "", x)
        }
        .to_html(),
    );
    let server_max = points.iter().rev().find_map(|p| p.server_max_connections);
    html.push_str(
        &Chart {
            series: vec![
                Series::new(
                    "server connections",
                    "#0969da",
                    line(&|p| p.server_connections.map(f64::from)),
                ),
                Series {
                    dashed: true,
                    ..Series::new(
                        "this pool in use",
                        "#57606a",
                        line(&|p| Some(p.in_use as f64)),
                    )
                },
            ],
            rules: server_max
                .map(|m| Rule {
                    y: f64::from(m),
                    label: format!("max_connections (usable) {m}"),
                    color: "#cf222e".into(),
                })
                .into_iter()
                .collect(),
            marks,
            empty_note: "the watchdog has not read the server yet".into(),
            ..Chart::new("Server connections", "", x)
        }
        .to_html(),
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_each_run_of_pressure() {
        let pts = [
            (0.0, Level::Normal),
            (1.0, Level::Warning),
            (2.0, Level::Warning),
            (3.0, Level::Critical),
            (4.0, Level::Normal),
            (5.0, Level::Warning),
        ];
        let b = level_bands(&pts);
        let spans: Vec<(f64, f64, &str)> =
            b.iter().map(|b| (b.from, b.to, b.label.as_str())).collect();
        assert_eq!(
            spans,
            [
                (1.0, 3.0, "level warning"),
                (3.0, 4.0, "level critical"),
                (5.0, 6.0, "level warning")
            ]
        );
    }

    #[test]
    fn unknown_outcomes_get_a_colour() {
        assert_eq!(outcome_color("served"), "#1a7f37");
        assert!(outcome_color("something_new").starts_with('#'));
    }
}
