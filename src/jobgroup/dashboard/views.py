"""JSON-friendly views of the store: what the API returns and what the pages render.

Pure reads: each function takes an open `Store` (one per request thread; a Store is not shared
between threads) and returns plain dicts/lists, shaped as `schemas` declares. Unknown jobs
raise `NotFound`; a bad filter raises `UsageError`.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from jobgroup import api
from jobgroup.errors import JobGroupError, NotFound, UsageError
from jobgroup.state.status import Phase, Status
from jobgroup.state.store import JobRec, NodeRec, Store, TaskRec

# Status filters of the jobs page and GET /api/v1/jobs?status=...
GROUPS = {
    "all": None,
    "active": lambda s: not s.terminal,
    "ended": lambda s: s.terminal,
    "failed": lambda s: s.failed,
}
STATUS_FILTERS = (*GROUPS, *(s.value for s in Status))
PAGE_SIZE = 100  # jobs a page shows, and the API's default `limit`
MAX_LIMIT = 1000
# "held by job 17", "held by jobs 1, 2", "kept for job 4 (first in the queue)": admission's words
JOB_REFS = re.compile(r"\b(jobs?) (\d{1,12}(?:, \d{1,12})*)")
_WAITS_ON = re.compile(r"(?:held by|kept for) jobs? (\d{1,12}(?:, \d{1,12})*)")


def iso(t: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds (``2026-12-05T06:01:02.345Z``); None for None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def status_filter(value: str | None):
    """A predicate on Status for `value` (a group name or a status); UsageError if unknown."""
    if not value or value == "all":
        return None
    if value in GROUPS:
        return GROUPS[value]
    upper = value.upper()
    if upper in Status.__members__:
        want = Status(upper)
        return lambda s: s == want
    raise UsageError(f"unknown status filter {value!r}; use one of: {', '.join(STATUS_FILTERS)}")


def _where(status: str | None, q: str | None) -> tuple[str, list[object]]:
    """SQL condition (on `jobs j`) and its arguments for a status filter and a search: the
    search matches a job's id (``17`` or ``#17``), or a part of its name or reason (case does
    not matter)."""
    pred = status_filter(status)
    where, args = [], []
    if pred is not None:
        wanted = [s.value for s in Status if pred(s)]
        where.append(f"j.status IN ({','.join('?' * len(wanted))})")
        args += wanted
    q = (q or "").strip()
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cond = "j.name LIKE ? ESCAPE '\\' OR j.reason LIKE ? ESCAPE '\\'"
        args += [like, like]
        if re.fullmatch(r"#?\d{1,12}", q):
            cond += " OR j.id = ?"
            args.append(int(q.lstrip("#")))
        where.append(f"({cond})")
    return (" WHERE " + " AND ".join(where)) if where else "", args


def check_page(limit: int | None, offset: int | None) -> tuple[int, int]:
    limit = PAGE_SIZE if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit, offset or 0


# a job's columns, and the options that say where it runs (`where_label`), read by SQLite's
# JSON functions (options carry the launcher's environment: decoding 1,000 of them is slow)
# (`api.where_label`/`WHERE_KEYS`: the CLI's INFRA column, whichever module holds them)
_COLS = ("j.id, j.name, j.status, j.reason, j.execution, j.submitted_at, j.started_at,"
         " j.ended_at, j.group_restarts, j.cancel_requested, j.isolation,"
         " json_object(" + ", ".join(f"'{k}', json_extract(j.options, '$.{k}')"
                                     for k in api.WHERE_KEYS) + ")")


def _select(store: Store, status: str | None, q: str | None, limit: int | None,
            offset: int | None, extra: str = "") -> tuple[list[tuple], int]:
    """One page of jobs (newest first) and how many match: `_COLS` (+ `extra`) per job."""
    limit, offset = check_page(limit, offset)
    where, args = _where(status, q)
    total = store.conn.execute(f"SELECT count(*) FROM jobs j{where}", args).fetchone()[0]
    rows = store.conn.execute(
        f"SELECT {_COLS}{extra} FROM jobs j{where} ORDER BY j.id DESC LIMIT ? OFFSET ?",
        [*args, limit, offset]).fetchall()
    return rows, total


def _duration(started: float | None, ended: float | None, now: float) -> float | None:
    return None if started is None else max(0.0, (ended or now) - started)


def _task(t: TaskRec, now: float) -> dict:
    return {
        "index": t.idx, "name": t.name, "status": t.status.value, "reason": t.reason,
        "num_nodes": t.num_nodes, "primary": t.is_primary, "restarts": t.restarts,
        "started_at": t.started_at, "started_at_iso": iso(t.started_at),
        "ended_at": t.ended_at, "ended_at_iso": iso(t.ended_at),
        "duration": _duration(t.started_at, t.ended_at, now),
    }


def _infra(options: str | dict) -> str:
    """`where_label` of the options `_COLS` read (JSON text), or of a job's own."""
    return api.where_label(json.loads(options) if isinstance(options, str) else options)


