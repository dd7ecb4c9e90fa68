"""The Kubernetes backend's configuration: `$JOBGROUP_HOME/kubernetes.yaml`, or the defaults.

Every key is optional; unknown keys are errors (a typo must not silently change where jobs run)::

    context: my-cluster          # kubeconfig context (like `kubectl --context`); default: current
    workload: null               # jobset: a JobSet per group (kubernetes-sigs/jobset, v0.8+);
                                 # pods: bare Pods + a headless Service; null: JobSet where the
                                 # cluster serves the JobSet API (discovery), else pods. Dry
                                 # runs, which ask no cluster, print a JobSet unless `pods`.
    namespace: ml-team           # where every object of a group is created; default: the
                                 # context's namespace (as for kubectl), else "default"
    image: python:3.11-slim      # container image of tasks without `resources.image_id`
    image_pull_policy: IfNotPresent
    service_account: null        # serviceAccountName of the pods
    gpu_resource: nvidia.com/gpu # extended resource a GPU is requested as
    gpu_label: nvidia.com/gpu.product   # node label that names the GPU model (null: any GPU)
    gpu_types:                   # accelerator name -> accepted values of gpu_label
      H100: [NVIDIA-H100-80GB-HBM3]
    tolerations: []              # added to every pod (e.g. the GPU taint of a node pool)
    node_selector: {}            # added to every pod
    volume_size: 10Gi            # size of a PVC created on first use
    storage_class: null          # storageClassName of those PVCs (null: the cluster default)
    volume_access_mode: ReadWriteMany   # several pods on several nodes share a volume
    create_volumes: true         # create a missing PVC on first use (else: it must exist)
    kueue_queue: null            # LocalQueue name: pods get kueue.x-k8s.io/queue-name
    scheduler_name: null         # e.g. scheduler-plugins' coscheduling scheduler
    pod_group: false             # add scheduling.x-k8s.io/pod-group labels + a PodGroup object
    schedule_timeout: 300        # seconds every pod has to be scheduled, else the group's
                                 # pods go and it tries again as long later (all or nothing)
    dns_wait_timeout: 600        # seconds a node waits for its peers' names to resolve
    setup_timeout: 86400         # seconds `setup` may take (the startup probe's budget)
    cluster_domain: cluster.local
    pod_config: {}               # SkyPilot's kubernetes.pod_config: a partial Pod (metadata,
                                 # spec: securityContext, imagePullSecrets, priorityClassName,
                                 # tolerations, affinity, ...) deep-merged into every pod; a
                                 # task's `config: {kubernetes: {pod_config: ...}}` merges over it
    dshm: true                   # /dev/shm as a memory-backed emptyDir (the runtime's is 64 MiB)
    dshm_size: null              # its sizeLimit (e.g. 16Gi); null: none (counts as memory use)
    ttl_after_finished: 3600     # JobSet ttlSecondsAfterFinished: a group that ended while no
                                 # jobgroup controller ran is deleted by the cluster that long
                                 # after (jobgroup deletes it at once otherwise); null: kept

Set per launch, not in kubernetes.yaml: `kubeconfig` (the launcher's $KUBECONFIG, "" for
~/.kube/config: the controller serves each launch on the cluster the launcher's kubectl talks to,
not the one of the environment it started in) and the context of `--infra kubernetes/CONTEXT`
(or a task's `infra: k8s/CONTEXT`, as SkyPilot: everything after the first '/' names the
context), which wins over `context:` here. See `load_config`.

Not a key of kubernetes.yaml: `home_uid`, a random id of the state directory
(`$JOBGROUP_HOME/kubernetes.uid`, created once by the backend, see `home_uid`). Every object of a
job carries it as label `jobgroup.dev/home` and every selector the backend uses includes it: job
ids start at 1 in every state directory, so two users (two homes) in one namespace must not take
each other's objects for their own.

`gpu_types` entries are merged over the built-in table (NVIDIA GPU feature discovery's product
names); a name is looked up as written, then upper-case.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from jobgroup.errors import UsageError

CONFIG_NAME = "kubernetes.yaml"
UID_NAME = "kubernetes.uid"

# Values of `nvidia.com/gpu.product` (NVIDIA GPU feature discovery) per SkyPilot accelerator name.
DEFAULT_GPU_TYPES: dict[str, list[str]] = {
    "A10": ["NVIDIA-A10"],
    "A10G": ["NVIDIA-A10G"],
    "A100": ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-SXM4-80GB",
             "NVIDIA-A100-80GB-PCIe"],
    "A100-80GB": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"],
    "H100": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"],
    "H200": ["NVIDIA-H200", "NVIDIA-H200-NVL"],
    "L4": ["NVIDIA-L4"],
    "L40S": ["NVIDIA-L40S"],
    "T4": ["Tesla-T4"],
    "V100": ["Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-16GB",
             "Tesla-V100-PCIE-32GB"],
}


class KubernetesConfigError(UsageError):
    """A malformed kubernetes.yaml (the message names the file)."""


class KubernetesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """See the module docstring for what each field means."""

    context: str | None = None
    namespace: str = "default"
    image: str = "python:3.11-slim"
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    gpu_label: str | None = "nvidia.com/gpu.product"
    gpu_types: dict[str, list[str]] = msgspec.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    volume_size: str = "10Gi"
    storage_class: str | None = None
    volume_access_mode: str = "ReadWriteMany"
    create_volumes: bool = True
    kueue_queue: str | None = None
    scheduler_name: str | None = None
    pod_group: bool = False
    schedule_timeout: float = 300.0
    dns_wait_timeout: int = 600
    setup_timeout: int = 86400
    cluster_domain: str = "cluster.local"
    workload: Literal["jobset", "pods"] | None = None
    pod_config: dict[str, Any] = msgspec.field(default_factory=dict)
    dshm: bool = True
    dshm_size: str | None = None
    ttl_after_finished: int | None = 3600
    home_uid: str | None = None  # set by the backend from the state directory, never from YAML
    # the launch's KUBECONFIG ("": ~/.kube/config; None: this process's $KUBECONFIG), never
    # from YAML (see `load_config`)
    kubeconfig: str | None = None

    def gpu_values(self, accelerator: str) -> list[str] | None:
        """Accepted values of `gpu_label` for `accelerator`, or None if it is not known."""
        table = {**DEFAULT_GPU_TYPES, **self.gpu_types}
        return table.get(accelerator) or table.get(accelerator.upper())


def config_path(home: Path | None = None) -> Path:
    if home is None:
        env = os.environ.get("JOBGROUP_HOME")
        home = Path(env).expanduser() if env else Path.home() / ".jobgroup"
    return home / CONFIG_NAME


def load_config(home: Path | None = None, *, kubeconfig: str | None = None,
                context: str | None = None) -> KubernetesConfig:
    """`$JOBGROUP_HOME/kubernetes.yaml` (or `home`/kubernetes.yaml), else the defaults, for a
    launch whose KUBECONFIG is `kubeconfig` (None: this process's) and whose infra names
    `context` (it wins over the file's `context:`). Without a `namespace:` there, the namespace
    is the kubeconfig context's, as for kubectl (see `context_namespace`)."""
    path = config_path(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    except OSError as e:
        raise KubernetesConfigError(f"{path}: cannot read: {e.strerror}") from None
    config = parse_config(text, str(path))
    if kubeconfig is not None or context is not None:
        config = msgspec.structs.replace(config, kubeconfig=kubeconfig,
                                         context=context or config.context)
    data = yaml.safe_load(text) if text else None  # valid: parse_config read it
    if not (isinstance(data, dict) and "namespace" in data):
        namespace = context_namespace(config.context, config.kubeconfig)
        if namespace:
            config = msgspec.structs.replace(config, namespace=namespace)
    return config


SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kubeconfig_path(kubeconfig: str | None = None) -> str:
    """The kubeconfig file(s) of a launch whose KUBECONFIG was `kubeconfig` (None: this
    process's $KUBECONFIG, read now; the client library reads it once, when first imported):
    that value (several files separated by ':' are merged, as kubectl does), else
    ~/.kube/config."""
    value = os.environ.get("KUBECONFIG") if kubeconfig is None else kubeconfig
    return value or os.path.expanduser("~/.kube/config")



class KubeconfigError(Exception):
    """The kubeconfig cannot be read (missing, not YAML, no contexts); the message says why."""


def kubeconfig_contexts(kubeconfig: str | None = None) -> tuple[list[dict], dict | None]:
    """(contexts, current context) of the kubeconfig kubectl would use with KUBECONFIG
    `kubeconfig` (see `kubeconfig_path`), read with the client library (ImportError when it is
    missing). The one reader of kubeconfig contexts: launch checks and the namespace default
    both use it."""
    from kubernetes import config as kc

    try:
        contexts, current = kc.list_kube_config_contexts(
            config_file=kubeconfig_path(kubeconfig))
    except (kc.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as e:
        raise KubeconfigError(str(e)) from None
    return list(contexts or []), current


def context_namespace(context: str | None, kubeconfig: str | None = None) -> str | None:
    """The namespace kubectl would use: that of kubeconfig context `context` (else of the
    current context) in the kubeconfig of `kubeconfig_path(kubeconfig)`; without a kubeconfig,
    inside a pod, the pod's own namespace. None when none is named (or the client library is
    missing): the caller keeps "default"."""
    try:
        contexts, current = kubeconfig_contexts(kubeconfig)
    except ImportError:
        return None
    except KubeconfigError:
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                return Path(SA_NAMESPACE).read_text().strip() or None
            except OSError:
                return None
        return None
    chosen = current if context is None else \
        next((c for c in contexts or [] if c.get("name") == context), None)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def parse_config(text: str, label: str = CONFIG_NAME) -> KubernetesConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KubernetesConfigError(f"{label}: not valid YAML: {e}") from None
    if data is None:
        return KubernetesConfig()
    if not isinstance(data, dict):
        raise KubernetesConfigError(f"{label}: expected a mapping of settings")
    if "home_uid" in data:
        raise KubernetesConfigError(f"{label}: home_uid is not a setting (it is the state "
                                    f"directory's own id, kept in {UID_NAME})")
    if "kubeconfig" in data:
        raise KubernetesConfigError(f"{label}: kubeconfig is not a setting (each launch uses "
                                    "the KUBECONFIG of the shell it is run from, as kubectl)")
    try:
        return msgspec.convert(data, KubernetesConfig)
    except msgspec.ValidationError as e:
        raise KubernetesConfigError(f"{label}: {e}") from None


def home_uid(home: Path) -> str:
    """The state directory's random id (`home/kubernetes.uid`, 0600), created on first use,
    atomically: two processes that race both end up with the one that was linked first."""
    path = home / UID_NAME
    try:
        uid = path.read_text().strip()
        if uid:
            return uid
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    uid = secrets.token_hex(8)
    tmp = home / f".{UID_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{uid}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    uid = path.read_text().strip()
    if not uid:
        raise KubernetesConfigError(f"{path} is empty: remove it, or restore the id it had")
    return uid
