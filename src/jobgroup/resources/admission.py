"""All-or-nothing admission of pending groups on this machine: a pure scheduling pass.

`schedule(inventory, allocations, queue)` decides, from stored state only, which pending groups
start now and on which GPUs, why each other group waits, and which can never start here.

The rule (FIFO with backfill; the head of the queue is never delayed):

1. Groups are considered in `queue` order (FIFO: submission order).
2. A group is admitted only when ALL its nodes fit at once in what is free (CPUs and memory are
   pooled; each GPU goes to at most one node). Each task's alternatives are tried in the user's
   order; all nodes of a task use the same alternative.
3. A group that could not fit even on the empty machine is *infeasible*: it is returned in
   `Decision.infeasible` with the reason (the controller fails it as FAILED_NO_RESOURCE). It never
   blocks anyone.
4. The first group that does not fit now (and is feasible) is the *head*. Free resources the head
   could use are kept for it: CPUs and memory up to its need (the largest alternative per task,
   summed over tasks), and the free GPUs that any of its alternatives could take, up to each
   alternative's count. Groups behind the head are admitted in FIFO order if they fit in what
   remains (*backfill*); they never touch what is kept for the head.
   Consequence: at every pass the head has at least as much usable free capacity as it would
   have had with no backfill (resources are only released by ending jobs, and the head is served
   first on each pass), so a later group never delays the head. Groups behind the head are not
   protected: they may be overtaken by backfill until they become the head themselves.
5. Every group left pending gets a human reason, e.g.
   ``waiting for 2 GPU(s) H100: 1 free, 3 held by jobs 1, 2`` or
   ``waiting for 2 CPU(s): 1 free but kept for job 4 (first in the queue), 3 held by job 2``.

A best-effort group (no cpus/memory/accelerators anywhere) always fits and reserves nothing.
The pass is O(groups × tasks × alternatives) with small constants: 15-30 ms for 1,000
pending groups on a 2-CPU machine (bench/bench_admission.py).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import msgspec

from jobgroup.resources.inventory import Gpu, Inventory, gpu_matches
from jobgroup.resources.requests import GroupRequest, Shape, TaskRequest

EPS = 1e-9
_SEARCH_BUDGET = 512  # alternative combinations tried per group before giving up


class NodeAlloc(msgspec.Struct, frozen=True):
    """What node (`task_idx`, `rank`) of a job holds: CPUs and memory (GB) to reserve and limit
    (0 = unlimited, best-effort) and its GPU indices (disjoint from every other node's)."""

    task_idx: int
    rank: int
    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: tuple[int, ...] = ()
    gpu_type: str | None = None

    def env(self) -> dict[str, str]:
        """Variables for the node's processes: ``CUDA_VISIBLE_DEVICES`` (its GPU indices, ``""``
        when it has none, so it cannot use another node's), ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
        (so CUDA numbers GPUs as nvidia-smi does) and ``SKYPILOT_NUM_GPUS_PER_NODE``."""
        return {
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in self.gpus),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "SKYPILOT_NUM_GPUS_PER_NODE": str(len(self.gpus)),
        }

    @property
    def best_effort(self) -> bool:
        return not self.cpus and not self.memory_gb and not self.gpus


class Placement(msgspec.Struct, frozen=True):
    """Where an admitted group's nodes go: one `NodeAlloc` per node, every node of the request
    (best-effort ones included, with nothing reserved). Encodable with msgspec (store it)."""

    job_id: int
    nodes: tuple[NodeAlloc, ...]

    def node(self, task_idx: int, rank: int) -> NodeAlloc:
        """The allocation of one node (KeyError if the placement has no such node)."""
        for n in self.nodes:
            if n.task_idx == task_idx and n.rank == rank:
                return n
        raise KeyError((task_idx, rank))


class Pending(msgspec.Struct, frozen=True):
    """A group waiting for admission: its job id and what it needs at once."""

    job_id: int
    request: GroupRequest


