"""Every backend by name: how to create it, and what it says about a group before launch.

The core knows backends only through this table (DESIGN principle 10: backends are peers):
`api.launch` asks `preflight` what the chosen backends cannot honour (problems refuse the
launch, warnings are said once), and the controller asks `create` for a backend by the infra a
job was launched on. Adding a backend is one entry here plus its package — nothing in the API or
the controller. Backends are imported only when used: `jobgroup validate` and `queue` never pay
for the Kubernetes client, and the fast launch road imports none of this.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from jobgroup.backends.base import Backend
    from jobgroup.state.options import LaunchOptions
    from jobgroup.spec.models import JobGroup, Task


@dataclass(frozen=True)
class Preflight:
    """A backend's word on a group before launch, in the user's terms: `problems` refuse the
    launch (exit 2); `warnings` are fields it accepts but does not honour fully."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DryRun:
    """A backend's part of `launch --dryrun`: `part` goes under `backend:` in the plan
    (`dryplan`), `notes` are said like launch's warnings; `documents`, when set, are printed
    instead of the plan (objects the backend would create, ready for its own tools)."""

    part: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    documents: list | None = None
    yaml: str | None = None  # the documents as the backend writes YAML (comments included)


@dataclass(frozen=True)
class Target:
    """Where on its backend a launch goes, beyond the backend's name — what a backend with
    `per_target` serves one object per in the controller. `zone`: what follows the backend's
    name in the infra value (`kubernetes/my-context` -> `my-context`; SkyPilot's rule: for
    Kubernetes the whole rest, which may hold '/', is a kubeconfig context; `*` or nothing:
    None, the default). `config`: the launcher's client configuration (Kubernetes: its
    KUBECONFIG as absolute paths, "" for the default file); None where it does not apply."""

    zone: str | None = None
    config: str | None = None


@dataclass(frozen=True)
class Entry:
    """One backend. `backend`: "module:Class" created as `Class(home)`; `preflight`: the module
    whose `preflight(group, tasks, target) -> Preflight` checks the tasks that run on it (light:
    no client libraries at import; `target` is the launch's `Target`), and whose
    `dryrun(group, options, home, base_dir, level) -> DryRun` says what `launch --dryrun` adds
    for it (called after every launch check passed). `on_this_machine`: its nodes run here
    (volumes, workdirs and file mounts must exist on this machine). `per_target`: the backend
    serves one `Target` (created as `Class(home, target=...)`; the controller keeps one per
    target its jobs were launched to; its preflight module's `target(zone, environ, cwd) ->
    Target` says what a launch names); otherwise a launch's target is ignored and one object
    serves every job."""

    name: str
    backend: str
    preflight: str
    on_this_machine: bool
    aliases: tuple[str, ...] = ()
    per_target: bool = False


BACKENDS: dict[str, Entry] = {e.name: e for e in (
    Entry("local", "jobgroup.backends.local.backend:LocalBackend",
          "jobgroup.backends.local.preflight", on_this_machine=True),
    Entry("slurm", "jobgroup.backends.slurm.backend:SlurmBackend",
          "jobgroup.backends.slurm.preflight", on_this_machine=True),
    Entry("kubernetes", "jobgroup.backends.kubernetes.backend:KubernetesBackend",
          "jobgroup.backends.kubernetes.preflight", on_this_machine=False, aliases=("k8s",),
          per_target=True),
)}
_ALIASES = {a: e.name for e in BACKENDS.values() for a in e.aliases}


def kind(infra: str | None) -> str:
    """The backend name an `infra` value means: `kubernetes/ctx` -> `kubernetes`, `k8s` ->
    `kubernetes`, none -> `local`. Unknown names are returned as given (lower case)."""
    name = (infra or "local").split("/")[0].strip().lower()
    return _ALIASES.get(name, name)


def zone(infra: str | None) -> str | None:
    """What follows the backend's name in an `infra` value (see `Target.zone`): `k8s/a/b` ->
    `a/b`; None for none or `*`."""
    rest = "/".join(p.strip() for p in (infra or "").strip().strip("/").split("/")[1:])
    return None if rest in ("", "*") else rest


def target(kind_name: str, zone_name: str | None, environ: Mapping[str, str],
           cwd: str | None = None) -> Target:
    """The `Target` of a launch on backend `kind_name` to `zone_name` from a shell with
    environment `environ` in directory `cwd` (None: this process's): what the backend's
    preflight module's `target(zone, environ, cwd)` makes of them. Backends without
    `per_target` get the empty Target."""
    e = entry(kind_name)
    if e is None or not e.per_target:
        return Target()
    return importlib.import_module(e.preflight).target(zone_name, environ, cwd or os.getcwd())


def launch_target(launch: LaunchOptions) -> Target:
    """The `Target` a recorded launch named (what the controller serves its backend per)."""
    e = entry(launch.infra)
    if e is None or not e.per_target:
        return Target()
    return Target(zone=launch.zone, config=launch.kubeconfig)


def key(kind_name: str, t: Target) -> str:
    """The name the controller keeps a backend object under: the backend's name, then its
    target for a `per_target` backend (one object per cluster and context)."""
    e = entry(kind_name)
    name = kind(kind_name)
    if e is None or not e.per_target or t == Target():
        return name
    return f"{name}/{t.zone or ''}@{t.config or ''}"


def task_kind(task: Task, infra: str | None = None) -> str:
    """The backend a task runs on: the command line's `infra` override, else the task's own
    `resources.infra`, else `local`."""
    return kind(infra or task.resources.infra)


def entry(name: str) -> Entry | None:
    return BACKENDS.get(kind(name))


def create(name: str, home: Path, t: Target | None = None) -> Backend:
    """A new backend `name` for state directory `home` (KeyError for an unknown name), serving
    target `t` where the backend is `per_target`."""
    e = BACKENDS[kind(name)]
    module, _, cls = e.backend.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    return factory(home, target=t or Target()) if e.per_target else factory(home)


def preflight(group: JobGroup, infra: str | None = None,
              environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Preflight:
    """Ask the backend of every task (`infra` overrides each task's) what it cannot honour,
    for a launch from a shell with environment `environ` (None: this process's) in `cwd` (see
    `target`).
    A task whose infra no backend here runs is a problem naming the task and the fix."""
    by_kind: dict[str, list[Task]] = {}
    out = Preflight()
    if infra is not None and kind(infra) not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(kind(infra), [*BACKENDS, *_ALIASES], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        out.problems.append(f"--infra {infra}: no such backend (backends: "
                            f"{', '.join(BACKENDS)}){hint}")
        return out
    for t in group.tasks:
        k = task_kind(t, infra)
        if k not in BACKENDS:
            known = ", ".join(BACKENDS)
            out.problems.append(
                f"task '{t.name}' asks for infra '{infra or t.resources.infra}', which this "
                f"installation cannot run (backends: {known}); add --infra local to run it on "
                "this machine")
            continue
        by_kind.setdefault(k, []).append(t)
    for k, tasks in by_kind.items():
        where = target(k, zone(infra or tasks[0].resources.infra),
                       os.environ if environ is None else environ, cwd)
        said = importlib.import_module(BACKENDS[k].preflight).preflight(group, tasks, where)
        out.problems.extend(said.problems)
        out.warnings.extend(said.warnings)
    return out


def dryrun(kind_name: str, group: JobGroup, options: dict, home: Path, base_dir: Path,
           level: str) -> DryRun:
    """The backend `kind_name`'s part of a dry run of `group` (already checked for launch)."""
    e = BACKENDS[kind(kind_name)]
    return importlib.import_module(e.preflight).dryrun(group, options, home, base_dir, level)
