"""A job group as Kubernetes objects (pure: spec + job id + config -> plain dicts).

What a group becomes (namespace from the config):
- one headless Service named after the group (`clusterIP: None`,
  `publishNotReadyAddresses: true`), selecting the job's pods, so every node's name
  `{task}-{rank}.{group}.{namespace}.svc.{domain}` resolves through cluster DNS as soon as its
  pod has an address — before it is ready, without rewriting /etc/hosts;
- one Pod per node: `hostname: {task}-{rank}`, `subdomain: {group}`, `restartPolicy: Never` (the
  controller restarts nodes, by policy), the node driver (`driver.py`) as the command, resources as
  requests/limits, the readiness probe, and labels carrying group, job id, task, task index, rank
  and attempt — a restarted controller rebuilds its state from the cluster by these labels;
- a ConfigMap `{group}-job` with the topology file and each task's setup/run scripts;
- a ConfigMap per distinct workdir/file_mounts content (`{group}-files-<digest>`), or above
  1 MiB a tar of it in parts (`{group}-files-<digest>-<i>`) that the driver unpacks (files.py);
- a Secret `{group}-secrets` when a task has `secrets` (read by `secretKeyRef`, never as literal
  env values in the pod spec);
- a PersistentVolumeClaim per named volume when the config creates volumes on first use (these
  carry no job labels: volumes outlive jobs, like local ones);
- with `pod_group: true` a scheduler-plugins PodGroup (coscheduling) of all the job's pods.

Addresses: pod IPs are unknown before scheduling, so SKYPILOT_NODE_IPS lists the nodes' stable
DNS names (rank order) and SKYPILOT_JOBGROUP_HOST_<TASK> is the head's FQDN; both resolve to the
pod IPs inside the cluster. Gang admission: with `kueue_queue` the pods form a Kueue pod group
(`kueue.x-k8s.io/queue-name`, `pod-group-name`, `pod-group-total-count`), admitted all at once;
otherwise the backend's `admit` deletes everything when not every pod is scheduled within
`schedule_timeout` and fails the group with the scheduler's reason.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import posixpath
from pathlib import Path
from typing import Any

import yaml

from jobgroup import discovery, nodescript
from jobgroup.backends.kubernetes import podconfig
from jobgroup.backends.kubernetes.config import KubernetesConfig
from jobgroup.backends.kubernetes.driver import DRIVER
from jobgroup.backends.kubernetes.files import (
    Bundle, FilesTooBig, collect, configmap_data, part_key,
)
from jobgroup.backends.kubernetes.names import (
    ALIAS_SCRIPT, ALIASES_KEY, RUN_PREAMBLE, changed, dns_name, name_problem, service_name_ok,
)
from jobgroup.errors import UsageError
from jobgroup.spec.durations import delay_for
from jobgroup.spec.models import JobGroup, Task
from jobgroup.spec.names import dns_label_problem
from jobgroup.spec.resources import parse_accelerators, parse_cpus, parse_memory, ports

Obj = dict[str, Any]

LABEL = "jobgroup.dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "jobgroup"}
CONTAINER = "node"
WORKDIR = "/workdir"  # where a task's workdir is copied (writable)
WORKDIR_SRC = "/var/jobgroup/workdir"
JOB_DIR = "/etc/jobgroup"
TOPOLOGY = f"{JOB_DIR}/topology.json"
PODINFO_GATE = "/tmp/jobgroup/run"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
COSCHED_GROUP = "scheduling.x-k8s.io/pod-group"
_URL_PREFIXES = ("s3://", "gs://", "gcs://", "r2://", "az://", "https://", "http://", "cos://",
                 "oci://", "nebius://")


class RenderError(UsageError):
    """What the kubernetes backend cannot honour in a spec, every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot run this group on kubernetes:\n" +
                         "\n".join(f"  - {p}" for p in problems))


def labels(group: str, job_id: int, task: str | None = None, task_idx: int | None = None,
           rank: int | None = None, attempt: int | None = None, *,
           home: str | None = None) -> dict[str, str]:
    """The labels of a job's objects (group and task in their DNS-safe form, `names.py`).
    `home`: the state directory's uid (`config.home_uid`), so two state directories whose job
    ids both start at 1 never take each other's objects; left out when None (rendering without
    a backend, e.g. the goldens)."""
    out = {**MANAGED_BY, "app.kubernetes.io/name": dns_name(group),
           "app.kubernetes.io/instance": instance(group, job_id),
           f"{LABEL}/group": dns_name(group), f"{LABEL}/job-id": str(job_id)}
    if home:
        out[f"{LABEL}/home"] = home
    if task is not None:
        out["app.kubernetes.io/component"] = dns_name(task)
        out[f"{LABEL}/task"] = dns_name(task)
        out[f"{LABEL}/task-index"] = str(task_idx)
    if rank is not None:
        out[f"{LABEL}/rank"] = str(rank)
    if attempt is not None:
        out[f"{LABEL}/attempt"] = str(attempt)
    return out


def instance(group: str, job_id: int) -> str:
    """`app.kubernetes.io/instance`: `{group}-{job id}` (a label value: at most 63
    characters)."""
    suffix = f"-{job_id}"
    return dns_name(group)[:63 - len(suffix)].rstrip("-") + suffix


