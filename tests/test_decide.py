"""The group's rules as pure decisions: no processes, no store."""

from __future__ import annotations

from jobgroup.controller.decide import (
    Abandon, JobView, MarkReady, SetJob, SetOutcome, SetTask, StartPhase, StopNode, TaskInfo,
    decide,
)
from jobgroup.state.status import Phase, Status
from jobgroup.state.store import JobRec, NodeRec, TaskRec

NOW = 1000.0


def job(**kw) -> JobRec:
    base = dict(
        id=1, name="g", status=Status.PENDING, reason="", execution="parallel",
        submitted_at=0.0, started_at=None, ended_at=None, spec="", base_dir="/", options={},
        cancel_requested=False, outcome=None, outcome_reason="", primaries_done_at=None,
    )
    base.update(kw)
    return JobRec(**base)


def task(idx: int, name: str, nodes: int = 1, primary: bool = True, status=Status.PENDING):
    return TaskRec(job_id=1, idx=idx, name=name, status=status, reason="", num_nodes=nodes,
                   is_primary=primary, restarts=0, started_at=None, ended_at=None)


def node(t: int, r: int = 0, phase=Phase.WAITING, **kw) -> NodeRec:
    base = dict(job_id=1, task_idx=t, rank=r, phase=phase,
                handle={"pid": 100 + t * 10 + r, "start": 1}, exit_code=None, signal=None,
                stopped=False, stop_requested_at=None, started_at=None, ended_at=None,
                address="", hostname="", attempt=1, ended_phase=None)
    base.update(kw)
    return NodeRec(**base)


def ended(t: int, r: int = 0, code: int | None = 0, sig: int | None = None, stopped=False,
          phase=Phase.RUN, at: float = 10.0) -> NodeRec:
    return node(t, r, Phase.ENDED, exit_code=code, signal=sig, stopped=stopped, ended_at=at,
                ended_phase=phase)


def view(j, tasks, nodes, info=None) -> JobView:
    info = info or [TaskInfo(has_setup=False, delay=0.0) for _ in tasks]
    return JobView(job=j, tasks=tasks, nodes=nodes, info=info)


def kinds(plan, cls):
    return [a for a in plan.actions if isinstance(a, cls)]


def test_pending_job_starts_setup_or_marks_ready():
    v = view(job(), [task(0, "a"), task(1, "b", nodes=2)],
             [node(0), node(1, 0), node(1, 1)],
             [TaskInfo(True, 0.0), TaskInfo(False, 0.0)])
    plan = decide(v, NOW)
    assert kinds(plan, StartPhase) == [StartPhase(0, 0, Phase.SETUP)]
    assert kinds(plan, MarkReady) == [MarkReady(1, 0), MarkReady(1, 1)]
    assert SetJob(Status.STARTING, "admitted") in plan.actions


def test_runs_start_together_only_after_every_setup():
    tasks = [task(0, "a"), task(1, "b")]
    waiting = view(job(status=Status.STARTING), tasks, [node(0, phase=Phase.READY),
                                                         node(1, phase=Phase.SETUP)])
    assert not kinds(decide(waiting, NOW), StartPhase)
    ready = view(job(status=Status.STARTING), tasks, [node(0, phase=Phase.READY),
                                                       node(1, phase=Phase.READY)])
    assert kinds(decide(ready, NOW), StartPhase) == [
        StartPhase(0, 0, Phase.RUN), StartPhase(1, 0, Phase.RUN)]


def test_all_running_sets_running_statuses():
    v = view(job(status=Status.STARTING), [task(0, "a", status=Status.STARTING)],
             [node(0, phase=Phase.RUN)])
    plan = decide(v, NOW)
    assert SetTask(0, Status.RUNNING) in plan.actions
    assert SetJob(Status.RUNNING) in plan.actions


def test_failure_fails_fast_with_reason_and_stops_others():
    tasks = [task(0, "trainer", status=Status.RUNNING), task(1, "server", status=Status.RUNNING)]
    v = view(job(status=Status.RUNNING), tasks, [ended(0, code=3), node(1, phase=Phase.RUN)])
    plan = decide(v, NOW)
    assert SetTask(0, Status.FAILED, "task 'trainer' run exited with code 3") in plan.actions
    assert SetOutcome(Status.FAILED, "task 'trainer' run exited with code 3") in plan.actions
    assert StopNode(1, 0, "task 'trainer' run exited with code 3") in plan.actions
    assert not kinds(plan, SetJob)  # terminal only once every node is gone


