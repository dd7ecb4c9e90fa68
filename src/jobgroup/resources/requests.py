"""What a group asks of the machine: per task, what ONE node needs, times `num_nodes`.

Rules (documented for users too):

- ``cpus: 4`` and ``cpus: 4+`` reserve 4 CPUs per node ("at least" reserves its minimum);
  ``memory: 16`` / ``16+`` / ``16GB`` reserve 16 GB (2**30 bytes) per node.
- ``accelerators: H100:2`` reserves 2 whole GPUs of type H100 per node; a fraction
  (``A100:0.5``) reserves a whole GPU here (GPUs are not shared between nodes locally).
- Alternatives are tried in the user's order: accelerator lists/mappings (``[H100:1, A100:2]``)
  and ``any_of`` / ``ordered`` entries of `resources` (each entry's keys override the task's).
  All nodes of a task use the same alternative.
- A task that declares none of ``cpus``, ``memory``, ``accelerators`` is **best-effort**: it
  reserves nothing and is never limited, so many small nodes (a 7-node group, or 1,000 idle
  nodes) share a 2-core machine. A task that declares only some of them reserves only those.
- Job options: ``gpus_any`` accepts any GPU type for every accelerator request (counts kept);
  ``cpu_only`` drops accelerator requests (the node runs with no GPU visible); ``best_effort``
  (``--best-effort``): a group whose CPUs or memory, all nodes together, exceed what this
  machine offers runs with no CPU/memory reservation and no limits (`fit_to_machine`), so a file
  sized for a cluster runs on a laptop; GPUs are unaffected (see ``cpu_only``, ``gpus_any``).

Everything here is pure and cheap: the controller builds a `GroupRequest` once per job.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import msgspec

from jobgroup.spec.models import JobGroup, Resources, Task
from jobgroup.spec.resources import parse_accelerators, parse_cpus, parse_memory


class Shape(msgspec.Struct, frozen=True):
    """What one node needs under one alternative. `gpu_type` None with `gpus` > 0 means a GPU
    of any type (``gpus_any``). All zero means best-effort (reserves nothing)."""

    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: int = 0
    gpu_type: str | None = None

    @property
    def best_effort(self) -> bool:
        return self.cpus == 0 and self.memory_gb == 0 and self.gpus == 0

    def describe(self) -> str:
        """E.g. ``2 CPU(s), 8 GB, 1 GPU(s) H100``; ``best-effort`` when it reserves nothing."""
        parts = []
        if self.cpus:
            parts.append(f"{self.cpus:g} CPU(s)")
        if self.memory_gb:
            parts.append(f"{self.memory_gb:g} GB")
        if self.gpus:
            parts.append(f"{self.gpus} GPU(s) {self.gpu_type or 'of any type'}")
        return ", ".join(parts) or "best-effort"


BEST_EFFORT = Shape()


class TaskRequest(msgspec.Struct, frozen=True):
    """Task `idx` (`name`) needs `num_nodes` nodes, each of one of `shapes` (in preference
    order, never empty; the same shape for all its nodes)."""

    idx: int
    name: str
    num_nodes: int
    shapes: tuple[Shape, ...]

    @property
    def best_effort(self) -> bool:
        return all(s.best_effort for s in self.shapes)


class GroupRequest(msgspec.Struct, frozen=True):
    """What a group (or, for a serial pipeline, one step of it) needs, all at once."""

    tasks: tuple[TaskRequest, ...]

    @property
    def best_effort(self) -> bool:
        """True when admitting it reserves nothing (it always fits)."""
        return all(t.best_effort for t in self.tasks)

    @property
    def num_nodes(self) -> int:
        return sum(t.num_nodes for t in self.tasks)


def _alternatives(res: Resources) -> list[Resources]:
    entries = res.any_of or res.ordered
    if not entries:
        return [res]
    out = []
    for e in entries:
        out.append(msgspec.structs.replace(
            res, any_of=None, ordered=None,
            cpus=e.cpus if e.cpus is not None else res.cpus,
            memory=e.memory if e.memory is not None else res.memory,
            accelerators=e.accelerators if e.accelerators is not None else res.accelerators,
        ))
    return out


def node_shapes(res: Resources, *, gpus_any: bool = False, cpu_only: bool = False
                ) -> tuple[Shape, ...]:
    """The alternatives of one node of a task with `res`, in preference order, deduplicated.
    ValueError for a malformed value (specs loaded through `jobgroup.spec` never have one)."""
    out: dict[Shape, None] = {}
    for alt in _alternatives(res):
        cpus = parse_cpus(alt.cpus)
        mem = parse_memory(alt.memory)
        accels = None if cpu_only else parse_accelerators(alt.accelerators)
        c = cpus.value if cpus else 0.0
        m = mem.value if mem else 0.0
        if not accels:
            out[Shape(c, m)] = None
            continue
        for accel in accels:
            for name, count in accel.items():
                out[Shape(c, m, max(1, math.ceil(count)), None if gpus_any else name)] = None
    return tuple(out) or (BEST_EFFORT,)


def task_request(task: Task, idx: int, *, gpus_any: bool = False, cpu_only: bool = False
                 ) -> TaskRequest:
    """The request of `task` (index `idx` in its group)."""
    return TaskRequest(idx=idx, name=task.name or str(idx), num_nodes=task.num_nodes,
                       shapes=node_shapes(task.resources, gpus_any=gpus_any, cpu_only=cpu_only))


def need(request: GroupRequest) -> tuple[float, float]:
    """(CPUs, GB) the group needs at most, all its nodes together (each task at its largest
    alternative)."""
    cpus = sum(max(s.cpus for s in t.shapes) * t.num_nodes for t in request.tasks)
    mem = sum(max(s.memory_gb for s in t.shapes) * t.num_nodes for t in request.tasks)
    return cpus, mem


def fit_to_machine(request: GroupRequest, cpus: float, memory_gb: float
                   ) -> tuple[GroupRequest, bool]:
    """`--best-effort`: when the group's CPUs or memory, all nodes together, exceed `cpus` /
    `memory_gb` (what the machine offers), the same request without CPU/memory reservations
    (GPUs kept), and True; else the request unchanged, and False."""
    want_cpus, want_mem = need(request)
    if want_cpus <= cpus + 1e-9 and want_mem <= memory_gb + 1e-9:
        return request, False
    tasks = []
    for t in request.tasks:
        shapes = tuple(dict.fromkeys(Shape(0.0, 0.0, s.gpus, s.gpu_type) for s in t.shapes))
        tasks.append(msgspec.structs.replace(t, shapes=shapes))
    return GroupRequest(tuple(tasks)), True


def group_request(group: JobGroup, *, tasks: Iterable[int] | None = None, gpus_any: bool = False,
                  cpu_only: bool = False) -> GroupRequest:
    """What `group` needs at once: all its tasks (``execution: parallel``), or only the task
    indices in `tasks` (a serial pipeline admits one step at a time: pass ``tasks=[step]``)."""
    idxs = range(len(group.tasks)) if tasks is None else tasks
    return GroupRequest(tuple(
        task_request(group.tasks[i], i, gpus_any=gpus_any, cpu_only=cpu_only) for i in idxs))


def job_request(group: JobGroup, options: Any = None, step: int | None = None) -> GroupRequest:
    """`group_request` with a job's launch options (`state.options.LaunchOptions`, or the
    stored mapping: its ``gpus_any`` and ``cpu_only``). For a serial pipeline pass the step
    (task index) about to start."""
    if options is None or isinstance(options, Mapping):
        opts = options or {}
        gpus_any, cpu_only = bool(opts.get("gpus_any")), bool(opts.get("cpu_only"))
    else:
        gpus_any, cpu_only = options.gpus_any, options.cpu_only
    tasks = None
    if group.execution == "serial" and len(group.tasks) > 1:
        tasks = [step or 0]
    return group_request(group, tasks=tasks, gpus_any=gpus_any, cpu_only=cpu_only)
