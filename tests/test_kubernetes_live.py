"""`--infra kubernetes` end to end through the real controller and CLI, against the fake API
server + fake kubelet of `tests/k8sfake` (WRITTEN BY US: no real API server can run here; pods run
as local processes under bubblewrap, cluster DNS is emulated by hosts files). What a user observes
is asserted: exit codes, statuses and reasons, printed logs, the objects left in the cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from conftest import Env, _zombie, wait_for

pytest.importorskip("kubernetes", reason="pip install -e '.[kubernetes]' (the test extra has it)")
if not Path("/usr/bin/bwrap").exists() or os.geteuid() != 0:
    pytest.skip("the fake kubelet runs pods under bubblewrap, as root", allow_module_level=True)
if shutil.which("kubectl") is None:  # logs and command probes go through kubectl, as for users
    pytest.skip("kubectl is not installed (the backend streams logs with it)",
                allow_module_level=True)

from k8senv import K8s, kube_processes, running  # noqa: E402

PORT = 18473  # the fake runs pods on the host's network


@pytest.fixture
def k8s(jenv: Env, tmp_path: Path):
    with running(jenv, tmp_path, capacity={"cpu": 8, "memory": "16Gi", "pods": 50,
                                           "nvidia.com/gpu": 1},
                 labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}) as k:
        yield k


CLIENT_SERVER = f"""\
name: web
execution: parallel
primary_tasks: [client]
---
name: server
resources: {{cpus: 0.5, ports: {PORT}}}
setup: echo server setup on $(hostname)
run: exec python3 -m http.server {PORT}
---
name: client
num_nodes: 2
resources: {{cpus: 0.5}}
run: |
  echo "client $SKYPILOT_NODE_RANK on $(hostname) asks $SKYPILOT_JOBGROUP_HOST_SERVER"
  getent hosts server-0.web | awk '{{print "server-0.web is", $1}}'
  python3 - <<'PY'
  import os, time, urllib.request
  url = f"http://{{os.environ['SKYPILOT_JOBGROUP_HOST_SERVER']}}:{PORT}/"
  for _ in range(100):
      try:
          print("server answered", urllib.request.urlopen(url, timeout=2).status)
          break
      except OSError:
          time.sleep(0.1)
  PY
"""


@pytest.mark.parametrize("follower", ["in time", "too early"])
def test_client_server_group_succeeds_and_logs_stay(k8s: K8s, follower: str) -> None:
    """Every node's output is in `jg logs`, also when the server's log follower was "too
    early": it asked for the log a moment before the container started, was turned away and
    asks again a second later; the group can be over by then, and the server's pod is deleted
    only once the follower has what it printed (its setup line)."""
    if follower == "too early":
        k8s.cluster.kubelet.asked_too_early("default", "web-server-0")
    p = k8s.launch(CLIENT_SERVER, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCEEDED" in p.stderr
    job = k8s.jenv.job(1)
    assert job["status"] == "SUCCEEDED"
    logs = k8s.jenv.jg("logs", "1", check=True).stdout
    for rank in (0, 1):
        assert f"client {rank} on client-{rank} asks server-0.web.default.svc.cluster.local" \
            in logs
    assert logs.count("server answered 200") == 2
    assert "server-0.web is 127.0." in logs
    assert "server setup on server-0" in logs
    # The group's objects are gone; nothing of it is left in the cluster.
    wait_for(lambda: not k8s.kinds(), timeout=20)


def _status(k8s: K8s, job_id: int) -> str:
    return k8s.jenv.job(job_id)["status"]


def _running(k8s: K8s, job_id: int) -> bool:
    return _status(k8s, job_id) == "RUNNING"


FAIL_FAST = """\
name: ff
execution: parallel
---
name: a
num_nodes: 2
run: |
  if [ "$SKYPILOT_NODE_RANK" = 1 ]; then echo failing on purpose; exit 3; fi
  exec sleep 300
