"""The narrow interface every backend implements. Policy (gang start, primaries, fail-fast,
delays, restarts) lives in the controller; a backend only prepares a group's network, starts a
node's phase, lets the controller observe its end, stops it, points at its logs, and cleans up.

Contract for every implementation:
- `start` returns a `Handle` that survives a controller restart when stored (pid + start time,
  or backend labels); the node's outcome is recorded durably by the backend's own supervisor,
  never only in the controller's memory.
- `watch` arranges one call of `on_end` when the started phase has ended (immediately-ish when
  it ended already); no polling loop measured in seconds.
- `outcome` reads the recorded result; None while the phase still runs. A phase whose
  supervisor vanished without a record reads as `Outcome(lost=True)`.
- `stop` asks a phase to end (SIGTERM-like, escalating to a kill after the grace period);
  stopping a node that is already gone returns quietly. `kill=True` skips the grace.
- `cleanup` removes everything the backend created for a group; calling it twice is harmless.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from jobgroup.spec.models import JobGroup


class Unreachable(Exception):
    """The backend's cluster (Slurm's controller, the Kubernetes API server) did not answer;
    the controller keeps the group pending with this reason and asks again."""


@dataclass(frozen=True)
class Handle:
    """How to find a running phase again (stored in the node's row)."""

    pid: int
    pid_start: int


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

    job_id: int
    task: str
    task_idx: int
    rank: int
    phase: str
    script: str
    env: dict[str, str]
    workdir: str | None
    log_path: Path
    status_path: Path
    grace: float
    cpus: float = 0.0  # limits of this node (0: none, best-effort)
    memory_gb: float = 0.0
    log_max: int = 0  # cap of log_path in bytes, rotated to NAME.log.1 (JOBGROUP_LOG_MAX); 0: none


@dataclass(frozen=True)
class Admission:
    """A self-scheduling backend's word on a pending group: `waiting` (reason shown in queue),
    `ready` (start it) or `failed` (FAILED_NO_RESOURCE with the reason). `facts` are merged into
    the job's stored options (e.g. the cluster's job id, so a restarted controller finds it)."""

    state: str
    reason: str
    facts: dict[str, object] = field(default_factory=dict)


class Backend(ABC):
    name: str
    # True for backends with their own scheduler (Slurm): the controller calls `admit` instead
    # of admitting the group against this machine's resources.
    schedules_itself: bool = False

    def admit(self, job_id: int, group: JobGroup, options: dict) -> Admission:
        """Submit (once) and poll the group's allocation; only if `schedules_itself`."""
        raise NotImplementedError

    level: str = ""  # isolation level the backend gives nodes, in its own words

    def node_ready(self, job_id: int, task_idx: int, rank: int, attempt: int) -> bool | None:
        """The cluster's own verdict on a node's http/tcp readiness probe (Kubernetes renders
        it as the pod's readinessProbe, and node addresses resolve only inside the cluster):
        True/False; None means the controller probes the node itself (the default). Raises
        Unreachable while the cluster does not answer: unknown, not a failed probe."""
        return None

    @abstractmethod
    def prepare(self, job_id: int, group: JobGroup, base_dir: Path) -> dict[tuple[int, int], str]:
        """Create the group's network and name resolution (idempotent: after a controller
        restart it finds what exists); return each node's address keyed by (task_idx, rank).
        `base_dir` is the folder relative paths of the spec are resolved against."""

    @abstractmethod
    def start(self, launch: PhaseLaunch) -> Handle:
        """Start one phase of one node; its output goes straight to `launch.log_path`
        (capped at `launch.log_max` with rotation where the backend supports it: local)."""

    @abstractmethod
    def exec_argv(self, job_id: int, task_idx: int, rank: int, argv: list[str]) -> list[str]:
        """argv that runs a short command as if on the node (same network, names, mounts),
        e.g. a readiness probe; the group must be prepared."""

    @abstractmethod
    def alive(self, handle: Handle) -> bool:
        """True while the phase's supervisor still runs (identity-checked, not just the pid)."""

    @abstractmethod
    def watch(
        self, loop: asyncio.AbstractEventLoop, handle: Handle, on_end: Callable[[], None]
    ) -> None:
        """Call `on_end` (from the loop) once the phase's supervisor has ended."""

    @abstractmethod
    def outcome(self, handle: Handle | None, status_path: Path) -> Outcome | None:
        """The recorded result of a phase, or None while it runs."""

    @abstractmethod
    def find(self, status_path: Path) -> Handle | None:
        """The handle of a phase started but never recorded (the controller died between
        spawning it and writing its pid); None if no such phase ever started."""

    @abstractmethod
    def stop(self, handle: Handle, status_path: Path, *, kill: bool = False) -> None:
        """Ask the phase to end; quiet if it is already gone."""

    @abstractmethod
    def cleanup(self, job_id: int) -> None:
        """Remove what `prepare` created for the group; idempotent."""
