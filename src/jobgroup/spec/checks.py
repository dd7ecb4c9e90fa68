"""Checks of meaning on converted models (types are already right): values in range, names,
cross references. Each check returns `Finding`s located by key path; the loader adds positions.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from jobgroup.spec import compat, destinations, durations, limits, names, resources
from jobgroup.spec.convert import Finding, Path
from jobgroup.spec.models import Header, JobRecovery, ReadinessProbe, Resources, Task

PLACEMENTS = ("SAME_INFRA",)
EXECUTIONS = ("parallel", "serial")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUB_PATH = re.compile(r"[a-zA-Z0-9._-][a-zA-Z0-9./_-]*")  # SkyPilot's SUB_PATH_PATTERN
PRIORITIES = (-1000, 1000)  # SkyPilot's MIN_PRIORITY, MAX_PRIORITY


def did_you_mean(name: str, allowed: tuple[str, ...] | list[str]) -> str:
    """"; did you mean 'x'?" for the allowed word closest to `name`, or ""."""
    import difflib  # only on this (rare) path

    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


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
    if res.priority is not None and not PRIORITIES[0] <= res.priority <= PRIORITIES[1]:
        out.append(Finding((*path, "priority"), f"must be between {PRIORITIES[0]} and "
                           f"{PRIORITIES[1]} (got {res.priority})"))
    if isinstance(res.job_recovery, JobRecovery):
        jr, jp = res.job_recovery, (*path, "job_recovery")
        if jr.max_restarts_on_errors < 0:
            out.append(Finding((*jp, "max_restarts_on_errors"), "must be 0 or more"))
        elif jr.max_restarts_on_errors > limits.MAX_RESTARTS:
            out.append(Finding((*jp, "max_restarts_on_errors"),
                               f"{jr.max_restarts_on_errors} restarts is more than any run needs "
                               f"(at most {limits.MAX_RESTARTS})"))
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


def _env_keys(names_: list[str] | dict[str, str], field: str) -> list[Finding]:
    return [Finding((field, k), f"invalid environment variable name '{k}': use letters, digits "
                                "and '_', not starting with a digit", on_key=True)
            for k in names_ if not _ENV_NAME.fullmatch(k)]


def _env_sizes(task: Task) -> list[Finding]:
    """Each variable and script within what the kernel takes; all of them within the task's
    share of ARG_MAX (see `limits`)."""
    out: list[Finding] = []
    total = 0
    for field in ("envs", "secrets"):
        for k, v in getattr(task, field).items():
            if "\x00" in v:
                out.append(Finding((field, k), "contains a NUL character, which no environment "
                                   "variable can hold"))
            n = limits.size(k) + 1 + limits.size(v)
            total += n + 1
            if n > limits.MAX_ENV_ENTRY:
                shown = "the value" if field == "secrets" else f"'{k}=...'"
                out.append(Finding((field, k), f"{shown} is {limits.kib(n)}; the kernel takes "
                                   f"at most {limits.kib(limits.MAX_ENV_ENTRY)} per variable: "
                                   "put it in a file (file_mounts) and pass its path"))
    # What the node's shell runs around the script (`nodescript`: ~/.bashrc, the task's
    # variables set again) travels in the same argument.
    from jobgroup import nodescript

    shell = nodescript.wrapper_size(keep=[*task.envs, *task.secrets, *task.unfilled_envs,
                                          *task.unfilled_secrets])
    room = limits.MAX_SCRIPT - shell
    for field in ("run", "setup"):
        script = getattr(task, field)
        if script is None:
            continue
        if "\x00" in script:
            out.append(Finding((field,), "contains a NUL character"))
        n = limits.size(script)
        total += n + 1
        if n > room:
            out.append(Finding((field,), f"the script is {limits.kib(n)}; a node's script is "
                               f"a command-line argument, which the kernel takes up to "
                               f"{limits.kib(room)} here (with the shell's "
                               f"{limits.kib(shell)} around it): put it in a file in the "
                               f"workdir and run that"))
    if total > limits.TASK_ENV_TOTAL and not out:
        out.append(Finding((), f"envs, secrets, run and setup add up to {limits.kib(total)}; a "
                           f"node's command line and environment hold at most "
                           f"{limits.kib(limits.TASK_ENV_TOTAL)} of them: move large values "
                           "into files"))
    return out


def _check_storage(dst: str, spec: dict[str, Any]) -> list[Finding]:
    """A `file_mounts` value given as a mapping (SkyPilot's storage: a bucket or a volume)."""
    path: Path = ("file_mounts", dst)
    out: list[Finding] = []
    for key in spec:
        if key not in compat.STORAGE_KEYS:
            out.append(Finding((*path, key), f"unknown storage field '{key}'"
                               f"{did_you_mean(key, compat.STORAGE_KEYS)} (allowed: "
                               f"{', '.join(k for k in compat.STORAGE_KEYS if k[0] != '_')})",
                               on_key=True))
    for key, allowed in (("store", compat.STORES), ("mode", compat.STORAGE_MODES)):
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or value.upper() not in allowed:
            out.append(Finding((*path, key), f"invalid {key} {value!r}: one of "
                               f"{', '.join(a.lower() if key == 'store' else a for a in allowed)}"))
    for key in ("name", "_bucket_sub_path"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            out.append(Finding((*path, key), "expected a string"))
    if "name" in spec and spec["name"] is None and not spec.get("source"):
        out.append(Finding((*path, "name"), "no bucket name yet: fill it in before launching "
                           "(on the local backend, the name of a local volume)",
                           severity="warning"))
    source = spec.get("source")
    if source is not None and not (isinstance(source, str) or (
            isinstance(source, list) and source and all(isinstance(s, str) for s in source))):
        out.append(Finding((*path, "source"), "expected a path or URL, or a list of them"))
    if "persistent" in spec and not isinstance(spec["persistent"], bool):
        out.append(Finding((*path, "persistent"), "expected true or false"))
    if "name" not in spec and "source" not in spec:
        out.append(Finding(path, "a storage mount needs a 'name' (a bucket or volume) or a "
                           "'source' (a local path or a bucket URL)"))
    return out


def _check_volume(dst: str, spec: str | dict[str, Any]) -> list[Finding]:
    """A `volumes` value: a volume name, ``{name: NAME, sub_path: DIR}`` (an existing volume,
    or a folder of it) or ``{size: 10Gi, type: ..., labels: ..., config: ...}`` (a volume made
    for this job), as SkyPilot's `resolve_and_validate_volumes` takes them."""
    path: Path = ("volumes", dst)
    if isinstance(spec, str):
        return [] if spec.strip() else [Finding(path, "the volume name is empty")]
    out: list[Finding] = []
    if "size" in spec:
        keys = compat.VOLUME_NEW_KEYS
        try:
            q = resources.parse_memory(spec["size"])
        except ValueError:
            q = None
        if q is None or q.at_least:
            out.append(Finding((*path, "size"), f"invalid size {spec['size']!r}: a size such as "
                               "10Gi, 100GB or 1TB"))
        elif q.value < 1:
            out.append(Finding((*path, "size"), "a volume is at least 1Gi"))
        vtype = spec.get("type")
        if vtype is not None and (not isinstance(vtype, str)
                                  or vtype.lower() not in compat.EPHEMERAL_VOLUME_TYPES):
            out.append(Finding((*path, "type"), f"unsupported type {vtype!r} for a volume made "
                               f"for the job: {', '.join(compat.EPHEMERAL_VOLUME_TYPES)}"))
        labels = spec.get("labels")
        if labels is not None and not (isinstance(labels, dict) and all(
                isinstance(v, str) for v in labels.values())):
            out.append(Finding((*path, "labels"), "expected a mapping of key: string value"))
        if spec.get("config") is not None and not isinstance(spec["config"], dict):
            out.append(Finding((*path, "config"), "expected a mapping"))
    elif "name" in spec:
        keys = compat.VOLUME_REF_KEYS
        if not isinstance(spec["name"], str) or not spec["name"].strip():
            out.append(Finding((*path, "name"), "expected a volume name"))
        sub = spec.get("sub_path")
        if sub is not None:
            if not isinstance(sub, str) or not _SUB_PATH.fullmatch(sub):
                out.append(Finding((*path, "sub_path"), f"invalid sub_path {sub!r}: a relative "
                                   "path of letters, digits, '.', '/', '_' and '-'"))
            elif ".." in sub.split("/"):
                out.append(Finding((*path, "sub_path"), "sub_path must stay inside the volume "
                                   "(no '..')"))
    else:
        return [Finding(path, "a volume mapping needs 'name' (an existing volume, optionally "
                        "with 'sub_path') or 'size' (a volume made for this job)")]
    for key in spec:
        if key not in keys:
            out.append(Finding((*path, key), f"'{key}' is not a field of this volume form and is "
                               f"ignored (as SkyPilot does){did_you_mean(key, keys)}",
                               on_key=True, severity="warning"))
    return out


def check_task(task: Task) -> list[Finding]:
    """Checks of one task document on its own (names and cross references are group checks)."""
    out: list[Finding] = []
    if task.num_nodes < 1:
        out.append(Finding(("num_nodes",), f"must be at least 1 (got {task.num_nodes})"))
    elif task.num_nodes > limits.MAX_GROUP_NODES:
        out.append(Finding(("num_nodes",), f"{task.num_nodes} nodes is more than any backend "
                           f"runs in one group (at most {limits.MAX_GROUP_NODES})"))
    out += check_resources(task.resources, ("resources",))
    out += _env_keys(task.envs, "envs") + _env_keys(task.secrets, "secrets")
    out += _env_keys(task.unfilled_envs, "envs") + _env_keys(task.unfilled_secrets, "secrets")
    both = (set(task.envs) | set(task.unfilled_envs)) & \
        (set(task.secrets) | set(task.unfilled_secrets))
    for key in sorted(both):
        out.append(Finding(("secrets", key), f"'{key}' is in both envs and secrets; keep one",
                           on_key=True))
    out += _env_sizes(task)
    for dest, spec in task.volumes.items():
        if not dest.startswith(("/", "~")):
            out.append(Finding(("volumes", dest), f"mount path '{dest}' must be absolute "
                               "(start with '/' or '~')", on_key=True))
        out += _check_volume(dest, spec)
    for dest, spec in task.file_mounts.items():
        why = destinations.problem(dest)
        if why:  # what a launch refuses (the working directory itself, out of the home)
            out.append(Finding(("file_mounts", dest), why, on_key=True))
        if isinstance(spec, dict):
            out += _check_storage(dest, spec)
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
    elif probe.failure_threshold > limits.MAX_RESTARTS:
        out.append(Finding((*path, "failure_threshold"), f"at most {limits.MAX_RESTARTS}"))
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
    elif header.max_group_restarts is not None and header.max_group_restarts > limits.MAX_RESTARTS:
        out.append(Finding(("max_group_restarts",), f"at most {limits.MAX_RESTARTS}"))
    if header.placement is not None and header.placement not in PLACEMENTS:
        out.append(Finding(("placement",), f"placement '{header.placement}' is ignored (SkyPilot "
                           f"ignores the field too): a group's tasks always run on one infra "
                           f"({PLACEMENTS[0]})", severity="warning"))
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
