"""SkyPilot's loader as a test oracle, in a virtual environment of its own.

SkyPilot pins click<8.2 (jobgroup's CLI and its tests use a newer click), so it is never installed
into the project's .venv: it lives in `.venv/skypilot-oracle` (inside the ignored .venv folder),
with the version range of pyproject's `oracle` extra, and is asked through
tests/spec/skypilot_oracle.py in a subprocess (one process for a whole batch of files: importing
SkyPilot takes ~1.5 s).

`oracle_python()` finds it: $JOBGROUP_SKYPILOT_PYTHON, else .venv/skypilot-oracle/bin/python;
when it is absent and $JOBGROUP_SKYPILOT_ORACLE is not "0", it is made once (~40 s and ~460 MB
from PyPI); when that cannot be done (no network), the oracle tests skip and say why.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "skypilot-oracle"
SCRIPT = Path(__file__).with_name("skypilot_oracle.py")


def requirement() -> str:
    """The `oracle` extra of pyproject.toml (e.g. ``skypilot>=0.14,<0.15``)."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]["oracle"][0]


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    import tempfile

    with tempfile.TemporaryDirectory(prefix="skypilot-oracle-home-") as home:
        proc = subprocess.run([str(python), "-c", "import sky"], capture_output=True,
                              timeout=300, env={**os.environ, "HOME": home})
    return proc.returncode == 0


def _make() -> str | None:
    """Make the oracle's venv; None when done, else why not."""
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / ".skypilot-oracle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once make it once
        python = VENV / "bin" / "python"
        if _works(python):
            return None
        steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
                 [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  requirement()]]
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                return f"{' '.join(cmd[:4])} timed out"
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                return f"{' '.join(cmd[:4])} failed: {tail[0]}"
        return None if _works(python) else "SkyPilot installed but cannot be imported"


_cached: tuple[str | None, str] | None = None


def oracle_python() -> tuple[str | None, str]:
    """(the Python that has SkyPilot, "") or (None, why there is none)."""
    global _cached
    if _cached is not None:
        return _cached
    given = os.environ.get("JOBGROUP_SKYPILOT_PYTHON")
    if given:
        _cached = (given, "") if _works(Path(given)) else \
            (None, f"$JOBGROUP_SKYPILOT_PYTHON={given} cannot import sky")
        return _cached
    python = VENV / "bin" / "python"
    if _works(python):
        _cached = (str(python), "")
    elif os.environ.get("JOBGROUP_SKYPILOT_ORACLE") == "0":
        _cached = (None, "JOBGROUP_SKYPILOT_ORACLE=0: SkyPilot's loader is not installed")
    else:
        why = _make()
        _cached = (str(python), "") if why is None else \
            (None, f"SkyPilot's loader (pip install '{requirement()}') is not available: {why}")
    return _cached


def ask(paths: list[Path], cwd: Path | None = None) -> dict[str, dict]:
    """SkyPilot's verdict on each file: {str(path): {"accepted", "error", "warnings"}}."""
    python, why = oracle_python()
    if python is None:
        raise RuntimeError(why)
    proc = subprocess.run([python, str(SCRIPT)], input="\n".join(str(p) for p in paths),
                          capture_output=True, text=True, cwd=cwd, timeout=600)
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[r["file"]] = r
    missing = [str(p) for p in paths if str(p) not in out]
    if missing:
        raise RuntimeError(f"the oracle gave no answer for {missing[:3]}: {proc.stderr[-2000:]}")
    return out
