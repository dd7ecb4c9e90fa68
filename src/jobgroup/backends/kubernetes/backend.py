"""KubernetesBackend: the Backend interface over the official `kubernetes` client.

Verified against a fake API server + fake kubelet written for the tests (`tests/k8sfake`: real
REST paths and JSON, pods run as local processes), never against a real cluster here;
`tests/test_kubernetes_e2e.py` runs the same flow against a real cluster when KUBECONFIG points
to one. The objects it creates are the ones `render.py` produces (schema-validated, golden-tested);
the status mapping is `status.py`.

How the process-shaped interface maps onto pods (one pod per node, see `driver.py`):
- `admit` (the backend schedules itself) creates every object of the group once — PVCs, Secret,
  ConfigMaps, headless Service, pods whose `run` waits at a gate — then reports `waiting` with
  the scheduler's reason until every pod is bound to a node, `ready` then. Gang: with Kueue the
  pods are one Kueue pod group (admitted all at once); otherwise, when not every pod is scheduled
  within `schedule_timeout`, the pods are deleted (what they held goes back) and the group stays
  PENDING with the scheduler's message (e.g. `0/3 nodes are available: 3 Insufficient
  nvidia.com/gpu.`) until it tries again, as long again later: queued and retried, never half
  started, never failed for it (as the JobSet mode suspends its JobSet, see `jobsetmode`).
  An API server that does not answer raises `Unreachable` (the controller keeps the group
  pending, "cannot reach Kubernetes: ...", and asks again). Object names carry no job id (the
  hostnames must stay `{task}-{rank}`), so a name can be taken: by this job's own object (fine:
  a restarted controller), by another job's object on its way out (`cancel g; launch g.yaml`:
  pods stay Terminating for their grace period) or left by an ended group (`waiting` until it
  is gone, never adopted), or by a live group (the group fails, naming it).
- Every object and selector carries the state directory's uid (`jobgroup.dev/home`, see
  `config.home_uid`): job ids start at 1 in every state directory, and two users may share a
  namespace.
- `prepare` returns each node's stable FQDN as its address.
- `start(setup)`: the pod already runs setup as soon as it is scheduled; `start` starts
  `kubectl logs -f` into the node's log file (logs do not pass through the controller; kept after
  the pod ends). `start(run)` opens the node's gate (`touch /tmp/jobgroup/run` through the exec
  API; open once it exited 0, else tried again every 2 s; exec forbidden by the API server ends
  the node with exit code 126 and the server's message). A restarted node (attempt > 1) gets a
  new pod `{group}-{task}-{rank}-aN`, same hostname, once the previous attempt's pod is deleted.
- `outcome` reads the pod (`status.phase_outcome`) from a cache kept by one pod watch per
  backend (a thread that lists, then watches from the list's resourceVersion, as informers
  do; a GET while the watch is down or the cache lacks the pod); `watch` calls back at the
  first change of the handle's pod after the caller last read it (only that pod's changes
  wake it);
  `stop` deletes the pod (with the launch's `--grace`, or 0 with kill=True; quiet when it is gone);
  `cleanup` deletes every object labelled with the job (PVCs stay: volumes outlive jobs).
  Both first give the pods' log followers the time to get what the pods printed, since a pod's
  log goes with it (`_keep_logs`; a node stopped right after it started, while its follower
  still waits for the container to start, keeps its output).
- Handles: `{"pod": NAME}`; every call names its node (`NodeRef`), pods are found by name and
  labels, and a job this process was not handed (a restarted controller) is asked of `jobs`
  (the controller), so a restarted controller rebuilds everything from the cluster and its
  store. An API request the server refuses while admitting a group (403 forbidden by RBAC, ...)
  raises `Refused`: the group fails FAILED_PRECHECKS with the server's message.

Requires `pip install 'jobgroup[kubernetes]'` (imported when a backend is created) and kubectl
on PATH for logs and exec_argv. One backend object serves one cluster and context (its
`registry.Target`): the controller makes one per target its jobs were launched to, so each
launch runs where the launcher's kubectl points — the KUBECONFIG of the launching shell (else
~/.kube/config; in-cluster config when there is none) and its context: `infra:
kubernetes/CONTEXT`, else `context:` in kubernetes.yaml, else the kubeconfig's current one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import msgspec

from jobgroup.backends.base import (
    ENDED, Admission, Backend, Capabilities, Ended, Handle, JobContext, NodeNote, NodeRef,
    Outcome, PhaseLaunch, Refused, Unreachable, Usage,
)
from jobgroup.backends.kubernetes import jobset, render, status
from jobgroup.backends.kubernetes.client import (
    TIMEOUT, Connection, api_message, call, connect, describe,
)
from jobgroup.backends.kubernetes.config import (
    KubernetesConfig, home_uid, kubeconfig_path, load_config,
)
from jobgroup.backends.registry import Target
from jobgroup.backends.kubernetes.jobsetmode import JobSetMode
from jobgroup.spec.models import JobGroup
from jobgroup.state import layout

log = logging.getLogger("jobgroup.kubernetes")
GATE_RETRY = 2.0  # seconds before a phase whose run gate failed at `start` is looked at again
LOG_WAIT = 10.0  # seconds a deletion may wait for log followers to have the pods' output


_READERS = {"Pod": "read_namespaced_pod", "Service": "read_namespaced_service",
            "ConfigMap": "read_namespaced_config_map", "Secret": "read_namespaced_secret"}


class _Follower(NamedTuple):
    """A pod's log follower (see `_follow_logs`): its process, and the node's log file it
    appends to (only it writes there)."""

    proc: subprocess.Popen[bytes]
    log: Path


class _Busy(RuntimeError):
    """A name this job needs is still held by another job's object on its way out: wait."""