---
name: b
run: exec sleep 300
"""


def test_fail_fast_names_the_node_and_deletes_the_other_pods(k8s: K8s) -> None:
    p = k8s.launch(FAIL_FAST, timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "FAILED" in last and "'a'" in last and "1" in last and "code 3" in last, last
    assert "failing on purpose" in k8s.jenv.jg("logs", "1", "a", "--node", "1").stdout
    wait_for(lambda: not k8s.kinds(), timeout=30)  # the sleeping pods were deleted too


CANCEL = """\
name: cx
execution: parallel
---
name: a
num_nodes: 2
volumes: {/ckpt: cx-data}
secrets: {TOKEN: s3cret}
run: exec sleep 300
---
name: b
run: exec sleep 300
"""


def test_cancel_deletes_every_object_but_the_volume(k8s: K8s) -> None:
    job = k8s.launch_d(CANCEL)
    wait_for(lambda: _running(k8s, job), timeout=30)
    assert k8s.kinds() == {
        "pods": ["cx-a-0", "cx-a-1", "cx-b-0"], "services": ["cx"], "configmaps": ["cx-job"],
        "secrets": ["cx-secrets"], "persistentvolumeclaims": ["cx-data"]}
    # the secret reached the pod through the Secret, never as a literal in the pod spec
    pod = k8s.cluster.store.get("pods", "default", "cx-a-0")
    assert "s3cret" not in json.dumps(pod)
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    wait_for(lambda: _status(k8s, job) == "CANCELLED", timeout=30)
    wait_for(lambda: k8s.kinds() == {"persistentvolumeclaims": ["cx-data"]}, timeout=30)


GANG = """\
name: gang
execution: parallel
---
name: small
run: exec sleep 300
---
name: big
resources: {accelerators: H100:2}
run: echo never
"""


def test_a_group_that_does_not_fit_releases_its_pods_and_tries_again(k8s: K8s) -> None:
    """All or nothing, queued and retried, never failed for want of room: bare pods not all
    scheduled within schedule_timeout are deleted (what the scheduled ones held goes back), the
    group stays PENDING with the scheduler's message, and its pods are made again later."""
    k8s.config(schedule_timeout=2)
    job = k8s.launch_d(GANG)
    reason = wait_for(lambda: (lambda j: "its pods released (all or nothing)" in j["reason"]
                               and j["reason"])(k8s.jenv.job(job)), timeout=30)
    assert "not every pod was scheduled within 2s" in reason, reason
    assert "pod gang-big-0: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." \
        in reason, reason
    assert k8s.jenv.job(job)["status"] == "PENDING"
    wait_for(lambda: not k8s.cluster.pods(), timeout=20)  # released: every pod deleted
    assert "services" in k8s.kinds()  # (the rest stays for the next try)
    wait_for(lambda: len(k8s.cluster.pods()) == 2, timeout=20)  # and made again
    assert k8s.jenv.job(job)["status"] == "PENDING"
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    assert k8s.jenv.wait(job, timeout=30)["status"] == "CANCELLED"
    wait_for(lambda: not k8s.kinds(), timeout=30)


OOM = """\
name: oom
execution: parallel
---
name: a
volumes: {/state: oom-state}
resources: {job_recovery: {strategy: FAILOVER}}
run: |
  if [ -e /state/first-attempt ]; then echo second attempt; exit 0; fi
  touch /state/first-attempt
  echo first attempt
  exec sleep 300
"""


@pytest.mark.parametrize("hook,note", [
    ("oom_kill", "out of memory (OOMKilled)"),
    ("evict", "evicted: The node was low on resource: memory."),
])
def test_oomkilled_or_evicted_is_preemption_and_recovered(k8s: K8s, hook: str,
                                                          note: str) -> None:
    job = k8s.launch_d(OOM)
    wait_for(lambda: _running(k8s, job) and "first attempt" in k8s.jenv.log(job, "a"),
             timeout=30)
    getattr(k8s.cluster.kubelet, hook)("default", "oom-a-0")
    done = k8s.jenv.wait(job, timeout=60)
    assert done["status"] == "SUCCEEDED", done
    assert done["tasks"][0]["restarts"] == 1
    events = k8s.jenv.jg("events", str(job)).stdout
    assert note in events and "(preempted); recovering" in events, events
    assert "second attempt" in k8s.jenv.jg("logs", str(job)).stdout
    wait_for(lambda: k8s.kinds() == {"persistentvolumeclaims": ["oom-state"]}, timeout=30)


