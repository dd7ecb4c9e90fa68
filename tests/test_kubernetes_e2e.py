"""Kubernetes backend against a real cluster: runs only when KUBECONFIG points to a reachable
cluster and the `kubernetes` client is installed (pip install -e '.[kubernetes]'); skipped
otherwise. The same flows as tests/test_kubernetes_live.py (which uses our fake API server),
through the real CLI and controller: a server + 2-node client group whose clients reach the
server by name, logs after the end, and cancel deleting the group's objects; each as a JobSet
(when the cluster serves jobset.x-k8s.io/v1alpha2: JobSet v0.8 or later installed) and as bare
pods. Objects go to $JOBGROUP_K8S_NAMESPACE (default: default); the image is $JOBGROUP_K8S_IMAGE
(default python:3.11-slim: it needs bash, getent, tar and python3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import Env, wait_for


def _cluster():
    path = os.environ.get("KUBECONFIG")
    if not path or not all(Path(p).is_file() for p in path.split(os.pathsep) if p):
        pytest.skip("no cluster: set KUBECONFIG to a kubeconfig of a reachable cluster to run "
                    "the kubernetes end-to-end tests")
    client = pytest.importorskip("kubernetes.client",
                                 reason="pip install -e '.[kubernetes]' for the e2e tests")
    from kubernetes import config

    try:
        config.load_kube_config(config_file=path)
        core = client.CoreV1Api()
        core.list_namespace(limit=1, _request_timeout=5)
    except Exception as e:  # unreachable or unauthorised: say which
        pytest.skip(f"no cluster: KUBECONFIG={path} is not reachable ({type(e).__name__}: {e})")
    return core


@pytest.fixture(params=["jobset", "pods"])
def cluster(jenv: Env, request: pytest.FixtureRequest):
    core = _cluster()
    if request.param == "jobset":
        from kubernetes import client

        groups = client.ApisApi(core.api_client).get_api_versions().groups or []
        if not any(v.group_version == "jobset.x-k8s.io/v1alpha2" for g in groups
                   for v in g.versions or []):
            pytest.skip("the cluster does not serve JobSet (jobset.x-k8s.io/v1alpha2)")
    ns = os.environ.get("JOBGROUP_K8S_NAMESPACE", "default")
    jenv.home.mkdir(parents=True, exist_ok=True)
    (jenv.home / "kubernetes.yaml").write_text(json.dumps({
        "namespace": ns, "image": os.environ.get("JOBGROUP_K8S_IMAGE", "python:3.11-slim"),
        "schedule_timeout": 600, "workload": request.param}))
    return core, ns


GROUP = """\
name: jg-e2e
execution: parallel
primary_tasks: [client]
---
name: server
resources: {ports: 8080, cpus: 0.1, memory: 0.1}
run: exec python3 -m http.server 8080
---
name: client
num_nodes: 2
resources: {cpus: 0.1, memory: 0.1}
run: |
  python3 - <<'PY'
  import os, time, urllib.request
  url = "http://" + os.environ["SKYPILOT_JOBGROUP_HOST_SERVER"] + ":8080/"
  for _ in range(300):
      try:
          print("server answered", urllib.request.urlopen(url, timeout=5).status)
          break
      except OSError:
          time.sleep(1)
  PY
"""


def _left(core, ns: str, group: str) -> list[str]:
    sel = f"jobgroup.dev/group={group}"
    from kubernetes import client

    out = [f"{kind}/{o.metadata.name}" for kind, fn in (
        ("pod", core.list_namespaced_pod), ("service", core.list_namespaced_service),
        ("configmap", core.list_namespaced_config_map), ("secret", core.list_namespaced_secret))
        for o in fn(ns, label_selector=sel).items]
    try:
        out += [f"jobset/{o['metadata']['name']}" for o in client.CustomObjectsApi(
            core.api_client).list_namespaced_custom_object(
                "jobset.x-k8s.io", "v1alpha2", ns, "jobsets", label_selector=sel)["items"]]
    except client.ApiException:
        pass  # no JobSet API
    return out


def test_group_runs_resolves_peers_and_keeps_logs(jenv: Env, cluster) -> None:
    core, ns = cluster
    p = jenv.jg("launch", str(jenv.spec(GROUP)), "--infra", "kubernetes", timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    logs = jenv.jg("logs", "1", "client", check=True).stdout
    assert logs.count("server answered 200") == 2, logs
    wait_for(lambda: not _left(core, ns, "jg-e2e"), timeout=120)


def test_cancel_deletes_the_groups_objects(jenv: Env, cluster) -> None:
    core, ns = cluster
    spec = GROUP.replace("name: jg-e2e", "name: jg-e2e-cancel").replace(
        "primary_tasks: [client]\n", "")
    p = jenv.jg("launch", str(jenv.spec(spec)), "--infra", "kubernetes", "-d", check=True)
    job = int(p.stdout.split()[1])
    wait_for(lambda: _left(core, ns, "jg-e2e-cancel"), timeout=60)
    jenv.jg("cancel", str(job), check=True)
    wait_for(lambda: jenv.job(job)["status"] == "CANCELLED", timeout=120)
    wait_for(lambda: not _left(core, ns, "jg-e2e-cancel"), timeout=120)
