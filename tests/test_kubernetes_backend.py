"""Kubernetes backend without a cluster: pod status -> outcome (pure), the gang rule of `admit`
and the object lifecycle against a fake CoreV1Api, and the node driver script run by real bash."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobgroup.backends.base import Outcome
from jobgroup.backends.kubernetes import KubernetesConfig
from jobgroup.backends.kubernetes.backend import KubernetesBackend, _parse_status_path
from jobgroup.backends.kubernetes.driver import DRIVER
from jobgroup.backends.kubernetes.status import phase_outcome, unscheduled_reason
from jobgroup.spec import load


def pod(*, terminated=None, started=None, reason=None, conditions=None, phase="Running"):
    c = {"state": {"terminated": terminated} if terminated else {"running": {}}}
    if started is not None:
        c["started"] = started
    st = {"phase": phase, "containerStatuses": [c], "conditions": conditions or []}
    if reason:
        st["reason"], st["message"] = reason, "The node was low on resource: memory."
    return {"metadata": {"name": "g-a-0"}, "status": st}


def test_phase_outcomes() -> None:
    assert phase_outcome(pod(started=False), "setup") is None
    assert phase_outcome(pod(started=True), "setup") == Outcome(exit_code=0)
    assert phase_outcome(pod(started=True), "run") is None
    failed_setup = pod(terminated={"exitCode": 3, "message": "setup failed: exit 3"})
    assert phase_outcome(failed_setup, "setup").exit_code == 3
    done = pod(terminated={"exitCode": 0, "message": "run exited 0"}, phase="Succeeded")
    assert phase_outcome(done, "setup") == Outcome(exit_code=0)
    assert phase_outcome(done, "run") == Outcome(exit_code=0)
    bad = pod(terminated={"exitCode": 2, "message": "run exited 2"}, phase="Failed")
    assert phase_outcome(bad, "run").exit_code == 2
    oom = pod(terminated={"exitCode": 137, "reason": "OOMKilled"}, phase="Failed")
    assert phase_outcome(oom, "run") == Outcome(signal=9, note="out of memory (OOMKilled)")
    evicted = pod(reason="Evicted", phase="Failed")
    assert phase_outcome(evicted, "run").signal == 9  # preemption, not an error
    assert phase_outcome(None, "run").signal == 9
    assert phase_outcome(None, "run", stop_requested=True).stopped
    peer = pod(terminated={"exitCode": 97, "message": "peer x never resolved"})
    assert phase_outcome(peer, "setup") == Outcome(exit_code=0)
    assert phase_outcome(peer, "run").exit_code == 97


def test_unscheduled_reason() -> None:
    cond = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    assert unscheduled_reason([pod(conditions=cond)]) == \
        "pod g-a-0: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert unscheduled_reason([pod(conditions=[{"type": "PodScheduled", "status": "True"}])]) \
        is None


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class FakeCore:
    """Just enough of CoreV1Api: objects kept as dicts, keyed by (kind, name)."""

    def __init__(self) -> None:
        self.objs: dict[tuple[str, str], dict] = {}
        self.api_client = SimpleNamespace(sanitize_for_serialization=lambda o: o)
        for kind, method in [("Pod", "pod"), ("Service", "service"), ("ConfigMap", "config_map"),
                             ("Secret", "secret"), ("PersistentVolumeClaim",
                                                    "persistent_volume_claim")]:
            setattr(self, f"create_namespaced_{method}", self._creator(kind))
            setattr(self, f"delete_collection_namespaced_{method}", self._collection(kind))

    def _creator(self, kind):
        def create(ns, body, **_):
            key = (kind, body["metadata"]["name"])
            if key in self.objs:
                raise ApiError(409)
            self.objs[key] = dict(body)
        return create

    def _match(self, obj, selector):
        labels = obj["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, v in (p.split("=") for p in selector.split(",")))

    def _collection(self, kind):
        def delete(ns, label_selector, **_):
            for key in [k for k, o in self.objs.items()
                        if k[0] == kind and self._match(o, label_selector)]:
                del self.objs[key]
        return delete

    def list_namespaced_pod(self, ns, label_selector, **_):
        return SimpleNamespace(items=[o for (k, _), o in sorted(self.objs.items())
                                      if k == "Pod" and self._match(o, label_selector)])

    def list_namespaced_service(self, ns, label_selector, **_):
        return SimpleNamespace(items=[
            SimpleNamespace(metadata=SimpleNamespace(name=o["metadata"]["name"]))
            for (k, _), o in self.objs.items() if k == "Service" and self._match(o, label_selector)])

    def delete_namespaced_service(self, name, ns, **_):
        self.objs.pop(("Service", name), None)

    def _reader(self, kind):
        def read(name, ns, **_):
            if (kind, name) not in self.objs:
                raise ApiError(404)
            return self.objs[(kind, name)]
        return read

    def read_namespaced_service(self, name, ns, **_):
        return self._reader("Service")(name, ns)

    def read_namespaced_secret(self, name, ns, **_):
        return self._reader("Secret")(name, ns)

    def read_namespaced_config_map(self, name, ns, **_):
        return self._reader("ConfigMap")(name, ns)

    def read_namespaced_pod(self, name, ns, **_):
        if ("Pod", name) not in self.objs:
            raise ApiError(404)
        return self.objs[("Pod", name)]

    def delete_namespaced_pod(self, name, ns, grace_period_seconds, **_):
        if ("Pod", name) not in self.objs:
            raise ApiError(404)
        del self.objs[("Pod", name)]


GROUP = """\
name: g
execution: parallel
---
name: a
num_nodes: 2
volumes: {/ckpt: vol}
secrets: {TOKEN: s3cret}
run: "true"
---
name: b
run: "true"
"""


def test_admit_creates_then_waits_then_fails_and_cleans_up(tmp_path: Path) -> None:
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(schedule_timeout=0.2), core=core)
    group = load(GROUP)
    first = be.admit(5, group, {})
    assert first.state == "waiting" and "k8s_created_at" in first.facts
    kinds = sorted(k for k, _ in core.objs)
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "Pod", "Pod", "Pod", "Secret",
                     "Service"]
    pods = [o for (k, _), o in core.objs.items() if k == "Pod"]
    assert all({"name": "JOBGROUP_RUN_GATE", "value": "1"} in p["spec"]["containers"][0]["env"]
               for p in pods)
    unsched = {"conditions": [{"type": "PodScheduled", "status": "False",
                               "message": "0/1 nodes are available: 1 Insufficient cpu."}]}
    core.objs[("Pod", "g-a-0")]["status"] = unsched
    opts = dict(first.facts)
    assert be.admit(5, group, opts).reason.endswith("1 Insufficient cpu.")
    time.sleep(0.25)
    failed = be.admit(5, group, opts)
    assert failed.state == "failed" and "Insufficient cpu" in failed.reason
    assert sorted(k for k, _ in core.objs) == ["PersistentVolumeClaim"]  # volumes outlive jobs
    be.cleanup(5)  # twice is harmless


def test_admit_ready_start_stop(tmp_path: Path) -> None:
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(), core=core)
    group = load(GROUP)
    opts = be.admit(6, group, {}).facts
    for (k, _), o in core.objs.items():
        if k == "Pod":
            o["status"] = {"conditions": [{"type": "PodScheduled", "status": "True"}],
                           "containerStatuses": [{"state": {"running": {}}, "started": True}]}
    assert be.admit(6, group, opts).state == "ready"
    addrs = be.prepare(6, group, tmp_path)
    assert addrs[(0, 1)] == "a-1.g.default.svc.cluster.local"
    status = tmp_path / "jobs" / "6" / "nodes" / "0-1.setup.1.status"
    assert _parse_status_path(status) == (6, 0, 1, "setup", 1)
    assert be.find(status) is not None
    assert be.outcome(None, status) == Outcome(exit_code=0)
    assert be.exec_argv(6, 1, 0, ["true"])[-4:] == ["-c", "node", "--", "true"]
    be.stop(be.find(status), status)
    be.stop(None, status)  # already gone: quiet
    assert be.outcome(None, status).stopped
    # a second group with the same name in the namespace is refused with a clear reason
    other = be.admit(7, group, {})
    assert other.state == "failed" and "already runs in namespace default (job 6)" in other.reason


@pytest.fixture
def driver(tmp_path: Path):
    """The driver with its fixed paths moved under tmp_path (same logic, runnable here)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    text = (DRIVER.replace("/etc/jobgroup", str(root / "etc"))
            .replace("/tmp/jobgroup", str(root / "tmp"))
            .replace("/var/jobgroup/workdir", str(root / "src"))
            .replace("/dev/termination-log", str(root / "termination-log")))

    def run(setup: str | None, run: str, env: dict | None = None, wait: bool = True):
        if setup is not None:
            (root / "etc" / "t.setup.sh").write_text(setup)
        (root / "etc" / "t.run.sh").write_text(run)
        p = subprocess.Popen(["bash", "-c", text], env={**os.environ, "JOBGROUP_TASK": "t",
                                                        **(env or {})},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not wait:
            return p
        out, _ = p.communicate(timeout=20)
        return p.returncode, out, (root / "termination-log").read_text()
    run.root = root
    return run


def test_driver_setup_then_run(driver) -> None:
    rc, out, note = driver("echo setting up", "echo running; exit 4",
                           {"JOBGROUP_PEERS": "localhost"})
    assert (rc, out.split(), note) == (4, ["setting", "up", "running"], "run exited 4")
    rc, out, note = driver("exit 3", "echo never")
    assert rc == 3 and "never" not in out and note == "setup failed: exit 3"


def test_driver_gives_up_on_peers_that_never_resolve(driver) -> None:
    rc, out, note = driver(None, "echo never", {"JOBGROUP_PEERS": "no-such-host.invalid",
                                                "JOBGROUP_DNS_WAIT": "1"})
    assert rc == 97 and note == "peer no-such-host.invalid never resolved"


def test_driver_gate_and_sigterm_reaches_the_whole_run(driver) -> None:
    p = driver(None, "sleep 300 & sleep 300; echo done", {"JOBGROUP_RUN_GATE": "1"}, wait=False)
    note = driver.root / "termination-log"

    def said() -> str:
        return note.read_text() if note.exists() else ""

    time.sleep(0.5)
    assert p.poll() is None and said() != "run"  # held at the gate
    (driver.root / "tmp" / "run").touch()  # the controller opens the gate
    deadline = time.monotonic() + 5
    while said() != "run":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=5)
    assert p.returncode == 143 and "done" not in out


