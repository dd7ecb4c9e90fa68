"""What a group is submitted as (pure): the settings (`$JOBGROUP_HOME/slurm.yaml` and each
task's `slurm-*` labels) and the heterogeneous batch script.

Settings, site-wide in `slurm.yaml`, per task in `resources.labels` (a label overrides the file
for its task's component), as `slurm.yaml` key / label: sbatch option:

- `partition` / `slurm-partition`: `--partition`
- `account` / `slurm-account`: `--account`
- `qos` / `slurm-qos`: `--qos`
- `time` / `slurm-time`: `--time`, in Slurm's forms (`90` minutes, `2:00:00`, `1-12`), or
  `2h`, `90m`, `1d`
- `constraint` / `slurm-constraint`: `--constraint` (node features: `a100&ib`, `a|b`)
- `exclusive` / `slurm-exclusive`: `--exclusive` (`true`/`false`)
- `sbatch` / `slurm-sbatch`: more `#SBATCH` lines: a list in the file; in a label one string,
  lines separated by newlines or `;`

Options jobgroup sets itself (nodes, tasks, CPUs, memory, GPUs, job name, comment, output,
working folder, heterogeneous components) cannot be given as extra lines: refused by name.

The batch script holds one component per task (`#SBATCH hetjob` between them; one task: an
ordinary job). Its body starts one agent step per task (`srun --het-group=T`, one task per
node: `agent.c` runs each node's phases under the shim on the node itself), waits for them, and
exits with the group's result that jobgroup writes when the group ends (`end`): Slurm records
every component COMPLETED (0) or FAILED with that exit code; a cancelled group is `scancel`ed
(CANCELLED).
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from jobgroup.spec.models import JobGroup, Task


class SlurmSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`$JOBGROUP_HOME/slurm.yaml`: where groups go and how they are submitted (see the module
    docstring); a task's `slurm-*` labels override these for its component."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | int | None = None
    constraint: str | None = None
    exclusive: bool = False
    sbatch: list[str] = msgspec.field(default_factory=list)


LABELS = ("partition", "account", "qos", "time", "constraint", "exclusive", "sbatch")
# sbatch options jobgroup writes itself: an extra line may not set them.
OWN = {
    "nodes": "num_nodes", "N": "num_nodes", "ntasks": "one task per node",
    "n": "one task per node", "ntasks-per-node": "one task per node",
    "cpus-per-task": "resources.cpus", "c": "resources.cpus", "mem": "resources.memory",
    "mem-per-cpu": "resources.memory", "mem-per-gpu": "resources.memory",
    "gres": "resources.accelerators", "gpus": "resources.accelerators",
    "G": "resources.accelerators", "gpus-per-node": "resources.accelerators",
    "gpus-per-task": "resources.accelerators", "job-name": "the group's name",
    "J": "the group's name", "comment": "jobgroup's own tag", "output": "jobgroup's log",
    "o": "jobgroup's log", "error": "jobgroup's log", "e": "jobgroup's log",
    "chdir": "jobgroup", "D": "jobgroup", "hetjob": "one component per task",
    "packjob": "one component per task", "array": "a group is one job", "a": "a group is one job",
    "wrap": "jobgroup's batch script", "wait": "jobgroup follows the job itself",
    "W": "jobgroup follows the job itself", "parsable": "jobgroup reads sbatch's answer",
    "partition": "partition", "p": "partition", "account": "account", "A": "account",
    "qos": "qos", "q": "qos", "time": "time", "t": "time", "constraint": "constraint",
    "C": "constraint", "exclusive": "exclusive",
}
_TIME = re.compile(r"(\d+)|(\d+):(\d+)|(\d+):(\d+):(\d+)|(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?")
_UNIT_TIME = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting Slurm cannot be given (the message names where it comes from)."""


