"""Cost of node isolation on the local backend (issues 4 and 15). Needs root (network
namespaces, overlays, nftables).

1. Launch overhead: the same 7-node group launched with JOBGROUP_ISOLATION=none and
   =namespaces — the latter with everything a node gets since issue 15 (its own root overlay,
   /dev/shm, IPC, and egress: NAT + DNS), and again with --no-egress — side by side in one run
   (two state directories, two warm controllers, runs interleaved). Measured from
   `api.launch()` to the moment the last of the 7 run commands started (each run writes
   `date +%s.%N` into its working directory, which is shared with the host). Overhead per
   node = (median namespaces - median none) / 7.                        budget: <= 15 ms/node
2. Teardown of a 7-node group (1 primary + 6 auxiliaries, with egress): from the primary's exit
   (it writes `date +%s.%N` just before `exit 0`) to the job's terminal status (ended_at in
   the store), to the moment its network namespaces are gone and to the moment its nftables
   table is gone (polled every 2 ms).                                    budget: <= 300 ms
3. What an idle node left in its own root: the bytes its `disk` event reports (files the node
   wrote) and `du` of its root directory (the directories made for mount points).  budget: ~0
4. network.ensure / network.teardown for 7 nodes called directly, with and without egress.
5. The node helper alone (`nodehost.c`): `true` exec'd through it with the private root and
   /dev/shm, through its light view (no root overlay), through the shell view issue 4 used
   (`unshare` + `sh` + `mount` + `hostname`), and plain `true`.

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
from jobgroup.backends.local import egress, network, rootfs

NODES = 7
SHAPE = [("trainer", 2), ("rollout", 2), ("reward", 1), ("replay", 1), ("data", 1)]


def launch_spec() -> str:
    docs = ["name: iso-bench\nexecution: parallel\n"]
    for task, n in SHAPE:
        # The node's working directory is shared with the host (its root is not).
        docs.append(f"name: {task}\nnum_nodes: {n}\nrun: date +%s.%N > started\n")
    return "---\n".join(docs)


def teardown_spec(stamp: str, go: str) -> str:
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


def one_launch(home: Path, work: Path, run: int, no_egress: bool = False) -> tuple[float, int]:
    spec = work / f"launch-{run}.yaml"
    spec.write_text(launch_spec())
    t0 = time.time()
    job = api.launch(str(spec), home=home, on_warning=lambda w: None, no_egress=no_egress)
    final = api.wait(job.id, home=home, timeout=120)
    if final.status.value != "SUCCEEDED":
        raise SystemExit(f"launch run {run} in {home}: {final.status.value} {final.reason}")
    work_dirs = home / "jobs" / str(job.id) / "work"
    times = [float(p.read_text()) for p in work_dirs.glob("*/started")]
    if len(times) != NODES:
        raise SystemExit(f"only {len(times)} of {NODES} nodes wrote a stamp")
    return max(times) - t0, job.id


def one_teardown(home: Path, work: Path, run: int) -> dict[str, float]:
    # The stamps live in the state directory, which nodes share with the host.
    stamp, go = home / f"primary-exit-{run}", home / f"go-{run}"
    spec = work / f"down-{run}.yaml"
    spec.write_text(teardown_spec(str(stamp), str(go)))
    job = api.launch(str(spec), home=home, on_warning=lambda w: None)
    netid = network.net_id(home, job.id)
    deadline = time.monotonic() + 60
    while len(network.existing(netid)["netns"]) < NODES or \
            api.get_job(job.id, home=home).status.value != "RUNNING":
        if time.monotonic() > deadline:
            raise SystemExit("teardown group never ran")
        time.sleep(0.02)
    time.sleep(0.3)  # every node settled in its run
    if not egress.has_table(netid):
        raise SystemExit("the group has no NAT table: is nft installed?")
    go.write_text("")
    while not stamp.exists():
        time.sleep(0.002)
    netns_gone = table_gone = None
    while netns_gone is None or table_gone is None:
        now = time.time()
        if netns_gone is None and not any(n.startswith(f"jg-{netid}-")
                                          for n in os.listdir("/run/netns")):
            netns_gone = now
        # teardown removes the record after the table (network.destroy): a file to poll
        # instead of an nft exec every 2 ms
        if table_gone is None and not os.path.exists(network.record_path(home, job.id)):
            table_gone = now
        if time.monotonic() > deadline + 60:
            raise SystemExit("the network or its table never went away")
        time.sleep(0.002)
    final = api.wait(job.id, home=home, timeout=60)
    if final.status.value != "SUCCEEDED":
        raise SystemExit(f"teardown run {run}: {final.status.value} {final.reason}")
    if egress.has_table(netid):
        raise SystemExit("the group's NAT table outlived its network record")
    exited = float(stamp.read_text())
    return {"terminal": final.ended_at - exited, "netns": netns_gone - exited,
            "table": table_gone - exited}


def idle_upper(home: Path, job_id: int) -> dict[str, object]:
    """What the idle nodes of a launch run left in their own roots."""
    events = [e for e in api.events(job_id, home=home) if e.kind == "disk"]
    du = subprocess.run(["du", "-sb", str(rootfs.roots_dir(home, job_id))],
                        capture_output=True, text=True).stdout.split()
    return {"disk_events": [e.message for e in events],
            "files_bytes": sum(b for b, _ in rootfs.job_usage(home, job_id).values()),
            "du_bytes": int(du[0]) if du else None}


def direct_network(work: Path, runs: int) -> dict[str, list[float]]:
    home = work / "direct-home"
    out: dict[str, list[float]] = {"ensure": [], "teardown": [], "ensure_egress": [],
                                   "teardown_egress": []}
    servers = egress.resolv_for_nodes()[1]
    for i in range(runs):
        for with_egress in (False, True):
            suffix = "_egress" if with_egress else ""
            t0 = time.perf_counter()
            net = network.ensure(home, 9000 + i, NODES, egress=with_egress,
                                 dns=tuple(servers))
            t1 = time.perf_counter()
            network.teardown(home, 9000 + i)
            t2 = time.perf_counter()
            out["ensure" + suffix].append(t1 - t0)
            out["teardown" + suffix].append(t2 - t1)
            if any(network.existing(net.netid).values()) or egress.has_table(net.netid):
                raise SystemExit(f"network.teardown left {network.existing(net.netid)}")
    return out


def helper_costs(work: Path, runs: int) -> dict[str, list[float]]:
    helper = rootfs.helper_path()
    state = work / "helper-state"
    hosts = state / "hosts"
    state.mkdir()
    hosts.write_text("127.0.0.1 localhost\n")
    shell = ('mount --bind "$1" /etc/hosts && hostname "$2" && exec "$@"')
    variants = {
        "true": ["true"],
        "issue-4 shell view (unshare+sh+mount+hostname)": [
            "unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c",
            shell.replace('exec "$@"', "exec true"), "v", str(hosts), "n-0"],
        "helper, light view (+ /dev/shm)": [helper, "-h", "n-0", "-s", "-", "-f", str(hosts),
                                            "/etc/hosts", "--", "true"],
        "helper, private root + /dev/shm": [
            helper, "-h", "n-0", "-r", str(state / "roots" / "n-0"), "-s", "-",
            "-b", str(state), str(state), "-f", str(hosts), "/etc/hosts",
            "-x", str(state / "roots"), "--", "true"],
    }
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(runs):
        for name, argv in variants.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True)
            out[name].append(time.perf_counter() - t0)
    return out


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
        if rootfs.private_root_problem(homes["namespaces"]):
            raise SystemExit(f"no private root here: "
                             f"{rootfs.private_root_problem(homes['namespaces'])}")
        kinds = {"none": (homes["none"], False), "namespaces": (homes["namespaces"], False),
                 "namespaces --no-egress": (homes["namespaces"], True)}
        try:
            for kind, (home, sealed) in kinds.items():  # warm-up (shim cache, first imports)
                (work / kind).mkdir()
                one_launch(home, work / kind, -1, sealed)
            launch: dict[str, list[float]] = {k: [] for k in kinds}
            last: dict[str, int] = {}
            for run in range(args.runs):
                for kind, (home, sealed) in kinds.items():
                    took, last[kind] = one_launch(home, work / kind, run, sealed)
                    launch[kind].append(took)
            idle = idle_upper(homes["namespaces"], last["namespaces"])  # 7 nodes: date > file
            down = [one_teardown(homes["namespaces"], work / "namespaces", run)
                    for run in range(args.runs)]
            direct = direct_network(work, max(args.runs, 10))
            helper = helper_costs(work, max(args.runs * 3, 30))
        finally:
            for home in homes.values():
                stop_controller(home)
        left = network.existing(network.home_tag(homes["namespaces"]))
        left_tables = egress.tables(network.home_tag(homes["namespaces"]))
        base = statistics.median(launch["none"])
        overhead = {k: (statistics.median(v) - base) / NODES for k, v in launch.items()
                    if k != "none"}
        result = {
            "runs": args.runs, "nodes": NODES,
            "launch_to_all_started_s": launch,
            "overhead_ms_per_node": {k: v * 1000 for k, v in overhead.items()},
            "teardown_s": down, "idle_upper": idle, "direct_network_s": direct,
            "helper_s": helper, "leftovers": left, "leftover_tables": left_tables,
        }
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"{NODES}-node group, {args.runs} interleaved runs per kind; medians [p90]")
        for kind in kinds:
            print(f"  launch -> all {NODES} runs started, {kind:24s}: {ms(launch[kind])}")
        for kind, value in overhead.items():
            verdict = "ok" if value * 1000 <= 15 else "OVER BUDGET"
            print(f"  overhead per node, {kind:24s}: {value * 1000:.1f} ms (budget 15 ms) "
                  f"{verdict}")
        for name in ("terminal", "netns", "table"):
            xs = [d[name] for d in down]
            verdict = "ok" if statistics.median(xs) <= 0.3 else "OVER BUDGET"
            print(f"  teardown, primary exit -> {name + (' gone' if name != 'terminal' else ''):14s}"
                  f": {ms(xs)} (budget 300 ms) {verdict}")
        print(f"  idle nodes' own roots: files {idle['files_bytes']} B, du {idle['du_bytes']} B "
              f"(7 nodes; directories of mount points)")
        for name, xs in direct.items():
            print(f"  network.{name.split('_')[0]}({NODES} nodes"
                  f"{', egress' if name.endswith('egress') else ''}): {ms(xs)}")
        for name, xs in helper.items():
            print(f"  {name}: {ms(xs)}")
        if any(left.values()) or left_tables:
            print(f"  LEFTOVERS: {left} {left_tables}")


if __name__ == "__main__":
    main()