def _summary(row: tuple, tasks: list[TaskRec], now: float) -> dict:
    (jid, name, st, reason, execution, submitted, started, ended, group_restarts, cancel,
     isolation, options) = row[:12]
    status = Status(st)
    return {
        "id": jid, "name": name, "status": st, "reason": reason, "execution": execution,
        "infra": _infra(options),
        "submitted_at": submitted, "submitted_at_iso": iso(submitted),
        "started_at": started, "started_at_iso": iso(started),
        "ended_at": ended, "ended_at_iso": iso(ended),
        "duration": _duration(started, ended, now),
        "num_tasks": len(tasks), "num_nodes": sum(t.num_nodes for t in tasks),
        "restarts": sum(t.restarts for t in tasks) + group_restarts,
        "group_restarts": group_restarts, "cancel_requested": bool(cancel),
        "isolation": isolation, "done": status.terminal,
        "tasks": [_task(t, now) for t in tasks],
    }


def jobs(store: Store, status: str | None = None, q: str | None = None,
         limit: int | None = None, offset: int | None = None) -> tuple[list[dict], int]:
    """A page of jobs (newest first) matching the status filter (see `status_filter`) and the
    search `q`, each with its tasks; and how many match in all."""
    rows, total = _select(store, status, q, limit, offset)
    tasks = store.tasks_of([r[0] for r in rows])
    now = time.time()
    return [_summary(r, tasks[r[0]], now) for r in rows], total


def version(store: Store) -> str:
    """A cheap fingerprint of what the jobs list shows (about 1 ms with 1,000 jobs): every
    status change, cancel request and pending reason writes an event; new jobs, restarts and
    start/end times are counted too. Equal fingerprints -> equal rows (their running
    durations tick in the browser), so a poll is answered 304 without rendering anything."""
    row = store.conn.execute(
        "SELECT (SELECT ifnull(max(id), 0) FROM events), (SELECT count(*) FROM jobs),"
        " (SELECT ifnull(max(id), 0) FROM jobs), (SELECT max(started_at) FROM jobs),"
        " (SELECT max(ended_at) FROM jobs), (SELECT total(restarts) FROM tasks)").fetchone()
    return ":".join(str(v) for v in row)


def job_rows(store: Store, status: str | None = None, q: str | None = None,
             limit: int | None = None, offset: int | None = None) -> tuple[list[dict], int]:
    """What the jobs page shows of a page of jobs (newest first), in one aggregate query: the
    fields of a job summary without `tasks` (3x faster than building every task); and how
    many jobs match in all."""
    rows, total = _select(
        store, status, q, limit, offset,
        extra=", (SELECT count(*) FROM tasks t WHERE t.job_id = j.id),"
              " (SELECT total(num_nodes) FROM tasks t WHERE t.job_id = j.id),"
              " (SELECT total(restarts) FROM tasks t WHERE t.job_id = j.id)")
    out = []
    for r in rows:
        (jid, name, st, reason, _, submitted, started, ended, group_restarts, _, _, options,
         ntasks, nnodes, restarts) = r
        out.append({"id": jid, "name": name, "status": st, "reason": reason,
                    "infra": _infra(options),
                    "submitted_at": submitted, "started_at": started, "ended_at": ended,
                    "num_tasks": ntasks, "num_nodes": int(nnodes),
                    "restarts": int(restarts) + group_restarts})
    return out, total


def job_rec(store: Store, job_id: int) -> JobRec:
    rec = store.job(job_id)
    if rec is None:
        raise NotFound(f"no job {job_id}")
    return rec


