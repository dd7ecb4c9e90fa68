"""`jobgroup queue` with 1,000 ended jobs: this tree against a baseline commit, in the same run
(issue 21: the new queue lists recently ended jobs with REASON and INFRA; it must stay as fast as
before, <= 200 ms on a quiet machine).

usage: .venv/bin/python bench/bench_queue.py [--runs N] [--base REV]

The store is filled like `bench_runtime.py`'s benchmark 3: three real jobs launched here — a
5-task/7-node group that SUCCEEDED, one that FAILED, one CANCELLED — whose rows (jobs, tasks,
nodes, events) are cloned until 1,000 jobs have ended, one every 5 minutes back in time (~70
within the last 6 hours). The baseline is `git archive
REV src` unpacked in a temporary folder (default REV: 839e969, before issue 21); both are run by
the same interpreter the same way (`python -c` putting that src first on sys.path), on the same
state directory, interleaved run by run (A B C, B C A, ...) so the machine's noise hits every
variant alike; plus the console script `jobgroup` of this tree, as users run it. Figures are
medians [min-max] of wall time, milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_runtime import Home  # noqa: E402

GROUP = """name: seven
execution: parallel
primary_tasks: [lead]
---
name: lead
run: echo lead
---
name: w
num_nodes: 3
run: echo w $SKYPILOT_NODE_RANK
---
name: a
run: echo a
---
name: b
run: echo b
---
name: c
run: sleep 600
"""
FAILS = "name: fails\nrun: echo about to fail; exit 3\n"
SLEEPS = "name: sleeps\nrun: sleep 600\n"


def fill_store(home: Home, total: int) -> dict[str, int]:
    """Three real jobs (SUCCEEDED, FAILED, CANCELLED), their rows cloned up to `total`."""
    import sqlite3

    from jobgroup.api import cancel, launch

    specs = []
    for name, text in (("seven", GROUP), ("fails", FAILS), ("sleeps", SLEEPS)):
        path = home.dir / f"{name}.yaml"
        path.write_text(text)
        specs.append(path)
    templates = [launch(p, home=home.path).id for p in specs]
    time.sleep(1.0)
    cancel(templates[2], home=home.path)
    for j in templates:
        home.job_end(j, timeout=60)
    db = sqlite3.connect(home.path / "state.db", timeout=60, isolation_level=None)
    db.row_factory = sqlite3.Row
    rows = {j: {t: [dict(r) for r in db.execute(
        f"SELECT * FROM {t} WHERE {'id' if t == 'jobs' else 'job_id'}=?", (j,))]
        for t in ("jobs", "tasks", "nodes", "events")} for j in templates}
    times = {"jobs": ("submitted_at", "started_at", "ended_at", "primaries_done_at"),
             "tasks": ("started_at", "ended_at"),
             "nodes": ("stop_requested_at", "started_at", "ended_at"), "events": ("at",)}
    db.execute("BEGIN IMMEDIATE")
    for k in range(total - len(templates)):
        src = rows[templates[k % len(templates)]]
        shift = -(total - k) * 300.0  # one every 5 minutes back in time, oldest first
        job_id = max(templates) + 1 + k
        for tbl, recs in src.items():
            for rec in recs:
                rec = dict(rec)
                rec["id" if tbl == "jobs" else "job_id"] = job_id
                if tbl == "events":
                    del rec["id"]
                for c in times[tbl]:
                    if rec.get(c) is not None:
                        rec[c] += shift
                db.execute(f"INSERT INTO {tbl}({','.join(rec)}) VALUES "
                           f"({','.join('?' * len(rec))})", tuple(rec.values()))
    db.execute("COMMIT")
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("jobs", "tasks", "nodes", "events")}
    counts.update({s: n for s, n in db.execute("SELECT status, count(*) FROM jobs GROUP BY "
                                               "status")})
    db.close()
    return counts

RUN = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from jobgroup.cli.main import main; "
       "main()")


def baseline_src(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--base", default="839e969")
    args = ap.parse_args()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    home = Home("queue21")
    with tempfile.TemporaryDirectory(prefix="jgbench-base-") as tmp:
        try:
            home.start()
            counts = fill_store(home, 1000)
            old = str(baseline_src(args.base, Path(tmp)))
            new = str(ROOT / "src")
            py = sys.executable
            script = str(Path(py).with_name("jobgroup"))
            variants = {
                "python -c pass": [py, "-c", "pass"],
                f"{args.base}: queue (active only: 'No active jobs')": [py, "-c", RUN, old,
                                                                       "queue"],
                "this tree: queue (active + ended in 6h)": [py, "-c", RUN, new, "queue"],
                "this tree: jobgroup queue (console script)": [script, "queue"],
                "this tree: queue --recent 30d (all 1,000 through the window)": [
                    py, "-c", RUN, new, "queue", "--recent", "30d"],
                f"{args.base}: queue --all": [py, "-c", RUN, old, "queue", "--all"],
                "this tree: queue --all": [py, "-c", RUN, new, "queue", "--all"],
                f"{args.base}: queue --all --json": [py, "-c", RUN, old, "queue", "--all",
                                                    "--json"],
                "this tree: queue --all --json": [py, "-c", RUN, new, "queue", "--all",
                                                  "--json"],
                "this tree: queue -s FAILED --all": [py, "-c", RUN, new, "queue", "-s", "FAILED",
                                                     "--all"],
            }
            shown = {}
            for name, argv in variants.items():  # what each prints (rows), and a warm-up
                out = subprocess.run(argv, env=home.env, capture_output=True, text=True,
                                     check=True).stdout
                shown[name] = len(out.splitlines())
            res: dict[str, list[float]] = {k: [] for k in variants}
            names = list(variants)
            for i in range(args.runs):
                order = names[i % len(names):] + names[:i % len(names)]
                for name in order:
                    t0 = time.perf_counter()
                    subprocess.run(variants[name], env=home.env, stdout=subprocess.DEVNULL,
                                   check=True)
                    res[name].append(time.perf_counter() - t0)
        finally:
            home.close()
    print(f"### `jobgroup queue`, 1,000 ended jobs (this tree {head} vs {args.base}; "
          f"{args.runs} runs each)\n")
    print(f"store: {counts}\n")
    print("| variant | lines printed | median ms | min-max ms |")
    print("|---|---|---|---|")
    for name, xs in res.items():
        print(f"| {name} | {shown[name]} | {statistics.median(xs) * 1000:.1f} | "
              f"{min(xs) * 1000:.1f}-{max(xs) * 1000:.1f} |")


if __name__ == "__main__":
    main()