def job_selector(job_id: int, group: str, home: str | None = None) -> str:
    """Label selector of everything of one job (what `cleanup` deletes); `home` as in
    `labels`."""
    out = f"{LABEL}/group={dns_name(group)},{LABEL}/job-id={job_id}"
    return f"{out},{LABEL}/home={home}" if home else out


def pod_name(group: str, task: str, rank: int, attempt: int = 1) -> str:
    """The pod of node `rank` of `task` in its attempt (names as written; DNS-safe here)."""
    base = f"{dns_name(group)}-{dns_name(task)}-{rank}"
    return base if attempt == 1 else f"{base}-a{attempt}"


def hostname(task: str, rank: int) -> str:
    """The pod's `hostname` (DNS-safe form of `{task}-{rank}`)."""
    return f"{dns_name(task)}-{rank}"


def workload_of(config: KubernetesConfig, workload: str | None = None) -> str:
    """"jobset" or "pods": `workload` when given (what the backend found the cluster serves),
    else kubernetes.yaml's, else "jobset" (a dry run asks no cluster)."""
    return workload or config.workload or "jobset"


def node_hostname(group: str, task: str, rank: int | str, workload: str = "pods") -> str:
    """The pod's real hostname: `{task}-{rank}` for a bare pod; in a JobSet the Job
    controller's `{job}-{index}`, the Job being JobSet's `{jobset}-{replicatedJob}-0`:
    `{group}-{task}-0-{rank}` (DNS-safe forms; `rank` may be `$(JOB_COMPLETION_INDEX)`)."""
    if workload == "jobset":
        return f"{dns_name(group)}-{dns_name(task)}-0-{rank}"
    return f"{dns_name(task)}-{rank}"


def node_fqdn(group: str, task: str, rank: int, config: KubernetesConfig,
              workload: str = "pods") -> str:
    return (f"{node_hostname(group, task, rank, workload)}.{dns_name(group)}."
            f"{config.namespace}.svc.{config.cluster_domain}")


def addresses(group: JobGroup, config: KubernetesConfig,
              workload: str = "pods") -> dict[tuple[int, int], str]:
    """Each node's address as the backend reports it: its stable FQDN (pod IPs are not known
    before scheduling and change when a node is restarted; the name does not)."""
    return {(i, r): node_fqdn(group.name, t.name or "", r, config, workload)
            for i, r, t in group.nodes()}


def dependents(group: JobGroup, task_idx: int) -> set[int]:
    """The tasks that wait, directly or not, for task `task_idx` (`depends_on`, and the next
    steps of a pipeline)."""
    names = {t.name: i for i, t in enumerate(group.tasks)}
    waits: dict[int, set[int]] = {i: set() for i in range(len(group.tasks))}
    for i, t in enumerate(group.tasks):
        for dep in t.dependencies():
            if dep in names:
                waits[names[dep]].add(i)
        if group.execution == "serial" and i > 0:
            waits[i - 1].add(i)
    out: set[int] = set()
    todo = [task_idx]
    while todo:
        for j in waits[todo.pop()]:
            if j not in out:
                out.add(j)
                todo.append(j)
    return out


# --- checks ---------------------------------------------------------------------------------

def problems(group: JobGroup, config: KubernetesConfig, workload: str | None = None
             ) -> list[str]:
    """Why this group cannot run on kubernetes (empty: it can). Every problem, in spec order.
    `workload`: "jobset" or "pods"; None: whichever the backend may choose (kubernetes.yaml's
    `workload`, else either: what a JobSet cannot hold is a problem)."""
    out: list[str] = []
    why = name_problem(group.name, "group")
    if why:
        out.append(f"{why}: use letters, digits, '-' and '_' (at most 63 characters), e.g. with "
                   "--name")
    elif not service_name_ok(dns_name(group.name)):  # DNS-1035: what the API server checks
        shown = "" if not changed(group.name) else f" (as {dns_name(group.name)!r})"
        out.append(f"group name {group.name!r}{shown} does not start with a letter; on "
                   "kubernetes it names the headless Service that resolves the nodes, and a "
                   "Service name must start with a lower-case letter (a-z), e.g. with --name")
    safe: dict[str, str] = {}
    for t in group.tasks:
        name = t.name or ""
        why = name_problem(name, "task")
        if why:
            out.append(f"{why}: use letters, digits, '-' and '_' (at most 63 characters)")
        elif len(hostname(name, t.num_nodes - 1)) > 63:
            out.append(f"task '{name}': hostname {hostname(name, t.num_nodes - 1)} is longer "
                       "than 63 characters")
        elif dns_name(name) in safe and safe[dns_name(name)] != name:
            out.append(f"tasks '{safe[dns_name(name)]}' and '{name}' would both be named "
                       f"{dns_name(name)!r} on kubernetes; rename one")
        safe.setdefault(dns_name(name), name)
        if not why and len(pod_name(group.name, name, t.num_nodes - 1, 99)) > 253:
            out.append(f"task '{name}': pod names would exceed 253 characters")
        out.extend(_resource_problems(t, config))
        for dst, vol in t.volumes.items():
            claim = volume_claim(vol)
            if claim is None and isinstance(vol, dict) and "size" in vol:
                out.append(f"task '{name}': volumes {dst}: a volume made for the job ({{size: "
                           "...}) is not supported on kubernetes yet; create a claim (`jobgroup "
                           "volume create NAME --size 10Gi --infra kubernetes`) and name it")
            elif claim is None:
                shown = vol.get("sub_path") if isinstance(vol, dict) else None
                out.append(f"task '{name}': volumes {dst}: " + (
                    f"sub_path {shown!r} must be a relative path inside the volume (no '..')"
                    if shown is not None else "expected a volume name or {name: NAME}"))
            elif dns_label_problem(claim[0]):
                out.append(f"task '{name}': volumes {dst}: {claim[0]!r} cannot name a "
                           "PersistentVolumeClaim (lower-case a-z, 0-9 and '-')")
            if not dst.startswith("/"):
                out.append(f"task '{name}': volumes {dst}: the mount path must be absolute")
        for dst, spec in t.file_mounts.items():
            if not dst.startswith("/"):
                out.append(f"task '{name}': file_mounts {dst}: the mount path must be absolute "
                           "on kubernetes")
            if isinstance(spec, dict) and not spec.get("source"):
                bucket = spec.get("name")
                if not isinstance(bucket, str) or dns_label_problem(bucket):
                    out.append(f"task '{name}': file_mounts {dst}: name {bucket!r} cannot name a "
                               "PersistentVolumeClaim (lower-case a-z, 0-9 and '-')")
            else:
                src = spec.get("source") if isinstance(spec, dict) else spec
                if isinstance(src, str) and src.startswith(_URL_PREFIXES):
                    out.append(f"task '{name}': file_mounts {dst}: {src} is remote storage, which "
                               "the kubernetes backend does not fetch; use a volume or the image")
        if isinstance(t.resources.image_id, dict):
            out.append(f"task '{name}': image_id per region is not supported on kubernetes; "
                       "give one image")
        out.extend(podconfig.problems(config.pod_config, t))
    if not out and (workload or config.workload) != "pods":
        from jobgroup.backends.kubernetes import jobset

        out.extend(jobset.problems(group, config))
    return out


