"""Kubernetes backend, rendering: every generated object validates against the Kubernetes OpenAPI
schemas (kubernetes-validate, strict: unknown fields are errors), for the repository's examples
(read fresh) and for small fixtures; names, size limits, secrets, probes, GPUs, gang labels."""

from __future__ import annotations

import base64
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


def test_contents_above_a_configmap_ship_as_tar_parts(tmp_path: Path) -> None:
    """No 1 MiB limit: a workdir or mounted folder above what a ConfigMap holds becomes a tar
    in ConfigMap-sized parts, mounted as one projected volume and unpacked by the driver (into
    the workdir, or an emptyDir at the mount path); what .skyignore names is left out; only a
    single mounted file above 1 MiB is refused (mount its folder)."""
    import io
    import random
    import tarfile

    from jobgroup.backends.kubernetes.files import CHUNK

    rng = random.Random(7)
    (tmp_path / "big" / "data").mkdir(parents=True)
    (tmp_path / "big" / "data" / "weights.bin").write_bytes(rng.randbytes(2 * 1024 * 1024))
    (tmp_path / "big" / "run.sh").write_text("echo hi\n")
    (tmp_path / "big" / "run.sh").chmod(0o755)
    (tmp_path / "big" / "scratch").mkdir()
    (tmp_path / "big" / "scratch" / "huge.bin").write_bytes(b"x" * 100)
    (tmp_path / "big" / ".skyignore").write_text("# comment\n/scratch\n*.log\n")
    (tmp_path / "big" / "data" / "debug.log").write_text("left out\n")
    (tmp_path / "one.bin").write_bytes(b"y" * (1024 * 1024 + 1))
    group = spec("""\
        name: g
        workdir: big
        file_mounts: {/data/big: big}
        run: "true"
        """)
    objs = render_objects(group, 1, base_dir=tmp_path)
    validate_all(objs)
    parts = sorted((o for o in objs if o["kind"] == "ConfigMap" and "-files-" in
                    o["metadata"]["name"]), key=lambda o: int(o["metadata"]["name"].rsplit(
                        "-", 1)[1]))
    assert len(parts) == 3  # 2 MiB and a bit, in parts of CHUNK bytes: one content, twice used
    raw = b"".join(base64.b64decode(next(iter(o["binaryData"].values()))) for o in parts)
    assert all(len(base64.b64decode(next(iter(o["binaryData"].values())))) <= CHUNK
               for o in parts)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert set(names) == {".skyignore", "data", "data/weights.bin", "run.sh"}
    assert names["run.sh"].mode == 0o755
    pod = objs[-1]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    digest = parts[0]["metadata"]["name"].split("-files-")[1].rsplit("-", 1)[0]
    assert env["JOBGROUP_UNPACK"] == f"{digest}\t-\n{digest}\t/data/big"
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    projected = vols[mounts[f"/var/jobgroup/files/{digest}"]["name"]]["projected"]["sources"]
    assert [s_["configMap"]["name"] for s_ in projected] == [p_["metadata"]["name"]
                                                            for p_ in parts]
    assert "emptyDir" in vols[mounts["/data/big"]["name"]]
    assert render_objects(group, 1, base_dir=tmp_path) == objs  # deterministic
    single = spec("""\
        name: g
        file_mounts: {/etc/one.bin: one.bin}
        run: "true"
        """)
    with pytest.raises(RenderError) as e:
        render_objects(single, 1, base_dir=tmp_path)
    assert "one file of 1.00 MiB" in str(e.value) and "mount the folder" in str(e.value)


