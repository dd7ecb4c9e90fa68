"""A job group as one JobSet (kubernetes-sigs/jobset, API `jobset.x-k8s.io/v1alpha2`, v0.8 or
later), so that the cluster owns the group's life: it runs to its end, by the group's rules,
whether or not a jobgroup controller is still there (pure: spec + job id + config -> dicts).

What the group becomes (workload `jobset`, the default where the cluster serves JobSet):
- one JobSet named after the group (DNS-safe form, `names.py`) with
  `network: {enableDNSHostnames: true, subdomain: <group>, publishNotReadyAddresses: true}`:
  JobSet makes the headless Service `<group>` (owned by the JobSet) that gives every pod a DNS
  name before it is ready;
- one replicatedJob per task (`replicas: 1`): an Indexed Job with `completions = parallelism =
  num_nodes`, `podReplacementPolicy: Failed`. Its pods' hostnames are the Job controller's
  `{job}-{index}`, the Job being `{group}-{task}-0`: node `rank` of `task` is
  `{group}-{task}-0-{rank}.{group}` in cluster DNS. The names as written,
  `{task}-{rank}.{group}` and `{task}-{rank}` (SkyPilot's job-group names), resolve in every
  node's `run` through /etc/hosts lines kept current (`names.py`, the way SkyPilot's job groups
  do it on Kubernetes: `sky/jobs/job_group_networking.py`); SKYPILOT_JOBGROUP_HOST_<TASK> and
  SKYPILOT_NODE_IPS are the DNS names until a node runs, where the driver turns
  SKYPILOT_NODE_IPS into the pods' IPs;
- `successPolicy: {operator: All, targetReplicatedJobs: <the primary tasks>}`: the JobSet
  completes when every primary task's Job has; JobSet then deletes the auxiliaries' Jobs. An
  auxiliary with a `termination_delay` keeps running that long: its pods' grace period is the
  delay plus the launch's `--grace`, and the node driver passes SIGTERM on to `run` only after
  the delay (sooner once the pod carries the annotation `jobgroup.dev/stop: now`, which
  `jobgroup cancel` sets; the kubelet refreshes it within about a minute);
- fail-fast: a Job fails at its first failed pod (`backoffLimit` 0), and without a
  `failurePolicy` a failed Job fails the JobSet, which deletes the other Jobs. With
  `max_group_restarts: N`, `failurePolicy: {maxRestarts: N}` (JobSet's default action,
  RestartJobSet, recreates every Job; then the JobSet fails);
- recovery of a task's nodes, by its Job: `backoffLimit = max_restarts_on_errors`,
  `podFailurePolicy` rules `Ignore` for `recover_on_exit_codes` and, with a recovery
  `strategy`, for pods the cluster disrupted (condition DisruptionTarget: preemption, eviction,
  drain): the Job controller replaces the pod (that one node, the task's others keep running)
  without counting it;
- `depends_on` as replicatedJobs' `dependsOn` (`completed` -> `Complete`, `ready` and `started`
  -> `Ready`: every pod of the task ready, i.e. setup done and its readiness probe passing); the
  replicatedJobs are listed in an order where every task comes after what it waits for; a
  pipeline (`execution: serial`) is a chain of `Complete`. JobSet creates a task's Job only
  once its dependencies reached their condition, so its setup runs then;
- `ttlSecondsAfterFinished` (kubernetes.yaml `ttl_after_finished`): the cluster deletes a
  finished JobSet (and everything it owns) once no controller did;
- the job ConfigMap (scripts, topology, host aliases), the files ConfigMaps and the Secret,
  owned by the JobSet (the backend adds the ownerReferences once the JobSet exists: its uid),
  so deleting the JobSet deletes them; PVCs are not owned (volumes outlive jobs);
- with `kueue_queue`: the JobSet carries `kueue.x-k8s.io/queue-name` and is created suspended;
  Kueue admits it whole (gang) and resumes it.

Labels: every object carries the job's labels (`render.labels`: `app.kubernetes.io/*`,
`jobgroup.dev/group`, `job-id`, `home`); pods add their task's (`component`, `task`,
`task-index`); JobSet adds its own (`jobset.sigs.k8s.io/*`) and the Job controller the pod's
index (annotation `batch.kubernetes.io/job-completion-index`). A controller re-attaches to a
group by these labels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jobgroup.backends.kubernetes import render
from jobgroup.backends.kubernetes.config import KubernetesConfig
from jobgroup.backends.kubernetes.names import dns_name
from jobgroup.spec.models import JobGroup, JobRecovery, Task

Obj = dict[str, Any]

API_VERSION = "jobset.x-k8s.io/v1alpha2"
GROUP, VERSION, PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RJOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
RESTART_LABEL = "jobset.sigs.k8s.io/restart-attempt"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MAX_DEPENDS_ON = 5  # the CRD's maxItems


def jobset_name(group: str) -> str:
    return dns_name(group)


def job_name(group: str, task: str) -> str:
    """The one Job of `task`'s replicatedJob (JobSet names it `{jobset}-{replicatedJob}-0`)."""
    return f"{dns_name(group)}-{dns_name(task)}-0"


