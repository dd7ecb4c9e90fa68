"""Per-node cost of the local backend's C shim: PSS of N idle shims, and start/stop time; then
the time a node takes to write 256 MiB of lines through it.

usage: python bench/bench_shim.py [N] [--times]    (default 50; each shim supervises `sleep 1000`)

--times: the shims run with -T (as the local runner starts them since issue 21): the copier
process that records when output came (NAME.log.times) is forked too, its PSS counted with
its shim's, and the node's output goes through it (a pipe) instead of straight to the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobgroup.backends.local import shim


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss line")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def copier_of(pid: int, child: int) -> int | None:
    """The shim's child that is not the node (-T/-L: the copier)."""
    return next((c for c in children(pid) if c != child), None)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--times"]
    times = "--times" in sys.argv[1:]
    n = int(args[0]) if args else 50
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JOBGROUP_HOME", str(Path(tmp) / "home"))
        t0 = time.perf_counter()
        shim.shim_path()
        print(f"compile (or cache hit): {time.perf_counter() - t0:.3f} s")
        procs: list[subprocess.Popen] = []
        try:
            t0 = time.perf_counter()
            for i in range(n):
                cmd = shim.shim_command(f"{tmp}/{i}.status", f"{tmp}/{i}.log", ["sleep", "1000"],
                                        times=times)
                procs.append(subprocess.Popen(cmd, start_new_session=True))
            for i in range(n):
                while shim.read_pid_file(f"{tmp}/{i}.status") is None:
                    time.sleep(0.005)
            print(f"start {n} shims until every pid file exists: "
                  f"{(time.perf_counter() - t0) * 1000 / n:.2f} ms/shim")
            pss = []
            for i, p in enumerate(procs):
                kb = pss_kb(p.pid)
                copier = copier_of(p.pid, shim.read_pid_file(f"{tmp}/{i}.status").child_pid)
                if times and copier is not None:
                    kb += pss_kb(copier)
                pss.append(kb)
            what = "shim + copier" if times else "shim"
            print(f"PSS per idle {what}: mean {sum(pss) / n:.0f} kB, max {max(pss)} kB")
            t0 = time.perf_counter()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
            print(f"stop {n} shims (SIGTERM): {(time.perf_counter() - t0) * 1000 / n:.2f} ms/shim")
            write = ["sh", "-c", "yes 'a line of about sixty characters, as programs print them' "
                     "| head -c 268435456"]
            took = []
            for k in range(3):
                cmd = shim.shim_command(f"{tmp}/w{k}.status", f"{tmp}/w{k}.log", write,
                                        times=times)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                took.append(time.perf_counter() - t0)
                os.unlink(f"{tmp}/w{k}.log")
            print(f"a node writing 256 MiB of lines: {min(took):.2f} s (best of 3)")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGUSR1)
                    p.wait(timeout=60)


if __name__ == "__main__":
    main()
