"""Runtime benchmarks for issue 3 (controller, store, local backend, CLI): figures for RESULTS.md.

usage: .venv/bin/python bench/bench_runtime.py [--quick] [--runs N] [--only 1,2,3,4]

  1. launch -> every run command started (5 tasks / 7 nodes of trivial commands, warm controller):
     CLI `jobgroup launch -d` vs a bash script / a `python -c` subprocess script starting the same
     7 commands; in-process `jobgroup.launch` vs in-process subprocess.Popen; plus where the CLI's
     time goes (interpreter, imports, the launch itself, the controller's reaction).
  2. a primary's failure -> every node process of its group gone (nodes die on SIGTERM), and ->
     the job's terminal status; vs a bash script doing the same fail-fast with `wait -n; kill`.
  3. `jobgroup queue` / `queue --all` / `queue --all --json` with 1,000 ended jobs in the store
     (real rows of real launches, cloned), vs `python -c pass`.
  4. one controller supervising 1,000 running nodes (100 groups x 10 `sleep 3600`): its RSS, its
     CPU while nothing changes, the shims' PSS, then `jobgroup cancel --all` -> every process gone;
     vs 1,000 plain `sleep`s started and SIGTERMed by this script.

Every timed node command writes bash's $EPOCHREALTIME (no extra fork) to a file; the baselines run
the very same `bash -c` command. Runs are interleaved (A B C, B C A, ...) so that the machine's
noise hits every variant alike; figures are medians with [min-max]. Every benchmark uses its own
temporary JOBGROUP_HOME, stops its controller and removes it at the end (also on Ctrl-C), and
kills by pid only processes whose environment names that temporary directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
_JG = Path(PY).with_name("jobgroup")
JOBGROUP = [str(_JG)] if _JG.exists() else [PY, "-m", "jobgroup"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

from jobgroup.controller import wake  # noqa: E402

STAMP = 'printf "%s\\n" "$EPOCHREALTIME" > "$BENCH_OUT/$1"'  # the node command, $1 = file name

# ---- small helpers ------------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def span(xs: list[float]) -> str:
    """'median [min-max]' in ms."""
    if not xs:
        return "-"
    return f"{ms(med(xs))} [{ms(min(xs))}-{ms(max(xs))}]"


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def read_stamps(d: Path, names: list[str], timeout: float = 15.0) -> dict[str, float]:
    """Wait until every file in `names` holds a timestamp; return them."""
    out: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(names):
        for n in names:
            if n not in out:
                try:
                    text = (d / n).read_text()
                except FileNotFoundError:
                    continue
                if text.endswith("\n"):
                    out[n] = float(text)
        if len(out) < len(names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {sorted(out)} of {names} appeared in {d}")
            time.sleep(0.002)
    return out


def environ_pids(marker: bytes) -> list[int]:
    """Pids of our processes whose environment contains `marker` (bytes)."""
    me = os.getpid()
    pids = []
    for e in os.scandir("/proc"):
        if not e.name.isdigit() or int(e.name) == me:
            continue
        try:
            with open(f"/proc/{e.name}/environ", "rb") as f:
                if marker in f.read():
                    pids.append(int(e.name))
        except OSError:
            continue
    return pids


def gone_times(pids: list[int], timeout: float) -> dict[int, float]:
    """Block until each pid has exited; {pid: time.time() when seen gone} (pidfds, no polling)."""
    fds: dict[int, int] = {}
    out: dict[int, float] = {}
    for p in pids:
        try:
            fds[os.pidfd_open(p)] = p
        except ProcessLookupError:
            out[p] = time.time()
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        while len(out) < len(pids):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pids) - len(out)} process(es) still alive")
            for fd, _ in poller.poll(left * 1000):
                out[fds[fd]] = time.time()
                poller.unregister(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return out


def proc_stat(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    out, todo = [], children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def git_rev() -> str:
    """The commit of the jobgroup package this run imports (PYTHONPATH may point elsewhere)."""
    src = Path(wake.__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, text=True,
                             capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src,
                               text=True, capture_output=True).stdout.strip()
        return f"{rev or '?'} ({src}{', with uncommitted changes' if dirty else ''})"
    except OSError:
        return "?"


# ---- a private state directory ------------------------------------------------------------------


class Home:
    """A temporary JOBGROUP_HOME with its own controller; `close()` leaves nothing behind."""

    live: list["Home"] = []

    def __init__(self, tag: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"jgbench-{tag}-"))
        self.path = self.dir / "home"
        # What the nodes write for the bench (marks, FIFOs) lives in the state directory, which
        # every node sees: a node's /tmp is its own (issue 15), so the bench's temp dir is not.
        self.out = self.path / "bench-out"
        self.out.mkdir(parents=True)
        self.env = {**os.environ, "JOBGROUP_HOME": str(self.path)}
        self.db: sqlite3.Connection | None = None
        Home.live.append(self)

    def start(self) -> int:
        wake.ensure_running(self.path)
        return self.controller_pid()

    def controller_pid(self) -> int:
        info = wake.controller_pid(self.path)
        if info is None:
            raise RuntimeError("no controller pid file")
        return info[0]

    def sql(self, query: str, *args: object) -> list[tuple]:
        if self.db is None:
            self.db = sqlite3.connect(self.path / "state.db", timeout=60, isolation_level=None)
        if "SHIM_PID" in query:
            query = query.replace("SHIM_PID", self.shim_pid())
        return self.db.execute(query, args).fetchall()

    def shim_pid(self) -> str:
        """The SQL of a node's shim pid: from its handle (the local backend's {"pid", "start"}),
        or the pid column of a jobgroup from before handles (so the same bench compares both)."""
        if getattr(self, "_shim_pid", None) is None:
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(nodes)")}
            self._shim_pid = "json_extract(handle, '$.pid')" if "handle" in cols else "pid"
        return self._shim_pid

    def job_end(self, job_id: int, timeout: float = 30.0) -> tuple[str, float]:
        """Wait until the job is terminal: (status, ended_at)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("SELECT status, ended_at FROM jobs WHERE id=?", job_id)
            if rows and rows[0][1] is not None:
                return rows[0][0], rows[0][1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {rows[0][0] if rows else '?'}")
            time.sleep(0.01)

    def events(self, job_id: int) -> list[tuple[str, float]]:
        return self.sql("SELECT kind, at FROM events WHERE job_id=? ORDER BY id", job_id)

    def node_pids(self, job_id: int | None = None) -> list[int]:
        """Every process of this home's nodes (shims, their children, grandchildren)."""
        where = f"jobs/{job_id}/" if job_id is not None else ""
        return environ_pids(b"JOBGROUP_TOPOLOGY=" + os.fsencode(self.path) + b"/" +
                            where.encode())

    def close(self) -> None:
        try:
            if self.path.exists() and wake.running(self.path):
                try:
                    from jobgroup.api import cancel_all

                    cancel_all(home=self.path)
                    deadline = time.monotonic() + 30
                    while (self.sql("SELECT count(*) FROM jobs WHERE ended_at IS NULL")[0][0]
                           and time.monotonic() < deadline):
                        time.sleep(0.05)
                except Exception as e:  # keep cleaning up
                    print(f"warning: cancelling the jobs of {self.path}: {e}", file=sys.stderr)
                wake.stop(self.path)
            try:  # per-group networks of this home (isolation level 'namespaces') left behind?
                from jobgroup.backends.local import network

                tag = network.home_tag(self.path)
                left = network.existing(tag)
                if any(left.values()):
                    print(f"warning: removing leftover networks of {self.path}: {left}",
                          file=sys.stderr)
                    network.destroy(tag)
            except ImportError:
                pass
            for pid in self.node_pids():  # leftovers (there should be none): ours, by pid
                print(f"warning: killing leftover node process {pid}", file=sys.stderr)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if self.db is not None:
                self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            Home.live.remove(self)


# ---- 1. launch -> every run command started ----------------------------------------------------

TASKS_7 = [("t0", 1), ("t1", 2), ("t2", 1), ("t3", 2), ("t4", 1)]  # 5 tasks, 7 nodes
NODE_FILES = [f"{t}-{r}" for t, n in TASKS_7 for r in range(n)]


def spec_7() -> str:
    docs = ["name: bench7\nexecution: parallel\n"]
    for t, n in TASKS_7:
        docs.append(f"name: {t}\nnum_nodes: {n}\n"
                    f"run: printf '%s\\n' \"$EPOCHREALTIME\" > \"$BENCH_OUT/{t}-$SKYPILOT_NODE_RANK\"\n")
    return "---\n".join(docs)


BASH_BASELINE = f"""for f in {' '.join(NODE_FILES)}; do
  /bin/bash -c '{STAMP}' _ "$f" &
done
wait
"""

PY_BASELINE = f"""import subprocess
ps = [subprocess.Popen(['/bin/bash', '-c', {STAMP!r}, '_', f]) for f in {NODE_FILES!r}]
for p in ps:
    p.wait()
"""


def bench_launch(runs: int) -> dict:
    from jobgroup.api import launch
    from jobgroup.spec import load_file
    from jobgroup.state.store import Store

    home = Home("launch")
    try:
        spec = home.dir / "bench7.yaml"
        spec.write_text(spec_7())
        bash_script = home.dir / "baseline.sh"
        bash_script.write_text(BASH_BASELINE)
        home.start()
        res: dict[str, list[float]] = {k: [] for k in (
            "cli", "bash", "pyscript", "api", "popen", "cli_exit", "api_return",
            "cli_recorded", "ctl_pickup", "ctl_spawned", "ctl_last_stamp",
            "api_pickup", "api_spawned", "api_last_stamp")}
        n = 0

        def outdir() -> Path:
            nonlocal n
            n += 1
            d = home.out / str(n)
            d.mkdir()
            return d

        def run_cli() -> None:
            d = outdir()
            t0 = time.time()
            p = subprocess.run([*JOBGROUP, "launch", "-d", str(spec), "--env", f"BENCH_OUT={d}"],
                               env=home.env, capture_output=True, text=True, check=True)
            t_exit = time.time()
            job_id = int(re.match(r"Job (\d+) ", p.stdout).group(1))
            stamps = read_stamps(d, NODE_FILES)
            home.job_end(job_id)
            last = max(stamps.values())
            res["cli"].append(last - t0)
            res["cli_exit"].append(t_exit - t0)
            sub = home.sql("SELECT submitted_at FROM jobs WHERE id=?", job_id)[0][0]
            ev = home.events(job_id)
            pickup = next(at for k, at in ev if k.startswith("job PENDING ->"))
            spawned = max(at for k, at in ev if k == "run-started")
            res["cli_recorded"].append(sub - t0)
            res["ctl_pickup"].append(pickup - sub)
            res["ctl_spawned"].append(spawned - pickup)
            res["ctl_last_stamp"].append(last - spawned)

        def run_bash() -> None:
            d = outdir()
            env = {**home.env, "BENCH_OUT": str(d)}
            t0 = time.time()
            subprocess.run(["/bin/bash", str(bash_script)], env=env, check=True)
            res["bash"].append(max(read_stamps(d, NODE_FILES).values()) - t0)

        def run_pyscript() -> None:
            d = outdir()
            env = {**home.env, "BENCH_OUT": str(d)}
            t0 = time.time()
            subprocess.run([PY, "-c", PY_BASELINE], env=env, check=True)
            res["pyscript"].append(max(read_stamps(d, NODE_FILES).values()) - t0)

        def run_api() -> None:
            d = outdir()
            t0 = time.time()
            job = launch(spec, env={"BENCH_OUT": str(d)}, home=home.path)
            res["api_return"].append(time.time() - t0)
            last = max(read_stamps(d, NODE_FILES).values())
            res["api"].append(last - t0)
            home.job_end(job.id)
            ev = home.events(job.id)
            pickup = next(at for k, at in ev if k.startswith("job PENDING ->"))
            spawned = max(at for k, at in ev if k == "run-started")
            res["api_pickup"].append(pickup - job.submitted_at)
            res["api_spawned"].append(spawned - pickup)
            res["api_last_stamp"].append(last - spawned)

        def run_popen() -> None:
            d = outdir()
            env = {**home.env, "BENCH_OUT": str(d)}
            t0 = time.time()
            ps = [subprocess.Popen(["/bin/bash", "-c", STAMP, "_", f], env=env)
                  for f in NODE_FILES]
            res["popen"].append(max(read_stamps(d, NODE_FILES).values()) - t0)
            for p in ps:
                p.wait()

        variants = [run_cli, run_bash, run_pyscript, run_api, run_popen]
        for v in variants:  # warm-up: page cache, controller, shim binary, bash
            v()
        for k in res:
            res[k].clear()
        for i in range(runs):
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for v in order:
                v()

        # Where the CLI's time goes.
        bare = []
        imp = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([PY, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            # What the CLI's short road imports (cli/fastlaunch.py), plus the console script's
            # own `import re`.
            subprocess.run([PY, "-c", "import re, jobgroup.cli.main, jobgroup.cli.fastlaunch,"
                            " jobgroup.controller.rpc"], check=True)
            imp.append(time.perf_counter() - t0)
        res["py_bare"] = bare
        res["py_imports"] = imp
        tops = []
        for _ in range(3):  # one run is noisy: median per package of 3
            d = outdir()
            p = subprocess.run(
                [PY, "-X", "importtime", "-c",
                 "import sys; from jobgroup.cli.main import main; sys.argv[0] = 'jobgroup';"
                 f" main(['launch', '-d', {str(spec)!r}, '--env', 'BENCH_OUT={d}'])"],
                env=home.env, capture_output=True, text=True, check=True)
            job_id = int(re.match(r"Job (\d+) ", p.stdout).group(1))
            read_stamps(d, NODE_FILES)
            home.job_end(job_id)
            tops.append(dict(importtime_top(p.stderr)))
        keys = {k for t in tops for k in t}
        res["importtime"] = sorted(((k, med([t.get(k, 0.0) for t in tops])) for k in keys),
                                   key=lambda kv: -kv[1])
        # The launch itself, in-process, piece by piece (a scratch store without a controller,
        # so these jobs are never run).
        scratch = Home("scratch")
        try:
            from jobgroup.spec import dump

            pieces: dict[str, list[float]] = {"load_file": [], "store_open": [],
                                              "create_job": [], "wake_send": []}
            for _ in range(runs):
                t0 = time.perf_counter()
                loaded = load_file(spec)
                pieces["load_file"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                st = Store(scratch.path)
                pieces["store_open"].append(time.perf_counter() - t0)
                g = loaded.group
                t0 = time.perf_counter()
                st.create_job(name=g.name, execution=g.execution, spec=dump(g),
                              base_dir=str(loaded.base_dir),
                              options={"env": {}, "grace": 10.0, "infra": "local",
                                       "base_env": dict(os.environ)},
                              tasks=[(t.name or "", t.num_nodes, True) for t in g.tasks])
                pieces["create_job"].append(time.perf_counter() - t0)
                st.close()
                t0 = time.perf_counter()
                wake.send(home.path, "ping")
                pieces["wake_send"].append(time.perf_counter() - t0)
            res["pieces"] = pieces
        finally:
            scratch.close()
        return res
    finally:
        home.close()


def importtime_top(stderr: str) -> list[tuple[str, float]]:
    """Cumulative import time of each top-level import, grouped by root package, in seconds."""
    groups: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if not m or m.group(3):  # nested: counted in its top-level parent
            continue
        name = m.group(4)
        root = ".".join(name.split(".")[:2]) if name.startswith("jobgroup.") else name.split(".")[0]
        groups[root] = groups.get(root, 0.0) + int(m.group(2)) / 1e6
    return sorted(groups.items(), key=lambda kv: -kv[1])


# ---- 2. a primary's failure -> every node stopped ----------------------------------------------

FAIL_SPEC = """name: failfast
execution: parallel
primary_tasks: [lead]
---
name: lead
run: |
  read -r _ < "$BENCH_OUT/go"
  printf '%s\\n' "$EPOCHREALTIME" > "$BENCH_OUT/fail"
  exit 1
---
name: workers
num_nodes: 3
run: sleep 600
---
name: servers
num_nodes: 3
run: sleep 600
"""

FAIL_BASELINE = """pids=()
for i in 1 2 3 4 5 6; do sleep 600 & pids+=($!); done
( read -r _ < "$BENCH_OUT/go"; printf '%s\\n' "$EPOCHREALTIME" > "$BENCH_OUT/fail"; exit 1 ) &
wait -n
kill "${pids[@]}"
wait
"""


def _fire(d: Path) -> None:
    with open(d / "go", "w") as f:  # blocks until the lead opened the FIFO for reading
        f.write("go\n")


def failfast_once(home: Home, spec: Path, tag: str) -> dict:
    """Launch FAIL_SPEC, wait until its 7 nodes run, let the primary fail; measure from the
    primary's failure until every node process is gone / the first stop / the terminal status."""
    from jobgroup.api import launch

    d = home.out / tag
    d.mkdir()
    os.mkfifo(d / "go")
    job = launch(spec, env={"BENCH_OUT": str(d)}, home=home.path, grace=10.0)
    deadline = time.monotonic() + 30
    while home.sql("SELECT count(*) FROM nodes WHERE job_id=? AND phase='run' AND SHIM_PID"
                   " IS NOT NULL", job.id)[0][0] < 7:
        if time.monotonic() > deadline:
            raise TimeoutError("the failfast group did not start")
        time.sleep(0.005)
    shims = [r[0] for r in home.sql("SELECT SHIM_PID FROM nodes WHERE job_id=?", job.id)]
    while True:  # every shim has its child (the node's command)
        pids = home.node_pids(job.id)
        if all(children(s) for s in shims) and len(pids) >= 14:
            break
        time.sleep(0.005)
    sib = [r[0] for r in home.sql("SELECT SHIM_PID FROM nodes WHERE job_id=? AND task_idx>0",
                                  job.id)]
    while True:  # with an isolation wrapper (bwrap), the sleeps are grandchildren
        sleeps = [c for s in sib for c in descendants(s) if comm(c) == "sleep"]
        if len(sleeps) >= 6:
            break
        time.sleep(0.005)
    pids = home.node_pids(job.id)
    _fire(d)
    gone = gone_times(pids, 60)
    fail = read_stamps(d, ["fail"])["fail"]
    status, ended = home.job_end(job.id)
    stop = min(at for k, at in home.events(job.id) if k == "stop")
    return {"gone": max(gone.values()) - fail,
            "sleeps_gone": max(gone[p] for p in sleeps if p in gone) - fail,
            "terminal": ended - fail, "stop_event": stop - fail, "statuses": status}


def bench_failfast(runs: int) -> dict:
    home = Home("failfast")
    try:
        spec = home.dir / "failfast.yaml"
        spec.write_text(FAIL_SPEC)
        script = home.dir / "failfast.sh"
        script.write_text(FAIL_BASELINE)
        home.start()
        res: dict[str, list] = {k: [] for k in (
            "gone", "sleeps_gone", "terminal", "stop_event", "base_gone", "statuses")}
        n = 0

        def run_jobgroup() -> None:
            nonlocal n
            n += 1
            for k, v in failfast_once(home, spec, f"f{n}").items():
                res[k].append(v)

        def run_baseline() -> None:
            nonlocal n
            n += 1
            d = home.out / f"b{n}"
            d.mkdir()
            os.mkfifo(d / "go")
            mark = f"JGBENCH_MARK={d}"
            env = {**os.environ, "BENCH_OUT": str(d), "JGBENCH_MARK": str(d)}
            p = subprocess.Popen(["/bin/bash", str(script)], env=env)
            while len(pids := environ_pids(mark.encode() + b"\0")) < 8:
                time.sleep(0.005)
            _fire(d)
            gone = gone_times(pids, 30)
            fail = read_stamps(d, ["fail"])["fail"]
            p.wait()
            res["base_gone"].append(max(gone.values()) - fail)

        run_jobgroup()
        run_baseline()
        for k in res:
            res[k].clear()
        for i in range(runs):
            for v in ((run_jobgroup, run_baseline) if i % 2 == 0 else (run_baseline, run_jobgroup)):
                v()
        return res
    finally:
        home.close()


# ---- 3. queue with 1,000 ended jobs -------------------------------------------------------------

SLEEP_SPEC = """name: sleepers
execution: parallel
---
name: a
num_nodes: 5
run: sleep {secs}
---
name: b
num_nodes: 5
run: sleep {secs}
"""


def fill_store(home: Home, total: int) -> dict[str, int]:
    """Launch three real jobs (SUCCEEDED 5-task/7-node, FAILED, CANCELLED) and clone their rows
    (jobs, tasks, nodes, events) until the store holds `total` ended jobs."""
    from jobgroup.api import cancel, launch

    spec7 = home.dir / "bench7.yaml"
    spec7.write_text(spec_7())
    specf = home.dir / "failfast.yaml"
    specf.write_text(FAIL_SPEC)
    specs = home.dir / "sleepers.yaml"
    specs.write_text(SLEEP_SPEC.format(secs=600))
    templates = []
    d = home.out / "t1"
    d.mkdir()
    templates.append(launch(spec7, env={"BENCH_OUT": str(d)}, home=home.path).id)
    d = home.out / "t2"
    d.mkdir()
    os.mkfifo(d / "go")
    templates.append(launch(specf, env={"BENCH_OUT": str(d)}, home=home.path).id)
    templates.append(launch(specs, home=home.path).id)
    time.sleep(0.5)
    _fire(d)
    cancel(templates[2], home=home.path)
    for j in templates:
        home.job_end(j)
    statuses = dict(home.sql("SELECT status, count(*) FROM jobs GROUP BY status"))
    db = sqlite3.connect(home.path / "state.db", timeout=60, isolation_level=None)
    db.row_factory = sqlite3.Row
    rows = {}
    for j in templates:
        rows[j] = {
            "jobs": [dict(r) for r in db.execute("SELECT * FROM jobs WHERE id=?", (j,))],
            "tasks": [dict(r) for r in db.execute("SELECT * FROM tasks WHERE job_id=?", (j,))],
            "nodes": [dict(r) for r in db.execute("SELECT * FROM nodes WHERE job_id=?", (j,))],
            "events": [dict(r) for r in db.execute("SELECT * FROM events WHERE job_id=?", (j,))],
        }
    times = {"jobs": ("submitted_at", "started_at", "ended_at", "primaries_done_at"),
             "tasks": ("started_at", "ended_at"),
             "nodes": ("stop_requested_at", "started_at", "ended_at"), "events": ("at",)}
    next_id = max(templates) + 1
    db.execute("BEGIN IMMEDIATE")
    for k in range(total - len(templates)):
        src = rows[templates[k % len(templates)]]
        shift = -(total - k) * 300.0  # spread over days, oldest first
        job_id = next_id + k
        for tbl, recs in src.items():
            for rec in recs:
                rec = dict(rec)
                if tbl == "jobs":
                    rec["id"] = job_id
                else:
                    rec["job_id"] = job_id
                if tbl == "events":
                    del rec["id"]
                for c in times[tbl]:
                    if rec.get(c) is not None:
                        rec[c] += shift
                cols = ",".join(rec)
                db.execute(f"INSERT INTO {tbl}({cols}) VALUES ({','.join('?' * len(rec))})",
                           tuple(rec.values()))
    db.execute("COMMIT")
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("jobs", "tasks", "nodes", "events")}
    db.close()
    counts.update({f"template {s}": c for s, c in statuses.items()})
    return counts


def bench_queue(runs: int) -> dict:
    from jobgroup.api import queue

    home = Home("queue")
    try:
        home.start()
        counts = fill_store(home, 1000)
        variants = {
            "python -c pass": [PY, "-c", "pass"],
            "jobgroup queue": [*JOBGROUP, "queue"],
            "jobgroup queue --all": [*JOBGROUP, "queue", "--all"],
            "jobgroup queue --all --json": [*JOBGROUP, "queue", "--all", "--json"],
        }
        res: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(runs + 1):
            names = list(variants)
            names = names[i % len(names):] + names[:i % len(names)]
            for name in names:
                t0 = time.perf_counter()
                subprocess.run(variants[name], env=home.env, stdout=subprocess.DEVNULL,
                               check=True)
                if i:  # the first round warms up
                    res[name].append(time.perf_counter() - t0)
        inproc = []
        for _ in range(runs):
            t0 = time.perf_counter()
            jobs = queue(all=True, home=home.path)
            inproc.append(time.perf_counter() - t0)
        assert len(jobs) == 1000, len(jobs)
        res["api queue(all=True), in-process"] = inproc
        return {"res": res, "counts": counts,
                "db_kb": (home.path / "state.db").stat().st_size // 1024}
    finally:
        home.close()


# ---- 4. 1,000 running nodes ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float, int]:
    """(utime+stime in s from /proc/PID/stat, on-CPU ns from schedstat, ctx switches)."""
    st = proc_stat(pid)
    ticks = int(st[11]) + int(st[12])
    sched = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    ctx = status_kb(pid, "voluntary_ctxt_switches") + status_kb(pid, "nonvoluntary_ctxt_switches")
    return ticks / CLK_TCK, sched / 1e9, ctx


def bench_scale(groups: int, idle: float, runs: int) -> dict:
    from jobgroup.api import launch

    res: dict = {"groups": groups, "nodes": groups * 10, "idle_s": idle}
    soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    res["nofile_harness"] = (soft, hard)
    if soft < 3 * groups * 10 + 100:  # this script holds a pidfd per process while waiting
        __import__("resource").setrlimit(__import__("resource").RLIMIT_NOFILE, (hard, hard))
    want = groups * 10
    home = Home("scale")
    try:
        spec = home.dir / "sleepers.yaml"
        spec.write_text(SLEEP_SPEC.format(secs=3600))
        ctl = home.start()
        time.sleep(0.5)
        res["ctl_rss_empty_kb"] = status_kb(ctl, "VmRSS")
        res["ctl_pss_empty_kb"] = pss_kb(ctl)
        for line in Path(f"/proc/{ctl}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                res["nofile_controller"] = line.split()[3:5]
        # Launch 100 groups (detached), until every node runs.
        t0 = time.time()
        ids = [launch(spec, home=home.path).id for _ in range(groups)]
        res["launch_calls_s"] = time.time() - t0
        deadline = time.monotonic() + 300
        failed: dict[int, str] = {}
        while True:
            running = home.sql("SELECT count(*) FROM nodes WHERE phase='run' AND SHIM_PID IS "
                               "NOT NULL AND job_id BETWEEN ? AND ?", min(ids), max(ids))[0][0]
            for job_id, status, reason in home.sql(
                    "SELECT id, status, reason FROM jobs WHERE ended_at IS NOT NULL"
                    " AND id BETWEEN ? AND ?", min(ids), max(ids)):
                if job_id not in failed:  # report it, measure the rest
                    logs = sorted((home.path / "jobs" / str(job_id) / "logs").glob("*.log"))
                    tail = next((f"{p.name}: {p.read_text()[-300:].strip()}" for p in logs
                                 if p.stat().st_size), "")
                    failed[job_id] = f"job {job_id} {status}: {reason}; {tail}"
                    print(f"warning: a group failed to start: {failed[job_id]}", file=sys.stderr)
            want = (groups - len(failed)) * 10
            if running >= want:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {running}/{want} nodes running")
            time.sleep(0.05)
        res["start_failures"] = list(failed.values())
        ids = [j for j in ids if j not in failed]
        res["nodes"] = want
        res["all_running_s"] = time.time() - t0
        shims = [r[0] for r in home.sql(
            f"SELECT SHIM_PID FROM nodes WHERE job_id IN ({','.join(map(str, ids))})")]
        while True:
            tree = {s: descendants(s) for s in shims}
            sleeps = [c for t in tree.values() for c in t if comm(c) == "sleep"]
            if len(sleeps) >= want:
                break
            time.sleep(0.05)
        wrappers = [c for t in tree.values() for c in t if comm(c) != "sleep"]
        res["wrapper_comms"] = sorted({comm(c) for c in wrappers})
        time.sleep(2.0)  # let the start-up settle
        # The controller while nothing changes.
        a = cpu_seconds(ctl)
        t = time.monotonic()
        time.sleep(idle)
        b = cpu_seconds(ctl)
        wall = time.monotonic() - t
        res["ctl_cpu_pct_stat"] = (b[0] - a[0]) / wall * 100
        res["ctl_cpu_pct_sched"] = (b[1] - a[1]) / wall * 100
        res["ctl_wakeups"] = b[2] - a[2]
        res["ctl_rss_kb"] = status_kb(ctl, "VmRSS")
        res["ctl_hwm_kb"] = status_kb(ctl, "VmHWM")
        res["ctl_pss_kb"] = pss_kb(ctl)
        res["ctl_fds"] = len(os.listdir(f"/proc/{ctl}/fd"))
        shim_pss = [pss_kb(p) for p in shims]
        sleep_pss = [pss_kb(p) for p in sleeps]
        res["shim_pss_kb"] = shim_pss
        res["sleep_pss_kb"] = sleep_pss
        res["wrapper_pss_kb"] = [pss_kb(p) for p in wrappers]
        res["shim_rss_kb"] = med([status_kb(p, "VmRSS") for p in shims[:50]])
        # `jobgroup queue` with these 100 running groups (an extra).
        q = []
        for _ in range(runs):
            t1 = time.perf_counter()
            subprocess.run([*JOBGROUP, "queue"], env=home.env, stdout=subprocess.DEVNULL,
                           check=True)
            q.append(time.perf_counter() - t1)
        res["queue_running"] = q
        # A primary's failure in one more group while these 1,000 nodes run.
        fspec = home.dir / "failfast.yaml"
        fspec.write_text(FAIL_SPEC)
        loaded = [failfast_once(home, fspec, f"ff{i}") for i in range(max(3, runs // 3))]
        res["failfast_loaded"] = {k: [x[k] for x in loaded] for k in loaded[0]}
        # Cancel everything: until every process is gone, and until every job is terminal.
        pids = home.node_pids()
        res["node_processes"] = len(pids)
        t0 = time.time()
        subprocess.run([*JOBGROUP, "cancel", "--all"], env=home.env, stdout=subprocess.DEVNULL,
                       check=True)
        res["cancel_cmd_s"] = time.time() - t0
        gone = gone_times(pids, 120)
        res["cancel_all_gone_s"] = max(gone.values()) - t0
        for j in ids:
            home.job_end(j, timeout=60)
        res["cancel_all_terminal_s"] = home.sql(
            f"SELECT max(ended_at) FROM jobs WHERE id IN ({','.join(map(str, ids))})")[0][0] - t0
        res["cancel_statuses"] = dict(home.sql(
            f"SELECT status, count(*) FROM jobs WHERE id IN ({','.join(map(str, ids))})"
            " GROUP BY status"))
        res["ctl_rss_after_kb"] = status_kb(ctl, "VmRSS")
    finally:
        home.close()
    # Baseline: the same number of plain sleeps, started and SIGTERMed by this script.
    t0 = time.time()
    procs = [subprocess.Popen(["sleep", "3600"], start_new_session=True) for _ in range(want)]
    res["base_start_s"] = time.time() - t0
    try:
        res["base_sleep_pss_kb"] = med([pss_kb(p.pid) for p in procs])
        pids = [p.pid for p in procs]
        t0 = time.time()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        gone = gone_times(pids, 60)
        res["base_kill_gone_s"] = max(gone.values()) - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return res


# ---- report -------------------------------------------------------------------------------------


def report_launch(r: dict) -> None:
    print("\n### 1. launch -> every run command started (5 tasks / 7 nodes, warm controller)\n")
    cli, bash, pys = med(r["cli"]), med(r["bash"]), med(r["pyscript"])
    api, popen = med(r["api"]), med(r["popen"])
    rows = [
        ["CLI `jobgroup launch -d FILE`", span(r["cli"]), "", "≤150 ms",
         verdict(cli <= 0.150)],
        ["baseline: bash script, 7 `cmd &`", span(r["bash"]), f"{cli / bash:.1f}x", "≤2x",
         verdict(cli <= 2 * bash)],
        ["baseline: `python -c` + subprocess.Popen x7", span(r["pyscript"]),
         f"{cli / pys:.1f}x", "≤2x", verdict(cli <= 2 * pys)],
        ["API `jobgroup.launch()` in-process", span(r["api"]), "", "≤150 ms",
         verdict(api <= 0.150)],
        ["baseline: in-process subprocess.Popen x7", span(r["popen"]), f"{api / popen:.1f}x",
         "≤2x", verdict(api <= 2 * popen)],
    ]
    print(table(["measure", "ms median [min-max]", "jobgroup / baseline", "target", ""], rows))
    print("\nWhere the CLI's time goes (medians, ms):\n")
    p = {k: med(v) for k, v in r["pieces"].items()}
    rows = [
        ["CLI start -> job row committed (`submitted_at`)", span(r["cli_recorded"])],
        ["  of which: interpreter start (`python -c pass`)", span(r["py_bare"])],
        ["  of which: interpreter + the short road's imports (`python -c 'import re, "
         "jobgroup.cli.main, .cli.fastlaunch, .controller.rpc'`)", span(r["py_imports"])],
        ["  of which, in the controller (measured here in-process): load_file()",
         ms(p["load_file"])],
        ["  of which, in the controller: Store() open", ms(p["store_open"])],
        ["  of which, in the controller: create_job()", ms(p["create_job"])],
        ["  (the in-process API, after the commit) wake datagram", ms(p["wake_send"]) +
         " (send only)"],
        ["CLI process exit", span(r["cli_exit"])],
        ["controller: commit -> picks the job up (`job PENDING -> STARTING` event)",
         span(r["ctl_pickup"])],
        ["controller: pick-up -> 7 shims spawned and recorded (last `run-started`)",
         span(r["ctl_spawned"])],
        ["last `run-started` record -> last node's bash running", span(r["ctl_last_stamp"])],
        ["in-process `jobgroup.launch()` returns", span(r["api_return"])],
        ["in-process: commit -> controller picks the job up", span(r["api_pickup"])],
        ["in-process: pick-up -> 7 shims spawned and recorded", span(r["api_spawned"])],
        ["in-process: last `run-started` record -> last node's bash running",
         span(r["api_last_stamp"])],
    ]
    print(table(["step", "ms"], rows))
    print("\nTop-level imports of `jobgroup launch -d` (`python -X importtime`, cumulative ms):\n")
    top = r["importtime"]
    total = sum(v for _, v in top)
    print(", ".join(f"{k} {v * 1000:.1f}" for k, v in top[:12]) + f"; total {total * 1000:.1f}")


def report_failfast(r: dict) -> None:
    print("\n### 2. a primary's failure -> every node of its group stopped (1 primary exits 1, "
          "6 sibling `sleep` nodes, grace 10 s unused)\n")
    g, b = med(r["gone"]), med(r["base_gone"])
    rows = [
        ["controller records the first `stop`", span(r["stop_event"]), "", "", ""],
        ["every node process gone (shims, bash, sleeps)", span(r["gone"]), f"{g / b:.1f}x",
         "≤200 ms", verdict(g <= 0.200)],
        ["  the 6 `sleep`s gone", span(r["sleeps_gone"]), "", "", ""],
        ["job status terminal (`ended_at`)", span(r["terminal"]), "", "≤200 ms",
         verdict(med(r["terminal"]) <= 0.200)],
        ["baseline: bash `wait -n; kill` script, every process gone", span(r["base_gone"]),
         "", "", ""],
    ]
    print(table(["from the primary's failing `exit 1`", "ms median [min-max]",
                 "jobgroup / baseline", "target", ""], rows))
    print(f"\nfinal statuses: {sorted(set(r['statuses']))}")


def report_queue(q: dict) -> None:
    r, counts = q["res"], q["counts"]
    print(f"\n### 3. `jobgroup queue` with 1,000 ended jobs ({counts}; state.db "
          f"{q['db_kb']} kB)\n")
    bare = med(r["python -c pass"])
    rows = []
    for name, xs in r.items():
        target = ("≤200 ms" if name == "jobgroup queue" else
                  "(≤200 ms)" if name.startswith("jobgroup") else "")
        ok = verdict(med(xs) <= 0.200) if name.startswith("jobgroup") else ""
        rows.append([f"`{name}`", span(xs), f"{med(xs) / bare:.1f}x" if name != "python -c pass"
                     and "in-process" not in name else "", target, ok])
    print(table(["command", "ms median [min-max]", "vs `python -c pass`", "target", ""], rows))


def report_scale(r: dict) -> None:
    n = r["nodes"]
    print(f"\n### 4. one controller supervising {n} running nodes ({r['groups']} groups x 10 "
          "`sleep 3600`)\n")
    shim_pss = sum(r["shim_pss_kb"])
    sleep_pss = sum(r["sleep_pss_kb"])
    wrap_pss = sum(r["wrapper_pss_kb"])
    per_shim = shim_pss / len(r["shim_pss_kb"])
    fails = r.get("start_failures") or []
    if fails:
        print(f"**{len(fails)} of {r['groups']} groups failed to start** (measured the rest):")
        for f in fails[:3]:
            print(f"- {f}")
        print()
    rows = [
        ["open-files limit: this shell / controller", f"{r['nofile_harness']} / "
         f"{r['nofile_controller']}", "", ""],
        ["launch() x{0} in-process (detached)".format(r["groups"]),
         f"{r['launch_calls_s']:.2f} s", "", ""],
        [f"... until all {n} nodes run (pids recorded)", f"{r['all_running_s']:.2f} s "
         f"(baseline: Popen of {n} sleeps {r['base_start_s']:.2f} s)", "", ""],
        ["controller RSS, no groups", f"{r['ctl_rss_empty_kb'] / 1024:.1f} MB", "", ""],
        [f"controller RSS, {n} nodes (VmHWM)", f"{r['ctl_rss_kb'] / 1024:.1f} MB "
         f"({r['ctl_hwm_kb'] / 1024:.1f} MB); PSS {r['ctl_pss_kb'] / 1024:.1f} MB",
         "≤150 MB", verdict(r["ctl_rss_kb"] <= 150 * 1024)],
        ["controller open fds", str(r["ctl_fds"]), "", ""],
        [f"controller CPU over {r['idle_s']:.0f} s idle (stat / schedstat)",
         f"{r['ctl_cpu_pct_stat']:.2f}% / {r['ctl_cpu_pct_sched']:.3f}% of a core; "
         f"{r['ctl_wakeups']} context switches", "≤2%",
         verdict(max(r['ctl_cpu_pct_stat'], r['ctl_cpu_pct_sched']) <= 2)],
        ["PSS per shim (mean; max)", f"{per_shim:.0f} kB; {max(r['shim_pss_kb'])} kB "
         f"(RSS {r['shim_rss_kb']:.0f} kB)", "≤1 MB", verdict(per_shim <= 1024)],
        ["PSS per node of the isolation wrapper " + (", ".join(r["wrapper_comms"]) or "(none)"),
         f"{sum(r['wrapper_pss_kb']) / n:.0f} kB", "", ""],
        [f"PSS of all {n} nodes' processes (shims + wrappers + sleeps) / the sleeps alone",
         f"{(shim_pss + wrap_pss + sleep_pss) / 1024:.1f} MB / {sleep_pss / 1024:.1f} MB "
         f"({(shim_pss + wrap_pss + sleep_pss) / max(sleep_pss, 1):.1f}x); a plain sleep "
         f"started by this script: {r['base_sleep_pss_kb']:.0f} kB", "", ""],
        ["`jobgroup queue` with these groups running", span(r["queue_running"]) + " ms", "", ""],
        ["meanwhile, a primary's failure in one more 7-node group -> its nodes all gone",
         span(r["failfast_loaded"]["gone"]) + " ms", "≤200 ms",
         verdict(med(r["failfast_loaded"]["gone"]) <= 0.200)],
        ["... -> that job's status terminal", span(r["failfast_loaded"]["terminal"]) + " ms",
         "≤200 ms", verdict(med(r["failfast_loaded"]["terminal"]) <= 0.200)],
        ["`jobgroup cancel --all` command", f"{r['cancel_cmd_s'] * 1000:.0f} ms", "", ""],
        [f"cancel -> all {r['node_processes']} node processes gone",
         f"{r['cancel_all_gone_s'] * 1000:.0f} ms (baseline: SIGTERM to {n} plain sleeps -> "
         f"gone {r['base_kill_gone_s'] * 1000:.0f} ms)", "", ""],
        ["cancel -> every job terminal", f"{r['cancel_all_terminal_s'] * 1000:.0f} ms "
         f"{r['cancel_statuses']}", "", ""],
        ["controller RSS after all ended", f"{r['ctl_rss_after_kb'] / 1024:.1f} MB", "", ""],
    ]
    print(table(["measure", "value", "target", ""], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer runs, 30 groups, 5 s idle (a smoke test, ~30 s)")
    ap.add_argument("--runs", type=int, default=None, help="runs per measure (default 9)")
    ap.add_argument("--only", default="1,2,3,4", help="which benchmarks, e.g. 1,3")
    ap.add_argument("--idle", type=float, default=None, help="seconds of idle CPU sampling")
    ap.add_argument("--isolation", choices=("auto", "namespaces", "user", "none"),
                    default="auto", help="JOBGROUP_ISOLATION for the controllers started here "
                    "(default: what the machine allows)")
    args = ap.parse_args()
    if args.isolation != "auto":
        os.environ["JOBGROUP_ISOLATION"] = args.isolation
    else:
        os.environ.pop("JOBGROUP_ISOLATION", None)
    try:
        from jobgroup.backends.local import isolation

        level = isolation.detect_level()
    except ImportError:
        level = "none (no isolation layer in this version)"
    runs = args.runs or (3 if args.quick else 9)
    idle = args.idle or (5.0 if args.quick else 20.0)
    groups = 30 if args.quick else 100
    only = {int(x) for x in args.only.split(",")}
    print(f"# bench_runtime: {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python "
          f"{platform.python_version()}, jobgroup {git_rev()}; {runs} runs each; load average "
          f"{os.getloadavg()[0]:.2f}; node isolation: {level}")
    t0 = time.monotonic()
    try:
        if 1 in only:
            report_launch(bench_launch(runs))
        if 2 in only:
            report_failfast(bench_failfast(runs))
        if 3 in only:
            report_queue(bench_queue(runs))
        if 4 in only:
            report_scale(bench_scale(groups, idle, runs))
    finally:
        for h in list(Home.live):
            h.close()
    print(f"\n(total {time.monotonic() - t0:.0f} s; load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