def order(group: JobGroup) -> list[int]:
    """Task indexes in the order of the replicatedJobs: spec order, but every task after the
    tasks it depends on (JobSet's `dependsOn` may name only earlier replicatedJobs)."""
    names = {t.name: i for i, t in enumerate(group.tasks)}
    deps = {i: {names[d] for d in t.dependencies() if d in names}
            for i, t in enumerate(group.tasks)}
    out: list[int] = []
    placed: set[int] = set()
    while len(out) < len(group.tasks):  # cycles are refused by the spec checks
        ready = [i for i in range(len(group.tasks)) if i not in placed and deps[i] <= placed]
        if not ready:  # (a cycle: keep spec order; the webhook would say why)
            ready = [i for i in range(len(group.tasks)) if i not in placed]
        out.append(ready[0])
        placed.add(ready[0])
    return out


def depends_on(group: JobGroup, task_idx: int) -> list[Obj]:
    """The replicatedJob's `dependsOn` for task `task_idx`."""
    task = group.tasks[task_idx]
    if group.execution == "serial":
        return [] if task_idx == 0 else [{
            "name": dns_name(group.tasks[task_idx - 1].name or ""), "status": "Complete"}]
    names = {t.name for t in group.tasks}
    return [{"name": dns_name(dep), "status": "Complete" if cond == "completed" else "Ready"}
            for dep, cond in task.dependencies().items() if dep in names]


def _recovery(task: Task) -> JobRecovery | None:
    rec = task.resources.job_recovery
    return JobRecovery(strategy=rec) if isinstance(rec, str) else rec


def job_spec_policies(task: Task) -> Obj:
    """`backoffLimit` and `podFailurePolicy` of the task's Job (see the module docstring)."""
    rec = _recovery(task)
    codes = rec.recover_on_exit_codes if rec else None
    codes = [codes] if isinstance(codes, int) else list(codes or [])
    codes = sorted({c for c in codes if c != 0})  # `In` may not list 0
    rules: list[Obj] = []
    if codes:
        rules.append({"action": "Ignore", "onExitCodes": {
            "containerName": render.CONTAINER, "operator": "In", "values": codes}})
    if rec and rec.strategy:
        rules.append({"action": "Ignore", "onPodConditions": [
            {"type": "DisruptionTarget", "status": "True"}]})
    out: Obj = {"backoffLimit": rec.max_restarts_on_errors if rec else 0}
    if rules:
        out["podFailurePolicy"] = {"rules": rules}
    return out


