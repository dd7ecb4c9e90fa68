"""The public Python API: launch, queue, get_job, cancel, wait (logs: `jobgroup.logs`).

Contract: every verb validates, records intent in the store and returns; none waits for the
controller except `wait`. Reads come straight from the store. Errors meant for the user are
`jobgroup.errors.JobGroupError` subclasses (the CLI turns them into messages and exit codes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import msgspec

from jobgroup.backends.where import WHERE_KEYS, where_label
from jobgroup.envvars import parse_env  # noqa: F401  (part of the API)
from jobgroup.errors import NotFound, UsageError
from jobgroup.state.status import Status
from jobgroup.state.store import JobRec, Store, TaskRec, default_home

if TYPE_CHECKING:
    from jobgroup.launchreq import LaunchRequest
    from jobgroup.logfiles.follow import LogLine
    from jobgroup.spec.models import JobGroup, Task


class JobTask(msgspec.Struct, kw_only=True):
    """One task of a `Job` as a user sees it (called TaskInfo before; not the controller's
    `decide.TaskInfo`, which is a task's policy)."""

    index: int
    name: str
    status: Status
    reason: str
    num_nodes: int
    primary: bool
    restarts: int
    started_at: float | None
    ended_at: float | None


class Job(msgspec.Struct, kw_only=True):
    """A job as the store knows it (a snapshot: call `get_job` again for news)."""

    id: int
    name: str
    status: Status
    reason: str
    execution: str
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    tasks: list[JobTask]
    has_auxiliaries: bool
    isolation: str = ""  # what the backend gave the nodes (see `jobgroup launch`'s note)
    infra: str = "local"  # where it runs: local, slurm:<Slurm job id>, k8s:<namespace>
    # The group's fate once decided, while its nodes wind down (e.g. SUCCEEDED while its
    # auxiliaries wait out their termination_delay); None before.
    outcome: Status | None = None
    outcome_reason: str = ""

    @property
    def done(self) -> bool:
        return self.status.terminal

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to now while running); None if never started."""
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at


def _job(rec: JobRec, tasks: list[TaskRec]) -> Job:
    return Job(
        id=rec.id, name=rec.name, status=rec.status, reason=rec.reason,
        execution=rec.execution, submitted_at=rec.submitted_at, started_at=rec.started_at,
        ended_at=rec.ended_at,
        tasks=[
            JobTask(index=t.idx, name=t.name, status=t.status, reason=t.reason,
                     num_nodes=t.num_nodes, primary=t.is_primary, restarts=t.restarts,
                     started_at=t.started_at, ended_at=t.ended_at)
            for t in tasks
        ],
        has_auxiliaries=not all(t.is_primary for t in tasks),
        isolation=rec.isolation,
        infra=where_label(rec.options),
        outcome=rec.outcome,
        outcome_reason=rec.outcome_reason,
    )


def _store(home: Path | str | None) -> Store:
    return Store(Path(home) if home else default_home())


def _home(home: Path | str | None) -> Path:
    return (Path(home) if home else default_home()).absolute()


def job_backend_level(job_id: int, home: Path | str | None = None) -> str:
    """What a launched job runs on: its infra, or for the local backend the isolation level."""
    st = _store(home)
    try:
        rec = st.job(job_id)
        infra = rec.launch.infra if rec else "local"
    finally:
        st.close()
    return isolation_level(_home(home)) if infra == "local" else infra


def isolation_level(home: Path) -> str:
    """The isolation the local backend gives nodes here (the controller records what it
    detected; before it ever ran, detect it the same way)."""
    from jobgroup.backends.local.isolation import recorded_level

    return recorded_level(home)


def infra_kind(task: Task, infra: str | None = None) -> str:
    """The backend a task runs on: the command line's `infra` override, else the task's own
    `infra` (`kubernetes/ctx` -> `kubernetes`, `k8s` -> `kubernetes`), else `local`."""
    from jobgroup.backends.registry import task_kind

    return task_kind(task, infra)


def launch(
    spec: JobGroup | str | os.PathLike[str],
    *,
    request: LaunchRequest | None = None,
    home: Path | str | None = None,
    on_warning: Callable[[str], None] | None = None,
    notify: bool = True,
    store: Store | None = None,
    gpus_any: bool = False,
    **fields: object,
) -> Job:
    """Validate `spec` (a JobGroup, a path or YAML text), record it PENDING, wake the controller.

    Returns at once with the new job; use `wait` to block until it ends. The launch's options
    are a `launchreq.LaunchRequest` — `request`, or built from keyword `fields` named like its
    fields: `name`, `env` (dict), `infra`, `grace` (seconds), `gpus` ("any": accept any GPU
    type for `accelerators`; `gpus_any=True` says the same), `cpu_only` (run tasks that ask for
    GPUs without GPUs: smoke tests of cluster YAML on a laptop), `base_env` (the environment
    nodes start from; default: the part of this process's that `envvars.inherited` names,
    `dict(os.environ)` passes all of it). An unknown field is a UsageError. Warnings (names
    that are not DNS labels, fields the backend does not honour) go to `on_warning`, else to
    Python's `warnings`. `store`: an open store of `home` to write to (the controller passes
    its own; default: open one).
    """
    from jobgroup import launchreq

    if request is None:
        request = launchreq.make(**fields, **({"gpus": "any"} if gpus_any else {}))
    elif fields or gpus_any:
        raise UsageError(f"give the launch's options in `request` or as keywords, not both "
                         f"({', '.join(fields) or 'gpus_any'})")
    from jobgroup import submit

    own = store is None
    st = store if store is not None else _store(home)
    try:
        job_id = submit.record(spec, request, home=_home(home), store=st, on_warning=on_warning)
        job = get_job(job_id, store=st)
    finally:
        if own:
            st.close()
    if notify:  # (the controller itself, launching on a client's behalf, needs no wake-up)
        from jobgroup.controller.wake import wake

        wake(_home(home), job_id)
    return job


def dryrun(spec: JobGroup | str | os.PathLike[str], *, request: LaunchRequest | None = None,
           home: Path | str | None = None, on_warning: Callable[[str], None] | None = None,
           fmt: str = "yaml", **fields: object) -> str:
    """What `launch` would do with `spec` and the same options (`request`, or keyword fields
    as for `launch`), without recording or starting anything, as text in `fmt` ("yaml" or
    "json"): every check launch makes (UsageError, exit 2, for what it would refuse; warnings
    to `on_warning`), then the plan (`dryplan`: nodes, names, resources, mounts, variable
    names, the backend's part), or, on Kubernetes, the objects it would create. Secret values
    are never in it."""
    from jobgroup import dryplan, launchreq, submit
    from jobgroup.backends import registry

    if request is None:
        request = launchreq.make(**fields)
    elif fields:
        raise UsageError(f"give the launch's options in `request` or as keywords, not both "
                         f"({', '.join(fields)})")
    def say(note: str) -> None:
        if on_warning is not None:
            on_warning(note)
        else:
            import warnings

            warnings.warn(note, stacklevel=3)

    p = submit.prepare(spec, request, home=_home(home), on_warning=say)
    said = registry.dryrun(p.kind, p.group, p.options, _home(home), p.base_dir, p.level)
    for note in said.notes:
        say(note)
    if said.documents is not None:
        if fmt == "yaml" and said.yaml is not None:
            return said.yaml
        return dryplan.to_text(said.documents, fmt)
    return dryplan.to_text(dryplan.plan(p, said.part), fmt)


def get_job(job_id: int, *, home: Path | str | None = None, store: Store | None = None) -> Job:
    """The job `job_id`; NotFound (listing recent ids) if there is none."""
    own = store is None
    st = store or _store(home)
    try:
        rec = st.job(job_id)
        if rec is None:
            recent = [str(j.id) for j in st.jobs(limit=10)]
            hint = f" Recent jobs: {', '.join(recent)}." if recent else " There are no jobs yet."
            raise NotFound(f"no job {job_id}.{hint}")
        return _job(rec, st.tasks(job_id))
    finally:
        if own:
            st.close()


def queue(*, all: bool = False, limit: int | None = None, home: Path | str | None = None,
          recent: float = 0.0, statuses: Iterable[Status | str] | None = None) -> list[Job]:
    """Jobs, newest first: active ones plus those that ended in the last `recent` seconds, or
    every job with `all=True`; only those in `statuses` when given (SkyPilot's names)."""
    wanted = None if statuses is None else [Status(str(s).upper()) for s in statuses]
    st = _store(home)
    try:
        recs = st.jobs(active_only=not all, limit=limit, light=True, statuses=wanted,
                       ended_after=time.time() - recent if recent > 0 and not all else None,
                       option_keys=WHERE_KEYS)
        tasks = st.tasks_of([r.id for r in recs])
        return [_job(r, tasks[r.id]) for r in recs]
    finally:
        st.close()


def latest_job(*, home: Path | str | None = None) -> int:
    """The id of the newest job; NotFound when there is none yet."""
    st = _store(home)
    try:
        job_id = st.latest_job_id()
    finally:
        st.close()
    if job_id is None:
        raise NotFound("there are no jobs yet (jobgroup launch FILE starts one).")
    return job_id


def usage(job_id: int, *, home: Path | str | None = None) -> dict:
    """What each node of job `job_id` uses now (`jobgroup top --json`): the controller's answer
    (`controller.operate`), {"job", "time", "nodes": [{"node", "phase", "requested", "usage"?}]};
    a node without `usage` is not running or its backend cannot tell. NotFound for no such job;
    JobGroupError when no controller answers."""
    from jobgroup.controller import rpc
    from jobgroup.errors import JobGroupError

    answer = rpc.call(_home(home), {"op": "top", "job": job_id})
    if answer is None:
        raise JobGroupError("no controller runs for this state directory")
    if not answer.get("ok"):
        message = str(answer.get("error", "the controller refused"))
        if message.startswith("no job "):
            raise NotFound(message)
        raise JobGroupError(message)
    return {k: v for k, v in answer.items() if k != "ok"}


def cancel(job_ids: Iterable[int] | int, *, home: Path | str | None = None) -> dict[int, str]:
    """Record cancel requests. Returns {job_id: 'cancelling' | 'already ended (STATUS)'}."""
    ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
    st = _store(home)
    out: dict[int, str] = {}
    try:
        for job_id in ids:
            get_job(job_id, store=st)  # NotFound for unknown ids, before anything is changed
        for job_id in ids:
            if st.request_cancel(job_id):
                out[job_id] = "cancelling"
            else:
                rec = st.job(job_id)
                out[job_id] = f"already ended ({rec.status.value if rec else '?'})"
    finally:
        st.close()
    cancelling = [job_id for job_id, v in out.items() if v == "cancelling"]
    if cancelling:
        from jobgroup.controller.wake import wake

        wake(_home(home), cancelling)
    return out


def cancel_all(*, home: Path | str | None = None) -> dict[int, str]:
    """Cancel every job that has not ended."""
    return cancel([j.id for j in queue(home=home)], home=home)


def wait(job_id: int, *, timeout: float | None = None, home: Path | str | None = None,
         poll: float = 0.05) -> Job:
    """Block until the job ends (or `timeout` seconds pass) and return its last snapshot."""
    from jobgroup.controller.wake import ensure_running

    ensure_running(_home(home))  # a job can only end if a controller supervises it
    deadline = None if timeout is None else time.monotonic() + timeout
    st = _store(home)
    try:
        while True:
            job = get_job(job_id, store=st)
            if job.done or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(poll)
    finally:
        st.close()


def resolve_task(job: Job, task: str | int) -> int:
    """TASK given by index or name -> index; NotFound listing the valid choices."""
    names = [t.name for t in job.tasks]
    text = str(task)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    if text in names:
        return names.index(text)
    listing = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    raise NotFound(
        f"no task matching '{text}' in job {job.id}. Valid tasks: {listing} "
        f"(by ID 0-{len(names) - 1} or by name)."
    )


def logs(job_id: int, task: str | int | None = None, *, rank: int | None = None,
         follow: bool = False, tail: int | None = None,
         on_idle: Callable[[], None] | None = None,
         home: Path | str | None = None, since: float | None = None,
         timestamps: bool = False) -> Iterator["LogLine"]:
    """Log lines (`.task`, `.rank`, `.text`, `.attempt`, `.more`, `.at`) of a job, or of one
    task (index or name) / node, in bounded memory: a line longer than 1 MiB comes in pieces, all
    but the last with `.more` (see `jobgroup.logfiles.follow`).

    With `follow=True`, keeps yielding while the selected tasks run and returns once they ended.
    `tail=N`: start with the last N lines of each selected node (read from the end of its files).
    `since`: only lines that came at or after this time (seconds since the epoch), the files
    entered where their times index says. With `tail` or `since`, what is there when reading
    starts comes merged across nodes in time order. `timestamps`: every line's `.at` is when it
    came (None where no index says: logs written before the index existed, Kubernetes pods);
    with `tail`/`since` it always is (see `jobgroup.logfiles.times`).
    `on_idle`: called whenever everything there is has been yielded and the reader waits.
    """
    from jobgroup.logfiles.follow import lines

    if tail is not None and tail < 0:
        raise UsageError(f"tail must be 0 or more lines, not {tail}")
    st = _store(home)
    try:
        job = get_job(job_id, store=st)
        selected = list(range(len(job.tasks))) if task is None else [resolve_task(job, task)]
        if rank is not None and all(rank >= job.tasks[i].num_nodes for i in selected):
            top = max(job.tasks[i].num_nodes for i in selected) - 1
            raise NotFound(f"no node {rank}: the selected task(s) have ranks 0-{top}.")
        yield from lines(st, job_id, task_indices=selected, rank=rank, follow=follow, tail=tail,
                         on_idle=on_idle, since=since, times=timestamps)
    finally:
        st.close()


class Event(msgspec.Struct, kw_only=True):
    """One entry of a job's timeline."""

    at: float
    kind: str
    message: str
    task: str | None
    rank: int | None


def events(job_id: int, *, home: Path | str | None = None) -> list[Event]:
    """The job's timeline, oldest first: submitted, admitted, each node's phases started /
    ready / ended (code or signal) / restarted, stop and failure reasons, status changes."""
    st = _store(home)
    try:
        job = get_job(job_id, store=st)
        names = {t.index: t.name for t in job.tasks}
        return [Event(at=e.at, kind=e.kind, message=e.message,
                      task=names.get(e.task_idx) if e.task_idx is not None else None,
                      rank=e.rank) for e in st.events(job_id)]
    finally:
        st.close()