def test_failed_group_ends_once_nodes_are_gone():
    tasks = [task(0, "trainer", status=Status.FAILED), task(1, "server", status=Status.RUNNING)]
    j = job(status=Status.RUNNING, outcome=Status.FAILED, outcome_reason="boom")
    v = view(j, tasks, [ended(0, code=3), ended(1, code=None, sig=15, stopped=True)])
    plan = decide(v, NOW)
    assert SetTask(1, Status.CANCELLED, "stopped: another task failed") in plan.actions
    assert plan.actions[-1] == SetJob(Status.FAILED, "boom")


def test_multi_node_task_fails_when_one_node_fails_naming_node_and_signal():
    tasks = [task(0, "t", nodes=2, status=Status.RUNNING)]
    v = view(job(status=Status.RUNNING), tasks, [ended(0, 0, code=None, sig=9),
                                                  node(0, 1, phase=Phase.RUN)])
    plan = decide(v, NOW)
    reason = "task 't' node 0 run was killed by signal 9 (SIGKILL)"
    assert SetOutcome(Status.FAILED, reason) in plan.actions
    assert StopNode(0, 1, reason) in plan.actions


def test_setup_failure_is_failed_setup_and_abandons_waiting_nodes():
    tasks = [task(0, "a", status=Status.STARTING), task(1, "b", status=Status.STARTING)]
    v = view(job(status=Status.STARTING), tasks,
             [ended(0, code=1, phase=Phase.SETUP), node(1, phase=Phase.READY)],
             [TaskInfo(True, 0.0), TaskInfo(False, 0.0)])
    plan = decide(v, NOW)
    assert kinds(plan, SetOutcome)[0].status == Status.FAILED_SETUP
    assert Abandon(1, 0) in plan.actions
    assert not kinds(plan, StartPhase)


def test_primary_success_stops_auxiliary_after_its_delay():
    tasks = [task(0, "trainer", status=Status.RUNNING), task(1, "server", primary=False,
                                                             status=Status.RUNNING)]
    nodes = [ended(0, code=0), node(1, phase=Phase.RUN)]
    info = [TaskInfo(False, 0.0), TaskInfo(False, 30.0)]
    first = decide(view(job(status=Status.RUNNING), tasks, nodes, info), NOW)
    assert SetOutcome(Status.SUCCEEDED, "all primary tasks succeeded", True) in first.actions
    assert SetTask(0, Status.SUCCEEDED, "") in first.actions
    assert not kinds(first, StopNode) and first.wake_at == NOW + 30
    j = job(status=Status.RUNNING, outcome=Status.SUCCEEDED, primaries_done_at=NOW)
    early = decide(view(j, tasks, nodes, info), NOW + 29)
    assert not kinds(early, StopNode) and early.wake_at == NOW + 30
    due = decide(view(j, tasks, nodes, info), NOW + 30)
    assert kinds(due, StopNode) == [
        StopNode(1, 0, "primary tasks finished; auxiliary stopped after 30s")]
    gone = decide(view(j, tasks, [ended(0), ended(1, code=None, sig=15, stopped=True)], info),
                  NOW + 31)
    assert SetTask(1, Status.CANCELLED, "auxiliary stopped: primary tasks finished") in gone.actions
    assert gone.actions[-1] == SetJob(Status.SUCCEEDED, "")


def test_auxiliary_exiting_zero_early_is_fine():
    tasks = [task(0, "trainer", status=Status.RUNNING), task(1, "aux", primary=False,
                                                             status=Status.RUNNING)]
    plan = decide(view(job(status=Status.RUNNING), tasks, [node(0, phase=Phase.RUN), ended(1)]),
                  NOW)
    assert SetTask(1, Status.SUCCEEDED, "") in plan.actions
    assert not kinds(plan, SetOutcome) and not kinds(plan, StopNode)


def test_cancel_stops_everything_then_cancelled():
    tasks = [task(0, "a", status=Status.RUNNING)]
    j = job(status=Status.RUNNING, cancel_requested=True)
    plan = decide(view(j, tasks, [node(0, phase=Phase.RUN)]), NOW)
    assert StopNode(0, 0, "cancelled by the user") in plan.actions
    assert SetJob(Status.CANCELLING, "cancel requested by the user") in plan.actions
    j2 = job(status=Status.CANCELLING, cancel_requested=True, outcome=Status.CANCELLED,
             outcome_reason="cancelled by the user")
    done = decide(view(j2, tasks, [ended(0, code=None, sig=15, stopped=True)]), NOW)
    assert done.actions[-1] == SetJob(Status.CANCELLED, "cancelled by the user")


