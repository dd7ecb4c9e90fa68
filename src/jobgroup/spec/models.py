"""Typed models of a job-group spec (SkyPilot's job-group YAML, parsed strictly).

The models are msgspec Structs rather than pydantic models: on these 2-core machines importing
pydantic and building a dozen models costs ~250 ms, which alone exceeds the 150 ms budget of
`jobgroup validate` and of `launch` -> every node started. msgspec gives the same things we need
from pydantic (typed fields, unknown keys rejected, JSON Schema, fast conversion) in ~10 ms.

Contract:
- Field names are SkyPilot's, so a document converts 1:1 (`forbid_unknown_fields`).
- Values keep the user's form where SkyPilot accepts several (`cpus: 4+`, `accelerators: A100:2`),
  so a spec round-trips to YAML unchanged; the parsed forms come from `spec.resources`
  (`parse_cpus`, `parse_memory`, `parse_accelerators`) and `spec.durations`.
- `envs`/`secrets` values are strings after loading (numbers/bools are stringified by the loader).
  An entry the file leaves without a value (``HF_TOKEN:``, SkyPilot's "give it at launch") is not
  in `envs`/`secrets` but named in `unfilled_envs`/`unfilled_secrets` (`dump` writes it back as
  a null entry), so consumers of `envs`/`secrets` only ever see strings.
- Fields of SkyPilot's task schema that jobgroup does not act on (`service`, `pool`, `inputs`,
  `outputs`, `api_server_access`, `volume_mounts`, `config`, `event_callback`, and a few
  `resources` fields) are accepted and kept; the loader warns once about each
  (`jobgroup.spec.compat`).
- A `JobGroup` built in code is validated by `jobgroup.spec.check(group)`, which runs the very same
  checks as loading a file (it round-trips through YAML), so there is one validator.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

Scalar = Union[str, int, float, bool, None]
Number = Union[int, float]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base: unknown keys are errors; defaults are omitted when dumping (clean round-trips)."""


class JobRecovery(_Strict):
    """`resources.job_recovery`: how a failed or preempted node is recovered."""

    strategy: str | None = None
    max_restarts_on_errors: int = 0
    recover_on_exit_codes: list[int] | int | None = None


class Resources(_Strict):
    """`resources` of a task: what ONE node needs (times `num_nodes` for the task)."""

    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    accelerators: str | dict[str, Number | None] | list[str] | None = None
    accelerator_args: dict[str, Any] | None = None
    cpus: str | Number | None = None
    memory: str | Number | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    disk_size: str | int | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    ports: int | str | list[int | str] | None = None
    image_id: str | dict[str, str] | None = None
    labels: dict[str, str] | None = None
    any_of: list[Resources] | None = None
    ordered: list[Resources] | None = None
    job_recovery: JobRecovery | str | None = None
    autostop: bool | int | str | dict[str, Any] | None = None
    max_hourly_cost: Number | None = None
    # SkyPilot fields jobgroup accepts and ignores (with a warning):
    priority: int | None = None
    priority_class: str | None = None
    local_disk: str | None = None
    ephemeral_storage: str | int | None = None
    volumes: list[dict[str, Any]] | None = None


class HttpProbe(_Strict):
    """GET http://<node address>:<port><path>; passes on `status` (any 2xx/3xx when unset)."""

    port: int
    path: str = "/"
    status: int | None = None


class TcpProbe(_Strict):
    """A TCP connection to <node address>:<port> succeeds."""

    port: int


class ReadinessProbe(_Strict):
    """jobgroup extension: when is a node of this task ready? Exactly one of http, tcp,
    command (a shell command run inside the node; exit 0 = ready). Probing starts after
    `initial_delay`, repeats every `interval`, each attempt limited to `timeout`; after
    `failure_threshold` failed attempts in a row the node never became ready and the group fails.
    Durations as in termination_delay (`2s`, `1m`, or seconds)."""

    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    command: str | None = None
    initial_delay: str | Number = 0
    interval: str | Number = 1
    timeout: str | Number = 1
    failure_threshold: int = 60


DependsOn = Literal["started", "ready", "completed"]


