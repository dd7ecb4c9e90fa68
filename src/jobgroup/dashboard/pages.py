"""Server-rendered HTML: the jobs page, the group page, and the fragments the page script
polls (with ETags) to update them live. Everything a user wrote (names, reasons, messages) is
escaped; no inline scripts or styles (the Content-Security-Policy forbids them)."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import urlencode

from jobgroup.dashboard import timeline
from jobgroup.dashboard.views import JOB_REFS, PAGE_SIZE, STATUS_FILTERS
from jobgroup.humanize import human_duration


def _ts(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


fmt_duration = human_duration  # one formatting of durations across the CLI and the page


def _dur(started: float | None, ended: float | None) -> str:
    """A duration that the script keeps ticking while it runs (so the HTML, and its ETag, do
    not change every second)."""
    if started is None:
        return '<span class="dur">-</span>'
    if ended is not None:
        return f'<span class="dur">{fmt_duration(ended - started)}</span>'
    return f'<span class="dur" data-start="{started}">running</span>'


def linked(text: str) -> str:
    """`text` escaped, with every "job 17" / "jobs 1, 2" it names (admission's "held by job
    17", "kept for job 4") made links to those jobs' pages."""
    out, at = [], 0
    for m in JOB_REFS.finditer(text):
        out.append(escape(text[at:m.start()]))
        ids = m.group(2).split(", ")
        out.append(m.group(1) + " " + ", ".join(
            f'<a class="job-ref" href="/jobs/{i}">{i}</a>' for i in ids))
        at = m.end()
    out.append(escape(text[at:]))
    return "".join(out)


def job_links(ids: list[int]) -> str:
    return ", ".join(f'<a class="job-ref" href="/jobs/{i}">job {i}</a>' for i in ids)


def badge(status: str) -> str:
    kind = "failed" if status.startswith("FAILED") else status.lower()
    return f'<span class="badge s-{escape(kind)}">{escape(status)}</span>'


def page(title: str, body: str, *, kind: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><link rel=\"stylesheet\" href=\"/static/style.css\">"
        "<script src=\"/static/app.js\" defer></script></head>"
        f"<body data-page=\"{kind}\"><header><a class=\"brand\" href=\"/\">jobgroup</a>"
        "<nav><a href=\"/\">Jobs</a><a href=\"/api/openapi.json\">API</a></nav></header>"
        f"<main>{body}</main></body></html>"
    )


def not_found(message: str) -> str:
    return page("Not found", f'<h1>Not found</h1><p class="reason">{escape(message)}</p>'
                f'<p><a href="/">All jobs</a></p>', kind="error")


def unauthorized() -> str:
    return page("Token required", (
        "<h1>Token required</h1><p>This dashboard asks for its token (it can launch commands "
        "as the user who runs it, so other users of this machine must not reach it). Open the "
        "URL that <code>jobgroup dashboard</code> printed (it ends in <code>?token=…</code>), "
        "or read the token from <code>$JOBGROUP_HOME/dashboard.token</code> on the machine "
        "that runs it.</p>"), kind="error")


def redirect(target: str, title: str = "Signing in") -> str:
    """A bare page that sends the browser on to `target` (a meta refresh: no script, allowed
    by the Content-Security-Policy). Used after `?token=` and by `--open`'s file: the next
    request then starts from the page itself, so the browser sends our SameSite=Strict cookie
    even when the user arrived from elsewhere (a file, another site)."""
    t = escape(target, quote=True)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"refresh\" content=\"0; url={t}\">"
            f"<title>{escape(title)}</title></head>"
            f"<body><p><a href=\"{t}\">Continue to the dashboard</a></p></body></html>")


# ---- jobs page ---------------------------------------------------------------------------------

JOB_COLUMNS = ("ID", "Name", "Status", "Infra", "Tasks", "Nodes", "Restarts", "Duration",
               "Submitted", "Reason")


