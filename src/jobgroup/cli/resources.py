"""`jobgroup resources [--json]`: what this machine offers, what running groups hold, what is
free, and which nodes run best-effort (reserving nothing).

`usage` is pure (tested without a store); `usage_from_store` reads the jobs that hold resources
(STARTING, RUNNING, CANCELLING) and their placements. Until placements are stored, a job's
placement is re-derived from its spec with the admission code, in job-id order.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import click
import msgspec

from jobgroup.resources.admission import NodeAlloc, Placement, decode_placement, place
from jobgroup.resources.inventory import Inventory
from jobgroup.resources.requests import GroupRequest

HOLDING = ("STARTING", "RUNNING", "RECOVERING", "CANCELLING")
PLACEMENT_OPTION = "placement"  # key in a job's options where the controller may store it
_SHOWN_BEST_EFFORT = 8


class ActiveJob(msgspec.Struct, frozen=True):
    """A job that holds resources: its request and, when known, its placement."""

    job_id: int
    name: str
    status: str
    request: GroupRequest
    placement: Placement | None = None


class JobUsage(msgspec.Struct, frozen=True):
    job_id: int
    name: str
    status: str
    cpus: float
    memory_gb: float
    gpus: tuple[int, ...]
    nodes: int
    best_effort_nodes: tuple[str, ...]  # "task-rank" of its nodes that reserve nothing
    placement_known: bool = True


class Usage(msgspec.Struct, frozen=True):
    """Totals (what is offered), used (sum over jobs), free, per job, and notes."""

    total_cpus: float
    total_memory_gb: float
    gpus: tuple[dict[str, Any], ...]  # {index, type, name, memory_mb, job (holder or None)}
    used_cpus: float
    used_memory_gb: float
    free_cpus: float
    free_memory_gb: float
    jobs: tuple[JobUsage, ...]
    best_effort_nodes: int
    gpu_source: str
    notes: tuple[str, ...] = ()


def usage(inventory: Inventory, active: Sequence[ActiveJob]) -> Usage:
    """What `active` jobs hold of `inventory` (pure). Jobs without a placement get one derived
    from their request in the order given (job-id order reproduces the admission order)."""
    allocations: dict[int, Placement] = {}
    jobs: list[JobUsage] = []
    notes = list(inventory.notes)
    for a in active:
        p = a.placement
        known = p is not None
        if p is None:
            p = place(inventory, allocations, a.job_id, a.request)
        if p is None:  # does not fit any more (e.g. the config file changed): count amounts only
            p = Placement(a.job_id, tuple(
                NodeAlloc(t.idx, r, t.shapes[0].cpus, t.shapes[0].memory_gb)
                for t in a.request.tasks for r in range(t.num_nodes)))
            notes.append(f"job {a.job_id}: its GPUs are unknown (it no longer fits this machine)")
        allocations[a.job_id] = p
        names = {t.idx: t.name for t in a.request.tasks}
        jobs.append(JobUsage(
            job_id=a.job_id, name=a.name, status=a.status,
            cpus=sum(n.cpus for n in p.nodes), memory_gb=sum(n.memory_gb for n in p.nodes),
            gpus=tuple(sorted(g for n in p.nodes for g in n.gpus)), nodes=len(p.nodes),
            best_effort_nodes=tuple(f"{names.get(n.task_idx, n.task_idx)}-{n.rank}"
                                    for n in p.nodes if n.best_effort),
            placement_known=known))
    holder = {g: j.job_id for j in jobs for g in j.gpus}
    used_cpus = sum(j.cpus for j in jobs)
    used_mem = sum(j.memory_gb for j in jobs)
    return Usage(
        total_cpus=inventory.cpus, total_memory_gb=inventory.memory_gb,
        gpus=tuple({"index": g.index, "type": g.type, "name": g.name, "memory_mb": g.memory_mb,
                    "job": holder.get(g.index)} for g in inventory.gpus),
        used_cpus=used_cpus, used_memory_gb=used_mem,
        free_cpus=inventory.cpus - used_cpus, free_memory_gb=inventory.memory_gb - used_mem,
        jobs=tuple(jobs), best_effort_nodes=sum(len(j.best_effort_nodes) for j in jobs),
        gpu_source=inventory.gpu_source, notes=tuple(notes))


def _placement_option(job: Any) -> Placement | None:
    raw = (job.options or {}).get(PLACEMENT_OPTION)
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Placement) if isinstance(raw, dict) else decode_placement(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def usage_from_store(store: Any, inventory: Inventory,
                     placement_of: Callable[[Any], Placement | None] = _placement_option) -> Usage:
    """`usage` of the jobs of `store` that hold resources (STARTING/RUNNING/CANCELLING), with
    the same request code as admission. `placement_of(job_rec)` returns a stored placement (by
    default: the job's options[``placement``], a Placement as JSON or a dict), else None."""
    from jobgroup.resources.requests import job_request
    from jobgroup.spec import load

    active = []
    for job in sorted(store.jobs(active_only=True), key=lambda j: j.id):
        if str(job.status) not in HOLDING:
            continue
        group = load(job.spec)
        step = None
        if group.execution == "serial":
            running = [t.idx for t in store.tasks(job.id) if str(t.status) in HOLDING]
            step = running[0] if running else 0
        active.append(ActiveJob(job.id, job.name, str(job.status),
                                job_request(group, job.options, step), placement_of(job)))
    return usage(inventory, active)


# ---- output ---------------------------------------------------------------------------------


def _gb(x: float) -> str:
    return f"{x:.1f} GB"


def render(u: Usage) -> str:
    """The human table of `jobgroup resources`."""
    from jobgroup.cli.output import table

    rows = [["CPUs", f"{u.total_cpus:g}", f"{u.used_cpus:g}", f"{u.free_cpus:g}"],
            ["memory", _gb(u.total_memory_gb), _gb(u.used_memory_gb), _gb(u.free_memory_gb)]]
    types: dict[str, list[dict[str, Any]]] = {}
    for g in u.gpus:
        types.setdefault(g["type"], []).append(g)
    for t, gs in types.items():
        used = [str(g["index"]) for g in gs if g["job"] is not None]
        free = [str(g["index"]) for g in gs if g["job"] is None]
        rows.append([f"GPU {t}", str(len(gs)),
                     f"{len(used)}" + (f" ({','.join(used)})" if used else ""),
                     f"{len(free)}" + (f" ({','.join(free)})" if free else "")])
    if not u.gpus:
        rows.append(["GPUs", "0", "-", "-"])
    out = [table(["RESOURCE", "TOTAL", "USED", "FREE"], rows)]
    if u.jobs:
        jrows = []
        for j in u.jobs:
            reserved = j.nodes - len(j.best_effort_nodes)
            jrows.append([str(j.job_id), j.name, j.status, f"{j.cpus:g}", _gb(j.memory_gb),
                          ",".join(map(str, j.gpus)) or "-",
                          f"{reserved}" + (f" (+{len(j.best_effort_nodes)} best-effort)"
                                           if j.best_effort_nodes else "")])
        out += ["", table(["JOB", "NAME", "STATUS", "CPUS", "MEMORY", "GPUS", "NODES"], jrows)]
    else:
        out += ["", "No job holds resources."]
    if u.best_effort_nodes:
        out.append("")
        out.append(f"Best-effort nodes (no cpus/memory/accelerators: reserve nothing, not limited):"
                   f" {u.best_effort_nodes}")
        for j in u.jobs:
            if j.best_effort_nodes:
                names = list(j.best_effort_nodes[:_SHOWN_BEST_EFFORT])
                more = len(j.best_effort_nodes) - len(names)
                out.append(f"  job {j.job_id} ({j.name}): {', '.join(names)}"
                           + (f" and {more} more" if more > 0 else ""))
    out.append("")
    out.append(f"GPUs from: {u.gpu_source}")
    out += [f"note: {n}" for n in u.notes]
    return "\n".join(out)


@click.command("resources")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def resources(as_json: bool) -> None:
    """What this machine offers: total, used (by which job) and free CPUs, memory and GPUs.

    \b
    Limits and fake GPUs: $JOBGROUP_HOME/resources.yaml (cpus, memory, gpus, fake_gpus) and
    JOBGROUP_FAKE_GPUS (e.g. H100:4).
    """
    from jobgroup.resources.inventory import recorded
    from jobgroup.state.store import Store, default_home

    home = default_home()
    inv = recorded(home)
    store = Store(home)
    try:
        u = usage_from_store(store, inv)
    finally:
        store.close()
    if as_json:
        click.echo(msgspec.json.encode(u).decode())
    else:
        click.echo(render(u))
