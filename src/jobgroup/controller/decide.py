"""Pure decisions: what to do next for one job, from its stored state alone.

`decide(view, now)` returns a `Plan` (actions + when to look again). It performs no I/O, so every
rule of the group's life is unit-tested without processes:

- Start: every node runs its setup (if any); when every node of the group (of the current step,
  for a pipeline) is READY, every run starts together.
- A node that ends by itself with a non-zero code or a signal fails its task (FAILED, or
  FAILED_SETUP during setup) and the group fails fast: every other node is stopped.
- Primaries (`primary_tasks`, or all tasks): once every primary SUCCEEDED, the group's outcome is
  SUCCEEDED and each auxiliary still running is stopped after its termination delay; it ends
  CANCELLED. An auxiliary that exits 0 early simply SUCCEEDED. A cancel during the delay stops
  the auxiliaries at once; the group keeps its outcome (SUCCEEDED: its primaries did).
- Recovery (`resources.job_recovery`): a task whose node failed is restarted in place (status
  RECOVERING: its other nodes are stopped, then every node runs again as attempt N+1, without
  setup) when the exit code is in `recover_on_exit_codes` (free), when it was preempted (killed
  by SIGKILL from outside, or its supervisor vanished) and the task has a recovery `strategy`
  (free), or while `max_restarts_on_errors` is not spent. Otherwise, with `max_group_restarts`
  left, the whole group restarts the same way; otherwise the group fails.
- Readiness and dependencies: a node whose readiness probe gave up fails its task like an exit
  would; a task with `depends_on` starts its run only once each dependency is `started`
  (every node running), `ready` (and every probe passed) or `completed` (SUCCEEDED).
- Cancel: every live node is stopped (group CANCELLING), then the group ends CANCELLED.
- The group's terminal status is written only when no node of it is live any more, so `wait`
  returning means no process of the group remains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobgroup.spec.durations import delay_for
from jobgroup.spec.models import JobGroup, JobRecovery, Task
from jobgroup.state.status import Phase, Status
from jobgroup.state.store import JobRec, NodeRec, TaskRec


@dataclass(frozen=True)
class TaskInfo:
    """What decide() needs from the spec of a task."""

    has_setup: bool
    delay: float  # termination delay when it is an auxiliary (seconds)
    has_probe: bool = False
    deps: tuple[tuple[int, str], ...] = ()  # (task index, started|ready|completed)
    max_restarts: int = 0  # max_restarts_on_errors
    recover_codes: frozenset[int] = frozenset()
    recover_preemption: bool = False  # a recovery strategy is set


@dataclass(frozen=True)
class JobView:
    job: JobRec
    tasks: list[TaskRec]
    nodes: list[NodeRec]
    info: list[TaskInfo]
    max_group_restarts: int = 0
    placed: frozenset[int] | None = None  # tasks admitted to start (None: all, no admission)


# ---- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartPhase:
    task_idx: int
    rank: int
    phase: Phase  # SETUP or RUN


@dataclass(frozen=True)
class MarkReady:
    """A node without setup is READY at once."""

    task_idx: int
    rank: int


@dataclass(frozen=True)
class StopNode:
    task_idx: int
    rank: int
    reason: str


@dataclass(frozen=True)
class Abandon:
    """A node that never started (or waits at the barrier) and never will: ENDED, stopped."""

    task_idx: int
    rank: int


@dataclass(frozen=True)
class SetTask:
    idx: int
    status: Status
    reason: str = ""


@dataclass(frozen=True)
class SetJob:
    status: Status
    reason: str = ""


@dataclass(frozen=True)
class SetOutcome:
    """The group's fate is decided (it will end with `status` once its nodes are gone)."""

    status: Status
    reason: str
    primaries_done: bool = False


@dataclass(frozen=True)
class RestartTask:
    """Begin recovering a task: RECOVERING, counted (against the error budget if `error`)."""

    idx: int
    reason: str
    error: bool


@dataclass(frozen=True)
class ResetTask:
    """Every node of the recovering task has ended: make each READY again as attempt N+1."""

    idx: int


@dataclass(frozen=True)
class RestartGroup:
    """Begin restarting the whole group (counted against max_group_restarts)."""

    reason: str


Action = (StartPhase | MarkReady | StopNode | Abandon | SetTask | SetJob | SetOutcome
          | RestartTask | ResetTask | RestartGroup)


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    wake_at: float | None = None  # look again at this time even if nothing happens


# ---- helpers ------------------------------------------------------------------------------------