@lru_cache(maxsize=256)
def _spec_facts(spec_text: str, gpus_any: bool, cpu_only: bool
                ) -> tuple[frozenset[str], tuple[tuple[float, float, int, str | None], ...]]:
    """(names of the tasks with a readiness probe, each task's first alternative as (cpus,
    memory GB, GPUs, GPU type)) of a stored spec; nothing known of a spec this version cannot
    load (stored by an older one)."""
    from jobgroup.resources.requests import group_request
    from jobgroup.spec import load

    try:
        group = load(spec_text)
        request = group_request(group, gpus_any=gpus_any, cpu_only=cpu_only)
    except Exception:
        return frozenset(), ()
    probed = frozenset(t.name or "" for t in group.tasks if t.readiness_probe is not None)
    shapes = tuple((s.cpus, s.memory_gb, s.gpus, s.gpu_type)
                   for s in (t.shapes[0] for t in request.tasks))
    return probed, shapes


def probed_tasks(spec_text: str) -> frozenset[str]:
    """Names of the tasks of a stored spec that have a readiness probe."""
    return _spec_facts(spec_text, False, False)[0]


def readiness(node: NodeRec, probed: bool) -> str:
    """`ready`, `waiting`, `failed: WHY`, `started` (no probe: ready once running) or `-`."""
    if node.probe_failed:
        return f"failed: {node.probe_failed}"
    if node.ready_at is not None:
        return "ready"
    if node.phase == Phase.RUN:
        return "waiting" if probed else "started"
    return "-"


def exit_text(n: NodeRec) -> str:
    """How a node ended, in the CLI's words ('' while it has not)."""
    if n.phase != Phase.ENDED:
        return ""
    if n.stopped and n.exit_code is None and n.signal is None:
        return "stopped"
    what = f"signal {n.signal}" if n.signal is not None else f"exit code {n.exit_code}"
    return f"{what} (stopped)" if n.stopped else what


def node_state(n: NodeRec, job_done: bool) -> str:
    """A node's phase in words; a node still `waiting` in a job that ended never started."""
    if n.phase == Phase.WAITING and job_done:
        return "never started"
    return n.phase.value


def _resources(rec: JobRec, shapes: tuple, n: NodeRec) -> dict | None:
    """What node `n` reserved (the job's placement on this machine), else what its task asks
    for (first alternative); None when the spec is not known."""
    for p in (rec.options.get("placement") or {}).get("nodes") or ():
        if p.get("task_idx") == n.task_idx and p.get("rank") == n.rank:
            gpus = list(p.get("gpus") or ())
            return {"cpus": p.get("cpus") or 0.0, "memory_gb": p.get("memory_gb") or 0.0,
                    "gpus": len(gpus), "gpu_type": p.get("gpu_type"), "gpu_indices": gpus,
                    "best_effort": not (p.get("cpus") or p.get("memory_gb") or gpus),
                    "reserved": True}
    if n.task_idx >= len(shapes):
        return None
    cpus, mem, gpus, gpu_type = shapes[n.task_idx]
    return {"cpus": cpus, "memory_gb": mem, "gpus": gpus, "gpu_type": gpu_type,
            "gpu_indices": [], "best_effort": not (cpus or mem or gpus), "reserved": False}


def _node(n: NodeRec, probed: bool, task: TaskRec, job_done: bool, resources: dict | None,
          usage: dict | None) -> dict:
    return {
        "task": task.name, "task_index": n.task_idx, "rank": n.rank, "phase": n.phase.value,
        "state": node_state(n, job_done), "hostname": n.hostname, "address": n.address,
        "attempt": n.attempt, "restarts": n.attempt - 1,
        "started_at": n.started_at, "started_at_iso": iso(n.started_at),
        "ended_at": n.ended_at, "ended_at_iso": iso(n.ended_at),
        "ready_at": n.ready_at, "ready_at_iso": iso(n.ready_at),
        "readiness": readiness(n, probed), "readiness_probe": probed,
        "exit_code": n.exit_code, "signal": n.signal, "stopped": n.stopped,
        "exit": exit_text(n), "ended_phase": n.ended_phase.value if n.ended_phase else None,
        "note": n.note, "resources": resources, "usage": usage,
    }


def waits_on(reason: str) -> list[int]:
    """Jobs a pending job's reason says hold (or are kept what) it waits for."""
    return sorted({int(i) for m in _WAITS_ON.finditer(reason) for i in m.group(1).split(", ")})


