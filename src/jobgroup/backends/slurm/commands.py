"""Slurm's commands, each with a timeout (a client blocks for long while slurmctld is down),
and what the backend reads from them."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from jobgroup.backends.base import Unreachable

TIMEOUT = 15.0


class SlurmError(Unreachable):
    """A Slurm command failed to run or answer (not a refusal: those are Admission results)."""


def run(argv: list[str], *, timeout: float = TIMEOUT, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=cwd)
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: is Slurm installed here (and on PATH)?") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(argv[:2])} did not answer within {timeout:g}s "
                         "(is slurmctld up?)") from None


_HOSTS = re.compile(r"([^\[\],]*)(?:\[([0-9,\-]+)\])?([^\[\],]*)")


def hostnames(nodelist: str) -> list[str] | None:
    """Slurm's compact node list in names, in Slurm's order: `node[1-3,7],gpu[01-02],login`
    (one bracket per name, zero-padding kept); None for forms left to `scontrol show
    hostnames` (several brackets in one name)."""
    out: list[str] = []
    depth, start = 0, 0
    parts = []
    for i, c in enumerate(nodelist + ","):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(nodelist[start:i])
            start = i + 1
    for part in parts:
        m = _HOSTS.fullmatch(part)
        if not m or part.count("[") > 1:
            return None
        head, ranges, tail = m.groups()
        if ranges is None:
            if part:
                out.append(part)
            continue
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                return None
            width = len(lo)
            for k in range(int(lo), int(hi or lo) + 1):
                out.append(f"{head}{k:0{width}d}{tail}")
    return out


def expand_nodes(nodelist: str, env: dict[str, str] | None = None) -> list[str]:
    if not nodelist or nodelist in ("(null)", "None"):
        return []
    names = hostnames(nodelist)
    if names is not None:
        return names
    p = run(["scontrol", "show", "hostnames", nodelist], env=env)
    return p.stdout.split()


@dataclass(frozen=True)
class Component:
    """One heterogeneous component of a Slurm job, as squeue lists it."""

    index: int
    job_id: str  # the component's own job id (J+T's)
    state: str
    reason: str
    nodelist: str  # Slurm's compact form
    nodes: list[str]


def components(slurm_id: str, env: dict[str, str] | None = None) -> list[Component]:
    """State of each heterogeneous component of job `slurm_id` (squeue; [] once Slurm has
    forgotten the job)."""
    p = run(["squeue", "-h", "-j", slurm_id, "-o", "%i|%A|%T|%r|%N"], env=env)
    out = []
    for line in p.stdout.splitlines():
        jid, own, state, reason, nodelist = (line.split("|") + [""] * 5)[:5]
        m = re.search(r"\+(\d+)$", jid.strip())
        out.append(Component(int(m.group(1)) if m else 0, own.strip(), state.strip(),
                             reason.strip(), nodelist.strip(),
                             expand_nodes(nodelist.strip(), env)))
    return sorted(out, key=lambda c: c.index)


def job_state(slurm_id: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(state, reason) of Slurm job `slurm_id` (its first component): RUNNING, PENDING,
    COMPLETED, CANCELLED, TIMEOUT, NODE_FAIL, ...; ("", "") once Slurm has forgotten it."""
    p = run(["scontrol", "show", "job", "-o", slurm_id], env=env)
    if p.returncode != 0:
        if "Invalid job id" in p.stderr:
            return "", ""
        raise SlurmError(p.stderr.strip()[:300] or "scontrol show job failed")
    line = p.stdout.splitlines()[0] if p.stdout else ""
    state = re.search(r"(?:^|\s)JobState=(\S+)", line)
    reason = re.search(r"(?:^|\s)Reason=(\S+)", line)
    return (state.group(1) if state else "", reason.group(1) if reason else "")


def per_node(text: str) -> dict[str, str]:
    """`sinfo -h -N -o "%N %X"` output (a node and one field a line) -> node -> field; lines
    of another shape are skipped."""
    return {parts[0]: parts[1] for parts in map(str.split, text.splitlines())
            if len(parts) == 2}


def node_addresses(env: dict[str, str] | None = None) -> dict[str, str]:
    return per_node(run(["sinfo", "-h", "-N", "-o", "%N %o"], env=env).stdout)


def step_id(job: str, name: str, env: dict[str, str] | None = None) -> str | None:
    """`JOB.STEP` of the running step named `name` of (component) job `job`, or None."""
    p = run(["squeue", "-h", "-s", "-j", job, "-o", "%i|%j"], env=env)
    for line in p.stdout.splitlines():
        sid, _, step = line.partition("|")
        if step.strip() == name:
            return sid.strip()
    return None
