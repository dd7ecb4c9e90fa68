"""Operating a running group (`jobgroup exec`, `port-forward`, `top`): the controller's answers.

The controller is where a node's view is known on every backend (its phase and attempt, its
handle, its address, its environment as it was started, the backend that prepared it), so the
CLI asks it over its socket (only the controller's own user, or root, may: `creds`), and then
does the streaming itself — it runs the argv it is given (`exec`: on the caller's own terminal
and stdio, exit code passed through) or relays connections (`port-forward`). Nothing here
streams through the controller, so a long shell session or transfer never loads it.

Requests (one JSON object each, `controller.rpc`):
- `{"op": "attach", "job", "task", "rank", "argv", "tty"}` -> `{"argv", "env", "node"}`; an
  `exec` event names who ran what on which node.
- `{"op": "forward", "job", "task", "rank", "local", "remote"}` -> `{"address"}` where node
  addresses are reachable from here (local, Slurm), else `{"argv"}` (Kubernetes' forwarder);
  a `port-forward` event.
- `{"op": "node", "job", "task", "rank"}` -> `{"live", "why"}`: whether the node still runs
  (a port-forward ends when its node does).
- `{"op": "top", "job"}` -> `{"nodes": [...]}`, what each running node uses now
  (`Backend.usage`), with what it asked for.
Errors: `{"ok": false, "error", "exit_code"}` — 2 for a wrong job/task/rank, 1 for a node that
has not started or has ended (the message says how it ended).
"""

from __future__ import annotations

import asyncio
import functools
import pwd
import shlex
import time
from typing import TYPE_CHECKING, Any

from jobgroup.backends.base import NodeRef, Unreachable
from jobgroup.state.status import Phase

if TYPE_CHECKING:
    from jobgroup.controller.daemon import Controller
    from jobgroup.spec.models import JobGroup
    from jobgroup.state.store import JobRec, NodeRec

OPS = ("attach", "forward", "node", "top")


class OpError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def answer(ctl: Controller, req: dict, uid: int | None) -> dict:
    """The answer to one operating request (see the module docstring)."""
    try:
        return await _answer(ctl, req, uid)
    except OpError as e:
        return {"ok": False, "error": str(e), "exit_code": e.exit_code}
    except Unreachable as e:
        return {"ok": False, "error": f"the cluster does not answer: {e}", "exit_code": 1}


async def _answer(ctl: Controller, req: dict, uid: int | None) -> dict:
    op = req.get("op")
    job = _job(ctl, req.get("job"))
    group, _ = ctl._spec(job.id, job.spec)
    if op == "top":
        return {"ok": True, "nodes": await _top(ctl, job, group), "time": time.time(),
                "job": {"id": job.id, "name": job.name, "status": job.status.value}}
    task_idx, rank = _node_of(group, req.get("task"), req.get("rank"))
    n = next((m for m in ctl.store.nodes(job.id) if (m.task_idx, m.rank) == (task_idx, rank)),
             None)
    name = f"{group.tasks[task_idx].name}-{rank}"
    if op == "node":
        return {"ok": True, "live": bool(n and n.live), "why": "" if n and n.live else
                _not_running(job, name, n)}
    if n is None or not n.live:
        raise OpError(_not_running(job, name, n), 1)
    ref = NodeRef(job.id, task_idx, rank, n.phase.value, n.attempt)
    backend = ctl._backend(job.id)
    loop = asyncio.get_running_loop()
    who = _who(uid)
    if op == "attach":
        argv = [str(a) for a in req.get("argv") or []]
        if not argv:
            raise OpError("give the command to run after `--` (e.g. -- bash)")
        from jobgroup.controller.daemon import _workdir
        from jobgroup.state import layout

        task = group.tasks[task_idx]
        workdir = _workdir(job.base_dir, task.workdir) or str(
            layout.node_dir(ctl.home, job.id, task.name or "", rank))
        addrs = ctl._addresses_of(job, group)
        env = ctl._env(job, group, task_idx, rank, addrs, setup=n.phase == Phase.SETUP,
                       attempt=n.attempt)
        full = await loop.run_in_executor(None, functools.partial(
            backend.attach_argv, ref, argv, tty=bool(req.get("tty")), workdir=workdir))
        if full is None:
            raise OpError(f"node {name} of job {job.id} is not running any more", 1)
        ctl.store.record(job.id, events=[(task_idx, rank, "exec",
                                          f"{who} ran {shlex.join(argv)[:300]} on {name}")])
        return {"ok": True, "argv": full, "env": env, "node": name}
    if op == "forward":
        local, remote = int(req.get("local") or 0), int(req.get("remote") or 0)
        if not (0 < remote < 65536 and 0 <= local < 65536):
            raise OpError("ports are numbers from 1 to 65535")
        ctl.store.record(job.id, events=[(task_idx, rank, "port-forward",
                                          f"{who} forwards 127.0.0.1:{local or remote} to "
                                          f"{name}:{remote}")])
        if backend.capabilities.reachable:
            return {"ok": True, "address": n.address, "node": name}
        argv = await loop.run_in_executor(None, backend.forward_argv, ref, local or remote,
                                          remote)
        if argv is None:
            raise OpError(f"the {backend.name} backend cannot forward ports", 1)
        return {"ok": True, "argv": argv, "node": name}
    raise OpError(f"unknown request {op!r}")


