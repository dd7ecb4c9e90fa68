"""Validate a launch and record it: the half of `api.launch` that the controller also runs
when a client hands it a launch over its socket (so the controller does not import the public
API, and the API does not reach into the controller). Pure of side effects but the store row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import msgspec

from jobgroup.backends import registry
from jobgroup.backends.local.isolation import recorded_level
from jobgroup.backends.registry import task_kind
from jobgroup.errors import StateUnwritable, UsageError
from jobgroup.state.options import LaunchOptions, stored
from jobgroup.state.store import Store

if TYPE_CHECKING:
    from jobgroup.launchreq import LaunchRequest
    from jobgroup.spec.models import JobGroup

# Variables of the launching process that nodes do not inherit (they are jobgroup's own
# settings, read here, not the job's).
_NOT_INHERITED = ("JOBGROUP_HOME", "JOBGROUP_LOG_MAX", "KUBECONFIG")


@dataclass(frozen=True)
class Prepared:
    """A launch checked and ready to record: the group as it will run (overrides applied,
    paths absolute), the backend kind it runs on, the folder relative paths resolved against,
    the job's stored options, and the isolation level recorded for this state directory."""

    group: JobGroup
    kind: str
    base_dir: Path
    options: dict  # as stored: `launch`'s fields (state.options.stored)
    level: str
    launch: LaunchOptions


def record(spec: JobGroup | str | os.PathLike[str], request: LaunchRequest, *, home: Path,
           store: Store, on_warning: Callable[[str], None] | None = None) -> int:
    """Check `spec` with `request` as `jobgroup launch` does (`prepare`), say the warnings (to
    `on_warning`, else Python's `warnings`), and record the job PENDING in `store`; its id.
    Raises UsageError (exit 2) for what the user must fix, StateUnwritable (exit 1) when
    nothing can be recorded. Wakes nobody: the caller does (or is the controller)."""
    unwritable = _state_problem(home)
    if unwritable is not None:  # nothing could be recorded, started or logged
        raise StateUnwritable(f"cannot launch: the state directory {home}: {unwritable}")
    p = prepare(spec, request, home=home, on_warning=on_warning)
    from jobgroup.spec import dump

    primaries = set(p.group.primaries)
    return store.create_job(
        name=p.group.name, execution=p.group.execution, spec=dump(p.group),
        base_dir=str(p.base_dir), options=p.options,
        tasks=[(t.name or "", t.num_nodes, (t.name in primaries)) for t in p.group.tasks],
    )


def _state_problem(home: Path) -> str | None:
    from jobgroup.home import state_problem

    return state_problem(home)


