"""Which waiting jobs to admit, keep waiting, fail, or hand to their backend's own scheduler:
one pure function of stored state, like `decide` (DESIGN principle 5). The daemon reads the
rows, calls `plan_admission`, and applies the plan; nothing here touches the store.

Rule (the machine part is `resources.admission.schedule`: FIFO with backfill, the head never
delayed; see its docstring):
- jobs are taken in id (submission) order;
- a PENDING job of a backend with its own scheduler (Slurm, Kubernetes) that has not been
  admitted yet, and is not being cancelled, is asked about (`ask_backend`): the cluster decides;
- a PENDING job on this machine, not being cancelled, queues for its first step (a parallel
  group: all its tasks at once; a pipeline: its first task);
- a running pipeline whose next step (the first task not SUCCEEDED) differs from the step it
  holds resources for queues again for that step; otherwise it keeps what it holds;
- every other job that holds a placement keeps it (its resources are not free);
- the queue is scheduled against the inventory and what is held: admitted placements, a reason
  for each waiting job, and infeasible jobs — which fail FAILED_NO_RESOURCE when PENDING, and
  are wound down with that outcome when it is a later pipeline step that can never fit.
"""

from __future__ import annotations

from typing import Sequence

import msgspec

from jobgroup.resources import admission, requests
from jobgroup.resources.inventory import Inventory
from jobgroup.spec.models import JobGroup
from jobgroup.state.status import Status
from jobgroup.state.store import JobRec, TaskRec


class JobInput(msgspec.Struct, frozen=True):
    """One active job as admission sees it. `tasks`: its task rows (only read for pipelines);
    `self_scheduled`: its backend schedules on a cluster of its own."""

    job: JobRec
    group: JobGroup
    tasks: tuple[TaskRec, ...] = ()
    self_scheduled: bool = False


class Admit(msgspec.Struct, frozen=True):
    job_id: int
    placement: admission.Placement
    step: int  # the pipeline step the placement is for (0 for a parallel group)


class Wait(msgspec.Struct, frozen=True):
    job_id: int
    reason: str


class Fail(msgspec.Struct, frozen=True):
    """A job that can never fit here. `pending`: it never started (fail it now); else a later
    pipeline step cannot fit (set its outcome and let it wind down)."""

    job_id: int
    reason: str
    pending: bool


class AdmissionPlan(msgspec.Struct, frozen=True):
    admit: tuple[Admit, ...] = ()
    wait: tuple[Wait, ...] = ()
    fail: tuple[Fail, ...] = ()
    ask_backend: tuple[int, ...] = ()


def _placement_of(job: JobRec) -> admission.Placement | None:
    raw = job.controller.placement
    return None if raw is None else msgspec.convert(raw, admission.Placement)


def _next_step(inp: JobInput) -> int | None:
    """The pipeline step to run next (the first task not SUCCEEDED), or None."""
    return next((t.idx for t in inp.tasks if t.status != Status.SUCCEEDED), None)


def _request(job: JobRec, group: JobGroup, step: int | None,
             inventory: Inventory) -> requests.GroupRequest:
    req = requests.job_request(group, job.launch, step)
    if job.launch.best_effort:
        req, _ = requests.fit_to_machine(req, inventory.cpus, inventory.memory_gb)
    return req


def plan_admission(jobs: Sequence[JobInput], inventory: Inventory) -> AdmissionPlan:
    """The admission pass over the active `jobs` (see the module docstring); pure."""
    held: dict[int, admission.Placement] = {}
    queue: list[admission.Pending] = []
    steps: dict[int, int] = {}
    ask: list[int] = []
    for inp in sorted(jobs, key=lambda i: i.job.id):
        job, group = inp.job, inp.group
        if inp.self_scheduled:
            if job.status == Status.PENDING and not job.cancel_requested \
                    and not job.controller.admitted:
                ask.append(job.id)
            continue
        if job.status == Status.PENDING:
            if not job.cancel_requested:
                steps[job.id] = 0
                queue.append(admission.Pending(job.id, _request(
                    job, group, 0 if group.execution == "serial" else None, inventory)))
            continue
        placement = _placement_of(job)
        if placement is None:
            continue
        if group.execution == "serial" and len(group.tasks) > 1 and job.outcome is None:
            step = _next_step(inp)
            if step is not None and step != job.controller.placement_step:
                steps[job.id] = step
                queue.append(admission.Pending(job.id, _request(job, group, step, inventory)))
                continue
        held[job.id] = placement
    if not queue:
        return AdmissionPlan(ask_backend=tuple(ask))
    decision = admission.schedule(inventory, held, queue)
    pending = {inp.job.id for inp in jobs if inp.job.status == Status.PENDING}
    return AdmissionPlan(
        admit=tuple(Admit(p.job_id, p, steps[p.job_id]) for p in decision.admitted),
        wait=tuple(Wait(w.job_id, w.reason) for w in decision.waiting),
        fail=tuple(Fail(b.job_id, b.reason, b.job_id in pending) for b in decision.infeasible),
        ask_backend=tuple(ask),
    )