def volume_claim(vol: object) -> tuple[str, str | None] | None:
    """(claim, subPath or None) of a `volumes` value: `NAME` or `{name: NAME, sub_path: DIR}`
    (the claim's folder DIR, which the kubelet creates when missing); None for any other
    (a volume made for the job, `{size: ...}`, or a bad sub_path)."""
    if isinstance(vol, str):
        return vol, None
    if not isinstance(vol, dict) or "size" in vol or not isinstance(vol.get("name"), str):
        return None
    sub = vol.get("sub_path")
    if sub is None:
        return vol["name"], None
    if not isinstance(sub, str) or sub.startswith("/") or ".." in sub.split("/"):
        return None
    sub = posixpath.normpath(sub)
    return vol["name"], None if sub == "." else sub


def _resource_problems(t: Task, config: KubernetesConfig) -> list[str]:
    out: list[str] = []
    try:
        parse_cpus(t.resources.cpus)
        parse_memory(t.resources.memory)
        alts = parse_accelerators(t.resources.accelerators)
    except ValueError as e:
        return [f"task '{t.name}': {e}"]
    if alts:
        name, count = next(iter(alts[0].items()))
        if count != int(count):
            out.append(f"task '{t.name}': {count:g} {name} GPUs: kubernetes allocates whole GPUs")
        if config.gpu_label and config.gpu_values(name) is None:
            out.append(f"task '{t.name}': accelerator {name!r} has no entry in gpu_types of "
                       f"kubernetes.yaml (the values of node label {config.gpu_label} it may "
                       "run on); add one, or set gpu_label: null to accept any GPU")
    return out


def warnings(group: JobGroup) -> list[str]:
    """What the kubernetes backend runs but ignores (said once at launch)."""
    out = []
    for t in group.tasks:
        r = t.resources
        for key in ("use_spot", "instance_type", "disk_tier", "network_tier", "region", "zone"):
            if getattr(r, key) not in (None, False):
                out.append(f"task '{t.name}': resources.{key} is ignored on kubernetes")
        if r.any_of or r.ordered:
            out.append(f"task '{t.name}': only the first of any_of/ordered is used on kubernetes")
        if t.readiness_probe and t.readiness_probe.http and t.readiness_probe.http.status:
            out.append(f"task '{t.name}': readiness_probe.http.status: kubernetes accepts any "
                       "2xx/3xx")
    return out


# --- pieces ---------------------------------------------------------------------------------

def _quantity_gi(gb: float) -> str:
    if float(gb).is_integer():
        return f"{int(gb)}Gi"
    return f"{math.ceil(gb * 1024)}Mi"


