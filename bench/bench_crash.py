"""Crash-safety campaign: SIGKILL the controller at every step of a group's life, restart it,
and check that nothing went wrong.

usage: python bench/bench_crash.py [--runs N] [--seed S] [--points] [--keep]
    --points   one run per named fault point (see `jobgroup.faults.POINTS`) before the random ones
    --runs N   random runs (default 200): a random fault point and count, or 1-3 SIGKILLs from
               outside at random delays (half of the runs each)

Each run is one fresh state directory in which five groups run at once (`SCENARIOS`):
    ok        two tasks, one with setup and a memory limit (a cgroup) -> SUCCEEDED, all exit 0
    fails     one node exits 3 while its peers sleep              -> FAILED, exit 3 recorded,
                                                                      peers stopped
    cancel    `jobgroup cancel` once it runs                       -> CANCELLED, nodes stopped
    restart   attempt 1 exits 7, one restart allowed               -> SUCCEEDED after exactly
                                                                      one restart, attempt 2 exit 0
    regroup   a node of attempt 1 exits 1, one group restart     -> SUCCEEDED after exactly one
                                                                      group restart
The controller is started with JOBGROUP_FAULT=<point>[:N] (it SIGKILLs itself there), or killed
from outside; then started again (plain) and every group is waited for. A run is good when:
every group has its expected status (and reason), every node that ended by itself has its exit
code recorded, and nothing of the state directory is left on the machine — no process, network
namespace, interface, mount, cgroup or network file — and `jobgroup doctor --json` reports
exactly what was observed (so it reports nothing on a good run, and names every leftover on a bad
one). Needs root for namespaces and cgroups; without root the network points are not reached.

The module is also the harness of tests/test_crash_safety.py (a smaller deterministic set).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobgroup import faults
from jobgroup.backends.local import network
from jobgroup.resources import cgroups
from jobgroup.state.status import Phase
from jobgroup.state.store import Store

SCENARIOS: dict[str, str] = {
    "ok": """
        name: ok
        execution: parallel
        ---
        name: main
        num_nodes: 2
        resources: {memory: 0.25}
        setup: echo setup-$SKYPILOT_NODE_RANK
        run: sleep 0.4; echo ok-$SKYPILOT_NODE_RANK
        ---
        name: side
        run: sleep 0.3
        """,
    "fails": """
        name: fails
        execution: parallel
        ---
        name: bad
        run: sleep 0.5; exit 3
        ---
        name: peer
        num_nodes: 2
        run: setsid sleep 1000 & sleep 1000
        """,
    "cancel": """
        name: cancel
        run: echo up; sleep 1000
        """,
    "restart": """
        name: restart
        resources:
          job_recovery: {max_restarts_on_errors: 1}
        run: |
          echo "attempt $JOBGROUP_ATTEMPT"
          if [ "$JOBGROUP_ATTEMPT" = 1 ]; then sleep 0.3; exit 7; fi
          sleep 0.2
        """,
    "regroup": """
        name: regroup
        execution: parallel
        max_group_restarts: 1
        ---
        name: first
        run: |
          if [ "$JOBGROUP_ATTEMPT" = 1 ]; then sleep 0.3; exit 1; fi
          sleep 0.2
        ---
        name: second
        run: sleep 0.4
        """,
}


@dataclass
class Result:
    """What one run found: `problems` is empty for a good run."""

    how: str  # the fault ("point:N") or the outside kills ("kill@0.31,1.02")
    fired: bool  # the controller did die (the fault point was reached / a kill landed)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Harness:
    """One state directory under `base`, driven through the CLI as a user would."""

    def __init__(self, base: Path, python: str = sys.executable,
                 scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> None:
        self.base = base
        self.scenarios = scenarios
        self.home = base / "home"
        self.python = python
        self.env = {**os.environ, "JOBGROUP_HOME": str(self.home), "NO_COLOR": "1"}
        self.env.pop("JOBGROUP_FAULT", None)
        self.jobs: dict[str, int] = {}

    def jg(self, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, "-m", "jobgroup", *args], env=env or self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=self.base)

    # ---- the controller --------------------------------------------------------------------------

    def controller_pid(self) -> int | None:
        try:
            pid = int((self.home / "controller.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def start_controller(self, fault: str | None = None) -> int | None:
        env = dict(self.env)
        if fault:
            env["JOBGROUP_FAULT"] = fault
        p = self.jg("controller", "start", env=env)
        if p.returncode != 0:
            raise RuntimeError(f"controller start failed: {p.stdout}{p.stderr}")
        return self.controller_pid()

    def kill_controller(self) -> bool:
        pid = self.controller_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        _wait(lambda: not _alive(pid), 10)
        return True

    # ---- groups ----------------------------------------------------------------------------------

    def launch_all(self) -> None:
        for name in self.scenarios:
            text = SCENARIOS[name]
            path = self.base / f"{name}.yaml"
            path.write_text(textwrap.dedent(text))
            p = self.jg("launch", str(path), "-d")
            if p.returncode == 0:
                self.jobs[name] = int(p.stdout.split()[1])
                continue
            if "did not answer" not in p.stderr:
                raise RuntimeError(f"launch {name} failed: {p.stdout}{p.stderr}")
            # The controller died holding the request: it may or may not have recorded the
            # group (the CLI says so). Look it up; launch again only if it is not there.
            self.start_controller()
            queue = json.loads(self.jg("queue", "--all", "--json").stdout or "[]")
            mine = [j["id"] for j in queue if j.get("name") == name]
            if mine:
                self.jobs[name] = mine[0]
                continue
            p = self.jg("launch", str(path), "-d")
            if p.returncode != 0:
                raise RuntimeError(f"launch {name} failed: {p.stdout}{p.stderr}")
            self.jobs[name] = int(p.stdout.split()[1])

    def log(self, name: str, task: str, rank: int = 0) -> str:
        path = self.home / "jobs" / str(self.jobs[name]) / "logs" / f"{task}-{rank}.log"
        try:
            return path.read_text()
        except OSError:
            return ""

    def statuses(self) -> dict[str, str]:
        store = Store(self.home)
        try:
            return {name: store.job(j).status.value for name, j in self.jobs.items()}
        finally:
            store.close()

    def cancel(self) -> None:
        p = self.jg("cancel", str(self.jobs["cancel"]))
        if p.returncode != 0:
            raise RuntimeError(f"cancel failed: {p.stdout}{p.stderr}")

    def wait_all(self, timeout: float = 60) -> dict[str, dict]:
        out = {}
        for name, job in self.jobs.items():
            p = self.jg("wait", str(job), "--json", "--timeout", str(timeout),
                        timeout=timeout + 30)
            out[name] = json.loads(p.stdout) if p.stdout.strip() else {"status": "?"}
        return out

    # ---- what is left ----------------------------------------------------------------------------

    def observed_leftovers(self) -> dict[str, list[str]]:
        """Everything of this state directory still on the machine, found without `doctor`."""
        tag = network.home_tag(self.home)
        procs = []
        marks = (f"JOBGROUP_PHASE={self.home}/".encode(),
                 f"JOBGROUP_TOPOLOGY={self.home}/".encode())
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if any(m in env for m in marks) and not _zombie(int(entry)):
                procs.append(entry)
        try:
            netns = sorted(n for n in os.listdir("/run/netns") if n.startswith(f"jg-{tag}"))
        except FileNotFoundError:
            netns = []
        links = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(f"jg{tag}"))
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4]
                if point.startswith(f"/run/netns/jg-{tag}") or str(self.home) in point:
                    mounts.append(point)
        groups = sorted(p for cg in cgroups.leftovers(self.home) for p in cg.paths)
        files = sorted(
            str(p) for p in (self.home / "jobs").glob("*/*")
            if p.name in ("network.json", "network.tmp", "hosts", "hosts.tmp", "resolv.conf")
        ) if (self.home / "jobs").is_dir() else []
        files += sorted(str(p) for p in network.RUN_DIR.glob(f"net-{tag}*.lock"))
        return {"processes": sorted(procs), "netns": netns, "links": links, "mounts": mounts,
                "cgroups": groups, "files": files}

    def doctor(self) -> tuple[int, dict]:
        p = self.jg("doctor", "--json")
        try:
            return p.returncode, json.loads(p.stdout)["found"]
        except (ValueError, KeyError):
            return p.returncode, {"error": p.stdout + p.stderr}

    def clean(self) -> None:
        """Remove whatever a bad run left (by this state directory's names and markers only)."""
        self.jg("cancel", "--all")
        self.jg("doctor", "--fix")
        self.jg("controller", "stop")
        for pid in self.observed_leftovers()["processes"]:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        network.destroy(network.home_tag(self.home))


def check(h: Harness, finals: dict[str, dict]) -> list[str]:
    """Every way the run went wrong (empty: a good run)."""
    problems = []
    want = {"ok": ("SUCCEEDED", None), "fails": ("FAILED", "task 'bad' run exited with code 3"),
            "cancel": ("CANCELLED", None), "restart": ("SUCCEEDED", None),
            "regroup": ("SUCCEEDED", None)}
    for name, (status, reason) in want.items():
        if name not in finals:
            continue  # a run of fewer scenarios
        got = finals[name]
        if got.get("status") != status or (reason and got.get("reason") != reason):
            problems.append(f"{name}: {got.get('status')} ({got.get('reason')}), "
                            f"expected {status}" + (f" ({reason})" if reason else ""))
    store = Store(h.home)
    try:
        for name, job in h.jobs.items():
            tasks = {t.idx: t for t in store.tasks(job)}
            for n in store.nodes(job):
                where = f"{name}: node {n.task_idx}-{n.rank}"
                if n.phase != Phase.ENDED:
                    problems.append(f"{where} is {n.phase.value}, not ended")
                    continue
                if n.stopped:
                    continue
                if n.exit_code is None and n.signal is None:
                    problems.append(f"{where}: no exit status recorded")
                elif name in ("ok", "restart", "regroup") and n.exit_code != 0:
                    problems.append(f"{where}: exit {n.exit_code} signal {n.signal}, expected 0")
                elif name == "fails" and n.task_idx == 0 and n.exit_code != 3:
                    problems.append(f"{where}: exit {n.exit_code} signal {n.signal}, expected 3")
            if name == "restart" and tasks and tasks[0].restarts != 1:
                problems.append(f"restart: {tasks[0].restarts} restarts counted, expected 1")
            if name == "regroup" and store.job(job).group_restarts != 1:
                problems.append(f"regroup: {store.job(job).group_restarts} group restarts "
                                "counted, expected 1")
    finally:
        store.close()
    seen = h.observed_leftovers()
    for kind, items in seen.items():
        if items:
            problems.append(f"left behind: {kind}: {' '.join(items)}")
    rc, found = h.doctor()
    if "error" in found:
        problems.append(f"doctor failed: {found['error'][:300]}")
        return problems
    # doctor must report exactly what is there (mounts of namespaces are reported as netns)
    agree = {
        "netns": sorted(found.get("netns", [])) == seen["netns"],
        "links": sorted(found.get("links", [])) == seen["links"],
        "processes": sorted(str(p) for p in found.get("processes", [])) == seen["processes"],
        "cgroups": sorted(found.get("cgroups", [])) == seen["cgroups"],
        "files": sorted(found.get("files", [])) == seen["files"],
        "mounts": sorted(found.get("mounts", [])) == seen["mounts"],
    }
    for kind, ok in agree.items():
        if not ok:
            problems.append(f"doctor disagrees on {kind}: reports {found.get(kind)}, "
                            f"observed {seen[kind]}")
    if rc != (0 if not any(seen.values()) else 1):
        problems.append(f"doctor exited {rc}")
    return problems


def run_once(base: Path, *, fault: str | None = None, kills: list[float] = (),
             python: str = sys.executable, scenarios: tuple[str, ...] = tuple(SCENARIOS)
             ) -> Result:
    """One run in a fresh state directory under `base` (removed afterwards), of every
    scenario or of those named."""
    how = fault or ("kill@" + ",".join(f"{k:.2f}" for k in kills))
    h = Harness(base, python, scenarios)
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    fired = False
    try:
        first = h.start_controller(fault)
        h.launch_all()
        launched = time.monotonic()
        cancelled = "cancel" not in h.jobs
        pending = sorted(kills)
        deadline = launched + 30
        while time.monotonic() < deadline:
            if fault and first is not None and not _alive(first):
                fired = True
                break
            if pending and time.monotonic() - launched >= pending[0]:
                pending.pop(0)
                fired = h.kill_controller() or fired
                h.start_controller()
                continue
            if not cancelled and "up" in h.log("cancel", "cancel"):
                h.cancel()
                cancelled = True
            if not pending and (not fault or cancelled) and all(
                    s not in ("PENDING", "STARTING", "RUNNING", "RECOVERING", "CANCELLING")
                    for s in h.statuses().values()):
                break
            time.sleep(0.02)
        h.start_controller()
        if not cancelled:
            _wait(lambda: "up" in h.log("cancel", "cancel") or
                  h.statuses()["cancel"] not in ("PENDING", "STARTING"), 30)
            h.cancel()
        finals = h.wait_all()
        problems = check(h, finals)
    except Exception as e:  # a broken run is a failed run, with what broke it
        problems = [f"harness: {type(e).__name__}: {e}"]
    result = Result(how=how, fired=fired, problems=problems, seconds=time.monotonic() - t0)
    try:
        h.clean()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return result


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--points", action="store_true", help="first one run per fault point")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    plan: list[dict] = []
    if args.points:
        plan += [{"fault": p} for p in faults.POINTS]
    for _ in range(args.runs):
        if rng.random() < 0.5:
            plan.append({"fault": f"{rng.choice(list(faults.POINTS))}:{rng.randint(1, 4)}"})
        else:
            plan.append({"kills": [rng.uniform(0, 2.5) for _ in range(rng.randint(1, 3))]})
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="jg-crash-"))
    try:
        for i, p in enumerate(plan):
            r = run_once(tmp / f"r{i}", **p)
            results.append(r)
            mark = "ok " if not r.problems else "BAD"
            print(f"{i:4d} {mark} {r.how:28s} fired={int(r.fired)} {r.seconds:5.1f}s"
                  + "".join(f"\n       {x}" for x in r.problems), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bad = [r for r in results if r.problems]
    fired = sum(r.fired for r in results)
    print(f"\n{len(results)} runs, {fired} with the controller killed, {len(bad)} went wrong")
    kinds: dict[str, int] = {}
    for r in bad:
        for x in r.problems:
            key = x.split(":")[0] if not x.startswith("left behind") else x.split(":")[:2][1]
            kinds[key.strip()] = kinds.get(key.strip(), 0) + 1
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {v:4d}  {k}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
