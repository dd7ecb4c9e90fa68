"""What the Slurm backend cannot honour in a group (see `backends.registry`); light."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from jobgroup.backends.local.preflight import problems_and_warnings
from jobgroup.backends.registry import Preflight

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task


def preflight(group: JobGroup, tasks: list[Task]) -> Preflight:
    if shutil.which("sbatch") is None:
        names = ", ".join(f"'{t.name}'" for t in tasks)
        return Preflight(problems=[
            f"task(s) {names} ask for infra 'slurm' but no Slurm client (sbatch) is installed "
            "here; try `jobgroup dev slurm up`"])
    return problems_and_warnings(tasks, "slurm")
