"""The fake API server + kubelet of tests/k8sfake (written by us) answers the official client
like a real one where the backend depends on it: Status objects for errors, label selectors,
watch replay from a resourceVersion, write-only stringData, the scheduler's Unschedulable
condition, the kubelet's `$(VAR)` expansion and container states."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import wait_for

client = pytest.importorskip("kubernetes.client")
if not Path("/usr/bin/bwrap").exists() or os.geteuid() != 0:
    pytest.skip("the fake kubelet runs pods under bubblewrap, as root", allow_module_level=True)

from k8sfake import FakeCluster  # noqa: E402
from k8sfake.kubelet import expand  # noqa: E402


@pytest.fixture
def api(tmp_path: Path):
    from kubernetes import config, watch

    with FakeCluster(tmp_path, capacity={"cpu": 2}, probe_scale=0.1) as k8s:
        cfg = client.Configuration()
        config.load_kube_config(str(k8s.write_kubeconfig(tmp_path / "kc")),
                                client_configuration=cfg)
        core = client.CoreV1Api(client.ApiClient(cfg))
        core.watch = watch
        core.cluster = k8s
        yield core


def _pod(name: str, command: str, labels: dict | None = None, cpu: str = "100m") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "c", "image": "x", "command": ["/bin/sh", "-c", command],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-$$(A)"},
                        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                "resources": {"requests": {"cpu": cpu}}}]}}


def test_errors_are_status_objects(api) -> None:
    with pytest.raises(client.ApiException) as e:
        api.read_namespaced_pod("nope", "default")
    body = json.loads(e.value.body)
    assert (e.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    api.create_namespaced_config_map("default", {"metadata": {"name": "m"}})
    with pytest.raises(client.ApiException) as e:
        api.create_namespaced_config_map("default", {"metadata": {"name": "m"}})
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"


def test_selectors_secrets_and_watch_replay(api) -> None:
    for name, labels in (("a", {"t": "x"}), ("b", {"t": "y", "skip": "1"}), ("c", {"t": "z"})):
        api.create_namespaced_config_map("default", {"metadata": {"name": name,
                                                                   "labels": labels}})
    names = lambda sel: [m.metadata.name for m in  # noqa: E731
                         api.list_namespaced_config_map("default", label_selector=sel).items]
    assert names("t in (x,y)") == ["a", "b"]
    assert names("t,!skip") == ["a", "c"]
    assert names("t!=z") == ["a", "b"]
    api.create_namespaced_secret("default", {"metadata": {"name": "s"},
                                             "stringData": {"k": "v"}})
    secret = api.read_namespaced_secret("s", "default")
    assert secret.data == {"k": "dg=="} and secret.string_data is None
    rv = api.list_namespaced_config_map("default").metadata.resource_version
    api.delete_namespaced_config_map("a", "default")
    events = [(e["type"], e["object"].metadata.name) for e in api.watch.Watch().stream(
        api.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1)]
    assert events == [("DELETED", "a")]


def test_scheduler_and_kubelet(api) -> None:
    api.create_namespaced_secret("default", {"metadata": {"name": "s"},
                                             "stringData": {"k": "secret"}})
    api.create_namespaced_pod("default", _pod(
        "ok", 'echo "$A $B $S $(A) $(HOSTNAME)"; echo bye > /dev/termination-log; exit 3'))
    api.create_namespaced_pod("default", _pod("big", "true", cpu="3"))

    def state(name: str):
        st = api.read_namespaced_pod(name, "default").status
        return st.container_statuses[0].state.terminated if st.container_statuses else None

    term = wait_for(lambda: state("ok"), timeout=20)
    assert (term.exit_code, term.reason, term.message) == (3, "Error", "bye\n")
    assert api.read_namespaced_pod_log("ok", "default") == "1 1-$(A) secret 1 ok\n"
    big = api.read_namespaced_pod("big", "default").status
    cond = next(c for c in big.conditions if c.type == "PodScheduled")
    assert (big.phase, cond.status, cond.reason, cond.message) == (
        "Pending", "False", "Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.")


def test_expand_like_the_kubelet() -> None:
    env = {"A": "1"}
    assert expand("$(A) $$(A) $(B) $((1+1)) $", env) == "1 $(A) $(B) $((1+1)) $"