def job_rows(jobs: list[dict]) -> str:
    """One light row per job (a page of 1,000 jobs must load in well under a second): numbers
    are aligned by column CSS, the status colour is the cell's class, durations of ended jobs
    are plain text."""
    if not jobs:
        return f'<tr class="empty"><td colspan="{len(JOB_COLUMNS)}">No jobs.</td></tr>'
    out = []
    for j in jobs:
        st = j["status"]
        kind = "failed" if st.startswith("FAILED") else st.lower()
        if j["started_at"] is None:
            dur = "-"
        elif j["ended_at"] is not None:
            dur = fmt_duration(j["ended_at"] - j["started_at"])
        else:
            dur = f'<span class="dur" data-start="{j["started_at"]}">running</span>'
        reason = linked(j["reason"]) if "job" in j["reason"] else escape(j["reason"])
        out.append(
            f'<tr data-id="{j["id"]}" data-status="{st}"><td>{j["id"]}</td>'
            f'<td><a href="/jobs/{j["id"]}">{escape(j["name"])}</a></td>'
            f'<td class="st st-{kind}">{st}</td><td class="infra">{escape(j["infra"])}</td>'
            f'<td>{j["num_tasks"]}</td><td>{j["num_nodes"]}</td>'
            f'<td>{j["restarts"]}</td><td>{dur}</td><td>{_ts(j["submitted_at"])}</td>'
            f'<td title="{escape(j["reason"], quote=True)}">{reason}</td></tr>'
        )
    return "".join(out)


def _query(status: str, q: str, limit: int, offset: int) -> str:
    params = {k: v for k, v in (("status", status if status != "all" else ""), ("q", q),
                                ("limit", limit if limit != PAGE_SIZE else ""),
                                ("offset", offset or "")) if v != ""}
    return urlencode(params)


def jobs_panel(jobs: list[dict], total: int, status: str, q: str, limit: int,
               offset: int) -> str:
    """The part of the jobs page that the script refreshes: the count, the table of this page
    of jobs and the links to the pages before and after it."""
    first, last = (offset + 1, offset + len(jobs)) if jobs else (0, 0)
    count = (f"{total} job(s)" if total <= len(jobs) and not offset
             else f"{first}–{last} of {total} job(s)")
    pager = []
    if offset > 0:
        prev = _query(status, q, limit, max(0, offset - limit))
        pager.append(f'<a id="page-prev" href="/?{prev}">← newer</a>')
    if offset + len(jobs) < total:
        nxt = _query(status, q, limit, offset + limit)
        pager.append(f'<a id="page-next" href="/?{nxt}">older →</a>')
    head = "".join(f"<th>{c}</th>" for c in JOB_COLUMNS)
    return (
        f'<p class="count" id="job-count" data-total="{total}">{count}</p>'
        f'<table class="jobs"><thead><tr>{head}</tr></thead>'
        f'<tbody id="jobs-rows">{job_rows(jobs)}</tbody></table>'
        f'<nav class="pager" id="pager">{" ".join(pager)}</nav>'
    )


def jobs_page(jobs: list[dict], total: int, status: str, q: str = "", limit: int = PAGE_SIZE,
              offset: int = 0) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>'
        for s in STATUS_FILTERS
    )
    keep = f'<input type="hidden" name="limit" value="{limit}">' if limit != PAGE_SIZE else ""
    body = (
        '<div class="bar"><h1>Jobs</h1>'
        '<form class="filter" id="jobs-form" method="get" action="/"><label>Status '
        f'<select name="status" id="status-filter">{options}</select></label> '
        '<input type="search" name="q" id="job-search" placeholder="Search id, name, reason" '
        f'value="{escape(q, quote=True)}" autocomplete="off">{keep}'
        '<noscript><button>Filter</button></noscript></form></div>'
        f'<div id="jobs-live" data-fragment="/fragments/jobs?{_query(status, q, limit, offset)}">'
        f'{jobs_panel(jobs, total, status, q, limit, offset)}</div>'
    )
    return page("jobgroup — jobs", body, kind="jobs")


# ---- group page --------------------------------------------------------------------------------

def _gb(x: float) -> str:
    return f"{x:g} GB"


