"""SkyPilot's `volumes:` mapping forms and relative `file_mounts` destinations on the local
backend (issue 14 items 1 and 5), through the CLI as a user runs it: what lands where on the
host, what a node sees, what is left after the job, and the errors for what cannot be mounted.

The patterns are SkyPilot's (its tests/test_yamls/pvc_volume*.yaml: `{name, sub_path}` and
`{size, labels}`; examples/using_file_mounts.yaml: `relative_dir: ...`, `./x: ...` under
~/sky_workdir; llm/llama-chatbots: `~/sky_workdir/ckpt/7B`), written here as our own files."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from conftest import wait_for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="level namespaces needs root")


def _finish(jenv, job: int, go: Path) -> dict:
    go.touch()
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    return final


def test_named_volume_with_sub_path_mounts_that_folder(jenv):
    job = jenv.launch_d("""
        name: subpath
        workdir: .
        volumes:
          /ckpt:
            name: team
            sub_path: runs/exp1
          /all: team
        run: |
          echo weights > /ckpt/model.pt
          echo "SEES $(ls /all/runs/exp1)"
          until [ -e go ]; do sleep 0.05; done
        """)
    wait_for(lambda: "SEES model.pt" in jenv.log(job, "subpath"), timeout=60)
    vols = json.loads(jenv.jg("volume", "ls", "--json", check=True).stdout)
    assert [(v["name"], v["used_by"]) for v in vols] == [("team", [job])]
    _finish(jenv, job, jenv.tmp / "go")
    assert (jenv.home / "volumes" / "team" / "runs" / "exp1" / "model.pt").read_text() == \
        "weights\n"
    assert not os.path.exists("/ckpt") and not os.path.exists("/all")


def test_a_volume_made_for_the_job_is_shared_by_the_tasks_nodes_and_removed_at_its_end(jenv):
    job = jenv.launch_d("""
        name: eph
        execution: parallel
        ---
        name: a
        num_nodes: 2
        workdir: .
        volumes:
          /scratch:
            size: 1Gi
            labels: {purpose: scratch}
        setup: echo "setup $SKYPILOT_NODE_RANK" > /scratch/setup-$SKYPILOT_NODE_RANK
        run: |
          until [ -e /scratch/setup-0 ] && [ -e /scratch/setup-1 ]; do sleep 0.05; done
          echo "LISTED $(ls /scratch | tr '\\n' ' ')"
          until [ -e go ]; do sleep 0.05; done
        ---
        name: b
        workdir: .
        volumes: {/scratch: {size: 1Gi}}
        run: |
          echo "B SEES $(ls -A /scratch | wc -l) files"
          until [ -e go ]; do sleep 0.05; done
        """)
    for rank in (0, 1):  # what setup wrote is there in run, and each node sees the other's
        wait_for(lambda: "LISTED setup-0 setup-1" in jenv.log(job, "a", rank), timeout=60)
    wait_for(lambda: "B SEES 0 files" in jenv.log(job, "b"), timeout=60)  # a volume per task
    root = jenv.home / "jobs" / str(job) / "ephemeral"
    (a_dir,) = (root / "a").iterdir()
    assert sorted(os.listdir(a_dir)) == ["setup-0", "setup-1"]
    assert len(list((root / "b").iterdir())) == 1
    assert json.loads(jenv.jg("volume", "ls", "--json", check=True).stdout) == []  # not named
    _finish(jenv, job, jenv.tmp / "go")
    assert not root.exists()  # removed with the job's end
    assert not os.path.exists("/scratch")


@pytest.mark.parametrize("level", [pytest.param("namespaces", marks=needs_root), "user"])
def test_relative_destinations_are_under_the_working_directory_as_on_skypilot(jenv, level):
    jenv.force_level(level)
    tag = uuid.uuid4().hex[:8]
    proj = jenv.tmp / "proj"
    (proj / "existing").mkdir(parents=True)
    (proj / "existing" / "keep.txt").write_text("mine\n")
    (jenv.tmp / "data").mkdir()
    (jenv.tmp / "data" / "a.txt").write_text("data-a\n")
    (jenv.tmp / "tool.yaml").write_text("tool: 1\n")
    spec = jenv.spec(f"""
        name: rel
        num_nodes: 2
        workdir: proj
        file_mounts:
          relative_dir: ./data
          ./bench.py: ./data/a.txt
          existing: ./data
          ~/sky_workdir/ckpt/7B: ./data
          ../up-{tag}: ./data
          ~/cfg-{tag}/tool.yaml: ./tool.yaml
        run: |
          echo "PWD $(pwd)"
          cat relative_dir/a.txt bench.py existing/a.txt ckpt/7B/a.txt ~/up-{tag}/a.txt \\
            ~/cfg-{tag}/tool.yaml | sed 's/^/READ /'
          echo "EXISTING $(ls existing)"
          echo "rank $SKYPILOT_NODE_RANK" > result-$SKYPILOT_NODE_RANK.txt
        """)
    p = jenv.jg("launch", str(spec), check=True, timeout=120)
    assert "SUCCEEDED" in p.stderr, p.stderr
    for rank in (0, 1):
        log = jenv.log(1, "rel", rank)
        assert f"PWD {proj}" in log
        assert log.count("READ data-a") == 5 and "READ tool: 1" in log, log
        assert "EXISTING a.txt" in log  # the mount covers the folder in the node only
    # The working directory is as it was, plus what the nodes wrote: mount points are gone.
    assert sorted(os.listdir(proj)) == ["existing", "result-0.txt", "result-1.txt"]
    assert os.listdir(proj / "existing") == ["keep.txt"]
    home = Path(jenv.env.get("HOME") or os.path.expanduser("~"))  # (the nodes' at level user)
    assert not (home / f"up-{tag}").exists() and not (home / f"cfg-{tag}").exists()
    assert not list(jenv.home.glob("jobs/*/mountpoints"))


def test_without_a_workdir_relative_destinations_are_in_the_nodes_own_directory(jenv):
    (jenv.tmp / "data").mkdir()
    (jenv.tmp / "data" / "a.txt").write_text("data-a\n")
    spec = jenv.spec("""
        name: nowd
        file_mounts: {relative_dir: ./data}
        run: echo "PWD $(pwd)"; cat relative_dir/a.txt
        """)
    assert "SUCCEEDED" in jenv.jg("launch", str(spec), check=True, timeout=120).stderr
    own = jenv.home / "jobs" / "1" / "work" / "nowd-0"
    assert f"PWD {own}\ndata-a" in jenv.log(1, "nowd")
    assert not (own / "relative_dir").exists()


def test_a_mount_point_two_jobs_share_stays_until_the_last_one_ends(jenv):
    proj = jenv.tmp / "proj"
    proj.mkdir()
    (jenv.tmp / "data").mkdir()
    (jenv.tmp / "data" / "a.txt").write_text("data-a\n")
    text = """
        name: {name}
        workdir: proj
        file_mounts: {{shared: ./data}}
        run: |
          cat shared/a.txt
          until [ -e {name}.go ]; do sleep 0.05; done
          cat shared/a.txt | sed 's/^/AFTER /'
        """
    first = jenv.launch_d(text.format(name="first"))
    second = jenv.launch_d(text.format(name="second"))
    for job, name in ((first, "first"), (second, "second")):
        wait_for(lambda: "data-a" in jenv.log(job, name), timeout=60)
    _finish(jenv, first, proj / "first.go")
    assert (proj / "shared").is_dir()  # the second job still mounts there
    _finish(jenv, second, proj / "second.go")
    assert "AFTER data-a" in jenv.log(second, "second")
    assert sorted(os.listdir(proj)) == ["first.go", "second.go"]


def _refused(jenv, text: str, *parts: str, level: str | None = None) -> str:
    if level:
        jenv.force_level(level)
    p = jenv.jg("launch", str(jenv.spec(textwrap.dedent(text), "bad.yaml")), "-d")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    for part in parts:
        assert part in p.stderr, (part, p.stderr)
    return p.stderr


def test_bad_forms_are_refused_at_launch_naming_task_and_mount_point(jenv):
    (jenv.tmp / "src").mkdir()
    _refused(jenv, """
        name: t1
        volumes:
          /a: {name: v, sub_path: ../x}
          /b: {name: v, sub_path: /abs}
          /c: {labels: {a: b}}
          /d: {size: lots}
        run: "true"
        """, "task 't1' volumes./a.sub_path", "task 't1' volumes./b.sub_path",
        "task 't1' volumes./c: a volume mapping needs 'name'", "task 't1' volumes./d.size")
    _refused(jenv, """
        name: t2
        envs: {SUB: ../x}
        volumes:
          /a: {name: v, sub_path: $SUB}
        run: "true"
        """, "task 't2' volumes./a.sub_path", "no '..'")
    _refused(jenv, """
        name: t3
        file_mounts:
          .: ./src
          ../../out: ./src
        run: "true"
        """, "bad.yaml:4:3: task 't3' file_mounts..: that is the node's working directory itself",
        "bad.yaml:5:3: task 't3' file_mounts.../../out: ", "leads out of the home directory")
    # A sub_path that an existing link in the volume would lead out of it.
    vol = jenv.home / "volumes" / "v"
    vol.mkdir(parents=True)
    (vol / "link").symlink_to(jenv.tmp / "elsewhere")
    _refused(jenv, """
        name: t4
        volumes: {/a: {name: v, sub_path: link/x}}
        run: touch /a/x
        """, "task 't4': volumes /a: sub_path 'link/x' leads out of volume 'v'")
    assert not (jenv.tmp / "elsewhere").exists()


def test_without_mount_namespaces_volumes_and_relative_destinations_are_refused(jenv):
    (jenv.tmp / "src").mkdir()
    _refused(jenv, """
        name: t5
        volumes: {/scratch: {size: 1Gi}}
        file_mounts: {rel: ./src}
        run: "true"
        """, "task 't5': volumes and file_mounts need mount namespaces",
        "relative destinations such as rel too", level="none")


def test_on_kubernetes_sub_path_is_the_claims_subpath_and_a_job_volume_is_refused():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
    from jobgroup.backends.kubernetes import KubernetesConfig, RenderError, render_objects
    from jobgroup.spec import load

    group = load(textwrap.dedent("""
        name: kv
        volumes:
          /ckpt: {name: team, sub_path: runs/exp1}
          /data: shared
        run: "true"
        """))
    objs = render_objects(group, 1, KubernetesConfig(create_volumes=True), workload="pods")
    for obj in objs:
        kv.validate(obj, "1.33", strict=True)
    (pod,) = [o for o in objs if o["kind"] == "Pod"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: (claims.get(m["name"]), m.get("subPath"))
              for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/ckpt"] == ("team", "runs/exp1") and mounts["/data"] == ("shared", None)
    assert sorted(o["metadata"]["name"] for o in objs
                  if o["kind"] == "PersistentVolumeClaim") == ["shared", "team"]
    with pytest.raises(RenderError) as e:
        render_objects(load("name: kv\nvolumes: {/s: {size: 1Gi}}\nrun: 'true'\n"), 1)
    assert "task 'kv': volumes /s: a volume made for the job" in str(e.value)
