"""Reading node logs (issue 16, finding 6): peak RSS and time of `jobgroup logs`, side by side
with `cat` / `tail` of the same files as the baseline.

usage: .venv/bin/python bench/bench_logs.py [--mib 512] [--line-mib 64] [--runs 3] [--src DIR]
                                            [--no-dashboard]

A temporary state directory gets one ended job written straight into the store (no controller,
no processes): task `big` with 2 nodes whose logs are `--mib` MiB each of ~100-byte lines, and
task `line` whose log is one `--line-mib` MiB line without newline. Each command runs in a
fresh process, its output to /dev/null, files in the page cache (written just before); wall
time from here, peak RSS from GNU time's %M (else getrusage of a small Python parent, which
adds that parent's ~10 MB). Medians of `--runs`. `--src DIR` runs jobgroup from another source tree (e.g. an older commit's `src`) for
a before/after comparison. Then the dashboard, in a process of its own (its own VmHWM): the
/logs replies (default tail) and SSE streams of everything (`tail=999999999`) of the big and the
single-line logs. Last, the cost of the cap's copier: a node writing 2 × `--mib` MiB through
its shim, without and with a cap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobgroup.state import layout as paths
from jobgroup.state.store import Store

MIB = 1 << 20
TIME = "/usr/bin/time"  # GNU time: the peak RSS of exactly the command (%M)
RUN = """
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"rc": rc, "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""  # without GNU time (the figure then includes this parent's ~10 MB, inherited by the fork)


def populate(home: Path, mib: int, line_mib: int) -> tuple[int, list[Path], Path]:
    st = Store(home)
    jid = st.create_job(name="bench-logs", execution="parallel",
                        spec="name: bench\nexecution: parallel\n---\nname: big\nnum_nodes: 2\n"
                             "run: x\n---\nname: line\nrun: x\n",
                        base_dir="/", options={}, tasks=[("big", 2, True), ("line", 1, True)])
    with st.write() as c:
        c.execute("UPDATE jobs SET status='SUCCEEDED' WHERE id=?", (jid,))
        c.execute("UPDATE tasks SET status='SUCCEEDED' WHERE job_id=?", (jid,))
        c.execute("UPDATE nodes SET phase='ended', exit_code=0 WHERE job_id=?", (jid,))
    st.close()
    bigs = [paths.log_path(home, jid, "big", r) for r in (0, 1)]
    bigs[0].parent.mkdir(parents=True, exist_ok=True)
    for r, p in enumerate(bigs):
        with open(p, "wb") as f:
            step = 0
            while f.tell() < mib * MIB:
                f.write("".join(f"rank {r} step {step + i:9d} loss=0.{(step + i) % 9973:04d} "
                                f"lr=3e-4 tokens/s={(step + i) % 50000:6d} grad_norm=1.{i % 97:02d}"
                                f" {'.' * 10}\n" for i in range(10000)).encode())
                step += 10000
    line = paths.log_path(home, jid, "line", 0)
    with open(line, "wb") as f:
        for _ in range(line_mib):
            f.write(b"y" * MIB)
    return jid, bigs, line


