"""The backend contract (`backends/base.py`): the same assertions against every backend — local,
the Slurm dev cluster (`jobgroup dev slurm up`'s cluster, started once for this module), and the
Kubernetes fake (`tests/k8sfake`, WRITTEN BY US, started once for this module).

Nomad's driver harness is the model: one fixture, `target`, parametrized over the backends, and
tests that know nothing of which one they drive. They drive jobgroup the way a user meets it
(the CLI, the controller it starts) for what a user observes — a phase's exit code, a graceful
stop, a controller restart — and the interface itself where that is the contract: `cleanup`
twice, `stop` of a phase that is gone, `recover` of one that never started, each called on a
fresh backend as a restarted controller creates it.

A backend that cannot run here is skipped with the reason (Slurm needs root and its daemons:
scripts/install-slurm; the fake kubelet needs root, bubblewrap, kubectl and the client library).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import Env, _zombie, wait_for
from k8senv import end_followers, kube_processes
from jobgroup.backends.base import ENDED, Backend, NodeRef
from jobgroup.state.status import Phase
from jobgroup.state.store import Store

ROOT = os.geteuid() == 0
SLURM = ROOT and shutil.which("slurmctld") is not None
K8S = ROOT and importlib.util.find_spec("kubernetes") is not None and \
    Path("/usr/bin/bwrap").exists() and shutil.which("kubectl") is not None

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("slurm", id="slurm", marks=pytest.mark.skipif(
        not SLURM, reason="the Slurm dev cluster needs root and Slurm (scripts/install-slurm)")),
    pytest.param("kubernetes", id="kubernetes", marks=pytest.mark.skipif(
        not K8S, reason="the Kubernetes fake needs root, bubblewrap, kubectl and "
                        "pip install -e '.[kubernetes]'")),
]
# How long a group may take here, by backend: Slurm and the fake cluster answer in seconds.
TIMEOUT = {"local": 30, "slurm": 120, "kubernetes": 90}


# ---- the clusters (slow to start: once per module) ----------------------------------------------

@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    from jobgroup.devcluster import slurm

    home = tmp_path_factory.mktemp("contract-slurm")
    info = slurm.up(home, nodes=3)
    try:
        yield info
    finally:
        slurm.down(home)


@pytest.fixture(scope="module")
def k8s_cluster(tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from k8sfake import FakeCluster

    root = tmp_path_factory.mktemp("contract-k8s")
    cluster = FakeCluster(root, capacity={"cpu": 8, "memory": "16Gi", "pods": 50})
    kubeconfig = cluster.write_kubeconfig(root / "kubeconfig")
    try:
        yield cluster, kubeconfig, root
    finally:
        cluster.stop()
        end_followers([kubeconfig])


# ---- the harness ----------------------------------------------------------------------------------

class Target:
    """One backend as the tests drive it: jobgroup's CLI on a private state directory with the
    backend's cluster configured, plus what only this backend knows — where a volume's data is
    on this machine, and what of a job could be left in its cluster."""

    def __init__(self, name: str, jenv: Env) -> None:
        self.name, self.jenv = name, jenv
        self.timeout = TIMEOUT[name]
        self.slurm_env: dict[str, str] = {}
        self.cluster = None

    # -- driving it as a user does --
    def launch(self, text: str, *extra: str) -> int:
        """`jobgroup launch -d` on this backend; the job's id."""
        p = self.jenv.jg("launch", str(self.jenv.spec(textwrap.dedent(text))), "-d",
                         "--infra", self.name, *extra, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        return int(p.stdout.split()[1])

    def wait(self, job: int) -> dict:
        return self.jenv.wait(job, timeout=self.timeout)

    def events(self, job: int) -> str:
        return self.jenv.jg("events", str(job), check=True).stdout

    def nodes(self, job: int) -> dict[str, object]:
        """The job's nodes as recorded, by `task-rank` (what `jobgroup events` and the
        dashboard show of them)."""
        store = Store(self.jenv.home)
        try:
            tasks = {t.idx: t.name for t in store.tasks(job)}
            return {f"{tasks[n.task_idx]}-{n.rank}": n for n in store.nodes(job)}
        finally:
            store.close()

    def volume(self, name: str) -> Path:
        """Where the data of volume `name` is on this machine (its nodes mount it)."""
        if self.name == "kubernetes":
            return self.cluster.volume_dir(name)
        from jobgroup.backends.local.mounts import volume_dir

        path = volume_dir(self.jenv.home, name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- the interface, as a restarted controller has it --
    def backend(self) -> Backend:
        """A fresh backend of this kind for the state directory, as a restarted controller
        creates it (it asks the controller's job lookup about jobs it was not handed)."""
        from jobgroup.backends import registry
        from jobgroup.controller.daemon import BackendJobs

        be = registry.create(self.name, self.jenv.home)
        be.jobs = BackendJobs(self.jenv.home, {})
        return be

    # -- what could be left --
    def leftovers(self, job: int) -> list[str]:
        """What of job `job` is still on this machine or in the cluster ([] when nothing):
        whatever `jobgroup doctor` finds of the state directory, and the backend's own."""
        out = []
        doctor = self.jenv.jg("doctor")
        if doctor.returncode != 0:
            out.append(f"jobgroup doctor: {doctor.stdout.strip()} {doctor.stderr.strip()}")
        if self.name == "slurm":
            from jobgroup.backends.local.network import home_tag

            want = f"jobgroup:{home_tag(self.jenv.home)}:{job}"
            p = subprocess.run(["squeue", "-h", "-o", "%A %k"], capture_output=True, text=True,
                               env={**os.environ, **self.slurm_env}, timeout=15)
            out += [f"Slurm job {line.split()[0]}" for line in p.stdout.splitlines()
                    if line.split()[1:] == [want]]
        if self.name == "kubernetes":
            uid = (self.jenv.home / "kubernetes.uid").read_text().strip()
            for plural in ("pods", "services", "configmaps", "secrets"):
                for o in self.cluster.objects(plural):
                    labels = o["metadata"].get("labels") or {}
                    if labels.get("jobgroup.dev/job-id") == str(job) and \
                            labels.get("jobgroup.dev/home") == uid:
                        out.append(f"{plural}/{o['metadata']['name']}")
            controller = self.jenv.controller_pid()
            out += [f"process {p}" for p in kube_processes(self.kubeconfig)
                    if p != controller]  # log followers, kubectl
        return out

    def nothing_left(self, job: int) -> None:
        """Nothing of the job is left, once the cluster has caught up (pods go after their
        grace, log followers after their streams)."""
        try:
            wait_for(lambda: not self.leftovers(job), timeout=20, interval=0.5)
        except AssertionError:
            raise AssertionError(f"left behind: {self.leftovers(job)}") from None


@pytest.fixture(params=BACKENDS)
def target(request, jenv: Env, monkeypatch: pytest.MonkeyPatch) -> Target:
    t = Target(request.param, jenv)
    if t.name == "slurm":
        t.slurm_env = request.getfixturevalue("slurm_cluster").env()
        jenv.env.update(t.slurm_env)  # the controller inherits it
        for k, v in t.slurm_env.items():
            monkeypatch.setenv(k, v)  # backends made in this process (`Target.backend`)
    elif t.name == "kubernetes":
        t.cluster, t.kubeconfig, root = request.getfixturevalue("k8s_cluster")
        jenv.env.update(KUBECONFIG=str(t.kubeconfig), KUBECACHEDIR=str(root / "kube-cache"))
        monkeypatch.setenv("KUBECONFIG", str(t.kubeconfig))
        jenv.home.mkdir(parents=True, exist_ok=True)
        (jenv.home / "kubernetes.yaml").write_text(json.dumps(
            {"schedule_timeout": 20, "dns_wait_timeout": 20, "image": "fake:latest"}))
    return t


def _kill_controller(jenv: Env) -> None:
    pid = jenv.controller_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)


def _event(events: str, who: str, kind: str) -> str:
    """The detail of the last event `kind` of `who` in `jobgroup events`' table."""
    found = re.findall(rf"^\S+ +\S+ +{re.escape(who)} +{re.escape(kind)} +(.*?) *$", events,
                       re.M)
    assert found, f"no {kind} event of {who} in:\n{events}"
    return found[-1]


# ---- the contract ------------------------------------------------------------------------------------

def test_a_phase_ends_and_its_exit_code_is_recorded(target: Target) -> None:
    job = target.launch("""
        name: ends
        ---
        name: a
        setup: echo setting up on $(hostname)
        run: echo hello from $(hostname); exit 3
        """)
    final = target.wait(job)
    assert final["status"] == "FAILED", final
    assert final["reason"] == "task 'a' run exited with code 3", final
    events = target.events(job)
    assert _event(events, "a-0", "setup-ended") == "exit code 0"
    assert _event(events, "a-0", "run-ended") == "exit code 3"
    node = target.nodes(job)["a-0"]
    assert node.phase == Phase.ENDED and node.exit_code == 3 and not node.stopped, node
    # the phase's handle, in the backend's own words ("pid 1234", "pod ends-a-0")
    assert _event(events, "a-0", "run-started") == target.backend().describe(node.handle)
    log = target.jenv.log(job, "a")
    assert "setting up on a-0" in log and "hello from a-0" in log, log
    target.nothing_left(job)


def test_stop_with_grace_runs_the_sigterm_handler_and_records_a_stop(target: Target) -> None:
    job = target.launch("""
        name: grace
        ---
        name: a
        run: |
          trap 'echo got TERM; exit 7' TERM
          echo ready
          sleep 300 & wait
        """, "--grace", "20")
    wait_for(lambda: "ready" in target.jenv.log(job, "a"), timeout=target.timeout)
    target.jenv.jg("cancel", str(job), check=True)
    final = target.wait(job)
    assert final["status"] == "CANCELLED", final
    wait_for(lambda: "got TERM" in target.jenv.log(job, "a"), timeout=10)
    node = target.nodes(job)["a-0"]
    assert node.phase == Phase.ENDED and node.stopped, node
    events = target.events(job)
    assert _event(events, "a-0", "stop")
    assert _event(events, "a-0", "run-ended")
    target.nothing_left(job)


RESTART = """
    name: {name}
    execution: parallel
    ---
    name: long
    run: |
      trap 'echo long got TERM; exit 0' TERM
      echo long up
      sleep 300 & wait
    ---
    name: short
    volumes: {{/flags: {name}-flags}}
    run: |
      echo short up
      until [ -e /flags/go ]; do sleep 0.1; done
      echo short done
      exit 4
    """


def _ends_after_restart(target: Target, job: int) -> None:
    """What a restarted controller must make of RESTART: `short` ends by itself (exit 4, the
    group fails fast) and `long`, which it adopted, is stopped through its stored handle."""
    final = target.wait(job)
    assert final["status"] == "FAILED", final
    assert final["reason"] == "task 'short' run exited with code 4", final
    events = target.events(job)
    assert _event(events, "short-0", "run-ended") == "exit code 4"
    assert _event(events, "long-0", "stop")
    wait_for(lambda: "long got TERM" in target.jenv.log(job, "long"), timeout=10)
    nodes = target.nodes(job)
    assert nodes["long-0"].stopped and not nodes["short-0"].stopped
    assert nodes["short-0"].exit_code == 4
    target.nothing_left(job)


def test_a_restarted_controller_adopts_what_runs_and_settles_what_ended(
        target: Target) -> None:
    job = target.launch(RESTART.format(name="adopt"))
    flags = target.volume("adopt-flags")
    wait_for(lambda: target.jenv.job(job)["status"] == "RUNNING" and
             "long up" in target.jenv.log(job, "long") and
             "short up" in target.jenv.log(job, "short"), timeout=target.timeout)
    _kill_controller(target.jenv)
    # `short` ends while no controller runs; its backend alone records how.
    (flags / "go").touch()
    short = NodeRef(job, 1, 0, "run", 1)
    be = target.backend()
    wait_for(lambda: be.recover(short) is ENDED, timeout=target.timeout)
    _ends_after_restart(target, job)  # `jobgroup wait` starts the next controller


def test_a_phase_whose_handle_was_never_stored_is_recovered(target: Target) -> None:
    """The controller dies right after its backend started a phase, before the handle was
    recorded (fault point `start.spawned`): the next controller finds the phase through
    `recover` and adopts it (and starts what never started)."""
    target.jenv.env["JOBGROUP_FAULT"] = "start.spawned"  # read by the controller it starts
    try:
        target.jenv.jg("controller", "start", check=True)
    finally:
        del target.jenv.env["JOBGROUP_FAULT"]
    pid = target.jenv.controller_pid()
    path = target.jenv.spec(textwrap.dedent(RESTART.format(name="recover")))
    launched = target.jenv.jg("launch", str(path), "-d", "--infra", target.name, timeout=60)
    if launched.returncode == 0:
        job = int(launched.stdout.split()[1])
    else:  # the controller died holding the answer (local: it starts in the same turn)
        assert "did not answer" in launched.stderr, launched.stdout + launched.stderr
        job = 1
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid),
             timeout=target.timeout)  # the fault fired
    long = target.nodes(job)["long-0"]
    assert long.phase == Phase.RUN and long.handle is None, long  # started, not recorded
    assert target.jenv.jg("controller", "start").returncode == 0
    wait_for(lambda: "long up" in target.jenv.log(job, "long") and
             "short up" in target.jenv.log(job, "short"), timeout=target.timeout)
    assert "(found after a controller restart)" in \
        _event(target.events(job), "long-0", "run-started")
    (target.volume("recover-flags") / "go").touch()
    _ends_after_restart(target, job)


def test_cleanup_twice_is_quiet_and_leaves_nothing(target: Target) -> None:
    job = target.launch("""
        name: clean
        ---
        name: a
        num_nodes: 2
        run: echo hi from $(hostname)
        """)
    assert target.wait(job)["status"] == "SUCCEEDED"
    target.nothing_left(job)
    node = target.nodes(job)["a-1"]
    ref = NodeRef(job, 0, 1, "run", 1)
    be = target.backend()  # a controller that never prepared the group
    assert node.handle is not None
    be.stop(ref, node.handle)  # its phase is gone: quiet
    be.stop(ref, node.handle, kill=True)
    assert be.recover(NodeRef(job, 0, 1, "run", 2)) is None  # never started
    be.cleanup(job)
    be.cleanup(job)  # twice: quiet
    target.nothing_left(job)
