"""Admission (pure): requests from specs, all-or-nothing placement on a fake 4-GPU machine,
FIFO with backfill, the head never starved, infeasible groups and the reasons users see."""

from __future__ import annotations

import pytest

from jobgroup.resources.admission import (
    NodeAlloc, Pending, Placement, decode_placement, encode_placement, infeasible_reason, place,
    schedule,
)
from jobgroup.resources.inventory import build, parse_fake_gpus
from jobgroup.resources.requests import (
    GroupRequest, Shape, TaskRequest, group_request, job_request,
)
from jobgroup.spec import load


def machine(gpus: str = "H100:4", cpus: float = 8, memory: float = 32):
    return build(cpus=cpus, memory_gb=memory, gpus=parse_fake_gpus(gpus), gpu_source="fake")


def spec(*tasks: str, name: str = "g", execution: str = "parallel"):
    """A group from task documents given as YAML flow-ish snippets."""
    docs = [f"name: {name}\nexecution: {execution}\n"] + [f"{t}\nrun: 'true'\n" for t in tasks]
    return load("---\n".join(docs))


def req(*tasks: str, **opts):
    return group_request(spec(*tasks), **opts)


def gpus_of(p: Placement) -> list[int]:
    return [g for n in p.nodes for g in n.gpus]


# ---- requests -----------------------------------------------------------------------------


def test_requests_from_spec():
    r = req("name: a\nnum_nodes: 2\nresources: {cpus: 4+, memory: 16, accelerators: H100:1}",
            "name: b\nresources: {memory: 512MB}",
            "name: c")
    a, b, c = r.tasks
    assert a.num_nodes == 2 and a.shapes == (Shape(4, 16, 1, "H100"),)
    assert b.shapes == (Shape(0, 0.5),)
    assert c.best_effort and not r.best_effort and r.num_nodes == 4


def test_requests_alternatives_in_order_and_options():
    r = req("name: a\nresources: {cpus: 2, accelerators: [A100:2, H100:1]}")
    assert r.tasks[0].shapes == (Shape(2, 0, 2, "A100"), Shape(2, 0, 1, "H100"))
    r = req("name: a\nresources:\n  cpus: 1\n  any_of:\n    - {accelerators: L4:1}\n"
            "    - {accelerators: T4:2, cpus: 2}")
    assert r.tasks[0].shapes == (Shape(1, 0, 1, "L4"), Shape(2, 0, 2, "T4"))
    r = req("name: a\nresources: {accelerators: 'A100:0.5'}")
    assert r.tasks[0].shapes == (Shape(0, 0, 1, "A100"),)  # a fraction takes a whole GPU here
    r = req("name: a\nresources: {cpus: 2, accelerators: [A100:2, H100:2]}", gpus_any=True)
    assert r.tasks[0].shapes == (Shape(2, 0, 2, None),)
    r = req("name: a\nresources: {cpus: 2, accelerators: H100:8}", cpu_only=True)
    assert r.tasks[0].shapes == (Shape(2, 0),)


def test_job_request_serial_pipeline_one_step_at_a_time():
    g = spec("name: prep\nresources: {cpus: 1}", "name: train\nresources: {accelerators: H100:4}",
             execution="serial")
    assert [t.name for t in job_request(g, {}, step=1).tasks] == ["train"]
    assert [t.name for t in job_request(g, {"cpu_only": True}).tasks] == ["prep"]
    assert job_request(g, {"cpu_only": True}, step=1).tasks[0].shapes == (Shape(),)


# ---- three groups competing on 4 GPUs ------------------------------------------------------

A = "name: trainer\nresources: {accelerators: H100:2, cpus: 2, memory: 8}"
B = "name: rollout\nnum_nodes: 2\nresources: {accelerators: H100:1, cpus: 1}"
C = "name: big\nresources: {accelerators: H100:3}"


