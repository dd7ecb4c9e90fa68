"""`sky jobs launch`'s resource and workdir overrides, applied to a loaded group as SkyPilot
applies them (pure: a group in, a group and notes out).

- `--workdir DIR` replaces every task's `workdir` (SkyPilot: `task.update_workdir` on each
  task, job groups included); relative to the launcher's current directory like any workdir.
- `--gpus TYPE[:N]`, `--cpus N[+]`, `--memory N[+]`, `--num-nodes N` apply to a file of one task
  document without a header, on the task's resources and on each of its `any_of`/`ordered`
  alternatives (an override wins over the alternative's own value). For a job group or a
  pipeline SkyPilot ignores them with a warning ("unclear how to override the params for the
  dag"); so does jobgroup, with a warning that says what to edit instead.
- `--gpus any` is jobgroup's own: not an override, it lets the YAML's GPU count take any type
  (handled by admission, `requests.node_shapes`).

Each value is checked here with the same parsers the spec uses, so a bad flag is a usage error
naming the flag (exit 2), never a failed job; the group is then checked again as a whole by the
caller (`spec.check`), so an override cannot produce a group a file could not.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from jobgroup.errors import UsageError
from jobgroup.spec import limits
from jobgroup.spec.models import JobGroup, Resources
from jobgroup.spec.resources import parse_accelerators, parse_cpus, parse_memory


@dataclass(frozen=True)
class Overrides:
    """The flags' values (None: not given)."""

    gpus: str | None = None
    cpus: str | None = None
    memory: str | None = None
    num_nodes: int | None = None
    workdir: str | None = None

    def resource_flags(self) -> list[str]:
        return [flag for flag, value in (("--gpus", self.gpus), ("--cpus", self.cpus),
                                         ("--memory", self.memory),
                                         ("--num-nodes", self.num_nodes)) if value is not None]


def from_request(request: object) -> Overrides:
    """The overrides of a `LaunchRequest` (`gpus` "any" is not one)."""
    gpus = getattr(request, "gpus", None)
    return Overrides(
        gpus=None if gpus in (None, "any") else gpus,
        cpus=getattr(request, "cpus", None), memory=getattr(request, "memory", None),
        num_nodes=getattr(request, "num_nodes", None), workdir=getattr(request, "workdir", None))


def check(o: Overrides) -> None:
    """UsageError naming the flag when a value is malformed."""
    if o.gpus is not None and "," in o.gpus:
        raise UsageError(f"--gpus {o.gpus!r}: give one type and count (e.g. A100:2)")
    for flag, value, parse in (("--cpus", o.cpus, parse_cpus), ("--memory", o.memory,
                                                                  parse_memory),
                               ("--gpus", o.gpus, parse_accelerators)):
        if value is None:
            continue
        try:
            parse(value)
        except ValueError as e:
            raise UsageError(f"{flag} {value!r}: {e}") from None
    if o.num_nodes is not None and not 1 <= o.num_nodes <= limits.MAX_GROUP_NODES:
        raise UsageError(f"--num-nodes {o.num_nodes}: give a number of nodes from 1 to "
                         f"{limits.MAX_GROUP_NODES}")
    if o.workdir is not None and not o.workdir.strip():
        raise UsageError("--workdir: give a directory")


def apply(group: JobGroup, o: Overrides, *, single_task: bool) -> tuple[JobGroup, list[str]]:
    """`group` with the overrides applied (see the module docstring), and the notes owed to
    the user (a warning when resource flags are ignored for a group)."""
    check(o)
    notes: list[str] = []
    tasks = list(group.tasks)
    flags = o.resource_flags()
    if flags and single_task:
        t = tasks[0]
        tasks[0] = msgspec.structs.replace(
            t, resources=_resources(t.resources, o),
            num_nodes=o.num_nodes if o.num_nodes is not None else t.num_nodes)
    elif flags:
        what = "job group" if group.execution == "parallel" else "pipeline"
        notes.append(f"warning: {', '.join(flags)} ignored: the file is a {what} of "
                     f"{len(tasks)} task(s), and, as with `sky jobs launch`, these flags only "
                     "override a single task's resources; set them per task in the YAML")
    if o.workdir is not None:
        tasks = [msgspec.structs.replace(t, workdir=o.workdir) for t in tasks]
    return msgspec.structs.replace(group, tasks=tasks), notes


def _resources(res: Resources, o: Overrides) -> Resources:
    changes: dict[str, object] = {}
    if o.gpus is not None:
        changes["accelerators"] = o.gpus
    if o.cpus is not None:
        changes["cpus"] = o.cpus
    if o.memory is not None:
        changes["memory"] = o.memory
    for key in ("any_of", "ordered"):
        alts = getattr(res, key)
        if alts:
            changes[key] = [msgspec.structs.replace(a, **{k: v for k, v in changes.items()
                                                          if k not in ("any_of", "ordered")})
                            for a in alts]
    return msgspec.structs.replace(res, **changes)
