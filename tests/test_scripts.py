"""The README's two set-up commands (issue 21): `scripts/demo` sets up only what the local backend
and the examples need; `scripts/test` (CI's command) sets up the rest too."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _plan(*args: str) -> list[str]:
    p = subprocess.run([str(ROOT / "scripts" / "bootstrap"), *args, "--plan"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [ln.removeprefix("want: ") for ln in p.stdout.splitlines()]


def _bootstrap_calls(script: str) -> list[str]:
    lines = (ROOT / "scripts" / script).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines
            if re.match(r"\s*scripts/bootstrap\b", ln)]


def test_demo_sets_up_only_what_the_local_backend_needs():
    assert _plan() == ["compiler", "bubblewrap", "nftables", "pip install -e .[examples]"]
    assert _bootstrap_calls("demo") == ["scripts/bootstrap"]


def test_test_sets_up_everything():
    assert _plan("--test") == ["compiler", "bubblewrap", "nftables", "slurm", "chromium",
                               "pip install -e .[test,examples]"]
    assert _bootstrap_calls("test") == ["scripts/bootstrap --test"]
    assert "exec scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_names_the_two_commands_and_what_each_installs():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^scripts/demo\s+#", setup, re.M) and re.search(r"^scripts/test\s+#",
                                                                      setup, re.M)
    for script in ("demo", "test", "bootstrap"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111
    demo_part, test_part = setup.split("`scripts/bootstrap --test`", 1)
    assert "slurm" not in demo_part.lower() and "chromium" not in demo_part.lower()
    assert "slurm-wlm" in test_part and "chromium" in test_part


def test_bootstrap_refuses_what_it_does_not_know():
    p = subprocess.run([str(ROOT / "scripts" / "bootstrap"), "--everything"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage: scripts/bootstrap [--test] [--plan]" in p.stderr