def _cpu(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{math.ceil(v * 1000)}m"


def resources(t: Task, config: KubernetesConfig) -> tuple[Obj, Obj | None]:
    """(container resources, node affinity or None). `4` is a request and a limit, `4+` only a
    request (at least 4, may use more); GPUs are always both (Kubernetes requires it)."""
    req: dict[str, str] = {}
    lim: dict[str, str] = {}
    cpus, mem = parse_cpus(t.resources.cpus), parse_memory(t.resources.memory)
    if cpus:
        req["cpu"] = _cpu(cpus.value)
        if not cpus.at_least:
            lim["cpu"] = req["cpu"]
    if mem:
        req["memory"] = _quantity_gi(mem.value)
        if not mem.at_least:
            lim["memory"] = req["memory"]
    affinity = None
    alts = parse_accelerators(t.resources.accelerators)
    if alts:
        name, count = next(iter(alts[0].items()))
        req[config.gpu_resource] = lim[config.gpu_resource] = str(int(count))
        if config.gpu_label:
            values: list[str] = []
            for alt in alts:  # alternatives with the same count widen the choice
                (n, c), = alt.items()
                if c == count:
                    values.extend(v for v in config.gpu_values(n) or [] if v not in values)
            affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": config.gpu_label, "operator": "In", "values": values}]}]}}}
    out: Obj = {}
    if req:
        out["requests"] = req
    if lim:
        out["limits"] = lim
    return out, affinity


def _seconds(value: object) -> int:
    from jobgroup.spec.durations import parse_duration

    return max(1, math.ceil(parse_duration(value)))


def readiness_probe(t: Task) -> Obj | None:
    p = t.readiness_probe
    if p is None:
        return None
    from jobgroup.spec.durations import parse_duration

    out: Obj
    if p.http:
        out = {"httpGet": {"port": p.http.port, "path": p.http.path}}
    elif p.tcp:
        out = {"tcpSocket": {"port": p.tcp.port}}
    else:
        out = {"exec": {"command": ["/bin/sh", "-c", p.command or "true"]}}
    out.update({
        "initialDelaySeconds": math.ceil(parse_duration(p.initial_delay)),
        "periodSeconds": _seconds(p.interval),
        "timeoutSeconds": _seconds(p.timeout),
        "failureThreshold": max(1, p.failure_threshold),
        "successThreshold": 1,
    })
    return out


def _image(t: Task, config: KubernetesConfig) -> str:
    image = t.resources.image_id
    if isinstance(image, str) and image:
        return image[len("docker:"):] if image.startswith("docker:") else image
    return config.image


INDEX = "$(JOB_COMPLETION_INDEX)"  # a pod's rank in a JobSet, expanded by the kubelet
INDEX_ENV: Obj = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}


def _literal(value: str) -> str:
    """`value` as the kubelet passes it on: it expands `$(NAME)` and turns `$$` into `$` in
    env values, so a value holding either gets every `$` doubled."""
    return value.replace("$", "$$") if "$(" in value or "$$" in value else value


def _env(group: JobGroup, job_id: int, task_idx: int, rank: int | None,
         config: KubernetesConfig, overrides: dict[str, str] | None,
         submitted_at: float | None = None, workload: str = "pods") -> list[Obj]:
    """The node's variables, in precedence order (envs < secrets < --env < jobgroup's), each
    name once; secrets become secretKeyRefs unless a later layer overrides them.
    `submitted_at`: the job's submission time (SKYPILOT_TASK_ID's; None: a placeholder).
    `rank=None` (a JobSet's pod template, one for every node of the task): the rank-dependent
    variables are `$(JOB_COMPLETION_INDEX)` expansions, that variable defined first (the Job
    controller would add it last, after the variables that use it)."""
    task = group.tasks[task_idx]
    addrs = addresses(group, config, workload)
    env = discovery.node_env(group, job_id, task_idx, 0 if rank is None else rank, addrs,
                             topology_path=TOPOLOGY, overrides=overrides, setup=True,
                             infra="kubernetes", submitted_at=submitted_at)
    env = {k: _literal(v) for k, v in env.items()}
    secret_names = {k for k in task.secrets if k not in (overrides or {}) and
                    not k.startswith(("SKYPILOT_", "JOBGROUP_"))}
    t = task.name or ""
    if workload == "jobset":  # a task waits only for nodes that exist before it runs
        later = dependents(group, task_idx)
        peers = " ".join(a for (i, _), a in addrs.items() if i not in later)
    else:
        peers = " ".join(addrs.values())
    env.update({"JOBGROUP_PEERS": peers, "JOBGROUP_DNS_WAIT": str(config.dns_wait_timeout)})
    index: int | str = INDEX if rank is None else rank
    if rank is None:
        env["SKYPILOT_NODE_RANK"] = env["SKYPILOT_SETUP_NODE_RANK"] = INDEX
    if workload == "jobset" or changed(t) or changed(group.name):  # the pod's real names
        real = node_hostname(group.name, t, index, workload)
        env["JOBGROUP_HOSTNAME"] = real
        env["JOBGROUP_FQDN"] = f"{real}.{dns_name(group.name)}"
    if task.workdir is not None:
        env["JOBGROUP_WORKDIR"] = WORKDIR
    out: list[Obj] = [copy.deepcopy(INDEX_ENV)] if rank is None else []
    for k in sorted(env):
        if k in secret_names:
            out.append({"name": k, "valueFrom": {"secretKeyRef": {
                "name": secret_name(group.name), "key": f"{t}.{k}"}}})
        else:
            out.append({"name": k, "value": env[k]})
    return out


def secret_name(group: str) -> str:
    return f"{dns_name(group)}-secrets"


def job_configmap_name(group: str) -> str:
    return f"{dns_name(group)}-job"


