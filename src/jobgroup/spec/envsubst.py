"""`$VAR` / `${VAR}` in paths, filled from the task's envs and secrets, where SkyPilot fills them.

SkyPilot (`sky/task.py`, `_fill_in_env_vars`) substitutes the task's `envs` and `secrets` (after
launch-time `--env`/`--secret` overrides) into `file_mounts` (keys and values, storage `name`
and `source` included), `workdir` and `volumes`; not into `run`/`setup` (the shell does that).
The variable pattern is SkyPilot's. Unlike SkyPilot, which leaves an unknown `$VAR` in place
(and the path then names a folder called `$VAR`), a variable that is neither set nor declared
is an error here; one declared without a value (``BUCKET:``, to be given at launch) is left in
place and reported by the caller.
"""

from __future__ import annotations

import re
from typing import Any

# SkyPilot's pattern: $NAME or ${NAME}, NAME a shell variable name.
VARIABLE = re.compile(r"\$\{?\b([a-zA-Z_][a-zA-Z0-9_]*)\b\}?")
FIELDS = ("file_mounts", "workdir", "volumes")

Path = tuple[str | int, ...]


class Result:
    """What a substitution did: the new value, where each key moved to, unset variables."""

    __slots__ = ("value", "moved", "unset", "pending", "collisions")

    def __init__(self) -> None:
        self.value: Any = None
        self.moved: list[tuple[Path, Path]] = []  # (old key path, new key path)
        self.unset: list[tuple[Path, str, bool]] = []  # (path, variable, on_key): errors
        self.pending: list[tuple[Path, str, bool]] = []  # declared, value given at launch
        self.collisions: list[tuple[Path, str]] = []  # (key path, the key it became)


def substitute(value: Any, path: Path, variables: dict[str, str], pending: set[str]) -> Result:
    """`value` (found at `path`) with every `$VAR`/`${VAR}` of `variables` filled in, at any
    depth (mapping keys too). Variables in `pending` are left as they are; others are unset."""
    out = Result()
    out.value = _walk(value, path, variables, pending, out)
    return out


def _text(text: str, path: Path, on_key: bool, variables: dict[str, str], pending: set[str],
          out: Result) -> str:
    if "$" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in variables:
            return variables[name]
        (out.pending if name in pending else out.unset).append((path, name, on_key))
        return m.group(0)

    return VARIABLE.sub(one, text)


def _walk(value: Any, path: Path, variables: dict[str, str], pending: set[str],
          out: Result) -> Any:
    if isinstance(value, str):
        return _text(value, path, False, variables, pending, out)
    if isinstance(value, list):
        return [_walk(v, (*path, i), variables, pending, out) for i, v in enumerate(value)]
    if isinstance(value, dict):
        new: dict[Any, Any] = {}
        for k, v in value.items():
            nk = _text(k, (*path, k), True, variables, pending, out) if isinstance(k, str) else k
            if nk != k:
                out.moved.append(((*path, k), (*path, nk)))
            if nk in new:  # two keys that became one: keep the first, as YAML duplicates do
                out.collisions.append(((*path, k), nk))
                continue
            new[nk] = _walk(v, (*path, k), variables, pending, out)
        return new
    return value
