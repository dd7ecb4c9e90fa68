"""Cost of node isolation on the local backend (issue 4). Needs root (network namespaces).

1. Launch overhead: the same 7-node group launched with JOBGROUP_ISOLATION=none and
   =namespaces, side by side in one run (two state directories, two warm controllers, runs
   interleaved). Measured from `api.launch()` to the moment the last of the 7 run commands
   started (each run writes `date +%s.%N` to a file). Overhead per node =
   (median namespaces - median none) / 7.                               budget: <= 25 ms/node
2. Teardown of a 7-node group (1 primary + 6 auxiliaries): from the primary's exit (it writes
   `date +%s.%N` just before `exit 0`) to the job's terminal status (ended_at in the store) and
   to the moment its network namespaces are gone (polled every 2 ms).   budget: <= 300 ms
3. network.create / network.destroy for 7 nodes, called directly.

usage: .venv/bin/python bench/bench_isolation.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobgroup import api
from jobgroup.backends.local import network

NODES = 7
SHAPE = [("trainer", 2), ("rollout", 2), ("reward", 1), ("replay", 1), ("data", 1)]


def launch_spec(stamps: Path) -> str:
    docs = ["name: iso-bench\nexecution: parallel\n"]
    for task, n in SHAPE:
        docs.append(f"name: {task}\nnum_nodes: {n}\n"
                    f"run: date +%s.%N > {stamps}/{task}-$SKYPILOT_NODE_RANK\n")
    return "---\n".join(docs)


def teardown_spec(stamp: Path, go: Path) -> str:
    docs = ["name: iso-down\nexecution: parallel\nprimary_tasks: [trainer]\n"
            "termination_delay: 0s\n",
            f"name: trainer\nrun: |\n  while [ ! -e {go} ]; do sleep 0.01; done\n"
            f"  date +%s.%N > {stamp}\n  exit 0\n"]
    for task, n in [("rollout", 2), ("reward", 2), ("replay", 1), ("data", 1)]:
        docs.append(f"name: {task}\nnum_nodes: {n}\nrun: exec sleep 1000\n")
    return "---\n".join(docs)


def start_controller(home: Path, level: str) -> None:
    env = {**os.environ, "JOBGROUP_HOME": str(home), "JOBGROUP_ISOLATION": level}
    subprocess.run([sys.executable, "-m", "jobgroup", "controller", "start"], env=env,
                   check=True, capture_output=True)
    got = (home / "isolation").read_text().strip()
    if got != level:
        raise SystemExit(f"controller of {home} runs at level {got!r}, not {level!r}")


def stop_controller(home: Path) -> None:
    env = {**os.environ, "JOBGROUP_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "jobgroup", "cancel", "--all"], env=env,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "jobgroup", "controller", "stop"], env=env,
                   capture_output=True)


def one_launch(home: Path, work: Path, run: int) -> float:
    stamps = work / f"stamps-{run}"
    stamps.mkdir()
    spec = work / f"launch-{run}.yaml"
    spec.write_text(launch_spec(stamps))
    t0 = time.time()
    job = api.launch(str(spec), home=home, on_warning=lambda w: None)
    final = api.wait(job.id, home=home, timeout=120)
    if final.status.value != "SUCCEEDED":
        raise SystemExit(f"launch run {run} in {home}: {final.status.value} {final.reason}")
    times = [float(p.read_text()) for p in stamps.iterdir()]
    if len(times) != NODES:
        raise SystemExit(f"only {len(times)} of {NODES} nodes wrote a stamp")
    return max(times) - t0


def one_teardown(home: Path, work: Path, run: int) -> tuple[float, float]:
    stamp, go = work / f"primary-exit-{run}", work / f"go-{run}"
    spec = work / f"down-{run}.yaml"
    spec.write_text(teardown_spec(stamp, go))
    job = api.launch(str(spec), home=home, on_warning=lambda w: None)
    netid = network.net_id(home, job.id)
    deadline = time.monotonic() + 60
    while len(network.existing(netid)["netns"]) < NODES or \
            api.get_job(job.id, home=home).status.value != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit("teardown group never ran")
        time.sleep(0.02)
    time.sleep(0.3)  # every node settled in its run
    go.write_text("")
    while not stamp.exists():
        time.sleep(0.002)
    gone_at = None
    while True:
        try:
            ours = [n for n in os.listdir("/run/netns") if n.startswith(f"jg-{netid}-")]
        except FileNotFoundError:
            ours = []
        if not ours:
            gone_at = time.time()
            break
        if time.monotonic() > deadline + 60:
            raise SystemExit("netns never went away")
        time.sleep(0.002)
    final = api.wait(job.id, home=home, timeout=60)
    if final.status.value != "SUCCEEDED":
        raise SystemExit(f"teardown run {run}: {final.status.value} {final.reason}")
    exited = float(stamp.read_text())
    return final.ended_at - exited, gone_at - exited


def direct_network(work: Path, runs: int) -> tuple[list[float], list[float]]:
    home = work / "direct-home"
    create, destroy = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        net = network.create(home, 9000 + i, NODES)
        t1 = time.perf_counter()
        network.destroy(net.netid)
        t2 = time.perf_counter()
        create.append(t1 - t0)
        destroy.append(t2 - t1)
        if any(network.existing(net.netid).values()):
            raise SystemExit(f"network.destroy left {network.existing(net.netid)}")
    return create, destroy


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"{statistics.median(xs) * 1000:.1f} ms [p90 {p90 * 1000:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the namespaces level creates network namespaces")
    os.environ.pop("JOBGROUP_ISOLATION", None)
    with tempfile.TemporaryDirectory(prefix="jg-bench-iso-") as tmp:
        work = Path(tmp)
        homes = {lvl: work / f"home-{lvl}" for lvl in ("none", "namespaces")}
        for lvl, home in homes.items():
            start_controller(home, lvl)
        try:
            for lvl, home in homes.items():  # warm-up (shim cache, first imports)
                (work / lvl).mkdir()
                one_launch(home, work / lvl, -1)
            launch = {lvl: [] for lvl in homes}
            for run in range(args.runs):
                for lvl, home in homes.items():
                    launch[lvl].append(one_launch(home, work / lvl, run))
            down_status, down_netns = [], []
            for run in range(args.runs):
                s, n = one_teardown(homes["namespaces"], work / "namespaces", run)
                down_status.append(s)
                down_netns.append(n)
            create, destroy = direct_network(work, max(args.runs, 10))
        finally:
            for home in homes.values():
                stop_controller(home)
        left = network.existing(network.home_tag(homes["namespaces"]))
        overhead = (statistics.median(launch["namespaces"]) -
                    statistics.median(launch["none"])) / NODES
        result = {
            "runs": args.runs, "nodes": NODES,
            "launch_to_all_started_s": {k: v for k, v in launch.items()},
            "overhead_ms_per_node": overhead * 1000,
            "teardown_to_terminal_s": down_status, "teardown_to_netns_gone_s": down_netns,
            "network_create_s": create, "network_destroy_s": destroy,
            "leftovers": left,
        }
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"{NODES}-node group, {args.runs} interleaved runs per level; medians [p90]")
        for lvl in homes:
            print(f"  launch -> all {NODES} runs started, {lvl:10s}: {ms(launch[lvl])}")
        verdict = "ok" if overhead * 1000 <= 25 else "OVER BUDGET"
        print(f"  isolation overhead per node: {overhead * 1000:.1f} ms (budget 25 ms) {verdict}")
        for name, xs in (("primary exit -> job terminal", down_status),
                         ("primary exit -> netns gone", down_netns)):
            verdict = "ok" if statistics.median(xs) <= 0.3 else "OVER BUDGET"
            print(f"  teardown, {name}: {ms(xs)} (budget 300 ms) {verdict}")
        print(f"  network.create({NODES} nodes): {ms(create)}")
        print(f"  network.destroy({NODES} nodes): {ms(destroy)}")
        if any(left.values()):
            print(f"  LEFTOVERS: {left}")


if __name__ == "__main__":
    main()