class _Files:
    """Distinct local contents (workdir, file_mounts) -> one ConfigMap each."""

    def __init__(self, group: JobGroup, base_dir: Path) -> None:
        self.group = group
        self.base_dir = base_dir
        self.bundles: dict[str, Bundle] = {}  # digest -> bundle
        self.problems: list[str] = []
        self._seen: dict[Path, tuple[str, Bundle] | None] = {}

    def add(self, source: str, what: str) -> tuple[str, Bundle] | None:
        path = Path(os.path.expanduser(source))
        path = path if path.is_absolute() else self.base_dir / path
        if path not in self._seen:  # read each source once, whatever the number of pods
            self._seen[path] = self._read(path, what)
        return self._seen[path]

    def _read(self, path: Path, what: str) -> tuple[str, Bundle] | None:
        if not path.exists():
            self.problems.append(f"{what}: {path} does not exist")
            return None
        try:
            bundle = collect(path, what)
        except FilesTooBig as e:
            self.problems.append(str(e))
            return None
        except OSError as e:
            self.problems.append(f"{what}: cannot read {path}: {e.strerror}")
            return None
        digest = bundle.digest()
        self.bundles.setdefault(digest, bundle)
        return f"{dns_name(self.group.name)}-files-{digest}", bundle

    def objects(self, job_id: int, config: KubernetesConfig) -> list[Obj]:
        out = []
        for digest in sorted(self.bundles):
            bundle = self.bundles[digest]
            if bundle.archived:  # tar parts, one ConfigMap each (files.py)
                for i, part in enumerate(bundle.parts()):
                    out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                        "name": f"{dns_name(self.group.name)}-files-{digest}-{i}",
                        "namespace": config.namespace,
                        "labels": labels(self.group.name, job_id, home=config.home_uid)},
                        "binaryData": {part_key(i): base64.b64encode(part).decode()}})
                continue
            data, binary = configmap_data(bundle)
            cm: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"{dns_name(self.group.name)}-files-{digest}",
                "namespace": config.namespace,
                "labels": labels(self.group.name, job_id, home=config.home_uid)}}
            if data:
                cm["data"] = data
            if binary:
                cm["binaryData"] = binary
            out.append(cm)
        return out


UNPACK_DIR = "/var/jobgroup/files"  # where the tar parts of large contents are mounted


def _mounts(group: JobGroup, task: Task, files: _Files, config: KubernetesConfig
            ) -> tuple[list[Obj], list[Obj], list[str]]:
    """(volumes, volumeMounts, what the driver unpacks: `digest<TAB>destination` lines, `-`
    for the workdir) of one pod of `task` (besides the job ConfigMap)."""
    vols: list[Obj] = []
    mounts: list[Obj] = []
    unpack: list[str] = []
    name = task.name or ""

    def configmap_volume(cm: str, bundle: Bundle) -> str:
        vname = f"files-{len(vols)}"
        if bundle.archived:  # every part of the tar, as one folder
            vols.append({"name": vname, "projected": {"sources": [
                {"configMap": {"name": f"{cm}-{i}", "items": [
                    {"key": part_key(i), "path": part_key(i)}]}}
                for i in range(len(bundle.parts()))]}})
            mounts.append({"name": vname, "mountPath": f"{UNPACK_DIR}/{bundle.digest()}",
                           "readOnly": True})
            return vname
        items = [{"key": k, "path": rel} for rel, k in sorted(bundle.keys().items())]
        vols.append({"name": vname, "configMap": {"name": cm, "items": items}})
        return vname

    if isinstance(task.workdir, str):
        got = files.add(task.workdir, f"task '{name}': workdir")
        if got:
            vname = configmap_volume(*got)
            if got[1].archived:
                unpack.append(f"{got[1].digest()}\t-")
            else:
                mounts.append({"name": vname, "mountPath": WORKDIR_SRC, "readOnly": True})
    elif task.workdir is not None:
        files.problems.append(f"task '{name}': workdir as a git repository is not supported on "
                              "kubernetes; use a local folder")
    for dst in sorted(task.volumes):
        claim, sub_path = volume_claim(task.volumes[dst]) or (str(task.volumes[dst]), None)
        vname = f"vol-{len(vols)}"
        vols.append({"name": vname, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": vname, "mountPath": dst, **({"subPath": sub_path}
                                                           if sub_path else {})})
    for dst in sorted(task.file_mounts):
        spec = task.file_mounts[dst]
        if isinstance(spec, dict) and not spec.get("source"):
            vname = f"vol-{len(vols)}"
            vols.append({"name": vname, "persistentVolumeClaim": {"claimName": str(spec["name"])}})
            mounts.append({"name": vname, "mountPath": dst})
            continue
        src = spec.get("source") if isinstance(spec, dict) else spec
        if not isinstance(src, str) or src.startswith(_URL_PREFIXES):
            continue  # reported by problems()
        got = files.add(src, f"task '{name}': file_mounts {dst}")
        if got:
            cm, bundle = got
            vname = configmap_volume(cm, bundle)
            if bundle.archived:  # unpacked by the driver into a writable folder at `dst`
                into = f"unpacked-{len(vols)}"
                vols.append({"name": into, "emptyDir": {}})
                mounts.append({"name": into, "mountPath": dst})
                unpack.append(f"{bundle.digest()}\t{dst}")
            elif bundle.single:  # one file at exactly `dst`
                key = next(iter(bundle.keys().values()))
                vols[-1]["configMap"]["items"] = [{"key": key, "path": key}]
                mounts.append({"name": vname, "mountPath": dst, "subPath": key,
                               "readOnly": True})
            else:
                mounts.append({"name": vname, "mountPath": dst, "readOnly": True})
    return vols, mounts, unpack


