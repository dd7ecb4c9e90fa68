"""`jobgroup launch`'s short road (cli.fastlaunch): what it accepts, what it hands to click, and
that both roads print the same thing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobgroup.cli.fastlaunch import parse

SPEC = "name: fast\nrun: echo hi\n"


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["f.yaml", "--dryrun"], ["f.yaml", "-o", "yaml"], ["f.yaml", "--bogus"],
    ["f.yaml", "--env", "1A=x"], ["f.yaml", "--env", "JOBGROUP_SURELY_UNSET_XYZ"],
    ["f.yaml", "--grace", "soon"], ["f.yaml", "--inherit-env=yes"],
    ["f.yaml", "--num-nodes", "two"], ["f.yaml", "--env-file", "x.env"], ["a.yaml", "b.yaml"], [], ["f.yaml", "--name"],
    ["f.yaml", "-dh"], ["f.yaml", "--detach=yes"], ["--", "f.yaml"], ["f.yaml", "--infra"],
])
def test_declines_what_click_must_answer(args: list[str]) -> None:
    assert parse(args) is None


def test_declines_a_directory(tmp_path: Path) -> None:
    assert parse([str(tmp_path)]) is None


def test_parses_every_plain_option(tmp_path: Path) -> None:
    opts = parse(["x.yaml", "-d", "--name=n1", "--env", "A=1", "--env=B=2=3", "--env", "A=4",
                  "--infra", "local", "--grace", "2.5", "--gpus", "any", "--cpu-only",
                  "--env", "HOME", "--inherit-env", "--cpus", "4+", "--memory=16",
                  "--num-nodes", "3", "--workdir", "src"])
    given = {"name": "n1", "env": {"A": "4", "B": "2=3", "HOME": os.environ["HOME"]},
             "infra": "local", "grace": 2.5, "gpus": "any", "cpu_only": True, "detach": True,
             "inherit_env": True, "path": str(Path("x.yaml").absolute()), "cpus": "4+",
             "memory": "16", "num_nodes": 3, "workdir": "src"}
    assert {k: opts[k] for k in given} == given
    # every other flag the short road takes is at its default
    from jobgroup.launchflags import FLAGS

    assert {k: v for k, v in opts.items() if k not in given} == \
        {f.field: f.default for f in FLAGS if f.fast and f.field not in given}
    assert parse(["-n", "n2", "z.yaml"])["name"] == "n2"  # SkyPilot's short form
    assert parse(["--detach", "y.yaml"])["path"] == str(Path("y.yaml").absolute())


def _launch(jenv, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Launch in a subprocess; also says whether click was imported (the long road)."""
    code = ("import sys\nfrom jobgroup.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print('CLICK' if 'click' in sys.modules else 'NOCLICK', file=sys.stderr)\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code, "launch", *args], env=jenv.env,
                       capture_output=True, text=True, timeout=60, cwd=jenv.tmp)
    return p, p.stderr.rstrip().endswith("NOCLICK")


def test_both_roads_print_the_same(jenv) -> None:
    spec = jenv.spec(SPEC)
    first, fast1 = _launch(jenv, str(spec), "-d")  # no controller yet: click starts it
    second, fast2 = _launch(jenv, str(spec), "-d")
    assert (fast1, fast2) == (False, True)
    assert first.returncode == second.returncode == 0
    norm = lambda s: re.sub(r"\b[12]\b", "N", s.replace("NOCLICK", "").replace("CLICK", ""))
    assert norm(first.stdout) == norm(second.stdout)
    assert norm(first.stderr) == norm(second.stderr)
    assert "Job 2 (fast) submitted: 1 task(s), 1 node(s)." in second.stdout
    assert "Isolation: " in second.stderr
    for job in (1, 2):
        assert jenv.wait(job)["status"] == "SUCCEEDED"


def test_short_road_errors_and_following(jenv) -> None:
    jenv.launch_d(SPEC)  # the controller runs from here on: every launch below is short
    bad = jenv.spec("name: x\nrun: 1\nbogus: 2\n", "bad.yaml")
    p, fast = _launch(jenv, str(bad))
    assert fast and p.returncode == 2 and "bogus" in p.stderr and "Traceback" not in p.stderr
    p, fast = _launch(jenv, str(jenv.tmp / "missing.yaml"), "-d")
    assert fast and p.returncode == 2 and "missing.yaml" in p.stderr
    fail = jenv.spec("name: f\nrun: echo dying; exit 3\n", "fail.yaml")
    p, _ = _launch(jenv, str(fail))  # follows the logs to the end, exit 1
    assert p.returncode == 1 and "dying" in p.stdout and "FAILED" in p.stderr
    p, fast = _launch(jenv, str(jenv.tmp), "-d")  # a directory: click's own message
    assert not fast and p.returncode == 2 and "is a directory" in p.stderr
