//! The HTML page: the first snapshot rendered on the server (readable without JavaScript),
//! then refreshed by a small inline script that fetches the JSON. No external assets.

use super::snapshot::{EventView, IncidentView, Snapshot};
use super::stats::PreventionStats;
use std::fmt::Write as _;

const CSS: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(u: f64) -> i64 {
    (u * 100.0).round() as i64
}

/// The whole page for `snap`, with `charts` (the chart figures) under the header.
pub(crate) fn render(snap: &Snapshot, charts: &str) -> String {
    let p = &snap.pool;
    let level = p.level.as_str();
    let server = match &snap.server {
        Some(s) => format!(
            "Server: {}% of connections in use, {}% headroom",
            pct(s.utilization),
            pct(s.headroom)
        ),
        None => "Server: not reported".to_string(),
    };
    let active = match &snap.active_incident {
        Some(i) => incident_card(i),
        None => "<p class=\"quiet\">No active issues.</p>".to_string(),
    };
    let recent = if snap.recent_incidents.is_empty() {
        "<p class=\"quiet\">No incidents recorded yet.</p>".to_string()
    } else {
        snap.recent_incidents.iter().map(incident_card).collect()
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Self-Healing Dashboard</title>
<style>{CSS}</style>
</head>
<body data-refresh-ms="{refresh}">
<header id="status" class="status level-{level}">
<h1>Self-Healing System Dashboard</h1>
<div class="headline"><span id="level" class="badge">{level}</span>
<span>non-critical work <b id="gate">{gate}</b></span>
<span id="updated" class="muted">updated {updated}</span></div>
<div class="bar" title="connections in use"><div id="pool-fill" class="fill" style="width:{width}%"></div></div>
<div id="pool-text">{pool_text}</div>
<div id="server-text" class="muted">{server}</div>
</header>
<main>
<section class="wide"><h2>Last 15 minutes</h2><div id="charts" class="charts">{charts}</div></section>
<section><h2>Active issues</h2><div id="active">{active}</div></section>
<section><h2>Prevention stats (last 24 hours)</h2><div id="stats" class="stats">{stats}</div></section>
<section><h2>Recent incidents</h2><div id="recent">{recent}</div></section>
<section><h2>Daily report</h2><pre id="daily">{daily}</pre></section>
<section class="wide"><h2>Recent events</h2><table><thead><tr><th>Time (UTC)</th><th>Severity</th><th>Kind</th><th>Message</th></tr></thead><tbody id="events">{events}</tbody></table></section>
</main>
<footer class="muted" id="conn">Live: refreshes every {secs} s.</footer>
<script>{SCRIPT}</script>
</body>
</html>
"#,
        refresh = snap.refresh_ms,
        gate = p.non_critical_gate.describe(),
        updated = esc(&snap.generated_at),
        width = pct(p.utilization).clamp(0, 100),
        pool_text = esc(&pool_text(snap)),
        server = esc(&server),
        stats = stats_html(&snap.stats_24h),
        events = events_rows(&snap.events),
        daily = esc(&snap.daily_summary),
        secs = snap.refresh_ms as f64 / 1000.0,
    )
}

fn pool_text(snap: &Snapshot) -> String {
    let p = &snap.pool;
    format!(
        "Connection pool: {}/{} ({}%) · queued {} (critical {}, standard {}, non-critical {}) · reserve {}",
        p.in_use,
        p.max_size,
        pct(p.utilization),
        p.queued.total,
        p.queued.critical,
        p.queued.standard,
        p.queued.non_critical,
        p.reserve
    )
}

fn incident_card(i: &IncidentView) -> String {
    let mut s = format!(
        "<article class=\"incident sev-{sev}\"><h3>{title}</h3><p class=\"subject\">{subject}</p>",
        sev = i.peak_severity.as_str(),
        title = esc(&i.title),
        subject = esc(&i.subject),
    );
    let _ = write!(
        s,
        "<p>Peak: {}/{} connections ({}%), level {}",
        i.peak_in_use,
        i.max_size,
        pct(i.peak_utilization),
        i.peak_level.as_str()
    );
    if let Some(ms) = i.recovery_ms {
        let _ = write!(s, " · recovered in {:.1} s", ms as f64 / 1000.0);
    }
    s.push_str("</p>");
    if !i.actions.is_empty() {
        s.push_str("<ul class=\"actions\">");
        for a in &i.actions {
            let _ = write!(s, "<li>{}</li>", esc(a));
        }
        s.push_str("</ul>");
    }
    let _ = write!(s, "<p class=\"impact\">{}</p>", esc(&i.impact));
    match &i.analysis {
        Some(a) => {
            let kind = serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = write!(
                s,
                "<details class=\"analysis\"{open}><summary>Analysis ({kind})</summary><pre>{text}</pre></details>",
                open = if i.active { " open" } else { "" },
                kind = esc(&kind),
                text = esc(&a.text),
            );
        }
        None if i.active => {
            s.push_str("<p class=\"muted\">Analysis is written when the incident closes.</p>")
        }
        None => s.push_str("<p class=\"muted\">No analysis yet.</p>"),
    }
    s.push_str("</article>");
    s
}

fn stats_html(st: &PreventionStats) -> String {
    [
        ("Timeouts prevented", st.timeouts_prevented),
        ("Invalid transitions blocked", st.transitions_blocked),
        ("Connection pool recoveries", st.pool_recoveries),
        ("Auto-retries (queued, then retried)", st.auto_retries),
        ("Requests refused (503)", st.requests_shed),
        ("Requests rate-limited (429)", st.rate_limited),
    ]
    .iter()
    .map(|(label, n)| format!("<div class=\"stat\"><b>{n}</b><span>{label}</span></div>"))
    .collect()
}

fn events_rows(events: &[EventView]) -> String {
    if events.is_empty() {
        return "<tr><td colspan=\"4\" class=\"quiet\">No events yet.</td></tr>".to_string();
    }
    events
        .iter()
        .map(|e| {
            format!(
                "<tr class=\"sev-{sev}\"><td>{at}</td><td><span class=\"sev\">{sev}</span></td><td>{kind}</td><td>{msg}</td></tr>",
                at = esc(e.at.get(11..19).unwrap_or(&e.at)),
                sev = e.severity.as_str(),
                kind = esc(&e.kind),
                msg = esc(&e.message),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
