"""How many of SkyPilot's own YAML files pass `jobgroup validate`?

usage: python bench/skypilot_corpus.py SKYPILOT_CHECKOUT [--sky-python PY] [--json OUT]
                                       [--dirs examples llm tests] [--cli]

SKYPILOT_CHECKOUT is a checkout (or `git archive` export) of SkyPilot's repository. Every
`*.yaml`/`*.yml` under its examples/, llm/ and tests/ is loaded
1. by SkyPilot's own loader (tests/spec/skypilot_oracle.py, run with --sky-python: a Python with
   the `skypilot` package; default .venv/skypilot-oracle/bin/python, see tests/spec/oracle.py),
   as `sky jobs launch FILE --env K=x` would load it (null envs filled), and
2. by jobgroup's loader, exactly what `jobgroup validate FILE` runs (in-process; --cli runs the
   `jobgroup validate` command for each file instead, slower, same answers),
both from the checkout's root (the folder SkyPilot's docs run them from).

Prints how many files SkyPilot accepts, how many of those jobgroup accepts (the figure that
must reach 98%), each file SkyPilot accepts and jobgroup refuses with jobgroup's first error,
and which of them use remote object storage (s3://, gs://, ... sources or storage mounts).
Files that SkyPilot refuses are left out of the measure (listed with --verbose).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ORACLE = os.path.join(ROOT, "tests", "spec", "skypilot_oracle.py")
DEFAULT_SKY_PYTHON = os.path.join(ROOT, ".venv", "skypilot-oracle", "bin", "python")
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "r2://", "cos://", "oci://", "az://", "https://",
                  "nebius://", "coreweave://", "swift://")


def corpus(checkout: str, dirs: list[str]) -> list[str]:
    out = []
    for d in dirs:
        for base, subdirs, files in os.walk(os.path.join(checkout, d)):
            subdirs.sort()
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    out.append(os.path.relpath(os.path.join(base, f), checkout))
    return out


def skypilot_answers(checkout: str, files: list[str], python: str) -> dict[str, dict]:
    proc = subprocess.run([python, ORACLE], input="\n".join(files), text=True, cwd=checkout,
                          capture_output=True, timeout=1800)
    answers = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            answers[r["file"]] = r
    if len(answers) != len(files):
        sys.exit(f"the oracle answered for {len(answers)} of {len(files)} files:\n"
                 f"{proc.stderr[-3000:]}")
    return answers


def _uses_remote_storage(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    return any(s in text for s in REMOTE_SCHEMES) or "store:" in text


def jobgroup_answer(path: str, cli: bool) -> tuple[bool, str | None]:
    if cli:
        exe = os.path.join(os.path.dirname(sys.executable), "jobgroup")
        proc = subprocess.run([exe, "validate", path], capture_output=True, text=True)
        first = next((ln for ln in proc.stderr.splitlines() if "warning:" not in ln), None)
        return proc.returncode == 0, None if proc.returncode == 0 else first
    from jobgroup.spec import SpecError
    from jobgroup.spec.loader import load_path

    try:
        load_path(path)
    except SpecError as e:
        first = next((p for p in e.problems if p.severity == "error"), e.problems[0])
        return False, str(first)
    except Exception as e:  # noqa: BLE001 - a traceback is a finding, not a crash of the bench
        return False, f"CRASH {type(e).__name__}: {e}"
    return True, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout")
    ap.add_argument("--sky-python", default=DEFAULT_SKY_PYTHON)
    ap.add_argument("--dirs", nargs="+", default=["examples", "llm", "tests"])
    ap.add_argument("--json", dest="json_out", help="write every answer to this file")
    ap.add_argument("--cli", action="store_true", help="run `jobgroup validate` per file")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="also list the files SkyPilot refuses, with its reason")
    args = ap.parse_args()
    checkout = os.path.abspath(args.checkout)
    files = corpus(checkout, args.dirs)
    t0 = time.monotonic()
    sky = skypilot_answers(checkout, files, args.sky_python)
    t_sky = time.monotonic() - t0
    os.chdir(checkout)
    t0 = time.monotonic()
    ours = {f: jobgroup_answer(f, args.cli) for f in files}
    t_ours = time.monotonic() - t0
    accepted = [f for f in files if sky[f]["accepted"]]
    passing = [f for f in accepted if ours[f][0]]
    failing = [f for f in accepted if not ours[f][0]]
    remote = {f for f in accepted if _uses_remote_storage(f)}
    pct = 100.0 * len(passing) / max(1, len(accepted))
    print(f"files: {len(files)} YAML under {', '.join(args.dirs)} of {checkout}")
    print(f"SkyPilot's loader accepts: {len(accepted)}  ({t_sky:.1f} s)")
    print(f"jobgroup validate accepts: {len(passing)} of those = {pct:.1f}%  ({t_ours:.1f} s)")
    no_remote = [f for f in accepted if f not in remote]
    pass_nr = [f for f in no_remote if ours[f][0]]
    print(f"  without remote object storage: {len(pass_nr)} of {len(no_remote)} = "
          f"{100.0 * len(pass_nr) / max(1, len(no_remote)):.1f}%")
    also = [f for f in files if not sky[f]["accepted"] and ours[f][0]]
    print(f"jobgroup accepts {len(also)} file(s) that SkyPilot refuses")
    if failing:
        print(f"\nSkyPilot accepts, jobgroup refuses ({len(failing)}):")
        for f in failing:
            mark = " [remote storage]" if f in remote else ""
            print(f"  {f}{mark}\n      {ours[f][1]}")
    if args.verbose:
        print(f"\nSkyPilot refuses ({len(files) - len(accepted)}):")
        for f in files:
            if not sky[f]["accepted"]:
                print(f"  {f}  [jobgroup: {'accepts' if ours[f][0] else 'refuses'}]\n"
                      f"      {sky[f]['error']}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({f: {"skypilot": sky[f], "jobgroup_ok": ours[f][0],
                           "jobgroup_error": ours[f][1], "remote_storage": f in remote}
                       for f in files}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
