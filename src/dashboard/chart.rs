//! A small SVG line chart, rendered on the server: series with gaps, background bands,
//! horizontal rules and vertical marks. No script, no external assets; the same charts serve
//! the live dashboard and offline reports.
//!
//! Every drawn series carries `data-series` (its name) and `data-points` (how many points
//! it drew), so a test or a script can check what a chart holds without parsing paths.
//!
//! ```
//! use poolguard::dashboard::chart::{Chart, Series, XAxis};
//!
//! let chart = Chart {
//!     series: vec![Series::new("served", "#1a7f37", vec![(0.0, Some(3.0)), (1.0, Some(5.0))])],
//!     ..Chart::new("Requests per second", "/s", XAxis::Offset { from: 0.0, to: 10.0 })
//! };
//! let svg = chart.to_html();
//! assert!(svg.contains(r#"data-series="served" data-points="2""#));
//! ```

use super::page::esc;
use std::fmt::Write as _;

const W: f64 = 560.0;
const H: f64 = 180.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// The horizontal axis: its range and how its ticks are labelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// x is Unix time in seconds, labelled as UTC wall-clock time (`HH:MM:SS`).
    Clock {
        /// Left edge.
        from: f64,
        /// Right edge.
        to: f64,
    },
    /// x is seconds from a start, labelled `Ns`.
    Offset {
        /// Left edge.
        from: f64,
        /// Right edge.
        to: f64,
    },
}

impl XAxis {
    fn range(self) -> (f64, f64) {
        let (from, to) = match self {
            XAxis::Clock { from, to } | XAxis::Offset { from, to } => (from, to),
        };
        (from, if to > from { to } else { from + 1.0 })
    }

    fn label(self, x: f64) -> String {
        match self {
            XAxis::Clock { .. } => {
                let s = x.rem_euclid(86_400.0) as u64;
                format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            }
            XAxis::Offset { .. } if (x - x.round()).abs() < 0.05 => format!("{}s", x.round()),
            XAxis::Offset { .. } => format!("{x:.1}s"),
        }
    }
}

/// One line. A point with `None` is a gap: the line stops and starts again after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend and as `data-series`.
    pub name: String,
    /// A CSS colour.
    pub color: String,
    /// `(x, y)`, in x order.
    pub points: Vec<(f64, Option<f64>)>,
    /// Drawn dashed (a reference, or the second of two runs).
    pub dashed: bool,
}

impl Series {
    /// A solid line.
    pub fn new(name: &str, color: &str, points: Vec<(f64, Option<f64>)>) -> Self {
        Self {
            name: name.to_string(),
            color: color.to_string(),
            points,
            dashed: false,
        }
    }
}

/// A background band over `from..to` on the x axis (a level, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Left edge.
    pub from: f64,
    /// Right edge.
    pub to: f64,
    /// A CSS colour, drawn translucent.
    pub color: String,
    /// What the band means, for the legend and its tooltip.
    pub label: String,
}

/// A horizontal line at `y` (a threshold, a limit).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Where.
    pub y: f64,
    /// Written at its right end.
    pub label: String,
    /// A CSS colour.
    pub color: String,
}

/// A vertical line at `x` (an incident opening or closing).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where.
    pub x: f64,
    /// Written at its top.
    pub label: String,
    /// A CSS colour.
    pub color: String,
}

/// One chart. Build it with [`Chart::new`] and struct update syntax.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The caption.
    pub title: String,
    /// Appended to the y tick labels (`%`, `/s`, ` ms`).
    pub unit: String,
    /// The x axis.
    pub x: XAxis,
    /// The top of the y axis; `None`: from the data (and the rules), rounded up.
    pub y_max: Option<f64>,
    /// The lines.
    pub series: Vec<Series>,
    /// Background bands.
    pub bands: Vec<Band>,
    /// Horizontal lines.
    pub rules: Vec<Rule>,
    /// Vertical lines.
    pub marks: Vec<Mark>,
    /// Shown instead of an empty plot when no series has a point.
    pub empty_note: String,
}

