"""`jobgroup validate` and `jobgroup schema`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RL = REPO / "examples/rl-post-training/rl-post-training.yaml"


def jobgroup(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgroup", *args], capture_output=True,
                          text=True, input=stdin, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_validate_prints_a_summary_with_primaries() -> None:
    out = jobgroup("validate", str(RL))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "valid: job group 'rl-post-training' (parallel, 5 tasks, 7 nodes)"
    assert lines[1].split() == ["TASK", "NODES", "RESOURCES", "(per", "node)"]
    assert any(line.startswith("ppo-trainer [P]") for line in lines)
    assert any(line.startswith("rollout-server ") and " 2 " in line for line in lines)
    assert "replay-buffer 15s" in lines[-1]
    assert out.stderr == ""


def test_validate_json_is_the_normalized_spec() -> None:
    out = jobgroup("validate", str(RL), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["valid"] is True and data["warnings"] == []
    assert data["base_dir"] == str(RL.parent)
    spec = data["spec"]
    assert spec["execution"] == "parallel" and spec["primary_tasks"] == ["ppo-trainer"]
    assert [t["num_nodes"] for t in spec["tasks"]] == [1, 2, 1, 1, 2]
    assert spec["tasks"][4]["envs"]["NUM_STEPS"] == "30"  # numbers become strings


def test_validate_invalid_file_lists_problems_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: g\nexecution: parallel\n---\nname: t\nnum_nodes: 0\nrunn: x\n")
    out = jobgroup("validate", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"{path}:5:12: task 't' num_nodes: must be at least 1 (got 0)",
        f"{path}:6:1: task 't' runn: unknown field 'runn'; did you mean 'run'?",
        f"{path}: invalid (2 errors)",
    ]
    data = json.loads(jobgroup("validate", str(path), "--json").stdout)
    assert data["valid"] is False
    assert [(p["line"], p["col"], p["where"], p["path"]) for p in data["problems"]] == [
        (5, 12, "task 't'", "num_nodes"), (6, 1, "task 't'", "runn")]


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.yaml", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: (d / "bin.yaml").write_bytes(b"\x00\x01") and d / "bin.yaml", "binary file"),
    (lambda d: (d / "s.yaml").write_text("a: [") and d / "s.yaml", "invalid YAML"),
    (lambda d: (d / "e.yaml").write_text("# empty\n") and d / "e.yaml", "spec is empty"),
    (lambda d: "nofile", "nofile: no such file"),
])
def test_validate_bad_input_never_shows_a_traceback(tmp_path: Path, make, words: str) -> None:
    out = jobgroup("validate", str(make(tmp_path)))
    assert out.returncode == 2
    assert words in out.stderr and "Traceback" not in out.stderr


def test_validate_warnings_go_to_stderr_and_still_exit_0() -> None:
    out = jobgroup("validate", "-", stdin="name: My_Job\nrun: echo\n")
    assert out.returncode == 0
    assert out.stderr.startswith("<stdin>:1:7: task 'My_Job' name: warning: ")
    assert out.stdout.startswith("valid: job group 'My_Job' (parallel, 1 task, 1 node)")


def test_validate_name_override() -> None:
    out = jobgroup("validate", str(RL), "--name", "bad name")
    assert out.returncode == 2 and "name: invalid name 'bad name'" in out.stderr


def test_validate_help_has_examples() -> None:
    out = jobgroup("validate", "--help")
    assert out.returncode == 0 and "Examples:" in out.stdout and "--json" in out.stdout


def test_schema_is_json_schema_for_headers_and_tasks() -> None:
    out = jobgroup("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert {"Header", "Task", "Resources", "JobRecovery"} <= set(schema["definitions"])
