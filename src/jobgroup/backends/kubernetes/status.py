"""What a pod's status means for the controller (pure: pod status as a dict -> Outcome / reason).

The pod's one container runs the driver (`driver.py`): setup, then run. So:
- the setup phase has ended well once the container is `started` (its startupProbe saw
  /tmp/jobgroup/setup-done) or has already gone on to `run`; it failed when the container
  terminated with `setup failed: exit N` in its termination message;
- the run phase has ended once the container terminated; its exit code is the run's;
- OOMKilled, an eviction (node pressure, preemption) or a pod deleted by someone else read as
  SIGKILL (signal 9) with a note: the controller counts those as preemption, not as errors. So
  does a container that ended while its pod was being disrupted — a drain, the Eviction API,
  scheduler preemption, a node's graceful shutdown (`metadata.deletionTimestamp` set by nobody
  in jobgroup, or a `DisruptionTarget` condition) — whatever exit code the program chose on
  SIGTERM (a trainer that checkpoints and exits 0 has not finished its work);
- a container that can never start (a bad image name, a missing Secret/ConfigMap key) fails the
  node's setup at once with the kubelet's message; one whose image cannot be pulled fails once
  the pull has kept failing for IMAGE_PULL_GRACE seconds since the pod was created.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from jobgroup.backends.base import Outcome

Pod = dict[str, Any]

IMAGE_PULL_GRACE = 300.0  # seconds of ErrImagePull/ImagePullBackOff before the node fails
# Waiting reasons from which a container never recovers by itself.
_NEVER_STARTS = ("InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
                 "ErrImageNeverPull")
_PULLING = ("ErrImagePull", "ImagePullBackOff")
_EXIT_MESSAGE = re.compile(r"^(run exited|setup failed: exit) -?\d+$")


def _container(pod: Pod) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _disruption(pod: Pod) -> str | None:
    """Why the pod is being taken away by the cluster (None: it is not)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return f"{cond.get('reason') or 'disrupted'}: {cond.get('message') or ''}".strip(": ")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "the pod is being deleted (drain, eviction or node shutdown)"
    return None


def _age(pod: Pod, now: float) -> float:
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    try:
        return now - datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def phase_outcome(pod: Pod | None, phase: str, *, stop_requested: bool = False,
                  now: float | None = None) -> Outcome | None:
    """The outcome of `phase` ('setup' or 'run') of the node whose pod is `pod`, None while it
    runs. `pod=None`: the pod is gone (deleted). `now`: the current time (for the image pull
    grace; default time.time())."""
    if pod is None:
        if stop_requested:
            return Outcome(signal=15, stopped=True)
        return Outcome(signal=9, note="the pod was deleted from outside jobgroup")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return Outcome(signal=9, note=f"evicted: {status.get('message', '').strip()}")
    c = _container(pod)
    term = (c.get("state") or {}).get("terminated")
    waiting = (c.get("state") or {}).get("waiting")
    if term is None and waiting and not c.get("started"):
        why = f"{waiting.get('reason')}: {waiting.get('message') or ''}".strip(": ")
        if waiting.get("reason") in _NEVER_STARTS:
            return Outcome(exit_code=127, note=f"the container cannot start ({why})")
        if waiting.get("reason") in _PULLING:
            import time

            if _age(pod, time.time() if now is None else now) > IMAGE_PULL_GRACE:
                return Outcome(exit_code=127, note=f"the image could not be pulled for "
                                                   f"{IMAGE_PULL_GRACE:g}s ({why})")
    disrupted = None if stop_requested else _disruption(pod)
    if disrupted and (term is not None or status.get("phase") in ("Failed", "Succeeded")):
        return Outcome(signal=9, note=disrupted)  # preemption, whatever the exit code
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
    message = (term.get("message") or "").strip()
    if not code or _EXIT_MESSAGE.match(message):
        message = ""  # the driver's own "run exited N" says nothing the code does not
    return Outcome(exit_code=code, note=message)


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


def released_reason(why: str, what: str, retry: float) -> str:
    """The pending reason of a group that the gang rule released (`what`: how, "suspended",
    "its pods released"), until it tries again at `retry` (local time of day)."""
    return f"{why}; {what} (all or nothing), tries again at " \
           f"{time.strftime('%H:%M:%S', time.localtime(retry))}"
