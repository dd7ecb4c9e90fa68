"""Kubernetes backend without a cluster: pod status -> outcome (pure), the gang rule of `admit`
and the object lifecycle against a fake CoreV1Api, and the node driver script run by real bash."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobgroup.backends.base import ENDED, JobContext, NodeRef, Outcome, PhaseLaunch
from jobgroup.backends.kubernetes import KubernetesConfig
from jobgroup.backends.kubernetes.backend import KubernetesBackend
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


def ctx(job_id: int, group, base_dir: Path, **options) -> JobContext:
    """The job as the controller hands it to `admit`/`prepare`."""
    return JobContext(job_id=job_id, group=group, options=options, base_dir=base_dir)


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


def test_admit_creates_waits_releases_then_tries_again(tmp_path: Path) -> None:
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(schedule_timeout=0.2, workload="pods"),
                           core=core)
    group = load(GROUP)
    first = be.admit(ctx(5, group, tmp_path))
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
    assert be.admit(ctx(5, group, tmp_path, **opts)).reason.endswith("1 Insufficient cpu.")
    time.sleep(0.25)
    released = be.admit(ctx(5, group, tmp_path, **opts))
    assert released.state == "waiting" and "Insufficient cpu" in released.reason
    assert "its pods released (all or nothing), tries again at" in released.reason
    assert released.facts["k8s_created_at"] == 0
    assert sorted(k for k, _ in core.objs) == ["ConfigMap", "PersistentVolumeClaim", "Secret",
                                               "Service"]  # the pods only
    opts.update(released.facts)
    fresh = KubernetesBackend(tmp_path, be.config, core=core)  # a restarted controller
    later = fresh.admit(ctx(5, group, tmp_path, **opts))  # knows it from the facts
    assert later.state == "waiting" and "tries again at" in later.reason
    assert not any(k == "Pod" for k, _ in core.objs)
    time.sleep(0.25)
    again = be.admit(ctx(5, group, tmp_path, **opts))
    assert again.state == "waiting" and again.facts["k8s_created_at"] > 0
    assert sorted(k for k, _ in core.objs).count("Pod") == 3  # made again
    be.cleanup(5)
    assert sorted(k for k, _ in core.objs) == ["PersistentVolumeClaim"]  # volumes outlive jobs
    be.cleanup(5)  # twice is harmless


def test_admit_ready_start_stop(tmp_path: Path) -> None:
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    followed = []
    be._follow_logs = lambda pod, path: followed.append((pod, path))  # no kubectl here
    group = load(GROUP)
    opts = be.admit(ctx(6, group, tmp_path)).facts
    for (k, _), o in core.objs.items():
        if k == "Pod":
            o["status"] = {"conditions": [{"type": "PodScheduled", "status": "True"}],
                           "containerStatuses": [{"state": {"running": {}}, "started": True}]}
    assert be.admit(ctx(6, group, tmp_path, **opts)).state == "ready"
    addrs = be.prepare(ctx(6, group, tmp_path, **opts))
    assert addrs[(0, 1)] == "a-1.g.default.svc.cluster.local"
    setup, run = NodeRef(6, 0, 1, "setup", 1), NodeRef(6, 0, 1, "run", 1)
    assert be.recover(setup) is ENDED  # its container started: the setup is over
    assert be.outcome(setup, None) == Outcome(exit_code=0)
    handle = be.recover(run)  # running: adopted, by the pod's name
    assert handle == {"pod": "g-a-1"} and be.describe(handle) == "pod g-a-1"
    # a pod adopted without a `start` (the controller died first) gets its log follower
    assert followed[-1] == ("g-a-1", tmp_path / "jobs" / "6" / "logs" / "a-1.log")
    assert be.recover(NodeRef(6, 0, 1, "run", 2)) is None  # attempt 2 never started
    assert be.exec_argv(NodeRef(6, 1, 0, "run"), ["true"])[-4:] == ["-c", "node", "--", "true"]
    # `jobgroup exec` (issue 20): stdin, and a terminal when the caller has one
    shell = be.attach_argv(NodeRef(6, 0, 1, "run"), ["bash"], tty=True)
    assert shell[shell.index("exec"):] == ["exec", "-i", "-t", "g-a-1", "-c", "node", "--", "bash"]
    assert "-t" not in be.attach_argv(NodeRef(6, 0, 1, "run"), ["ls"], tty=False)
    # `jobgroup port-forward`: pod addresses are the cluster's, so the API's forwarder
    assert not be.capabilities.reachable
    fwd = be.forward_argv(NodeRef(6, 0, 1, "run"), 8000, 80)
    assert fwd[fwd.index("port-forward"):] == ["port-forward", "--address", "127.0.0.1",
                                               "pod/g-a-1", "8000:80"]
    be.stop(run, handle)
    be.stop(run, handle)  # already gone: quiet
    assert be.outcome(run, handle).stopped
    # a second group with the same name in the namespace is refused with a clear reason
    other = be.admit(ctx(7, group, tmp_path))
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
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    group = load("name: g\nexecution: parallel\n---\nname: a\nrun: \"true\"\n")
    old = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=FakeCore())
    old.admit(ctx(1, group, tmp_path))
    pod = dict(old._core.objs[("Pod", "g-a-0")])
    pod["metadata"] = {**pod["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}
    core.objs[("Pod", "g-a-0")] = pod  # job 1's pod, Terminating
    adm = be.admit(ctx(2, group, tmp_path))
    assert adm.state == "waiting" and adm.reason == \
        "waiting for Pod g-a-0 of job 1 to be deleted", adm
    assert not adm.facts  # not admitted: created again at the next pass
    pod["metadata"] = {k: v for k, v in pod["metadata"].items() if k != "deletionTimestamp"}
    pod["status"] = {"phase": "Succeeded"}  # an ended group's leftover
    assert be.admit(ctx(2, group, tmp_path)).reason == \
        "waiting for Pod g-a-0 of job 1 to be deleted"
    del core.objs[("Pod", "g-a-0")]
    adm = be.admit(ctx(2, group, tmp_path))  # the name is free: created; our own objects are adopted
    assert adm.state == "waiting" and adm.facts, adm
    assert core.objs[("Pod", "g-a-0")]["metadata"]["labels"]["jobgroup.dev/job-id"] == "2"
    # a live pod of another state directory under that name: refused, with whose it is
    other = KubernetesBackend(tmp_path / "other", KubernetesConfig(workload="pods"),
                              core=FakeCore())
    other.admit(ctx(3, group, tmp_path))
    for key in list(core.objs):
        del core.objs[key]
    core.objs[("Pod", "g-a-0")] = other._core.objs[("Pod", "g-a-0")]
    adm = be.admit(ctx(3, group, tmp_path))
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
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    with pytest.raises(Unreachable, match=r"too busy .*HTTP 429 Too Many Requests; it asks "
                                          r"to retry after 3s"):
        be.admit(ctx(8, load(GROUP), tmp_path))  # the controller keeps it pending, asks again
    core.read_namespaced_pod = lambda *a, **k: (_ for _ in ()).throw(Throttled())
    assert be.outcome(NodeRef(8, 0, 0, "run"), None) is None  # unknown yet, not a lost node


def test_a_restarted_node_replaces_the_pod_of_its_previous_attempt(tmp_path: Path) -> None:
    """Attempt 2's pod is created only once attempt 1's is gone (deleted at once), so the
    node's name never resolves to the dying pod."""
    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    be._follow_logs = lambda pod, path: None  # no kubectl against this fake
    be._open_gate = lambda pod: True
    group = load(GROUP)
    be.admit(ctx(9, group, tmp_path))
    be.prepare(ctx(9, group, tmp_path))
    graces, delete = [], core.delete_namespaced_pod

    def deleting(name, ns, grace_period_seconds, **kw):
        graces.append((name, grace_period_seconds, ("Pod", "g-a-0-a2") in core.objs))
        delete(name, ns, grace_period_seconds, **kw)
    core.delete_namespaced_pod = deleting
    ref = NodeRef(9, 0, 0, "run", 2)
    handle = be.start(PhaseLaunch(ref=ref, task="a", script="true", env={}, workdir=None,
                                  log_path=tmp_path / "a-0.2.log", grace=1.0))
    assert handle == {"pod": "g-a-0-a2"}
    assert graces == [("g-a-0", 0, False)]  # deleted at once, before the new pod existed
    assert ("Pod", "g-a-0") not in core.objs and ("Pod", "g-a-0-a2") in core.objs
    be.stop(ref, handle)
    assert graces[-1][:2] == ("g-a-0-a2", 1)  # the launch's grace, not the pod's 30 s