impl Chart {
    /// An empty chart over `x`.
    pub fn new(title: &str, unit: &str, x: XAxis) -> Self {
        Self {
            title: title.to_string(),
            unit: unit.to_string(),
            x,
            y_max: None,
            series: Vec::new(),
            bands: Vec::new(),
            rules: Vec::new(),
            marks: Vec::new(),
            empty_note: "no data yet".to_string(),
        }
    }

    /// The top of the y axis and the step between its ticks.
    fn y_scale(&self) -> (f64, f64) {
        let data = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            .chain(self.rules.iter().map(|r| r.y))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        match self.y_max {
            Some(m) if m > 0.0 => (m, m / 4.0),
            _ if data <= 0.0 => (1.0, 0.25),
            _ => (nice_max(data), nice_step(data / 4.0)),
        }
    }

    /// The chart as an HTML `<figure>` holding an inline SVG and its legend.
    pub fn to_html(&self) -> String {
        let (x0, x1) = self.x.range();
        let (y1, step) = self.y_scale();
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x.clamp(x0, x1) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (y.clamp(0.0, y1) / y1) * ph;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
            esc(&self.title)
        );
        for b in &self.bands {
            let (a, z) = (sx(b.from), sx(b.to));
            if z > a {
                let _ = write!(
                    svg,
                    r#"<rect class="band" x="{a:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{}" fill-opacity="0.16"><title>{}</title></rect>"#,
                    z - a,
                    esc(&b.color),
                    esc(&b.label)
                );
            }
        }
        // Grid and y ticks.
        let ticks = (y1 / step).round() as usize;
        for i in 0..=ticks {
            let v = step * i as f64;
            let y = sy(v);
            let _ = write!(
                svg,
                r##"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d7de" stroke-width="0.6"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 4.0,
                y + 3.5,
                esc(&format!("{}{}", tick(v), self.unit))
            );
        }
        for i in 0..=4 {
            let x = x0 + (x1 - x0) * i as f64 / 4.0;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                sx(x),
                H - 7.0,
                self.x.label(x)
            );
        }
        for r in &self.rules {
            let y = sy(r.y);
            let _ = write!(
                svg,
                r#"<line class="rule" data-rule="{}" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{}" stroke-width="1.2" stroke-dasharray="5 3"/>"#,
                esc(&r.label),
                W - RIGHT,
                esc(&r.color),
            );
        }
        for m in &self.marks {
            let x = sx(m.x);
            let _ = write!(
                svg,
                r#"<line class="mark" data-mark="{l}" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="{c}" stroke-width="1.2" stroke-dasharray="2 2"/><text class="mark-label" x="{:.1}" y="{:.1}" fill="{c}">{l}</text>"#,
                TOP + ph,
                x + 3.0,
                TOP + 9.0,
                l = esc(&m.label),
                c = esc(&m.color),
            );
        }
        let mut drawn = 0;
        for s in &self.series {
            let mut d = String::new();
            let mut n = 0;
            let mut pen_down = false;
            for &(x, y) in &s.points {
                match y.filter(|v| v.is_finite()) {
                    Some(y) => {
                        let _ = write!(
                            d,
                            "{}{:.1},{:.1}",
                            if pen_down { "L" } else { "M" },
                            sx(x),
                            sy(y)
                        );
                        pen_down = true;
                        n += 1;
                    }
                    None => pen_down = false,
                }
            }
            if n == 0 {
                continue;
            }
            drawn += 1;
            let _ = write!(
                svg,
                r#"<path class="series" data-series="{}" data-points="{n}" d="{d}" fill="none" stroke="{}" stroke-width="1.8" stroke-linejoin="round"{}/>"#,
                esc(&s.name),
                esc(&s.color),
                if s.dashed {
                    r#" stroke-dasharray="6 3""#
                } else {
                    ""
                },
            );
        }
        if drawn == 0 {
            let _ = write!(
                svg,
                r#"<text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                LEFT + pw / 2.0,
                TOP + ph / 2.0,
                esc(&self.empty_note)
            );
        }
        svg.push_str("</svg>");
        let mut legend = String::new();
        for s in self
            .series
            .iter()
            .filter(|s| s.points.iter().any(|p| p.1.is_some()))
        {
            let _ = write!(
                legend,
                r#"<span><i style="background:{}"{}></i>{}</span>"#,
                esc(&s.color),
                if s.dashed { r#" class="dashed""# } else { "" },
                esc(&s.name)
            );
        }
        for r in &self.rules {
            let _ = write!(
                legend,
                r#"<span><i class="rule" style="border-color:{}"></i>{}</span>"#,
                esc(&r.color),
                esc(&r.label)
            );
        }
        let mut seen = Vec::new();
        for b in &self.bands {
            if !seen.contains(&&b.label) {
                seen.push(&b.label);
                let _ = write!(
                    legend,
                    r#"<span><i class="band" style="background:{}"></i>{}</span>"#,
                    esc(&b.color),
                    esc(&b.label)
                );
            }
        }
        format!(
            r#"<figure class="chart" data-chart="{}" data-series-drawn="{drawn}"><figcaption>{}</figcaption><div class="plot">{svg}</div><div class="legend">{legend}</div></figure>"#,
            esc(&slug(&self.title)),
            esc(&self.title),
        )
    }
}

