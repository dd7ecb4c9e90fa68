"""Plain document data -> typed model, collecting every type error and unknown field.

msgspec stops at the first error. To report them all, `convert` records the error at its key
path, deletes the offending key from a working copy of the data and converts again, until the
data converts or `MAX_ROUNDS` errors were found. Messages are rewritten in the user's terms,
with a "did you mean" for unknown fields.
"""

from __future__ import annotations

import copy
import re
from typing import Any, TypeVar

import msgspec

from jobgroup.spec import durations, resources
from jobgroup.spec.models import (
    HEADER_KEYS, INTERNAL_TASK_KEYS, TASK_KEYS, Header, JobRecovery, Resources, Task,
)

T = TypeVar("T")
Path = tuple[str | int, ...]
MAX_ROUNDS = 50

# Which model a struct field holds, to know the allowed keys at a path.
_NESTED: dict[tuple[type, str], type] = {
    (Task, "resources"): Resources,
    (Resources, "any_of"): Resources,
    (Resources, "ordered"): Resources,
    (Resources, "job_recovery"): JobRecovery,
}
_WORDS = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
    "object": "a mapping", "array": "a list", "null": "null", "datetime": "a date/time",
    "date": "a date", "bytes": "binary data",
}
HINTS = {
    "cpus": resources.CPUS_FORMAT,
    "memory": resources.MEMORY_FORMAT,
    "accelerators": resources.ACCEL_FORMAT,
    "ports": resources.PORTS_FORMAT,
    "disk_size": "a size in GB (e.g. 256 or '1TB')",
    "termination_delay": f"{durations.FORMAT}; or a mapping of task name (or 'default') to one",
    "num_nodes": "a whole number of nodes, at least 1",
    "primary_tasks": "a list of task names, e.g. [trainer]",
    "envs": "a mapping of NAME: value",
    "secrets": "a mapping of NAME: value",
    "labels": "a mapping of key: string value",
    "run": "shell commands as a string (use 'run: |' for several lines)",
    "setup": "shell commands as a string (use 'setup: |' for several lines)",
    "name": "quote it if it looks like a number",
    "file_mounts": "a mapping of remote path: local path or storage spec",
    "volumes": "a mapping of mount path: volume name or spec",
    "inter_connection": "true or false",
    "use_spot": "true or false",
}
_UNKNOWN = re.compile(r"Object contains unknown field `(.*?)`(?: - at `(\$[^`]*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `(.*)`")
_AT = re.compile(r"^(.*?) - at (?:`key` in )?`(\$[^`]*)`$", re.S)
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")


class Finding(msgspec.Struct, frozen=True):
    """A problem at key `path` of a document; `on_key` when it is about the key itself."""

    path: Path
    message: str
    on_key: bool = False
    missing: bool = False  # "missing required field": noise after a deletion, never reported
    severity: str = "error"


def _parse_path(text: str) -> list[str | int | None] | None:
    """``$.a.b[0][...]`` -> ``["a", "b", 0, None]`` (None: some dict value); None if unknown."""
    out: list[str | int | None] = []
    pos = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return None
        if m.group(1) is not None:
            out.append(m.group(1))
        else:
            out.append(None if m.group(2) == "..." else int(m.group(2)))
        pos = m.end()
    return out


def _get(data: Any, path: Path) -> Any:
    for p in path:
        data = data[p]
    return data


