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


# --- Jobs, JobSets, Kueue (tests/k8sfake/controllers.py) -------------------------------------

JS = ("jobset.x-k8s.io", "v1alpha2", "default", "jobsets")


@pytest.fixture
def apis(tmp_path: Path):
    from kubernetes import config

    with FakeCluster(tmp_path, capacity={"cpu": 4}, probe_scale=0.1, jobset=True,
                     kueue={"q": {"cpu": 1}}) as k8s:
        cfg = client.Configuration()
        config.load_kube_config(str(k8s.write_kubeconfig(tmp_path / "kc")),
                                client_configuration=cfg)
        api = client.ApiClient(cfg)
        yield client.CoreV1Api(api), client.CustomObjectsApi(api), k8s


def _rjob(name: str, command: str, n: int = 1, cpu: str = "100m", deps=None, **job) -> dict:
    out = {"name": name, "replicas": 1, "template": {"spec": {
        "completionMode": "Indexed", "completions": n, "parallelism": n, "backoffLimit": 0,
        **job, "template": {"metadata": {"labels": {"task": name}}, "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "node", "image": "x", "command": ["/bin/sh", "-c", command],
                "resources": {"requests": {"cpu": cpu}}}]}}}}}
    if deps:
        out["dependsOn"] = deps
    return out


def _jobset(name: str, *rjobs: dict, labels=None, **spec) -> dict:
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {**spec, "replicatedJobs": list(rjobs)}}


def _status(custom, name: str) -> dict:
    return custom.get_namespaced_custom_object(*JS, name).get("status") or {}


def test_discovery_says_which_groups_the_cluster_serves(tmp_path: Path) -> None:
    from kubernetes import config

    for jobset, want in ((False, {"batch"}), (True, {"batch", "jobset.x-k8s.io"})):
        with FakeCluster(tmp_path, jobset=jobset) as k8s:
            cfg = client.Configuration()
            config.load_kube_config(str(k8s.write_kubeconfig(tmp_path / "kc")),
                                    client_configuration=cfg)
            groups = client.ApisApi(client.ApiClient(cfg)).get_api_versions().groups
            assert {g.name for g in groups} == want