def test_cancel_of_pending_job_ends_at_once():
    plan = decide(view(job(cancel_requested=True), [task(0, "a")], [node(0)]), NOW)
    assert Abandon(0, 0) in plan.actions
    assert plan.actions[-1] == SetJob(Status.CANCELLED, "cancelled by the user")


def test_pipeline_runs_tasks_in_order():
    tasks = [task(0, "prep"), task(1, "train")]
    j = job(execution="serial", status=Status.RUNNING)
    first = decide(view(j, tasks, [node(0), node(1)]), NOW)
    assert kinds(first, MarkReady) == [MarkReady(0, 0)]
    running = decide(view(j, tasks, [node(0, phase=Phase.RUN), node(1)]), NOW)
    assert not kinds(running, MarkReady) and not kinds(running, StartPhase)
    second = decide(view(j, tasks, [ended(0), node(1)]), NOW)
    assert kinds(second, MarkReady) == [MarkReady(1, 0)]
    assert not kinds(second, SetOutcome)
    done = decide(view(j, tasks, [ended(0), ended(1)]), NOW)
    assert SetOutcome(Status.SUCCEEDED, "all tasks succeeded") in done.actions


def test_terminal_job_is_left_alone():
    plan = decide(view(job(status=Status.SUCCEEDED), [task(0, "a")], [node(0)]), NOW)
    assert plan.actions == [] and plan.wake_at is None


# ---- recovery, readiness, dependencies ---------------------------------------------------------

from jobgroup.controller.decide import ResetTask, RestartGroup, RestartTask  # noqa: E402


def info(**kw) -> TaskInfo:
    base = dict(has_setup=False, delay=0.0)
    base.update(kw)
    return TaskInfo(**base)


def test_error_restarts_until_the_budget_is_spent():
    t = task(0, "srv", status=Status.RUNNING)
    plan = decide(view(job(status=Status.RUNNING), [t], [ended(0, code=1)],
                       [info(max_restarts=2)]), NOW)
    assert plan.actions == [RestartTask(
        0, "task 'srv' run exited with code 1; restart 1 of 2 (max_restarts_on_errors)", True)]
    spent = TaskRec(**{**{f: getattr(t, f) for f in t.__struct_fields__}, "error_restarts": 2})
    plan = decide(view(job(status=Status.RUNNING), [spent], [ended(0, code=1)],
                       [info(max_restarts=2)]), NOW)
    assert kinds(plan, SetOutcome)[0].status == Status.FAILED


def test_listed_exit_codes_and_preemptions_are_free():
    t = task(0, "srv", status=Status.RUNNING)
    code = decide(view(job(status=Status.RUNNING), [t], [ended(0, code=33)],
                       [info(recover_codes=frozenset({33}))]), NOW)
    assert kinds(code, RestartTask)[0].error is False
    other = decide(view(job(status=Status.RUNNING), [t], [ended(0, code=34)],
                        [info(recover_codes=frozenset({33}))]), NOW)
    assert not kinds(other, RestartTask)
    killed = ended(0, code=None, sig=9)
    pre = decide(view(job(status=Status.RUNNING), [t], [killed],
                      [info(recover_preemption=True)]), NOW)
    assert kinds(pre, RestartTask)[0].error is False
    assert "(preempted)" in kinds(pre, RestartTask)[0].reason
    no_strategy = decide(view(job(status=Status.RUNNING), [t], [killed], [info()]), NOW)
    assert not kinds(no_strategy, RestartTask)


def test_recovering_task_stops_its_nodes_then_resets():
    t = task(0, "w", nodes=2, status=Status.RECOVERING)
    plan = decide(view(job(status=Status.RUNNING), [t], [ended(0, 0, code=1),
                                                          node(0, 1, phase=Phase.RUN)]), NOW)
    assert plan.actions == [StopNode(0, 1, "restarting the task")]
    done = decide(view(job(status=Status.RUNNING), [t], [ended(0, 0, code=1),
                                                          ended(0, 1, sig=15, stopped=True)]), NOW)
    assert done.actions == [ResetTask(0)]


def test_setup_failures_are_not_retried():
    t = task(0, "s", status=Status.STARTING)
    plan = decide(view(job(status=Status.STARTING), [t], [ended(0, code=1, phase=Phase.SETUP)],
                       [info(has_setup=True, max_restarts=5)]), NOW)
    assert not kinds(plan, RestartTask)
    assert kinds(plan, SetOutcome)[0].status == Status.FAILED_SETUP