def _model_at(root: type, path: Path) -> type | None:
    model = root
    for p in path:
        if isinstance(p, int):
            continue
        nxt = _NESTED.get((model, p))
        if nxt is None:
            return None
        model = nxt
    return model


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(types: str) -> str:
    names = [t.strip() for t in types.split("|") if t.strip() != "null"]
    if "int" in names and "float" in names:
        names.remove("int")
    words = [_WORDS.get(n, n) for n in names] or ["null"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def unknown_field_message(name: str, model: type | None) -> str:
    """"unknown field 'x'; did you mean 'y'?" (or where the field belongs, or what is allowed)."""
    if model is Header and name in TASK_KEYS:
        return (f"'{name}' is a task field, not a header field; put it in a task document "
                "(after a '---' line)")
    if model is Task and name in HEADER_KEYS - TASK_KEYS:
        return f"'{name}' is a header field; put it in the first document (the header)"
    allowed = sorted(getattr(model, "__struct_fields__", ()))
    if model is Task:
        allowed = [a for a in allowed if a not in INTERNAL_TASK_KEYS]
    import difflib  # only on this error path

    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown field '{name}'; did you mean '{close[0]}'?"
    return f"unknown field '{name}' (allowed: {', '.join(allowed)})" if allowed else \
        f"unknown field '{name}'"


def _type_message(detail: str, path: Path, work: Any) -> str:
    m = re.match(r"Expected `([^`]*)`, got `([^`]*)`", detail)
    field = next((p for p in reversed(path) if isinstance(p, str)), "")
    try:
        shown = f" ({_describe(_get(work, path))})"
    except (KeyError, IndexError, TypeError):
        shown = ""
    if path[:1] == ("secrets",):
        shown = ""  # a secret's value is never shown
    if m:
        got = _WORDS.get(m.group(2), m.group(2))
        message = f"expected {_expected(m.group(1))}, got {got}{shown}"
    elif detail.startswith("Invalid enum value"):
        message = f"invalid value{shown}"
    else:
        message = detail[0].lower() + detail[1:]
    hint = HINTS.get(field)
    return f"{message}: {hint}" if hint and field == path[-1] else message


def _find_dict_key(work: Any, typ: type, prefix: Path, rest: list[str | int | None],
                   detail: str) -> Path | None:
    """The key of the dict at `prefix` whose value causes `detail` (msgspec says `[...]`)."""
    target = _get(work, prefix)
    if not isinstance(target, dict):
        return None
    parent = _get(work, prefix[:-1]) if prefix else None
    for key in list(target):
        trial = {key: target[key]}
        if parent is None:
            return None
        saved = parent[prefix[-1]]
        parent[prefix[-1]] = trial
        try:
            msgspec.convert(work, typ, strict=True)
        except msgspec.ValidationError as e:
            if str(e).startswith(detail):
                return (*prefix, key)
        finally:
            parent[prefix[-1]] = saved
    return None


def _delete(work: Any, path: Path) -> bool:
    """Delete the dict key nearest to `path` (list items are never removed, so the positions of
    later items stay right). False when nothing can be deleted."""
    p = tuple(path)
    while p:
        parent = _get(work, p[:-1])
        if isinstance(parent, dict) and isinstance(p[-1], str) and p[-1] in parent:
            del parent[p[-1]]
            return True
        p = p[:-1]
    return False


def _locate(e: msgspec.ValidationError, work: Any, typ: type) -> Finding | None:
    text = str(e)
    m = _UNKNOWN.match(text)
    if m:
        at = _parse_path(m.group(2) or "$")
        if at is None or None in at:
            return None
        path = tuple(at)  # type: ignore[arg-type]
        return Finding((*path, m.group(1)), unknown_field_message(m.group(1), _model_at(typ, path)),
                       on_key=True)
    m = _AT.match(text)
    detail, at = (m.group(1), _parse_path(m.group(2))) if m else (text, [])
    if at is None:
        return None
    if None in at:
        i = at.index(None)
        found = _find_dict_key(work, typ, tuple(at[:i]), at[i + 1:], detail)  # type: ignore[arg-type]
        if found is None:
            return Finding(tuple(at[:i]), _type_message(detail, tuple(at[:i]), work))  # type: ignore[arg-type]
        at = [*found, *at[i + 1:]]
    path = tuple(at)  # type: ignore[arg-type]
    if "`key` in" in text:
        return Finding(path, "keys here must be strings")
    if _MISSING.match(detail):
        return Finding(path, detail[0].lower() + detail[1:], missing=True)
    return Finding(path, _type_message(detail, path, work))


def convert(data: dict[str, Any], typ: type[T]) -> tuple[T | None, list[Finding]]:
    """Convert `data` to `typ` strictly (no str->int coercion). Returns the model built from the
    valid part of the data (None when even that fails) and every problem found on the way."""
    work = copy.deepcopy(data)
    findings: list[Finding] = []
    reported: set[Path] = set()
    for _ in range(MAX_ROUNDS):
        try:
            return msgspec.convert(work, typ, strict=True), findings
        except msgspec.ValidationError as e:
            found = _locate(e, work, typ)
            if found is None:
                findings.append(Finding((), str(e)))
                return None, findings
            if not found.missing and found.path not in reported:
                findings.append(found)
                reported.add(found.path)
            if not _delete(work, found.path):
                return None, findings
    return None, findings
