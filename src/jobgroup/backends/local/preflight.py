"""What the local backend cannot honour in a group (see `backends.registry`); light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobgroup.backends.registry import Preflight

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task


def problems_and_warnings(tasks: list[Task], backend: str) -> Preflight:
    """Checks shared by the backends whose nodes run on this machine's files (local, Slurm)."""
    out = Preflight()
    for t in tasks:
        if t.workdir is not None and not isinstance(t.workdir, str):
            out.problems.append(f"task '{t.name}': a git workdir (mapping form) cannot be used "
                                f"by the {backend} backend; give a directory")
        if t.resources.image_id:
            out.warnings.append(f"task '{t.name}': image_id is ignored by the {backend} backend "
                                "(no containers)")
    return out


def preflight(group: JobGroup, tasks: list[Task]) -> Preflight:
    return problems_and_warnings(tasks, "local")