def slurm_time(value: object, where: str) -> str:
    """A time limit in sbatch's words: Slurm's own forms pass unchanged (a plain number is
    minutes, as for sbatch); `2h`, `90m`, `1.5d`, `1w` become minutes (rounded up);
    `UNLIMITED`/`INFINITE` pass. SettingsError otherwise."""
    text = str(value).strip()
    if isinstance(value, bool) or not text:
        raise SettingsError(f"{where}: expected a time limit (90, 2:00:00, 1-12:00:00, 2h)")
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return text.upper()
    if _TIME.fullmatch(text):
        return text
    m = _UNIT_TIME.fullmatch(text)
    if m:
        minutes = float(m.group(1)) * {"m": 1, "h": 60, "d": 1440, "w": 10080}[
            m.group(2).lower()]
        return str(max(1, math.ceil(minutes)))
    raise SettingsError(f"{where}: {text!r} is not a time limit (expected minutes like 90, "
                        "Slurm's 2:00:00 or 1-12:00:00, or 2h, 90m, 1d)")


def time_minutes(text: str) -> float | None:
    """Minutes in one of Slurm's time forms (None: unlimited or unreadable)."""
    t = text.strip()
    m = _TIME.fullmatch(t)
    if not m:
        return None
    g = [int(x) if x else 0 for x in m.groups()]
    if m.group(1):
        return float(g[0])
    if m.group(2):
        return g[1] + g[2] / 60
    if m.group(4):
        return g[3] * 60 + g[4] + g[5] / 60
    return g[6] * 1440 + g[7] * 60 + g[8] + g[9] / 60


