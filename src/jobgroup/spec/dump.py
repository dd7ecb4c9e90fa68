"""JobGroup -> YAML (a header document, then one document per task) and -> plain data.

`dump` writes what `load` reads back to an equal JobGroup: the header always carries `name` and
`execution`; other fields are written only when they differ from their defaults; entries still
to be given at launch (`Task.unfilled_envs`/`unfilled_secrets`) are written as SkyPilot writes
them, as entries without a value. Multi-line strings (`run`, `setup`) are written as literal
blocks (``run: |``) so the YAML stays readable.

Secrets: `dump` writes their values (it is what a job's record keeps, in the private state
directory); what is printed for people (`to_data`, `dump(..., redact=True)`) shows
`REDACTED` instead of a secret's value, wherever the value appears in the task (a secret
substituted into a path too).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import yaml

from jobgroup.spec.models import JobGroup, Task

_Base: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):  # type: ignore[misc, valid-type]
    """Safe dumper that writes multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.rstrip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _enc(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} ({obj!r}) in a spec")


def header_data(group: JobGroup) -> dict[str, Any]:
    """The header document of `group` (name, execution, and non-default header fields)."""
    out: dict[str, Any] = {"name": group.name, "execution": group.execution}
    if group.placement != "SAME_INFRA":
        out["placement"] = group.placement
    if group.primary_tasks:
        out["primary_tasks"] = list(group.primary_tasks)
    if group.termination_delay is not None:
        out["termination_delay"] = group.termination_delay
    if group.inter_connection is not True:
        out["inter_connection"] = group.inter_connection
    if group.max_group_restarts:
        out["max_group_restarts"] = group.max_group_restarts
    return msgspec.to_builtins(out, enc_hook=_enc)


REDACTED = "<redacted>"
_MIN_REDACT = 3  # shorter secret values are not searched for inside other strings


def task_data(task: Task, *, redact: bool = False) -> dict[str, Any]:
    """One task document: fields that differ from their defaults, in model order (`redact`:
    secret values replaced, see the module doc)."""
    out = msgspec.to_builtins(task, enc_hook=_enc)
    if not isinstance(out, dict):  # pragma: no cover - a Task is always a mapping
        return out
    if out.get("resources") == {}:
        del out["resources"]
    for field in ("envs", "secrets"):
        names = out.pop(f"unfilled_{field}", None)
        if names:
            out[field] = {**out.get(field, {}), **dict.fromkeys(names)}
    return redact_secrets(out, task.secrets) if redact else out


def redact_secrets(data: Any, secrets: dict[str, str]) -> Any:
    """`data` (a task's plain data) with every secret value replaced by REDACTED: the values of
    its `secrets` mapping, and the values where they appear inside other strings."""
    values = sorted({v for v in secrets.values() if len(v) >= _MIN_REDACT}, key=len,
                    reverse=True)

    def walk(obj: Any, in_secrets: bool) -> Any:
        if isinstance(obj, dict):
            return {walk(k, False): (REDACTED if in_secrets and isinstance(v, str)
                                     else walk(v, False)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, False) for v in obj]
        if isinstance(obj, str):
            for v in values:
                obj = obj.replace(v, REDACTED)
        return obj

    if not isinstance(data, dict):
        return walk(data, False)
    return {k: walk(v, k == "secrets") for k, v in data.items()}


def dump(group: JobGroup, *, redact: bool = False) -> str:
    """Multi-document YAML of `group` that `load` reads back to an equal JobGroup (with
    `redact`, for printing: secret values replaced, so it no longer loads back equal).
    Raises TypeError for values that YAML cannot hold (use `check` to validate the group)."""
    docs = [header_data(group)] + [task_data(t, redact=redact) for t in group.tasks]
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True,
                         allow_unicode=True, default_flow_style=False, width=100)


def to_data(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a model with every field, defaults included: the
    normalized form printed by `jobgroup validate --json`. Secret values are REDACTED."""
    if isinstance(obj, Task):
        return redact_secrets({f: to_data_raw(getattr(obj, f)) for f in obj.__struct_fields__},
                              obj.secrets)
    if isinstance(obj, msgspec.Struct):
        return {f: to_data(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    return obj


def to_data_raw(obj: Any) -> Any:
    """`to_data` without redaction (for the parts of a Task, redacted as a whole)."""
    if isinstance(obj, msgspec.Struct):
        return {f: to_data_raw(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: to_data_raw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data_raw(v) for v in obj]
    return obj