/// A lower-case, dash-separated name for `title`.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The top of the y axis a chart picks for data up to `max`: set it as [`Chart::y_max`] on
/// charts that must share an axis.
pub fn nice_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    let step = nice_step(max / 4.0);
    step * (max / step).ceil().max(1.0)
}

/// The smallest of 1, 2, 5 times a power of ten at or above `v` (0.25 for nothing).
fn nice_step(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 0.25;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v * 0.999_999)
        .unwrap_or(10.0 * p)
}

fn tick(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_axes_end_on_a_round_tick() {
        let scale = |max: f64| {
            Chart {
                series: vec![Series::new("a", "red", vec![(0.0, Some(max))])],
                ..Chart::new("t", "", XAxis::Offset { from: 0.0, to: 1.0 })
            }
            .y_scale()
        };
        assert_eq!(scale(0.0), (1.0, 0.25));
        assert_eq!(scale(41.0), (60.0, 20.0));
        assert_eq!(scale(38.0), (40.0, 10.0));
        assert_eq!(scale(100.0), (100.0, 50.0));
        assert_eq!(scale(3.2), (4.0, 1.0));
    }

    #[test]
    fn gaps_split_the_line_and_count_only_drawn_points() {
        let chart = Chart {
            series: vec![Series::new(
                "a",
                "red",
                vec![
                    (0.0, Some(1.0)),
                    (1.0, None),
                    (2.0, Some(2.0)),
                    (3.0, Some(3.0)),
                ],
            )],
            ..Chart::new("Pool use <x>", "%", XAxis::Offset { from: 0.0, to: 3.0 })
        };
        let html = chart.to_html();
        assert!(html.contains(r#"data-points="3""#), "{html}");
        let d = html.split(" d=\"").nth(1).unwrap();
        assert_eq!(d.split('"').next().unwrap().matches('M').count(), 2);
        assert!(html.contains("Pool use &lt;x&gt;"));
        assert!(html.contains(r#"data-chart="pool-use-x""#));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let html = Chart::new(
            "Latency",
            " ms",
            XAxis::Clock {
                from: 0.0,
                to: 60.0,
            },
        )
        .to_html();
        assert!(html.contains("no data yet") && html.contains(r#"data-series-drawn="0""#));
        assert!(html.contains("00:01:00"));
    }
}
