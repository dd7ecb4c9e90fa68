"""What the cluster has (`scontrol show partition|node -o`), and what each task is submitted
with: the first of its alternatives that the cluster can ever give it, GPU types spelled as the
cluster spells its GRES, or a refusal that names the task and the limit.

Pure but for `read`: parsing and choosing are unit-tested on captured `scontrol` output.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from jobgroup.backends.slurm.script import Component, TaskSubmit, time_minutes
from jobgroup.resources.requests import Shape
from jobgroup.spec.models import Task


@dataclass(frozen=True)
class SlurmNode:
    name: str
    cpus: int
    memory_mb: int
    gpus: dict[str, int]  # GRES type (as the cluster spells it; "" untyped) -> count
    features: frozenset[str]
    partitions: tuple[str, ...]
    state: str
    address: str = ""


@dataclass(frozen=True)
class Partition:
    name: str
    total_nodes: int
    max_nodes: int | None
    max_time: str | None  # Slurm's form; None: unlimited
    default: bool
    state: str


@dataclass(frozen=True)
class Inventory:
    partitions: dict[str, Partition]
    nodes: list[SlurmNode]

    def default_partition(self) -> str | None:
        for p in self.partitions.values():
            if p.default:
                return p.name
        return None

    def nodes_of(self, partition: str) -> list[SlurmNode]:
        return [n for n in self.nodes if partition in n.partitions]


def _field(line: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){key}=(\S*)", line)
    return m.group(1) if m else None


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(text or "")
    except ValueError:
        return default


def parse_gres(text: str | None) -> dict[str, int]:
    """`gpu:A100:2(S:0-1),gpu:h100:4,nic:1` -> {"A100": 2, "h100": 4} (GPUs only; an untyped
    `gpu:2` under ""); `(null)` -> {}."""
    out: dict[str, int] = {}
    if not text or text == "(null)":
        return out
    for item in re.split(r",(?![^(]*\))", text):
        item = re.sub(r"\(.*\)$", "", item.strip())
        parts = item.split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        if len(parts) == 2:
            typ, count = ("", parts[1]) if parts[1].isdigit() else (parts[1], "1")
        else:
            typ, count = parts[1], parts[2]
        out[typ] = out.get(typ, 0) + _int(count.split("(")[0], 1)
    return out


def parse_nodes(text: str) -> list[SlurmNode]:
    out = []
    for line in text.splitlines():
        name = _field(line, "NodeName")
        if not name:
            continue
        feats = _field(line, "AvailableFeatures") or ""
        parts = _field(line, "Partitions") or ""
        out.append(SlurmNode(
            name=name, cpus=_int(_field(line, "CPUTot")),
            memory_mb=_int(_field(line, "RealMemory")), gpus=parse_gres(_field(line, "Gres")),
            features=frozenset(f for f in feats.split(",") if f and f != "(null)"),
            partitions=tuple(p for p in parts.split(",") if p and p != "(null)"),
            state=(_field(line, "State") or "").upper(),
            address=_field(line, "NodeAddr") or name))
    return out


def parse_partitions(text: str) -> dict[str, Partition]:
    out = {}
    for line in text.splitlines():
        name = _field(line, "PartitionName")
        if not name:
            continue
        max_nodes = _field(line, "MaxNodes")
        max_time = _field(line, "MaxTime")
        out[name] = Partition(
            name=name, total_nodes=_int(_field(line, "TotalNodes")),
            max_nodes=None if max_nodes in (None, "UNLIMITED") else _int(max_nodes),
            max_time=None if max_time in (None, "UNLIMITED", "INFINITE") else max_time,
            default=_field(line, "Default") == "YES", state=_field(line, "State") or "")
    return out


def read(env: dict[str, str] | None = None) -> Inventory:
    """The cluster's partitions and nodes (SlurmError when Slurm does not answer)."""
    from concurrent.futures import ThreadPoolExecutor

    from jobgroup.backends.slurm.commands import SlurmError, run

    with ThreadPoolExecutor(2) as pool:  # both at once: this is on the way to sbatch
        asked = [pool.submit(run, ["scontrol", "show", what, "-o"], env=env)
                 for what in ("partition", "node")]
        parts, nodes = (f.result() for f in asked)
    if parts.returncode != 0 or nodes.returncode != 0:
        raise SlurmError((parts.stderr or nodes.stderr).strip()[:300] or "scontrol failed")
    return Inventory(parse_partitions(parts.stdout), parse_nodes(nodes.stdout))


def _matches(expr: str | None, features: frozenset[str]) -> bool | None:
    """Whether a node with `features` satisfies constraint `expr` (`a`, `a&b`, `a|b`, mixed
    without brackets); None for forms judged by Slurm alone (brackets, counts)."""
    if not expr:
        return True
    if any(c in expr for c in "[]*()"):
        return None
    return any(all(f.strip() in features for f in conj.split("&"))
               for conj in expr.split("|"))


def _gpu_text(shape: Shape) -> str:
    return f"{shape.gpus} GPU(s) {shape.gpu_type or 'of any type'}"


def _memory(mb: int) -> str:
    return f"{mb / 1024:g} GB ({mb} MB)"


def _cluster_gpus(nodes: list[SlurmNode]) -> str:
    kinds: dict[str, int] = {}
    for n in nodes:
        for typ, count in n.gpus.items():
            kinds[typ] = max(kinds.get(typ, 0), count)
    return ", ".join(f"gpu:{t}:{c}" if t else f"gpu:{c}" for t, c in sorted(kinds.items()))


