"""Named fault points: the controller SIGKILLs itself at a chosen step (like etcd's gofail).

For crash-safety tests only. The controller reads `JOBGROUP_FAULT` once, at start-up
(`arm_from_env`, called by `controller.daemon.main` alone: commands and nodes never die here),
and removes it from its environment so nothing it starts inherits it:

    JOBGROUP_FAULT=POINT      die the first time POINT is reached
    JOBGROUP_FAULT=POINT:N    die the N-th time (N >= 1), e.g. after the 2nd node of a group
                              was spawned

Unset (always, outside tests), `hit()` is one comparison with None and returns. The points are
listed in `POINTS` with where each one is; a name that is not listed is refused at start-up so
a typo in a test cannot silently test nothing.
"""

from __future__ import annotations

import os
import signal

POINTS: dict[str, str] = {
    # start of a group (local backend: `LocalBackend.prepare`, `network.create`; the rest in
    # the controller, for every backend)
    "prepare.begin": "the job's directory exists; nothing of its network yet",
    "network.claimed": "the bridge holds the group's subnet; no namespace, no veth yet",
    "network.host": "namespaces and veths exist; addresses inside them not set",
    "network.created": "the network is complete; network.json not written",
    "prepare.saved": "network.json written; hosts file not written",
    "start.intent": "the nodes' phases are recorded (no handle); nothing started",
    "start.spawned": "a phase was started (a shim spawned, a pod's run gate opened); its handle "
                     "is not recorded (counts every start)",
    "start.recorded": "every handle of the batch is recorded; not watched yet",
    # stop, settle, restart
    "stop.signalled": "a node was asked to stop (its shim signalled, its pod deleted); the "
                      "stop request is not recorded",
    "settle.read": "a node's end was read (its cgroup released); not recorded",
    "restart.counted": "a task is RECOVERING (its restart counted); its nodes not stopped",
    "restart.group": "a group is RECOVERING (its restart counted); its tasks not yet",
    "restart.reset": "a restarted task's nodes are reset to the next attempt; not STARTING",
    # teardown
    "teardown.begin": "the group's terminal status is decided; nothing torn down",
    "network.destroyed": "the group's network is gone; network.json and hosts still there",
    "teardown.cleaned": "everything torn down; the terminal status is not recorded",
}

_point: str | None = None
_countdown = 0


class FaultSpecError(ValueError):
    """JOBGROUP_FAULT names no known point (or a bad count)."""


def parse(spec: str) -> tuple[str, int]:
    """`POINT` or `POINT:N` -> (point, N); FaultSpecError naming the known points otherwise."""
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise FaultSpecError(f"JOBGROUP_FAULT={spec!r}: unknown fault point {point!r}; "
                             f"known: {', '.join(POINTS)}")
    if count and (not count.isdigit() or int(count) < 1):
        raise FaultSpecError(f"JOBGROUP_FAULT={spec!r}: the count after ':' must be >= 1")
    return point, int(count or 1)


def arm_from_env() -> None:
    """Read and remove JOBGROUP_FAULT (the controller's start-up only)."""
    global _point, _countdown
    spec = os.environ.pop("JOBGROUP_FAULT", "")
    if spec:
        _point, _countdown = parse(spec)


def hit(point: str) -> None:
    """SIGKILL this process if `point` is the armed one (and its count is reached)."""
    global _countdown
    if _point is None or point != _point:
        return
    _countdown -= 1
    if _countdown <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
