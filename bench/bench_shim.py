"""Per-node cost of the local backend's C shim: PSS of N idle shims, and start/stop time.

usage: python bench/bench_shim.py [N]    (default 50; each shim supervises `sleep 1000`)
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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JOBGROUP_HOME", str(Path(tmp) / "home"))
        t0 = time.perf_counter()
        shim.shim_path()
        print(f"compile (or cache hit): {time.perf_counter() - t0:.3f} s")
        procs: list[subprocess.Popen] = []
        try:
            t0 = time.perf_counter()
            for i in range(n):
                cmd = shim.shim_command(f"{tmp}/{i}.status", f"{tmp}/{i}.log", ["sleep", "1000"])
                procs.append(subprocess.Popen(cmd, start_new_session=True))
            for i in range(n):
                while shim.read_pid_file(f"{tmp}/{i}.status") is None:
                    time.sleep(0.005)
            print(f"start {n} shims until every pid file exists: "
                  f"{(time.perf_counter() - t0) * 1000 / n:.2f} ms/shim")
            pss = [pss_kb(p.pid) for p in procs]
            print(f"PSS per idle shim: mean {sum(pss) / n:.0f} kB, max {max(pss)} kB")
            t0 = time.perf_counter()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
            print(f"stop {n} shims (SIGTERM): {(time.perf_counter() - t0) * 1000 / n:.2f} ms/shim")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGUSR1)
                    p.wait(timeout=60)


if __name__ == "__main__":
    main()
