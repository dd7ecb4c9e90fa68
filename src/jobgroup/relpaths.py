"""Relative local paths of a spec, resolved as SkyPilot resolves them.

SkyPilot makes `workdir` and `file_mounts` sources absolute with `os.path.abspath`: against the
directory `sky launch` runs in, not the YAML's folder. Its own job-group examples rely on it
(`sky jobs launch llm/rl-post-training-jobgroup/x.yaml` from the repository's root, with
`/code: llm/rl-post-training-jobgroup/code`). jobgroup does the same; a path that does not exist
there but does next to the YAML (how jobgroup resolved them before, and how a file written for
`cd folder && sky launch x.yaml` reads) is taken from there, and launch says so once.

`resolve(group, cwd, yaml_dir)` returns the group with those paths made absolute (so the stored
spec no longer depends on any directory) and the notes to show. Pure but for `os.path.exists`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec

from jobgroup.spec.models import JobGroup, Task

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def _is_local_relative(value: object) -> bool:
    return (isinstance(value, str) and bool(value) and not _URL.match(value)
            and not os.path.isabs(os.path.expanduser(value)))


class _Resolver:
    def __init__(self, cwd: str, yaml_dir: str | None) -> None:
        self.cwd, self.yaml_dir = cwd, yaml_dir
        self.from_yaml: list[str] = []

    def __call__(self, value: str) -> str:
        here = os.path.normpath(os.path.join(self.cwd, os.path.expanduser(value)))
        if os.path.exists(here) or not self.yaml_dir:
            return here
        there = os.path.normpath(os.path.join(self.yaml_dir, os.path.expanduser(value)))
        if os.path.exists(there):
            self.from_yaml.append(value)
            return there
        return here  # missing either way: launch's checks name this path


def _task(t: Task, fix: _Resolver) -> Task:
    changes: dict[str, Any] = {}
    if _is_local_relative(t.workdir):
        changes["workdir"] = fix(t.workdir)  # type: ignore[arg-type]
    mounts: dict[str, Any] = {}
    changed = False
    for dst, src in t.file_mounts.items():
        if _is_local_relative(src):
            mounts[dst] = fix(src)  # type: ignore[arg-type]
            changed = True
        elif isinstance(src, dict) and _is_local_relative(src.get("source")):
            mounts[dst] = {**src, "source": fix(src["source"])}
            changed = True
        else:
            mounts[dst] = src
    if changed:
        changes["file_mounts"] = mounts
    return msgspec.structs.replace(t, **changes) if changes else t


def resolve(group: JobGroup, cwd: str, yaml_dir: str | None) -> tuple[JobGroup, list[str]]:
    """`group` with its relative `workdir` and `file_mounts` sources made absolute against
    `cwd` (else `yaml_dir`, where only that one has the path), and the notes to say once."""
    fix = _Resolver(cwd, yaml_dir)
    tasks = [_task(t, fix) for t in group.tasks]
    notes = []
    if fix.from_yaml:
        shown = ", ".join(sorted(set(fix.from_yaml)))
        notes.append(f"note: {shown}: not found in the current directory ({cwd}); using the "
                     f"YAML's folder ({yaml_dir}). SkyPilot resolves relative paths against the "
                     "current directory: run from the folder your paths are relative to.")
    return msgspec.structs.replace(group, tasks=tasks), notes
