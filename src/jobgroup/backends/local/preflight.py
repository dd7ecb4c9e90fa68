"""What the local backend cannot honour in a group (see `backends.registry`); light."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from jobgroup.backends.registry import DryRun, Preflight, Target

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


def preflight(group: JobGroup, tasks: list[Task], target: Target | None = None) -> Preflight:
    """(`target` does not apply: one machine.)"""
    return problems_and_warnings(tasks, "local")


def dryrun(group: JobGroup, options: dict, home: Path, base_dir: Path, level: str) -> DryRun:
    """The local backend's part of a dry run: the isolation nodes get, how they are addressed,
    and whether the group can ever be admitted on this machine (a group that cannot is
    accepted by launch and fails FAILED_NO_RESOURCE at admission: said here as a warning)."""
    from jobgroup.backends.local.isolation import LEVEL_NOTES, NAMESPACES, USER

    part: dict = {"isolation": level, "isolation_note": LEVEL_NOTES.get(level, "")}
    part["addresses"] = {
        NAMESPACES: "each node: an address of the group's own subnet (a bridge), given at start",
        USER: "each node: a loopback address of its own (127.x.y.z), given at start",
    }.get(level, "the host's network; peers by the SKYPILOT_* variables")
    if level == NAMESPACES:
        part["egress"] = "off (--no-egress)" if options.get("no_egress") else \
            "NAT and DNS through this machine"
    fits, why = machine_fit(group, options, home)
    part["fits_this_machine"] = fits
    notes = []
    if not fits:
        part["why_not"] = why
        notes.append(f"warning: {why}: launch would record the group and fail it "
                     "FAILED_NO_RESOURCE (--best-effort runs a group sized for a cluster "
                     "without CPU/memory reservations; --cpu-only runs GPU tasks without GPUs)")
    return DryRun(part=part, notes=notes)


def machine_fit(group: JobGroup, options: dict, home: Path) -> tuple[bool, str]:
    """(whether every step of the group fits this machine when idle, why not). The same rule
    as admission (`resources.admission.schedule` with nothing else held)."""
    from jobgroup.resources import admission, inventory, requests

    inv = inventory.recorded(home)
    steps = [None] if group.execution == "parallel" or len(group.tasks) == 1 \
        else list(range(len(group.tasks)))
    for step in steps:
        req = requests.job_request(group, options, step)
        if options.get("best_effort"):
            req, _ = requests.fit_to_machine(req, inv.cpus, inv.memory_gb)
        decision = admission.schedule(inv, {}, [admission.Pending(0, req)])
        if decision.infeasible:
            return False, decision.infeasible[0].reason
    return True, ""

