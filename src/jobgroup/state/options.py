"""A job's stored options in three typed parts, each with one owner.

- `LaunchOptions`: what the launch asked for (`submit.prepare` builds it from the typed
  `LaunchRequest`); written once, when the job is recorded, never changed.
- `ControllerFields`: what the controller decided for the job (its resource placement, the
  pipeline step that placement is for, whether a self-scheduling backend admitted it); written
  only by the controller (`Store.update_controller`).
- backend facts: what a backend asked to record about the job (`Admission.facts`: Slurm's job
  id and node lists, the Kubernetes namespace and creation time, ...); a plain mapping the
  backend owns (`Store.record_facts`), never a launch or controller field.

They are stored side by side in the job's one `options` JSON object (so a state directory
written before this split reads unchanged) and each is decoded by its own type: a field of the
wrong type fails loudly at the read instead of deep in a backend. `JobContext.launch` and
`JobContext.facts` hand backends the typed launch options and their own facts;
`JobContext.options` remains the flat mapping of both for code that reads one key.
"""

from __future__ import annotations

from typing import Any, Mapping

import msgspec


class LaunchOptions(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The launch's own options (see `launchflags` for the flags they come from)."""

    env: dict[str, str] = msgspec.field(default_factory=dict)  # --env, applied to every task
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    infra: str = "local"  # the backend kind the group runs on
    log_max: int = 0  # the launcher's JOBGROUP_LOG_MAX (0: no cap)
    base_env: dict[str, str] | None = None  # what nodes inherit; None: decided at start
    gpus_any: bool = False
    cpu_only: bool = False
    best_effort: bool = False
    no_egress: bool = False
    # where on the backend (`registry.Target`): what follows its name in the infra value
    # (Kubernetes: the kubeconfig context), and the launcher's KUBECONFIG as absolute paths
    # ("": ~/.kube/config; None: not a Kubernetes launch)
    zone: str | None = None
    kubeconfig: str | None = None


class ControllerFields(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What the controller decided for the job."""

    placement: dict[str, Any] | None = None  # resources.admission.Placement as JSON
    placement_step: int = 0  # the pipeline step `placement` is for
    admitted: bool = False  # a self-scheduling backend said "ready"


LAUNCH_KEYS = frozenset(LaunchOptions.__struct_fields__)
CONTROLLER_KEYS = frozenset(ControllerFields.__struct_fields__)


def launch_of(options: Mapping[str, Any]) -> LaunchOptions:
    """The launch part of a job's stored options."""
    return msgspec.convert({k: v for k, v in options.items() if k in LAUNCH_KEYS},
                           LaunchOptions, strict=False)


def controller_of(options: Mapping[str, Any]) -> ControllerFields:
    """The controller's part of a job's stored options."""
    return msgspec.convert({k: v for k, v in options.items() if k in CONTROLLER_KEYS},
                           ControllerFields)


def facts_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The backend's facts among a job's stored options (everything that is neither a launch
    nor a controller field)."""
    return {k: v for k, v in options.items() if k not in LAUNCH_KEYS | CONTROLLER_KEYS}


def stored(launch: LaunchOptions) -> dict[str, Any]:
    """The JSON object a new job's options start as (its launch part, every field written so
    that the record says what was in force)."""
    return {f: getattr(launch, f) for f in LaunchOptions.__struct_fields__}