def test_group_restart_when_a_task_fails_beyond_its_budget():
    tasks = [task(0, "a", status=Status.RUNNING), task(1, "b", status=Status.RUNNING)]
    v = JobView(job=job(status=Status.RUNNING), tasks=tasks,
                nodes=[ended(0, code=1), node(1, phase=Phase.RUN)],
                info=[info(), info()], max_group_restarts=1)
    plan = decide(v, NOW)
    assert isinstance(plan.actions[0], RestartGroup)
    assert [a.idx for a in kinds(plan, RestartTask)] == [0, 1]
    assert not kinds(plan, SetOutcome)


def test_dependencies_gate_runs_started_ready_completed():
    tasks = [task(0, "srv", status=Status.STARTING), task(1, "cli", status=Status.STARTING)]
    ready_nodes = [node(0, phase=Phase.RUN), node(1, phase=Phase.READY)]
    for cond, probe, srv, starts in [
        ("started", False, node(0, phase=Phase.READY), False),
        ("started", False, node(0, phase=Phase.RUN), True),
        ("ready", True, node(0, phase=Phase.RUN), False),
        ("ready", True, node(0, phase=Phase.RUN, ready_at=5.0), True),
        ("ready", False, node(0, phase=Phase.RUN), True),
        ("completed", False, node(0, phase=Phase.RUN), False),
        ("completed", False, ended(0), True),
    ]:
        infos = [info(has_probe=probe), info(deps=((0, cond),))]
        plan = decide(view(job(status=Status.STARTING), tasks, [srv, ready_nodes[1]], infos), NOW)
        got = StartPhase(1, 0, Phase.RUN) in plan.actions
        assert got == starts, (cond, probe, srv)


def test_probe_that_gave_up_fails_the_group():
    tasks = [task(0, "srv", status=Status.RUNNING)]
    plan = decide(view(job(status=Status.RUNNING), tasks,
                       [node(0, phase=Phase.RUN, probe_failed="TCP 1.2.3.4:9 failed 5 times")]),
                  NOW)
    reason = "task 'srv' never became ready: TCP 1.2.3.4:9 failed 5 times"
    assert SetOutcome(Status.FAILED, reason) in plan.actions
    assert StopNode(0, 0, reason) in plan.actions


def test_cancel_during_termination_delay_stops_auxiliaries_now_and_keeps_succeeded():
    tasks = [task(0, "trainer", status=Status.SUCCEEDED), task(1, "server", primary=False,
                                                               status=Status.RUNNING)]
    nodes = [ended(0, code=0), node(1, phase=Phase.RUN)]
    info = [TaskInfo(False, 0.0), TaskInfo(False, 30.0)]
    j = job(status=Status.RUNNING, outcome=Status.SUCCEEDED, primaries_done_at=NOW,
            outcome_reason="all primary tasks succeeded", cancel_requested=True)
    now = decide(view(j, tasks, nodes, info), NOW + 5)
    stops = kinds(now, StopNode)
    assert [(s.task_idx, s.rank) for s in stops] == [(1, 0)]
    assert "cancel" in stops[0].reason and "25s before its termination_delay" in stops[0].reason
    assert now.wake_at is None  # nothing left to wait for
    # no CANCELLING, no new outcome: the primaries' success stands
    assert not kinds(now, SetOutcome) and not kinds(now, SetJob)
    gone = decide(view(j, tasks, [ended(0), ended(1, code=None, sig=15, stopped=True)], info),
                  NOW + 6)
    assert SetTask(1, Status.CANCELLED, "auxiliary stopped by the user's cancel: primary tasks "
                   "had finished") in gone.actions
    assert gone.actions[-1] == SetJob(Status.SUCCEEDED, "all primary tasks succeeded")


def test_a_task_whose_start_was_cut_halfway_starts_the_rest_of_its_nodes():
    # The controller died after spawning node 0's run, before node 1's: node 1 was put back
    # to READY on restart. It starts (alone) rather than waiting for a barrier that is past.
    tasks = [task(0, "main", nodes=2, status=Status.STARTING)]
    for other in (node(0, 0, phase=Phase.RUN), ended(0, 0, code=0)):
        v = view(job(status=Status.RUNNING), tasks, [other, node(0, 1, phase=Phase.READY)])
        assert kinds(decide(v, NOW), StartPhase) == [StartPhase(0, 1, Phase.RUN)]
    # Not while the task is being recovered (its nodes are stopped, then all reset together),
    # nor when the other node only finished its setup.
    recovering = [task(0, "main", nodes=2, status=Status.RECOVERING)]
    v = view(job(status=Status.RUNNING), recovering,
             [node(0, 0, phase=Phase.RUN, stop_requested_at=5.0), node(0, 1, phase=Phase.READY)])
    assert not kinds(decide(v, NOW), StartPhase)