SIMPLE = """\
name: simple
execution: parallel
---
name: a
run: echo hello from $(hostname)
"""


def test_an_unreachable_api_server_keeps_the_group_pending(k8s: K8s) -> None:
    k8s.cluster.go_down()
    job = k8s.launch_d(SIMPLE)
    reason = wait_for(lambda: (lambda j: j["status"] == "PENDING" and
                               "cannot reach Kubernetes" in j["reason"] and j["reason"])(
        k8s.jenv.job(job)), timeout=30)
    assert "connection refused" in reason, reason
    k8s.cluster.come_back()
    done = k8s.jenv.wait(job, timeout=60)
    assert done["status"] == "SUCCEEDED", done
    assert "hello from a-0" in k8s.jenv.jg("logs", str(job)).stdout


RESTART = """\
name: rs
execution: parallel
primary_tasks: [a]
---
name: a
volumes: {/flags: rs-flags}
run: |
  echo waiting for the flag
  until [ -e /flags/go ]; do sleep 0.1; done
  echo got the flag
---
name: b
run: exec sleep 300
"""


def test_a_restarted_controller_rebuilds_from_the_cluster(k8s: K8s) -> None:
    job = k8s.launch_d(RESTART)
    wait_for(lambda: _running(k8s, job) and "waiting for the flag" in k8s.jenv.log(job, "a"),
             timeout=30)
    pid = k8s.jenv.controller_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
    # The primary ends while no controller runs; the next one settles it and stops `b`.
    (k8s.cluster.volume_dir("rs-flags") / "go").touch()
    done = k8s.jenv.wait(job, timeout=60)  # starts a new controller
    assert done["status"] == "SUCCEEDED", done
    assert k8s.jenv.controller_pid() not in (None, pid)
    assert "got the flag" in k8s.jenv.jg("logs", str(job), "a").stdout
    wait_for(lambda: k8s.kinds() == {"persistentvolumeclaims": ["rs-flags"]}, timeout=30)


def test_volume_create_ls_rm_on_kubernetes(k8s: K8s) -> None:
    jg = k8s.jenv.jg
    p = jg("volume", "create", "ckpt", "--size", "5Gi", "--infra", "kubernetes")
    assert p.returncode == 0, p.stderr
    assert "Volume ckpt created: PersistentVolumeClaim in namespace default, 5Gi." in p.stdout
    claim = k8s.cluster.store.get("persistentvolumeclaims", "default", "ckpt")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    again = jg("volume", "create", "ckpt", "--infra", "kubernetes")
    assert again.returncode == 1 and "volume 'ckpt' already exists in namespace default" \
        in again.stderr and "Traceback" not in again.stderr
    bad = jg("volume", "create", "Not_A_Label", "--infra", "kubernetes")
    assert bad.returncode == 2 and "cannot name a PersistentVolumeClaim" in bad.stderr
    ls = jg("volume", "ls", "--infra", "kubernetes", check=True).stdout
    assert "ckpt" in ls and "5Gi" in ls and "Bound" in ls
    assert jg("volume", "rm", "ckpt", "--infra", "kubernetes", check=True).stdout.startswith(
        "Volume ckpt removed")
    assert k8s.cluster.names("persistentvolumeclaims") == []
    gone = jg("volume", "rm", "ckpt", "--infra", "kubernetes")
    assert gone.returncode != 0 and "no volume 'ckpt'" in gone.stderr


def test_launch_refuses_what_kubernetes_cannot_run(k8s: K8s) -> None:
    # ('_' and upper case get a DNS-safe form: tests/test_k8s_names.py; other scripts do not)
    p = k8s.launch(SIMPLE.replace("name: simple", "name: Grüße"))  # fine locally
    assert p.returncode == 2, p.stdout + p.stderr
    assert "not a valid DNS label" in p.stderr and "Traceback" not in p.stderr
    # (the controller reads the kubeconfig of the environment it was started from)
    k8s.jenv.stop_controller()
    k8s.jenv.env["KUBECONFIG"] = str(k8s.kubeconfig.with_name("missing"))
    p = k8s.launch(SIMPLE)
    assert p.returncode == 2 and "no usable kubeconfig" in p.stderr, p.stderr


