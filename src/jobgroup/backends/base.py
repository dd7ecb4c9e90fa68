"""The narrow interface every backend implements (DESIGN principles 4 and 10: policy once,
backends small and peers). Policy (gang start, primaries, fail-fast, delays, restarts,
readiness) lives in the controller; a backend only prepares a group's network and names,
starts a node's phase, lets the controller observe its end, stops it, points at its logs, and
cleans up.

Names. The interface names nodes, not processes: every per-node call takes a `NodeRef` (job,
task index, rank, phase, attempt) and the controller never parses anything a backend made. A
phase's `Handle` is opaque JSON-able data the backend encodes at `start` (local: the shim's pid
and start time; Kubernetes: the pod's name); the controller stores it as it is (the node's
`handle` column), gives it back to `watch`/`outcome`/`stop`, and shows it to users only through
`describe`. Nothing a backend needs may live only in the controller's memory: after a controller
restart every call may come for a node whose handle was stored by a previous process.

Jobs. `admit` and `prepare` receive a `JobContext` (the job's id, typed spec, launch options
with the backend's own recorded facts, and base directory) from the controller; a backend never
opens the store. A backend that must learn of a job it was not handed in this process (a
restarted controller watching adopted nodes, another job that holds a name it needs) asks
`self.jobs`, which whoever created it (the controller) sets.

Contract for every implementation:
- `start` returns a `Handle` that survives a controller restart when stored; the node's outcome
  is recorded durably by the backend's own supervisor (the shim's status file, the pod's
  status), never only in the controller's memory.
- `watch` arranges one call of `on_end` when the started phase has (or may have) ended, soon
  when it ended already; no polling loop measured in seconds. A spurious call is allowed: the
  controller asks `outcome`, and watches again while it says None.
- `outcome` reads the recorded result; None while the phase still runs. A phase whose
  supervisor vanished without a record reads as `Outcome(lost=True)` (or, where the cluster
  says so, as killed by SIGKILL: a preemption). A record is read once and settled by the caller.
- `recover` finds a phase the controller recorded as starting but whose handle it never stored
  (it died in between): its handle when it runs, `ENDED` when it ran and ended (`outcome(ref,
  None)` then reads how), None when it never started (the controller starts it again).
- `stop` asks a phase to end (SIGTERM-like, escalating to a kill after the launch's grace
  period); stopping a node that is already gone returns quietly. `kill=True` skips the grace.
- `cleanup` removes everything the backend created for a group; calling it twice is harmless,
  also in a controller that never prepared the group. It may say what it found of the nodes
  (local: what each wrote in its own root) as notes the controller records as events.
- Errors: `Unreachable` when the cluster did not answer (the controller keeps every state and
  asks again); `Refused` when the cluster answered no to the group (`admit`/`prepare`: the
  group fails FAILED_PRECHECKS with the message). Anything else is a bug of the backend.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Protocol

from jobgroup.spec.models import JobGroup
from jobgroup.state.options import LaunchOptions

# A started phase as its backend knows it: JSON-able data only the backend reads (stored in the
# node's `handle` column as JSON and given back as it was).
Handle = dict[str, Any]
# Something a backend says about a node of a group at its cleanup, for the job's events:
# (task_idx, rank, message); (None, None, message) for the group as a whole.
NodeNote = tuple[int | None, int | None, str]


class Ended:
    """The type of `ENDED`, `recover`'s answer for a phase that ran and has ended (one
    instance: compare with `is`)."""

    _instance: Ended | None = None

    def __new__(cls) -> Ended:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ENDED"


ENDED: Final = Ended()


class Unreachable(Exception):
    """The backend's cluster (Slurm's controller, the Kubernetes API server) did not answer;
    the controller keeps the group's state with this reason and asks again."""


class Refused(Exception):
    """The backend's cluster answered, and refused the group (e.g. forbidden by its RBAC, a
    configuration it rejects); the controller fails the group FAILED_PRECHECKS with this
    message. Not for a group that merely does not fit: that is `Admission("failed", ...)`."""


@dataclass(frozen=True)
class NodeRef:
    """One phase of one node of one job: the name every per-node call is made with."""

    job_id: int
    task_idx: int
    rank: int
    phase: str  # "setup" | "run"
    attempt: int = 1

    def node(self) -> tuple[int, int]:
        """(task_idx, rank): the node, whatever phase or attempt."""
        return (self.task_idx, self.rank)