class KubernetesBackend(JobSetMode, Backend):
    name = "kubernetes"
    level = "pods"
    # Pod addresses are the cluster's: port-forward goes through the API (`forward_argv`).
    capabilities = Capabilities(self_scheduling=True, native_readiness=True, exec=True,
                                reachable=False)

    def __init__(self, home: Path, config: KubernetesConfig | None = None, *,
                 target: Target | None = None, core: Any = None, custom: Any = None) -> None:
        """The backend of the cluster and context `target` names (`registry.Target`: a
        launch's KUBECONFIG files and `infra: kubernetes/CONTEXT`; None: this process's
        KUBECONFIG and kubernetes.yaml's context), configured by `config` (else `home`'s
        kubernetes.yaml). `core`/`custom`: a CoreV1Api / CustomObjectsApi (tests may pass their
        own); built from the kubeconfig on first use otherwise."""
        self.home = home
        target = target or Target()
        self.config = config or load_config(home, kubeconfig=target.config, context=target.zone)
        if not self.config.home_uid:
            self.config = msgspec.structs.replace(self.config, home_uid=home_uid(home))
        self._core, self._custom = core, custom
        self._server = ""
        self._jobs: dict[int, JobContext] = {}  # handed by admit/prepare, or asked of `jobs`
        self._created: dict[int, float] = {}
        # The pod cache, fed by the watch thread (see `_watch_loop`), and the callbacks it
        # wakes: all guarded by `_lock` (written by the watch thread, read on the loop).
        self._cache: dict[str, dict[str, Any]] = {}  # pod name -> the pod, as last listed/seen
        self._synced = False  # the cache is current: listed, and the watch since is up
        self._version = 0  # pod changes the watch thread has seen (a sequence number)
        self._changed: dict[str, int] = {}  # pod name -> `_version` at its last change
        self._looked = 0  # `_version` when the controller last read a pod (outcome / start)
        self._looks: dict[NodeRef, dict[str, int]] = {}  # phase -> {pod: `_version` when read}
        self._waiting: dict[str, list[_Waiter]] = {}  # pod name -> callbacks it wakes
        self._anywhere: list[_Waiter] = []  # callbacks of no known pod: woken by any change
        self._stopping: set[str] = set()
        self._graces: dict[str, float] = {}  # pod -> the launch's grace period (`stop`)
        self._gated: set[str] = set()  # pods whose run gate this process has opened
        self._refused: dict[str, str] = {}  # pod -> why the API server refuses exec into it
        self._gate_failed: set[str] = set()  # pods whose gate failed (warned once)
        self._retry: set[NodeRef] = set()  # phases to look at again soon: their gate failed
        self._followers: dict[str, _Follower] = {}  # pod -> its log follower
        self._followers_stuck = False  # one got no stream in time: do not wait (`_keep_logs`)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # the JobSet workload's state (jobsetmode.py)
        self._workloads: dict[int, str] = {}  # job -> "jobset" | "pods"
        self._served: set[str] | None = None  # group/versions the API server serves
        self._js_cache: dict[int, tuple[float, dict[str, Any] | None]] = {}
        self._stopped_nodes: set[tuple[int, int, int]] = set()
        self._resumed: dict[int, float] = {}
        self._retry_at: dict[int, float] = {}

    _busy = _Busy

    # --- client ---------------------------------------------------------------------------
    def _api(self) -> Any:
        if self._core is None:
            conn = connect(self.config)
            self._core, self._custom, self._server = conn.core, conn.custom, conn.host
        return self._core

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call with a time-out; a server that does not answer -> Unreachable."""
        return call(Connection(self._core, self._custom, self._server or "?"), what, fn,
                    *args, **kwargs)

    @staticmethod
    def _status_code(e: Exception) -> int | None:
        return getattr(e, "status", None)

    def _create(self, obj: dict[str, Any]) -> None:
        """Create `obj`. One that exists already is fine when it is ours (same job, same state
        directory: idempotent after a controller restart); otherwise see `_conflict`."""
        api, ns, kind = self._api(), self.config.namespace, obj["kind"]
        creators = {
            "Pod": api.create_namespaced_pod, "Service": api.create_namespaced_service,
            "ConfigMap": api.create_namespaced_config_map,
            "Secret": api.create_namespaced_secret,
            "PersistentVolumeClaim": api.create_namespaced_persistent_volume_claim,
        }
        what = f"creating {kind} {obj['metadata']['name']}"
        try:
            if kind == "PodGroup":
                self._call(what, self._custom.create_namespaced_custom_object,
                           "scheduling.x-k8s.io", "v1alpha1", ns, "podgroups", obj)
            elif kind == "JobSet":
                self._call(what, self._custom.create_namespaced_custom_object,
                           *self._js_args(), obj)
            else:
                self._call(what, creators[kind], ns, obj)
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) != 409:
                raise RuntimeError(f"Kubernetes refused {what}: {api_message(e)}") from None
            if kind in _READERS or kind == "JobSet":
                self._conflict(obj)

    def _conflict(self, obj: dict[str, Any]) -> None:
        """`obj`'s name is taken (409). Ours (same job id and home uid): fine. Another job's
        object that is being deleted (a `cancel g; launch g.yaml` right after: pods stay
        Terminating for their grace period) or left over by a group that ended: `_Busy` (admit
        waits and tries again; never adopt it). Anything else (another user's or another job's
        live group, or an object jobgroup did not make): RuntimeError naming it."""
        api, ns, kind, name = self._api(), self.config.namespace, obj["kind"], \
            obj["metadata"]["name"]
        try:
            if kind == "JobSet":
                cur = self._call(f"reading {kind} {name}",
                                 self._custom.get_namespaced_custom_object, *self._js_args(),
                                 name)
            else:
                cur = self._call(f"reading {kind} {name}", getattr(api, _READERS[kind]), name,
                                 ns)
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) == 404:  # deleted in between: the next pass creates it
                raise _Busy(f"waiting for {kind} {name} to be deleted") from None
            raise RuntimeError(f"Kubernetes refused reading {kind} {name}: "
                               f"{api_message(e)}") from None
        cur = api.api_client.sanitize_for_serialization(cur)
        meta = cur.get("metadata") or {}
        have = meta.get("labels") or {}
        want = obj["metadata"]["labels"]
        job_key, home_key = f"{render.LABEL}/job-id", f"{render.LABEL}/home"
        if have.get(job_key) == want.get(job_key) and have.get(home_key) == want.get(home_key):
            return
        theirs = have.get(job_key)
        same_home = have.get(home_key) == self.config.home_uid
        owner = (f"job {theirs}" if same_home else
                 f"job {theirs} of another jobgroup state directory" if have.get(home_key) else
                 f"job {theirs} (no jobgroup.dev/home label)" if theirs else
                 "no jobgroup job")
        if meta.get("deletionTimestamp"):
            raise _Busy(f"waiting for {kind} {name} of {owner} to be deleted")
        state = self._job_state(int(theirs)) if same_home and theirs and theirs.isdigit() \
            else "unknown"
        if state == "ended":  # ours to remove: a cleanup that did not happen (or not yet)
            self._cleanup_leftover(int(theirs), have.get(f"{render.LABEL}/group", ""))
        ended = (kind == "Pod" and (cur.get("status") or {}).get("phase") in
                 ("Succeeded", "Failed")) or (kind == "JobSet" and bool(
                     (cur.get("status") or {}).get("terminalState")))
        if theirs and (ended or state in ("ended", "ending")):
            raise _Busy(f"waiting for {kind} {name} of {owner} to be deleted")
        group = want.get(f"{render.LABEL}/group")
        if kind in ("Service", "JobSet") or \
                (theirs and have.get(f"{render.LABEL}/group") == group):
            raise RuntimeError(
                f"a group named {group!r} already runs in namespace {ns} ({owner}); names "
                "resolve per group, so cancel it or use --name")
        if not theirs:
            raise RuntimeError(f"{kind} {name} already exists in namespace {ns} and was not "
                               "created by a jobgroup job; delete it or use --name")
        raise RuntimeError(f"{kind} {name} already exists in namespace {ns} and belongs to "
                           f"{owner}, which has not ended; cancel it or use --name")

    def _job_state(self, job_id: int) -> str:
        """Job `job_id` of this state directory: "ended", "ending" (cancel requested: its
        objects go once its pods have stopped), "live", or "unknown" (the controller does not
        know it); asked of the controller (`jobs`)."""
        return self.jobs.state(job_id)

    def _cleanup_leftover(self, job_id: int, group: str) -> None:
        """Delete what an ended job of this state directory left in the namespace."""
        log.info("deleting the leftovers of ended job %s (group %s)", job_id, group)
        try:
            self._delete_job(job_id, self._selector(job_id, group) if group else None)
        except Unreachable:
            raise
        except Exception as e:  # refused: the caller waits, and tries again at the next pass
            log.info("could not delete the leftovers of job %s: %s", job_id, describe(e))

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        api = self._api()
        items = self._call("listing pods", api.list_namespaced_pod, self.config.namespace,
                           label_selector=selector).items
        return [api.api_client.sanitize_for_serialization(p) for p in items]

    def _pod(self, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """The pod, from the watch's cache while it is synced (a pod the cache lacks is read
        from the API server: one just created may not have reached the watch yet); read from
        the API server when not synced (watch not started yet, or down) or `fresh`."""
        return self._read(name, fresh=fresh)[1]

    def _read(self, name: str, *, fresh: bool = False) -> tuple[int, dict[str, Any] | None]:
        """(`_version` before the pod was read, the pod): a change after the read has a
        higher version, so a watch registered with it misses none."""
        with self._lock:
            version = self._version
            pod = self._cache.get(name) if self._synced and not fresh else None
        if pod is not None:
            return version, pod
        return version, self._get_pod(name)

    def _get_pod(self, name: str) -> dict[str, Any] | None:
        api = self._api()
        try:
            pod = self._call(f"reading pod {name}", api.read_namespaced_pod, name,
                             self.config.namespace)
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) == 404:
                return None
            raise
        return api.api_client.sanitize_for_serialization(pod)

    def _selector(self, job_id: int, group: str) -> str:
        """Everything of one job of this state directory."""
        return render.job_selector(job_id, group, self.config.home_uid)

    # --- what a job is -----------------------------------------------------------------------
    def _job(self, job_id: int) -> JobContext:
        """The job as admit/prepare handed it, else as the controller describes it (a restarted
        controller watches running pods before anything else is called); KeyError when
        unknown."""
        ctx = self._jobs.get(job_id)
        if ctx is None:
            ctx = self.jobs.context(job_id)
            if ctx is None:
                raise KeyError(f"no job {job_id} in {self.home}")
            self._jobs[job_id] = ctx
        return ctx

    # --- admission and preparation ---------------------------------------------------------
    def admit(self, ctx: JobContext) -> Admission:
        try:
            return self._admit(ctx)
        except (Unreachable, Refused):
            raise
        except Exception as e:
            if self._status_code(e) is None:
                raise  # not the API server's answer: a bug
            raise Refused(api_message(e)) from None

    def _admit(self, ctx: JobContext) -> Admission:
        job_id, group, options = ctx.job_id, ctx.group, ctx.options
        self._jobs[job_id] = ctx
        if self._workload(job_id) == "jobset":
            return self._admit_jobset(ctx)
        selector = self._selector(job_id, group.name)
        created = float(options.get("k8s_created_at") or self._created.get(job_id) or 0)
        if not created:
            retry = self._retry_time(job_id, options)
            if time.time() < retry:
                why = options.get("k8s_gang_reason") or "not every pod was scheduled"
                return Admission("waiting",
                                 status.released_reason(why, "its pods released", retry))
            if retry and self._pods(selector):  # never take our own leaving pods for new ones
                return Admission("waiting", "waiting for the released pods to be deleted "
                                 "before trying again")

            def make() -> str:
                objs = render.render_objects(
                    group, job_id, self.config, base_dir=ctx.base_dir,
                    env=options.get("env") or {}, gated=True, submitted_at=ctx.submitted_at,
                    workload="pods")
                for obj in objs:
                    self._create(obj)
                return f"created {len(objs)} objects in namespace {self.config.namespace}"

            return self._make_objects(job_id, make, {"k8s_namespace": self.config.namespace})
        pods = self._pods(selector)
        expected = sum(t.num_nodes for t in group.tasks)
        if status.all_scheduled(pods, expected):
            return Admission("ready", f"all {expected} pods scheduled")
        reason = status.unscheduled_reason(pods) or "waiting for the scheduler"
        if len(pods) < expected:
            reason = f"{expected - len(pods)} of {expected} pods are missing " \
                     "(deleted from outside jobgroup?)"
        if self.config.kueue_queue:
            return Admission("waiting", f"queued in Kueue queue {self.config.kueue_queue}: "
                             f"{reason}")
        if time.time() - created > self.config.schedule_timeout:
            # All or nothing, and queued rather than failed: the pods are deleted (what they
            # held goes back to other groups; two partly scheduled groups cannot starve each
            # other) and made again after as long again; the other objects stay.
            self._call(f"releasing the pods of job {job_id}",
                       self._api().delete_collection_namespaced_pod, self.config.namespace,
                       label_selector=selector)
            self._created.pop(job_id, None)
            return self._release(job_id, reason, "its pods released", {"k8s_created_at": 0})
        return Admission("waiting", reason)

    # --- what both workloads share at admission ------------------------------------------------
    def _make_objects(self, job_id: int, make: Callable[[], str],
                      facts: dict[str, object]) -> Admission:
        """Create a job's objects (at its first admission, or a retry): `make` creates them and
        says what it made. `waiting` with that, the creation time and `facts` recorded;
        `waiting` while a name is still held (`_Busy`: never adopted, asked again at the next
        pass); `failed`, everything deleted, when rendering or the API server refuses."""
        try:
            made = make()
        except _Busy as e:
            return Admission("waiting", str(e))
        except (render.RenderError, RuntimeError) as e:
            self.cleanup(job_id)
            return Admission("failed", str(e))
        created = self._created[job_id] = time.time()
        return Admission("waiting", made, {**facts, "k8s_created_at": created})

    def _retry_time(self, job_id: int, options: dict[str, Any]) -> float:
        """When a group the gang rule released tries again (0: it was not released)."""
        return max(float(options.get("k8s_retry_at") or 0), self._retry_at.get(job_id, 0.0))

    def _release(self, job_id: int, reason: str, what: str,
                 facts: dict[str, object]) -> Admission:
        """The gang rule without Kueue, once the caller gave back what a group not wholly
        scheduled within `schedule_timeout` held (`what`: how): PENDING with the scheduler's
        `reason`, tried again as long later (recorded: a restarted controller keeps it)."""
        why = f"not every pod was scheduled within {self.config.schedule_timeout:g}s: {reason}"
        retry = self._retry_at[job_id] = time.time() + self.config.schedule_timeout
        return Admission("waiting", status.released_reason(why, what, retry),
                         {**facts, "k8s_gang_reason": why, "k8s_retry_at": retry})

    def prepare(self, ctx: JobContext) -> dict[tuple[int, int], str]:
        self._jobs[ctx.job_id] = ctx
        return render.addresses(ctx.group, self.config, self._workload(ctx.job_id))

    # --- phases -------------------------------------------------------------------------------
    def _pod_name(self, ref: NodeRef) -> str:
        """The pod of node `ref` in its attempt (the node's stable name; `-aN` from the 2nd)."""
        group = self._job(ref.job_id).group
        return render.pod_name(group.name, group.tasks[ref.task_idx].name or "", ref.rank,
                               ref.attempt)

    def _pod_of(self, ref: NodeRef, handle: Handle | None) -> str:
        """The pod a handle names (handles of a jobgroup before pods were named in them: the
        pod computed from `ref`)."""
        pod = handle.get("pod") if handle else None
        return pod if isinstance(pod, str) else self._pod_name(ref)

    def describe(self, handle: Handle) -> str:
        return f"pod {handle.get('pod')}" if handle.get("pod") else "its pod (not made yet)"

    def start(self, launch: PhaseLaunch) -> Handle:
        with self._lock:
            self._looked = self._version
        ref = launch.ref
        if self._workload(ref.job_id) == "jobset":
            return self._start_jobset(launch)
        ctx = self._job(ref.job_id)
        group, opts = ctx.group, ctx.options
        job_id, task_idx, rank, phase, attempt = (ref.job_id, ref.task_idx, ref.rank, ref.phase,
                                                  ref.attempt)
        name = self._pod_name(ref)
        self._graces[name] = launch.grace
        if attempt > 1 and not launch.log_path.exists() and \
                self._pod(name, fresh=True) is None:
            # a restarted node (its first phase: setup, or run when the task has none): a
            # fresh pod with the same hostname, once the previous attempt's pod is gone (one
            # still terminating would answer to that name too)
            self._remove_previous(render.pod_name(group.name, group.tasks[task_idx].name or "",
                                                  rank, attempt - 1))
            files = render._Files(group, ctx.base_dir)
            self._create(render.pod_object(group, job_id, task_idx, rank, self.config,
                                           files, attempt=attempt, env=opts.get("env") or {},
                                           gated=True, submitted_at=ctx.submitted_at))
        self._follow_logs(name, launch.log_path)
        # the controller has seen nothing of the pod yet: a change the watch saw before this
        # start (the pod ran since `admit`) wakes it too, at once (one `outcome`, from the cache)
        self._look(ref, name, 0)
        if phase != "setup" and not self._open_gate(name):
            self._retry.add(ref)  # `watch` has `outcome` asked soon, pod change or not
        return {"pod": name}

    def _remove_previous(self, pod: str) -> None:
        """Delete the previous attempt's pod at once (grace 0: it has ended, or is being
        stopped) after its log follower had a moment to copy its last lines; Unreachable
        (the controller starts the node again in a moment) while it is still there."""
        if self._pod(pod) is None:
            return
        follower = self._followers.pop(pod, None)
        if follower is not None:
            try:
                follower.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        try:
            self._call(f"deleting pod {pod}", self._api().delete_namespaced_pod, pod,
                       self.config.namespace, grace_period_seconds=0)
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) != 404:
                raise RuntimeError(f"Kubernetes refused deleting pod {pod}: "
                                   f"{api_message(e)}") from None
        if self._pod(pod, fresh=True) is not None:
            raise Unreachable(f"waiting for pod {pod} of the previous attempt to be deleted")

    def _kubectl(self) -> list[str]:
        """kubectl on this backend's cluster: its launches' kubeconfig (pinned: the callers run
        it with the controller's, or a node's, environment), context and namespace."""
        argv = ["env", f"KUBECONFIG={kubeconfig_path(self.config.kubeconfig)}", "kubectl",
                "--namespace", self.config.namespace]
        if self.config.context:
            argv += ["--context", self.config.context]
        return argv

    def _follow_logs(self, pod: str, log_path: Path, *, append: bool = False) -> None:
        """`kubectl logs -f` straight into the node's log file (kept after the pod ends), in its
        own session so it outlives a controller restart; started once per pod (the log file
        is created here, so a restarted controller does not start a second one).

        The loop around it: while the container is not running yet (image pull) kubectl
        refuses, so it asks again; a stream that broke (API server restart, network) is resumed
        from the second it broke (`--since-time`: lines of that second may repeat); once the container has terminated (the last lines fetched) or
        the pod is gone, it ends. While the API server does not answer it keeps trying, for up
        to an hour."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:  # one follower per pod: the first `start` of the node (setup, or run without one)
            if not append:  # (`append`: the caller keeps count, `_follow_pod`)
                os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return
        if shutil.which("kubectl") is None:
            with open(log_path, "a") as f:
                f.write("jobgroup: kubectl is not installed here, so this node's output is only "
                        f"in the cluster: kubectl logs {pod}\n")
            return
        kubectl = " ".join(_quote(a) for a in self._kubectl())
        c = render.CONTAINER
        script = (
            f'log={_quote(str(log_path))}; pod={_quote(pod)}; since=; tries=0\n'
            'while [ "$tries" -lt 1800 ]; do\n'
            '  before=$(wc -c <"$log")\n'
            f'  {kubectl} logs -f "$pod" -c {c} $since >>"$log" 2>/dev/null; rc=$?\n'
            '  [ "$(wc -c <"$log")" != "$before" ] && '
            'since="--since-time=$(date -u +%Y-%m-%dT%H:%M:%SZ)"\n'
            f'  state=$({kubectl} get pod "$pod" --ignore-not-found -o '
            '"jsonpath={.metadata.name} {.status.containerStatuses[0].state}" 2>/dev/null) '
            '|| { tries=$((tries + 1)); sleep 2; continue; }\n'
            '  tries=0\n'
            '  case "$state" in\n'
            '    "") exit 0 ;;\n'
            f'    *terminated*) [ "$rc" -ne 0 ] && {kubectl} logs "$pod" -c {c} $since '
            '>>"$log" 2>/dev/null; exit 0 ;;\n'
            '  esac\n'
            '  sleep 1\n'
            'done\n')
        self._followers[pod] = _Follower(subprocess.Popen(
            ["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True), log_path)

    def _drain_logs(self, selector: str) -> None:
        """`_keep_logs` for the pods of `selector`, which are about to be deleted; their
        followers are forgotten (each ends with its stream)."""
        try:
            pods = self._pods(selector)
        except Unreachable:
            return
        self._keep_logs(pods)
        for pod in pods:
            self._followers.pop(pod["metadata"]["name"], None)

    def _keep_logs(self, pods: list[dict[str, Any]]) -> None:
        """Before `pods` are deleted, wait (up to LOG_WAIT seconds in all) until the log
        followers this process started for them hold what the pods printed: a pod's log goes
        with it, and a follower can only fetch it while the pod exists.
        - A pod that has ended: until its follower has fetched the last lines and ended.
        - A pod whose container has printed while its follower has nothing yet (it asked before
          the container started, was turned away, and asks again a second later): until the
          follower's stream has begun. From then on it gets everything, up to the container's
          end (the lines printed while the pod is being stopped too).
        Not waited for: a follower that already streams (its file has the pod's first lines),
        and one whose container has printed nothing yet (nothing is lost by deleting it now,
        though what such a node prints while it stops is kept only if its follower gets to
        stream before the container ends). Once a follower got no stream within the budget
        (kubectl cannot reach the cluster, presumably: said in controller.log), later
        deletions do not wait for streams to begin, until a follower is seen streaming again:
        a broken kubectl must not hold every stop for the whole budget."""
        budget = LOG_WAIT
        deadline = time.monotonic() + budget
        for pod in pods:
            name = pod["metadata"]["name"]
            follower = self._followers.get(name)
            if follower is None or follower.proc.poll() is not None:
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                try:
                    follower.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                continue
            if _size(follower.log):
                self._followers_stuck = False
                continue
            if self._followers_stuck or not self._printed(name):
                continue
            while not _size(follower.log) and follower.proc.poll() is None and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            if not _size(follower.log) and follower.proc.poll() is None:
                self._followers_stuck = True
                log.warning("the log follower of pod %s (kubectl logs -f) got no stream within "
                            "%gs; its output may be missing from %s", name, budget,
                            follower.log)

    def _printed(self, pod: str) -> bool:
        """Whether the pod's container has printed anything yet (the first byte of its log,
        from the API server). False when that cannot be read: the container has not started
        (the server refuses while it is waiting), the pod is gone, the log may not be read,
        or the server does not answer (the deletion that follows says so)."""
        try:
            resp = self._call(f"reading the log of pod {pod}",
                              self._api().read_namespaced_pod_log, pod, self.config.namespace,
                              container=render.CONTAINER, limit_bytes=1,
                              _preload_content=False)  # bytes: one byte may be half a char
        except Unreachable:
            return False
        except Exception as e:
            if self._status_code(e) is None:  # not an answer from the server: a bug, say it
                raise
            return False
        try:
            return bool(resp.read())
        finally:
            resp.release_conn()

    def _open_gate(self, pod: str) -> bool:
        """`touch` the run gate inside the pod (idempotent; its folder too: the driver may not
        have made it yet) through the exec API; True once the command has exited 0. False
        otherwise, and it is tried again: while the container is not running yet (image pull)
        `outcome` tries at the pod's next change; once it runs, `outcome` keeps trying every
        few seconds (it raises Unreachable while the gate stays shut), also after a controller
        restart. An API server that refuses exec into the pod (403: RBAC without `pods/exec`)
        is remembered in `_refused`: `outcome` ends the node with the server's message."""
        if pod in self._gated:
            return True
        if pod in self._refused:
            return False
        from kubernetes.stream import stream

        api = self._api()
        resp = None
        try:
            resp = stream(api.connect_get_namespaced_pod_exec, pod, self.config.namespace,
                          container=render.CONTAINER, command=[
                              "/bin/sh", "-c", f"mkdir -p {os.path.dirname(render.PODINFO_GATE)}"
                              f" && touch {render.PODINFO_GATE}"],
                          stderr=True, stdin=False, stdout=True, tty=False,
                          _preload_content=False, _request_timeout=TIMEOUT)
            resp.run_forever(timeout=TIMEOUT)
            code, why = _exec_result(resp)
        except Exception as e:  # no answer, not running (yet, or any more), or refused
            code, why = _exec_refusal(e)
            if code in (401, 403):
                self._refused[pod] = why
                log.warning("Kubernetes refuses exec into pod %s, so its run cannot start: %s",
                            pod, why)
                return False
            code = None
        finally:
            if resp is not None:
                try:
                    resp.close()
                except Exception:
                    pass
        if code == 0:
            log.info("run gate of pod %s opened", pod)
            self._gated.add(pod)
            self._gate_failed.discard(pod)
            return True
        level = logging.INFO if pod in self._gate_failed else logging.WARNING
        self._gate_failed.add(pod)
        log.log(level, "run gate of pod %s not opened (tried again): %s", pod, why)
        return False

    def exec_argv(self, ref: NodeRef, argv: list[str]) -> list[str] | None:
        group = self._job(ref.job_id).group
        task_idx, rank = ref.task_idx, ref.rank
        if self._workload(ref.job_id) == "jobset":
            try:
                current = self._node_pod(ref)
            except Unreachable:
                current = None
            pod = current["metadata"]["name"] if current else \
                f"{jobset.job_name(group.name, group.tasks[task_idx].name or '')}-{rank}"
            return self._kubectl() + ["exec", pod, "-c", render.CONTAINER, "--", *argv]
        selector = (f"{self._selector(ref.job_id, group.name)},"
                    f"{render.LABEL}/task-index={task_idx},{render.LABEL}/rank={rank}")
        try:
            pods = self._pods(selector)
        except Unreachable:
            pods = []
        latest = max(pods, key=lambda p: int(p["metadata"]["labels"].get(
            f"{render.LABEL}/attempt", 1)), default=None)
        pod = latest["metadata"]["name"] if latest else \
            render.pod_name(group.name, group.tasks[task_idx].name or "", rank)
        return self._kubectl() + ["exec", pod, "-c", render.CONTAINER, "--", *argv]

    def attach_argv(self, ref: NodeRef, argv: list[str], *, tty: bool,
                    workdir: str | None = None) -> list[str] | None:
        """`kubectl exec` into the node's container with stdin (`-i`) and a TTY (`-t`) when
        the caller has one; it starts in the container's working directory."""
        base = self.exec_argv(ref, argv)
        if base is None:
            return None
        at = base.index("exec") + 1
        return base[:at] + (["-i", "-t"] if tty else ["-i"]) + base[at:]

    def forward_argv(self, ref: NodeRef, local_port: int, remote_port: int) -> list[str] | None:
        """`kubectl port-forward` of the node's pod (the API server's portforward)."""
        pod = self._pod_name(ref)
        if self._workload(ref.job_id) == "jobset":
            current = self._node_pod(ref)
            pod = current["metadata"]["name"] if current else pod
        return self._kubectl() + ["port-forward", "--address", "127.0.0.1",
                                        f"pod/{pod}",
                                        f"{local_port}:{remote_port}"]

    def usage(self, ref: NodeRef, handle: Handle | None) -> Usage | None:
        """The pod's figures from the metrics API (metrics-server), when the cluster has one."""
        pod = self._pod_of(ref, handle)
        if self._workload(ref.job_id) == "jobset":
            current = self._node_pod(ref)
            pod = current["metadata"]["name"] if current else pod
        self._api()
        try:
            m = self._call("reading the pod's metrics", self._custom.get_namespaced_custom_object,
                           "metrics.k8s.io", "v1beta1", self.config.namespace, "pods", pod)
        except Unreachable:
            raise
        except Exception as e:  # 404: no metrics API (or no figures yet)
            return Usage(source="metrics API", note=f"no metrics for pod {pod} "
                         f"({api_message(e)}): is metrics-server installed in the cluster?")
        cpu = mem = 0.0
        for c in m.get("containers") or []:
            cpu += _cpu_cores(str((c.get("usage") or {}).get("cpu", "0")))
            mem += _bytes(str((c.get("usage") or {}).get("memory", "0")))
        return Usage(memory_bytes=int(mem), source="metrics API",
                     note=f"CPU now {cpu:.2f} core(s) (the metrics API gives a rate, not a "
                          "total)")

    def outcome(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        if self._workload(ref.job_id) == "jobset":
            with self._lock:
                self._looked = self._version
            return self._outcome_jobset(ref, handle)
        name, phase = self._pod_of(ref, handle), ref.phase
        with self._lock:
            self._looked = seen = self._version
        try:
            seen, pod = self._read(name)
        except Unreachable:  # unknown yet: the watch wakes the controller once it answers
            if handle is not None:  # again (a list, or any pod's change: see `watch`)
                self._look(ref, _ANY, seen)
            return None
        if handle is not None:
            self._look(ref, name, seen)
        out = status.phase_outcome(pod, phase, stop_requested=name in self._stopping)
        if out is None and phase == "run" and name not in self._gated and \
                status.container_running(pod) and name not in self._stopping:
            if not self._open_gate(name):
                if name in self._refused:  # it can never start: the node fails, saying why
                    out = Outcome(exit_code=126, note="Kubernetes refused exec into pod "
                                  f"{name}, which starts its run: {self._refused[name]}")
                else:  # the controller asks again every few seconds (a shut gate changes no pod)
                    raise Unreachable(f"the run gate of pod {name} is not open yet")
        if out is not None and handle is not None:
            self._forget(ref, name)  # settled: not watched again
        return out

    def node_ready(self, ref: NodeRef) -> bool | None:
        """The kubelet's word on the node's readiness probe (rendered as the pod's native
        readinessProbe): True once the container is ready, False while not; raises Unreachable
        while the API server does not answer (not a failed probe: the controller waits)."""
        if self._workload(ref.job_id) == "jobset":
            return self._node_ready_jobset(ref)
        name = self._pod_name(NodeRef(ref.job_id, ref.task_idx, ref.rank, "run", ref.attempt))
        return status.container_ready(self._pod(name))  # Unreachable: the caller waits

    def recover(self, ref: NodeRef) -> Handle | Ended | None:
        """The node's pod: None when it does not exist (never created, or deleted), ENDED when
        the phase is over by the pod's status, else its handle; a pod that cannot be read
        (the API server does not answer) is assumed to exist: `outcome` settles it once the
        server answers. The previous controller may have died before it started the pod's
        log follower (its `start` never ran): one is started here unless the node's log file
        says it was (the run gate is opened by `outcome`, as for any adopted pod)."""
        if self._workload(ref.job_id) == "jobset":
            return self._recover_jobset(ref)
        name = self._pod_name(ref)
        group = self._job(ref.job_id).group
        log_path = layout.log_path(self.home, ref.job_id, group.tasks[ref.task_idx].name or "",
                                   ref.rank, ref.attempt)
        with self._lock:
            seen = self._version
        try:
            pod = self._pod(name)
            if pod is None:
                return None
            self._follow_logs(name, log_path)
            if status.phase_outcome(pod, ref.phase, stop_requested=name in self._stopping) \
                    is not None:
                return ENDED
            seen = 0  # what it says is for `outcome`: any change the watch saw counts
        except Unreachable:
            self._follow_logs(name, log_path)  # (it waits for the API server itself)
            name = _ANY
        self._look(ref, name, seen)
        return {"pod": self._pod_name(ref)}

    def _look(self, ref: NodeRef, name: str, seen: int) -> None:
        """The controller read pod `name` for phase `ref` at `seen` (`_version` before the
        read): its next `watch(ref)` is woken by a change of that pod after it (see `watch`).
        `_ANY`: the pod could not be read (the API server did not answer): woken by the next
        change of any pod, or the next list."""
        with self._lock:
            looks = self._looks.setdefault(ref, {})
            looks[name] = min(seen, looks.get(name, seen))

    def _forget(self, ref: NodeRef, name: str) -> None:
        """`name` has ended for phase `ref`: the controller watches it no more."""
        with self._lock:
            looks = self._looks.get(ref)
            if looks is not None:
                looks.pop(name, None)
                if not looks:
                    del self._looks[ref]

    def watch(self, loop: asyncio.AbstractEventLoop, ref: NodeRef, handle: Handle,
              on_end: Callable[[], None]) -> None:
        """Calls `on_end` (in the loop) at the first change of the phase's pod that the watch
        sees after the controller last read that pod (`start`/`outcome`/`recover` for this
        phase), so a change in between is not missed; the controller then asks `outcome` and
        re-watches if the phase still runs (after `start`/`recover`, which say nothing of the
        pod's state, any change the watch ever saw of it counts: woken at once). A phase whose
        pod was not read here (a restarted controller adopting running pods) or could not be
        read (the API server did not answer) is woken by the next change of any jobgroup pod
        or the next list (spurious wake-ups only cost an `outcome` from the cache)."""
        called = False

        def once() -> None:  # woken by a pod change or by a gate retry, whichever is first
            nonlocal called
            if not called:
                called = True
                on_end()
        waiter = _Waiter(lambda: loop.call_soon_threadsafe(once))
        with self._lock:
            looks = self._looks.pop(ref, None)
            if looks and _ANY not in looks:
                fire = any(self._changed.get(n, 0) > v for n, v in looks.items())
                if not fire:
                    for n in looks:
                        self._waiting.setdefault(n, []).append(waiter)
            else:
                since = looks[_ANY] if looks else self._looked
                fire = since < self._version
                if not fire:
                    self._anywhere.append(waiter)
            if ref in self._retry:  # its run gate failed at `start`: look again soon
                self._retry.discard(ref)
                loop.call_later(GATE_RETRY, once)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch_loop, daemon=True,
                                                name="jobgroup-k8s-watch")
                self._thread.start()
        if fire:
            waiter.wake()

    def _changes(self, pods: dict[str, dict[str, Any] | None], *,
                 replace: bool = False) -> None:
        """Record what the watch saw (pod name -> the pod, None: deleted) in the cache and wake
        the callbacks of the pods that changed, and those of no known pod. `replace`: `pods`
        is a fresh list, the whole cache (pods missing from it are gone); only the pods whose
        resourceVersion differs from the cache's count as changed."""
        due: list[_Waiter] = []
        with self._lock:
            self._version += 1
            if replace:
                old, self._cache = self._cache, {n: p for n, p in pods.items() if p is not None}
                changed = [n for n in set(old) | set(self._cache)
                           if _rv(old.get(n)) != _rv(self._cache.get(n))]
                self._synced = True
            else:
                changed = list(pods)
                for name, pod in pods.items():
                    if pod is None:
                        self._cache.pop(name, None)
                    else:
                        self._cache[name] = pod
            for name in changed:
                self._changed[name] = self._version
                due += self._waiting.pop(name, [])
            due += self._anywhere
            self._anywhere = []
        for waiter in due:
            waiter.wake()

    def _list_pods(self, selector: str) -> tuple[dict[str, dict[str, Any]], str]:
        """Every pod the watch covers, and the list's resourceVersion (to watch from)."""
        api = self._api()
        resp = self._call("listing pods", api.list_namespaced_pod, self.config.namespace,
                          label_selector=selector)
        pods = [api.api_client.sanitize_for_serialization(p) for p in resp.items]
        return {p["metadata"]["name"]: p for p in pods}, resp.metadata.resource_version

    def _stream(self, selector: str, resource_version: str) -> Any:
        """The pod watch from `resource_version`: events as dicts (type, object: the pod as
        JSON); it ends when the server closes it (timeoutSeconds)."""
        from kubernetes import watch

        return watch.Watch().stream(self._api().list_namespaced_pod, self.config.namespace,
                                    label_selector=selector, resource_version=resource_version,
                                    timeout_seconds=300, _request_timeout=330,
                                    deserialize=False)

    def _watch_loop(self) -> None:
        """The pod cache, as informers keep one: list (the cache is replaced by the list, and
        the pods that changed since the cache was last current wake their callbacks), then
        watch from the list's resourceVersion (each event updates the cache and wakes the
        callbacks of its pod); when the watch ends, list again. While the API server does not
        answer, the cache is not synced (`_pod` reads from the server) until a list succeeds."""
        selector = (f"app.kubernetes.io/managed-by=jobgroup,"
                    f"{render.LABEL}/home={self.config.home_uid}")
        while True:
            try:
                pods, version = self._list_pods(selector)
                self._changes(pods, replace=True)
                for event in self._stream(selector, version):
                    kind, pod = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone (too old a resourceVersion): list again
                        raise RuntimeError(f"pod watch: {pod.get('message')}")
                    name = (pod.get("metadata") or {}).get("name")
                    if kind not in ("ADDED", "MODIFIED", "DELETED") or not name:
                        continue  # BOOKMARK
                    self._changes({name: None if kind == "DELETED" else pod})
            except Exception as e:  # the API server went away: list again once it answers
                with self._lock:
                    self._synced = False
                log.debug("pod watch broke (%s); listing again", describe(e))
                time.sleep(1)

    def stop(self, ref: NodeRef, handle: Handle, *, kill: bool = False) -> None:
        """Delete the pod with the launch's grace period (`--grace`; whole seconds, rounded
        up), or at once with kill=True, quiet when it is gone; once its log follower has what it
        printed so far (`_keep_logs`: a pod's log goes with it)."""
        if self._workload(ref.job_id) == "jobset":
            return self._stop_jobset(ref, kill)
        name = self._pod_of(ref, handle)
        self._stopping.add(name)
        grace = 0 if kill else self._grace(name, ref.job_id)
        follower = self._followers.get(name)
        if follower is not None and follower.proc.poll() is None:
            pod = self._pod(name)
            if pod is not None:
                self._keep_logs([pod])
        try:
            self._call(f"deleting pod {name}", self._api().delete_namespaced_pod, name,
                       self.config.namespace, grace_period_seconds=grace)
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) != 404:
                raise

    def _grace(self, pod: str, job_id: int) -> int | None:
        """The grace period `pod` was started with, else the job's (a restarted controller
        stops pods it did not start); None: the pod's own."""
        grace = self._graces.get(pod)
        if grace is None:
            try:
                grace = self._job(job_id).options.get("grace")
            except KeyError:
                return None
        return None if grace is None else max(0, math.ceil(float(grace)))

    def cleanup(self, job_id: int) -> list[NodeNote]:
        """Delete every object labelled with the job (not the PVCs); harmless twice."""
        try:
            group: JobGroup | None = self._job(job_id).group
        except KeyError:
            group = None
        selector = self._selector(job_id, group.name) if group else None
        jobset_mode = group is not None and self._workload(job_id) == "jobset"
        if jobset_mode:
            self._drain_logs(selector or "")
            self._delete_jobset(job_id)
        self._delete_job(job_id, selector)
        if jobset_mode and selector:
            self._delete_jobs(selector)  # what deleting the JobSet did not take
        return []

    def _delete_job(self, job_id: int, selector: str | None) -> None:
        api, ns = self._api(), self.config.namespace
        selector = selector or \
            f"{render.LABEL}/job-id={job_id},{render.LABEL}/home={self.config.home_uid}"
        what = f"deleting the objects of job {job_id}"
        self._drain_logs(selector)
        self._call(what, api.delete_collection_namespaced_pod, ns, label_selector=selector)
        self._call(what, api.delete_collection_namespaced_config_map, ns,
                   label_selector=selector)
        self._call(what, api.delete_collection_namespaced_secret, ns, label_selector=selector)
        for svc in self._call(what, api.list_namespaced_service, ns,
                              label_selector=selector).items:
            try:
                self._call(what, api.delete_namespaced_service, svc.metadata.name, ns)
            except Unreachable:
                raise
            except Exception as e:
                if self._status_code(e) != 404:
                    raise
        if self.config.pod_group and self._custom is not None:
            try:
                self._call(what, self._custom.delete_collection_namespaced_custom_object,
                           "scheduling.x-k8s.io", "v1alpha1", ns, "podgroups",
                           label_selector=selector)
            except Unreachable:
                raise
            except Exception as e:
                if self._status_code(e) != 404:
                    raise
        self._created.pop(job_id, None)