def pvc_object(name: str, size: str | None = None, config: KubernetesConfig | None = None) -> Obj:
    """A PersistentVolumeClaim for named volume `name` (`jobgroup volume create NAME --size 10Gi
    --infra kubernetes`, or created on first use). No job labels: a volume outlives its jobs."""
    config = config or KubernetesConfig()
    why = dns_label_problem(name)
    if why:
        raise UsageError(f"volume name {name!r} cannot name a PersistentVolumeClaim ({why})")
    spec: Obj = {"accessModes": [config.volume_access_mode],
                 "resources": {"requests": {"storage": size or config.volume_size}}}
    if config.storage_class:
        spec["storageClassName"] = config.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": name, "namespace": config.namespace,
        "labels": {**MANAGED_BY, f"{LABEL}/volume": name}}, "spec": spec}


def service_object(group: JobGroup, job_id: int, config: KubernetesConfig) -> Obj:
    all_ports = sorted({p for t in group.tasks for p in ports(t.resources.ports)})
    spec: Obj = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {k: v for k, v in labels(group.name, job_id, home=config.home_uid).items()
                     if k.startswith(f"{LABEL}/")},
    }
    if all_ports:
        spec["ports"] = [{"name": f"p{p}", "port": p, "targetPort": p, "protocol": "TCP"}
                         for p in all_ports]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": dns_name(group.name), "namespace": config.namespace,
        "labels": labels(group.name, job_id, home=config.home_uid)}, "spec": spec}


def host_aliases(group: JobGroup, config: KubernetesConfig,
                 workload: str = "pods") -> str | None:
    """`real-fqdn {task}-{rank}.{group} {task}-{rank}` per node, when the names as written
    are not the pods' own: in a JobSet (pods are `{group}-{task}-0-{rank}`), or when some name
    of the group is not DNS-safe (names.py); None when every name is the pod's own."""
    if workload != "jobset" and not (changed(group.name) or
                                     any(changed(t.name or "") for t in group.tasks)):
        return None
    return "".join(f"{node_fqdn(group.name, t.name or '', r, config, workload)} "
                   f"{discovery.fqdn(t.name or '', r, group.name)} "
                   f"{discovery.hostname(t.name or '', r)}\n"
                   for _, r, t in group.nodes())


def job_configmap(group: JobGroup, job_id: int, config: KubernetesConfig,
                  workload: str = "pods") -> Obj:
    data = {"topology.json": json.dumps(
        discovery.topology(group, job_id, addresses(group, config, workload)), indent=2,
        sort_keys=True)}
    aliases = host_aliases(group, config, workload)
    if aliases:
        data[ALIASES_KEY] = aliases
        data[f"{ALIASES_KEY}.sh"] = ALIAS_SCRIPT
    for t in group.tasks:  # each run as SkyPilot runs it (nodescript.py), by the driver
        keep = [*t.envs, *t.secrets]
        if t.setup:
            data[f"{t.name}.setup.sh"] = nodescript.compose(t.setup, setup=True, keep=keep)
        run = (RUN_PREAMBLE if aliases else "") + (t.run or "true\n")
        data[f"{t.name}.run.sh"] = nodescript.compose(run, keep=keep) if t.run else run
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": job_configmap_name(group.name), "namespace": config.namespace,
        "labels": labels(group.name, job_id, home=config.home_uid)}, "data": data}


def secret_object(group: JobGroup, job_id: int, config: KubernetesConfig, *,
                  reveal: bool = True) -> Obj | None:
    data = {f"{t.name}.{k}": (v if reveal else "<redacted>")
            for t in group.tasks for k, v in sorted(t.secrets.items())}
    if not data:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
        "name": secret_name(group.name), "namespace": config.namespace,
        "labels": labels(group.name, job_id, home=config.home_uid)}, "stringData": data}


def pod_group_name(group: str, job_id: int) -> str:
    return f"{dns_name(group)}-{job_id}"


DSHM = "dshm"
PODINFO = "podinfo"
PODINFO_DIR = "/etc/podinfo"  # the pod's annotations (downward API), read by the driver
STOP_ANNOTATION = f"{LABEL}/stop"  # "now": the driver forwards SIGTERM at once (see driver.py)