class PodFeed:
    """The backend's pod watch over a FakeCore: the events the test pushes (`change`,
    `delete`); `break_watch` ends the stream with an error, and while `down` listing fails too
    (the API server does not answer). Counts the pod reads (GETs) the backend makes."""

    def __init__(self, be: KubernetesBackend, core: FakeCore) -> None:
        import queue

        self.core, self.events, self.down, self.reads, self.rv = core, queue.Queue(), False, 0, 0
        self.closed = False
        read, listing = core.read_namespaced_pod, core.list_namespaced_pod

        def reading(name, ns, **kw):
            self.reads += 1
            return read(name, ns, **kw)

        def list_pods(ns, label_selector, **kw):
            if self.closed:  # the test is over: the watch thread (a daemon) parks here
                threading.Event().wait()
            if self.down:
                raise ConnectionError("Connection refused")
            out = listing(ns, label_selector, **kw)
            out.metadata = SimpleNamespace(resource_version=str(self.rv))
            return out
        core.read_namespaced_pod, core.list_namespaced_pod = reading, list_pods
        be._stream = self.stream

    def stream(self, selector, resource_version):
        while True:
            event = self.events.get()
            if event is None:
                raise ConnectionError("Connection reset by peer")
            yield event

    def change(self, name: str, status: dict, *, push: bool = True) -> None:
        self.rv += 1
        obj = self.core.objs[("Pod", name)]
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)},
               "status": status}
        self.core.objs[("Pod", name)] = obj
        if push:
            self.events.put({"type": "MODIFIED", "object": obj})

    def break_watch(self) -> None:
        self.events.put(None)

    def close(self) -> None:
        self.closed = True
        self.events.put(None)


