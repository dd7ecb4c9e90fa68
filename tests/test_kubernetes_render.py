"""Kubernetes backend, rendering: every generated object validates against the Kubernetes OpenAPI
schemas (kubernetes-validate, strict: unknown fields are errors), for the repository's examples
(read fresh) and for small fixtures; names, size limits, secrets, probes, GPUs, gang labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from jobgroup import nodescript
from jobgroup.backends.kubernetes import (
    KubernetesConfig, RenderError, parse_config, pvc_object, render_objects, render_yaml,
)
from jobgroup.backends.kubernetes.config import KubernetesConfigError
from jobgroup.errors import UsageError
from jobgroup.spec import load, load_file

kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
import k8sschema  # noqa: E402  (needs kubernetes_validate)

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.33"  # a recent release; the schemas of 1.37 are checked too, below
EXAMPLES = sorted(REPO.glob("examples/*/*.yaml"))


def validate_all(objs: list[dict], version: str = K8S_VERSION) -> None:
    k8sschema.validate_all(objs, version)


def spec(text: str):
    return load(textwrap.dedent(text))


def pods(objs):
    return [o for o in objs if o["kind"] == "Pod"]


def env_of(pod) -> dict:
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_examples_validate_as_bare_pods(path: Path) -> None:
    loaded = load_file(str(path))
    objs = render_objects(loaded.group, 7, base_dir=REPO,  # workdirs relative to the repo
                          workload="pods")
    validate_all(objs)
    group = loaded.group
    assert len(pods(objs)) == sum(t.num_nodes for t in group.tasks)
    (svc,) = [o for o in objs if o["kind"] == "Service"]
    assert svc["metadata"]["name"] == group.name
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    for p in pods(objs):
        labels = p["metadata"]["labels"]
        assert p["spec"]["hostname"] == f"{labels['jobgroup.dev/task']}-{labels['jobgroup.dev/rank']}"
        assert p["spec"]["subdomain"] == group.name
        assert p["spec"]["restartPolicy"] == "Never"
        assert labels["jobgroup.dev/job-id"] == "7" and labels["jobgroup.dev/group"] == group.name
        assert all(svc["spec"]["selector"][k] == labels[k] for k in svc["spec"]["selector"])


def test_examples_render_yaml_round_trips() -> None:
    for path in EXAMPLES:
        group = load_file(str(path)).group
        text = render_yaml(group, 1, base_dir=REPO)
        docs = list(yaml.safe_load_all(text))
        assert docs == render_objects(group, 1, base_dir=REPO, reveal_secrets=False)
        assert text == render_yaml(group, 1, base_dir=REPO)  # deterministic


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_examples_validate_as_a_jobset(path: Path) -> None:
    group = load_file(str(path)).group
    objs = render_objects(group, 7, base_dir=REPO)  # the default: a JobSet
    validate_all(objs)
    assert [o["kind"] for o in objs][-1] == "JobSet"
    assert "Pod" not in [o["kind"] for o in objs] and "Service" not in [o["kind"] for o in objs]
    js = objs[-1]
    rjobs = {r["name"]: r for r in js["spec"]["replicatedJobs"]}
    assert set(rjobs) == {t.name for t in group.tasks}
    for t in group.tasks:
        job = rjobs[t.name]["template"]["spec"]
        assert (job["completionMode"], job["completions"], job["parallelism"]) == \
            ("Indexed", t.num_nodes, t.num_nodes)
        pod = job["template"]
        assert pod["metadata"]["labels"]["jobgroup.dev/task"] == t.name
        assert pod["spec"]["restartPolicy"] == "Never"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in \
            pod["spec"]["containers"][0]["volumeMounts"]
    assert js["spec"]["successPolicy"]["targetReplicatedJobs"] == group.primaries
    assert js["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": group.name,
                                     "publishNotReadyAddresses": True}


FULL = """\
name: shop
execution: parallel
primary_tasks: [trainer]
---
name: trainer
num_nodes: 2
workdir: code
resources: {accelerators: H100:8, cpus: 16+, memory: 64, image_id: docker:nvcr.io/nvidia/pytorch:24.05-py3, ports: [29500]}
envs: {EPOCHS: "3", WEIRD: "a 'quoted' \\"value\\"; echo $HOME"}
secrets: {HF_TOKEN: hf_supersecret, WANDB_API_KEY: wandb_supersecret}
volumes: {/checkpoints: ckpt}
file_mounts:
  /etc/app/config.yaml: conf/app.yaml
  /data/shared: {name: shared-data}
