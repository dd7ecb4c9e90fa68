"""What pod statuses mean (backends/kubernetes/status.py, pure): disruptions are preemption
whatever the program's exit code, containers that can never start fail the node with the
kubelet's message, image pulls get a grace period."""

from __future__ import annotations

from jobgroup.backends.base import Outcome
from jobgroup.backends.kubernetes.status import IMAGE_PULL_GRACE, phase_outcome

CREATED = "2026-11-29T12:00:00Z"
T0 = 1795953600.0  # CREATED as a unix time


def pod(state: dict, *, started: bool = False, deleting: bool = False,
        conditions: list | None = None, phase: str = "Running") -> dict:
    meta: dict = {"name": "g-a-0", "creationTimestamp": CREATED}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T12:05:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions or [],
                                         "containerStatuses": [{"state": state,
                                                                "started": started}]}}


def test_a_drained_trainer_that_exits_0_on_sigterm_is_preempted_not_done() -> None:
    done = {"terminated": {"exitCode": 0, "message": "run exited 0"}}
    assert phase_outcome(pod(done, phase="Succeeded"), "run") == Outcome(exit_code=0)
    out = phase_outcome(pod(done, deleting=True, phase="Succeeded"), "run")
    assert out.signal == 9 and "being deleted" in out.note
    # ... but not when jobgroup itself stopped it
    assert phase_outcome(pod(done, deleting=True), "run", stop_requested=True).stopped


def test_disruption_target_condition_names_the_reason() -> None:
    term = {"terminated": {"exitCode": 143, "message": "run exited 143"}}
    cond = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
             "message": "Preempted in order to admit critical pod"}]
    out = phase_outcome(pod(term, conditions=cond, phase="Failed"), "run")
    assert out == Outcome(signal=9, note="PreemptionByScheduler: Preempted in order to admit "
                                         "critical pod")
    # while the container still runs its SIGTERM handler, the phase has not ended
    assert phase_outcome(pod({"running": {}}, started=True, conditions=cond), "run") is None


def test_containers_that_can_never_start_fail_setup_with_the_kubelet_message() -> None:
    bad = {"waiting": {"reason": "CreateContainerConfigError",
                       "message": 'secret "g-secrets" not found'}}
    out = phase_outcome(pod(bad), "setup", now=T0 + 1)
    assert out.exit_code == 127 and 'secret "g-secrets" not found' in out.note
    assert phase_outcome(pod({"waiting": {"reason": "InvalidImageName"}}), "setup",
                         now=T0).exit_code == 127


def test_image_pulls_get_a_grace_period() -> None:
    pulling = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    assert phase_outcome(pod(pulling), "setup", now=T0 + 10) is None
    out = phase_outcome(pod(pulling), "setup", now=T0 + IMAGE_PULL_GRACE + 1)
    assert out.exit_code == 127 and "could not be pulled" in out.note
    assert phase_outcome(pod({"waiting": {"reason": "ContainerCreating"}}), "setup",
                         now=T0 + 10_000) is None  # slow, not broken


def test_exit_notes_keep_what_the_code_does_not_say() -> None:
    plain = {"terminated": {"exitCode": 3, "message": "run exited 3"}}
    assert phase_outcome(pod(plain, phase="Failed"), "run") == Outcome(exit_code=3)
    peer = {"terminated": {"exitCode": 97, "message": "peer server-0.g never resolved"}}
    assert phase_outcome(pod(peer, phase="Failed"), "run").note == \
        "peer server-0.g never resolved"
