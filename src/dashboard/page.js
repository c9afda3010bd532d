(function () {
  "use strict";
  var token = new URLSearchParams(window.location.search).get("token");
  var base = window.location.pathname.replace(/\/+$/, "");
  var url = base + "/status";
  var chartsUrl = base + "/charts";
  var refresh = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  var $ = function (id) { return document.getElementById(id); };
  var esc = function (s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  };
  var pct = function (u) { return Math.round((u || 0) * 100); };

  function card(i) {
    var s = '<article class="incident sev-' + esc(i.peak_severity) + '"><h3>' + esc(i.title) +
      '</h3><p class="subject">' + esc(i.subject) + "</p><p>Peak: " + i.peak_in_use + "/" +
      i.max_size + " connections (" + pct(i.peak_utilization) + "%), level " + esc(i.peak_level);
    if (i.recovery_ms != null) { s += " · recovered in " + (i.recovery_ms / 1000).toFixed(1) + " s"; }
    s += "</p>";
    if (i.actions.length) {
      s += '<ul class="actions">' + i.actions.map(function (a) { return "<li>" + esc(a) + "</li>"; }).join("") + "</ul>";
    }
    s += '<p class="impact">' + esc(i.impact) + "</p>";
    if (i.analysis) {
      s += '<details class="analysis"' + (i.active ? " open" : "") + "><summary>Analysis (" +
        esc(i.analysis.kind) + ")</summary><pre>" + esc(i.analysis.text) + "</pre></details>";
    } else if (i.active) {
      s += '<p class="muted">Analysis is written when the incident closes.</p>';
    } else {
      s += '<p class="muted">No analysis yet.</p>';
    }
    return s + "</article>";
  }

  function render(d) {
    var p = d.pool;
    $("status").className = "status level-" + p.level;
    $("level").textContent = p.level;
    // `breaker` is the gate's stable JSON name: closed, open or half_open.
    $("gate").textContent = { closed: "direct", open: "deferred", half_open: "ramping" }[p.breaker] || p.breaker;
    $("updated").textContent = "updated " + d.generated_at;
    $("pool-fill").style.width = Math.min(100, pct(p.utilization)) + "%";
    $("pool-text").textContent = "Connection pool: " + p.in_use + "/" + p.max_size + " (" +
      pct(p.utilization) + "%) · queued " + p.queued.total + " (critical " + p.queued.critical +
      ", standard " + p.queued.standard + ", non-critical " + p.queued.non_critical +
      ") · reserve " + p.reserve;
    $("server-text").textContent = d.server
      ? "Server: " + pct(d.server.utilization) + "% of connections in use, " + pct(d.server.headroom) + "% headroom"
      : "Server: not reported";
    $("active").innerHTML = d.active_incident ? card(d.active_incident) : '<p class="quiet">No active issues.</p>';
    $("recent").innerHTML = d.recent_incidents.length
      ? d.recent_incidents.map(card).join("")
      : '<p class="quiet">No incidents recorded yet.</p>';
    var st = d.stats_24h;
    $("stats").innerHTML = [
      ["Timeouts prevented", st.timeouts_prevented],
      ["Invalid transitions blocked", st.transitions_blocked],
      ["Connection pool recoveries", st.pool_recoveries],
      ["Auto-retries (queued, then retried)", st.auto_retries],
      ["Requests refused (503)", st.requests_shed],
      ["Requests rate-limited (429)", st.rate_limited]
    ].map(function (x) { return '<div class="stat"><b>' + x[1] + "</b><span>" + esc(x[0]) + "</span></div>"; }).join("");
    $("events").innerHTML = d.events.length ? d.events.map(function (e) {
      return '<tr class="sev-' + esc(e.severity) + '"><td>' + esc(e.at.substring(11, 19)) +
        '</td><td><span class="sev">' + esc(e.severity) + "</span></td><td>" + esc(e.kind) +
        "</td><td>" + esc(e.message) + "</td></tr>";
    }).join("") : '<tr><td colspan="4" class="quiet">No events yet.</td></tr>';
    $("daily").textContent = d.daily_summary;
  }

  function get(u, accept) {
    var headers = { "Accept": accept };
    if (token) { headers["Authorization"] = "Bearer " + token; }
    return fetch(u, { headers: headers, cache: "no-store", credentials: "omit" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return accept === "application/json" ? r.json() : r.text();
      });
  }

  function tick() {
    Promise.all([get(url, "application/json"), get(chartsUrl, "text/html")])
      .then(function (both) {
        var d = both[0];
        render(d);
        // The charts are SVG rendered by the server from its own history ring.
        $("charts").innerHTML = both[1];
        document.body.setAttribute("data-rendered", "script");
        $("conn").className = "muted";
        $("conn").textContent = "Live: refreshes every " + refresh / 1000 + " s.";
      })
      .catch(function (e) {
        $("conn").className = "stale";
        $("conn").textContent = "Refresh failed (" + e.message + "); showing the last data.";
      })
      .then(function () { setTimeout(tick, refresh); });
  }
  tick();
})();