def problems(group: JobGroup, config: KubernetesConfig) -> list[str]:
    """What a JobSet cannot hold (names too long for the pods JobSet names, too many
    dependencies); empty when the group fits."""
    out: list[str] = []
    js = dns_name(group.name)
    for t in group.tasks:
        name = t.name or ""
        pod = f"{render.node_hostname(group.name, name, t.num_nodes - 1, 'jobset')}-abcde"
        if len(pod) > 63:
            out.append(f"task '{name}': in a JobSet its pods are named {pod[:-6]}-<5 "
                       f"characters>, {len(pod)} characters, more than Kubernetes' 63; "
                       f"shorten the group ({js!r}) or task name, or set `workload: pods` in "
                       "kubernetes.yaml")
        if len(t.dependencies()) > MAX_DEPENDS_ON:
            out.append(f"task '{name}': a JobSet holds at most {MAX_DEPENDS_ON} dependencies "
                       "per task (dependsOn); set `workload: pods` in kubernetes.yaml")
    return out


def replicated_job(group: JobGroup, job_id: int, task_idx: int, config: KubernetesConfig,
                   files: render._Files, *, env: dict[str, str] | None,
                   submitted_at: float | None, grace: float | None) -> Obj:
    task = group.tasks[task_idx]
    name = task.name or ""
    tpl = render.pod_template(group, job_id, task_idx, config, files, rank=None, env=env,
                              submitted_at=submitted_at, workload="jobset", grace=grace)
    job: Obj = {
        "completionMode": "Indexed",
        "completions": task.num_nodes,
        "parallelism": task.num_nodes,
        "podReplacementPolicy": "Failed",
        **job_spec_policies(task),
        "template": tpl,
    }
    out: Obj = {"name": dns_name(name), "replicas": 1}
    deps = depends_on(group, task_idx)
    if deps:
        out["dependsOn"] = deps
    out["template"] = {"metadata": {"labels": render.labels(
        group.name, job_id, name, task_idx, home=config.home_uid)}, "spec": job}
    return out


def jobset_object(group: JobGroup, job_id: int, config: KubernetesConfig, files: render._Files,
                  *, env: dict[str, str] | None = None, submitted_at: float | None = None,
                  grace: float | None = None, suspend: bool = False) -> Obj:
    """The group's JobSet. `suspend`: created suspended (Kueue admits it; the backend also
    creates it suspended and resumes it once the objects it owns exist)."""
    meta_labels = render.labels(group.name, job_id, home=config.home_uid)
    if config.kueue_queue:
        meta_labels[render.KUEUE_QUEUE] = config.kueue_queue
    spec: Obj = {
        "network": {"enableDNSHostnames": True, "subdomain": dns_name(group.name),
                    "publishNotReadyAddresses": True},
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [
            dns_name(n) for n in group.primaries]},
    }
    if group.max_group_restarts:
        spec["failurePolicy"] = {"maxRestarts": group.max_group_restarts}
    if suspend or config.kueue_queue:
        spec["suspend"] = True
    if config.ttl_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = max(0, math.ceil(config.ttl_after_finished))
    spec["replicatedJobs"] = [
        replicated_job(group, job_id, i, config, files, env=env, submitted_at=submitted_at,
                       grace=grace) for i in order(group)]
    return {"apiVersion": API_VERSION, "kind": "JobSet", "metadata": {
        "name": jobset_name(group.name), "namespace": config.namespace, "labels": meta_labels},
        "spec": spec}


def objects(group: JobGroup, job_id: int, config: KubernetesConfig, *, base_dir: Path,
            env: dict[str, str] | None, reveal_secrets: bool, submitted_at: float | None,
            grace: float | None, suspend: bool) -> list[Obj]:
    """Every object of the group in a JobSet, in the order `kubectl apply -f` wants them:
    PVCs (created on first use), Secret, ConfigMaps, the JobSet."""
    files = render._Files(group, base_dir)
    js = jobset_object(group, job_id, config, files, env=env, submitted_at=submitted_at,
                       grace=grace, suspend=suspend)
    if files.problems:
        raise render.RenderError(files.problems)
    out = render.claims(group, config)
    secret = render.secret_object(group, job_id, config, reveal=reveal_secrets)
    if secret:
        out.append(secret)
    out.append(render.job_configmap(group, job_id, config, "jobset"))
    out.extend(files.objects(job_id, config))
    out.append(js)
    return out
