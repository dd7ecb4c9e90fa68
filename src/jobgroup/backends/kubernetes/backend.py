"""KubernetesBackend: the Backend interface over the official `kubernetes` client.

NOT VERIFIED AGAINST A LIVE CLUSTER here (none can run on the build machines); the objects it
creates are the ones `render.py` produces, which are schema-validated and golden-tested, and the
status mapping is `status.py` (unit-tested). `tests/test_kubernetes_e2e.py` runs it against a real
cluster when KUBECONFIG points to one.

How the process-shaped interface maps onto pods (one pod per node, see `driver.py`):
- `admit` (the backend schedules itself) creates every object of the group once — PVCs, Secret,
  ConfigMaps, headless Service, pods whose `run` waits at a gate — then reports `waiting` with
  the scheduler's reason until every pod is bound to a node, `ready` then. Gang: with Kueue the
  pods are one Kueue pod group (admitted all at once); otherwise, when not every pod is scheduled
  within `schedule_timeout`, everything is deleted and the group fails (FAILED_NO_RESOURCE) with
  the scheduler's message (e.g. `0/3 nodes are available: 3 Insufficient nvidia.com/gpu.`).
- `prepare` returns each node's stable FQDN as its address.
- `start(setup)`: the pod already runs setup as soon as it is scheduled; `start` records the node
  and starts `kubectl logs -f` into the node's log file (logs do not pass through Python).
  `start(run)` opens the node's gate (`touch /tmp/jobgroup/run` through the exec API). A restarted
  node (attempt > 1) gets a new pod `{group}-{task}-{rank}-aN` with the same hostname.
- `outcome` reads the pod (`status.phase_outcome`); `watch` is one pod watch per backend (a
  thread) that calls back when a watched pod changes; `stop` deletes the pod (grace period, or 0
  with kill=True; quiet when it is gone); `cleanup` deletes every object labelled with the job
  (PVCs stay: volumes outlive jobs).
- Handles: `Handle(pid=<node number + 1>, pid_start=<attempt>)`; the pod is found by its labels,
  so a restarted controller rebuilds everything from the cluster.

Requires `pip install 'jobgroup[kubernetes]'` (imported when a backend is created) and kubectl
on PATH for logs and exec_argv. Kubeconfig contexts work like kubectl's (`context:` in
kubernetes.yaml, else the current context; in-cluster config when there is no kubeconfig).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from jobgroup.backends.base import Admission, Backend, Handle, Outcome, PhaseLaunch
from jobgroup.backends.kubernetes import render, status
from jobgroup.backends.kubernetes.config import KubernetesConfig, load_config
from jobgroup.spec.models import JobGroup

_STATUS = re.compile(r"(\d+)-(\d+)\.(\w+)\.(\d+)\.status$")


def _parse_status_path(path: Path) -> tuple[int, int, int, str, int]:
    """(job id, task index, rank, phase, attempt) from the controller's status path
    `.../jobs/JOB/nodes/TASK-RANK.PHASE.ATTEMPT.status`."""
    m = _STATUS.search(path.name)
    if not m:
        raise ValueError(f"not a node status path: {path}")
    return (int(path.parent.parent.name), int(m.group(1)), int(m.group(2)), m.group(3),
            int(m.group(4)))


class KubernetesBackend(Backend):
    name = "kubernetes"
    schedules_itself = True
    level = "pods"

    def __init__(self, home: Path, config: KubernetesConfig | None = None, *,
                 core: Any = None, custom: Any = None) -> None:
        """`core`/`custom`: a CoreV1Api / CustomObjectsApi (tests pass fakes); built from the
        kubeconfig on first use otherwise."""
        self.home = home
        self.config = config or load_config(home)
        self._core, self._custom = core, custom
        self._groups: dict[int, JobGroup] = {}
        self._base: dict[int, Path] = {}
        self._created: dict[int, float] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- client ---------------------------------------------------------------------------
    def _api(self) -> Any:
        if self._core is None:
            from kubernetes import client, config as kc  # heavy: imported only here

            try:
                kc.load_kube_config(context=self.config.context)
            except kc.ConfigException:
                kc.load_incluster_config()
            self._core, self._custom = client.CoreV1Api(), client.CustomObjectsApi()
        return self._core

    @staticmethod
    def _status_code(e: Exception) -> int | None:
        return getattr(e, "status", None)

    def _create(self, obj: dict[str, Any]) -> None:
        """Create `obj`; one that exists already is fine (idempotent after a restart), except a
        Service of the same name that belongs to another job."""
        api, ns, kind = self._api(), self.config.namespace, obj["kind"]
        creators = {
            "Pod": api.create_namespaced_pod, "Service": api.create_namespaced_service,
            "ConfigMap": api.create_namespaced_config_map,
            "Secret": api.create_namespaced_secret,
            "PersistentVolumeClaim": api.create_namespaced_persistent_volume_claim,
        }
        try:
            if kind == "PodGroup":
                self._custom.create_namespaced_custom_object(
                    "scheduling.x-k8s.io", "v1alpha1", ns, "podgroups", obj)
            else:
                creators[kind](ns, obj)
        except Exception as e:
            if self._status_code(e) != 409:
                raise
            if kind == "Service":
                svc = api.read_namespaced_service(obj["metadata"]["name"], ns)
                mine = obj["metadata"]["labels"][f"{render.LABEL}/job-id"]
                theirs = (getattr(svc.metadata, "labels", None) or {}).get(
                    f"{render.LABEL}/job-id")
                if theirs != mine:
                    raise RuntimeError(
                        f"a group named {obj['metadata']['name']!r} already runs in namespace "
                        f"{ns} (job {theirs}); names resolve per group, so cancel it or use "
                        "--name") from None

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        api = self._api()
        items = api.list_namespaced_pod(self.config.namespace, label_selector=selector).items
        return [api.api_client.sanitize_for_serialization(p) for p in items]

    def _pod(self, name: str) -> dict[str, Any] | None:
        api = self._api()
        try:
            pod = api.read_namespaced_pod(name, self.config.namespace)
        except Exception as e:
            if self._status_code(e) == 404:
                return None
            raise
        return api.api_client.sanitize_for_serialization(pod)

    # --- admission and preparation ---------------------------------------------------------
    def admit(self, job_id: int, group: JobGroup, options: dict) -> Admission:
        self._groups[job_id] = group
        selector = render.job_selector(job_id, group.name)
        created = float(options.get("k8s_created_at") or self._created.get(job_id) or 0)
        if not created:
            try:
                objs = render.render_objects(
                    group, job_id, self.config, base_dir=options.get("base_dir"),
                    env=options.get("env") or {}, gated=True)
                for obj in objs:
                    self._create(obj)
            except (render.RenderError, RuntimeError) as e:
                self.cleanup(job_id)
                return Admission("failed", str(e))
            created = self._created[job_id] = time.time()
            return Admission("waiting", f"created {len(objs)} objects in namespace "
                             f"{self.config.namespace}", {"k8s_created_at": created})
        pods = self._pods(selector)
        expected = sum(t.num_nodes for t in group.tasks)
        if status.all_scheduled(pods, expected):
            return Admission("ready", f"all {expected} pods scheduled")
        reason = status.unscheduled_reason(pods) or "waiting for the scheduler"
        if self.config.kueue_queue:
            return Admission("waiting", f"queued in Kueue queue {self.config.kueue_queue}: "
                             f"{reason}")
        if time.time() - created > self.config.schedule_timeout:
            self.cleanup(job_id)
            return Admission("failed", f"not every pod was scheduled within "
                             f"{self.config.schedule_timeout:g}s: {reason}")
        return Admission("waiting", reason)

    def prepare(self, job_id: int, group: JobGroup, base_dir: Path) -> dict[tuple[int, int], str]:
        self._groups[job_id] = group
        self._base[job_id] = base_dir
        return render.addresses(group, self.config)

    # --- phases -------------------------------------------------------------------------------
    def _pod_name(self, status_path: Path) -> tuple[str, str]:
        job_id, task_idx, rank, phase, attempt = _parse_status_path(status_path)
        group = self._groups[job_id]
        return render.pod_name(group.name, group.tasks[task_idx].name or "", rank, attempt), phase

    def start(self, launch: PhaseLaunch) -> Handle:
        group = self._groups[launch.job_id]
        name, phase = self._pod_name(launch.status_path)
        job_id, task_idx, rank, _, attempt = _parse_status_path(launch.status_path)
        if phase == "setup":
            if attempt > 1 or self._pod(name) is None:  # a restarted node: a fresh pod
                files = render._Files(group, self._base.get(job_id, Path.cwd()))
                self._create(render.pod_object(group, job_id, task_idx, rank, self.config,
                                               files, attempt=attempt, gated=True))
            self._follow_logs(name, launch.log_path)
        else:
            self._exec(name, ["touch", render.PODINFO_GATE])
        index = sum(t.num_nodes for t in group.tasks[:task_idx]) + rank
        return Handle(pid=index + 1, pid_start=attempt)

    def _kubectl(self) -> list[str]:
        argv = ["kubectl", "--namespace", self.config.namespace]
        if self.config.context:
            argv += ["--context", self.config.context]
        return argv

    def _follow_logs(self, pod: str, log_path: Path) -> None:
        """`kubectl logs -f` straight into the node's log file (kept after the pod ends)."""
        if shutil.which("kubectl") is None:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            subprocess.Popen(self._kubectl() + ["logs", "-f", "--pod-running-timeout=24h", pod],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)

    def _exec(self, pod: str, argv: list[str]) -> None:
        from kubernetes.stream import stream

        api = self._api()
        stream(api.connect_get_namespaced_pod_exec, pod, self.config.namespace,
               container=render.CONTAINER, command=argv, stderr=True, stdin=False,
               stdout=True, tty=False)

    def exec_argv(self, job_id: int, task_idx: int, rank: int, argv: list[str]) -> list[str]:
        group = self._groups[job_id]
        pod = render.pod_name(group.name, group.tasks[task_idx].name or "", rank)
        return self._kubectl() + ["exec", pod, "-c", render.CONTAINER, "--", *argv]

    def outcome(self, handle: Handle | None, status_path: Path) -> Outcome | None:
        name, phase = self._pod_name(status_path)
        return status.phase_outcome(self._pod(name), phase,
                                    stop_requested=name in self._stopping)

    def alive(self, handle: Handle) -> bool:
        return True  # pods have no supervisor process here; `outcome` is the truth

    def find(self, status_path: Path) -> Handle | None:
        name, _ = self._pod_name(status_path)
        if self._pod(name) is None:
            return None
        job_id, task_idx, rank, _, attempt = _parse_status_path(status_path)
        group = self._groups[job_id]
        index = sum(t.num_nodes for t in group.tasks[:task_idx]) + rank
        return Handle(pid=index + 1, pid_start=attempt)

    def watch(self, loop: asyncio.AbstractEventLoop, handle: Handle,
              on_end: Callable[[], None]) -> None:
        """Calls `on_end` (in the loop) at the next change of any jobgroup pod after this
        call; the controller then asks `outcome` and re-watches if the phase still runs."""
        with self._lock:
            self._watchers.setdefault("*", []).append(
                lambda: loop.call_soon_threadsafe(on_end))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch_loop, daemon=True,
                                                name="jobgroup-k8s-watch")
                self._thread.start()

    def _watch_loop(self) -> None:
        from kubernetes import watch

        selector = "app.kubernetes.io/managed-by=jobgroup"
        while True:
            try:
                for _event in watch.Watch().stream(self._api().list_namespaced_pod,
                                                   self.config.namespace,
                                                   label_selector=selector,
                                                   timeout_seconds=300):
                    with self._lock:
                        calls, self._watchers = self._watchers.get("*", []), {}
                    for call in calls:
                        call()
            except Exception:  # the API server went away: retry (a watch is only a wake-up)
                time.sleep(2)

    def stop(self, handle: Handle, status_path: Path, *, kill: bool = False) -> None:
        name, _ = self._pod_name(status_path)
        self._stopping.add(name)
        try:
            self._api().delete_namespaced_pod(
                name, self.config.namespace, grace_period_seconds=0 if kill else 30)
        except Exception as e:
            if self._status_code(e) != 404:
                raise

    def cleanup(self, job_id: int) -> None:
        """Delete every object labelled with the job (not the PVCs); harmless twice."""
        api, ns = self._api(), self.config.namespace
        group = self._groups.get(job_id)
        selector = (render.job_selector(job_id, group.name) if group else
                    f"{render.LABEL}/job-id={job_id}")
        api.delete_collection_namespaced_pod(ns, label_selector=selector)
        api.delete_collection_namespaced_config_map(ns, label_selector=selector)
        api.delete_collection_namespaced_secret(ns, label_selector=selector)
        for svc in api.list_namespaced_service(ns, label_selector=selector).items:
            try:
                api.delete_namespaced_service(svc.metadata.name, ns)
            except Exception as e:
                if self._status_code(e) != 404:
                    raise
        if self.config.pod_group and self._custom is not None:
            try:
                self._custom.delete_collection_namespaced_custom_object(
                    "scheduling.x-k8s.io", "v1alpha1", ns, "podgroups", label_selector=selector)
            except Exception as e:
                if self._status_code(e) != 404:
                    raise
        self._created.pop(job_id, None)


def backend_from_env(home: Path) -> KubernetesBackend:
    """The backend as the controller would create it ($JOBGROUP_HOME/kubernetes.yaml)."""
    return KubernetesBackend(home, load_config(home))

