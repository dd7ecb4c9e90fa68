"""`--infra kubernetes` end to end through the real controller and CLI, against the fake API
server + fake kubelet of `tests/k8sfake` (WRITTEN BY US: no real API server can run here; pods run
as local processes under bubblewrap, cluster DNS is emulated by hosts files). What a user observes
is asserted: exit codes, statuses and reasons, printed logs, the objects left in the cluster."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import Env, wait_for

pytest.importorskip("kubernetes", reason="pip install -e '.[kubernetes]' (the test extra has it)")
if not Path("/usr/bin/bwrap").exists() or os.geteuid() != 0:
    pytest.skip("the fake kubelet runs pods under bubblewrap, as root", allow_module_level=True)

from k8sfake import FakeCluster  # noqa: E402

PORT = 18473  # the fake runs pods on the host's network


def _kube_processes(kubeconfig: Path) -> list[int]:
    """Pids of processes started with this test's KUBECONFIG (the log followers, kubectl)."""
    marker = f"KUBECONFIG={kubeconfig}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


class K8s:
    def __init__(self, jenv: Env, cluster: FakeCluster, kubeconfig: Path) -> None:
        self.jenv, self.cluster, self.kubeconfig = jenv, cluster, kubeconfig

    def config(self, **settings: object) -> None:
        base = {"schedule_timeout": 20, "dns_wait_timeout": 20, "image": "fake:latest",
                **settings}
        self.jenv.home.mkdir(parents=True, exist_ok=True)
        (self.jenv.home / "kubernetes.yaml").write_text(json.dumps(base))

    def launch(self, text: str, *extra: str, timeout: float = 60):
        path = self.jenv.spec(text)
        return self.jenv.jg("launch", str(path), "--infra", "kubernetes", *extra,
                            timeout=timeout)

    def launch_d(self, text: str, *extra: str) -> int:
        p = self.launch(text, "-d", *extra)
        assert p.returncode == 0, p.stdout + p.stderr
        return int(p.stdout.split()[1])

    def kinds(self, ns: str = "default") -> dict[str, list[str]]:
        return {p: self.cluster.names(p, ns) for p in
                ("pods", "services", "configmaps", "secrets", "persistentvolumeclaims")
                if self.cluster.names(p, ns)}


@pytest.fixture
def k8s(jenv: Env, tmp_path: Path):
    cluster = FakeCluster(tmp_path, capacity={"cpu": 8, "memory": "16Gi", "pods": 50},
                          probe_scale=0.1)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    jenv.env["KUBECONFIG"] = str(kubeconfig)
    jenv.env["KUBECACHEDIR"] = str(tmp_path / "kube-cache")  # kubectl's discovery cache
    k = K8s(jenv, cluster, kubeconfig)
    k.config()
    try:
        yield k
    finally:
        if (jenv.home / "state.db").exists():
            jenv.jg("cancel", "--all", timeout=30)
            try:
                wait_for(lambda: all(j["status"] not in ("PENDING", "STARTING", "RUNNING",
                                                         "CANCELLING", "RECOVERING")
                                     for j in json.loads(jenv.jg("queue", "--all", "--json")
                                                         .stdout)), timeout=30)
            except AssertionError:
                pass
        jenv.stop_controller()
        cluster.stop()
        try:  # log followers end with their streams
            wait_for(lambda: not _kube_processes(kubeconfig), timeout=10)
        except AssertionError:
            pass
        left = _kube_processes(kubeconfig)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {left}"


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


def test_client_server_group_succeeds_and_logs_stay(k8s: K8s) -> None:
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
