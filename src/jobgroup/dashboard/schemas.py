"""The API's request and reply bodies as msgspec Structs.

Litestar derives the OpenAPI description (GET /api/v1/openapi.json) from these and from the
handlers' signatures, so the description cannot drift from the code; the handlers pass what
`views` builds through `msgspec.convert(..., Type)`, so a reply that no longer matches its
declared type fails the tests instead of the clients.

Times are given twice: seconds since the epoch (`*_at`, as before) and ISO 8601 in UTC
(`*_at_iso`, e.g. ``2026-12-05T06:01:02.345Z``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Struct

from jobgroup.spec.errors import Problem


class NodeResources(Struct, kw_only=True):
    """What one node asked for (its task's first alternative) or, once the group was admitted
    on this machine, what was reserved for it: CPUs, memory (GB), GPUs (count, type and, when
    placed, the device indices). `best_effort`: nothing asked, nothing reserved or limited."""

    cpus: float = 0.0
    memory_gb: float = 0.0
    gpus: int = 0
    gpu_type: str | None = None
    gpu_indices: list[int] = msgspec.field(default_factory=list)
    best_effort: bool = True
    reserved: bool = False


class NodeUsage(Struct, kw_only=True):
    """A running node's use now, as its backend tells (`jobgroup top`: cgroups locally, sstat
    on Slurm, the metrics API on Kubernetes): CPU time so far, CPU cores in use over the last
    interval the dashboard saw (None on the first look), resident memory and the node's limit
    (bytes), GPU index -> memory used (bytes) where NVML says, how many processes; `source`
    and `note` (what is missing and why) as the backend says."""

    cpu_seconds: float | None = None
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    gpus: dict[str, int] = msgspec.field(default_factory=dict)
    processes: int = 0
    source: str = ""
    note: str = ""


class Node(Struct, kw_only=True):
    task: str
    task_index: int
    rank: int
    phase: str
    state: str  # phase in words: "never started" for a node of an ended job that never ran
    hostname: str
    address: str
    attempt: int
    restarts: int
    started_at: float | None
    started_at_iso: str | None
    ended_at: float | None
    ended_at_iso: str | None
    ready_at: float | None
    ready_at_iso: str | None
    readiness: str
    readiness_probe: bool
    exit_code: int | None
    signal: int | None
    stopped: bool
    exit: str
    ended_phase: str | None
    note: str
    resources: NodeResources | None = None
    usage: NodeUsage | None = None


class Task(Struct, kw_only=True):
    index: int
    name: str
    status: str
    reason: str
    num_nodes: int
    primary: bool
    restarts: int
    started_at: float | None
    started_at_iso: str | None
    ended_at: float | None
    ended_at_iso: str | None
    duration: float | None
    readiness_probe: bool = False
    nodes: list[Node] | None = None  # only in a job's detail


class JobSummary(Struct, kw_only=True):
    id: int
    name: str
    status: str
    reason: str
    execution: str
    infra: str  # "local", "slurm:1234", "k8s:namespace"
    submitted_at: float
    submitted_at_iso: str
    started_at: float | None
    started_at_iso: str | None
    ended_at: float | None
    ended_at_iso: str | None
    duration: float | None
    num_tasks: int
    num_nodes: int
    restarts: int
    group_restarts: int
    cancel_requested: bool
    isolation: str
    done: bool
    tasks: list[Task]


class JobDetail(JobSummary, kw_only=True):
    """A job with every node; `blocked_by`: jobs holding what it waits for (from its reason),
    `blocking`: pending jobs that wait for what it holds."""

    has_auxiliaries: bool = False
    blocked_by: list[int] = msgspec.field(default_factory=list)
    blocking: list[int] = msgspec.field(default_factory=list)


class JobPage(Struct, kw_only=True):
    """One page of the jobs list, newest first. `total`: jobs matching the filter and search;
    `next`: the URL of the next page (None on the last)."""

    jobs: list[JobSummary]
    total: int
    limit: int
    offset: int
    next: str | None = None


class Event(Struct, kw_only=True):
    id: int
    at: float
    at_iso: str
    kind: str
    message: str
    task: str | None
    rank: int | None


class EventList(Struct, kw_only=True):
    """Events oldest first; `next`: the URL of the following ones (None: no more now)."""

    events: list[Event]
    next: str | None = None


class LogLine(Struct, kw_only=True):
    task: str
    rank: int
    attempt: int
    text: str
    more: bool  # a piece of a line over 1 MiB; the node's next piece continues it
    prefix: str
    at: float | None = None  # when it was written, where the node's log file records it
    at_iso: str | None = None


class LogReply(Struct, kw_only=True):
    """The last lines of the selected nodes, merged in the order they were written (see
    `logmerge`); `truncated`: earlier lines were left out."""

    lines: list[LogLine]
    truncated: bool


class SpecProblem(Problem, kw_only=True):
    """A spec problem as `jobgroup validate` finds it (`spec.errors.Problem`), and `text`: its
    one-line form, as the CLI prints it."""

    text: str


class Problem(Struct, kw_only=True, omit_defaults=True):
    """An error (RFC 9457, `application/problem+json`). `problems`: every problem of an
    invalid spec."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    problems: list[SpecProblem] | None = None


class LaunchBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /api/v1/jobs as JSON (a YAML body, `application/yaml`, is the spec alone)."""

    spec: str
    name: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)


class LaunchReply(Struct, kw_only=True):
    job: JobDetail
    warnings: list[str]


class ValidateReply(Struct, kw_only=True):
    valid: bool
    name: str | None = None
    tasks: list[str] = msgspec.field(default_factory=list)
    problems: list[SpecProblem] = msgspec.field(default_factory=list)


class CancelReply(Struct, kw_only=True):
    id: int
    result: str  # "cancelling" or "already ended (STATUS)"


JobIdValue = Annotated[int, msgspec.Meta(gt=0, lt=10**12)]


class CancelManyBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """Jobs to cancel by id, or `all` the active ones."""

    ids: list[JobIdValue] | None = None
    all: bool = False


class CancelManyReply(Struct, kw_only=True):
    results: dict[str, str]