def extra_lines(value: object, where: str) -> list[str]:
    """More `#SBATCH` options: a list of strings, or one string (lines separated by newlines or
    `;`). Each must start with `-`; options jobgroup sets itself are refused by name."""
    if isinstance(value, str):
        items = [x.strip() for x in re.split(r"[\n;]", value)]
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        items = [x.strip() for x in value]
        if any("\n" in x or "\r" in x for x in items):
            raise SettingsError(f"{where}: an option may not span lines")
    else:
        raise SettingsError(f"{where}: expected a list of sbatch options like "
                            "'--reservation=maint'")
    out = []
    for item in items:
        if not item:
            continue
        if not item.startswith("-"):
            raise SettingsError(f"{where}: {item!r} is not an sbatch option (they start with "
                                "'-', e.g. --reservation=maint)")
        name = item.lstrip("-").split("=", 1)[0].split(None, 1)[0]
        if item.startswith("-") and not item.startswith("--"):
            name = item[1:2]  # -p gpu, -pgpu
        if name in OWN:
            why = OWN[name]
            hint = (f"use `{why}` in slurm.yaml or the `slurm-{why}` label" if why in LABELS
                    else f"jobgroup sets it from {why}")
            raise SettingsError(f"{where}: {item!r}: {hint}")
        out.append(item)
    return out


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise SettingsError(f"{where}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class TaskSubmit:
    """Everything one task's component is submitted with, settings and labels merged."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    sbatch: list[str] = field(default_factory=list)


def task_submit(task: Task, settings: SlurmSettings, default_partition: str | None = None
                ) -> TaskSubmit:
    """The task's submission settings: its `slurm-*` labels over `settings` (the partition
    defaults to `default_partition`, the dev cluster's). SettingsError naming the task and
    label (or slurm.yaml key) for a value Slurm cannot be given."""
    labels = task.resources.labels or {}
    name = task.name or "?"

    def pick(key: str) -> tuple[object, str]:
        if f"slurm-{key}" in labels:
            return labels[f"slurm-{key}"], f"task '{name}': label slurm-{key}"
        return getattr(settings, key), f"slurm.yaml: {key}"

    def text(key: str) -> str | None:
        value, where = pick(key)
        if value is None or value == "":
            return None
        s = str(value).strip()
        if not s or any(c in s for c in "\n\r") or (key != "constraint" and " " in s):
            raise SettingsError(f"{where}: {value!r} is not a valid {key}")
        return s

    time_value, time_where = pick("time")
    sbatch_value, sbatch_where = pick("sbatch")
    excl_value, excl_where = pick("exclusive")
    unknown = sorted(k for k in labels if k.startswith("slurm-") and k[6:] not in LABELS)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0][6:], LABELS, n=1)
        hint = f"; did you mean 'slurm-{close[0]}'?" if close else \
            f" (known: {', '.join('slurm-' + k for k in LABELS)})"
        raise SettingsError(f"task '{name}': label {unknown[0]} is not a Slurm setting{hint}")
    return TaskSubmit(
        partition=text("partition") or default_partition,
        account=text("account"), qos=text("qos"),
        time=None if time_value in (None, "") else slurm_time(time_value, time_where),
        constraint=text("constraint"),
        exclusive=_flag(excl_value, excl_where),
        sbatch=extra_lines(sbatch_value if sbatch_value is not None else [], sbatch_where),
    )


@dataclass(frozen=True)
class Component:
    """One task's component as submitted: its settings and the alternative chosen for it."""

    task: Task
    submit: TaskSubmit
    cpus: int | None = None  # per node
    memory_mb: int | None = None  # per node
    gres: str | None = None  # "gpu:A100:2" as the cluster spells it; "gpu:2": any type


AGENT_NAME = "jobgroup-agent"


def agent_step_name(task_idx: int) -> str:
    """The job step of task `task_idx`'s agents (one per node), as squeue/sstat list it."""
    return f"{AGENT_NAME}-{task_idx}"


def batch_script(group: JobGroup, components: list[Component], job_id: int | str, tag: str,
                 job_dir: Path) -> str:
    """The heterogeneous batch script of a group (pure): one component per task; its body
    starts one agent step per task and exits with the group's result (see the module doc).
    `job_dir` is the job's folder ($JOBGROUP_HOME/jobs/ID, on the filesystem the nodes share);
    the agents' folder is `job_dir`/slurm."""
    lines = ["#!/bin/bash"]
    for i, c in enumerate(components):
        t = c.task
        if i:
            lines.append("#SBATCH hetjob")
        opts = [f"--nodes={t.num_nodes}", "--ntasks-per-node=1"]
        if c.cpus is not None:
            opts.append(f"--cpus-per-task={c.cpus}")
        if c.memory_mb is not None:
            opts.append(f"--mem={c.memory_mb}M")
        if c.gres:
            opts.append(f"--gres={c.gres}")
        s = c.submit
        for key in ("partition", "account", "qos", "time", "constraint"):
            value = getattr(s, key)
            if value:
                opts.append(f"--{key}={_sbatch_quote(value)}")
        if s.exclusive:
            opts.append("--exclusive")
        opts += s.sbatch
        if i == 0:
            # A job Slurm requeued would come back without its agents' phases: jobgroup
            # restarts nodes itself (the group's restart policy).
            opts += ["--no-requeue", f"--job-name=jobgroup-{job_id}-{group.name}",
                     f"--comment=jobgroup:{tag}:{job_id}",
                     f"--output={_sbatch_quote(str(job_dir / 'slurm-%j.out'))}"]
        lines += [f"#SBATCH {o}" for o in opts]
    d = shlex.quote(str(job_dir / "slurm"))
    lines += [
        "",
        "# jobgroup: one agent per node (a step per task) runs that node's setup and run under",
        "# jobgroup's shim on the node itself, as the controller asks through the files in $d.",
        f"d={d}",
    ]
    het = len(components) > 1
    for i, c in enumerate(components):
        n = c.task.num_nodes
        lines.append(
            "srun " + (f"--het-group={i} " if het else "") +
            f"--nodes={n} --ntasks={n} --ntasks-per-node=1 --kill-on-bad-exit=0 "
            f"--job-name={agent_step_name(i)} \"$d/jobgroup-agent\" \"$d\" {i} "
            f"{shlex.quote(c.task.name or str(i))} &")
    lines += [
        "wait",
        "# The group's result, written by jobgroup when the group ended: Slurm records every",
        "# component COMPLETED (0) or FAILED with this exit code.",
        'exit "$(cat "$d/end" 2>/dev/null || echo 1)"',
        "",
    ]
    return "\n".join(lines)


def _sbatch_quote(value: str) -> str:
    """A value on an `#SBATCH` line: double-quoted when it holds blanks (sbatch reads quotes)."""
    return f'"{value}"' if any(c in value for c in " \t") else value