setup: pip install -r requirements.txt
run: torchrun --nnodes=$SKYPILOT_NUM_NODES train.py
---
name: rollout
resources: {accelerators: [L4:1, A10G:1], cpus: 0.5, memory: 1.5}
readiness_probe: {http: {port: 8001, path: /health}, initial_delay: 2s, interval: 1.5, failure_threshold: 5}
run: python serve.py
---
name: reward
readiness_probe: {tcp: {port: 8002}}
run: python reward.py
---
name: buffer
readiness_probe: {command: "test -f /tmp/ready"}
run: python buffer.py
"""


@pytest.fixture
def full(tmp_path: Path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text("print('hi')\n")
    (tmp_path / "code" / "sub").mkdir()
    (tmp_path / "code" / "sub" / "w.bin").write_bytes(bytes(range(256)))
    (tmp_path / "code" / "__pycache__").mkdir()
    (tmp_path / "code" / "__pycache__" / "x.pyc").write_bytes(b"\0" * 10)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text("a: 1\n")
    return spec(FULL), tmp_path


@pytest.mark.parametrize("version", [K8S_VERSION, "1.37"])
def test_full_fixture_validates(full, version: str) -> None:
    group, base = full
    cfg = KubernetesConfig(namespace="ml", kueue_queue="team-a", pod_group=True,
                           scheduler_name="scheduler-plugins-scheduler",
                           tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                         "effect": "NoSchedule"}],
                           node_selector={"pool": "gpu"}, storage_class="fast")
    objs = render_objects(group, 3, cfg, base_dir=base, env={"EPOCHS": "5"}, workload="pods")
    validate_all(objs, version)
    kinds = [o["kind"] for o in objs]
    assert kinds == ["PersistentVolumeClaim"] * 2 + ["Secret", "ConfigMap", "ConfigMap",
                                                     "ConfigMap", "Service", "PodGroup"] + ["Pod"] * 5


def test_resources_gpus_probes_and_gang_labels(full) -> None:
    group, base = full
    cfg = KubernetesConfig(kueue_queue="team-a", pod_group=True)
    objs = render_objects(group, 3, cfg, base_dir=base, workload="pods")
    by_name = {p["metadata"]["name"]: p for p in pods(objs)}
    trainer = by_name["shop-trainer-1"]
    c = trainer["spec"]["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "8"},
                              "limits": {"memory": "64Gi", "nvidia.com/gpu": "8"}}
    assert c["image"] == "nvcr.io/nvidia/pytorch:24.05-py3"
    terms = trainer["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"
    assert "NVIDIA-H100-80GB-HBM3" in terms[0]["matchExpressions"][0]["values"]
    rollout = by_name["shop-rollout-0"]["spec"]
    rc = rollout["containers"][0]
    assert rc["resources"]["limits"] == {"cpu": "500m", "memory": "1536Mi", "nvidia.com/gpu": "1"}
    values = rollout["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    assert values == ["NVIDIA-L4", "NVIDIA-A10G"]  # both alternatives, in order
    assert rc["readinessProbe"]["httpGet"] == {"port": 8001, "path": "/health"}
    assert (rc["readinessProbe"]["initialDelaySeconds"], rc["readinessProbe"]["periodSeconds"],
            rc["readinessProbe"]["failureThreshold"]) == (2, 2, 5)
    assert by_name["shop-reward-0"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"] == \
        {"port": 8002}
    assert by_name["shop-buffer-0"]["spec"]["containers"][0]["readinessProbe"]["exec"][
        "command"] == ["/bin/sh", "-c", "test -f /tmp/ready"]
    for p in pods(objs):
        assert p["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert p["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "shop-3"
        assert p["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "5"
        assert p["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "shop-3"
    # no kueue, no pod group: no gang labels
    plain = render_objects(group, 3, KubernetesConfig(), base_dir=base, workload="pods")
    assert not any("kueue.x-k8s.io/queue-name" in p["metadata"]["labels"] for p in pods(plain))
    assert "PodGroup" not in [o["kind"] for o in plain]


def test_env_topology_and_names(full) -> None:
    group, base = full
    objs = render_objects(group, 3, KubernetesConfig(namespace="ml"), base_dir=base,
                          env={"EPOCHS": "5"}, workload="pods")
    env = env_of(next(p for p in pods(objs) if p["metadata"]["name"] == "shop-trainer-1"))
    fq = "svc.cluster.local"
    assert env["SKYPILOT_JOBGROUP_HOST_TRAINER"]["value"] == f"trainer-0.shop.ml.{fq}"
    assert env["SKYPILOT_JOBGROUP_HOST_ROLLOUT"]["value"] == f"rollout-0.shop.ml.{fq}"
    assert env["SKYPILOT_NODE_IPS"]["value"] == f"trainer-0.shop.ml.{fq}\ntrainer-1.shop.ml.{fq}"
    assert env["SKYPILOT_NODE_RANK"]["value"] == "1"
    assert env["SKYPILOT_NUM_GPUS_PER_NODE"]["value"] == "8"
    assert env["EPOCHS"]["value"] == "5"  # --env beats envs
    assert env["JOBGROUP_WORKDIR"]["value"] == "/workdir"
    assert env["JOBGROUP_TOPOLOGY"]["value"] == "/etc/jobgroup/topology.json"
    job_cm = next(o for o in objs if o["metadata"]["name"] == "shop-job")
    # the scripts as SkyPilot runs them (jobgroup.nodescript): the user's text unchanged inside
    setup = job_cm["data"]["trainer.setup.sh"]
    assert setup == nodescript.compose("pip install -r requirements.txt", setup=True,
                                       keep=["EPOCHS", "WEIRD", "HF_TOKEN", "WANDB_API_KEY"])
    assert "trainer-1.shop.ml.svc.cluster.local" in job_cm["data"]["topology.json"]


def test_secrets_never_in_plain_env(full) -> None:
    group, base = full
    objs = render_objects(group, 3, base_dir=base, workload="pods")
    (secret,) = [o for o in objs if o["kind"] == "Secret"]
    assert secret["stringData"] == {"trainer.HF_TOKEN": "hf_supersecret",
                                    "trainer.WANDB_API_KEY": "wandb_supersecret"}
    text = yaml.safe_dump([o for o in objs if o["kind"] != "Secret"])
    assert "supersecret" not in text
    env = env_of(pods(objs)[0])
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "shop-secrets", "key": "trainer.HF_TOKEN"}}}
    printed = render_yaml(group, 3, base_dir=base)
    assert "supersecret" not in printed and "<redacted>" in printed
    assert "hf_supersecret" in render_yaml(group, 3, base_dir=base, reveal_secrets=True)


def test_files_as_configmaps(full) -> None:
    group, base = full
    objs = render_objects(group, 3, base_dir=base, workload="pods")
    cms = [o for o in objs if o["kind"] == "ConfigMap" and "-files-" in o["metadata"]["name"]]
    assert len(cms) == 2  # the workdir and the mounted file, each once for both trainer pods
    workdir = next(c for c in cms if "binaryData" in c)
    assert set(workdir["data"]) == {"train.py"} and set(workdir["binaryData"]) == {"sub__w.bin"}
    pod = pods(objs)[0]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    items = vols[mounts["/var/jobgroup/workdir"]["name"]]["configMap"]["items"]
    assert {"key": "sub__w.bin", "path": "sub/w.bin"} in items
    assert mounts["/etc/app/config.yaml"]["subPath"] == "app.yaml"
    assert vols[mounts["/checkpoints"]["name"]]["persistentVolumeClaim"]["claimName"] == "ckpt"
    assert vols[mounts["/data/shared"]["name"]]["persistentVolumeClaim"]["claimName"] == \
        "shared-data"


def test_configmap_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "weights.bin").write_bytes(b"x" * (1024 * 1024 + 1))
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.txt").write_bytes(b"x" * (1024 * 1024 - 100))
    group = spec("""\
        name: g
        workdir: big
        run: "true"
        """)
    with pytest.raises(RenderError) as e:
        render_objects(group, 1, base_dir=tmp_path)
    msg = str(e.value)
    assert "workdir" in msg and "at most 1 MiB" in msg and "volume" in msg
    ok = spec("""\
        name: g
        workdir: ok
        run: "true"
        """)
    validate_all(render_objects(ok, 1, base_dir=tmp_path))


@pytest.mark.parametrize("name, why", [
    ("x" * 64, "longer than 63"),  # '_' and upper case get a DNS-safe form: test_k8s_names.py
])
def test_group_names_that_are_not_dns_labels_are_rejected(name: str, why: str) -> None:
    group = spec(f"""\
        name: {name}
        execution: parallel
        ---
        name: a
        run: "true"
        """)
    with pytest.raises(RenderError) as e:
        render_objects(group, 1)
    assert f"group name {name!r} is not a valid DNS label" in str(e.value)
    assert why in str(e.value)
    assert isinstance(e.value, UsageError)


def test_task_names_and_other_problems_all_at_once() -> None:
    group = spec("""\
        name: ok
        execution: parallel
        ---
        name: Trainer
        resources: {accelerators: "TPU-v9:1"}
        volumes: {/ckpt: My_Volume}
        file_mounts: {/data: s3://bucket/data}
        run: "true"
        ---
        name: half
        resources: {accelerators: A100:0.5}
        run: "true"
        """)
    with pytest.raises(RenderError) as e:
        render_objects(group, 1)
    msg = str(e.value)
    for part in ("'TPU-v9' has no entry in gpu_types",
                 "'My_Volume' cannot name a PersistentVolumeClaim", "s3://bucket/data",
                 "kubernetes allocates whole GPUs"):
        assert part in msg, part
    # gpu_label: null accepts any GPU; gpu_types adds a mapping
    g2 = spec("""\
        name: ok
        resources: {accelerators: "TPU-v9:2"}
        run: "true"
        """)
    assert "affinity" not in pods(render_objects(g2, 1, KubernetesConfig(gpu_label=None),
                                               workload="pods"))[0]["spec"]
    cfg = parse_config("gpu_types: {TPU-v9: [acme-tpu9]}\n")
    pod = pods(render_objects(g2, 1, cfg, workload="pods"))[0]
    assert "acme-tpu9" in str(pod["spec"]["affinity"])


def test_pvc_object_and_config() -> None:
    pvc = pvc_object("ckpt", "50Gi", KubernetesConfig(namespace="ml", storage_class="nfs"))
    validate_all([pvc])
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["spec"]["storageClassName"] == "nfs"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "jobgroup.dev/job-id" not in pvc["metadata"]["labels"]
    assert pvc_object("ckpt")["spec"]["resources"]["requests"]["storage"] == "10Gi"
    with pytest.raises(UsageError, match="cannot name a PersistentVolumeClaim"):
        pvc_object("Bad_Vol")
    with pytest.raises(KubernetesConfigError, match="namespce"):
        parse_config("namespce: x\n", "kubernetes.yaml")
    assert parse_config("") == KubernetesConfig()


def test_config_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobgroup.backends.kubernetes import load_config

    monkeypatch.setenv("JOBGROUP_HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # not the user's
    assert load_config() == KubernetesConfig()
    (tmp_path / "kubernetes.yaml").write_text("namespace: team\nkueue_queue: q\n")
    assert load_config() == KubernetesConfig(namespace="team", kueue_queue="q")


def test_the_home_uid_labels_every_object_of_a_job_and_its_service_selector(full) -> None:
    group, base = full
    objs = render_objects(group, 3, KubernetesConfig(home_uid="abc123"), base_dir=base,
                          workload="pods")
    for o in objs:
        home = o["metadata"]["labels"].get("jobgroup.dev/home")
        # volumes outlive jobs and are shared: no job labels, no home
        assert home == (None if o["kind"] == "PersistentVolumeClaim" else "abc123"), o["kind"]
    svc = next(o for o in objs if o["kind"] == "Service")
    assert svc["spec"]["selector"] == {"jobgroup.dev/group": "shop", "jobgroup.dev/job-id": "3",
                                       "jobgroup.dev/home": "abc123"}
    # without a backend (dry runs, goldens) there is no home to name
    plain = render_objects(group, 3, KubernetesConfig(), base_dir=base, workload="pods")
    assert not any("jobgroup.dev/home" in o["metadata"]["labels"] for o in plain)
    with pytest.raises(KubernetesConfigError, match="home_uid is not a setting"):
        parse_config("home_uid: x\n")


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts:
- {name: team-a, context: {cluster: c, user: u, namespace: ml-a}}
- {name: team-b, context: {cluster: c, user: u, namespace: ml-b}}
- {name: bare, context: {cluster: c, user: u}}
current-context: team-a
"""


def test_the_namespace_defaults_to_the_kubeconfig_contexts(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Like kubectl: kubernetes.yaml's namespace, else the context's, else "default"."""
    pytest.importorskip("kubernetes")
    from jobgroup.backends.kubernetes import load_config

    monkeypatch.setenv("JOBGROUP_HOME", str(tmp_path))
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    assert load_config().namespace == "ml-a"  # the current context's
    yaml_file = tmp_path / "kubernetes.yaml"
    yaml_file.write_text("context: team-b\n")
    assert load_config().namespace == "ml-b"
    yaml_file.write_text("context: bare\n")
    assert load_config().namespace == "default"
    yaml_file.write_text("context: team-b\nnamespace: mine\n")
    assert load_config().namespace == "mine"
    yaml_file.write_text("namespace: default\n")  # said explicitly: kept
    assert load_config().namespace == "default"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    yaml_file.unlink()
    assert load_config() == KubernetesConfig()


def test_skypilot_task_id_has_the_jobs_submission_time(full) -> None:
    """The controller hands the job's submission time (`JobContext.submitted_at`, from the
    store) and the pods carry it in SKYPILOT_TASK_ID; only a dry run has none."""
    from datetime import datetime

    from jobgroup.controller.daemon import _context
    from jobgroup.discovery import NO_TIME
    from jobgroup.state.status import Status
    from jobgroup.state.store import JobRec

    group, base = full
    when = datetime(2025, 3, 4, 5, 6, 7, 890000).timestamp()
    job = JobRec(id=3, name="shop", status=Status.PENDING, reason="", execution="parallel",
                 submitted_at=when, started_at=None, ended_at=None, spec="",
                 base_dir=str(base), options={}, cancel_requested=False, outcome=None,
                 outcome_reason="", primaries_done_at=None)
    ctx = _context(job, group)
    assert ctx.submitted_at == when
    objs = render_objects(group, 3, base_dir=base, submitted_at=ctx.submitted_at,
                          workload="pods")
    task_id = env_of(pods(objs)[0])["SKYPILOT_TASK_ID"]["value"]
    assert task_id == "sky-managed-2025-03-04-05-06-07-890000_shop_trainer_3-0"
    dry = render_objects(group, 3, base_dir=base, workload="pods")
    assert NO_TIME in env_of(pods(dry)[0])["SKYPILOT_TASK_ID"]["value"]