def test_gitignored_files_are_not_shipped(tmp_path: Path) -> None:
    import subprocess

    from jobgroup.backends.kubernetes.files import collect

    repo = tmp_path / "repo"
    (repo / "out").mkdir(parents=True)
    (repo / "out" / "model.ckpt").write_text("big")
    (repo / "train.py").write_text("print(1)\n")
    (repo / ".gitignore").write_text("out/\n*.tmp\n")
    (repo / "x.tmp").write_text("tmp")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert set(collect(repo, "workdir").files) == {".gitignore", "train.py"}
    (repo / ".skyignore").write_text("train.py\n")  # a .skyignore wins over .gitignore
    assert set(collect(repo, "workdir").files) == {".gitignore", ".skyignore", "out/model.ckpt",
                                                   "x.tmp"}


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
    store: tests/test_kubernetes_jobset.py sees it in a pod) and the pods carry it in
    SKYPILOT_TASK_ID; only a dry run has none."""
    from datetime import datetime

    from jobgroup.discovery import NO_TIME

    group, base = full
    when = datetime(2025, 3, 4, 5, 6, 7, 890000).timestamp()
    objs = render_objects(group, 3, base_dir=base, submitted_at=when, workload="pods")
    task_id = env_of(pods(objs)[0])["SKYPILOT_TASK_ID"]["value"]
    assert task_id == "sky-managed-2025-03-04-05-06-07-890000_shop_trainer_3-0"
    dry = render_objects(group, 3, base_dir=base, workload="pods")
    assert NO_TIME in env_of(pods(dry)[0])["SKYPILOT_TASK_ID"]["value"]


def test_dryrun_of_the_rl_example_prints_a_jobset_that_validates(jenv, tmp_path: Path) -> None:
    """`jobgroup launch examples/rl-post-training/rl-post-training.yaml --infra kubernetes
    --dryrun -o yaml`: every launch check passes (the kubeconfig too: one is given, no cluster
    is asked), and what it prints is a JobSet that validates (our schema of JobSet's fields, its
    Job templates as batch/v1 Jobs), with /dev/shm, kubernetes.yaml's pod_config merged into
    every pod template, and the success policy on the primary tasks."""
    pytest.importorskip("kubernetes")
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    jenv.env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    jenv.home.mkdir(parents=True, exist_ok=True)
    (jenv.home / "kubernetes.yaml").write_text(yaml.safe_dump({"pod_config": {"spec": {
        "priorityClassName": "ml-high", "securityContext": {"fsGroup": 1000},
        "imagePullSecrets": [{"name": "registry-creds"}]}}}))
    example = REPO / "examples" / "rl-post-training" / "rl-post-training.yaml"
    p = jenv.jg("launch", str(example), "--infra", "kubernetes", "--dryrun", "-o", "yaml",
                cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    validate_all(docs)
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    group = load_file(str(example)).group
    assert js["spec"]["successPolicy"] == {"operator": "All",
                                           "targetReplicatedJobs": group.primaries}
    assert js["metadata"]["namespace"] == "ml-a"  # the kubeconfig context's
    uid = (jenv.home / "kubernetes.uid").read_text().strip()
    for r in js["spec"]["replicatedJobs"]:
        pod = r["template"]["spec"]["template"]
        spec = pod["spec"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in spec["volumes"]
        assert spec["priorityClassName"] == "ml-high"
        assert spec["securityContext"] == {"fsGroup": 1000}
        assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
        labels = pod["metadata"]["labels"]
        assert labels["jobgroup.dev/home"] == uid  # the labels a launch gives
        assert labels["app.kubernetes.io/managed-by"] == "jobgroup"
        assert labels["app.kubernetes.io/component"] == r["name"]
    assert not (jenv.home / "state.db").exists()  # nothing was launched


def test_dryrun_goes_to_the_context_the_infra_names(jenv, tmp_path: Path) -> None:
    """`--infra kubernetes/CONTEXT` (SkyPilot's form) picks that context of the launching
    shell's kubeconfig: its namespace in the objects; a relative KUBECONFIG is read from the
    shell's directory; a context the kubeconfig lacks is refused, naming the ones it has."""
    pytest.importorskip("kubernetes")
    (tmp_path / "kc").write_text(KUBECONFIG)
    jenv.env["KUBECONFIG"] = "kc"  # relative: from the launch's directory
    text = jenv.spec("name: g\nrun: echo hi\n")

    def namespaces(infra: str) -> set[str]:
        p = jenv.jg("launch", str(text), "--infra", infra, "--dryrun", "-o", "yaml",
                    cwd=tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        return {d["metadata"].get("namespace") for d in yaml.safe_load_all(p.stdout) if d}

    assert namespaces("kubernetes") == {"ml-a"}  # the current context's
    assert namespaces("kubernetes/team-b") == {"ml-b"}
    assert namespaces("k8s/*") == {"ml-a"}  # `*`: any, the current one
    p = jenv.jg("launch", str(text), "--infra", "k8s/team-c", "--dryrun", cwd=tmp_path)
    assert p.returncode == 2
    assert "infra kubernetes/team-c names context 'team-c', which the kubeconfig does not " \
        f"have (it has: team-a, team-b, bare; read from {tmp_path / 'kc'})" in p.stderr, p.stderr


def test_a_tasks_own_pod_config_merges_over_kubernetes_yaml() -> None:
    from jobgroup.backends.kubernetes.podconfig import merge

    group = spec("""\
        name: g
        config:
          kubernetes:
            pod_config:
              metadata: {labels: {team: rl}}
              spec:
                containers: [{env: [{name: EXTRA, value: "1"}], securityContext: {privileged: true}}]
                tolerations: [{key: gpu, operator: Exists}]
        run: "true"
        """)
    cfg = KubernetesConfig(pod_config={"spec": {
        "tolerations": [{"key": "pool", "operator": "Exists"}],
        "imagePullSecrets": [{"name": "a"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In",
                                       "values": ["z1"]}]}]}}}}})
    for workload in ("jobset", "pods"):
        objs = render_objects(group, 1, cfg, workload=workload)
        validate_all(objs)
        pod = next(o for o in objs if o["kind"] == "Pod") if workload == "pods" else \
            objs[-1]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
        spec_ = pod["spec"]
        assert [t["key"] for t in spec_["tolerations"]] == ["pool", "gpu"]  # lists append
        c = spec_["containers"][0]  # a container without a name merges into jobgroup's
        assert c["name"] == "node" and c["securityContext"] == {"privileged": True}
        assert {"name": "EXTRA", "value": "1"} in c["env"]
        assert pod["metadata"]["labels"]["team"] == "rl"
        assert spec_["affinity"]["nodeAffinity"]
    base = {"spec": {"imagePullSecrets": [{"name": "a"}]}}
    merge(base, {"spec": {"imagePullSecrets": [{"name": "b"}]}})
    assert base["spec"]["imagePullSecrets"] == [{"name": "b"}]  # credentials: replaced
    bad = spec("""\
        name: g
        config: {kubernetes: {pod_config: {spec: {containers: "no"}}}}
        run: "true"
        """)
    with pytest.raises(RenderError, match="pod_config spec.containers"):
        render_objects(bad, 1)