def run(argv: list[str], env: dict[str, str], runs: int) -> dict | None:
    """Median wall time and peak RSS of `argv` (output to /dev/null) over `runs` runs; None
    when it fails."""
    secs, rss = [], []
    for _ in range(runs):
        t = time.perf_counter()
        if os.access(TIME, os.X_OK):
            p = subprocess.run([TIME, "-f", "%M", *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            rc, kb = p.returncode, int(p.stderr.split()[-1])
        else:
            p = subprocess.run([sys.executable, "-c", RUN, *argv], env=env, capture_output=True,
                               text=True, check=True)
            got = json.loads(p.stdout)
            rc, kb = got["rc"], got["rss_kb"]
        secs.append(time.perf_counter() - t)
        rss.append(kb)
        if rc != 0:
            return None  # e.g. an option the --src version does not have
    return {"s": statistics.median(secs), "rss_mb": statistics.median(rss) / 1000}


DASHBOARD = """
import sys
from jobgroup.dashboard.server import make_server
server = make_server(sys.argv[1], "127.0.0.1", 0)
print(server.port, getattr(server, "token", None) or "", flush=True)
server.serve_forever()
"""


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1000
    raise RuntimeError("no VmHWM")


def dashboard(home: Path, jid: int, env: dict[str, str]) -> None:
    """The dashboard's log endpoints in a process of its own: time and its peak RSS after each."""
    import http.client

    p = subprocess.Popen([sys.executable, "-c", DASHBOARD, str(home)], stdout=subprocess.PIPE,
                         text=True, env=env)
    try:
        port, _, token = p.stdout.readline().strip().partition(" ")  # type: ignore[union-attr]
        print(f"\ndashboard (its own process), peak RSS at start {vm_hwm_mb(p.pid):.0f} MB:\n")
        print("| request | time | bytes | dashboard's peak RSS after it |")
        print("|---|---|---|---|")
        for path in (f"/api/jobs/{jid}/logs?task=big", f"/api/jobs/{jid}/logs?task=line",
                     f"/api/jobs/{jid}/logs/stream?task=line&tail=999999999",
                     f"/api/jobs/{jid}/logs/stream?task=big&rank=1&tail=999999999"):
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            size = 0
            while block := r.read1(1 << 20):
                size += len(block)
            conn.close()
            print(f"| GET {path.split('?')[0].rsplit('/', 1)[-1]}?{path.split('?')[1]} | "
                  f"{time.perf_counter() - t:.2f} s | {size / MIB:.0f} MiB | "
                  f"{vm_hwm_mb(p.pid):.0f} MB |", flush=True)
    finally:
        p.terminate()
        p.wait(timeout=30)


def shim_copy(tmp: Path, mib: int, runs: int) -> None:
    """A node writing `mib` MiB of lines through its shim: straight to the file (no cap) and
    through the copier with a cap (rotating every 100 MiB)."""
    from jobgroup.backends.local import shim

    node = ["sh", "-c", f"yes 'a log line of some forty-odd bytes, like most' | head -c {mib}M"]
    print(f"\nthe shim, a node writing {mib} MiB of lines (medians of {runs}):\n")
    print("| log file | time |")
    print("|---|---|")
    for label, cap in (("written by the node itself (no cap)", 0),
                       ("through the shim's copier, JOBGROUP_LOG_MAX=100M", 100 << 20)):
        secs = []
        for i in range(runs):
            log = tmp / f"copy-{cap}-{i}.log"
            cmd = shim.shim_command(tmp / f"copy-{cap}-{i}.status", log, node, log_max=cap)
            t = time.perf_counter()
            subprocess.run(cmd, check=True, start_new_session=True)
            secs.append(time.perf_counter() - t)
            for f in (log, log.with_name(log.name + ".1")):
                f.unlink(missing_ok=True)
        print(f"| {label} | {statistics.median(secs):.2f} s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512, help="MiB of each of the 2 nodes' logs")
    ap.add_argument("--line-mib", type=int, default=64, help="MiB of the single line")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--src", help="run jobgroup from this source directory")
    ap.add_argument("--no-dashboard", action="store_true", help="skip the dashboard's figures")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        home = Path(tmp) / "home"
        jid, bigs, line = populate(home, args.mib, args.line_mib)
        env = {**os.environ, "JOBGROUP_HOME": str(home), "NO_COLOR": "1"}
        if args.src:
            env["PYTHONPATH"] = str(Path(args.src).resolve())
        jg = [sys.executable, "-m", "jobgroup", "logs", str(jid)]
        nlines = sum(1 for p in bigs for _ in open(p, "rb"))
        cases = [
            (f"2 × {args.mib} MiB ({nlines:,} lines), --no-follow",
             [*jg, "big", "--no-follow"], ["cat", *map(str, bigs)]),
            ("the same, following (the job has ended)", [*jg, "big"], ["cat", *map(str, bigs)]),
            ("the same, against a per-line tool", [*jg, "big", "--no-follow"],
             ["sed", "s/^/(big, rank=0) /", *map(str, bigs)]),
            (f"one {args.line_mib} MiB line without newline", [*jg, "line", "--no-follow"],
             ["cat", str(line)]),
            ("--tail 100 of the 2 × big logs", [*jg, "big", "--tail", "100", "--no-follow"],
             ["tail", "-n", "100", *map(str, bigs)]),
        ]
        print(f"CPython {platform.python_version()}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}; medians of {args.runs} runs"
              + (f"; jobgroup from {args.src}" if args.src else ""))
        print()
        print("| case | jobgroup logs: time, peak RSS | baseline: time, peak RSS | ratio (time) |")
        print("|---|---|---|---|")
        for name, ours, base in cases:
            a = run(ours, env, args.runs)
            b = run(base, env, args.runs)
            if a is None or b is None:
                print(f"| {name} | (exits with an error) | | |")
                continue
            print(f"| {name} | {a['s']:.2f} s, {a['rss_mb']:.0f} MB | `{base[0]}` {b['s']:.3f} s, "
                  f"{b['rss_mb']:.1f} MB | {a['s'] / max(b['s'], 1e-6):.0f}× |", flush=True)
        if not args.no_dashboard:
            dashboard(home, jid, env)
        shim_copy(Path(tmp), 2 * args.mib, args.runs)


if __name__ == "__main__":
    main()