def test_a_jobset_runs_indexed_jobs_and_completes_on_its_success_policy(apis) -> None:
    """Pods named and addressed as JobSet and the Job controller do, the index in the env;
    the primary's Job completing completes the JobSet, which deletes the other Jobs; after
    ttlSecondsAfterFinished the JobSet goes, and what it owns with it."""
    core, custom, k8s = apis
    custom.create_namespaced_custom_object(*JS, _jobset(
        "g", _rjob("p", 'echo "$JOB_COMPLETION_INDEX $(hostname)"', n=2),
        _rjob("aux", "exec sleep 100"),
        successPolicy={"operator": "All", "targetReplicatedJobs": ["p"]},
        # long enough for the checks below on a loaded machine (1 s raced them in a CI run)
        ttlSecondsAfterFinished=5))
    js = custom.get_namespaced_custom_object(*JS, "g")
    core.create_namespaced_config_map("default", {"metadata": {"name": "owned", "ownerReferences": [
        {"apiVersion": js["apiVersion"], "kind": "JobSet", "name": "g",
         "uid": js["metadata"]["uid"]}]}})
    wait_for(lambda: k8s.names("services") == ["g"], timeout=20)  # JobSet's own Service
    wait_for(lambda: _status(custom, "g").get("terminalState") == "Completed", timeout=20)
    cond = next(c for c in _status(custom, "g")["conditions"] if c["type"] == "Completed")
    assert (cond["status"], cond["reason"]) == ("True", "AllJobsCompleted")
    pods = k8s.pods(selector="task=p")
    assert sorted(p["spec"]["hostname"] for p in pods) == ["g-p-0-0", "g-p-0-1"]
    for p in pods:
        index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        assert p["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] == "g"
        assert p["spec"]["subdomain"] == "g"
        assert core.read_namespaced_pod_log(p["metadata"]["name"], "default") == \
            f"{index} g-p-0-{index}\n"
    wait_for(lambda: not k8s.names("jobsets") and not k8s.names("configmaps")
             and not k8s.names("services"), timeout=20)
    wait_for(lambda: not k8s.pods(), timeout=20)  # the auxiliary's pod went with its Job


def test_a_failed_job_fails_the_jobset_or_restarts_it(apis) -> None:
    core, custom, k8s = apis
    custom.create_namespaced_custom_object(*JS, _jobset("f", _rjob("a", "exit 3"),
                                                         _rjob("b", "exec sleep 100")))
    wait_for(lambda: _status(custom, "f").get("terminalState") == "Failed", timeout=20)
    cond = next(c for c in _status(custom, "f")["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "FailedJobs" and "first failed job: f-a-0" in cond["message"]
    wait_for(lambda: not k8s.pods(selector="task=b"), timeout=20)  # fail-fast
    custom.create_namespaced_custom_object(*JS, _jobset(
        "r", _rjob("a", "sleep 0.3; exit 3"), failurePolicy={"maxRestarts": 1}))
    wait_for(lambda: _status(custom, "r").get("terminalState") == "Failed", timeout=20)
    st = _status(custom, "r")
    assert st["restarts"] == 1
    assert next(c for c in st["conditions"] if c["type"] == "Failed")["reason"] == \
        "ReachedMaxRestarts"


def test_pod_failure_policy_and_depends_on(apis) -> None:
    """An exit code the podFailurePolicy ignores gets a new pod for that index; a
    replicatedJob that dependsOn another's Complete is made only then."""
    core, custom, k8s = apis
    core.create_namespaced_persistent_volume_claim("default", {
        "metadata": {"name": "flags"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                "resources": {"requests": {"storage": "1Gi"}}}})
    a = _rjob("a", "[ -e /flags/x ] && exit 0; touch /flags/x; exit 42", podFailurePolicy={
        "rules": [{"action": "Ignore", "onExitCodes": {
            "containerName": "node", "operator": "In", "values": [42]}}]})
    pod = a["template"]["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "f", "persistentVolumeClaim": {"claimName": "flags"}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "f", "mountPath": "/flags"}]
    custom.create_namespaced_custom_object(*JS, _jobset(
        "d", a, _rjob("b", "echo b ran", deps=[{"name": "a", "status": "Complete"}])))
    wait_for(lambda: _status(custom, "d").get("terminalState") == "Completed", timeout=20)
    a = k8s.pods(selector="task=a")
    assert sorted(p["status"]["phase"] for p in a) == ["Failed", "Succeeded"]
    assert len(k8s.pods(selector="task=b")) == 1


def test_jobsets_are_admitted_like_the_webhook_does(apis) -> None:
    core, custom, k8s = apis
    with pytest.raises(client.ApiException) as e:
        custom.create_namespaced_custom_object(*JS, _jobset(
            "bad", _rjob("a", "true", deps=[{"name": "b", "status": "Ready"}])))
    assert e.value.status == 422
    assert "DependsOn can't be set for the first ReplicatedJob" in json.loads(e.value.body)[
        "message"]
    with pytest.raises(client.ApiException) as e:
        custom.create_namespaced_custom_object(*JS, _jobset("x", {**_rjob("a", "true"),
                                                                   "typo": 1}))
    assert e.value.status == 422
    custom.create_namespaced_custom_object(*JS, _jobset("s", _rjob("a", "true"), suspend=True))
    with pytest.raises(client.ApiException) as e:  # custom resources take no strategic merge
        custom.patch_namespaced_custom_object(
            *JS, "s", {"spec": {"suspend": False}},
            _content_type="application/strategic-merge-patch+json")
    assert e.value.status == 415
    assert not k8s.pods()  # suspended: no pods
    custom.patch_namespaced_custom_object(*JS, "s", {"spec": {"suspend": False}})
    wait_for(lambda: _status(custom, "s").get("terminalState") == "Completed", timeout=20)


def test_kueue_queues_a_suspended_jobset_until_its_quota_fits(apis) -> None:
    import k8sschema

    core, custom, k8s = apis
    q = {"kueue.x-k8s.io/queue-name": "q"}
    custom.create_namespaced_custom_object(*JS, _jobset(
        "big", _rjob("a", "true", n=2, cpu="1"), labels=q, suspend=True))
    custom.create_namespaced_custom_object(*JS, _jobset(
        "nowhere", _rjob("a", "true"), labels={"kueue.x-k8s.io/queue-name": "nope"},
        suspend=True))
    custom.create_namespaced_custom_object(*JS, _jobset(
        "fits", _rjob("a", "true", cpu="500m"), labels=q, suspend=True))

    def reason(js: str) -> str | None:
        for w in k8s.objects("workloads"):
            if w["metadata"]["ownerReferences"][0]["name"] == js:
                c = next((c for c in (w.get("status") or {}).get("conditions") or []
                          if c["type"] == "QuotaReserved"), None)
                return c and f"{c['status']} {c['reason']}: {c['message']}"
        return None

    wait_for(lambda: _status(custom, "fits").get("terminalState") == "Completed", timeout=20)
    assert reason("fits").startswith("True QuotaReserved")
    assert reason("nowhere") == "False Misconfigured: LocalQueue nope doesn't exist"
    # (while `fits` ran, its 0.5 cpu counted too; once it finished, its quota is free again)
    wait_for(lambda: reason("big") == (
        "False WaitingForQuota: couldn't assign flavors to pod set a: insufficient unused quota "
        "for cpu in flavor default-flavor, 1 more needed"), timeout=10)
    k8sschema.validate_all(k8s.objects("workloads"))
    assert not k8s.pods(selector="jobset.sigs.k8s.io/jobset-name=big")
