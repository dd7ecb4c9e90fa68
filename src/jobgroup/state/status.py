"""Statuses of jobs and tasks (SkyPilot's names) and which of them are final."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    FAILED_PRECHECKS = "FAILED_PRECHECKS"
    FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
    FAILED_CONTROLLER = "FAILED_CONTROLLER"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def failed(self) -> bool:
        return self.value.startswith("FAILED")

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset(
    {
        Status.SUCCEEDED,
        Status.CANCELLED,
        Status.FAILED,
        Status.FAILED_SETUP,
        Status.FAILED_PRECHECKS,
        Status.FAILED_NO_RESOURCE,
        Status.FAILED_CONTROLLER,
    }
)


class Phase(str, Enum):
    """Where one node is in its life. Only the controller changes it."""

    WAITING = "waiting"  # not started (job pending, or pipeline step not reached)
    SETUP = "setup"  # setup shim running
    READY = "ready"  # setup done (or none); waiting for the group's setup barrier
    RUN = "run"  # run shim running
    ENDED = "ended"  # finished: see exit_code / signal / stopped

    def __str__(self) -> str:
        return self.value
