"""One declaration per launch flag (`launchflags.FLAGS`) feeds the click command, the short
road's parser and the typed request (`launchreq.LaunchRequest`) the controller and the API take;
a request that does not match the type is refused whole."""

from __future__ import annotations

import json
import socket

import msgspec
import pytest

from jobgroup import launchreq
from jobgroup.cli.jobs import launch as click_launch
from jobgroup.errors import UsageError
from jobgroup.launchflags import FAST, FLAGS, SENT


def test_every_flag_reaches_click_the_short_road_and_the_request():
    params = {p.name: p for p in click_launch.params}
    fields = set(launchreq.LaunchRequest.__struct_fields__)
    for f in FLAGS:
        assert f.field in params, f.field
        assert set(params[f.field].opts) == set(f.names), f.field
        assert (f.field in fields) == f.sent, f.field
        assert all((n in FAST) == f.fast for n in f.names), f.field
    assert fields == {"path", "base_env", "cwd", *(f.field for f in SENT)}


def test_request_types_are_checked():
    r = launchreq.make(path="/x.yaml", name="g", env={"A": "1"}, grace=3, gpus="any")
    assert (r.name, r.env, r.grace, r.gpus, r.cpu_only, r.base_env) == \
        ("g", {"A": "1"}, 3.0, "any", False, None)
    with pytest.raises(UsageError, match="bogus"):
        launchreq.make(path="/x.yaml", bogus=1)
    with pytest.raises(UsageError, match="grace"):
        launchreq.from_wire({"op": "launch", "path": "/x", "grace": "soon"})
    with pytest.raises(UsageError, match="env"):
        launchreq.make(env={"A": 1})
    wire = msgspec.to_builtins(r)
    assert launchreq.from_wire({"op": "launch", **wire}) == r


def test_controller_refuses_a_malformed_request_whole(jenv):
    spec = jenv.spec("name: g\nrun: echo hi\n")
    jenv.jg("controller", "start", check=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(jenv.home / "controller.sock"))
    s.sendall(json.dumps({"op": "launch", "path": str(spec), "grace": "soon",
                          "extra": 1}).encode() + b"\n")
    answer = json.loads(s.makefile().readline())
    s.close()
    assert not answer["ok"] and answer["exit_code"] == 2
    assert "malformed launch request" in answer["error"]
    assert json.loads(jenv.jg("queue", "--all", "--json", check=True).stdout) == []


def test_api_takes_fields_or_a_request(jenv):
    from jobgroup import api

    spec = jenv.spec("name: g\nrun: echo hi\n")
    with pytest.raises(UsageError, match="not both"):
        api.launch(str(spec), request=launchreq.make(), name="x", home=jenv.home)
    with pytest.raises(UsageError, match="nodes_count"):
        api.launch(str(spec), nodes_count=3, home=jenv.home)
    job = api.launch(str(spec), name="via-api", gpus_any=True, home=jenv.home)
    assert job.name == "via-api"
    assert jenv.wait(job.id)["status"] == "SUCCEEDED"


NULLS = """\
name: nulls
envs:
  HF_TOKEN:
secrets:
  WANDB_API_KEY:
run: |
  echo "hf=$HF_TOKEN"
  test "$WANDB_API_KEY" = w-s3cr3t && echo secret-ok
"""


def test_null_envs_and_secrets_are_filled_at_launch_or_refused(jenv):
    spec = jenv.spec(NULLS)
    p = jenv.jg("launch", str(spec), "-d")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--env HF_TOKEN" in p.stderr and "--secret" in p.stderr
    jenv.env["WANDB_API_KEY"] = "w-s3cr3t"
    job = jenv.launch_d(NULLS, "--env", "HF_TOKEN=hf-1", "--secret", "WANDB_API_KEY")
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    log = jenv.log(job, "nulls")
    assert "hf=hf-1" in log and "secret-ok" in log
    job = jenv.launch_d(NULLS, "--env", "HF_TOKEN=hf-2", "--secret", "WANDB_API_KEY=w-s3cr3t")
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    p = jenv.jg("launch", str(spec), "--env", "HF_TOKEN=x", "--secret", "1BAD=x", "-d")
    assert p.returncode == 2 and "--secret '1BAD=x'" in p.stderr


CLUSTER_SIZED = """\
name: cluster-sized
execution: parallel
---
name: ppo_trainer
num_nodes: 2
resources: {cpus: 64+, memory: 512+}
run: echo "trainer $SKYPILOT_NODE_RANK on $(cat /proc/sys/kernel/hostname)"
---
name: reward
resources: {cpus: 8, memory: 32}
run: getent hosts ppo_trainer-1.cluster-sized && echo resolved
"""


def test_best_effort_runs_a_cluster_sized_file_here(jenv):
    job = jenv.launch_d(CLUSTER_SIZED)
    final = jenv.wait(job)
    assert final["status"] == "FAILED_NO_RESOURCE"
    p = jenv.jg("launch", str(jenv.spec(CLUSTER_SIZED)), "--best-effort", "-d", check=True)
    assert "--best-effort: the group asks for 136 CPU(s) and 1056 GB" in p.stderr
    assert "without CPU/memory reservations or limits" in p.stderr
    job = int(p.stdout.split()[1])
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    # a task name with `_` (valid in SkyPilot): the node's hostname, and its name resolves
    assert "trainer 1 on ppo_trainer-1" in jenv.log(job, "ppo_trainer", 1)
    assert "resolved" in jenv.log(job, "reward")