def prepare(spec: JobGroup | str | os.PathLike[str], request: LaunchRequest, *, home: Path,
            on_warning: Callable[[str], None] | None = None) -> Prepared:
    """Everything `jobgroup launch` checks before recording — the spec with the launch-time
    values and overrides, each backend's preflight, mounts, workdirs — with the warnings said
    (to `on_warning`, else Python's `warnings`); what `launch --dryrun` shows. Records and
    starts nothing. Raises UsageError (exit 2) for what the user must fix."""
    name, env, infra, grace = request.name, request.env, request.infra, request.grace
    secrets = request.secret
    base_env, cpu_only, gpus_any = request.base_env, request.cpu_only, request.gpus == "any"
    # The spec package (YAML, models) is imported here only: queue/cancel/wait/logs skip it.
    from jobgroup.spec import Loaded, check, load_file
    from jobgroup.spec.models import JobGroup

    if isinstance(spec, JobGroup):
        group = check(spec)
        loaded = Loaded(group=group, warnings=[], path=None, base_dir=Path.cwd(),
                        single_task=len(group.tasks) == 1)
    else:
        # --env/--secret fill the file's entries left without a value, and are substituted in
        # paths; one still unfilled is an error naming the flag to give (complete=True).
        loaded = load_file(spec, name=name, env=env, secrets=secrets, complete=True)
        group = loaded.group
    if name and isinstance(spec, JobGroup):
        group = check(msgspec.structs.replace(group, name=name))
    # `sky jobs launch`'s --workdir/--gpus/--cpus/--memory/--num-nodes (`overrides`).
    from jobgroup import overrides

    wanted = overrides.from_request(request)
    override_notes: list[str] = []
    if wanted != overrides.Overrides():
        group, override_notes = overrides.apply(group, wanted, single_task=loaded.single_task)
        group = check(group)
    # Relative paths against the launcher's current directory, as SkyPilot does (`relpaths`).
    from jobgroup import relpaths

    cwd = request.cwd or os.getcwd()
    group, path_notes = relpaths.resolve(
        group, cwd, str(loaded.base_dir) if loaded.path is not None else None)
    base_dir = Path(cwd)
    if grace < 0:
        raise UsageError("--grace must be 0 or more seconds")
    level = recorded_level(home)

    # Nodes start from (part of) the environment of the launching process (as a local user
    # expects: an activated venv, PATH, locale), whichever shell happened to start the
    # controller; never the controller's own. Its KUBECONFIG says which cluster a Kubernetes
    # launch goes to.
    from jobgroup.envvars import inherited

    source_env = inherited(os.environ) if base_env is None else base_env
    said = registry.preflight(group, infra, source_env, cwd)
    problems = said.problems
    on_this_machine = any(getattr(registry.entry(task_kind(t, infra)), "on_this_machine", False)
                          for t in group.tasks)
    if not problems and on_this_machine:  # pods mount their volumes themselves
        from jobgroup.backends.local.mounts import problems as mount_problems

        problems = mount_problems(group, base_dir, level, home)
    if problems:
        raise UsageError("cannot launch:\n  " + "\n  ".join(problems))
    notes = [str(w) for w in loaded.warnings] + override_notes + path_notes + [
        f"warning: {w}" for w in said.warnings]
    if any(t.resources.cpus is not None or t.resources.memory is not None for t in group.tasks):
        from jobgroup.resources.cgroups import availability

        why = availability().reason
        if why:
            notes.append(f"note: {why}")
    for note in notes:
        if on_warning is not None:
            on_warning(note)
        else:
            import warnings

            warnings.warn(note, stacklevel=2)
    if not base_dir.is_dir():
        raise UsageError(f"{base_dir}: not a directory")
    for t in group.tasks:
        if isinstance(t.workdir, str):
            wd = Path(os.path.expanduser(t.workdir))
            wd = wd if wd.is_absolute() else base_dir / wd
            if not wd.is_dir():
                raise UsageError(f"task '{t.name}': workdir {wd} does not exist")
    log_max = _log_cap(source_env)  # the launcher's JOBGROUP_LOG_MAX, kept with the job
    base_env = {k: v for k, v in source_env.items() if k not in _NOT_INHERITED}
    kind, target = _target(group, infra, source_env, cwd)
    launch = LaunchOptions(
        env=dict(env or {}), grace=grace, infra=kind, log_max=log_max, base_env=base_env,
        gpus_any=gpus_any, cpu_only=cpu_only, best_effort=request.best_effort,
        no_egress=request.no_egress,
        # where on its backend (Kubernetes: the launcher's kubeconfig and the infra's context)
        zone=target.zone, kubeconfig=target.config)
    if request.best_effort and kind == "local":
        _say_best_effort(group, launch, home, on_warning)
    return Prepared(group=group, kind=kind, base_dir=base_dir, options=stored(launch),
                    level=level, launch=launch)


def _target(group: JobGroup, infra: str | None, source_env: Mapping[str, str],
            cwd: str) -> tuple[str, registry.Target]:
    """The one backend and target (`registry.Target`) of the group: every task's infra (or
    `infra`) must name the same backend and, for a backend served per target (Kubernetes), the
    same context. UsageError otherwise."""
    kinds = {task_kind(t, infra) for t in group.tasks}
    if len(kinds) > 1:
        raise UsageError(f"the tasks ask for different infras ({', '.join(sorted(kinds))}); a "
                         "group runs on one (placement SAME_INFRA): give --infra")
    kind = kinds.pop()
    zones = sorted({registry.zone(infra or t.resources.infra) for t in group.tasks},
                   key=lambda z: z or "")
    target = registry.target(kind, zones[0], source_env, cwd)
    if len(zones) > 1 and target != registry.Target():  # (a target the backend tells apart)
        named = ", ".join(f"{kind}/{z}" if z else kind for z in zones)
        raise UsageError(f"the tasks ask for different contexts ({named}); a group runs on one "
                         "cluster: give --infra")
    return kind, target


def _say_best_effort(group: JobGroup, options: LaunchOptions, home: Path,
                     on_warning: Callable[[str], None] | None) -> None:
    """The one line `--best-effort` owes the user: whether the group runs unreserved here."""
    from jobgroup.resources import inventory as inv
    from jobgroup.resources import requests

    machine = inv.recorded(home)
    steps = [None] if group.execution == "parallel" or len(group.tasks) == 1 \
        else list(range(len(group.tasks)))
    over = [requests.need(requests.job_request(group, options, s)) for s in steps
            if requests.fit_to_machine(requests.job_request(group, options, s), machine.cpus,
                                       machine.memory_gb)[1]]
    if not over:
        return
    cpus, mem = max(over)
    note = (f"note: --best-effort: the group asks for {cpus:g} CPU(s) and {mem:g} GB; this "
            f"machine offers {machine.cpus:g} CPU(s) and {machine.memory_gb:.1f} GB: it runs "
            "without CPU/memory reservations or limits")
    if on_warning is not None:
        on_warning(note)
    else:
        import warnings

        warnings.warn(note, stacklevel=3)


def _log_cap(environ: dict[str, str] | os._Environ[str]) -> int:
    from jobgroup.logfiles import cap

    return cap.from_env(environ)
