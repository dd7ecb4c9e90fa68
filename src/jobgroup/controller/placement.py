"""A job's resource placement as the controller stored it (job options), and what one node
gets from it: its environment (GPUs) and its limits (cgroup)."""

from __future__ import annotations

import msgspec

from jobgroup.state.store import JobRec


def placement_of(job: JobRec):  # -> admission.Placement | None
    raw = job.controller.placement
    if raw is None:
        return None
    from jobgroup.resources.admission import Placement

    return msgspec.convert(raw, Placement)


def node_alloc(job: JobRec, task_idx: int, rank: int):  # -> admission.NodeAlloc | None
    placement = placement_of(job)
    if placement is None:
        return None
    try:
        return placement.node(task_idx, rank)
    except KeyError:
        return None


def limits(job: JobRec, task_idx: int, rank: int) -> dict[str, float]:
    alloc = node_alloc(job, task_idx, rank)
    if alloc is None:
        return {}
    return {"cpus": alloc.cpus, "memory_gb": alloc.memory_gb}


def describe_placement(p) -> str:  # p: admission.Placement
    parts = []
    for n in p.nodes:
        if n.best_effort:
            continue
        what = []
        if n.cpus:
            what.append(f"{n.cpus:g} CPU")
        if n.memory_gb:
            what.append(f"{n.memory_gb:g} GB")
        if n.gpus:
            what.append(f"GPU {','.join(map(str, n.gpus))}")
        parts.append(f"{n.task_idx}/{n.rank}: {' '.join(what)}")
    return "; ".join(parts)
