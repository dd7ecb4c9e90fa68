"""One admission pass over 1,000 pending groups (budget: <= 50 ms, median).

usage: python bench/bench_admission.py [--groups 1000] [--runs 15]

Scenarios (fake 8-GPU machine: H100:4,A100:4, 32 CPUs, 256 GB):
- busy: most GPUs and CPUs held by 6 running jobs, so nearly every group waits (the worst case:
  each waiting group is tried, checked for feasibility and given a reason); a realistic mix of
  1-3 task groups, 1-2 nodes per GPU task and 1-4 otherwise, alternatives (`[H100:1, A100:1]`), CPU-only, best-effort and ~5%
  infeasible groups.
- idle: the same queue on an empty machine (admits what fits, then backfills).
- head: a 4-GPU head first, then 999 small 1-GPU/CPU groups (backfill against the kept set).
"cold" is the busy pass with the feasibility memo empty (the first pass after a controller
start). Requests are built once outside the timed pass (the controller caches them per job); building
them from specs is timed separately.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from jobgroup.resources import admission
from jobgroup.resources.admission import NodeAlloc, Pending, schedule
from jobgroup.resources.inventory import build, parse_fake_gpus
from jobgroup.resources.requests import job_request
from jobgroup.spec import load

TASKS = [
    "resources: {accelerators: H100:1, cpus: 2, memory: 8}",
    "resources: {accelerators: [H100:1, A100:1], cpus: 1}",
    "resources: {accelerators: A100:2}",
    "resources: {cpus: 4, memory: 16}",
    "resources: {cpus: 1}",
    "",  # best-effort
]


def make_spec(rng: random.Random, i: int) -> str:
    docs = [f"name: g{i}\nexecution: parallel\n"]
    for t in range(rng.randint(1, 3)):
        res = rng.choice(TASKS)
        if rng.random() < 0.05:
            res = "resources: {accelerators: H100:8}"  # infeasible here
        nodes = rng.randint(1, 2) if "accelerators" in res else rng.randint(1, 4)
        docs.append(f"name: t{t}\nnum_nodes: {nodes}\n{res}\nrun: 'true'\n")
    return "---\n".join(docs)


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs):.1f} ms [p90 {xs[int(0.9 * (len(xs) - 1))]:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    rng = random.Random(5)
    inv = build(cpus=32, memory_gb=256, gpus=parse_fake_gpus("H100:4,A100:4"), gpu_source="fake")
    specs = [make_spec(rng, i) for i in range(a.groups)]
    groups = [load(s) for s in specs]
    t0 = time.perf_counter()
    queue = [Pending(i + 100, job_request(g, {})) for i, g in enumerate(groups)]
    build_ms = (time.perf_counter() - t0) * 1000
    busy = {i: [NodeAlloc(0, 0, 4, 32, (i,) if i < 3 else (i + 1,))] for i in range(6)}
    busy[6] = [NodeAlloc(0, 0, 6, 32)]
    small = [Pending(1, job_request(load(
        "name: head\n---\nname: t\nresources: {accelerators: H100:4}\nrun: x\n"), {}))]
    small += [Pending(i + 2, job_request(load(make_spec(rng, i)), {}))
              for i in range(a.groups - 1)]
    head_alloc = {0: [NodeAlloc(0, 0, 2, 8, (0,))]}

    d = schedule(inv, busy, queue)
    print(f"busy: {len(d.admitted)} admitted, {len(d.waiting)} waiting, "
          f"{len(d.infeasible)} infeasible; e.g. {d.waiting[0].reason!r}")
    d2 = schedule(inv, {}, queue)
    print(f"idle: {len(d2.admitted)} admitted, {len(d2.waiting)} waiting")
    d3 = schedule(inv, head_alloc, small)
    print(f"head: head job {d3.head}, {len(d3.admitted)} backfilled, {len(d3.waiting)} waiting")
    # interleave the scenarios so machine noise hits them alike
    res: dict[str, list[float]] = {"busy": [], "idle": [], "head": [], "busy, cold": []}
    for _ in range(a.runs):
        admission._FEASIBLE.clear()  # first pass after a controller start: nothing memoized
        res["busy, cold"] += timed(lambda: schedule(inv, busy, queue), 1)
        res["busy"] += timed(lambda: schedule(inv, busy, queue), 1)
        res["idle"] += timed(lambda: schedule(inv, {}, queue), 1)
        res["head"] += timed(lambda: schedule(inv, head_alloc, small), 1)
    nodes = sum(p.request.num_nodes for p in queue)
    print(f"{a.groups} pending groups ({nodes} nodes), {a.runs} runs:")
    for k, v in res.items():
        print(f"  pass ({k}): {summary(v)}")
    print(f"  building {a.groups} requests from loaded specs (once per job): {build_ms:.1f} ms")


if __name__ == "__main__":
    main()
