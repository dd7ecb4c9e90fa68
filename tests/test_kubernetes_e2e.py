"""Kubernetes backend against a real cluster: runs only when KUBECONFIG points to a reachable
cluster and the `kubernetes` client is installed (pip install -e '.[kubernetes]'); skipped
otherwise. Creates the objects of a small group in $JOBGROUP_K8S_NAMESPACE (default: default),
checks that peers resolve by name and the group's pods succeed, then deletes everything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobgroup.backends.kubernetes import KubernetesConfig, render_objects
from jobgroup.spec import load


def _cluster():
    path = os.environ.get("KUBECONFIG")
    if not path or not all(Path(p).is_file() for p in path.split(os.pathsep) if p):
        pytest.skip("no cluster: set KUBECONFIG to a kubeconfig of a reachable cluster to run "
                    "the kubernetes end-to-end tests")
    client = pytest.importorskip("kubernetes.client",
                                 reason="pip install -e '.[kubernetes]' for the e2e tests")
    from kubernetes import config

    try:
        config.load_kube_config()
        core = client.CoreV1Api()
        core.list_namespace(limit=1, _request_timeout=5)
    except Exception as e:  # unreachable or unauthorised: say which
        pytest.skip(f"no cluster: KUBECONFIG={path} is not reachable ({type(e).__name__}: {e})")
    return client, core


GROUP = """\
name: jg-e2e
execution: parallel
---
name: server
resources: {ports: 8080, cpus: 0.1, memory: 0.1}
run: timeout 60 python3 -m http.server 8080
---
name: client
num_nodes: 2
resources: {cpus: 0.1, memory: 0.1}
run: python3 -c "import os, urllib.request; print(urllib.request.urlopen('http://' + os.environ['SKYPILOT_JOBGROUP_HOST_SERVER'] + ':8080/', timeout=30).status)"
"""


def test_group_runs_and_resolves_peers(tmp_path: Path) -> None:
    client, core = _cluster()
    ns = os.environ.get("JOBGROUP_K8S_NAMESPACE", "default")
    cfg = KubernetesConfig(namespace=ns)
    from jobgroup.backends.kubernetes.backend import KubernetesBackend

    be = KubernetesBackend(tmp_path, cfg, core=core)
    group = load(GROUP)
    job = int(time.time()) % 100000
    try:
        for obj in render_objects(group, job, cfg, base_dir=tmp_path):
            be._create(obj)
        deadline = time.time() + 300
        while time.time() < deadline:
            phases = {p.metadata.name: p.status.phase for p in core.list_namespaced_pod(
                ns, label_selector=f"jobgroup.dev/job-id={job}").items}
            if all(phases.get(f"jg-e2e-client-{r}") in ("Succeeded", "Failed") for r in (0, 1)):
                break
            time.sleep(2)
        assert phases.get("jg-e2e-client-0") == "Succeeded", phases
        assert phases.get("jg-e2e-client-1") == "Succeeded", phases
        log = core.read_namespaced_pod_log("jg-e2e-client-1", ns)
        assert "200" in log
    finally:
        be._groups[job] = group
        be.cleanup(job)
