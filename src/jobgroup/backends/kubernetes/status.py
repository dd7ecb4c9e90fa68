"""What a pod's status means for the controller (pure: pod status as a dict -> Outcome / reason).

The pod's one container runs the driver (`driver.py`): setup, then run. So:
- the setup phase has ended well once the container is `started` (its startupProbe saw
  /tmp/jobgroup/setup-done) or has already gone on to `run`; it failed when the container
  terminated with `setup failed: exit N` in its termination message;
- the run phase has ended once the container terminated; its exit code is the run's;
- OOMKilled, an eviction (node pressure, preemption) or a pod deleted by someone else read as
  SIGKILL (signal 9) with a note: the controller counts those as preemption, not as errors.
"""

from __future__ import annotations

from typing import Any

from jobgroup.backends.base import Outcome

Pod = dict[str, Any]


def _container(pod: Pod) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def phase_outcome(pod: Pod | None, phase: str, *, stop_requested: bool = False) -> Outcome | None:
    """The outcome of `phase` ('setup' or 'run') of the node whose pod is `pod`, None while it
    runs. `pod=None`: the pod is gone (deleted)."""
    if pod is None:
        if stop_requested:
            return Outcome(signal=15, stopped=True)
        return Outcome(signal=9, note="the pod was deleted from outside jobgroup")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return Outcome(signal=9, note=f"evicted: {status.get('message', '').strip()}")
    c = _container(pod)
    term = (c.get("state") or {}).get("terminated")
    if phase == "setup":
        if term is None:
            return Outcome(exit_code=0) if c.get("started") else None
        message = term.get("message") or ""
        if message and not message.startswith("setup"):
            return Outcome(exit_code=0)  # setup succeeded; what came after has ended since
    elif term is None:
        if status.get("phase") in ("Failed", "Succeeded"):  # no container status (rare)
            return Outcome(exit_code=0 if status["phase"] == "Succeeded" else 1,
                           note=status.get("message", ""))
        return None
    code = term.get("exitCode")
    reason = term.get("reason") or ""
    if reason == "OOMKilled":
        return Outcome(signal=9, note="out of memory (OOMKilled)")
    if stop_requested:
        return Outcome(exit_code=code, stopped=True)
    if isinstance(code, int) and code > 128 and code - 128 in (9, 15):
        return Outcome(signal=code - 128, note=reason)
    return Outcome(exit_code=code, note=(term.get("message") or "") if code else "")


def container_running(pod: Pod | None) -> bool:
    """Whether the pod's container runs now (an exec can reach it)."""
    return pod is not None and "running" in ((_container(pod).get("state")) or {})


def container_ready(pod: Pod | None) -> bool:
    """Whether the pod's container passes its readiness probe now (the kubelet's `ready`)."""
    return pod is not None and bool(_container(pod).get("ready")) and \
        "running" in (_container(pod).get("state") or {})


def unscheduled_reason(pods: list[Pod]) -> str | None:
    """The scheduler's word on the first pod it could not place (PodScheduled=False), e.g.
    `0/3 nodes are available: 3 Insufficient nvidia.com/gpu.`; None when every pod is placed
    or the scheduler has not said why yet."""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                name = (pod.get("metadata") or {}).get("name", "?")
                return f"pod {name}: {cond.get('message') or cond.get('reason') or 'unscheduled'}"
    return None


def all_scheduled(pods: list[Pod], expected: int) -> bool:
    if len(pods) < expected:
        return False
    return all(any(c.get("type") == "PodScheduled" and c.get("status") == "True"
                   for c in (p.get("status") or {}).get("conditions") or []) for p in pods)