def test_a_name_held_by_another_job_is_waited_for_or_refused(tmp_path: Path) -> None:
    """409 on a pod name: ours -> adopted; another job's pod that is terminating or has ended ->
    `waiting` (asked again, never adopted); another state directory's live pod -> failed."""
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(), core=core)
    group = load("name: g\nexecution: parallel\n---\nname: a\nrun: \"true\"\n")
    old = KubernetesBackend(tmp_path, KubernetesConfig(), core=FakeCore())
    old.admit(1, group, {})
    pod = dict(old._core.objs[("Pod", "g-a-0")])
    pod["metadata"] = {**pod["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}
    core.objs[("Pod", "g-a-0")] = pod  # job 1's pod, Terminating
    adm = be.admit(2, group, {})
    assert adm.state == "waiting" and adm.reason == \
        "waiting for Pod g-a-0 of job 1 to be deleted", adm
    assert not adm.facts  # not admitted: created again at the next pass
    pod["metadata"] = {k: v for k, v in pod["metadata"].items() if k != "deletionTimestamp"}
    pod["status"] = {"phase": "Succeeded"}  # an ended group's leftover
    assert be.admit(2, group, {}).reason == "waiting for Pod g-a-0 of job 1 to be deleted"
    del core.objs[("Pod", "g-a-0")]
    adm = be.admit(2, group, {})  # the name is free: created; our own objects are adopted
    assert adm.state == "waiting" and adm.facts, adm
    assert core.objs[("Pod", "g-a-0")]["metadata"]["labels"]["jobgroup.dev/job-id"] == "2"
    # a live pod of another state directory under that name: refused, with whose it is
    other = KubernetesBackend(tmp_path / "other", KubernetesConfig(), core=FakeCore())
    other.admit(3, group, {})
    for key in list(core.objs):
        del core.objs[key]
    core.objs[("Pod", "g-a-0")] = other._core.objs[("Pod", "g-a-0")]
    adm = be.admit(3, group, {})
    assert adm.state == "failed" and "job 3 of another jobgroup state directory" in adm.reason
    assert core.objs[("Pod", "g-a-0")]["metadata"]["labels"]["jobgroup.dev/home"] == \
        other.config.home_uid  # theirs is left alone


class Throttled(Exception):
    """What the client raises for 429 Too Many Requests (API priority and fairness)."""

    status, reason = 429, "Too Many Requests"

    def __init__(self, retry_after: str | None = None) -> None:
        self.headers = {"Retry-After": retry_after} if retry_after else {}


def test_too_many_requests_is_asked_again_not_an_error(tmp_path: Path) -> None:
    from jobgroup.backends.base import Unreachable

    core = FakeCore()

    def throttled(ns, body, **_):
        raise Throttled("3")
    core.create_namespaced_persistent_volume_claim = throttled
    be = KubernetesBackend(tmp_path, KubernetesConfig(), core=core)
    with pytest.raises(Unreachable, match=r"too busy .*HTTP 429 Too Many Requests; it asks "
                                          r"to retry after 3s"):
        be.admit(8, load(GROUP), {})  # the controller keeps the group pending and asks again
    core.read_namespaced_pod = lambda *a, **k: (_ for _ in ()).throw(Throttled())
    status = tmp_path / "jobs" / "8" / "nodes" / "0-0.run.1.status"
    assert be.outcome(None, status) is None  # unknown yet, not a lost node


def test_a_restarted_node_replaces_the_pod_of_its_previous_attempt(tmp_path: Path) -> None:
    """Attempt 2's pod is created only once attempt 1's is gone (deleted at once), so the
    node's name never resolves to the dying pod."""
    from jobgroup.backends.base import PhaseLaunch

    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(), core=core)
    be._follow_logs = lambda pod, path: None  # no kubectl against this fake
    be._open_gate = lambda pod: True
    group = load(GROUP)
    be.admit(9, group, {})
    be.prepare(9, group, tmp_path)
    graces, delete = [], core.delete_namespaced_pod

    def deleting(name, ns, grace_period_seconds, **kw):
        graces.append((name, grace_period_seconds, ("Pod", "g-a-0-a2") in core.objs))
        delete(name, ns, grace_period_seconds, **kw)
    core.delete_namespaced_pod = deleting
    nodes = tmp_path / "jobs" / "9" / "nodes"
    be.start(PhaseLaunch(job_id=9, task="a", task_idx=0, rank=0, phase="run", script="true",
                         env={}, workdir=None, log_path=tmp_path / "a-0.2.log",
                         status_path=nodes / "0-0.run.2.status", grace=1.0))
    assert graces == [("g-a-0", 0, False)]  # deleted at once, before the new pod existed
    assert ("Pod", "g-a-0") not in core.objs and ("Pod", "g-a-0-a2") in core.objs
    be.stop(None, nodes / "0-0.run.2.status")
    assert graces[-1][:2] == ("g-a-0-a2", 1)  # the launch's grace, not the pod's 30 s
