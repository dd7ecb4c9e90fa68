"""Admission on the local backend, end to end: a fake 4-GPU inventory, groups competing for
it, and real cgroup limits."""

from __future__ import annotations

import json
import os

import pytest

from conftest import wait_for


@pytest.fixture
def gpus4(jenv):
    jenv.env["JOBGROUP_FAKE_GPUS"] = "H100:4"  # inherited by the controller it starts
    return jenv


def gpu_group(name: str, nodes: int, per_node: int, run: str = "sleep 1000") -> str:
    return f"""
        name: {name}
        num_nodes: {nodes}
        resources: {{accelerators: H100:{per_node}}}
        run: echo "$SKYPILOT_NODE_RANK:$CUDA_VISIBLE_DEVICES:$SKYPILOT_NUM_GPUS_PER_NODE"; {run}
        """


def visible(jenv, job: int, task: str, nodes: int) -> list[set[str]]:
    out = []
    for r in range(nodes):
        line = wait_for(lambda: jenv.log(job, task, r).strip())
        _, devices, count = line.splitlines()[0].split(":")
        assert int(count) == len(devices.split(","))
        out.append(set(devices.split(",")))
    return out


def test_three_groups_compete_for_four_gpus(gpus4):
    jenv = gpus4
    a = jenv.launch_d(gpu_group("a", 2, 1))            # takes 2 GPUs
    wait_for(lambda: jenv.job(a)["status"] == "RUNNING")
    b = jenv.launch_d(gpu_group("b", 1, 3))            # needs 3: waits (head of the queue)
    c = jenv.launch_d(gpu_group("c", 1, 1, "sleep 0.5"))  # fits in the 2 left? no: kept for b
    d = jenv.launch_d(gpu_group("d", 1, 8))            # can never fit
    final_d = jenv.wait(d)
    assert final_d["status"] == "FAILED_NO_RESOURCE"
    assert "8" in final_d["reason"] and "4" in final_d["reason"]
    jobs = {j["id"]: j for j in json.loads(jenv.jg("queue", "--json", check=True).stdout)}
    assert jobs[b]["status"] == "PENDING" and "GPU" in jobs[b]["reason"]
    assert "held by job" in jobs[b]["reason"]
    # c would fit in the 2 free GPUs, but b (the head) needs them: c must not starve b.
    assert jobs[c]["status"] == "PENDING" and "job" in jobs[c]["reason"]
    assert "pending" in jenv.jg("queue", check=True).stdout.lower()
    a_sets = visible(jenv, a, "a", 2)
    assert a_sets[0].isdisjoint(a_sets[1])
    jenv.jg("cancel", str(a), check=True)
    wait_for(lambda: jenv.job(b)["status"] == "RUNNING", timeout=30)
    b_set = visible(jenv, b, "b", 1)[0]
    assert len(b_set) == 3
    # Now c fits in the one GPU left (backfill behind nobody): it runs and ends.
    assert jenv.wait(c)["status"] == "SUCCEEDED"
    c_set = visible(jenv, c, "c", 1)[0]
    assert c_set.isdisjoint(b_set)
    evs = json.loads(jenv.jg("events", str(b), "--json", check=True).stdout)
    assert [e["kind"] for e in evs].count("waiting") >= 1 and any(
        e["kind"] == "admitted" for e in evs)


def test_backfill_lets_a_small_group_pass_a_waiting_one(gpus4):
    jenv = gpus4
    a = jenv.launch_d(gpu_group("a", 1, 3))            # 1 GPU left
    wait_for(lambda: jenv.job(a)["status"] == "RUNNING")
    big = jenv.launch_d(gpu_group("big", 1, 4))        # waits for a
    small = jenv.launch_d("name: small\nrun: echo best-effort\n")  # reserves nothing
    assert jenv.wait(small)["status"] == "SUCCEEDED"
    assert jenv.job(big)["status"] == "PENDING"


def test_cpu_only_and_gpus_any_opt_ins(gpus4):
    jenv = gpus4
    spec = jenv.spec("name: a100\nresources: {accelerators: A100:1}\nrun: echo "
                     "\"[$CUDA_VISIBLE_DEVICES]\"\n")
    p = jenv.jg("launch", str(spec))
    assert p.returncode == 1 and "FAILED_NO_RESOURCE" in p.stderr and "--gpus any" in p.stderr
    p = jenv.jg("launch", str(spec), "--gpus", "any", check=True)
    assert "[0]" in p.stdout
    p = jenv.jg("launch", str(spec), "--cpu-only", check=True)
    assert "[]" in p.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroup limits need root here")
def test_memory_limit_kills_the_node_and_says_so(jenv):
    job = jenv.launch_d("""
        name: hungry
        resources: {memory: 0.05}
        run: python3 -c "b = bytearray(300 * 1024 * 1024); print('allocated')"
        """)
    final = jenv.wait(job)
    assert final["status"] == "FAILED"
    assert "out of memory" in final["reason"], final["reason"]
    assert "allocated" not in jenv.log(job, "hungry")
    from jobgroup.resources import cgroups

    assert not cgroups.leftovers(jenv.home)


def test_pipeline_steps_are_admitted_one_at_a_time(gpus4):
    jenv = gpus4
    job = jenv.launch_d("""
        name: steps
        execution: serial
        ---
        name: prep
        resources: {accelerators: H100:3}
        run: echo "prep [$CUDA_VISIBLE_DEVICES]"
        ---
        name: train
        resources: {accelerators: H100:4}
        run: echo "train [$CUDA_VISIBLE_DEVICES]"
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert jenv.log(job, "train").strip() == "train [0,1,2,3]"