def test_three_groups_start_order_disjoint_gpus_and_reasons():
    inv = machine()
    q = [Pending(1, req(A)), Pending(2, req(B)), Pending(3, req(C))]
    d = schedule(inv, {}, q)
    assert [p.job_id for p in d.admitted] == [1, 2]
    p1, p2 = d.admitted
    assert gpus_of(p1) == [0, 1] and gpus_of(p2) == [2, 3]
    # every node its own GPUs, and the env to match
    assert [n.gpus for n in p2.nodes] == [(2,), (3,)]
    assert p2.node(0, 1).env() == {"CUDA_VISIBLE_DEVICES": "3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                   "SKYPILOT_NUM_GPUS_PER_NODE": "1"}
    assert p1.node(0, 0).env()["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert d.head == 3 and not d.infeasible
    assert d.waiting[0].reason == "waiting for 3 GPU(s) H100: 0 free, 4 held by jobs 1, 2"
    # job 2 ends: 2 free, 2 held by job 1 -- the user's example shape
    d = schedule(inv, {1: p1}, [Pending(3, req(C))])
    assert d.waiting[0].reason == "waiting for 3 GPU(s) H100: 2 free, 2 held by job 1"
    # job 1 ends too: job 3 starts on three distinct GPUs
    d = schedule(inv, {}, [Pending(3, req(C))])
    assert [p.job_id for p in d.admitted] == [3] and gpus_of(d.admitted[0]) == [0, 1, 2]


def test_all_or_nothing_no_partial_start():
    inv = machine()
    # one GPU free; a group of two 1-GPU tasks must not start half of itself
    held = {9: [NodeAlloc(0, 0, gpus=(0, 1, 2))]}
    d = schedule(inv, held, [Pending(1, req("name: x\nresources: {accelerators: H100:1}",
                                             "name: y\nresources: {accelerators: H100:1}"))])
    assert not d.admitted and d.waiting[0].reason == \
        "waiting for 2 GPU(s) H100: 1 free, 3 held by job 9"


def test_backfill_uses_only_what_the_head_cannot_use():
    inv = machine()
    held = {1: [NodeAlloc(0, 0, 2, 8, (0, 1), "H100")]}  # job 1 holds GPUs 0,1 and 2 CPUs
    q = [Pending(3, req(C)),                                     # head: needs 3, 2 free
         Pending(4, req("name: small\nresources: {accelerators: H100:1}")),
         Pending(5, req("name: cpu\nresources: {cpus: 2, memory: 4}")),
         Pending(6, req("name: free\nnum_nodes: 7"))]           # best-effort
    d = schedule(inv, held, q)
    assert d.head == 3
    assert [p.job_id for p in d.admitted] == [5, 6]  # backfilled: nothing the head could use
    reasons = {w.job_id: w.reason for w in d.waiting}
    assert reasons[3] == "waiting for 3 GPU(s) H100: 2 free, 2 held by job 1"
    assert reasons[4] == ("waiting for 1 GPU(s) H100: 2 free but 2 kept for job 3 (first in the "
                          "queue), 2 held by job 1")
    assert all(not n.gpus and not n.cpus for n in d.admitted[1].nodes)  # best-effort: nothing


def test_backfill_keeps_cpus_for_the_head():
    inv = machine(gpus="none", cpus=8, memory=32)
    held = {1: [NodeAlloc(0, 0, 5)]}  # 3 CPUs free
    q = [Pending(2, req("name: h\nresources: {cpus: 4}")),
         Pending(3, req("name: s\nresources: {cpus: 1}")),
         Pending(4, req("name: m\nresources: {memory: 4}"))]
    d = schedule(inv, held, q)
    assert [p.job_id for p in d.admitted] == [4]
    reasons = {w.job_id: w.reason for w in d.waiting}
    assert reasons[2] == "waiting for 4 CPU(s): 3 free, 5 held by job 1"
    assert reasons[3] == ("waiting for 1 CPU(s): 3 free but 3 kept for job 2 (first in the "
                          "queue), 5 held by job 1")
    # a head needing less than what is free leaves the rest to backfill
    held = {1: [NodeAlloc(0, 0, 2, 30)]}  # 6 CPUs, 34 GB free; the head waits for memory
    q = [Pending(2, req("name: h\nresources: {cpus: 1, memory: 40}")),
         Pending(3, req("name: s\nresources: {cpus: 2}"))]
    d = schedule(machine(gpus="none", memory=64), held, q)
    assert d.head == 2 and [p.job_id for p in d.admitted] == [3]


def test_head_is_never_starved_by_a_stream_of_small_groups():
    """Small 1-GPU groups keep arriving and finishing; the 3-GPU head starts as soon as the
    GPUs it was waiting for are free, never overtaken."""
    inv = machine()
    running: dict[int, Placement] = {}
    first = schedule(inv, {}, [Pending(1, req(A)), Pending(2, req(B))]).admitted
    running.update({p.job_id: p for p in first})
    queue = [Pending(3, req(C))]
    next_id = 10
    started_head_at = None
    for step in range(12):
        # a new small group arrives at every step
        queue.append(Pending(next_id, req("name: s\nresources: {accelerators: H100:1}")))
        next_id += 1
        if step == 3:
            running.pop(2)  # job 2's GPUs free up (2 of them)
        if step == 6:
            running.pop(1)  # job 1 too
        if step > 3:  # small jobs that got in finish one step later
            for jid in [j for j in running if j >= 10]:
                running.pop(jid)
        d = schedule(inv, running, queue)
        for p in d.admitted:
            running[p.job_id] = p
            if p.job_id == 3:
                started_head_at = step
        admitted = {p.job_id for p in d.admitted}
        queue = [q for q in queue if q.job_id not in admitted]
        if 3 in {q.job_id for q in queue}:
            assert d.head == 3
            # while the head waits, no small group ever holds a GPU that was free this pass
            assert not any(p.job_id >= 10 for p in d.admitted)
    assert started_head_at == 6  # the first pass where 3 GPUs are free


def test_infeasible_groups_are_rejected_with_reasons_and_never_block():
    inv = machine()
    q = [Pending(1, req("name: huge\nnum_nodes: 2\nresources: {accelerators: H100:4}")),
         Pending(2, req("name: a100\nresources: {accelerators: A100:1}")),
         Pending(3, req("name: cpus\nresources: {cpus: 64}")),
         Pending(4, req("name: t1\nresources: {cpus: 6}", "name: t2\nresources: {cpus: 6}")),
         Pending(5, req("name: ok\nresources: {accelerators: H100:1}"))]
    d = schedule(inv, {}, q)
    reasons = {i.job_id: i.reason for i in d.infeasible}
    assert reasons == {
        1: "task 'huge' needs 2 node(s) × 4 GPU(s) H100 but this machine offers 4",
        2: ("task 'a100' needs 1 GPU(s) A100 but this machine has 4 H100 (use --gpus any to "
            "accept any GPU type, or --cpu-only to run without GPUs)"),
        3: "task 'cpus' needs 64 CPU(s) but this machine offers 8",
        4: ("the group needs 12 CPU(s) at once but this machine offers 8 CPU(s), 32.0 GB, "
            "4 GPU(s)"),
    }
    assert [p.job_id for p in d.admitted] == [5] and d.head is None and not d.waiting
    no_gpu = machine(gpus="none")
    assert infeasible_reason(no_gpu, req("name: t\nresources: {accelerators: H100:1}")) == (
        "task 't' needs 1 GPU(s) H100 but this machine has no GPUs (use --cpu-only to run it "
        "without GPUs)")
    assert infeasible_reason(inv, req(A)) is None


def test_gpus_any_and_cpu_only_options():
    inv = machine(gpus="A100:2,L4:2")
    r = req("name: t\nnum_nodes: 2\nresources: {accelerators: H100:1}", gpus_any=True)
    d = schedule(inv, {}, [Pending(1, r)])
    assert [n.gpus for n in d.admitted[0].nodes] == [(0,), (1,)]
    assert d.admitted[0].nodes[0].gpu_type == "A100"
    r = req("name: t\nresources: {accelerators: H100:8, cpus: 1}", cpu_only=True)
    d = schedule(machine(gpus="none"), {}, [Pending(1, r)])
    assert d.admitted[0].nodes[0].gpus == () and d.admitted[0].nodes[0].cpus == 1
    assert d.admitted[0].nodes[0].env()["CUDA_VISIBLE_DEVICES"] == ""


def test_alternatives_tried_in_order_and_per_task_consistent():
    inv = machine(gpus="H100:2,A100:4")
    r = req("name: t\nnum_nodes: 2\nresources: {accelerators: [H100:2, A100:2]}")
    d = schedule(inv, {}, [Pending(1, r)])
    # 2 nodes × 2 H100 do not fit (2 H100), so both nodes take the A100 alternative
    assert [n.gpus for n in d.admitted[0].nodes] == [(2, 3), (4, 5)]
    assert {n.gpu_type for n in d.admitted[0].nodes} == {"A100"}
    # with gpus_any every task takes GPUs of any type, lowest indices first
    r2 = GroupRequest((TaskRequest(0, "any", 1, (Shape(gpus=4),)),
                       TaskRequest(1, "h", 1, (Shape(gpus=2),))))
    p = place(inv, {}, 1, r2)
    assert p is not None and p.node(0, 0).gpus == (0, 1, 2, 3) and p.node(1, 0).gpus == (4, 5)


def test_best_effort_groups_always_fit_even_a_thousand_nodes_on_two_cpus():
    inv = machine(gpus="none", cpus=2, memory=4)
    held = {1: [NodeAlloc(0, 0, 2, 4)]}  # everything is held
    d = schedule(inv, held, [Pending(2, req("name: idle\nnum_nodes: 1000"))])
    assert len(d.admitted[0].nodes) == 1000
    assert all(n.best_effort for n in d.admitted[0].nodes)


def test_a100_matches_80gb_variant_but_not_the_reverse():
    from jobgroup.resources.inventory import Gpu, gpu_type

    g80 = Gpu(0, gpu_type("NVIDIA A100-SXM4-80GB"), "NVIDIA A100-SXM4-80GB")
    g40 = Gpu(1, gpu_type("NVIDIA A100-SXM4-40GB"), "NVIDIA A100-SXM4-40GB")
    inv = build(cpus=8, memory_gb=32, gpus=[g80, g40], gpu_source="test")
    d = schedule(inv, {}, [Pending(1, req("name: t\nresources: {accelerators: A100-80GB:1}")),
                           Pending(2, req("name: t\nresources: {accelerators: a100:1}"))])
    assert [gpus_of(p) for p in d.admitted] == [[0], [1]]


def test_placement_round_trips_through_json():
    d = schedule(machine(), {}, [Pending(1, req(B))])
    p = d.admitted[0]
    assert decode_placement(encode_placement(p)) == p
    # stored placements count as allocations
    d2 = schedule(machine(), {1: decode_placement(encode_placement(p))}, [Pending(2, req(A))])
    assert gpus_of(p) == [0, 1] and gpus_of(d2.admitted[0]) == [2, 3]


@pytest.mark.parametrize("n", [1, 50])
def test_every_pending_group_is_in_exactly_one_bucket(n):
    inv = machine()
    q = [Pending(i, req(A if i % 3 == 0 else B if i % 3 == 1 else C)) for i in range(n)]
    d = schedule(inv, {}, q)
    ids = [p.job_id for p in d.admitted] + [w.job_id for w in d.waiting] + \
        [i.job_id for i in d.infeasible]
    assert sorted(ids) == list(range(n))
    all_gpus = [g for p in d.admitted for g in gpus_of(p)]
    assert len(all_gpus) == len(set(all_gpus)) <= 4