PROBED = f"""\
name: pr
execution: parallel
---
name: server
readiness_probe: {{tcp: {{port: {PORT}}}, interval: 0.5}}
run: exec python3 -m http.server {PORT}
"""


def test_native_readiness_is_what_the_kubelet_reports(k8s: K8s, tmp_path: Path) -> None:
    """The pod's readinessProbe (run by the kubelet inside the cluster network) as the backend
    reads it: `node_ready`, which the controller asks instead of probing http/tcp addresses
    that resolve only inside the cluster."""
    from jobgroup.backends.base import JobContext, NodeRef
    from jobgroup.backends.kubernetes import KubernetesConfig
    from jobgroup.backends.kubernetes.backend import KubernetesBackend
    from jobgroup.backends.kubernetes.render import render_objects
    from jobgroup.spec import load

    os.environ["KUBECONFIG"] = str(k8s.kubeconfig)
    try:
        be = KubernetesBackend(tmp_path, KubernetesConfig())
        group = load(PROBED)
        be.prepare(JobContext(job_id=7, group=group, options={}, base_dir=tmp_path))
        for obj in render_objects(group, 7, be.config, base_dir=tmp_path,  # not gated
                                  workload="pods"):
            be._create(obj)
        server = NodeRef(7, 0, 0, "run", 1)
        assert be.node_ready(server) is False
        wait_for(lambda: be.node_ready(server), timeout=20)
        be.cleanup(7)
        wait_for(lambda: not k8s.kinds(), timeout=20)
    finally:
        os.environ.pop("KUBECONFIG", None)


HTTP_PROBE = f"""\
name: hp
execution: parallel
primary_tasks: [client]
---
name: server
readiness_probe: {{http: {{port: {PORT}, path: /}}, initial_delay: 0.5, interval: 0.3}}
run: sleep 1; exec python3 -m http.server {PORT}
---
name: client
depends_on: {{server: ready}}
run: echo client ran after the kubelet saw the server ready
"""