RUNNING = {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
           "containerStatuses": [{"state": {"running": {}}, "started": True}]}


def _watched_group(tmp_path: Path):
    """Group GROUP's three pods running their `run` phase, each watched the way the controller
    does (start, watch; woken: outcome, and watch again while it runs), on a real event loop."""
    import asyncio

    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    be._follow_logs = lambda pod, path: None  # no kubectl against this fake
    be._open_gate = lambda pod: True
    group = load(GROUP)
    be.admit(ctx(9, group, tmp_path))
    be.prepare(ctx(9, group, tmp_path))
    feed = PodFeed(be, core)
    for name in ("g-a-0", "g-a-1", "g-b-0"):
        feed.change(name, RUNNING, push=False)
    loop = asyncio.new_event_loop()
    woken: list[str] = []
    outcomes: dict[str, Outcome] = {}

    def watch(name: str, ref: NodeRef, handle) -> None:
        def ended() -> None:
            woken.append(name)
            out = be.outcome(ref, handle)
            if out is None:
                watch(name, ref, handle)
            else:
                outcomes[name] = out
        be.watch(loop, ref, handle, ended)

    for name, task, idx, rank in (("g-a-0", "a", 0, 0), ("g-a-1", "a", 0, 1),
                                  ("g-b-0", "b", 1, 0)):
        ref = NodeRef(9, idx, rank, "run", 1)
        handle = be.start(PhaseLaunch(ref=ref, task=task, script="true", env={}, workdir=None,
                                      log_path=tmp_path / f"{name}.log", grace=1.0))
        watch(name, ref, handle)

    def settle(until=lambda: True, quiet: float = 0.3) -> None:
        """Run the loop until `until()`, then until nothing is woken for `quiet` seconds."""
        async def run() -> None:
            deadline = time.monotonic() + 10
            while not until():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.02)
            seen = -1
            while seen != len(woken):
                seen = len(woken)
                await asyncio.sleep(quiet)
        loop.run_until_complete(run())

    settle(lambda: be._synced)
    return be, feed, woken, outcomes, settle, loop


