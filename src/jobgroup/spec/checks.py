"""Checks of meaning on converted models (types are already right): values in range, names,
cross references. Each check returns `Finding`s located by key path; the loader adds positions.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from jobgroup.spec import durations, names, resources
from jobgroup.spec.convert import Finding, Path
from jobgroup.spec.models import Header, JobRecovery, ReadinessProbe, Resources, Task

PLACEMENTS = ("SAME_INFRA",)
EXECUTIONS = ("parallel", "serial")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parsed(path: Path, parse: Callable[[Any], Any], value: Any) -> list[Finding]:
    try:
        parse(value)
    except ValueError as e:
        return [Finding(path, str(e))]
    return []


def check_resources(res: Resources, path: Path, *, nested: bool = False) -> list[Finding]:
    """Values of one `resources` mapping (and its `any_of`/`ordered` alternatives)."""
    out = _parsed((*path, "cpus"), resources.parse_cpus, res.cpus)
    out += _parsed((*path, "memory"), resources.parse_memory, res.memory)
    out += _parsed((*path, "accelerators"), resources.parse_accelerators, res.accelerators)
    out += _parsed((*path, "ports"), resources.ports, res.ports)
    out += _parsed((*path, "disk_size"), resources.parse_disk_size, res.disk_size)
    if res.max_hourly_cost is not None and not (
            math.isfinite(res.max_hourly_cost) and res.max_hourly_cost > 0):
        out.append(Finding((*path, "max_hourly_cost"), "must be a positive number of dollars"))
    if isinstance(res.job_recovery, JobRecovery):
        jr, jp = res.job_recovery, (*path, "job_recovery")
        if jr.max_restarts_on_errors < 0:
            out.append(Finding((*jp, "max_restarts_on_errors"), "must be 0 or more"))
        codes = jr.recover_on_exit_codes
        for i, code in enumerate([codes] if isinstance(codes, int) else codes or []):
            if not 0 <= code <= 255:
                where = (*jp, "recover_on_exit_codes") if isinstance(codes, int) else \
                    (*jp, "recover_on_exit_codes", i)
                out.append(Finding(where, f"exit code {code} is not between 0 and 255"))
    if res.any_of is not None and res.ordered is not None:
        out.append(Finding((*path, "ordered"), "give either any_of or ordered, not both"))
    for key in ("any_of", "ordered"):
        items = getattr(res, key)
        if items is None:
            continue
        if nested:
            out.append(Finding((*path, key), f"{key} cannot be nested inside any_of/ordered"))
            continue
        if not items:
            out.append(Finding((*path, key), f"{key} is empty: list at least one alternative"))
        for i, alt in enumerate(items):
            out += check_resources(alt, (*path, key, i), nested=True)
    return out


def _env_keys(mapping: dict[str, str], field: str) -> list[Finding]:
    return [Finding((field, k), f"invalid environment variable name '{k}': use letters, digits "
                                "and '_', not starting with a digit", on_key=True)
            for k in mapping if not _ENV_NAME.fullmatch(k)]


def check_task(task: Task) -> list[Finding]:
    """Checks of one task document on its own (names and cross references are group checks)."""
    out: list[Finding] = []
    if task.num_nodes < 1:
        out.append(Finding(("num_nodes",), f"must be at least 1 (got {task.num_nodes})"))
    out += check_resources(task.resources, ("resources",))
    out += _env_keys(task.envs, "envs") + _env_keys(task.secrets, "secrets")
    for key in sorted(set(task.envs) & set(task.secrets)):
        out.append(Finding(("secrets", key), f"'{key}' is in both envs and secrets; keep one",
                           on_key=True))
    for field in ("file_mounts", "volumes"):
        for dest in getattr(task, field):
            if not dest.startswith(("/", "~")):
                out.append(Finding((field, dest), f"mount path '{dest}' must be absolute "
                                   "(start with '/' or '~')", on_key=True))
    for field in ("run", "setup"):
        if getattr(task, field) is not None and "\x00" in getattr(task, field):
            out.append(Finding((field,), "contains a NUL character"))
    if task.readiness_probe is not None:
        out += _check_probe(task.readiness_probe)
    return out


def _check_probe(probe: ReadinessProbe) -> list[Finding]:
    path: Path = ("readiness_probe",)
    kinds = [k for k in ("http", "tcp", "command") if getattr(probe, k) is not None]
    out: list[Finding] = []
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        out.append(Finding(path, f"give exactly one of http, tcp or command (got {what})"))
    for kind in ("http", "tcp"):
        p = getattr(probe, kind)
        if p is not None and not 1 <= p.port <= 65535:
            out.append(Finding((*path, kind, "port"), f"port {p.port} is not between 1 and 65535"))
    if probe.http is not None and not probe.http.path.startswith("/"):
        out.append(Finding((*path, "http", "path"), "the path must start with '/'"))
    if probe.command is not None and not probe.command.strip():
        out.append(Finding((*path, "command"), "the command is empty"))
    for key in ("initial_delay", "interval", "timeout"):
        out += _parsed((*path, key), durations.parse_duration, getattr(probe, key))
    for key in ("interval", "timeout"):
        try:
            if durations.parse_duration(getattr(probe, key)) <= 0:
                out.append(Finding((*path, key), f"{key} must be more than 0 seconds"))
        except ValueError:
            pass
    if probe.failure_threshold < 1:
        out.append(Finding((*path, "failure_threshold"), "must be at least 1"))
    return out


def check_dependencies(tasks: list[Task], parallel: bool) -> list[tuple[Task, Finding]]:
    """depends_on: names that exist, not the task itself, no cycles; only in job groups."""
    out: list[tuple[Task, Finding]] = []
    names_ = [t.name for t in tasks if t.name]
    listing = ", ".join(names_) or "none"
    graph: dict[str, list[str]] = {}
    for t in tasks:
        if t.depends_on is None:
            continue
        if not parallel:
            out.append((t, Finding(("depends_on",), "depends_on applies only to job groups "
                                   "(execution: parallel); a pipeline already runs in order",
                                   on_key=True)))
            continue
        deps = t.dependencies()
        keys = list(deps)
        for i, dep in enumerate(keys):
            where = ("depends_on", i) if isinstance(t.depends_on, list) else ("depends_on", dep)
            if dep == t.name:
                out.append((t, Finding(where, f"task '{t.name}' cannot depend on itself")))
            elif dep not in names_:
                out.append((t, Finding(where, f"unknown task '{dep}'; tasks in this group: "
                                       f"{listing}")))
        if t.name:
            graph[t.name] = [d for d in keys if d in names_ and d != t.name]
    cycle = _cycle(graph)
    if cycle:
        first = next(t for t in tasks if t.name == cycle[0])
        out.append((first, Finding(("depends_on",), "dependency cycle: " + " -> ".join(
            [*cycle, cycle[0]]) + "; no task of it could ever start", on_key=True)))
    return out


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return stack[stack.index(m):]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def check_name(value: object, path: Path, what: str) -> list[Finding]:
    """A group or task name: an error when unusable, a warning when it is not a DNS label."""
    problem = names.name_problem(value)
    if problem or not isinstance(value, str):
        return [Finding(path, problem or "a name must be a string")]
    why = names.dns_label_problem(value)
    if why:
        return [Finding(path, f"{what} '{value}' is not a valid DNS label ({why}), so its hostnames "
                        f"may not resolve on every backend; consider "
                        f"'{names.hostname_suggestion(value)}'", severity="warning")]
    return []


def check_header(header: Header, task_names: list[str], parallel: bool) -> list[Finding]:
    """Header values against the group's tasks (`task_names`: the named tasks, in order)."""
    out: list[Finding] = []
    if header.max_group_restarts is not None and header.max_group_restarts < 0:
        out.append(Finding(("max_group_restarts",), "must be 0 or more"))
    if header.placement is not None and header.placement not in PLACEMENTS:
        out.append(Finding(("placement",), f"placement '{header.placement}' is not supported; "
                           f"the only placement is {PLACEMENTS[0]} (the default)"))
    if not parallel:
        for key in ("primary_tasks", "termination_delay"):
            if getattr(header, key) is not None:
                out.append(Finding((key,), f"{key} applies only to job groups; add "
                                   "'execution: parallel' to the header", on_key=True))
        return out
    listing = ", ".join(dict.fromkeys(task_names)) or "none"
    seen: set[str] = set()
    for i, name in enumerate(header.primary_tasks or []):
        if name in seen:
            out.append(Finding(("primary_tasks", i), f"'{name}' is listed twice"))
        elif name not in task_names:
            out.append(Finding(("primary_tasks", i),
                               f"unknown task '{name}'; tasks in this group: {listing}"))
        seen.add(name)
    out += _check_delay(header, task_names, listing)
    return out


def _check_delay(header: Header, task_names: list[str], listing: str) -> list[Finding]:
    delay, out = header.termination_delay, []
    if delay is None:
        return out
    primaries = set(header.primary_tasks or [])
    if not primaries:
        out.append(Finding(("termination_delay",), "has no effect without primary_tasks (every "
                           "task is primary, so none is stopped)", severity="warning",
                           on_key=True))
    if not isinstance(delay, dict):
        return out + _parsed(("termination_delay",), durations.parse_duration, delay)
    for key, value in delay.items():
        path = ("termination_delay", key)
        if key != "default" and key not in task_names:
            out.append(Finding(path, f"unknown task '{key}'; tasks in this group: {listing} "
                               "(or 'default')", on_key=True))
        elif key in primaries:
            out.append(Finding(path, f"'{key}' is a primary task; termination_delay applies only "
                               "to auxiliary tasks", severity="warning", on_key=True))
        out += _parsed(path, durations.parse_duration, value)
    return out
