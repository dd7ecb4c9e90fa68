"""Submit -> every node running, for a 3-task group on the emulated Slurm cluster
(`jobgroup dev slurm up`), side by side with a hand-written heterogeneous `sbatch` job that
starts the same commands. Needs root and Slurm. Usage:

    .venv/bin/python bench/bench_slurm.py [--runs N]

Each command writes `date +%s.%N` to a file; the figure is the time from just before submission
to the last timestamp. Medians of interleaved runs; the ratio is jobgroup / sbatch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from jobgroup.devcluster import slurm  # noqa: E402


def wait_files(out: Path, n: int, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(out.glob("*"))
        if len(files) == n and all(f.read_text().strip() for f in files):
            return max(float(f.read_text()) for f in files)
        time.sleep(0.01)
    raise RuntimeError(f"only {len(list(out.glob('*')))} of {n} commands started")


def idle(env: dict[str, str]) -> None:
    """Wait until the cluster runs no job (each measurement starts from an idle cluster)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout
        if not out.strip():
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise RuntimeError("the cluster did not become idle")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the emulated cluster)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    home = tmp / "home"
    info = slurm.up(home, nodes=3)
    env = {**os.environ, **info.env(), "JOBGROUP_HOME": str(home)}
    jg = [str(REPO / ".venv" / "bin" / "jobgroup")]
    try:
        subprocess.run(jg + ["controller", "start"], env=env, check=True, capture_output=True)
        ours, base = [], []
        for i in range(args.runs):
            # hand-written heterogeneous batch job
            out = tmp / f"base{i}"
            out.mkdir()
            steps = " : ".join(f"--het-group={k} sh -c 'date +%s.%N > {out}/t{k}'"
                               for k in range(3))
            script = tmp / f"base{i}.sh"
            script.write_text("#!/bin/bash\n#SBATCH --nodes=1\n#SBATCH --output=/dev/null\n"
                              "#SBATCH hetjob\n#SBATCH --nodes=1\n#SBATCH hetjob\n"
                              f"#SBATCH --nodes=1\nsrun {steps}\n")
            idle(env)
            t0 = time.time()
            subprocess.run(["sbatch", "--parsable", str(script)], env=env, check=True,
                           capture_output=True, cwd=tmp)
            base.append(wait_files(out, 3) - t0)
            # the same through jobgroup
            out = tmp / f"ours{i}"
            out.mkdir()
            spec = tmp / f"ours{i}.yaml"
            spec.write_text("name: b\nexecution: parallel\n" + "".join(
                f"---\nname: t{k}\nrun: date +%s.%N > {out}/t{k}\n" for k in range(3)))
            idle(env)
            t0 = time.time()
            subprocess.run(jg + ["launch", str(spec), "-d", "--infra", "slurm"], env=env,
                           check=True, capture_output=True)
            ours.append(wait_files(out, 3) - t0)
        mb, mo = statistics.median(base), statistics.median(ours)
        print(f"{'':40}{'median':>10}{'min':>10}{'max':>10}")
        print(f"{'hand-written sbatch hetjob':40}{mb * 1000:9.0f}ms{min(base) * 1000:9.0f}ms"
              f"{max(base) * 1000:9.0f}ms")
        print(f"{'jobgroup launch --infra slurm':40}{mo * 1000:9.0f}ms{min(ours) * 1000:9.0f}ms"
              f"{max(ours) * 1000:9.0f}ms")
        print(f"ratio jobgroup / sbatch: {mo / mb:.2f} (target <= 1.5)")
    finally:
        subprocess.run(jg + ["controller", "stop"], env=env, capture_output=True)
        slurm.down(home)


if __name__ == "__main__":
    main()