def test_jobset_policies_from_the_spec() -> None:
    group = spec("""\
        name: pol
        execution: parallel
        primary_tasks: [trainer]
        termination_delay: {default: 5s}
        max_group_restarts: 2
        ---
        name: evaluator
        depends_on: {trainer: ready}
        run: "true"
        ---
        name: trainer
        num_nodes: 3
        resources: {job_recovery: {strategy: FAILOVER, max_restarts_on_errors: 2, recover_on_exit_codes: [42, 0]}}
        run: "true"
        ---
        name: reward
        depends_on: {evaluator: completed}
        run: "true"
        """)
    objs = render_objects(group, 2, KubernetesConfig(ttl_after_finished=60), grace=4)
    validate_all(objs)
    js = objs[-1]
    s = js["spec"]
    assert [r["name"] for r in s["replicatedJobs"]] == ["trainer", "evaluator", "reward"]
    rj = {r["name"]: r for r in s["replicatedJobs"]}
    assert rj["evaluator"]["dependsOn"] == [{"name": "trainer", "status": "Ready"}]
    assert rj["reward"]["dependsOn"] == [{"name": "evaluator", "status": "Complete"}]
    assert s["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["trainer"]}
    assert s["failurePolicy"] == {"maxRestarts": 2}
    assert s["ttlSecondsAfterFinished"] == 60
    trainer = rj["trainer"]["template"]["spec"]
    assert trainer["backoffLimit"] == 2
    assert trainer["podFailurePolicy"] == {"rules": [
        {"action": "Ignore", "onExitCodes": {"containerName": "node", "operator": "In",
                                             "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                  "status": "True"}]}]}
    tpod = trainer["template"]["spec"]
    assert tpod["terminationGracePeriodSeconds"] == 4  # a primary: the launch's grace
    env = {e["name"]: e for e in tpod["containers"][0]["env"]}
    assert env["SKYPILOT_NODE_RANK"]["value"] == "$(JOB_COMPLETION_INDEX)"
    assert tpod["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"  # defined first
    assert env["SKYPILOT_NODE_IPS"]["value"].splitlines() == [
        f"pol-trainer-0-{r}.pol.default.svc.cluster.local" for r in range(3)]
    assert "pol-evaluator" not in env["JOBGROUP_PEERS"]["value"]  # made once trainer is ready
    ev = rj["evaluator"]["template"]["spec"]["template"]["spec"]
    assert ev["terminationGracePeriodSeconds"] == 9  # an auxiliary: grace + its delay
    ev_env = {e["name"]: e.get("value") for e in ev["containers"][0]["env"]}
    assert ev_env["JOBGROUP_STOP_DELAY"] == "5"
    serial = spec("""\
        name: pipe
        execution: serial
        ---
        name: one
        run: "true"
        ---
        name: two
        run: "true"
        """)
    js = render_objects(serial, 1)[-1]
    assert js["spec"]["replicatedJobs"][1]["dependsOn"] == [{"name": "one",
                                                            "status": "Complete"}]