def blocking(store: Store, job_id: int) -> list[int]:
    """Pending jobs whose reason says they wait for what job `job_id` holds."""
    rows = store.conn.execute(
        "SELECT id, reason FROM jobs WHERE status = ? AND (reason LIKE '%held by job%'"
        " OR reason LIKE '%kept for job%') ORDER BY id", (Status.PENDING.value,))
    return [jid for jid, reason in rows if job_id in waits_on(reason)]


def job_detail(store: Store, job_id: int, meter: "UsageMeter | None" = None) -> dict:
    """A job with its tasks and every node (GET /api/v1/jobs/{id}, the group page); with a
    `meter`, what its running nodes use now."""
    rec = job_rec(store, job_id)
    tasks = store.tasks(job_id)
    opts = rec.options
    row = (rec.id, rec.name, rec.status.value, rec.reason, rec.execution, rec.submitted_at,
           rec.started_at, rec.ended_at, rec.group_restarts, rec.cancel_requested,
           rec.isolation, opts)
    out = _summary(row, tasks, time.time())
    probed, shapes = _spec_facts(rec.spec, bool(opts.get("gpus_any")), bool(opts.get("cpu_only")))
    by_idx = {t.idx: t for t in tasks}
    done = rec.status.terminal
    usage = meter.read(job_id) if meter is not None and not done else {}
    nodes = [_node(n, by_idx[n.task_idx].name in probed, by_idx[n.task_idx], done,
                   _resources(rec, shapes, n), usage.get((by_idx[n.task_idx].name, n.rank)))
             for n in store.nodes(job_id) if n.task_idx in by_idx]
    for t in out["tasks"]:
        t["nodes"] = [n for n in nodes if n["task_index"] == t["index"]]
        t["readiness_probe"] = t["name"] in probed
    out["has_auxiliaries"] = not all(t.is_primary for t in tasks)
    out["blocked_by"] = waits_on(rec.reason) if rec.status == Status.PENDING else []
    out["blocking"] = [] if done else blocking(store, job_id)
    return out


def events(store: Store, job_id: int, after: int = 0) -> list[dict]:
    """The job's timeline, oldest first (events with id > `after`), like `jobgroup events`."""
    job_rec(store, job_id)
    names = {t.idx: t.name for t in store.tasks(job_id)}
    return [
        {"id": e.id, "at": e.at, "at_iso": iso(e.at), "kind": e.kind, "message": e.message,
         "task": names.get(e.task_idx) if e.task_idx is not None else None, "rank": e.rank}
        for e in store.events(job_id) if e.id > after
    ]


class UsageMeter:
    """Running nodes' use now, as the controller's `top` gives it (`api.usage`: the backend's
    figures: cgroups locally, sstat on Slurm, the metrics API on Kubernetes), with CPU cores in
    use computed from the previous look at the same node. {} when no controller answers."""

    KEEP_S = 60.0

    def __init__(self, home: Path) -> None:
        self.home = home
        # (job, task, rank) -> (when, CPU seconds then, cores in use over the interval before)
        self._last: dict[tuple[int, str, int], tuple[float, float, float | None]] = {}

    def read(self, job_id: int) -> dict[tuple[str, int], dict]:
        """{(task name, rank): usage dict (`schemas.NodeUsage`)} of the job's running nodes."""
        try:
            rows = api.usage(job_id, home=self.home)["nodes"]
        except JobGroupError:  # no controller runs, or it could not tell
            return {}
        now = time.monotonic()
        out = {}
        for row in rows:
            u = row.get("usage")
            if u is None:
                continue
            cores = None
            key = (job_id, row["task"], row["rank"])
            cpu = u.get("cpu_seconds")
            if cpu is not None:
                prev = self._last.get(key)
                if prev is not None and now - prev[0] < 0.2:
                    cores = prev[2]  # looked at just now (two pages): the same figure
                else:
                    if prev is not None and cpu >= prev[1]:
                        cores = round((cpu - prev[1]) / (now - prev[0]), 3)
                    self._last[key] = (now, cpu, cores)
            out[(row["task"], row["rank"])] = {
                "cpu_seconds": cpu, "cpu_cores": cores, "memory_bytes": u.get("memory_bytes"),
                "memory_limit_bytes": u.get("memory_limit_bytes"),
                "gpus": u.get("gpus") or {}, "processes": len(u.get("processes") or ()),
                "source": u.get("source") or "", "note": u.get("note") or ""}
        if len(self._last) > 4096:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.KEEP_S}
        return out
