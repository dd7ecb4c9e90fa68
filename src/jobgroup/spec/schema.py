"""JSON Schema (draft-07) of spec documents, for editors (e.g. yaml-language-server, which
applies it to every document of a multi-document file: each one is a header or a task).

Derived from the models, then adjusted to what the loader accepts beyond the models' types:
env values may be numbers, booleans or null (given at launch), `secrets` may be SkyPilot's list
of managed references, `managed_secrets` is accepted, `resources.gpus` is an alias of
`accelerators`; fields jobgroup ignores say so; names, durations, cpus/memory carry patterns
and `num_nodes` a minimum. The schema helps an editor; `jobgroup validate` remains the authority.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from jobgroup.spec import compat
from jobgroup.spec.models import INTERNAL_TASK_KEYS, Header, Task

_NAME = {"type": "string", "pattern": r"^[\w-]+$", "minLength": 1}
_DURATION = {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*[smhdwSMHDW]?\s*$"}
_QUANTITY = r"^\s*(\d+(\.\d*)?|\.\d+)\s*%s\s*\+?\s*$"
_SCALAR = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Header": {
        "name": "Name of the job group (required for a job group). Hostnames are "
                "{task}-{rank}.{name}.",
        "execution": "'parallel': a job group, every task runs at once. 'serial' (or absent): "
                     "a pipeline.",
        "placement": "Where the tasks run relative to each other; only SAME_INFRA.",
        "primary_tasks": "Tasks whose end ends the group; the others (auxiliaries) are stopped "
                         "after termination_delay. Empty or absent: every task is primary.",
        "termination_delay": "How long auxiliaries keep running after the primaries finish: "
                             "30s, 5m, 1h, 1d, 2w or seconds; or {task: delay, default: delay}.",
        "inter_connection": "Whether tasks can reach each other by hostname (default true).",
    },
    "Task": {
        "name": "Task name; unique in the group; nodes are {name}-{rank}.{group}.",
        "workdir": "Local folder synced to each node and used as the working directory.",
        "num_nodes": "Number of identical nodes (default 1).",
        "resources": "What ONE node needs.",
        "envs": "Environment variables (numbers and booleans become strings; no value: give it "
                "at launch with --env NAME=VALUE).",
        "secrets": "Environment variables whose values are hidden in output (no value: give it "
                   "at launch with --secret NAME=VALUE).",
        "file_mounts": "Remote path -> local path or storage spec.",
        "volumes": "Mount path -> volume name or spec (e.g. shared checkpoints).",
        "setup": "Shell commands run once on each node before run.",
        "run": "Shell commands run on each node.",
        "config": "Advanced per-task configuration overrides.",
        "event_callback": "Shell command run on job events.",
    },
    "Resources": {
        "infra": "Where to run: local, kubernetes, slurm, aws/us-east-1, ...",
        "accelerators": "A100, A100:2, {A100: 2}, or alternatives [A100:1, V100:2].",
        "gpus": "Same as accelerators.",
        "cpus": "vCPUs per node: 4, 0.5, or 4+ (at least 4).",
        "memory": "GB per node: 32, 32+, 32GB, 512MB+.",
        "ports": "Ports to expose: 8080, '8000-8010', or a list.",
        "any_of": "Alternatives, any of which will do.",
        "ordered": "Alternatives, in order of preference.",
    },
}


def _describe(defs: dict[str, Any]) -> None:
    for model, fields in DESCRIPTIONS.items():
        props = defs[model]["properties"]
        for field, text in fields.items():
            if field in props:
                props[field]["description"] = text
    for model, ignored in (("Task", compat.IGNORED_TASK), ("Resources", compat.IGNORED_RESOURCES)):
        props = defs[model]["properties"]
        for field, why in ignored.items():
            if field in props:
                props[field]["description"] = f"SkyPilot's; ignored by jobgroup: {why}."


def json_schema() -> dict[str, Any]:
    """The schema: any document is a header or a task (see the module doc)."""
    refs, defs = msgspec.json.schema_components((Header, Task),
                                                ref_template="#/definitions/{name}")
    header, task, res = defs["Header"]["properties"], defs["Task"]["properties"], \
        defs["Resources"]["properties"]
    header["name"] = {"anyOf": [_NAME, {"type": "null"}]}
    header["placement"] = {"enum": ["SAME_INFRA", None]}
    header["primary_tasks"] = {"anyOf": [{"type": "array", "items": _NAME}, {"type": "null"}]}
    delay = [_DURATION, {"type": "number", "minimum": 0}]
    header["termination_delay"] = {"anyOf": [
        *delay, {"type": "object", "additionalProperties": {"anyOf": delay}}, {"type": "null"}]}
    for key in INTERNAL_TASK_KEYS:
        task.pop(key, None)
    task["name"] = {"anyOf": [_NAME, {"type": "null"}]}
    task["num_nodes"] = {"type": "integer", "minimum": 1, "default": 1}
    for field in ("envs", "secrets"):
        task[field] = {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                       "additionalProperties": {"anyOf": _SCALAR}}
    task["secrets"]["propertyNames"] = {"pattern": r"^(secrets:)?[A-Za-z_][A-Za-z0-9_.]*$"}
    task["secrets"] = {"anyOf": [task["secrets"], {"type": "array", "items": {
        "type": "string", "pattern": "^secrets:"}}]}
    task[compat.MANAGED_SECRETS] = {
        "type": "array", "description": "SkyPilot's managed secrets: given at launch here "
                                        "(--secret NAME=VALUE).",
        "items": {"anyOf": [{"type": "string"}, {"type": "object", "maxProperties": 1}]}}
    res["cpus"] = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                             {"type": "string", "pattern": _QUANTITY % ""}, {"type": "null"}]}
    res["memory"] = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                               {"type": "string", "pattern": _QUANTITY % "([kKmMgGtTpP][bBiI]?|[bB])?"},
                               {"type": "null"}]}
    res["gpus"] = copy.deepcopy(res["accelerators"])
    _describe(defs)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "jobgroup spec document",
        "description": "One document of a job-group file: the header (first document, with "
                       "execution: parallel) or a task.",
        "anyOf": refs,
        "definitions": defs,
    }
