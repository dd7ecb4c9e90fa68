"""Benchmark of spec loading (issue 2): `jobgroup validate` wall time including interpreter start,
next to a bare `python -c pass` measured in the same run, and in-process `jobgroup.spec.load`.

    .venv/bin/python bench/bench_validate.py [--runs 30] [--file examples/...yaml]

Budgets: validate of the 5-task RL example <= 150 ms wall; in-process load <= 20 ms.
Prints a markdown table (medians; p90 in brackets) for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "examples/rl-post-training/rl-post-training.yaml"


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}")
    return elapsed


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{statistics.median(ms):.1f} ms [{p90:.1f}]"


def _jobgroup_cmd() -> list[str]:
    script = Path(sys.executable).with_name("jobgroup")
    found = script if script.exists() else shutil.which("jobgroup")
    return [str(found)] if found else [sys.executable, "-m", "jobgroup"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--file", type=Path, default=DEFAULT)
    args = parser.parse_args()

    validate = [*_jobgroup_cmd(), "validate", str(args.file)]
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "python -c 'import jobgroup.spec'": [sys.executable, "-c", "import jobgroup.spec"],
        f"jobgroup validate {args.file.name}": validate,
        f"jobgroup validate {args.file.name} --json": [*validate, "--json"],
    }
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for cmd in commands.values():  # warm the page cache once
        _wall(cmd)
    for _ in range(args.runs):  # interleaved, so every command sees the same conditions
        for label, cmd in commands.items():
            samples[label].append(_wall(cmd))

    start = time.perf_counter()
    from jobgroup.spec import load  # noqa: E402 - timed on purpose

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    group = load(args.file)
    first_s = time.perf_counter() - start
    loads = []
    for _ in range(max(args.runs, 100)):
        start = time.perf_counter()
        load(args.file)
        loads.append(time.perf_counter() - start)

    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {args.runs} runs each; {args.file.relative_to(REPO)} "
          f"({len(group.tasks)} tasks)\n")
    print("| measure | median [p90] |\n|---|---|")
    for label, values in samples.items():
        print(f"| {label} | {_stats(values)} |")
    print(f"| in-process `import jobgroup.spec` (once) | {import_s * 1000:.1f} ms |")
    print(f"| in-process `load()` first call | {first_s * 1000:.1f} ms |")
    print(f"| in-process `load()` | {_stats(loads)} |")


if __name__ == "__main__":
    main()
