"""The admission pass as a pure plan (`controller.admitplan.plan_admission`): which jobs start,
wait, fail or are handed to their cluster's scheduler — from job rows and specs alone, with no
store, no controller and no processes."""

from __future__ import annotations

import msgspec

from jobgroup.controller.admitplan import JobInput, plan_admission
from jobgroup.resources.inventory import build, parse_fake_gpus
from jobgroup.spec import load
from jobgroup.state.status import Status
from jobgroup.state.store import JobRec, TaskRec


def machine(gpus: str = "H100:4", cpus: float = 8, memory: float = 32):
    return build(cpus=cpus, memory_gb=memory, gpus=parse_fake_gpus(gpus), gpu_source="fake")


def group(*tasks: str, execution: str = "parallel"):
    docs = [f"name: g\nexecution: {execution}\n"] + [f"{t}\nrun: 'true'\n" for t in tasks]
    return load("---\n".join(docs))


def job(job_id: int, status: Status = Status.PENDING, *, cancel: bool = False,
        outcome: Status | None = None, **options: object) -> JobRec:
    return JobRec(id=job_id, name=f"j{job_id}", status=status, reason="", execution="parallel",
                  submitted_at=float(job_id), started_at=None, ended_at=None, spec="",
                  base_dir="/", options=dict(options), cancel_requested=cancel,
                  outcome=outcome, outcome_reason="", primaries_done_at=None)


def task(job_id: int, idx: int, status: Status) -> TaskRec:
    return TaskRec(job_id=job_id, idx=idx, name=f"t{idx}", status=status, reason="",
                   num_nodes=1, is_primary=True, restarts=0, started_at=None, ended_at=None)


GPU2 = "name: a\nresources: {accelerators: H100:2}"
GPU3 = "name: a\nresources: {accelerators: H100:3}"
GPU1 = "name: a\nresources: {accelerators: H100:1}"


def test_fifo_all_or_nothing_and_reasons():
    plan = plan_admission([JobInput(job(1), group(GPU3)), JobInput(job(2), group(GPU2))],
                          machine())
    assert [a.job_id for a in plan.admit] == [1]
    assert [a.step for a in plan.admit] == [0]
    assert [w.job_id for w in plan.wait] == [2]
    assert "waiting for 2 GPU(s)" in plan.wait[0].reason and not plan.fail


def test_backfill_never_delays_the_head():
    held = plan_admission([JobInput(job(1), group(GPU3))], machine()).admit[0].placement
    running = job(1, Status.RUNNING, placement=msgspec.to_builtins(held), placement_step=0)
    plan = plan_admission([JobInput(running, group(GPU3)), JobInput(job(2), group(GPU2)),
                           JobInput(job(3), group(GPU1))], machine())
    # 1 GPU free: job 2 (the head) needs 2, so the free one is kept for it; job 3 waits too.
    assert not plan.admit
    assert [w.job_id for w in plan.wait] == [2, 3]
    assert "kept for job 2" in plan.wait[1].reason


def test_cpu_backfill_when_the_head_cannot_use_it():
    held = plan_admission([JobInput(job(1), group(GPU3))], machine()).admit[0].placement
    running = job(1, Status.RUNNING, placement=msgspec.to_builtins(held), placement_step=0)
    plan = plan_admission([JobInput(running, group(GPU3)), JobInput(job(2), group(GPU2)),
                           JobInput(job(3), group("name: c\nresources: {cpus: 2}"))], machine())
    assert [a.job_id for a in plan.admit] == [3]  # CPUs only: nothing the head could use


def test_infeasible_fails_pending_and_never_blocks():
    plan = plan_admission([JobInput(job(1), group("name: a\nresources: {accelerators: H100:8}")),
                           JobInput(job(2), group(GPU1))], machine())
    assert [(f.job_id, f.pending) for f in plan.fail] == [(1, True)]
    assert "8" in plan.fail[0].reason
    assert [a.job_id for a in plan.admit] == [2]