def resources_text(r: dict | None) -> str:
    """`2 CPU · 4 GB · 1× H100 [0]`, `best-effort`, or `-` (unknown)."""
    if r is None:
        return "-"
    if r["best_effort"]:
        return "best-effort"
    bits = []
    if r["cpus"]:
        bits.append(f'{r["cpus"]:g} CPU')
    if r["memory_gb"]:
        bits.append(_gb(r["memory_gb"]))
    if r["gpus"]:
        gpus = f'{r["gpus"]}× {r["gpu_type"] or "GPU"}'
        if r["gpu_indices"]:
            gpus += " [" + ",".join(str(i) for i in r["gpu_indices"]) + "]"
        bits.append(gpus)
    return " · ".join(bits)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def usage_text(u: dict | None) -> str:
    """`CPU 0.93 · 76.0 MiB / 1.0 GiB · GPU 0: 2.0 GiB` (cores in use, memory and its limit,
    GPU memory), `-` when unknown."""
    if u is None:
        return "-"
    bits = []
    if u["cpu_cores"] is not None:
        bits.append(f'CPU {u["cpu_cores"]:.2f}')
    elif u["cpu_seconds"] is not None:
        bits.append(f'CPU {u["cpu_seconds"]:.1f} s')
    if u["memory_bytes"] is not None:
        mem = _bytes(u["memory_bytes"])
        if u.get("memory_limit_bytes"):
            mem += " / " + _bytes(u["memory_limit_bytes"])
        bits.append(mem)
    for gpu, used in sorted((u.get("gpus") or {}).items()):
        bits.append(f"GPU {gpu}: {_bytes(used)}")
    return " · ".join(bits) or "-"


def _node_rows(task: dict, colour: int) -> str:
    rows = []
    for n in task.get("nodes", []):
        ready = n["readiness"]
        rcls = "ok" if ready in ("ready", "started") else "bad" if ready.startswith("failed") else ""
        state = n.get("state", n["phase"])
        res = n.get("resources")
        res_title = ("reserved on this machine" if res and res["reserved"]
                     else "what its task asks for (first alternative)")
        use = n.get("usage")
        use_title = (f'{use["processes"]} process(es), from {use["source"]}'
                     + (f'; {use["note"]}' if use.get("note") else "")) if use else ""
        rows.append(
            f'<tr class="node" data-task="{escape(task["name"])}" data-rank="{n["rank"]}">'
            f'<td class="indent"><span class="c{colour}">{escape(task["name"])}-{n["rank"]}</span>'
            f'</td><td><span class="phase p-{escape(state.replace(" ", "-"))}">{escape(state)}'
            f'</span>'
            f'{" <span class=attempt>attempt " + str(n["attempt"]) + "</span>" if n["attempt"] > 1 else ""}'
            f'</td><td class="mono">{escape(n["address"]) or "-"}</td>'
            f'<td class="mono">{escape(n["hostname"]) or "-"}</td>'
            f'<td class="res" title="{res_title}">{escape(resources_text(res))}</td>'
            f'<td class="use" title="{escape(use_title)}">{escape(usage_text(use))}</td>'
            f'<td class="num">{n["restarts"]}</td><td class="{rcls}">{escape(ready)}</td>'
            f'<td>{escape(n["exit"]) or "-"}</td>'
            f'<td class="num">{_dur(n["started_at"], n["ended_at"])}</td></tr>'
        )
    return "".join(rows)