def describe_exit(node: NodeRec) -> str:
    """'exited with code 3' / 'was killed by signal 9 (SIGKILL)'."""
    if node.signal is not None:
        import signal as _signal

        try:
            name = _signal.Signals(node.signal).name
        except ValueError:
            name = "?"
        why = f": {node.note}" if node.note else ""
        return f"was killed by signal {node.signal} ({name}){why}"
    why = f": {node.note}" if node.note else ""  # e.g. a cluster's word on why
    return f"exited with code {node.exit_code}{why}"


def task_state(task: TaskRec, nodes: list[NodeRec]) -> tuple[Status, str]:
    """A task's status derived from its nodes (before the group-level rules)."""
    unready = [n for n in nodes if n.probe_failed and n.phase == Phase.RUN]
    if unready:
        n = unready[0]
        rank = f" node {n.rank}" if task.num_nodes > 1 else ""
        return Status.FAILED, f"task '{task.name}'{rank} never became ready: {n.probe_failed}"
    failed = sorted((n for n in nodes if n.failed), key=lambda n: n.ended_at or 0.0)
    if failed:
        n = failed[0]
        where = "setup" if n.ended_phase == Phase.SETUP else "run"
        status = Status.FAILED_SETUP if n.ended_phase == Phase.SETUP else Status.FAILED
        rank = f" node {n.rank}" if task.num_nodes > 1 else ""
        return status, f"task '{task.name}'{rank} {where} {describe_exit(n)}"
    if nodes and all(n.succeeded for n in nodes):
        return Status.SUCCEEDED, ""
    if nodes and all(n.phase == Phase.ENDED for n in nodes):
        return Status.CANCELLED, ""
    if any(n.stop_requested_at is not None and n.live for n in nodes):
        return Status.CANCELLING, ""
    if nodes and all(n.phase == Phase.RUN or n.succeeded for n in nodes):
        return Status.RUNNING, ""
    if any(n.phase != Phase.WAITING for n in nodes):
        return Status.STARTING, ""
    return Status.PENDING, ""


# ---- the decision -------------------------------------------------------------------------------


def decide(view: JobView, now: float) -> Plan:
    """The next actions for one job. Applying them and calling again converges."""
    job = view.job
    plan = Plan()
    if job.status.terminal:
        return plan
    by_task: dict[int, list[NodeRec]] = {t.idx: [] for t in view.tasks}
    for n in view.nodes:
        by_task[n.task_idx].append(n)
    derived = {t.idx: task_state(t, by_task[t.idx]) for t in view.tasks}

    if job.outcome is None and not job.cancel_requested:
        # Tasks being recovered: stop what is left of them, then run them again.
        recovering = {t.idx for t in view.tasks if t.status == Status.RECOVERING}
        for t in view.tasks:
            if t.idx in recovering:
                _recover(t, by_task[t.idx], plan)
            elif derived[t.idx][0] in (Status.FAILED, Status.FAILED_SETUP):
                decision = _recovery(t, view.info[t.idx], by_task[t.idx], derived[t.idx][1])
                if decision is not None:
                    plan.actions.append(decision)
                    recovering.add(t.idx)
        failing = [t for t in view.tasks if t.idx not in recovering
                   and derived[t.idx][0] in (Status.FAILED, Status.FAILED_SETUP)]
        if failing and job.group_restarts < view.max_group_restarts \
                and derived[failing[0].idx][0] == Status.FAILED:
            reason = derived[failing[0].idx][1]
            plan.actions.append(RestartGroup(
                f"{reason}; restarting the group ({job.group_restarts + 1}/"
                f"{view.max_group_restarts})"))
            for t in view.tasks:
                if t.idx not in recovering:
                    plan.actions.append(RestartTask(t.idx, "the group restarts", False))
            return plan
        if recovering:
            for i in recovering:
                derived[i] = (Status.RECOVERING, "")

    # Tasks reach SUCCEEDED / FAILED* as soon as their nodes say so.
    for t in view.tasks:
        status, reason = derived[t.idx]
        if status.terminal and status != Status.CANCELLED and t.status != status:
            plan.actions.append(SetTask(t.idx, status, reason))

    outcome, outcome_reason = job.outcome, job.outcome_reason
    if outcome is None:
        outcome, outcome_reason, primaries_done = _outcome(view, derived)
        if outcome is not None:
            plan.actions.append(SetOutcome(outcome, outcome_reason, primaries_done))
            if primaries_done:
                job_primaries_done_at: float | None = now
            else:
                job_primaries_done_at = None
        else:
            job_primaries_done_at = None
    else:
        job_primaries_done_at = job.primaries_done_at

    if outcome is None:
        _progress(view, by_task, derived, plan)
        return plan

    # The outcome is decided: wind the group down.
    live = [n for n in view.nodes if n.live]
    if outcome == Status.SUCCEEDED and job_primaries_done_at is not None:
        for t, info in zip(view.tasks, view.info):
            if t.is_primary:
                continue
            due = job_primaries_done_at + info.delay
            for n in by_task[t.idx]:
                if n.live and n.stop_requested_at is None:
                    if job.cancel_requested and now < due:
                        plan.actions.append(StopNode(
                            t.idx, n.rank, "primary tasks finished; auxiliary stopped by the "
                            f"user's cancel {max(0.0, due - now):.3g}s before its "
                            "termination_delay ended"))
                    elif now >= due:
                        plan.actions.append(StopNode(
                            t.idx, n.rank,
                            f"primary tasks finished; auxiliary stopped after {info.delay:g}s",
                        ))
                    else:
                        plan.wake_at = due if plan.wake_at is None else min(plan.wake_at, due)
    else:
        why = "cancelled by the user" if outcome == Status.CANCELLED else outcome_reason
        # CANCELLING first: it is true from the request on, even while a backend cannot be
        # reached to stop the nodes (the stops are then retried).
        if outcome == Status.CANCELLED and job.status != Status.CANCELLING:
            plan.actions.append(SetJob(Status.CANCELLING, "cancel requested by the user"))
        for n in live:
            if n.stop_requested_at is None:
                plan.actions.append(StopNode(n.task_idx, n.rank, why))
    for n in view.nodes:
        if n.phase in (Phase.WAITING, Phase.READY):
            plan.actions.append(Abandon(n.task_idx, n.rank))
    for t in view.tasks:
        status, _ = derived[t.idx]
        if status.terminal and status != Status.CANCELLED:
            continue  # set above
        if t.status.terminal or any(n.live for n in by_task[t.idx]):
            continue  # its nodes are still stopping
        plan.actions.append(SetTask(t.idx, Status.CANCELLED,
                                    _cancel_reason(outcome, job.cancel_requested)))
    if not live:
        plan.actions.append(SetJob(outcome, outcome_reason))
    return plan