@dataclass(frozen=True)
class JobContext:
    """What the controller hands a backend about a job: `launch` are the launch's typed options
    (`state.options.LaunchOptions`), `facts` what the backend's `admit` asked to record (e.g.
    Slurm's job id and node lists: the backend's own, `state.options`), `options` the flat
    mapping of both as stored; `base_dir` is the folder the spec's relative paths are
    resolved against; `submitted_at` is when the job was submitted (epoch seconds, from the
    store; the time in SKYPILOT_TASK_ID, `discovery.task_id`), None where it is not known.
    Read-only to the backend."""

    job_id: int
    group: JobGroup
    options: Mapping[str, Any]
    base_dir: Path
    submitted_at: float | None = None
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    facts: Mapping[str, Any] = field(default_factory=dict)


class Jobs(Protocol):
    """How a backend asks its creator (the controller) about jobs it was not handed."""

    def context(self, job_id: int) -> JobContext | None:
        """The job's context, None when this state directory has no such job."""

    def state(self, job_id: int) -> str:
        """"live", "ending" (a cancel was asked for), "ended" (terminal), or "unknown"."""

    def outcome(self, job_id: int) -> str | None:
        """The group's fate once decided (the terminal status it ends with, e.g. "SUCCEEDED",
        "FAILED", "CANCELLED"), else None: what a cluster's own record of the job should say
        (Slurm: the batch script's exit code)."""