def test_pod_events_wake_only_their_pods_node_and_read_no_pod(tmp_path: Path) -> None:
    """Once the watch has listed the pods, `outcome` reads them from its cache: N events of
    one pod wake only that pod's node and cost no GET at all."""
    be, feed, woken, outcomes, settle, loop = _watched_group(tmp_path)
    try:
        assert feed.reads == 0 and not outcomes  # woken by the first list, if at all
        woken.clear()
        for i in range(50):
            feed.change("g-a-0", {**RUNNING, "podIP": f"10.0.0.{i}"})
        settle(lambda: len(woken) >= 1)
        assert set(woken) == {"g-a-0"} and 1 <= len(woken) <= 50
        assert feed.reads == 0  # 50 events, no GET
        woken.clear()
        feed.change("g-b-0", {"phase": "Succeeded", "containerStatuses": [{"state": {
            "terminated": {"exitCode": 0, "message": "run exited 0"}}}]})
        settle(lambda: "g-b-0" in outcomes)
        assert woken == ["g-b-0"] and outcomes["g-b-0"] == Outcome(exit_code=0)
        assert feed.reads == 0
    finally:
        feed.close()
        loop.close()


def test_the_cache_is_rebuilt_after_the_watch_reconnects(tmp_path: Path) -> None:
    """A watch that broke: while it is down, pods are read from the API server (GET); once it
    lists again, the cache is the list, and the pods that changed or went away meanwhile wake
    their nodes (and only those), read from the cache again."""
    be, feed, woken, outcomes, settle, loop = _watched_group(tmp_path)
    try:
        woken.clear()
        feed.down = True
        feed.break_watch()
        deadline = time.monotonic() + 5
        while be._synced:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        failed = {"phase": "Failed", "containerStatuses": [{"state": {
            "terminated": {"exitCode": 3, "message": "run exited 3"}}}]}
        feed.change("g-a-1", failed, push=False)  # while nobody watches
        del feed.core.objs[("Pod", "g-b-0")]
        ref = NodeRef(9, 0, 1, "run", 1)
        assert be.outcome(ref, None).exit_code == 3 and feed.reads == 1  # not synced: GET
        assert be._cache["g-a-1"]["status"]["phase"] == "Running"  # the stale cache, unused
        feed.down = False
        settle(lambda: len(outcomes) == 2)
        assert sorted(woken) == ["g-a-1", "g-b-0"]  # g-a-0 did not change: not woken
        assert outcomes["g-a-1"].exit_code == 3 and outcomes["g-b-0"].signal == 9
        assert be._synced and set(be._cache) == {"g-a-0", "g-a-1"}
        assert be._cache["g-a-1"]["metadata"]["resourceVersion"] == str(feed.rv)
        # g-a-1 came from the cache; g-b-0, which the cache no longer has, from a GET (404)
        assert feed.reads == 2
    finally:
        feed.close()
        loop.close()


def test_a_change_the_watch_saw_before_start_wakes_the_node_at_once(tmp_path: Path) -> None:
    """`start` says nothing of the pod's state, so a change the watch saw before it (a pod that
    got through its phase while the controller was busy) must not wait for the pod's next
    change: the watch after `start` calls back at once (one `outcome`, from the cache)."""
    be, feed, woken, outcomes, settle, loop = _watched_group(tmp_path)
    try:
        feed.change("g-a-0", {"phase": "Succeeded", "containerStatuses": [{"state": {
            "terminated": {"exitCode": 0, "message": "run exited 0"}}}]})
        settle(lambda: "g-a-0" in outcomes)
        ref = NodeRef(9, 0, 0, "run", 1)
        handle = be.start(PhaseLaunch(ref=ref, task="a", script="true", env={}, workdir=None,
                                      log_path=tmp_path / "again.log", grace=1.0))
        late: list[Outcome] = []
        be.watch(loop, ref, handle, lambda: late.append(be.outcome(ref, handle)))
        settle(lambda: bool(late))
        assert late == [Outcome(exit_code=0)] and feed.reads == 0
    finally:
        feed.close()
        loop.close()


def test_a_request_the_api_server_refuses_while_admitting_is_refused(tmp_path: Path) -> None:
    """403 (forbidden by the cluster's RBAC) on an API call while admitting: `Refused` with the
    server's word, which the controller turns into FAILED_PRECHECKS; not Unreachable (the
    server answered) and not a bug of the backend."""
    from jobgroup.backends.base import Refused

    core = FakeCore()
    be = KubernetesBackend(tmp_path, KubernetesConfig(workload="pods"), core=core)
    group = load(GROUP)
    opts = be.admit(ctx(10, group, tmp_path)).facts  # its objects created

    def forbidden(*a, **k):
        raise ApiError(403)
    core.list_namespaced_pod = forbidden
    with pytest.raises(Refused, match="HTTP 403"):
        be.admit(ctx(10, group, tmp_path, **opts))
