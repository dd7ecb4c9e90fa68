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
the first task's name. `envs`/`secrets` values become strings: numbers as Python writes them
(``2`` -> "2", ``0.5`` -> "0.5"), booleans as YAML writes them ("true"/"false"); a null value is
an error. `resources.gpus` (SkyPilot's alias) becomes `resources.accelerators`.
"""

from __future__ import annotations

import copy
import datetime
import os
from typing import TYPE_CHECKING, Any

import msgspec

from jobgroup.spec import checks, names, sources, yamlnodes
from jobgroup.spec.convert import Finding, convert
from jobgroup.spec.errors import Problem, SpecError
from jobgroup.spec.models import HEADER_KEYS, TASK_KEYS, Header, JobGroup, Task

if TYPE_CHECKING:
    from pathlib import Path

HEADER_ONLY = HEADER_KEYS - TASK_KEYS
MAX_PROBLEMS = 100  # more would only scroll the first ones away


class Loaded:
    """A loaded spec: the group, the warnings, the file (None for text) and the folder against
    which relative `workdir`/`file_mounts` paths are resolved (the file's, or the cwd for text).

    `path` and `base_dir` are `pathlib.Path`s (given as str or PathLike, converted when read, so
    that `jobgroup validate` does not pay for importing pathlib).
    """

    __slots__ = ("group", "warnings", "_path", "_base_dir")

    def __init__(self, group: JobGroup, warnings: list[Problem],
                 path: str | os.PathLike[str] | None, base_dir: str | os.PathLike[str]):
        self.group = group
        self.warnings = warnings
        self._path = path
        self._base_dir = base_dir

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


def path_str(path: tuple[str | int, ...]) -> str:
    """``("resources", "any_of", 1, "cpus")`` -> ``"resources.any_of[1].cpus"``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _Report:
    def __init__(self, label: str):
        self.label = label
        self.problems: list[Problem] = []

    def at(self, doc: yamlnodes.Document | None, where: str, f: Finding) -> None:
        line, col = doc.pos(f.path, key=f.on_key) if doc is not None else (None, None)
        self.problems.append(Problem(self.label, line, col, where, path_str(f.path), f.message,
                                     "warning" if f.severity == "warning" else "error"))

    def issue(self, where: str, issue: yamlnodes.Issue) -> None:
        line, col = issue.pos or (None, None)
        self.problems.append(Problem(self.label, line, col, where, path_str(issue.path),
                                     issue.message))

    def error(self, doc: yamlnodes.Document | None, where: str, message: str,
              path: tuple[str | int, ...] = (), on_key: bool = False) -> None:
        self.at(doc, where, Finding(path, message, on_key=on_key))

    def raise_if_errors(self) -> list[Problem]:
        ordered = sorted(self.problems, key=lambda p: (p.line or 0, p.col or 0))
        if len(ordered) > MAX_PROBLEMS:
            more = len(ordered) - MAX_PROBLEMS
            ordered = ordered[:MAX_PROBLEMS] + [Problem(
                self.label, None, None, "", "", f"... and {more} more problems not shown",
                "error" if any(p.severity == "error" for p in ordered[MAX_PROBLEMS:])
                else "warning")]
        if any(p.severity == "error" for p in ordered):
            raise SpecError(ordered)
        return ordered


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _is_header(doc: yamlnodes.Document, count: int) -> bool:
    if not isinstance(doc.data, dict):
        return False
    keys = set(doc.data)
    return bool(keys & HEADER_ONLY) or (count > 1 and keys <= {"name"})


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def _copy_marks(doc: yamlnodes.Document, old: tuple, new: tuple) -> None:
    for table in (doc.keys, doc.values):
        for path in [p for p in table if p[:len(old)] == old]:
            table[new + path[len(old):]] = table[path]


def _prepare_resources(res: Any, path: tuple, doc: yamlnodes.Document, report: _Report,
                       where: str) -> None:
    if not isinstance(res, dict):
        return
    if "gpus" in res:
        if "accelerators" in res:
            report.error(doc, where, "give either gpus or accelerators (gpus is SkyPilot's other "
                         "name for accelerators), not both", (*path, "gpus"), on_key=True)
            del res["gpus"]
        else:
            res["accelerators"] = res.pop("gpus")
            _copy_marks(doc, (*path, "gpus"), (*path, "accelerators"))
    for key in ("any_of", "ordered"):
        if isinstance(res.get(key), list):
            for i, alt in enumerate(res[key]):
                _prepare_resources(alt, (*path, key, i), doc, report, where)


def _prepare_task(doc: yamlnodes.Document, where: str, report: _Report) -> dict[str, Any]:
    raw = copy.deepcopy(doc.data)
    if "service" in raw:
        report.error(doc, where, "SkyServe services are not supported by jobgroup; run the "
                     "server as a task of a job group instead", ("service",), on_key=True)
        del raw["service"]
    _prepare_resources(raw.get("resources"), ("resources",), doc, report, where)
    for field in ("envs", "secrets"):
        mapping = raw.get(field)
        if not isinstance(mapping, dict):
            continue
        for key in list(mapping):
            if mapping[key] is None:
                report.error(doc, where, f"'{key}' has no value; write '' for an empty one",
                             (field, key))
                del mapping[key]
            else:
                mapping[key] = _env_value(mapping[key])
    return raw


def _overlaps(path: tuple, findings: list[Finding]) -> bool:
    """Whether `path` is inside, or contains, a path that already has a problem."""
    n = len(path)
    return any(f.path[:n] == path or path[:len(f.path)] == f.path for f in findings)


def _where(raw: Any, number: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(name, str) and name and names.name_problem(name) is None:
        return f"task '{name}'"
    return f"task #{number}"


def _header(doc: yamlnodes.Document, report: _Report) -> Header:
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
          name: str | None = None) -> tuple[JobGroup, list[Problem]]:
    """Parse spec `text` (named `label` in messages; `stem` names the group by default).
    Returns the group and its warnings; raises SpecError with every error (and warning)."""
    report = _Report(label)
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

    tasks = _tasks(task_docs, report, group_job)
    task_names = [t.name for t in tasks if t.name]
    docs_of = {id(t): d for t, d in zip(tasks, [d for d in task_docs if isinstance(d.data, dict)])}
    for t, f in checks.check_dependencies(tasks, group_job):
        report.at(docs_of.get(id(t)), _where({"name": t.name}, 0), f)
    if header_doc is not None:
        for f in checks.check_header(header, task_names, group_job):
            report.at(header_doc, "header", f)
    group_name = _group_name(header, header_doc, name, report, group_job, tasks, stem)
    warnings = report.raise_if_errors()
    tasks = _default_names(tasks)
    group = JobGroup(
        name=group_name or tasks[0].name or "jobgroup",
        tasks=tasks,
        execution="parallel" if parallel else "serial",
        placement=header.placement or "SAME_INFRA",
        primary_tasks=list(header.primary_tasks or []),
        termination_delay=header.termination_delay,
        inter_connection=True if header.inter_connection is None else header.inter_connection,
        max_group_restarts=header.max_group_restarts or 0,
    )
    return group, warnings


def _tasks(task_docs: list[yamlnodes.Document], report: _Report, group_job: bool) -> list[Task]:
    """The task documents converted and checked (documents that fail entirely are left out)."""
    tasks: list[Task] = []
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
        raw = _prepare_task(doc, where, report)
        task, findings = convert(raw, Task)
        for f in findings:
            report.at(doc, where, f)
        if task is None:
            continue
        for f in checks.check_task(task):
            if not _overlaps(f.path, findings):  # e.g. accelerators emptied by a removed entry
                report.at(doc, where, f)
        if task.name is None:
            if group_job and doc.data.get("name") is None:  # a bad name was reported already
                report.error(doc, where, "a task in a job group needs a name (tasks find each "
                             "other by name): add 'name: ...'")
        else:
            problems = checks.check_name(task.name, ("name",), "task name")
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
    return tasks


def _group_name(header: Header, header_doc: yamlnodes.Document | None, name: str | None,
                report: _Report, group_job: bool, tasks: list[Task],
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


def load_file(source: str | os.PathLike[str], *, name: str | None = None) -> Loaded:
    """Load and validate a spec from a path or YAML text (see `sources.read` for which is which).

    `name` replaces the group's name (validated the same way). Raises SpecError listing every
    problem; warnings of a valid spec are in `Loaded.warnings`.
    """
    return _load(sources.read(source), name)


def load_path(path: str | os.PathLike[str], *, name: str | None = None) -> Loaded:
    """`load_file` of a path, never YAML text (``"-"`` is stdin): what a CLI argument names."""
    return _load(sources.read(path, path=True), name)


def _load(src: sources.Source, name: str | None) -> Loaded:
    stem = None
    if src.path is not None:
        stem = os.path.splitext(os.path.basename(src.path))[0]
    group, warnings = parse(src.text, label=src.label, stem=stem, name=name)
    base_dir = os.path.dirname(os.path.abspath(src.path)) if src.path is not None else os.getcwd()
    return Loaded(group, warnings, src.path, base_dir)


def load(source: str | os.PathLike[str], *, name: str | None = None) -> JobGroup:
    """The normalized `JobGroup` of a spec file or YAML text; raises SpecError. See `load_file`."""
    return load_file(source, name=name).group
