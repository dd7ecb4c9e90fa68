"""Submit -> every node running on the emulated Slurm cluster (`jobgroup dev slurm up`), side by
side with a hand-written heterogeneous `sbatch` job that starts the same commands, and the
processes a running group costs the submit host. Needs root and Slurm. Usage:

    .venv/bin/python bench/bench_slurm.py [--runs N] [--shapes 3,100] [--nodes 100] [--bashrc]

Shapes: `3` is a 3-task group of one node each; `100` is a 100-node group of 3 tasks (1 + 95 +
4 nodes). Each node's command writes `date +%s.%N` to a file; the figure is the time from just
before submission to the last timestamp, measured from an idle cluster each time, jobgroup and
the hand-written job interleaved (each goes first every other run). Medians; the ratio is
jobgroup / sbatch (target <= 1.3).

Nodes run their commands as SkyPilot does, in an interactive bash that sources ~/.bashrc: by
default the launch's HOME is an empty folder, so the figures are jobgroup's own cost, not your
shell's start-up (`--bashrc` keeps your HOME: on this VM root's ~/.bashrc runs `pyenv init`,
~150 ms of CPU per node).

Submit-host processes: while the 100-node group runs, the processes on this machine that the
group costs outside the emulated nodes' network namespaces: the controller and everything it
started, plus any process carrying the state directory in its environment (a `srun`, a shim).
Target <= 10 + 2 x tasks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from jobgroup.devcluster import net, procs, slurm  # noqa: E402

SHAPES = {"3": [1, 1, 1], "100": [1, 95, 4]}


def wait_files(out: Path, n: int, timeout: float = 120) -> float:
    """The last of the `n` timestamps the commands write into `out` (looked for lightly: the
    machine's two cores are what is measured)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(os.listdir(out)) == n:
            stamps = []
            for f in out.iterdir():
                text = f.read_text().strip()
                if not text:
                    break
                stamps.append(float(text))
            else:
                return max(stamps)
        time.sleep(0.02)
    raise RuntimeError(f"only {len(os.listdir(out))} of {n} commands started")


def idle(env: dict[str, str]) -> None:
    """Wait until the cluster runs no job (each measurement starts from an idle cluster)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout
        if not out.strip():
            time.sleep(1.0)  # the nodes' epilogs and cgroup removal of the job before
            return
        time.sleep(0.05)
    raise RuntimeError("the cluster did not become idle")


def hetjob(tmp: Path, out: Path, sizes: list[int], tag: str) -> Path:
    """The hand-written heterogeneous batch job: one component per task, one srun."""
    lines = ["#!/bin/bash", f"#SBATCH --nodes={sizes[0]} --ntasks-per-node=1 --output=/dev/null"]
    for n in sizes[1:]:
        lines += ["#SBATCH hetjob", f"#SBATCH --nodes={n} --ntasks-per-node=1"]
    steps = " : ".join(
        f"--het-group={k} --nodes={n} --ntasks={n} sh -c 'date +%s.%N > {out}/t{k}-$SLURM_PROCID'"
        for k, n in enumerate(sizes))
    lines.append(f"srun {steps}")
    script = tmp / f"het-{tag}.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def group(tmp: Path, out: Path, sizes: list[int], tag: str, hold: float = 0) -> Path:
    spec = tmp / f"group-{tag}.yaml"
    keep = f"; sleep {hold:g}" if hold else ""
    spec.write_text("name: b\nexecution: parallel\n" + "".join(
        f"---\nname: t{k}\nnum_nodes: {n}\n"
        f"run: date +%s.%N > {out}/t{k}-$SKYPILOT_NODE_RANK{keep}\n"
        for k, n in enumerate(sizes)))
    return spec


def submit_host_processes(home: Path, namespaces: list[str]) -> list[str]:
    """What the running group costs this machine outside the nodes: the controller and its
    descendants, and processes with the state directory in their environment, not in a node's
    network namespace."""
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(os.stat(net.netns_path(ns)).st_ino)
        except OSError:
            pass
    try:
        controller = int((home / "controller.pid").read_text().split()[0])
    except (OSError, ValueError):
        controller = -1
    parent: dict[int, int] = {}
    found = []
    marker = f"JOBGROUP_HOME={home}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                parent[pid] = int(f.read().rsplit(b")", 1)[1].split()[1])
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                parent.pop(pid)
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker + b"\0" in f.read() + b"\0":
                    found.append(pid)
        except (OSError, ValueError):
            parent.pop(pid, None)
    mine = {controller} if controller in parent else set()
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    pids = sorted(mine | (set(found) & set(parent)))
    return [f"{p} {procs.cmdline(p).decode(errors='replace')[:60]}" for p in pids
            if p != os.getpid()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shapes", default="3,100")
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--bashrc", action="store_true", help="keep HOME (and its ~/.bashrc)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the emulated cluster)")
    shapes = args.shapes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    home = tmp / "home"
    t0 = time.monotonic()
    info = slurm.up(home, nodes=max(args.nodes, *(sum(SHAPES[s]) for s in shapes)),
                    timeout=300)
    print(f"dev cluster of {len(info.nodes)} nodes up in {time.monotonic() - t0:.1f} s "
          f"({slurm.status(home)[1][0]}); load {os.getloadavg()[0]:.1f}")
    env = {**os.environ, **info.env(), "JOBGROUP_HOME": str(home)}
    if not args.bashrc:
        (tmp / "empty-home").mkdir()
        env["HOME"] = str(tmp / "empty-home")
    jg = [str(REPO / ".venv" / "bin" / "jobgroup")]
    namespaces = [n.netns for n in slurm._load(slurm.Paths.of(home)).nodes]
    try:
        subprocess.run(jg + ["controller", "start"], env=env, check=True, capture_output=True)
        for shape in shapes:
            sizes = SHAPES[shape]
            n = sum(sizes)
            ours, base = [], []
            for i in range(args.runs):
                for which in ("base", "ours") if i % 2 == 0 else ("ours", "base"):
                    out = tmp / f"{which}-{shape}-{i}"
                    out.mkdir()
                    if which == "base":
                        script = hetjob(tmp, out, sizes, f"{shape}-{i}")
                        argv = ["sbatch", "--parsable", str(script)]
                    else:
                        argv = jg + ["launch", str(group(tmp, out, sizes, f"{shape}-{i}")), "-d",
                                     "--infra", "slurm"]
                    idle(env)
                    t0 = time.time()
                    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=tmp)
                    (base if which == "base" else ours).append(wait_files(out, n) - t0)
            mb, mo = statistics.median(base), statistics.median(ours)
            print(f"\n{len(sizes)} tasks, {n} nodes ({' + '.join(map(str, sizes))}), "
                  f"{args.runs} runs each")
            print(f"{'':40}{'median':>10}{'min':>10}{'max':>10}")
            for label, xs in (("hand-written sbatch hetjob", base),
                              ("jobgroup launch -d --infra slurm", ours)):
                print(f"{label:40}{statistics.median(xs) * 1000:9.0f}ms"
                      f"{min(xs) * 1000:9.0f}ms{max(xs) * 1000:9.0f}ms")
            print(f"ratio jobgroup / sbatch: {mo / mb:.2f} (target <= 1.3); "
                  f"load {os.getloadavg()[0]:.1f}")
            # Processes on the submit host while the group runs.
            out = tmp / f"hold-{shape}"
            out.mkdir()
            idle(env)
            p = subprocess.run(jg + ["launch", str(group(tmp, out, sizes, f"hold-{shape}", 120)),
                                     "-d", "--infra", "slurm"],
                               env=env, check=True, capture_output=True, text=True)
            job = p.stdout.split()[1]
            wait_files(out, n)
            time.sleep(1)
            seen = submit_host_processes(home, namespaces)
            print(f"submit-host processes while the {n}-node group runs: {len(seen)} "
                  f"(target <= {10 + 2 * len(sizes)})")
            for line in seen:
                print("   ", line)
            subprocess.run(jg + ["cancel", job], env=env, capture_output=True)
            subprocess.run(jg + ["wait", job, "--timeout", "120"], env=env, capture_output=True)
    finally:
        subprocess.run(jg + ["controller", "stop"], env=env, capture_output=True)
        slurm.down(home)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
