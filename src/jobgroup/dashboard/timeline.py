"""A job group's timeline as inline SVG: a pure function of the job (with its nodes) and its
events, so it is tested without a browser and rendered without JavaScript.

One lane per node (`task-rank`), plus a lane for the group. On a node's lane: its setup and run
as bars (each attempt its own bar), ready, exit (green for code 0, red otherwise), stop (with
its reason) and restart marks. On the group's lane: its status over time, and the cancel request
and the outcome (the stop reason) as labelled vertical lines. Every mark has a <title> (the
event's message), shown on hover.
"""

from __future__ import annotations

import math
from html import escape

WIDTH = 1000
LABEL = 150  # left column: lane names
RIGHT = 20
TOP = 28  # axis labels
LANE = 22
MAX_LANES = 200  # a 1,000-node group gets a summary line, not a 22,000-pixel picture

STATUS_FILL = {
    "PENDING": "#c9ced6", "STARTING": "#9cc3ea", "RUNNING": "#4a90d9",
    "RECOVERING": "#f0ad4e", "CANCELLING": "#b58fd6", "SUCCEEDED": "#3fae6a",
    "CANCELLED": "#8e8e8e",
}
FAILED_FILL = "#d9534f"
# Which mark is on top where several meet (a failed exit is never hidden by its restart).
_PRIORITY = {"m-note": 0, "m-restart": 1, "m-ready": 2, "m-stop": 3, "m-exit-ok": 4,
             "m-exit-stopped": 4, "m-probe": 5, "m-exit-bad": 6}
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
          14400, 21600, 43200, 86400)


def _fmt_offset(seconds: float) -> str:
    if seconds >= 3600:
        return f"+{seconds / 3600:g}h"
    if seconds >= 60:
        return f"+{seconds / 60:g}m"
    return f"+{seconds:g}s"


def _step(span: float) -> float:
    for s in _STEPS:
        if span / s <= 8:
            return s
    return _STEPS[-1] * math.ceil(span / _STEPS[-1] / 8)


def _fill(status: str) -> str:
    return FAILED_FILL if status.startswith("FAILED") else STATUS_FILL.get(status, "#c9ced6")


class _Canvas:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1.0)
        self.parts: list[str] = []  # background, grid, labels
        self.bars: list[str] = []
        self.marks: list[tuple[int, str]] = []  # drawn over every bar, by priority

    def x(self, t: float) -> float:
        frac = (min(max(t, self.t0), self.t1) - self.t0) / (self.t1 - self.t0)
        return round(LABEL + frac * (WIDTH - LABEL - RIGHT), 1)

    def add(self, s: str) -> None:
        self.parts.append(s)

    def bar(self, y: float, a: float, b: float, cls: str, title: str, fill: str | None = None) -> None:
        x0, x1 = self.x(a), self.x(b)
        f = f' fill="{fill}"' if fill else ""
        self.bars.append(f'<rect class="{cls}" x="{x0}" y="{y + 4}" width="{max(x1 - x0, 1.5):.1f}" '
                 f'height="{LANE - 8}"{f}><title>{escape(title)}</title></rect>')

    def mark(self, y: float, t: float, cls: str, title: str) -> None:
        x, cy = self.x(t), y + LANE / 2
        shapes = {
            "m-ready": f'<path d="M{x} {cy - 6}L{x + 6} {cy}L{x} {cy + 6}L{x - 6} {cy}Z"/>',
            "m-exit-ok": f'<circle cx="{x}" cy="{cy}" r="4.5"/>',
            "m-exit-bad": f'<circle cx="{x}" cy="{cy}" r="5"/>',
            "m-exit-stopped": f'<circle cx="{x}" cy="{cy}" r="4"/>',
            "m-stop": f'<rect x="{x - 4.5}" y="{cy - 4.5}" width="9" height="9"/>',
            "m-restart": f'<path d="M{x - 5} {cy + 5}L{x} {cy - 6}L{x + 5} {cy + 5}Z"/>',
            "m-probe": f'<path d="M{x - 5} {cy - 5}L{x + 5} {cy + 5}M{x + 5} {cy - 5}L{x - 5} {cy + 5}"/>',
            "m-note": f'<circle cx="{x}" cy="{cy}" r="3"/>',
        }
        self.marks.append((_PRIORITY.get(cls, 0),
                           f'<g class="mark {cls}">{shapes[cls]}<title>{escape(title)}</title></g>'))


def _lane_events(events: list[dict]) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for e in events:
        if e["task"] is not None and e["rank"] is not None:
            out.setdefault((e["task"], e["rank"]), []).append(e)
    return out


