"""JobGroup -> YAML (a header document, then one document per task) and -> plain data.

`dump` writes what `load` reads back to an equal JobGroup: the header always carries `name` and
`execution`; other fields are written only when they differ from their defaults. Multi-line
strings (`run`, `setup`) are written as literal blocks (``run: |``) so the YAML stays readable.
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


def task_data(task: Task) -> dict[str, Any]:
    """One task document: fields that differ from their defaults, in model order."""
    out = msgspec.to_builtins(task, enc_hook=_enc)
    if isinstance(out, dict) and out.get("resources") == {}:
        del out["resources"]
    return out


def dump(group: JobGroup) -> str:
    """Multi-document YAML of `group` that `load` reads back to an equal JobGroup.
    Raises TypeError for values that YAML cannot hold (use `check` to validate the group)."""
    docs = [header_data(group)] + [task_data(t) for t in group.tasks]
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, explicit_start=True,
                         allow_unicode=True, default_flow_style=False, width=100)


def to_data(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a model with every field, defaults included: the
    normalized form printed by `jobgroup validate --json`."""
    if isinstance(obj, msgspec.Struct):
        return {f: to_data(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    return obj