def _job(ctl: Controller, value: Any) -> JobRec:
    try:
        job_id = int(value)
    except (TypeError, ValueError):
        raise OpError(f"not a job id: {value!r}") from None
    job = ctl.store.job(job_id)
    if job is None:
        raise OpError(f"no job {job_id} (jobgroup queue --all lists them)")
    return job


def _node_of(group: JobGroup, task: Any, rank: Any) -> tuple[int, int]:
    """(task index, rank) a request names: TASK by name or index (the only task when the
    group has one), rank 0 by default."""
    names = [t.name or "" for t in group.tasks]
    if task is None or task == "":
        if len(names) > 1:
            raise OpError(f"the group has {len(names)} tasks: name one ({', '.join(names)})")
        idx = 0
    elif str(task) in names:
        idx = names.index(str(task))
    elif str(task).isdigit() and int(task) < len(names):
        idx = int(task)
    else:
        import difflib

        close = difflib.get_close_matches(str(task), names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (tasks: {', '.join(names)})"
        raise OpError(f"no task {task!r} in group {group.name}{hint}")
    r = 0 if rank is None else int(rank)
    count = group.tasks[idx].num_nodes
    if not 0 <= r < count:
        raise OpError(f"task {names[idx]} has {count} node(s): ranks 0 to {count - 1}")
    return idx, r


def _not_running(job: JobRec, name: str, n: NodeRec | None) -> str:
    if n is None or n.phase in (Phase.WAITING, Phase.READY):
        why = f" (the job is {job.status.value}" + (f": {job.reason})" if job.reason else ")")
        return f"node {name} of job {job.id} has not started yet{why}"
    if n.stopped:
        how = "it was stopped"
    elif n.signal is not None:
        how = f"killed by signal {n.signal}"
    else:
        how = f"exit code {n.exit_code}"
    return f"node {name} of job {job.id} has ended ({how}; the job is {job.status.value})"


def _who(uid: int | None) -> str:
    if uid is None:
        return "someone"
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


async def _top(ctl: Controller, job: JobRec, group: JobGroup) -> list[dict]:
    from jobgroup.resources.requests import node_shapes

    backend = ctl._backend(job.id)
    loop = asyncio.get_running_loop()
    out = []
    for n in sorted(ctl.store.nodes(job.id), key=lambda m: (m.task_idx, m.rank)):
        task = group.tasks[n.task_idx]
        shape = max(node_shapes(task.resources), key=lambda s: (s.gpus, s.cpus, s.memory_gb),
                    default=None)
        row: dict[str, Any] = {
            "task": task.name, "rank": n.rank, "node": f"{task.name}-{n.rank}",
            "phase": n.phase.value, "attempt": n.attempt,
            "requested": {"cpus": shape.cpus if shape else 0.0,
                          "memory_gb": shape.memory_gb if shape else 0.0,
                          "gpus": shape.gpus if shape else 0},
        }
        if n.live:
            ref = NodeRef(job.id, n.task_idx, n.rank, n.phase.value, n.attempt)
            use = await loop.run_in_executor(None, backend.usage, ref, n.handle)
            if use is not None:
                row["usage"] = {
                    "cpu_seconds": use.cpu_seconds, "memory_bytes": use.memory_bytes,
                    "memory_limit_bytes": use.memory_limit_bytes,
                    "gpus": {str(k): v for k, v in use.gpus.items()},
                    "processes": [{"pid": p.pid, "command": p.command, "rss_bytes": p.rss_bytes}
                                  for p in use.processes],
                    "source": use.source, "note": use.note}
        out.append(row)
    return out