_ANY = ""  # `_look` of a pod that could not be read (no pod is named "")


class _Waiter:
    """One `watch` callback; it may be filed under several pods, and wakes once."""

    __slots__ = ("wake_up", "woken")

    def __init__(self, wake_up: Callable[[], None]) -> None:
        self.wake_up, self.woken = wake_up, False

    def wake(self) -> None:
        if self.woken:
            return
        self.woken = True
        try:
            self.wake_up()
        except RuntimeError:  # the loop is closed (controller stopping)
            pass


def _rv(pod: dict[str, Any] | None) -> str | None:
    return None if pod is None else (pod.get("metadata") or {}).get("resourceVersion")


def _exec_result(resp: Any) -> tuple[int | None, str]:
    """(exit code, what it said) of a finished exec (`WSClient`); None while it still runs
    (timed out) or when the server sent no status."""
    try:
        code = resp.returncode
    except Exception:  # closed without a status on the error channel
        code = None
    try:
        err = (resp.read_stderr() or "").strip()
    except Exception:
        err = ""
    if code is None:
        return None, err or "the exec did not finish"
    return code, (err.splitlines() or [f"exit code {code}"])[-1][:200] if code else ""


def _exec_refusal(e: BaseException) -> tuple[int | None, str]:
    """(HTTP status, the server's message) of an exec the API server refused at the WebSocket
    upgrade (the client raises ApiException(status=0) with the handshake's status line and
    body in `reason`); (None, a description) for anything else."""
    reason = getattr(e, "reason", None)
    text = reason if isinstance(reason, str) else str(e)
    m = re.search(r"Handshake status (\d+)", text)
    if not m:
        return None, describe(e)
    body = text.rsplit(" -+-+- ", 1)[-1].strip()
    try:
        message = str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        message = f"HTTP {m.group(1)}"
    return int(m.group(1)), message


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def backend_from_env(home: Path) -> KubernetesBackend:
    """The backend as the controller would create it ($JOBGROUP_HOME/kubernetes.yaml)."""
    return KubernetesBackend(home, load_config(home))


def _cpu_cores(q: str) -> float:
    """A Kubernetes CPU quantity ("250m", "1", "1500000n") in cores."""
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3}.get(q[-1:], 1.0)
    try:
        return float(q[:-1] if scale != 1.0 else q) * scale
    except ValueError:
        return 0.0


def _bytes(q: str) -> float:
    """A Kubernetes memory quantity ("128974848", "129e6", "123Mi", "1G") in bytes."""
    for suffix, scale in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40),
                          ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if q.endswith(suffix):
            try:
                return float(q[:-len(suffix)]) * scale
            except ValueError:
                return 0.0
    try:
        return float(q)
    except ValueError:
        return 0.0

