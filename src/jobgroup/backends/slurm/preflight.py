"""What the Slurm backend cannot honour in a group (see `backends.registry`); light."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from jobgroup.backends.local.preflight import problems_and_warnings
from jobgroup.backends.registry import DryRun, Preflight

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task


def preflight(group: JobGroup, tasks: list[Task]) -> Preflight:
    if shutil.which("sbatch") is None:
        names = ", ".join(f"'{t.name}'" for t in tasks)
        return Preflight(problems=[
            f"task(s) {names} ask for infra 'slurm' but no Slurm client (sbatch) is installed "
            "here; try `jobgroup dev slurm up`"])
    return problems_and_warnings(tasks, "slurm")


def dryrun(group: JobGroup, options: dict, home: Path, base_dir: Path, level: str) -> DryRun:
    """The Slurm backend's part of a dry run: the heterogeneous batch script `sbatch` would be
    given (one component per task; job id 0 stands for the id Slurm gives) and the partition,
    account and QOS it goes to (`$JOBGROUP_HOME/slurm.yaml`, a task's `slurm-*` labels)."""
    from jobgroup.backends.slurm.backend import batch_script, load_settings
    settings = load_settings(home)
    script = batch_script(group, 0, "<tag>", home / "jobs" / "<job id>", settings=settings)
    part = {"sbatch_script": script,
            "settings": {k: v for k, v in (("partition", settings.partition),
                                           ("account", settings.account),
                                           ("qos", settings.qos)) if v}}
    return DryRun(part=part)