def _recovery(task: TaskRec, info: TaskInfo, nodes: list[NodeRec], reason: str
              ) -> RestartTask | None:
    """Whether (and how) a failed task is restarted in place; None: it fails."""
    failed = sorted((n for n in nodes if n.failed or n.probe_failed),
                    key=lambda n: n.ended_at or 0.0)
    if not failed or any(n.ended_phase == Phase.SETUP for n in failed):
        return None  # a failed setup is not retried (nor is anything without a failed node)
    n = failed[0]
    if n.preempted and info.recover_preemption:
        return RestartTask(task.idx, f"{reason} (preempted); recovering", False)
    if n.exit_code is not None and n.exit_code in info.recover_codes:
        return RestartTask(task.idx, f"{reason}; exit code {n.exit_code} is in "
                           "recover_on_exit_codes; recovering", False)
    if task.error_restarts < info.max_restarts:
        return RestartTask(task.idx, f"{reason}; restart {task.error_restarts + 1} of "
                           f"{info.max_restarts} (max_restarts_on_errors)", True)
    return None


def _recover(task: TaskRec, nodes: list[NodeRec], plan: Plan) -> None:
    """A RECOVERING task: stop its live nodes; once none is left, reset them."""
    live = [n for n in nodes if n.live]
    for n in live:
        if n.stop_requested_at is None:
            plan.actions.append(StopNode(task.idx, n.rank, "restarting the task"))
    if not live:
        plan.actions.append(ResetTask(task.idx))


def dependency_met(condition: str, task: TaskRec, nodes: list[NodeRec], has_probe: bool) -> bool:
    """Is dependency `task` `started` / `ready` / `completed`?"""
    if task.status == Status.RECOVERING:
        return False
    done = [n.succeeded for n in nodes]
    if condition == "completed":
        return bool(nodes) and all(done)
    started = bool(nodes) and all(n.phase == Phase.RUN or n.succeeded for n in nodes)
    if condition == "started" or not has_probe:
        return started
    return started and all(n.succeeded or n.ready_at is not None for n in nodes)


def _cancel_reason(outcome: Status, cancel_requested: bool) -> str:
    if outcome == Status.CANCELLED:
        return "cancelled by the user"
    if outcome == Status.SUCCEEDED and cancel_requested:
        return "auxiliary stopped by the user's cancel: primary tasks had finished"
    if outcome == Status.SUCCEEDED:
        return "auxiliary stopped: primary tasks finished"
    return "stopped: another task failed"