def test_http_readiness_and_depends_on_ready_through_the_kubelet(k8s: K8s) -> None:
    """An http probe becomes the pod's readinessProbe; the controller takes the kubelet's
    verdict (the node's name resolves only inside the cluster), so `depends_on: ready` holds."""
    p = k8s.launch(HTTP_PROBE, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    events = k8s.jenv.jg("events", "1").stdout
    ready = re.search(r"server-0 +ready", events)
    started = re.search(r"client-0 +run-started", events)
    assert ready and started and ready.start() < started.start(), events
    assert "client ran after the kubelet saw the server ready" in \
        k8s.jenv.jg("logs", "1", "client").stdout


def test_cancel_while_the_api_server_is_down_waits_for_it(k8s: K8s) -> None:
    """Stopping pods needs the API server: while it is down the group stays CANCELLING (an
    `unreachable` event says why, once) instead of failing; once it is back, the pods go."""
    job = k8s.launch_d(CANCEL)
    wait_for(lambda: _running(k8s, job), timeout=30)
    k8s.cluster.go_down()
    k8s.jenv.jg("cancel", str(job), check=True)
    wait_for(lambda: "cannot reach Kubernetes" in k8s.jenv.jg("events", str(job)).stdout,
             timeout=30)
    assert _status(k8s, job) == "CANCELLING"
    assert k8s.kinds()["pods"]  # nothing could be deleted
    k8s.cluster.come_back()
    done = k8s.jenv.wait(job, timeout=60)
    assert done["status"] == "CANCELLED", done
    assert k8s.jenv.jg("events", str(job)).stdout.count("unreachable") == 1
    wait_for(lambda: k8s.kinds() == {"persistentvolumeclaims": ["cx-data"]}, timeout=30)


def test_launch_warns_in_the_terms_of_kubernetes(k8s: K8s) -> None:
    p = k8s.launch("name: w\nresources: {image_id: 'docker:python:3.12', use_spot: true}\n"
                   "run: echo hi\n", "-d")
    assert p.returncode == 0, p.stderr
    assert "resources.use_spot is ignored on kubernetes" in p.stderr
    assert "image_id is ignored" not in p.stderr  # pods do run images
    assert k8s.jenv.wait(int(p.stdout.split()[1]))["status"] == "SUCCEEDED"


COMMAND_PROBE = f"""\
name: cp
execution: parallel
primary_tasks: [client]
---
name: server
readiness_probe: {{command: "python3 -c 'import socket; socket.create_connection((\\"127.0.0.1\\", {PORT}), 1)'", interval: 0.3}}
run: exec python3 -m http.server {PORT}
---
name: client
depends_on: {{server: ready}}
run: echo client ran after the server was ready
"""


def test_command_readiness_probe_runs_in_the_pod(k8s: K8s) -> None:
    """A `command` probe runs inside the node's pod (kubectl exec), so `depends_on: ready`
    works wherever the controller runs."""
    p = k8s.launch(COMMAND_PROBE, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    events = k8s.jenv.jg("events", "1").stdout
    assert re.search(r"server-0 +ready", events), events
    assert "client ran after the server was ready" in \
        k8s.jenv.jg("logs", "1", "client").stdout


def test_the_context_of_kubernetes_yaml_wins_over_the_current_one(k8s: K8s) -> None:
    url = k8s.cluster.url
    k8s.kubeconfig.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- {{name: fake, cluster: {{server: "{url}"}}}}
- {{name: nowhere, cluster: {{server: "http://127.0.0.1:9"}}}}
users:
- {{name: u, user: {{token: t}}}}
contexts:
- {{name: fake, context: {{cluster: fake, user: u}}}}
- {{name: nowhere, context: {{cluster: nowhere, user: u}}}}
current-context: nowhere
""")
    k8s.config(context="nope")
    p = k8s.launch(SIMPLE)
    assert p.returncode == 2 and "kubernetes.yaml names context 'nope', which the kubeconfig " \
        f"does not have (it has: fake, nowhere; read from {k8s.kubeconfig})" in p.stderr, p.stderr
    k8s.config(context="fake")
    p = k8s.launch(SIMPLE)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "hello from a-0" in k8s.jenv.jg("logs", "1").stdout


TICKS = """\
name: tk
execution: parallel
---
name: a
run: |
  for i in $(seq 0 29); do echo "tick $i"; sleep 0.1; done
"""


def test_logs_survive_an_api_server_outage(k8s: K8s) -> None:
    """The API server goes away while a node prints: its log stream breaks, and the follower
    resumes it when the server is back; every line is in the node's log, in order."""
    job = k8s.launch_d(TICKS)
    wait_for(lambda: "tick 5" in k8s.jenv.log(job, "a"), timeout=30)
    k8s.cluster.go_down()
    time_down = k8s.jenv.log(job, "a").count("tick")
    node_log = k8s.cluster.kubelet.runs[("default", "tk-a-0")].log  # the kubelet's copy
    wait_for(lambda: node_log.read_bytes().count(b" F tick") >= time_down + 5, timeout=10)
    k8s.cluster.come_back()
    assert k8s.jenv.wait(job, timeout=60)["status"] == "SUCCEEDED"
    ticks = [int(line.split()[-1]) for line in k8s.jenv.log(job, "a").splitlines()
             if line.startswith("tick ")]
    assert sorted(set(ticks)) == list(range(30)), ticks
    # resumed from the second it broke: the lines of that second (10 ticks) may repeat
    assert len(ticks) - 30 <= 10, ticks


EARLY = """\
name: early
execution: parallel
---
name: a
num_nodes: 2
setup: echo set up before the follower asked
run: exec sleep 300
"""


def _early_nodes(k8s: K8s, monkeypatch: pytest.MonkeyPatch, times: int):
    """The backend driven as the controller drives it (admit, then the setup phase of both
    nodes of EARLY started), with each node's log follower turned away `times` times as if it
    had asked before the container started (it asks again a second later); by then the nodes
    have printed their setup line. Returns (backend, [(handle, node ref, log path)])."""
    from jobgroup.backends.base import JobContext, NodeRef, PhaseLaunch
    from jobgroup.backends.kubernetes.backend import backend_from_env
    from jobgroup.spec import load
    from jobgroup.state import layout as paths

    home = k8s.jenv.home
    monkeypatch.setenv("KUBECONFIG", str(k8s.kubeconfig))  # the followers' kubectl
    monkeypatch.setenv("KUBECACHEDIR", k8s.jenv.env["KUBECACHEDIR"])
    be = backend_from_env(home)
    group = load(EARLY)
    job = JobContext(job_id=1, group=group, options={}, base_dir=home)
    assert be.admit(job).state == "waiting"  # its objects created
    wait_for(lambda: be.admit(job).state == "ready", timeout=20)
    be.prepare(job)
    kubelet = k8s.cluster.kubelet
    nodes = []
    for rank in (0, 1):
        pod = ("default", f"early-a-{rank}")
        wait_for(lambda: pod in kubelet.runs and b"set up before" in
                 kubelet.runs[pod].log.read_bytes(), timeout=20)
        kubelet.asked_too_early(*pod, times=times)
        ref = NodeRef(1, 0, rank, "setup", 1)
        log_path = paths.log_path(home, 1, "a", rank)
        handle = be.start(PhaseLaunch(ref=ref, task="a", script="", env={}, workdir=None,
                                      log_path=log_path, grace=1.0))
        nodes.append((handle, ref, log_path))
    wait_for(lambda: all(kubelet.early.get(("default", f"early-a-{r}"), 0) < times
                         for r in (0, 1)), timeout=20)  # each follower was turned away
    return be, nodes


def test_a_node_stopped_before_its_log_follower_got_a_line_keeps_its_output(
        k8s: K8s, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node stopped while its log follower, turned away a moment before the container
    started, has not asked again yet keeps what it printed: its pod (whose log goes with it)
    is deleted only once the follower has that output."""
    be, nodes = _early_nodes(k8s, monkeypatch, times=1)
    for handle, ref, _ in nodes:
        be.stop(ref, handle, kill=True)
    wait_for(lambda: not k8s.cluster.pods(), timeout=20)
    wait_for(lambda: not kube_processes(k8s.kubeconfig), timeout=20)  # the followers ended
    for _, _, log_path in nodes:
        assert log_path.read_text() == "set up before the follower asked\n"


def test_a_follower_that_never_gets_a_stream_holds_only_the_first_stop(
        k8s: K8s, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A follower that gets no stream within LOG_WAIT (here: turned away again and again, as
    when kubectl cannot reach the cluster) is named in controller.log, and the next stops do
    not wait for their followers (nor read their pods' logs to find out whether to)."""
    import logging

    from jobgroup.backends.kubernetes import backend

    monkeypatch.setattr(backend, "LOG_WAIT", 1.0)
    be, [(h0, r0, l0), (h1, r1, _)] = _early_nodes(k8s, monkeypatch, times=1000)
    with caplog.at_level(logging.WARNING, logger="jobgroup.kubernetes"):
        be.stop(r0, h0, kill=True)
    assert f"the log follower of pod early-a-0 (kubectl logs -f) got no stream within 1s; its " \
        f"output may be missing from {l0}" in caplog.text
    be.stop(r1, h1, kill=True)
    reads = [r for r in k8s.cluster.server.requests if "/log?" in r and "limitBytes" in r]
    assert reads and all("early-a-0" in r for r in reads), reads
    wait_for(lambda: not k8s.cluster.pods(), timeout=20)
    wait_for(lambda: not kube_processes(k8s.kubeconfig), timeout=20)  # the followers ended


SLOW_STOP = """\
name: dev
execution: parallel
---
name: a
run: |
  trap 'echo stopping slowly; sleep 3; exit 0' TERM
  echo attempt of job $SKYPILOT_JOBGROUP_ID
  sleep 300 & wait
"""


def test_relaunch_right_after_cancel_waits_for_the_old_pods(k8s: K8s) -> None:
    """`cancel g; launch g.yaml`: the old pod stays Terminating for a while (its run script
    takes 3 s to stop) under the very name the new job needs. The new job waits for it to go
    (never adopts it) and then runs its own pod."""
    old = k8s.launch_d(SLOW_STOP)
    # its trap is set once it has printed (RUNNING alone: the pod may still wait at its gate,
    # and then ends at once on SIGTERM)
    wait_for(lambda: _running(k8s, old) and "attempt of job" in k8s.jenv.log(old, "a"),
             timeout=30)
    assert k8s.jenv.jg("cancel", str(old)).returncode == 0
    wait_for(lambda: (k8s.cluster.store.find("pods", "default", "dev-a-0") or {})
             .get("metadata", {}).get("deletionTimestamp"), timeout=20)
    new = k8s.launch_d(SLOW_STOP)
    reasons = set()

    def running() -> bool:
        reasons.add(k8s.jenv.job(new).get("reason") or "")
        return _running(k8s, new)

    wait_for(running, timeout=30)
    # (which object it waited for depends on timing: the old job's ConfigMap and Service go
    # once its pod has stopped, the pod a moment later)
    assert any(re.fullmatch(r"waiting for (Pod dev-a-0|ConfigMap dev-job|Service dev) of job 1 "
                            r"to be deleted", r) for r in reasons), reasons
    pod = k8s.cluster.store.get("pods", "default", "dev-a-0")
    assert pod["metadata"]["labels"]["jobgroup.dev/job-id"] == str(new)
    assert not pod["metadata"].get("deletionTimestamp")
    assert _status(k8s, old) == "CANCELLED"


def test_two_state_directories_in_one_namespace_keep_their_own_objects(
        k8s: K8s, tmp_path: Path) -> None:
    """Job ids start at 1 in every state directory: the home uid label keeps two users in one
    namespace apart (selectors, cleanup's fallback, the 409 check)."""
    from jobgroup.backends.base import JobContext
    from jobgroup.backends.kubernetes import KubernetesConfig
    from jobgroup.backends.kubernetes.backend import KubernetesBackend
    from jobgroup.spec import load

    os.environ["KUBECONFIG"] = str(k8s.kubeconfig)
    try:
        alice = KubernetesBackend(tmp_path / "alice", KubernetesConfig())
        bob = KubernetesBackend(tmp_path / "bob", KubernetesConfig())
        uid = tmp_path / "alice" / "kubernetes.uid"
        assert uid.stat().st_mode & 0o777 == 0o600
        assert alice.config.home_uid == uid.read_text().strip() != bob.config.home_uid
        assert KubernetesBackend(tmp_path / "alice", KubernetesConfig()).config.home_uid == \
            alice.config.home_uid  # created once
        group = load(SIMPLE)
        job1 = JobContext(job_id=1, group=group, options={}, base_dir=tmp_path)
        assert alice.admit(job1).state == "waiting"
        mine = {p: k8s.cluster.names(p) for p in ("pods", "services", "configmaps")}
        for p in mine:
            for o in k8s.cluster.objects(p):
                assert o["metadata"]["labels"]["jobgroup.dev/home"] == alice.config.home_uid
        # bob's job 1 (a group of the same name) is refused, not adopted
        refused = bob.admit(job1)
        assert refused.state == "failed", refused
        assert "already runs in namespace default (job 1 of another jobgroup state " \
            "directory)" in refused.reason
        # ... and bob's cleanup of his job 1 (unknown to his store: the fallback selector)
        # leaves alice's objects alone
        bob.cleanup(1)
        assert {p: k8s.cluster.names(p) for p in mine} == mine
        alice.cleanup(1)
        wait_for(lambda: not k8s.kinds(), timeout=20)
    finally:
        os.environ.pop("KUBECONFIG", None)


def test_volume_rm_refuses_a_claim_jobgroup_did_not_create(k8s: K8s) -> None:
    k8s.cluster.store.create("persistentvolumeclaims", "default", {
        "metadata": {"name": "theirs", "labels": {"team": "db"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    p = k8s.jenv.jg("volume", "rm", "theirs", "--infra", "kubernetes")
    assert p.returncode == 2 and "was not created by jobgroup" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert k8s.cluster.names("persistentvolumeclaims") == ["theirs"]


def test_volume_commands_report_api_errors_without_a_traceback(k8s: K8s) -> None:
    """A namespace the fake does not know answers 404 NotFound (real clusters: 401/403 alike)."""
    k8s.config(namespace="no-such-namespace")
    p = k8s.jenv.jg("volume", "ls", "--infra", "kubernetes")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "Error: Kubernetes refused listing" in p.stderr and \
        'namespaces "no-such-namespace" not found' in p.stderr, p.stderr
    p = k8s.jenv.jg("volume", "rm", "x", "--infra", "kubernetes")
    assert p.returncode != 0 and p.stderr.startswith("Error: ") and "Traceback" not in p.stderr


def test_launch_refuses_a_group_name_that_starts_with_a_digit(k8s: K8s) -> None:
    p = k8s.launch(SIMPLE.replace("name: simple", "name: 1st-try"))  # a DNS-1123 label
    assert p.returncode == 2, p.stdout + p.stderr
    assert "group name '1st-try' does not start with a letter" in p.stderr
    assert "Traceback" not in p.stderr
    assert not k8s.kinds()


GATED = """\
name: gate
execution: parallel
---
name: a
run: echo the run started
"""


def test_a_run_gate_that_fails_to_open_is_tried_again(k8s: K8s) -> None:
    """The exec that opens the run gate fails (the command exits 1, then the API server cannot
    reach the kubelet): the job shows RUNNING, its run has not started, and the gate is tried
    again without any change of the pod until it opens."""
    k8s.cluster.exec_exit = 1
    job = k8s.launch_d(GATED)
    wait_for(lambda: _running(k8s, job), timeout=30)
    execs = lambda: sum("/exec?" in r for r in k8s.cluster.server.requests)  # noqa: E731
    wait_for(lambda: execs() >= 2, timeout=10)  # tried again, with no pod change
    k8s.cluster.fail_exec = 500  # first: no exec may succeed in between
    k8s.cluster.exec_exit = None
    seen = execs()
    wait_for(lambda: execs() > seen, timeout=10)
    assert "the run started" not in k8s.jenv.log(job, "a")
    assert _status(k8s, job) == "RUNNING"
    k8s.cluster.fail_exec = None
    done = k8s.jenv.wait(job, timeout=30)
    assert done["status"] == "SUCCEEDED", done
    assert "the run started" in k8s.jenv.jg("logs", str(job)).stdout


def test_exec_forbidden_by_rbac_fails_the_group_with_the_servers_message(k8s: K8s) -> None:
    k8s.cluster.fail_exec = 403
    job = k8s.launch_d(GATED)
    done = k8s.jenv.wait(job, timeout=30)
    assert done["status"] == "FAILED", done
    assert "Kubernetes refused exec into pod gate-a-0" in done["reason"], done
    assert 'cannot get resource "pods/exec"' in done["reason"], done
    wait_for(lambda: not k8s.kinds(), timeout=20)


STUBBORN = """\
name: stubborn
execution: parallel
---
name: a
run: |
  trap '' TERM
  echo ignoring SIGTERM
  sleep 300
"""


def test_cancel_stops_pods_within_the_launchs_grace(k8s: K8s) -> None:
    """`--grace 1`: a node that ignores SIGTERM is killed after 1 s, not the pod's default 30."""
    job = k8s.launch_d(STUBBORN, "--grace", "1")
    wait_for(lambda: _running(k8s, job) and "ignoring SIGTERM" in k8s.jenv.log(job, "a"),
             timeout=30)
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    wait_for(lambda: _status(k8s, job) == "CANCELLED", timeout=10)


def test_exec_and_top_go_through_the_api(k8s: K8s) -> None:
    """Issue 20 on Kubernetes: `jobgroup exec` is the pod's exec (kubectl, through the API
    server), with the exit code back; `top` asks the metrics API and says when the cluster has
    none (the fake has no metrics-server)."""
    job = k8s.launch_d("name: kx\nresources: {cpus: 0.5}\nrun: echo up > /tmp/up; exec sleep 60\n")
    wait_for(lambda: k8s.jenv.job(job)["status"] == "RUNNING", timeout=30)
    p = wait_for(lambda: (lambda q: q if q.returncode == 3 else None)(
        k8s.jenv.jg("exec", str(job), "--", "sh", "-c", "hostname; exit 3", timeout=30)),
        timeout=30)
    assert p.stdout.strip().startswith("kx-0"), p.stdout + p.stderr
    top = json.loads(k8s.jenv.jg("top", str(job), "--json", check=True).stdout)
    use = top["nodes"][0]["usage"]
    assert use["source"] == "metrics API" and "metrics-server" in use["note"], use
    events = json.loads(k8s.jenv.jg("events", str(job), "--json", check=True).stdout)
    assert any(e["kind"] == "exec" and "ran sh -c" in e["message"] for e in events)
