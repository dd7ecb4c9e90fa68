"""Relative `workdir` and `file_mounts` sources resolve against the directory launch runs in,
as SkyPilot's do (its job-group examples are launched from the repository's root); a path found
only next to the YAML is taken from there with one note; neither is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

from jobgroup import relpaths
from jobgroup.spec import load

UPSTREAM_SHAPE = """\
name: relpaths
file_mounts:
  /code: examples/grp/code
workdir: examples/grp/code
run: |
  cat /code/hello.txt
  echo "cwd=$(pwd)"
"""


def _tree(root):
    code = root / "examples" / "grp" / "code"
    code.mkdir(parents=True)
    (code / "hello.txt").write_text("hello from code\n")
    spec = root / "examples" / "grp" / "x.yaml"
    spec.write_text(UPSTREAM_SHAPE)
    return spec, code


def _launch(jenv, spec, cwd, *extra):
    return subprocess.run([sys.executable, "-m", "jobgroup", "launch", str(spec), "-d", *extra],
                          env=jenv.env, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_paths_resolve_against_the_current_directory_like_skypilot(jenv):
    spec, code = _tree(jenv.tmp)
    for _ in range(2):  # the first launch starts the controller (long road), then the short one
        p = _launch(jenv, spec, jenv.tmp)
        assert p.returncode == 0, p.stderr
        assert "not found in the current directory" not in p.stderr
        job = int(p.stdout.split()[1])
        assert jenv.wait(job)["status"] == "SUCCEEDED"
        log = jenv.log(job, "relpaths")
        assert "hello from code" in log and f"cwd={code}" in log


def test_a_path_only_next_to_the_yaml_is_used_with_a_note(jenv):
    folder = jenv.tmp / "proj"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "hello.txt").write_text("hi\n")
    spec = folder / "y.yaml"
    spec.write_text("name: near\nworkdir: code\nrun: cat hello.txt\n")
    elsewhere = jenv.tmp / "elsewhere"
    elsewhere.mkdir()
    p = _launch(jenv, spec, elsewhere)
    assert p.returncode == 0, p.stderr
    assert "code: not found in the current directory" in p.stderr
    assert f"using the YAML's folder ({folder})" in p.stderr
    job = int(p.stdout.split()[1])
    assert jenv.wait(job)["status"] == "SUCCEEDED" and "hi" in jenv.log(job, "near")


def test_a_path_found_nowhere_is_a_clear_error(jenv):
    spec = jenv.spec("name: gone\nworkdir: no/such/dir\nrun: echo x\n")
    p = _launch(jenv, spec, jenv.tmp)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{jenv.tmp}/no/such/dir does not exist" in p.stderr


def test_resolve_is_pure_and_leaves_absolute_and_remote_paths(tmp_path):
    (tmp_path / "a").mkdir()
    g = load("name: t\nworkdir: a\nfile_mounts:\n  /x: /etc/hostname\n  /y: s3://bucket/k\n"
             "  /z: {source: a, mode: COPY}\nrun: echo\n")
    out, notes = relpaths.resolve(g, str(tmp_path), None)
    t = out.tasks[0]
    assert t.workdir == str(tmp_path / "a") and not notes
    assert t.file_mounts["/x"] == "/etc/hostname" and t.file_mounts["/y"] == "s3://bucket/k"
    assert t.file_mounts["/z"]["source"] == str(tmp_path / "a")
    assert os.path.isabs(t.workdir)
