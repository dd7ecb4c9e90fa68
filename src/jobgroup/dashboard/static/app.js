// jobgroup dashboard: live updates for the server-rendered pages (no framework, no build).
// - [data-fragment] elements are refreshed from their URL every second with If-None-Match
//   (the server answers 304 when nothing changed); polling pauses while the tab is hidden.
// - durations of running things tick here, so the server's HTML (and its ETag) stays put.
// - the group page follows its logs over Server-Sent Events, filtered by task.
(function () {
  "use strict";
  var POLL_MS = 1000;

  function fmtDuration(s) {
    if (s < 10) return s.toFixed(1) + "s";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }

  function tickDurations() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".dur[data-start]").forEach(function (el) {
      el.textContent = fmtDuration(Math.max(0, now - parseFloat(el.dataset.start)));
    });
  }

  function poller(el, onUpdate) {
    var etag = null, timer = null, stopped = false;
    function schedule() { if (!stopped) timer = setTimeout(tick, POLL_MS); }
    function tick() {
      timer = null;
      if (document.hidden) { schedule(); return; }
      var headers = etag ? { "If-None-Match": etag } : {};
      fetch(el.dataset.fragment, { headers: headers, cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 200) {
            etag = r.headers.get("ETag");
            return r.text().then(function (html) {
              el.innerHTML = html;
              tickDurations();
              if (onUpdate && onUpdate(el) === false) stopped = true;
            });
          }
          if (r.status === 401 || r.status === 404) stopped = true;
        })
        .catch(function () { /* server restarting: try again */ })
        .then(schedule);
    }
    schedule();
    return {
      now: function () { etag = null; if (timer) clearTimeout(timer); stopped = false; tick(); },
    };
  }

  // ---- jobs page ------------------------------------------------------------------------------
  // The live part (count, rows, pager) is one fragment; the status filter and the search
  // (as you type) change its URL and the page's, and fetch it at once.
  function jobsPage() {
    var live = document.getElementById("jobs-live");
    var form = document.getElementById("jobs-form");
    var filter = document.getElementById("status-filter");
    var search = document.getElementById("job-search");
    var p = poller(live);
    var typing = null;
    function refresh() {
      var params = new URLSearchParams();
      if (filter.value !== "all") params.set("status", filter.value);
      if (search.value.trim()) params.set("q", search.value.trim());
      var limit = form.querySelector("input[name=limit]");
      if (limit) params.set("limit", limit.value);
      var qs = params.toString();
      live.dataset.fragment = "/fragments/jobs" + (qs ? "?" + qs : "");
      history.replaceState(null, "", "/" + (qs ? "?" + qs : ""));
      p.now();
    }
    filter.addEventListener("change", refresh);
    search.addEventListener("input", function () {
      clearTimeout(typing);
      typing = setTimeout(refresh, 200);
    });
    form.addEventListener("submit", function (ev) { ev.preventDefault(); clearTimeout(typing); refresh(); });
  }

  // ---- group page -----------------------------------------------------------------------------
  function flash(text, kind) {
    var el = document.getElementById("flash");
    el.textContent = text;
    el.className = "flash " + (kind || "");
    el.hidden = false;
  }

  function groupPage() {
    var live = document.getElementById("live");
    var p = poller(live, function (el) {
      var root = el.querySelector(".live-root");
      return !(root && root.dataset.done === "1");  // false: the job ended, stop polling
    });
    document.addEventListener("click", function (ev) {
      var btn = ev.target.closest(".cancel-btn");
      if (!btn) return;
      var id = btn.dataset.job;
      if (!window.confirm("Cancel job " + id + " (" + btn.dataset.name + ")? Every node will be stopped.")) return;
      btn.disabled = true;
      fetch("/api/v1/jobs/" + id + "/cancel", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: "{}",
      }).then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (res) {
          if (res[0] === 200) flash("Job " + id + ": " + res[1].result, "ok");
          else { flash("Cancel failed: " + (res[1].detail || res[0]), "bad"); btn.disabled = false; }
          p.now();
        })
        .catch(function (e) { flash("Cancel failed: " + e, "bad"); btn.disabled = false; });
    });
    followLogs();
  }

  function followLogs() {
    var pane = document.getElementById("logs");
    var filter = document.getElementById("task-filter");
    var auto = document.getElementById("autoscroll");
    var state = document.getElementById("log-state");
    var job = pane.dataset.job, es = null, width = 0, pending = [], frame = 0, ended = false;
    var MAX_LINES = 5000;
    var colours = {};
    Array.prototype.forEach.call(filter.options, function (o, i) { if (i > 0) colours[o.value] = (i - 1) % 6; });

    function flush() {
      frame = 0;
      var frag = document.createDocumentFragment();
      pending.forEach(function (l) {
        var div = document.createElement("div");
        div.className = "line";
        var pre = document.createElement("span");
        pre.className = "prefix c" + (colours[l.task] || 0);
        pre.textContent = l.prefix.padEnd(width);
        div.appendChild(pre);
        div.appendChild(document.createTextNode(" " + l.text));
        frag.appendChild(div);
      });
      pending = [];
      pane.appendChild(frag);
      while (pane.childElementCount > MAX_LINES) pane.removeChild(pane.firstChild);
      if (auto.checked) pane.scrollTop = pane.scrollHeight;
    }

    function open() {
      if (es) es.close();
      pane.textContent = "";
      pending = [];
      ended = false;
      var url = "/api/v1/jobs/" + job + "/logs/stream" + (filter.value ? "?task=" + encodeURIComponent(filter.value) : "");
      state.textContent = "following…";
      es = new EventSource(url, { withCredentials: true });
      es.addEventListener("start", function (e) { width = JSON.parse(e.data).width; });
      es.onmessage = function (e) {
        pending.push(JSON.parse(e.data));
        if (!frame) frame = requestAnimationFrame(flush);
      };
      es.addEventListener("end", function () {
        ended = true;
        es.close();
        flush();
        state.textContent = "end of logs (the selected tasks have ended)";
      });
      es.onerror = function () {
        if (ended) return;
        es.close();
        state.textContent = "disconnected; retrying…";
        setTimeout(open, 2000);
      };
    }
    filter.addEventListener("change", open);
    open();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var kind = document.body.dataset.page;
    tickDurations();
    setInterval(tickDurations, 1000);
    if (kind === "jobs") jobsPage();
    else if (kind === "group") groupPage();
  });
})();