def _shape_fits(task: Task, shape: Shape, pool: list[SlurmNode], partition: str
                ) -> tuple[Component | None, str]:
    """(the component's resources, "") when at least `num_nodes` nodes of `pool` can each give
    one node of `shape`; else (None, why not) naming the task and the limit."""
    name, n = task.name, task.num_nodes
    cpus = math.ceil(shape.cpus) if shape.cpus else None
    mem = math.ceil(shape.memory_gb * 1024) if shape.memory_gb else None
    if cpus and max((x.cpus for x in pool), default=0) < cpus:
        return None, (f"task '{name}' asks for {cpus} CPUs per node; the nodes of partition "
                      f"{partition} have at most {max((x.cpus for x in pool), default=0)}")
    if mem and max((x.memory_mb for x in pool), default=0) < mem:
        return None, (f"task '{name}' asks for {_memory(mem)} of memory per node; the nodes of "
                      f"partition {partition} have at most "
                      f"{_memory(max((x.memory_mb for x in pool), default=0))}")
    spelled: str | None = None
    if shape.gpus:
        def has(x: SlurmNode) -> int:
            if shape.gpu_type is None:
                return sum(x.gpus.values())
            return sum(c for t, c in x.gpus.items() if t.lower() == shape.gpu_type.lower())

        if not any(has(x) for x in pool):
            there = _cluster_gpus(pool)
            return None, (f"task '{name}' asks for {_gpu_text(shape)} per node; partition "
                          f"{partition} has " + (f"only {there}" if there else "no GPUs"))
        if max(has(x) for x in pool) < shape.gpus:
            return None, (f"task '{name}' asks for {_gpu_text(shape)} per node; the nodes of "
                          f"partition {partition} have at most {max(has(x) for x in pool)}")
        if shape.gpu_type is not None:
            spelled = next(t for x in pool for t in x.gpus
                           if t.lower() == shape.gpu_type.lower())
        ok = [x for x in pool if has(x) >= shape.gpus]
    else:
        ok = list(pool)
    ok = [x for x in ok if (not cpus or x.cpus >= cpus) and (not mem or x.memory_mb >= mem)]
    if len(ok) < n:
        return None, (f"task '{name}' asks for {n} nodes with {shape.describe()} each; "
                      f"partition {partition} has {len(ok)} such node(s)")
    gres = None
    if shape.gpus:
        gres = f"gpu:{spelled}:{shape.gpus}" if spelled else f"gpu:{shape.gpus}"
    return Component(task=task, submit=TaskSubmit(), cpus=cpus, memory_mb=mem, gres=gres), ""


def choose(task: Task, submit: TaskSubmit, shapes: tuple[Shape, ...], inv: Inventory
           ) -> tuple[Component | None, str]:
    """The component of `task`: the first of `shapes` (its alternatives, in the user's order)
    that the cluster can ever give it. (None, refusal) when none can."""
    name = task.name
    part_name = submit.partition or inv.default_partition()
    if part_name is None:
        return None, f"task '{name}': the cluster has no default partition; set one in " \
                     "slurm.yaml (partition) or the task's slurm-partition label"
    part = inv.partitions.get(part_name)
    if part is None:
        return None, (f"task '{name}': partition '{part_name}' does not exist (partitions: "
                      f"{', '.join(inv.partitions) or 'none'})")
    if task.num_nodes > part.total_nodes:
        return None, (f"task '{name}' asks for {task.num_nodes} nodes; partition {part_name} "
                      f"has {part.total_nodes}")
    if part.max_nodes is not None and task.num_nodes > part.max_nodes:
        return None, (f"task '{name}' asks for {task.num_nodes} nodes; partition {part_name} "
                      f"allows at most {part.max_nodes} per job")
    if submit.time and part.max_time:
        want, limit = time_minutes(submit.time), time_minutes(part.max_time)
        if want is not None and limit is not None and want > limit:
            return None, (f"task '{name}' asks for a time limit of {submit.time}; partition "
                          f"{part_name} allows {part.max_time}")
    pool = inv.nodes_of(part_name)
    if submit.constraint:
        matched = [x for x in pool if _matches(submit.constraint, x.features) is not False]
        if not matched:
            feats = sorted({f for x in pool for f in x.features})
            return None, (f"task '{name}' asks for nodes with features '{submit.constraint}'; "
                          f"no node of partition {part_name} has them (features there: "
                          f"{', '.join(feats) or 'none'})")
        pool = matched
    reasons = []
    for shape in shapes:
        comp, why = _shape_fits(task, shape, pool, part_name)
        if comp is not None:
            return Component(task=task, submit=submit, cpus=comp.cpus,
                             memory_mb=comp.memory_mb, gres=comp.gres), ""
        reasons.append(why)
    if len(reasons) > 1:
        return None, reasons[0] + "; its other alternatives do not fit either: " + "; ".join(
            r.split("' ", 1)[-1] for r in reasons[1:])
    return None, reasons[0]


def group_fits(components: list[Component], inv: Inventory) -> str:
    """"" when the partitions have enough nodes for all components at once (a heterogeneous
    job gives each component nodes of its own), else why not."""
    need: dict[str, list[Component]] = {}
    for c in components:
        part = c.submit.partition or inv.default_partition() or ""
        need.setdefault(part, []).append(c)
    for part, comps in need.items():
        total = sum(c.task.num_nodes for c in comps)
        have = inv.partitions[part].total_nodes if part in inv.partitions else 0
        if len(comps) > 1 and total > have:
            each = ", ".join(f"{c.task.name} {c.task.num_nodes}" for c in comps)
            return (f"the group needs {total} nodes of partition {part} at once (a heterogeneous "
                    f"job gives every task nodes of its own: {each}); partition {part} has "
                    f"{have}")
    return ""
