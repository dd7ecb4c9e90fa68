"""Job-group specs: SkyPilot's job-group YAML -> a typed, normalized `JobGroup` (pure: no I/O
beyond reading the spec file).

    load(path_or_text, *, name=None) -> JobGroup     parse + validate; raises SpecError
    load_file(path_or_text, *, name=None, env=None, secrets=None, complete=False) -> Loaded
                                                     the same, with warnings, path, base_dir and
                                                     the entries still to be given at launch
    check(group) -> JobGroup                         validate a JobGroup built in code
    dump(group) -> str                               YAML that `load` reads back to an equal group

Every problem is reported at once as ``FILE:LINE:COL: WHERE KEY.PATH: MESSAGE`` (see
`jobgroup.spec.errors`). Parsed values: `spec.resources` (cpus, memory, accelerators, ports),
`spec.durations` (termination_delay), `spec.names` (name rules). JSON Schema: `spec.schema`.
"""

from __future__ import annotations

from jobgroup.spec.dump import dump
from jobgroup.spec.errors import Problem, SpecError
from jobgroup.spec.loader import Loaded, load, load_file, parse
from jobgroup.spec.models import JobGroup, JobRecovery, Resources, Task
from jobgroup.spec.prepare import Overrides, Unfilled

CODE_LABEL = "<JobGroup>"

__all__ = [
    "JobGroup", "JobRecovery", "Loaded", "Overrides", "Problem", "Resources", "SpecError", "Task",
    "Unfilled", "check", "dump", "load", "load_file",
]


def check(group: JobGroup) -> JobGroup:
    """Validate a JobGroup built in code with the very same checks as a file (it is written as
    YAML and loaded back) and return the normalized group (default names filled in).

    Raises SpecError; its problems name ``<JobGroup>``, the document and the key path, without
    line numbers (they would point into YAML the caller never saw).
    """
    if not isinstance(group, JobGroup):
        raise TypeError(f"check() takes a JobGroup, not {type(group).__name__}")
    try:
        text = dump(group)
    except (TypeError, ValueError) as e:
        raise SpecError([Problem(CODE_LABEL, None, None, "", "", str(e))]) from None
    try:
        return parse(text, label=CODE_LABEL, name=None)[0]
    except SpecError as e:
        raise SpecError([Problem(p.file, None, None, p.where, p.path, p.message, p.severity)
                         for p in e.problems]) from None