class Task(_Strict):
    """One task document: `num_nodes` identical nodes running `setup` then `run`."""

    name: str | None = None
    workdir: str | dict[str, Any] | None = None
    num_nodes: int = 1
    resources: Resources = msgspec.field(default_factory=Resources)
    envs: dict[str, str] = msgspec.field(default_factory=dict)
    secrets: dict[str, str] = msgspec.field(default_factory=dict)
    file_mounts: dict[str, str | dict[str, Any]] = msgspec.field(default_factory=dict)
    volumes: dict[str, str | dict[str, Any]] = msgspec.field(default_factory=dict)
    setup: str | None = None
    run: str | None = None
    config: dict[str, Any] | None = None
    event_callback: str | None = None
    service: dict[str, Any] | None = None
    # More of SkyPilot's task schema, accepted and ignored (with a warning):
    pool: dict[str, Any] | None = None
    inputs: dict[str, Number] | None = None
    outputs: dict[str, Number] | None = None
    api_server_access: bool | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    # Names of `envs`/`secrets` entries given without a value in the file, to be given at launch
    # (`--env NAME=...`, `--secret NAME=...`); not YAML keys (see the module doc).
    unfilled_envs: list[str] = msgspec.field(default_factory=list)
    unfilled_secrets: list[str] = msgspec.field(default_factory=list)
    # jobgroup extensions (plain SkyPilot YAML stays valid without them):
    readiness_probe: ReadinessProbe | None = None
    depends_on: list[str] | dict[str, DependsOn] | None = None

    def dependencies(self) -> dict[str, str]:
        """depends_on as {task: condition}; the list form means `ready` (which is `started`
        for a task without readiness_probe)."""
        if self.depends_on is None:
            return {}
        if isinstance(self.depends_on, list):
            return {name: "ready" for name in self.depends_on}
        return dict(self.depends_on)


Execution = Literal["parallel", "serial"]


class JobGroup(_Strict):
    """A whole spec: a job group (`parallel`), a pipeline (`serial`) or a single task.

    `primary_tasks` empty means every task is primary. `termination_delay` is kept in the user's
    form (`"30s"`, `30`, or a map task -> duration with an optional `default`); seconds come from
    `jobgroup.spec.durations.delay_for(group, task_name)`.
    """

    name: str
    tasks: list[Task]
    execution: Execution = "parallel"
    placement: str = "SAME_INFRA"
    primary_tasks: list[str] = msgspec.field(default_factory=list)
    termination_delay: str | Number | dict[str, str | Number] | None = None
    inter_connection: bool = True
    max_group_restarts: int = 0  # jobgroup extension: restart the whole group on a failure

    def task(self, name: str) -> Task:
        """The task called `name` (KeyError if none)."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def unfilled(self) -> list[tuple[str, str, str]]:
        """Every `(task, "envs" | "secrets", NAME)` still to be given a value at launch."""
        return [(t.name or "", field, n) for t in self.tasks
                for field, names in (("envs", t.unfilled_envs), ("secrets", t.unfilled_secrets))
                for n in names]

    def nodes(self) -> list[tuple[int, int, Task]]:
        """Every node of the group as (task index, rank, task), task by task, rank by rank:
        the order of addresses, hosts files and start-up everywhere."""
        return [(i, r, t) for i, t in enumerate(self.tasks) for r in range(t.num_nodes)]

    @property
    def primaries(self) -> list[str]:
        """Names of primary tasks: `primary_tasks`, or every task when that is empty."""
        return list(self.primary_tasks) or [t.name or "" for t in self.tasks]


class Header(_Strict):
    """The first document of a job-group file (everything of JobGroup but the tasks)."""

    name: str | None = None
    execution: Execution | None = None
    placement: str | None = None
    primary_tasks: list[str] | None = None
    termination_delay: str | Number | dict[str, str | Number] | None = None
    inter_connection: bool | None = None
    max_group_restarts: int | None = None


# Task fields that are not YAML keys (the loader refuses them in a file).
INTERNAL_TASK_KEYS = frozenset({"unfilled_envs", "unfilled_secrets"})
HEADER_KEYS = frozenset(Header.__struct_fields__)
TASK_KEYS = frozenset(Task.__struct_fields__) - INTERNAL_TASK_KEYS