def tasks_table(job: dict) -> str:
    rows = []
    for t in job["tasks"]:
        colour = t["index"] % 6
        role = "" if not job.get("has_auxiliaries") else (" [P]" if t["primary"] else "")
        probe = "probe" if t.get("readiness_probe") else ""
        rows.append(
            f'<tr class="task" data-task="{escape(t["name"])}" data-status="{t["status"]}">'
            f'<td><b class="c{colour}">{escape(t["name"])}</b>{escape(role)}</td>'
            f'<td>{badge(t["status"])}</td><td colspan="4" class="reason">{linked(t["reason"])}</td>'
            f'<td class="num">{t["restarts"]}</td><td>{probe}</td><td></td>'
            f'<td class="num">{_dur(t["started_at"], t["ended_at"])}</td></tr>'
        )
        rows.append(_node_rows(t, colour))
    return (
        '<table class="nodes"><thead><tr><th>Task / node</th><th>Status</th><th>Address</th>'
        '<th>Hostname</th><th>Resources</th><th>Use now</th><th>Restarts</th><th>Readiness</th>'
        f'<th>Exit</th><th>Duration</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def waits_text(job: dict) -> str:
    """Links between a pending job and the jobs that hold what it waits for, both ways."""
    out = []
    if job.get("blocked_by"):
        out.append(f'<p class="waits" id="blocked-by">Waits for resources held by '
                   f'{job_links(job["blocked_by"])}.</p>')
    if job.get("blocking"):
        out.append(f'<p class="waits" id="blocking">Holds what {job_links(job["blocking"])} '
                   f'wait(s) for.</p>')
    return "".join(out)


def stop_notes(job: dict, events: list[dict]) -> str:
    """Why nodes were stopped and why the group ended, under the timeline."""
    t0 = events[0]["at"] if events else job["submitted_at"]
    items, seen = [], set()
    for e in events:
        if e["kind"] in ("stop", "probe-failed", "cancel-requested") and len(items) < 12:
            who = "group" if e["task"] is None else (
                e["task"] if e["rank"] is None else f'{e["task"]}-{e["rank"]}')
            key = (e["kind"], e["message"])
            if key in seen:
                continue  # one line per reason (a 100-node task is stopped for one reason)
            seen.add(key)
            what = {"stop": "stopped", "probe-failed": "readiness probe failed",
                    "cancel-requested": "cancel requested"}[e["kind"]]
            items.append(f'<li><span class="mono">+{e["at"] - t0:.1f}s</span> '
                         f'{escape(who)} {what}: {escape(e["message"])}</li>')
    if job["done"]:
        items.append(f'<li><b>{escape(job["status"])}</b>: {linked(job["reason"])}</li>')
    return f'<ul class="stops">{"".join(items)}</ul>' if items else ""


def group_live(job: dict, events: list[dict], now: float) -> str:
    """The parts of the group page that change: header, tasks/nodes, timeline."""
    done = "1" if job["done"] else "0"
    cancel = "" if job["done"] else (
        f'<button class="cancel-btn danger" data-job="{job["id"]}" '
        f'data-name="{escape(job["name"])}">Cancel</button>'
    )
    if job["cancel_requested"] and not job["done"]:
        cancel = '<span class="muted">cancelling…</span>'
    restarts = (f' · group restarts {job["group_restarts"]}' if job["group_restarts"] else "")
    return (
        f'<div class="live-root" data-done="{done}" data-status="{job["status"]}">'
        f'<div class="bar"><h1>{escape(job["name"])} <span class="muted">job {job["id"]}</span>'
        f'</h1>{badge(job["status"])}{cancel}</div>'
        f'<p class="reason" id="job-reason">{linked(job["reason"])}</p>{waits_text(job)}'
        f'<p class="facts">infra <b id="job-infra">{escape(job["infra"])}</b> · '
        f'submitted {_ts(job["submitted_at"])} · duration '
        f'{_dur(job["started_at"], job["ended_at"])} · {job["num_tasks"]} task(s), '
        f'{job["num_nodes"]} node(s) · {escape(job["execution"])}'
        f'{" · isolation " + escape(job["isolation"]) if job["isolation"] else ""}{restarts}</p>'
        f'<h2>Tasks and nodes</h2>{tasks_table(job)}'
        f'<h2>Timeline</h2><div class="timeline-wrap">{timeline.render(job, events, now)}</div>'
        '<p class="legend"><span class="k setup"></span>setup <span class="k run"></span>run '
        '<span class="k ready"></span>ready <span class="k ok"></span>exit 0 '
        '<span class="k bad"></span>failed exit <span class="k stop"></span>stopped '
        '<span class="k restart"></span>restart <span class="k retry"></span>run, later attempt</p>'
        f'{stop_notes(job, events)}</div>'
    )


def group_page(job: dict, events: list[dict], now: float) -> str:
    options = "".join(f'<option value="{escape(t["name"])}">{escape(t["name"])}</option>'
                      for t in job["tasks"])
    body = (
        '<div id="flash" class="flash" hidden></div>'
        f'<div id="live" data-fragment="/fragments/jobs/{job["id"]}">'
        f'{group_live(job, events, now)}</div>'
        '<div class="bar"><h2>Logs</h2><label>Task <select id="task-filter">'
        f'<option value="">all tasks</option>{options}</select></label>'
        '<label><input type="checkbox" id="autoscroll" checked> follow</label>'
        '<span class="muted" id="log-state"></span></div>'
        f'<div id="logs" class="logs" data-job="{job["id"]}"></div>'
    )
    return page(f"{job['name']} (job {job['id']}) — jobgroup", body, kind="group")
