"""How many of SkyPilot's own YAML files pass `jobgroup validate`?

usage: python bench/skypilot_corpus.py SKYPILOT_CHECKOUT [--sky-python PY] [--json OUT]
                                       [--dirs examples llm tests] [--cli] [--dryrun]

SKYPILOT_CHECKOUT is a checkout (or `git archive` export) of SkyPilot's repository. Every
`*.yaml`/`*.yml` under its examples/, llm/ and tests/ is loaded
1. by SkyPilot's own loader (tests/spec/skypilot_oracle.py, run with --sky-python: a Python with
   the `skypilot` package; default .venv/skypilot-oracle/bin/python, see tests/spec/oracle.py),
   as `sky jobs launch FILE --env K=x` would load it (null envs filled), and
2. by jobgroup's loader, exactly what `jobgroup validate FILE` runs (in-process; --cli runs the
   `jobgroup validate` command for each file instead, slower, same answers),
both from the checkout's root (the folder SkyPilot's docs run them from).

--dryrun measures launch instead of validate: each file goes through what
`jobgroup launch FILE --dryrun --infra local --cpu-only` runs from the checkout's root (every
launch check: paths against the current directory, substitutions, mounts, this machine's
backend), with the entries the file leaves without a value filled as SkyPilot's oracle fills
them (`--env K=x`, `--secret K=x`); in-process, in a state directory of its own (removed).
With --home-files, HOME is a scratch folder in which the files and folders each file mounts
from the user's home (`~/.kaggle/kaggle.json`, `~/tmpfile`) are created empty first, as they
exist on the machine of the file's author: this separates "jobgroup cannot launch it" from
"this machine lacks the author's files" (both figures are printed).

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


def _home_sources(group) -> list[str]:  # noqa: ANN001 - a spec.models.JobGroup
    """Local paths under ~ that the group's workdirs and file_mounts name."""
    out = []
    for t in group.tasks:
        srcs = [t.workdir] if isinstance(t.workdir, str) else []
        for spec in t.file_mounts.values():
            srcs.append(spec if isinstance(spec, str) else (spec or {}).get("source"))
        out += [s for s in srcs if isinstance(s, str) and s.startswith("~/")]
    return out


def _make_home_files(group) -> None:  # noqa: ANN001
    for src in _home_sources(group):
        p = os.path.expanduser(src)
        if os.path.exists(p):
            continue
        if "." in os.path.basename(p.rstrip("/")):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            open(p, "a").close()
        else:
            os.makedirs(p, exist_ok=True)


def dryrun_answer(path: str, home: str, home_files: bool = False) -> tuple[bool, str | None]:
    """`jobgroup launch PATH --dryrun --infra local --cpu-only` with null entries filled."""
    from jobgroup import api, launchreq
    from jobgroup.errors import JobGroupError
    from jobgroup.spec import SpecError
    from jobgroup.spec.loader import load_path

    try:
        loaded = load_path(path)
        if home_files:
            _make_home_files(loaded.group)
        env = {u.name: "x" for u in loaded.unfilled if u.field == "envs"}
        secrets = {u.name: "x" for u in loaded.unfilled if u.field == "secrets"}
        request = launchreq.make(path=os.path.abspath(path), infra="local", cpu_only=True,
                                 env=env, secret=secrets, cwd=os.getcwd())
        api.dryrun(path, request=request, home=home, on_warning=lambda w: None)
    except SpecError as e:
        first = next((p for p in e.problems if p.severity == "error"), e.problems[0])
        return False, str(first)
    except JobGroupError as e:
        return False, str(e).replace("\n", " ")
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
    ap.add_argument("--dryrun", action="store_true",
                    help="measure `launch --dryrun --infra local --cpu-only` instead")
    ap.add_argument("--home-files", action="store_true",
                    help="with --dryrun: HOME is a scratch folder holding the ~/ files each "
                    "file mounts (created empty)")
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
    if args.dryrun:
        import shutil
        import tempfile

        home = tempfile.mkdtemp(prefix="jg-corpus-home-")
        scratch = tempfile.mkdtemp(prefix="jg-corpus-user-") if args.home_files else None
        if scratch:
            os.environ["HOME"] = scratch
        try:
            ours = {f: dryrun_answer(f, home, bool(scratch)) for f in files}
        finally:
            shutil.rmtree(home, ignore_errors=True)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
    else:
        ours = {f: jobgroup_answer(f, args.cli) for f in files}
    t_ours = time.monotonic() - t0
    what = "launch --dryrun --infra local --cpu-only" if args.dryrun else "validate"
    if args.home_files:
        what += " (the ~/ files they mount present)"
    accepted = [f for f in files if sky[f]["accepted"]]
    passing = [f for f in accepted if ours[f][0]]
    failing = [f for f in accepted if not ours[f][0]]
    remote = {f for f in accepted if _uses_remote_storage(f)}
    pct = 100.0 * len(passing) / max(1, len(accepted))
    print(f"files: {len(files)} YAML under {', '.join(args.dirs)} of {checkout}")
    print(f"SkyPilot's loader accepts: {len(accepted)}  ({t_sky:.1f} s)")
    print(f"jobgroup {what} accepts: {len(passing)} of those = {pct:.1f}%  ({t_ours:.1f} s)")
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