def _outcome(
    view: JobView, derived: dict[int, tuple[Status, str]]
) -> tuple[Status | None, str, bool]:
    """(outcome, reason, primaries_done) once the group's fate is known, else (None, '', False)."""
    if view.job.cancel_requested:
        return Status.CANCELLED, "cancelled by the user", False
    failures = [(derived[t.idx], t) for t in view.tasks if derived[t.idx][0].failed]
    if failures:
        (status, reason), _ = failures[0]
        return status, reason, False
    primaries = [t for t in view.tasks if t.is_primary]
    if primaries and all(derived[t.idx][0] == Status.SUCCEEDED for t in primaries):
        if view.job.execution == "serial":
            if all(derived[t.idx][0] == Status.SUCCEEDED for t in view.tasks):
                return Status.SUCCEEDED, "all tasks succeeded", False
            return None, "", False
        aux = len(view.tasks) - len(primaries)
        why = "all primary tasks succeeded" if aux else "all tasks succeeded"
        return Status.SUCCEEDED, why, aux > 0
    return None, "", False


def _progress(
    view: JobView,
    by_task: dict[int, list[NodeRec]],
    derived: dict[int, tuple[Status, str]],
    plan: Plan,
) -> None:
    """Start what may start; keep task and job statuses in step with the nodes."""
    if view.job.execution == "serial":
        step = next(
            (t for t in view.tasks if derived[t.idx][0] != Status.SUCCEEDED), None
        )
        active = [step] if step else []
    else:
        active = list(view.tasks)
    active_nodes = [n for t in active for n in by_task[t.idx]]
    for t in active:
        info = view.info[t.idx]
        if view.placed is not None and t.idx not in view.placed:
            continue  # not admitted yet: waits for resources
        for n in by_task[t.idx]:
            if n.phase == Phase.WAITING:
                if info.has_setup:
                    plan.actions.append(StartPhase(t.idx, n.rank, Phase.SETUP))
                else:
                    plan.actions.append(MarkReady(t.idx, n.rank))
    # The barrier: runs start only once every node of the step finished its setup; then each
    # task starts all its nodes together as soon as its dependencies are met (a restarted task
    # waits for nothing but them).
    if active_nodes and all(n.phase not in (Phase.WAITING, Phase.SETUP) for n in active_nodes):
        tasks = {t.idx: t for t in view.tasks}
        for t in active:
            nodes = by_task[t.idx]
            ready = [n for n in nodes if n.phase == Phase.READY]
            if not ready:
                continue
            if len(ready) < len(nodes):
                # The task's start was cut halfway (the controller died between two spawns, or
                # a start failed and is retried; what never started was put back to READY):
                # its other nodes run this attempt, so the rest start now; waiting for all of
                # them to be READY would never end.
                if derived[t.idx][0] != Status.RECOVERING and all(
                        n.phase == Phase.RUN or n.ended_phase == Phase.RUN
                        for n in nodes if n.phase != Phase.READY):
                    plan.actions.extend(StartPhase(n.task_idx, n.rank, Phase.RUN)
                                        for n in ready)
                continue
            deps = view.info[t.idx].deps
            if all(dependency_met(cond, tasks[d], by_task[d], view.info[d].has_probe)
                   for d, cond in deps):
                for n in nodes:
                    plan.actions.append(StartPhase(n.task_idx, n.rank, Phase.RUN))
    for t in view.tasks:
        status, _ = derived[t.idx]
        if not status.terminal and status != t.status and status not in (
                Status.PENDING, Status.RECOVERING):  # RECOVERING is set by RestartTask
            plan.actions.append(SetTask(t.idx, status))
    started = [n for n in view.nodes if n.phase != Phase.WAITING]
    if started:
        running = any(n.phase in (Phase.RUN, Phase.ENDED) for n in view.nodes)
        want = Status.RUNNING if running else Status.STARTING
        if view.job.status != want and not (
            want == Status.STARTING and view.job.status == Status.RUNNING
        ):
            plan.actions.append(SetJob(want))
    elif view.job.status == Status.PENDING and any(
        isinstance(a, (StartPhase, MarkReady)) for a in plan.actions
    ):
        plan.actions.append(SetJob(Status.STARTING, "admitted"))


def task_info(group: JobGroup, task: Task) -> TaskInfo:
    """What decide() needs to know of a task's spec."""
    names = [t.name for t in group.tasks]
    rec = task.resources.job_recovery
    if isinstance(rec, str):  # `job_recovery: FAILOVER` names a strategy only
        rec = JobRecovery(strategy=rec)
    codes = rec.recover_on_exit_codes if rec else None
    return TaskInfo(
        has_setup=bool(task.setup),
        delay=delay_for(group, task.name or ""),
        has_probe=task.readiness_probe is not None,
        deps=tuple((names.index(d), c) for d, c in task.dependencies().items() if d in names),
        max_restarts=rec.max_restarts_on_errors if rec else 0,
        recover_codes=frozenset([codes] if isinstance(codes, int) else codes or []),
        recover_preemption=bool(rec and rec.strategy),
    )
