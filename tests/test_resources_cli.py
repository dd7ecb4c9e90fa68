"""`jobgroup resources`: used/free from the jobs holding resources (store), best-effort nodes,
text and --json output, with a fake 4-GPU inventory."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jobgroup.cli.resources import resources, usage_from_store
from jobgroup.resources.admission import NodeAlloc, Pending, encode_placement, schedule
from jobgroup.resources.inventory import build, parse_fake_gpus
from jobgroup.resources.requests import job_request
from jobgroup.spec import load
from jobgroup.spec.dump import dump
from jobgroup.state import transitions
from jobgroup.state.status import Status
from jobgroup.state.store import Store

TRAIN = """\
name: train
execution: parallel
---
name: trainer
num_nodes: 2
resources: {accelerators: H100:1, cpus: 0.5, memory: 1}
run: 'true'
---
name: monitor
run: 'true'
"""
WAITING = """\
name: later
---
name: big
resources: {accelerators: H100:2}
run: 'true'
"""


def _job(store: Store, text: str, status: Status | None, options: dict | None = None) -> int:
    g = load(text)
    jid = store.create_job(name=g.name, execution=g.execution, spec=dump(g), base_dir="/",
                           options=options or {},
                           tasks=[(t.name or "", t.num_nodes, True) for t in g.tasks])
    if status is not None:
        transitions.set_job_status(store, jid, Status.STARTING, "admitted")
        if status != Status.STARTING:
            transitions.set_job_status(store, jid, status, "")
    return jid


def test_usage_from_store(tmp_path):
    inv = build(cpus=2, memory_gb=8, gpus=parse_fake_gpus("H100:4"), gpu_source="fake")
    store = Store(tmp_path)
    try:
        j1 = _job(store, TRAIN, Status.RUNNING)
        _job(store, WAITING, None)  # pending: holds nothing
        # a job whose placement was stored by the controller (GPUs 2, 3)
        g = load(TRAIN)
        p = schedule(inv, {99: [NodeAlloc(0, 0, gpus=(0, 1))]},
                     [Pending(0, job_request(g, {}))]).admitted[0]
        j3 = _job(store, TRAIN, Status.RUNNING,
                  {"placement": json.loads(encode_placement(p))})
        done = _job(store, TRAIN, Status.RUNNING)
        transitions.set_job_status(store, done, Status.SUCCEEDED, "")
        u = usage_from_store(store, inv)
    finally:
        store.close()
    assert [j.job_id for j in u.jobs] == [j1, j3]
    assert u.jobs[0].gpus == (0, 1) and not u.jobs[0].placement_known
    assert u.jobs[1].gpus == (2, 3) and u.jobs[1].placement_known
    assert u.used_cpus == 2 and u.free_cpus == 0 and u.used_memory_gb == 4
    assert [g["job"] for g in u.gpus] == [j1, j1, j3, j3]
    assert u.jobs[0].best_effort_nodes == ("monitor-0",) and u.best_effort_nodes == 2


def test_resources_command_text_and_json(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBGROUP_HOME", str(tmp_path))
    monkeypatch.setenv("JOBGROUP_FAKE_GPUS", "H100:4")
    (tmp_path / "resources.yaml").write_text("cpus: 1\nmemory: 4\n")
    store = Store(tmp_path)
    try:
        jid = _job(store, TRAIN, Status.RUNNING)
    finally:
        store.close()
    out = CliRunner().invoke(resources, [])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[:5] == [
        "RESOURCE  TOTAL   USED     FREE",
        "CPUs      1       1        0",
        "memory    4.0 GB  2.0 GB   2.0 GB",
        "GPU H100  4       2 (0,1)  2 (2,3)",
        "",
    ]
    assert f"{jid}    train  RUNNING  1" in out.output
    assert "Best-effort nodes (no cpus/memory/accelerators: reserve nothing, not limited): 1" \
        in out.output
    assert f"  job {jid} (train): monitor-0" in out.output
    assert "GPUs from: fake (JOBGROUP_FAKE_GPUS)" in out.output
    out = CliRunner().invoke(resources, ["--json"])
    data = json.loads(out.output)
    assert data["total_cpus"] == 1 and data["free_memory_gb"] == 2
    assert [g["job"] for g in data["gpus"]] == [jid, jid, None, None]
    assert data["jobs"][0]["best_effort_nodes"] == ["monitor-0"]


def test_resources_command_bad_config_is_a_user_error(tmp_path, monkeypatch):
    from jobgroup.errors import JobGroupError

    monkeypatch.setenv("JOBGROUP_HOME", str(tmp_path))
    (tmp_path / "resources.yaml").write_text("gpu: 1\n")
    out = CliRunner().invoke(resources, [])
    assert isinstance(out.exception, JobGroupError) and "unknown key" in str(out.exception)
