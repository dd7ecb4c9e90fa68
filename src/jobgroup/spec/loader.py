"""Spec text -> one normalized `JobGroup`, or a `SpecError` listing every problem.

Which documents are what (SkyPilot's rules):
- the first of several documents is a *header* when it holds a header-only field (`execution`,
  `placement`, `primary_tasks`, `termination_delay`, `inter_connection`) or nothing but `name`;
  a lone document is a header only when it holds a header-only field (then: "header but no task");
- a header with ``execution: parallel`` makes a *job group*; a header with ``execution: serial``
  or none, or several documents without a header, make a *pipeline* (execution "serial");
- a single task document is a group of one task (execution "parallel").
Trailing empty documents (a final ``---``) are ignored; any other empty document is an error.

Normalization: every task has a name (pipelines and single tasks get ``task-0``, ``task-1``, ...,
skipping names already taken; tasks of a job group must be named); the group name is, in order,
the `name` argument, the header's `name`, the single task's name, the file's stem made a DNS label,
the first task's name. Each task document is read as SkyPilot reads it (`spec.prepare`): envs
and secrets as strings, entries without a value to be given at launch (`Loaded.unfilled`),
launch-time `env`/`secrets` applied, `$VAR` filled in paths, SkyPilot's fields that jobgroup
ignores accepted with a warning. Unknown fields of a job group's header are ignored with a
warning (as SkyPilot does); elsewhere an unknown field is an error with "did you mean".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from jobgroup.spec import checks, limits, names, sources, yamlnodes
from jobgroup.spec.convert import Finding, convert, unknown_field_message
from jobgroup.spec.errors import Problem, SpecError
from jobgroup.spec.models import HEADER_KEYS, TASK_KEYS, Header, JobGroup, Task
from jobgroup.spec.prepare import Overrides, TaskPrep, Unfilled
from jobgroup.spec.report import MAX_PROBLEMS, Report, path_str

if TYPE_CHECKING:
    from pathlib import Path

HEADER_ONLY = HEADER_KEYS - TASK_KEYS
__all__ = ["Loaded", "Overrides", "Unfilled", "load", "load_file", "load_path", "parse",
           "path_str", "MAX_PROBLEMS"]


class Loaded:
    """A loaded spec: the group, the warnings, the file (None for text) and the folder against
    which relative `workdir`/`file_mounts` paths are resolved (the file's, or the cwd for text).

    `unfilled` lists the `envs`/`secrets` entries the file leaves without a value (and the
    launch-time values did not fill), with where they are: `launch` must refuse to start while
    any is left (load with ``complete=True`` to get that refusal as a SpecError).

    `path` and `base_dir` are `pathlib.Path`s (given as str or PathLike, converted when read, so
    that `jobgroup validate` does not pay for importing pathlib).
    """

    __slots__ = ("group", "warnings", "_path", "_base_dir", "unfilled", "single_task")

    def __init__(self, group: JobGroup, warnings: list[Problem],
                 path: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str],
                 unfilled: list[Unfilled] | None = None, single_task: bool = False):
        self.group = group
        # One task document and no header: what `sky jobs launch` applies its resource
        # overrides to (`--cpus`, `--gpus`, `--num-nodes`, ...); it ignores them otherwise.
        self.single_task = single_task
        self.warnings = warnings
        self._path = path
        self._base_dir = base_dir
        self.unfilled = list(unfilled) if unfilled is not None else [
            Unfilled(task, field, name) for task, field, name in group.unfilled()]

    @property
    def path(self) -> Path | None:
        from pathlib import Path

        return None if self._path is None else Path(self._path)

    @property
    def base_dir(self) -> Path:
        from pathlib import Path

        return Path(self._base_dir)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Loaded):
            return NotImplemented
        return (self.group, self.warnings, self.path, self.base_dir) == \
            (other.group, other.warnings, other.path, other.base_dir)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Loaded(group={self.group!r}, warnings={self.warnings!r}, path={self.path!r}, "
                f"base_dir={self.base_dir!r})")


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _is_header(doc: yamlnodes.Document, count: int) -> bool:
    if not isinstance(doc.data, dict):
        return False
    keys = set(doc.data)
    return bool(keys & HEADER_ONLY) or (count > 1 and keys <= {"name"})


def _overlaps(path: tuple, findings: list[Finding]) -> bool:
    """Whether `path` is inside, or contains, a path that already has a problem."""
    n = len(path)
    return any(f.path[:n] == path or path[:len(f.path)] == f.path for f in findings)


def _where(raw: Any, number: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(name, str) and name and names.name_problem(name) is None:
        return f"task '{name}'"
    return f"task #{number}"


def _header(doc: yamlnodes.Document, report: Report) -> Header:
    raw = dict(doc.data)
    if not raw:
        report.error(doc, "header", "the header is empty: a job group's header needs "
                     "'name: ...' and 'execution: parallel'")
    if "execution" in raw and raw["execution"] not in checks.EXECUTIONS:
        value = raw.pop("execution")
        hint = ""
        if isinstance(value, str):
            import difflib

            close = difflib.get_close_matches(value.lower(), checks.EXECUTIONS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
        report.error(doc, "header", f"execution must be 'parallel' (a job group: tasks run "
                     f"together) or 'serial' (a pipeline), not {value!r}{hint}", ("execution",))
    if raw.get("execution") == "parallel":  # SkyPilot warns about other fields and ignores them
        for key in [k for k in raw if k not in HEADER_KEYS]:
            if key in TASK_KEYS:
                why = (f"'{key}' is a task field, so it is ignored in the header (as SkyPilot "
                       "ignores it): put it in a task document (after a '---' line)")
            else:
                why = unknown_field_message(key, Header).replace(
                    f"unknown field '{key}'", f"unknown header field '{key}' is ignored (as "
                    "SkyPilot ignores it)", 1)
            report.warning(doc, "header", why, (key,), on_key=True)
            del raw[key]
    header, findings = convert(raw, Header)
    for f in findings:
        report.at(doc, "header", f)
    return header if header is not None else Header()


def _default_names(tasks: list[Task]) -> list[Task]:
    """Unnamed tasks get ``task-{index}`` (the next free number when that name is taken)."""
    taken = {t.name for t in tasks if t.name}
    out = []
    for i, t in enumerate(tasks):
        if not t.name:
            while f"task-{i}" in taken:
                i += 1
            taken.add(f"task-{i}")
            t = msgspec.structs.replace(t, name=f"task-{i}")
        out.append(t)
    return out


def parse(text: str, *, label: str = sources.TEXT_NAME, stem: str | None = None,
          name: str | None = None,
          overrides: Overrides | None = None) -> tuple[JobGroup, list[Problem]]:
    """Parse spec `text` (named `label` in messages; `stem` names the group by default;
    `overrides`: launch-time values, see `prepare.Overrides`). Returns the group and its
    warnings; raises SpecError with every error (and warning)."""
    group, warnings, _, _ = _parse(text, label, stem, name, overrides or Overrides())
    return group, warnings


def _parse(text: str, label: str, stem: str | None, name: str | None,
           overrides: Overrides) -> tuple[JobGroup, list[Problem], list[Unfilled], bool]:
    report = Report(label)
    try:
        docs = yamlnodes.documents(text)
    except yamlnodes.YAMLSyntaxError as e:
        line, col = e.pos or (None, None)
        raise SpecError([Problem(label, line, col, "", "", f"invalid YAML: {e.message}")]) from None
    except yamlnodes.TooBig as e:
        line, col = e.pos or (None, None)
        raise SpecError([Problem(label, line, col, "", "", f"the spec {e.message}")]) from None
    while docs and docs[-1].data is None:
        docs.pop()
    if not docs:
        raise SpecError([Problem(label, None, None, "", "", "the spec is empty: write a task "
                                 "(e.g. 'run: echo hello'), or a header and task documents")])
    header_doc = docs[0] if _is_header(docs[0], len(docs)) else None
    task_docs = docs[1:] if header_doc else docs
    for number, d in enumerate(docs, 0 if header_doc else 1):
        for issue in d.issues:
            report.issue("header" if d is header_doc else _where(d.data, number), issue)
    header = _header(header_doc, report) if header_doc else Header()
    parallel = header.execution == "parallel" or (header_doc is None and len(task_docs) == 1)
    group_job = header_doc is not None and header.execution == "parallel"
    if header_doc is not None and not task_docs:
        report.error(header_doc, "header", "the file has a header but no task: add one document "
                     "per task after it, each starting with a '---' line")

    tasks, unfilled = _tasks(task_docs, report, group_job, overrides)
    task_names = [t.name for t in tasks if t.name]
    total = sum(t.num_nodes for t in tasks)
    if total > limits.MAX_GROUP_NODES and all(t.num_nodes <= limits.MAX_GROUP_NODES
                                              for t in tasks):
        report.error(header_doc or task_docs[0], "header" if header_doc else "",
                     f"the tasks have {total} nodes together; a group has at most "
                     f"{limits.MAX_GROUP_NODES}")
    docs_of = {id(t): d for t, d in zip(tasks, [d for d in task_docs if isinstance(d.data, dict)])}
    for t, f in checks.check_dependencies(tasks, group_job):
        report.at(docs_of.get(id(t)), _where({"name": t.name}, 0), f)
    if header_doc is not None:
        for f in checks.check_header(header, task_names, group_job):
            report.at(header_doc, "header", f)
    group_name = _group_name(header, header_doc, name, report, group_job, tasks, stem)
    warnings = report.raise_if_errors()
    tasks = _default_names(tasks)
    unfilled = [msgspec.structs.replace(u, task=tasks[int(u.task)].name or "")
                for u in unfilled]  # (task indexes until the names are known)
    group = JobGroup(
        name=group_name or tasks[0].name or "jobgroup",
        tasks=tasks,
        execution="parallel" if parallel else "serial",
        placement=header.placement if header.placement in checks.PLACEMENTS else "SAME_INFRA",
        primary_tasks=list(header.primary_tasks or []),
        termination_delay=header.termination_delay,
        inter_connection=True if header.inter_connection is None else header.inter_connection,
        max_group_restarts=header.max_group_restarts or 0,
    )
    return group, warnings, unfilled, header_doc is None and len(task_docs) == 1


def _tasks(task_docs: list[yamlnodes.Document], report: Report, group_job: bool,
           overrides: Overrides) -> tuple[list[Task], list[Unfilled]]:
    """The task documents converted and checked (documents that fail entirely are left out),
    and their entries still without a value (`Unfilled.task` holds the task's index)."""
    tasks: list[Task] = []
    unfilled: list[Unfilled] = []
    first_seen: dict[str, int] = {}
    for number, doc in enumerate(task_docs, 1):
        where = _where(doc.data, number)
        if doc.data is None:
            report.error(doc, where, "this document is empty; remove the extra '---' line")
            continue
        if not isinstance(doc.data, dict):
            report.error(doc, where, f"a task document must be a mapping of fields (like "
                         f"'name: trainer'), not {_kind(doc.data)}")
            continue
        prep = TaskPrep(doc, where, report, overrides)
        raw = prep.run()
        task, findings = convert(raw, Task)
        for f in findings:
            report.at(doc, where, f)
        if task is None:
            continue
        for field, var, path in prep.unfilled:
            line, col = doc.pos(path, key=True)
            unfilled.append(Unfilled(str(len(tasks)), field, var, line, col))
        for f in checks.check_task(task):
            if not _overlaps(f.path, findings):  # e.g. accelerators emptied by a removed entry
                report.at(doc, where, f)
        if task.name is None:
            if group_job and doc.data.get("name") is None:  # a bad name was reported already
                report.error(doc, where, "a task in a job group needs a name (tasks find each "
                             "other by name): add 'name: ...'")
        else:
            problems = checks.check_name(task.name, ("name",), "task name")
            host = f"{task.name}-{max(task.num_nodes, 1) - 1}"
            if limits.size(host) > limits.MAX_LABEL and not any(
                    f.severity == "error" for f in problems):
                problems = [Finding(("name",), f"task name '{task.name[:20]}...' is too long: "
                                    f"its node's hostname '{task.name[:20]}...-"
                                    f"{max(task.num_nodes, 1) - 1}' would have "
                                    f"{limits.size(host)} bytes, and a hostname has at most "
                                    f"{limits.MAX_LABEL}")]
            for f in problems:
                report.at(doc, where, f)
            if not any(f.severity == "error" for f in problems):
                if task.name in first_seen:
                    report.error(doc, where, f"duplicate task name '{task.name}' (also at line "
                                 f"{first_seen[task.name]}): names must be unique in a group",
                                 ("name",))
                else:
                    first_seen[task.name] = doc.pos(("name",))[0]
        tasks.append(task)
    return tasks, unfilled


def _group_name(header: Header, header_doc: yamlnodes.Document | None, name: str | None,
                report: Report, group_job: bool, tasks: list[Task],
                stem: str | None) -> str | None:
    if name is not None:
        for f in checks.check_name(name, (), "group name"):
            report.problems.append(Problem(report.label, None, None, "", "name",
                                           f"{f.message} (the name given in place of the "
                                           "spec's)", "warning" if f.severity == "warning"
                                           else "error"))
        return name
    if header_doc is not None and header.name is not None:
        for f in checks.check_name(header.name, ("name",), "group name"):
            report.at(header_doc, "header", f)
        return header.name
    if header_doc is not None and group_job and "name" not in header_doc.data:
        report.error(header_doc, "header", "a job group needs a name: add 'name: my-group' "
                     "to the header")
    if header_doc is None and len(tasks) == 1 and tasks[0].name:
        return tasks[0].name
    if stem:
        return names.hostname_suggestion(stem)
    return None


def load_file(source: str | os.PathLike[str], *, name: str | None = None,
              env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
              complete: bool = False) -> Loaded:
    """Load and validate a spec from a path or YAML text (see `sources.read` for which is which).

    `name` replaces the group's name (validated the same way). `env` and `secrets` are the
    launch-time values (`--env K=V`, `--secret K=V`; SkyPilot's env/secrets overrides): they
    apply to every task, fill entries the file leaves without a value and are substituted in
    paths. `complete`: an entry still without a value is an error (what `launch` needs), not a
    warning (what `validate` says). Raises SpecError listing every problem; warnings of a valid
    spec are in `Loaded.warnings`, entries still to be filled in `Loaded.unfilled`.
    """
    return _load(sources.read(source), name, Overrides(dict(env or {}), dict(secrets or {}),
                                                       complete))


def load_path(path: str | os.PathLike[str], *, name: str | None = None,
              env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
              complete: bool = False) -> Loaded:
    """`load_file` of a path, never YAML text (``"-"`` is stdin): what a CLI argument names."""
    return _load(sources.read(path, path=True), name,
                 Overrides(dict(env or {}), dict(secrets or {}), complete))


def _load(src: sources.Source, name: str | None, overrides: Overrides) -> Loaded:
    stem = None
    if src.path is not None:
        stem = os.path.splitext(os.path.basename(src.path))[0]
    group, warnings, unfilled, single = _parse(src.text, src.label, stem, name, overrides)
    base_dir = os.path.dirname(os.path.abspath(src.path)) if src.path is not None else os.getcwd()
    return Loaded(group, warnings, src.path, base_dir, unfilled, single)


def load(source: str | os.PathLike[str], *, name: str | None = None,
         env: dict[str, str] | None = None, secrets: dict[str, str] | None = None) -> JobGroup:
    """The normalized `JobGroup` of a spec file or YAML text; raises SpecError. See `load_file`."""
    return load_file(source, name=name, env=env, secrets=secrets).group