def _draw_node(c: _Canvas, y: float, evs: list[dict], end: float) -> None:
    open_: dict[str, float] = {}
    attempt = 1
    stop_reason = ""
    for e in evs:
        kind, at, msg = e["kind"], e["at"], e["message"]
        phase, _, what = kind.partition("-")
        if phase in ("setup", "run") and what == "started":
            open_[phase] = at
        elif phase in ("setup", "run") and what == "ended":
            start = open_.pop(phase, at)
            label = f"{phase}{'' if attempt == 1 else f' (attempt {attempt})'}: {msg}"
            c.bar(y, start, at, f"bar-{phase}{' retry' if attempt > 1 else ''}", label)
            ok = msg.strip() == "exit code 0"
            if stop_reason and not ok:
                c.mark(y, at, "m-exit-stopped", f"{phase} ended: {msg} (stopped: {stop_reason})")
            elif phase == "run" or not ok:
                c.mark(y, at, "m-exit-ok" if ok else "m-exit-bad", f"{phase} ended: {msg}")
            stop_reason = ""
        elif kind == "ready":
            c.mark(y, at, "m-ready", f"ready: {msg}")
        elif kind == "stop":
            stop_reason = msg
            c.mark(y, at, "m-stop", f"stopped: {msg}")
        elif kind == "restart":
            attempt += 1
            c.mark(y, at, "m-restart", f"restarted: {msg}")
        elif kind == "probe-failed":
            c.mark(y, at, "m-probe", f"readiness probe failed: {msg}")
        elif kind == "note":
            c.mark(y, at, "m-note", msg)
    for phase, start in open_.items():  # still running (or the end was never recorded)
        retry = " retry" if attempt > 1 else ""
        c.bar(y, start, end, f"bar-{phase}{retry} open",
              f"{phase}{f' (attempt {attempt})' if attempt > 1 else ''}: running")


def _group_lane(c: _Canvas, y: float, job: dict, events: list[dict], end: float) -> None:
    status, since = "PENDING", job["submitted_at"]
    for e in events:
        if e["task"] is None and e["kind"].startswith("job ") and "->" in e["kind"]:
            new = e["kind"].split("->")[-1].strip()
            c.bar(y, since, e["at"], "bar-group", f"{status}", _fill(status))
            status, since = new, e["at"]
    if not job["done"]:
        c.bar(y, since, end, "bar-group open", status, _fill(status))


def _vline(c: _Canvas, t: float, height: float, cls: str, label: str, title: str) -> None:
    x = c.x(t)
    anchor = "end" if x > WIDTH - 160 else "start"
    dx = -3 if anchor == "end" else 3
    c.marks.append((9, f'<g class="vline {cls}"><line x1="{x}" y1="{TOP - 4}" x2="{x}" y2="{height}"/>'
          f'<text x="{x + dx}" y="{TOP - 8}" text-anchor="{anchor}">{escape(label)}</text>'
          f'<title>{escape(title)}</title></g>'))


def render(job: dict, events: list[dict], now: float) -> str:
    """The SVG of `job` (a `views.job_detail`) and its `events` (`views.events`) at `now`."""
    t0 = min([e["at"] for e in events] + [job["submitted_at"]])
    end = job["ended_at"] if job["done"] and job["ended_at"] else now
    t1 = max([end] + [e["at"] for e in events])
    c = _Canvas(t0, t1)
    lanes = [(t["name"], n["rank"]) for t in job["tasks"] for n in t.get("nodes", [])]
    hidden = max(0, len(lanes) - MAX_LANES)
    lanes = lanes[:MAX_LANES]
    height = TOP + LANE * (len(lanes) + 1) + (LANE if hidden else 0) + 6
    # axis and grid
    span = c.t1 - c.t0
    step = _step(span)
    k = 0
    while k * step <= span + 1e-9:
        x = c.x(c.t0 + k * step)
        c.add(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{height - 6}"/>'
              f'<text class="tick" x="{x}" y="{height}" text-anchor="middle">'
              f'{_fmt_offset(round(k * step, 3))}</text>')
        k += 1
    height += 4
    # lanes
    y = TOP
    c.add(f'<text class="lane-label" x="{LABEL - 8}" y="{y + LANE / 2 + 4}" '
          f'text-anchor="end">group</text>')
    _group_lane(c, y, job, events, end)
    per_lane = _lane_events(events)
    for i, (task, rank) in enumerate(lanes):
        y = TOP + LANE * (i + 1)
        if i % 2 == 0:
            c.add(f'<rect class="lane-bg" x="0" y="{y}" width="{WIDTH}" height="{LANE}"/>')
        c.add(f'<text class="lane-label" x="{LABEL - 8}" y="{y + LANE / 2 + 4}" '
              f'text-anchor="end">{escape(f"{task}-{rank}")}</text>')
        _draw_node(c, y, per_lane.get((task, rank), []), end)
    if hidden:
        c.add(f'<text class="lane-label" x="{LABEL - 8}" y="{TOP + LANE * (len(lanes) + 1) + 15}"'
              f' text-anchor="end">… {hidden} more nodes</text>')
    # group marks: cancel request and the outcome (why it stopped)
    for e in events:
        if e["task"] is None and e["kind"] == "cancel-requested":
            _vline(c, e["at"], height - 20, "v-cancel", "cancel requested", e["message"])
    outcome = next((e for e in reversed(events) if e["task"] is None and e["kind"] == "outcome"),
                   None)
    if job["done"]:
        why = f"{job['status']}: {job['reason']}" if job["reason"] else job["status"]
        _vline(c, end, height - 20, "v-end", job["status"], why)
    elif outcome is not None:
        _vline(c, outcome["at"], height - 20, "v-end", outcome["message"].split(":")[0],
               outcome["message"])
    marks = [m for _, m in sorted(c.marks, key=lambda pm: pm[0])]  # stable: time order kept
    body = "".join(c.parts + c.bars + marks)
    return (f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} '
            f'{height}" width="100%" role="img" aria-label="timeline of job {job["id"]}">'
            f'{body}</svg>')