def test_cancelled_pending_jobs_do_not_queue():
    plan = plan_admission([JobInput(job(1, cancel=True), group(GPU3)),
                           JobInput(job(2), group(GPU2))], machine())
    assert [a.job_id for a in plan.admit] == [2] and not plan.wait


def test_pipeline_queues_each_step_in_turn():
    pipe = group("name: a\nresources: {accelerators: H100:1}",
                 "name: b\nresources: {accelerators: H100:4}", execution="serial")
    first = plan_admission([JobInput(job(1), pipe)], machine())
    assert [(a.job_id, a.step) for a in first.admit] == [(1, 0)]
    placed = msgspec.to_builtins(first.admit[0].placement)
    # Step 0 running: it keeps what it holds (nothing queued, nothing to do).
    running = job(1, Status.RUNNING, placement=placed, placement_step=0)
    tasks = (task(1, 0, Status.RUNNING), task(1, 1, Status.PENDING))
    assert plan_admission([JobInput(running, pipe, tasks)], machine()) == \
        plan_admission([], machine())
    # Step 0 done: step 1 queues for its own (larger) request and is admitted.
    tasks = (task(1, 0, Status.SUCCEEDED), task(1, 1, Status.PENDING))
    plan = plan_admission([JobInput(running, pipe, tasks)], machine())
    assert [(a.job_id, a.step) for a in plan.admit] == [(1, 1)]
    assert sum(len(n.gpus) for n in plan.admit[0].placement.nodes) == 4


def test_a_later_step_that_can_never_fit_winds_the_job_down():
    pipe = group("name: a\nresources: {accelerators: H100:1}",
                 "name: b\nresources: {accelerators: H100:9}", execution="serial")
    placed = msgspec.to_builtins(plan_admission([JobInput(job(1), pipe)], machine()).admit[0]
                                 .placement)
    running = job(1, Status.RUNNING, placement=placed, placement_step=0)
    tasks = (task(1, 0, Status.SUCCEEDED), task(1, 1, Status.PENDING))
    plan = plan_admission([JobInput(running, pipe, tasks)], machine())
    assert [(f.job_id, f.pending) for f in plan.fail] == [(1, False)]


def test_self_scheduled_jobs_are_asked_once_admitted_never():
    g = group(GPU3)
    plan = plan_admission([JobInput(job(1), g, self_scheduled=True),
                           JobInput(job(2, admitted=True), g, self_scheduled=True),
                           JobInput(job(3, cancel=True), g, self_scheduled=True),
                           JobInput(job(4), g)], machine())
    assert plan.ask_backend == (1,)
    assert [a.job_id for a in plan.admit] == [4]  # the cluster's jobs hold nothing here


BIG = "name: trainer\nnum_nodes: 2\nresources: {cpus: 32+, memory: 128+}"


def test_best_effort_runs_a_cluster_sized_group_unreserved():
    g = group(BIG, "name: ref\nresources: {cpus: 1}")
    plan = plan_admission([JobInput(job(1), g)], machine())
    assert [(f.job_id, f.pending) for f in plan.fail] == [(1, True)]  # as before: never fits
    plan = plan_admission([JobInput(job(1, best_effort=True), g)], machine())
    assert [a.job_id for a in plan.admit] == [1]
    assert all(n.best_effort for n in plan.admit[0].placement.nodes)  # nothing reserved


def test_best_effort_changes_nothing_for_a_group_that_fits():
    g = group("name: a\nresources: {cpus: 2, memory: 4}")
    plan = plan_admission([JobInput(job(1, best_effort=True), g)], machine())
    assert [n.cpus for n in plan.admit[0].placement.nodes] == [2]


def test_best_effort_keeps_gpu_requests():
    g = group("name: a\nresources: {cpus: 64, accelerators: H100:8}")
    plan = plan_admission([JobInput(job(1, best_effort=True), g)], machine())
    assert plan.fail and "8" in plan.fail[0].reason  # GPUs: --cpu-only or --gpus any, not this