class Waiting(msgspec.Struct, frozen=True):
    job_id: int
    reason: str


class Infeasible(msgspec.Struct, frozen=True):
    job_id: int
    reason: str


class Decision(msgspec.Struct, frozen=True):
    """The result of one pass. Every pending group is in exactly one of `admitted` (in queue
    order), `waiting` or `infeasible`. `head` is the job id of the head (rule 4), if any."""

    admitted: tuple[Placement, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    infeasible: tuple[Infeasible, ...] = ()
    head: int | None = None


def encode_placement(p: Placement) -> bytes:
    return msgspec.json.encode(p)


def decode_placement(data: bytes | str) -> Placement:
    return msgspec.json.decode(data, type=Placement)


# ---- the machine's state during one pass ----------------------------------------------------


def _jobs(ids: Iterable[int]) -> str:
    """``job 3`` / ``jobs 1, 2``."""
    ids = sorted(set(ids))
    if not ids:
        return ""
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(str(i) for i in ids)


class _Machine:
    """Free CPUs, memory and GPUs, who holds the rest, and GPU type matching (cached)."""

    def __init__(self, inv: Inventory, allocations: Mapping[int, object]) -> None:
        self.inv = inv
        self.gpus: dict[int, Gpu] = {g.index: g for g in inv.gpus}
        self.holder: dict[int, int] = {}
        self.cpu_holders: dict[int, float] = {}
        self.mem_holders: dict[int, float] = {}
        cpus, mem = inv.cpus, inv.memory_gb
        for job_id, allocs in allocations.items():
            nodes = getattr(allocs, "nodes", allocs)
            for a in nodes:  # type: ignore[union-attr]
                if a.cpus:
                    cpus -= a.cpus
                    self.cpu_holders[job_id] = self.cpu_holders.get(job_id, 0.0) + a.cpus
                if a.memory_gb:
                    mem -= a.memory_gb
                    self.mem_holders[job_id] = self.mem_holders.get(job_id, 0.0) + a.memory_gb
                for g in a.gpus:
                    if g in self.gpus:
                        self.holder[g] = job_id
        self.cpus, self.mem = cpus, mem
        self.free = [g.index for g in inv.gpus if g.index not in self.holder]
        self._match: dict[str | None, frozenset[int]] = {None: frozenset(self.gpus)}
        self._texts: dict[str | None, str] = {}
        self.all_gpus = sorted(self.gpus)
        if len(_FEASIBLE) > 8 and inv not in _FEASIBLE:
            _FEASIBLE.clear()
        self.feasible_memo = _FEASIBLE.setdefault(inv, {})

    def matching(self, gpu_type: str | None) -> frozenset[int]:
        m = self._match.get(gpu_type)
        if m is None:
            m = self._match[gpu_type] = frozenset(
                i for i, g in self.gpus.items() if gpu_matches(gpu_type, g))  # type: ignore[arg-type]
        return m

    def holders_text(self, key: str | None, ids: Iterable[int]) -> str:
        """`_jobs(ids)`, cached per kind of resource until the next `take`."""
        text = self._texts.get(key)
        if text is None:
            text = self._texts[key] = _jobs(ids)
        return text

    def take(self, placement: Placement) -> None:
        self._texts.clear()
        for n in placement.nodes:
            if n.cpus:
                self.cpus -= n.cpus
                self.cpu_holders[placement.job_id] = self.cpu_holders.get(placement.job_id, 0) + n.cpus
            if n.memory_gb:
                self.mem -= n.memory_gb
                self.mem_holders[placement.job_id] = self.mem_holders.get(placement.job_id, 0) + n.memory_gb
            for g in n.gpus:
                self.holder[g] = placement.job_id
        if any(n.gpus for n in placement.nodes):
            held = self.holder
            self.free = [g for g in self.free if g not in held]


def _fit(m: _Machine, tasks: Sequence[TaskRequest], cpus: float, mem: float,
         free: Sequence[int]) -> list[tuple[Shape, list[int]]] | None:
    """A choice of (shape, GPU indices) per task such that everything fits in `cpus`, `mem`
    and `free` GPUs, or None. Depth-first over alternatives in preference order (bounded).
    GPUs are taken lowest index first."""
    n_tasks = len(tasks)
    # Quick reject: even the smallest alternative of every task does not fit in aggregate.
    min_c = min_m = 0.0
    min_g = 0
    for t in tasks:
        shapes = t.shapes
        if len(shapes) == 1:
            s0 = shapes[0]
            min_c += s0.cpus * t.num_nodes
            min_m += s0.memory_gb * t.num_nodes
            min_g += s0.gpus * t.num_nodes
        else:
            min_c += min(s.cpus for s in shapes) * t.num_nodes
            min_m += min(s.memory_gb for s in shapes) * t.num_nodes
            min_g += min(s.gpus for s in shapes) * t.num_nodes
    if min_c > cpus + EPS or min_m > mem + EPS or min_g > len(free):
        return None
    choice: list[tuple[Shape, list[int]]] = [(Shape(), [])] * n_tasks
    taken: set[int] = set()
    budget = [_SEARCH_BUDGET]

    def rec(i: int, cpus: float, mem: float) -> bool:
        if i == n_tasks:
            return True
        t = tasks[i]
        n = t.num_nodes
        for s in t.shapes:
            nc, nm = s.cpus * n, s.memory_gb * n
            if nc > cpus + EPS or nm > mem + EPS:
                continue
            picked: list[int] = []
            if s.gpus:
                k = s.gpus * n
                match = m.matching(s.gpu_type)
                picked = [g for g in free if g in match and g not in taken][:k]
                if len(picked) < k:
                    continue
                taken.update(picked)
            choice[i] = (s, picked)
            if rec(i + 1, cpus - nc, mem - nm):
                return True
            taken.difference_update(picked)
            budget[0] -= 1
            if budget[0] <= 0:
                return False
        return False

    return choice if rec(0, cpus, mem) else None


_FEASIBLE: dict[Inventory, dict[GroupRequest, bool]] = {}


def _feasible(m: _Machine, req: GroupRequest) -> bool:
    """Whether `req` fits on the empty machine (memoized: it depends on nothing else)."""
    memo = m.feasible_memo
    ok = memo.get(req)
    if ok is None:
        if len(memo) > 8192:
            memo.clear()
        ok = memo[req] = _fit(m, req.tasks, m.inv.cpus, m.inv.memory_gb, m.all_gpus) is not None
    return ok


def _placement(m: _Machine, job_id: int, request: GroupRequest,
               choice: list[tuple[Shape, list[int]]]) -> Placement:
    nodes = []
    for t, (s, gpus) in zip(request.tasks, choice):
        for r in range(t.num_nodes):
            mine = tuple(gpus[r * s.gpus:(r + 1) * s.gpus])
            gtype = m.gpus[mine[0]].type if mine else None
            nodes.append(NodeAlloc(t.idx, r, s.cpus, s.memory_gb, mine, gtype))
    return Placement(job_id, tuple(nodes))


# ---- reasons --------------------------------------------------------------------------------


def _need(request: GroupRequest) -> tuple[float, float, dict[str | None, int]]:
    """Aggregate need of the preferred alternative of every task."""
    cpus = mem = 0.0
    gpus: dict[str | None, int] = {}
    for t in request.tasks:
        s = t.shapes[0]
        cpus += s.cpus * t.num_nodes
        mem += s.memory_gb * t.num_nodes
        if s.gpus:
            gpus[s.gpu_type] = gpus.get(s.gpu_type, 0) + s.gpus * t.num_nodes
    return cpus, mem, gpus


def _amount(x: float) -> str:
    return f"{x:g}" if x >= 0.01 or x == 0 else f"{x:.3f}"


def _wait_reason(m: _Machine, request: GroupRequest, kept_cpus: float, kept_mem: float,
                 kept_gpus: frozenset[int], head: int | None) -> str:
    cpus, mem, gpus = _need(request)
    parts: list[str] = []
    kept_by = f"kept for job {head} (first in the queue)"

    def scalar(label: str, need: float, free: float, kept: float, holders: dict[int, float]) -> None:
        avail = free - kept
        if need <= avail + EPS:
            return
        bits = [f"{_amount(max(avail, 0.0))} free"]
        if kept > EPS:
            bits = [f"{_amount(max(free, 0.0))} free but {_amount(kept)} {kept_by}"]
        held = sum(holders.values())
        if held > EPS:
            bits.append(f"{_amount(held)} held by {m.holders_text(label, holders)}")
        parts.append(f"{label.format(_amount(need))}: {', '.join(bits)}")

    for gtype, need in gpus.items():
        match = m.matching(gtype)
        name = gtype or "of any type"
        if not match:
            parts.append(f"{need} GPU(s) {name}: this machine has none")
            continue
        free = [g for g in m.free if g in match]
        kept = [g for g in free if g in kept_gpus]
        if need <= len(free) - len(kept):
            continue
        held_by = [m.holder[g] for g in match if g in m.holder]
        bits = [f"{len(free)} free"]
        if kept:
            bits = [f"{len(free)} free but {len(kept)} {kept_by}"]
        if held_by:
            bits.append(f"{len(held_by)} held by {m.holders_text(gtype, held_by)}")
        parts.append(f"{need} GPU(s) {name}: {', '.join(bits)}")
    scalar("{} CPU(s)", cpus, m.cpus, kept_cpus, m.cpu_holders)
    scalar("{} GB memory", mem, m.mem, kept_mem, m.mem_holders)
    alts = sum(len(t.shapes) > 1 for t in request.tasks)
    if not parts:
        # Each kind fits alone under the preferred alternatives, yet not together.
        return "waiting for resources: its nodes do not fit together in what is free"
    tail = " (and no alternative fits)" if alts else ""
    return "waiting for " + "; ".join(parts) + tail


def _infeasible_reason(m: _Machine, request: GroupRequest) -> str:
    inv = m.inv
    for t in request.tasks:
        if _fit(m, [t], inv.cpus, inv.memory_gb, m.all_gpus) is not None:
            continue
        s = t.shapes[0]
        n = t.num_nodes
        per = f"{n} node(s) × " if n > 1 else ""
        who = f"task '{t.name}'"
        other = f" (nor any of its {len(t.shapes) - 1} other alternative(s))" if len(t.shapes) > 1 else ""
        if s.gpus:
            match = m.matching(s.gpu_type)
            types = inv.gpu_types()
            if not match:
                have = (", ".join(f"{c} {k}" for k, c in types.items()) if types else "no GPUs")
                hint = ("use --gpus any to accept any GPU type, or --cpu-only to run without GPUs"
                        if types else "use --cpu-only to run it without GPUs")
                return (f"{who} needs {per}{s.gpus} GPU(s) {s.gpu_type}{other} but this machine "
                        f"has {have} ({hint})")
            if s.gpus * n > len(match):
                return (f"{who} needs {per}{s.gpus} GPU(s) {s.gpu_type or 'of any type'}{other} "
                        f"but this machine offers {len(match)}")
        if s.cpus * n > inv.cpus + EPS:
            return (f"{who} needs {per}{s.cpus:g} CPU(s){other} but this machine offers "
                    f"{inv.cpus:g}")
        if s.memory_gb * n > inv.memory_gb + EPS:
            return (f"{who} needs {per}{s.memory_gb:g} GB memory{other} but this machine offers "
                    f"{inv.memory_gb:.1f} GB")
        return f"{who} needs {per}{s.describe()}{other}: more than this machine offers"
    cpus, mem, gpus = _need(request)
    have = f"{inv.cpus:g} CPU(s), {inv.memory_gb:.1f} GB, {len(inv.gpus)} GPU(s)"
    need = [f"{_amount(cpus)} CPU(s)" if cpus else "", f"{_amount(mem)} GB" if mem else ""]
    need += [f"{c} GPU(s) {k or 'of any type'}" for k, c in gpus.items()]
    return (f"the group needs {', '.join(x for x in need if x)} at once but this machine offers "
            f"{have}")


# ---- the pass -------------------------------------------------------------------------------


def schedule(inventory: Inventory, allocations: Mapping[int, Sequence[NodeAlloc] | Placement],
             queue: Sequence[Pending]) -> Decision:
    """One admission pass (pure; see the module docstring for the rule).

    `allocations`: what running groups hold, job id -> its `Placement` (or its NodeAllocs); pass
    every job that holds resources (STARTING/RUNNING/CANCELLING, until all its nodes ended).
    `queue`: the pending groups in FIFO order. Returns admitted placements (the caller starts
    them and records their placements; they count as allocations on the next pass), a reason
    for every waiting group and the infeasible groups (never admitted on this machine).
    """
    m = _Machine(inventory, allocations)
    admitted: list[Placement] = []
    waiting: list[Waiting] = []
    infeasible: list[Infeasible] = []
    head: int | None = None
    kept_cpus = kept_mem = 0.0
    kept_gpus: frozenset[int] = frozenset()
    for p in queue:
        req = p.request
        free = m.free if not kept_gpus else [g for g in m.free if g not in kept_gpus]
        choice = _fit(m, req.tasks, m.cpus - kept_cpus, m.mem - kept_mem, free)
        if choice is not None:
            placement = _placement(m, p.job_id, req, choice)
            m.take(placement)
            admitted.append(placement)
            continue
        if not _feasible(m, req):
            infeasible.append(Infeasible(p.job_id, _infeasible_reason(m, req)))
            continue
        if head is None:
            head = p.job_id
            waiting.append(Waiting(p.job_id, _wait_reason(m, req, 0.0, 0.0, frozenset(), None)))
            kept_cpus, kept_mem, kept_gpus = _keep_for_head(m, req)
            continue
        waiting.append(Waiting(p.job_id, _wait_reason(m, req, kept_cpus, kept_mem, kept_gpus, head)))
    return Decision(tuple(admitted), tuple(waiting), tuple(infeasible), head)


def _keep_for_head(m: _Machine, req: GroupRequest) -> tuple[float, float, frozenset[int]]:
    """What the head could use of what is free now (rule 4)."""
    cpus = sum(max(s.cpus for s in t.shapes) * t.num_nodes for t in req.tasks)
    mem = sum(max(s.memory_gb for s in t.shapes) * t.num_nodes for t in req.tasks)
    kept: set[int] = set()
    for t in req.tasks:
        mine: set[int] = set()
        for s in t.shapes:
            if s.gpus:
                match = m.matching(s.gpu_type)
                mine.update([g for g in m.free if g in match and g not in kept][: s.gpus * t.num_nodes])
        kept |= mine
    return min(cpus, max(m.cpus, 0.0)), min(mem, max(m.mem, 0.0)), frozenset(kept)


def infeasible_reason(inventory: Inventory, request: GroupRequest) -> str | None:
    """Why `request` can never be admitted on this machine (even empty), or None if it can.
    Use it at launch to fail early (FAILED_NO_RESOURCE) before the job waits in the queue."""
    m = _Machine(inventory, {})
    if _fit(m, request.tasks, inventory.cpus, inventory.memory_gb, m.all_gpus) is not None:
        return None
    return _infeasible_reason(m, request)


def place(inventory: Inventory, allocations: Mapping[int, Sequence[NodeAlloc] | Placement],
          job_id: int, request: GroupRequest) -> Placement | None:
    """A placement of `request` in what `allocations` leave free, ignoring the queue (e.g. to
    re-derive the placement of a job that started before placements were stored), or None."""
    m = _Machine(inventory, allocations)
    choice = _fit(m, request.tasks, m.cpus, m.mem, m.free)
    return None if choice is None else _placement(m, job_id, request, choice)