def pod_template(group: JobGroup, job_id: int, task_idx: int, config: KubernetesConfig,
                 files: _Files, *, rank: int | None, attempt: int | None = None,
                 env: dict[str, str] | None = None, gated: bool = False,
                 submitted_at: float | None = None, workload: str = "pods",
                 grace: float | None = None) -> Obj:
    """The metadata (labels, annotations) and spec of the pods of task `task_idx`: one node's
    (`rank`) for bare pods, or the template of every node of the task in a JobSet
    (`rank=None`: the Job controller gives each pod its index). With the /dev/shm volume
    (`dshm`) and the pod_config of kubernetes.yaml and of the task merged in last
    (`podconfig.py`). `gated`: `run` waits for the controller; `submitted_at`: the job's
    submission time (SKYPILOT_TASK_ID); `grace`: the launch's `--grace` (a JobSet's pods are
    deleted by the cluster, with their own grace period)."""
    task = group.tasks[task_idx]
    name = task.name or ""
    res, affinity = resources(task, config)
    vols, mounts, unpack = _mounts(group, task, files, config)
    vols.insert(0, {"name": "jobgroup", "configMap": {"name": job_configmap_name(group.name)}})
    mounts.insert(0, {"name": "jobgroup", "mountPath": JOB_DIR, "readOnly": True})
    if config.dshm:
        vols.append({"name": DSHM, "emptyDir": {"medium": "Memory", **(
            {"sizeLimit": config.dshm_size} if config.dshm_size else {})}})
        mounts.append({"name": DSHM, "mountPath": "/dev/shm"})
    env_list = _env(group, job_id, task_idx, rank, config, env, submitted_at, workload)
    if gated:
        env_list.append({"name": "JOBGROUP_RUN_GATE", "value": "1"})
    if unpack:
        env_list.append({"name": "JOBGROUP_UNPACK", "value": "\n".join(unpack)})
    grace_s = 30 if grace is None else max(0, math.ceil(grace))
    if workload == "jobset":
        delay = 0 if name in group.primaries else math.ceil(delay_for(group, name))
        if delay:  # an auxiliary: its run gets SIGTERM `delay` seconds after its pod's
            env_list.append({"name": "JOBGROUP_STOP_DELAY", "value": str(delay)})
            grace_s += delay
        vols.append({"name": PODINFO, "downwardAPI": {"items": [{
            "path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}})
        mounts.append({"name": PODINFO, "mountPath": PODINFO_DIR, "readOnly": True})
    container: Obj = {
        "name": CONTAINER,
        "image": _image(task, config),
        "imagePullPolicy": config.image_pull_policy,
        "command": ["/bin/bash", "-c", DRIVER],
        "env": env_list,
        "volumeMounts": mounts,
        "startupProbe": {  # `started` once setup succeeded (how the controller learns it)
            "exec": {"command": ["test", "-e", "/tmp/jobgroup/setup-done"]},
            "periodSeconds": 2,
            "failureThreshold": max(1, math.ceil(config.setup_timeout / 2)),
        },
        "terminationMessagePolicy": "File",
    }
    if res:
        container["resources"] = res
    task_ports = ports(task.resources.ports)
    if task_ports:
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in task_ports]
    probe = readiness_probe(task)
    if probe:
        container["readinessProbe"] = probe
    meta_labels = labels(group.name, job_id, name, task_idx, rank, attempt,
                         home=config.home_uid)
    spec: Obj = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_s,
        "containers": [container],
        "volumes": vols,
    }
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    if config.scheduler_name:
        spec["schedulerName"] = config.scheduler_name
    if config.node_selector:
        spec["nodeSelector"] = dict(sorted(config.node_selector.items()))
    if affinity:
        spec["affinity"] = affinity
    if config.tolerations:
        spec["tolerations"] = list(config.tolerations)
    out: Obj = {"metadata": {"labels": meta_labels}, "spec": spec}
    try:
        podconfig.merge(out, podconfig.effective(config.pod_config, task))
    except podconfig.PodConfigError as e:
        why = f"task '{name}': {e}"
        if why not in files.problems:
            files.problems.append(why)
    return out


def pod_object(group: JobGroup, job_id: int, task_idx: int, rank: int, config: KubernetesConfig,
               files: _Files, *, attempt: int = 1, env: dict[str, str] | None = None,
               gated: bool = False, submitted_at: float | None = None) -> Obj:
    """The bare Pod of node `rank` of task `task_idx` (workload `pods`). `gated`: `run` waits
    for the controller; `submitted_at`: the job's submission time (SKYPILOT_TASK_ID)."""
    name = group.tasks[task_idx].name or ""
    tpl = pod_template(group, job_id, task_idx, config, files, rank=rank, attempt=attempt,
                       env=env, gated=gated, submitted_at=submitted_at)
    meta_labels = tpl["metadata"]["labels"]
    annotations: dict[str, str] = dict(tpl["metadata"].get("annotations") or {})
    if config.kueue_queue:
        total = sum(t.num_nodes for t in group.tasks)
        meta_labels[KUEUE_QUEUE] = config.kueue_queue
        meta_labels[KUEUE_GROUP] = pod_group_name(group.name, job_id)
        annotations[KUEUE_TOTAL] = str(total)
    if config.pod_group:
        meta_labels[COSCHED_GROUP] = pod_group_name(group.name, job_id)
    metadata: Obj = {"name": pod_name(group.name, name, rank, attempt),
                     "namespace": config.namespace, **tpl["metadata"], "labels": meta_labels}
    if annotations:
        metadata["annotations"] = annotations
    spec: Obj = {"hostname": hostname(name, rank), "subdomain": dns_name(group.name),
                 **tpl["spec"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def pod_group_object(group: JobGroup, job_id: int, config: KubernetesConfig) -> Obj:
    """scheduler-plugins' coscheduling PodGroup: no pod binds until all of them fit."""
    total = sum(t.num_nodes for t in group.tasks)
    return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "metadata": {
        "name": pod_group_name(group.name, job_id), "namespace": config.namespace,
        "labels": labels(group.name, job_id, home=config.home_uid)},
        "spec": {"minMember": total,
                 "scheduleTimeoutSeconds": max(1, math.ceil(config.schedule_timeout))}}


# --- whole group ----------------------------------------------------------------------------

def claims(group: JobGroup, config: KubernetesConfig) -> list[Obj]:
    """The PVCs of the group's named volumes, when kubernetes.yaml creates them on first use
    (no job labels: volumes outlive jobs)."""
    if not config.create_volumes:
        return []
    names = sorted({c[0] for t in group.tasks for v in t.volumes.values()
                    if (c := volume_claim(v))} |
                   {str(s["name"]) for t in group.tasks for s in t.file_mounts.values()
                    if isinstance(s, dict) and not s.get("source")})
    return [pvc_object(n, None, config) for n in names]


def render_objects(group: JobGroup, job_id: int = 0, config: KubernetesConfig | None = None, *,
                   base_dir: Path | str | None = None, env: dict[str, str] | None = None,
                   reveal_secrets: bool = True, gated: bool = False,
                   submitted_at: float | None = None, workload: str | None = None,
                   grace: float | None = None, suspend: bool = False) -> list[Obj]:
    """Every object of the group, in apply order. Workload `jobset` (`jobset.py`): PVCs,
    Secret, ConfigMaps, the JobSet; `pods`: PVCs, Secret, ConfigMaps, Service, PodGroup, Pods.
    Deterministic (same input -> same output). Raises RenderError listing every problem.

    `base_dir`: the folder relative workdir/file_mounts paths are resolved against (the spec
    file's folder; default: the current directory). `env`: `--env` overrides.
    `submitted_at`: when the job was submitted (SKYPILOT_TASK_ID's time; a dry run has none).
    `workload`: "jobset" or "pods" (default: kubernetes.yaml's, else "jobset"). `grace`: the
    launch's `--grace` (a JobSet's pods' grace period); `suspend`: the JobSet is created
    suspended. `reveal_secrets=False` writes `<redacted>` instead of secret values (for
    printing)."""
    config = config or KubernetesConfig()
    workload = workload_of(config, workload)
    errs = problems(group, config, workload)
    if errs:
        raise RenderError(errs)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if workload == "jobset":
        from jobgroup.backends.kubernetes import jobset

        return jobset.objects(group, job_id, config, base_dir=base, env=env,
                              reveal_secrets=reveal_secrets, submitted_at=submitted_at,
                              grace=grace, suspend=suspend)
    files = _Files(group, base)
    pods = [pod_object(group, job_id, i, r, config, files, env=env, gated=gated,
                       submitted_at=submitted_at)
            for i, r, _ in group.nodes()]
    if files.problems:
        raise RenderError(files.problems)
    out: list[Obj] = claims(group, config)
    secret = secret_object(group, job_id, config, reveal=reveal_secrets)
    if secret:
        out.append(secret)
    out.append(job_configmap(group, job_id, config))
    out.extend(files.objects(job_id, config))
    out.append(service_object(group, job_id, config))
    if config.pod_group:
        out.append(pod_group_object(group, job_id, config))
    out.extend(pods)
    return out


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # every object written out in full
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(c in value for c in "\r\t") and \
        not value.startswith(" ") and all(not ln.endswith(" ") for ln in value.split("\n")) \
        else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: list[Obj]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=True, width=100)


HEADER = """\
# Generated by jobgroup for the kubernetes backend (`kubectl apply -f` works).
# Applied by hand, every pod runs setup, waits for its peers' names, then runs; the controller's
# policies (primary tasks, termination_delay, fail-fast, restarts, depends_on, the gang timeout)
# apply only when jobgroup launches the group. Pod IPs are unknown before scheduling, so
# SKYPILOT_NODE_IPS holds the nodes' DNS names.
"""

HEADER_JOBSET = """\
# Generated by jobgroup for the kubernetes backend: a JobSet (jobset.x-k8s.io/v1alpha2, JobSet
# v0.8 or later) and what its pods read (`kubectl apply -f` works). The cluster runs the group
# by its rules (success of the primary tasks, fail-fast, restarts, depends_on, termination_delay)
# with or without jobgroup; a launch also makes the JobSet own the ConfigMaps and the Secret
# (ownerReferences need its uid), so that deleting it deletes them. SKYPILOT_NODE_IPS holds the
# nodes' DNS names until they run (then their IPs).
"""


def render_yaml(group: JobGroup, job_id: int = 0, config: KubernetesConfig | None = None, *,
                base_dir: Path | str | None = None, env: dict[str, str] | None = None,
                reveal_secrets: bool = False, workload: str | None = None) -> str:
    """The group's objects as multi-document YAML (for `launch --dryrun -o yaml`). Secret values
    are `<redacted>` unless `reveal_secrets`."""
    objs = render_objects(group, job_id, config, base_dir=base_dir, env=env,
                          reveal_secrets=reveal_secrets, workload=workload)
    note = "" if reveal_secrets or not any(o["kind"] == "Secret" for o in objs) else \
        "# Secret values are shown as <redacted>.\n"
    jobset = workload_of(config or KubernetesConfig(), workload) == "jobset"
    return (HEADER_JOBSET if jobset else HEADER) + note + to_yaml(objs)