class NoJobs:
    """`Backend.jobs` until its creator sets it: knows of no job."""

    def context(self, job_id: int) -> JobContext | None:
        return None

    def state(self, job_id: int) -> str:
        return "unknown"

    def outcome(self, job_id: int) -> str | None:
        return None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the contract (Nomad's driver capabilities are the model).

    - `self_scheduling`: the cluster has its own scheduler; the controller asks `admit` about a
      pending group instead of admitting it against this machine's resources.
    - `native_readiness`: `node_ready` gives the cluster's own verdict on http/tcp readiness
      probes (node addresses may resolve only inside the cluster).
    - `exec`: `exec_argv` runs a command as if on a node (command readiness probes), and
      `attach_argv` an interactive one (`jobgroup exec`).
    - `reachable`: node addresses can be connected to from the controller's machine
      (`jobgroup port-forward` relays to them itself); otherwise `forward_argv` gives the
      cluster's own forwarder.
    """

    self_scheduling: bool = False
    native_readiness: bool = False
    exec: bool = True
    reachable: bool = True


@dataclass(frozen=True)
class Proc:
    """One process of a node, as `jobgroup top` lists it."""

    pid: int
    command: str
    rss_bytes: int = 0


@dataclass(frozen=True)
class Usage:
    """What one node uses now (`Backend.usage`). `cpu_seconds`: CPU time used by the node's
    processes so far (a caller samples twice for a rate); None where unknown. `memory_bytes`:
    resident memory now; `memory_limit_bytes`: the node's limit (None: none). `gpus`: GPU
    index -> memory used in bytes, where NVML (nvidia-smi) says. `source` says where the figures
    come from ("cgroup", "sstat", "metrics API"); `note` what is missing and why."""

    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    processes: tuple[Proc, ...] = ()
    gpus: dict[int, int] = field(default_factory=dict)
    source: str = ""
    note: str = ""


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None = None
    signal: int | None = None
    stopped: bool = False  # a stop had been requested before it ended
    lost: bool = False  # the supervisor vanished without recording a result
    note: str = ""  # what else is known, e.g. "out of memory (limit 0.5 GB)"


@dataclass(frozen=True)
class PhaseLaunch:
    """Everything needed to start one phase (setup or run) of one node."""

    ref: NodeRef
    task: str  # the task's name
    script: str
    env: dict[str, str]
    workdir: str | None
    log_path: Path  # the node's log file (both phases of an attempt append to it)
    grace: float  # seconds between the stop signal and the kill
    cpus: float = 0.0  # limits of this node (0: none, best-effort)
    memory_gb: float = 0.0
    log_max: int = 0  # cap of log_path in bytes, rotated to NAME.log.1 (JOBGROUP_LOG_MAX); 0: none


@dataclass(frozen=True)
class Admission:
    """A self-scheduling backend's word on a pending group: `waiting` (reason shown in queue),
    `ready` (start it) or `failed` (FAILED_NO_RESOURCE with the reason). `facts` are merged into
    the job's stored options (e.g. the cluster's job id, so a restarted controller finds it) and
    come back in every later `JobContext.options`."""

    state: str
    reason: str
    facts: dict[str, object] = field(default_factory=dict)


class Backend(ABC):
    name: str
    level: str = ""  # isolation level the backend gives nodes, in its own words
    capabilities: Capabilities = Capabilities()
    # Set by the backend's creator (the controller); see `Jobs`.
    jobs: Jobs = NoJobs()

    def admit(self, ctx: JobContext) -> Admission:
        """Submit (once: idempotent after a controller restart) and poll the group's
        allocation; only with `capabilities.self_scheduling`. Raises Unreachable (asked again)
        or Refused (the group fails FAILED_PRECHECKS)."""
        raise NotImplementedError(f"the {self.name} backend has no scheduler of its own")

    def node_ready(self, ref: NodeRef) -> bool | None:
        """The cluster's own verdict on the http/tcp readiness probe of the node's run phase
        (`capabilities.native_readiness`): True/False; None means the controller probes the
        node itself (the default). Raises Unreachable while the cluster does not answer:
        unknown, not a failed probe."""
        return None

    def describe(self, handle: Handle) -> str:
        """The handle in a user's words, for events ("pid 1234", "pod g-a-0")."""
        return json.dumps(handle, sort_keys=True)

    def reap(self) -> None:
        """The controller got SIGCHLD: collect the exits of the child processes this backend
        supervises itself (local shims: their exit codes are kept for `outcome`), and only
        those. The default has none."""

    @abstractmethod
    def prepare(self, ctx: JobContext) -> dict[tuple[int, int], str]:
        """Create the group's network and name resolution (idempotent: after a controller
        restart it finds what exists); return each node's address keyed by (task_idx, rank).
        Raises Unreachable or Refused."""

    @abstractmethod
    def start(self, launch: PhaseLaunch) -> Handle:
        """Start one phase of one node (the group is prepared); its output goes straight to
        `launch.log_path` (capped at `launch.log_max` with rotation where the backend supports
        it: local). Returns the phase's handle."""

    @abstractmethod
    def exec_argv(self, ref: NodeRef, argv: list[str]) -> list[str] | None:
        """argv that runs a short command as if on the node (same network, names, mounts),
        e.g. a readiness probe; the group must be prepared (`capabilities.exec`). None when
        the node has no running process to run it beside (not started yet, or ended) and a
        view made afresh would not be the node's own: ask again later. May block (a
        cluster's API): the controller calls it off its loop."""

    def attach_argv(self, ref: NodeRef, argv: list[str], *, tty: bool,
                    workdir: str | None = None) -> list[str] | None:
        """argv that runs `argv` in the node's view (network, names, mounts, files) with the
        caller's stdin/stdout/stderr, on the caller's terminal when `tty` (`jobgroup exec`);
        started in `workdir` where the backend can. The caller runs it with the node's
        environment. None when the node has no running process (not started, or ended).
        May block."""
        return self.exec_argv(ref, argv)

    def forward_argv(self, ref: NodeRef, local_port: int, remote_port: int) -> list[str] | None:
        """Where node addresses are not `capabilities.reachable`: argv of the cluster's own
        forwarder of 127.0.0.1:`local_port` to the node's `remote_port`. May block."""
        return None

    def usage(self, ref: NodeRef, handle: Handle | None) -> Usage | None:
        """What the node's current phase uses now; None when this backend cannot tell (the
        default). May block."""
        return None

    @abstractmethod
    def watch(self, loop: asyncio.AbstractEventLoop, ref: NodeRef, handle: Handle,
              on_end: Callable[[], None]) -> None:
        """Call `on_end` (from the loop) once, when the phase has (or may have) ended."""

    @abstractmethod
    def outcome(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        """The recorded result of a phase, or None while it runs (or while the cluster does
        not answer: the caller is woken again). `handle` None: a phase `recover` found ENDED."""

    @abstractmethod
    def recover(self, ref: NodeRef) -> Handle | Ended | None:
        """A phase recorded as starting whose handle was never stored: its handle while it
        runs, ENDED once it has ended, None if it never started."""

    @abstractmethod
    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        """Ask the phase to end (the grace, then a kill; at once with `kill`); quiet if it is
        already gone."""

    @abstractmethod
    def cleanup(self, job_id: int) -> list[NodeNote]:
        """Remove what `prepare` (and `admit`) created for the group; idempotent. Returns
        notes for the job's events ([] when there is nothing to say)."""
