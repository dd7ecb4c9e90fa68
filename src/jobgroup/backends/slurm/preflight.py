"""What the Slurm backend cannot honour in a group (see `backends.registry`); light."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from jobgroup.backends.local.preflight import problems_and_warnings
from jobgroup.backends.registry import DryRun, Preflight, Target

if TYPE_CHECKING:
    from jobgroup.spec.models import JobGroup, Task


def preflight(group: JobGroup, tasks: list[Task], target: Target | None = None) -> Preflight:
    """(`target` does not apply: the Slurm cluster of this machine's configuration.)"""
    if shutil.which("sbatch") is None:
        names = ", ".join(f"'{t.name}'" for t in tasks)
        return Preflight(problems=[
            f"task(s) {names} ask for infra 'slurm' but no Slurm client (sbatch) is installed "
            "here; try `jobgroup dev slurm up`"])
    out = problems_and_warnings(tasks, "slurm")
    from jobgroup.backends.slurm.script import SettingsError, SlurmSettings, task_submit

    for t in tasks:  # the task's slurm-* labels (slurm.yaml is read when the group is submitted)
        try:
            task_submit(t, SlurmSettings())
        except SettingsError as e:
            out.problems.append(str(e))
    return out


def dryrun(group: JobGroup, options: dict, home: Path, base_dir: Path, level: str) -> DryRun:
    """The Slurm backend's part of a dry run: the heterogeneous batch script `sbatch` would be
    given (one component per task, each with the alternative the cluster can give it; job id 0
    stands for the id Slurm gives), the step each task's agents run in, the command the agent
    runs for each node's phases, and the settings (`$JOBGROUP_HOME/slurm.yaml`, a task's
    `slurm-*` labels). Checked against the cluster when Slurm answers: a group it can never
    run is said (launch would fail it FAILED_NO_RESOURCE with that reason)."""
    from jobgroup.backends.slurm import agents, inventory
    from jobgroup.backends.slurm.backend import SlurmBackend, load_settings, plan_components
    from jobgroup.backends.slurm.commands import SlurmError
    from jobgroup.backends.slurm.script import agent_step_name, batch_script

    backend = SlurmBackend(home)
    settings = load_settings(home)
    notes: list[str] = []
    try:
        inv: inventory.Inventory | None = inventory.read(backend.env) \
            if backend.env.get("SLURM_CONF") or Path("/etc/slurm/slurm.conf").exists() else None
        if inv is None:
            notes.append("note: no Slurm cluster configured here (SLURM_CONF): the script is "
                         "not checked against one")
    except SlurmError as e:
        inv = None
        notes.append(f"note: Slurm did not answer ({e}): the script is not checked against "
                     "the cluster")
    job_dir = home / "jobs" / "0"
    comps, why = plan_components(group, settings, options, inv, backend.partition)
    part: dict = {}
    if not comps:
        part["fits_the_cluster"] = False
        part["why_not"] = why
        notes.append(f"warning: Slurm can never run the group: {why}: launch would record the "
                     "group and fail it FAILED_NO_RESOURCE")
        comps, _ = plan_components(group, settings, options, None, backend.partition)
    elif inv is not None:
        part["fits_the_cluster"] = True
    if comps:
        part["sbatch_script"] = batch_script(group, comps, 0, "<tag>", job_dir)
    steps = []
    het = len(group.tasks) > 1
    root = agents.root(home, 0)
    for i, c in enumerate(comps):
        t = c.task
        step = {"task": t.name, "step": agent_step_name(i), "nodes": t.num_nodes,
                "command": ("srun " + (f"--het-group={i} " if het else "")
                            + f"--nodes={t.num_nodes} --ntasks={t.num_nodes} "
                            f"--ntasks-per-node=1 {root}/jobgroup-agent {root} {i} {t.name}")}
        phases = {}
        for phase, script in (("setup", t.setup), ("run", t.run)):
            if script is None:
                continue
            phases[phase] = shlex.join([
                f"{root}/jobgroup-shim", "-s", f"<status of {t.name}-RANK {phase}>", "-o",
                f"<log of {t.name}-RANK>", "-g", f"{float(options.get('grace') or 10):g}",
                "-T", "--", "<the node's view: hostname {task}-{rank}, the group's hosts file>",
                "/bin/bash", "-c", script.splitlines()[0] if script.strip() else script])
        step["each_node_runs"] = phases
        steps.append(step)
    part["steps"] = steps
    part["settings"] = {k: v for k, v in (
        ("partition", settings.partition or backend.partition), ("account", settings.account),
        ("qos", settings.qos), ("time", settings.time), ("constraint", settings.constraint),
        ("exclusive", settings.exclusive or None), ("sbatch", settings.sbatch or None)) if v}
    return DryRun(part=part, notes=notes)
