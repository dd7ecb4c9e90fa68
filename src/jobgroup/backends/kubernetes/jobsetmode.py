"""The kubernetes backend with a JobSet per group (workload `jobset`, see `jobset.py` for the
objects): the cluster runs the group to its end, and the backend watches it, adds what JobSet
has not (logs kept here, the gang time-out without Kueue, Kueue's word while queued) and
re-attaches by labels. Mixed into `KubernetesBackend` (backend.py), whose client, pod watch and
log followers it uses.

How the process-shaped interface maps onto a JobSet:
- `admit` creates the PVCs (not owned), then the JobSet suspended, then the Secret and
  ConfigMaps owned by it (ownerReferences with its uid), then resumes it (with Kueue, Kueue
  does). Its facts: `k8s_workload: jobset`, and `cluster_recovery: true`: the cluster restarts
  nodes (the Job's podFailurePolicy and backoffLimit) and the group (the JobSet's failurePolicy),
  so the controller does not (`controller/daemon.py`). Then `waiting` while Kueue has not
  admitted the JobSet (Kueue's reason, from its Workload) or while its pods are not all
  scheduled; without Kueue, a group not wholly scheduled within `schedule_timeout` is suspended
  (its pods deleted: all or nothing) and resumed `schedule_timeout` later, again and again,
  PENDING with the scheduler's reason meanwhile (queued and retried, not failed).
- A node is the pod of its Job (`{group}-{task}-0`) with its completion index (annotation
  `batch.kubernetes.io/job-completion-index`), of the JobSet's current restart attempt (label
  `jobset.sigs.k8s.io/restart-attempt`), the newest if the Job replaced one. Handles name the
  pod seen at `start` (for events); every call looks up the node's current pod by labels.
- `start` only starts the node's log follower (once per pod: a node whose pod the Job replaced
  gets a follower for each, appending to the node's log); pods run setup then run by
  themselves.
- `outcome`: the current pod's (`status.phase_outcome`), but a failure the cluster is about to
  handle (the JobSet has not finished: the Job retries the pod, or the JobSet restarts or fails
  the group) is not reported (asked again every GATE_RETRY seconds): the controller sees a
  node fail only when that is final. Once the JobSet has finished, a node whose pod the JobSet
  deleted (the auxiliaries when the primary tasks succeeded; every other node when a task
  failed) reads as stopped, not failed. A JobSet deleted from outside jobgroup (or by its TTL
  before a controller came back) leaves nodes without a record: `lost`.
- `stop`: while the JobSet runs, a stop means the group ends (a cancel, or a failure only the
  controller saw, e.g. readiness): every pod of the job is annotated `jobgroup.dev/stop: now`
  (an auxiliary's driver then skips its termination_delay), the JobSet is deleted and the pods
  with the launch's grace (0 with kill). After it finished, only the node's pod is deleted.
- `cleanup` deletes the JobSet (what it owns goes with it) and everything labelled with the
  job.
"""

from __future__ import annotations

import time
from typing import Any

from jobgroup.backends.base import ENDED, Admission, Ended, Handle, JobContext, NodeRef, \
    Outcome, PhaseLaunch, Unreachable
from jobgroup.backends.kubernetes import jobset, render, status
from jobgroup.backends.kubernetes.client import api_message
from jobgroup.state import layout

Obj = dict[str, Any]

_JS_TTL = 1.0  # seconds a JobSet read is reused
KUEUE = ("kueue.x-k8s.io", ("v1beta2", "v1beta1"), "workloads")


def _finished(js: Obj | None) -> str | None:
    """"Completed" or "Failed" once the JobSet has finished, else None."""
    if js is None:
        return None
    for c in (js.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Completed", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return (js.get("status") or {}).get("terminalState") or None


def _condition(js: Obj, ctype: str) -> Obj | None:
    return next((c for c in (js.get("status") or {}).get("conditions") or []
                 if c.get("type") == ctype and c.get("status") == "True"), None)


def _index(pod: Obj) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(jobset.INDEX_ANNOTATION) or \
        (meta.get("labels") or {}).get(jobset.INDEX_ANNOTATION)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _attempt(pod: Obj) -> int:
    try:
        return int(((pod.get("metadata") or {}).get("labels") or {})
                   .get(jobset.RESTART_LABEL, 0))
    except ValueError:
        return 0


class JobSetMode:
    """The JobSet workload's half of KubernetesBackend (see the module docstring)."""

    # (set by KubernetesBackend.__init__; declared here for readers)
    _js_cache: dict[int, tuple[float, Obj | None]]
    _stopped_nodes: set[tuple[int, int, int]]
    _resumed: dict[int, float]
    _workloads: dict[int, str]
    _served: set[str] | None

    # --- which workload -------------------------------------------------------------------
    def _workload(self, job_id: int) -> str:
        """The job's workload: recorded at admission (`k8s_workload`), else kubernetes.yaml's,
        else what the cluster serves (discovery)."""
        known = self._workloads.get(job_id)
        if known:
            return known
        try:
            recorded = self._job(job_id).options.get("k8s_workload")
        except KeyError:
            recorded = None
        workload = str(recorded or self.config.workload or self._discover())
        self._workloads[job_id] = workload
        return workload

    def _discover(self) -> str:
        """"jobset" when the API server serves jobset.x-k8s.io/v1alpha2, else "pods"."""
        if self._served is None:
            from kubernetes import client

            self._api()
            groups = self._call("listing the API groups",
                                client.ApisApi(self._core.api_client).get_api_versions).groups
            self._served = {v.group_version for g in groups or [] for v in g.versions or []}
        return "jobset" if f"{jobset.GROUP}/{jobset.VERSION}" in self._served else "pods"

    # --- reading the JobSet -------------------------------------------------------------------
    def _js_args(self) -> tuple[str, str, str, str]:
        return (jobset.GROUP, jobset.VERSION, self.config.namespace, jobset.PLURAL)

    def _jobset(self, job_id: int, *, fresh: bool = False) -> Obj | None:
        """The job's JobSet (None: there is none, or it is another job's), read at most every
        _JS_TTL seconds; Unreachable while the API server does not answer."""
        cached = self._js_cache.get(job_id)
        if cached and not fresh and time.monotonic() - cached[0] < _JS_TTL:
            return cached[1]
        group = self._job(job_id).group
        self._api()
        try:
            js = self._call(f"reading JobSet {jobset.jobset_name(group.name)}",
                            self._custom.get_namespaced_custom_object, *self._js_args(),
                            jobset.jobset_name(group.name))
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) != 404:
                raise
            js = None
        labels = ((js or {}).get("metadata") or {}).get("labels") or {}
        if js is not None and (labels.get(f"{render.LABEL}/job-id") != str(job_id) or
                               labels.get(f"{render.LABEL}/home") != self.config.home_uid):
            js = None  # a name another job holds
        self._js_cache[job_id] = (time.monotonic(), js)
        return js

    def _job_pods(self, job_id: int) -> list[Obj]:
        """Every pod of the job: from the watch's cache while it is current, else listed."""
        group = self._job(job_id).group
        with self._lock:
            synced = self._synced
            cached = list(self._cache.values()) if synced else []
        if synced:
            want = {f"{render.LABEL}/job-id": str(job_id),
                    f"{render.LABEL}/group": render.dns_name(group.name)}
            return [p for p in cached
                    if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v
                           for k, v in want.items())]
        return self._pods(self._selector(job_id, group.name))

    def _node_pod(self, ref: NodeRef, pods: list[Obj] | None = None) -> Obj | None:
        """The node's current pod (latest restart attempt, newest of its index), or None."""
        pods = self._job_pods(ref.job_id) if pods is None else pods
        mine = [p for p in pods
                if ((p.get("metadata") or {}).get("labels") or {}).get(
                    f"{render.LABEL}/task-index") == str(ref.task_idx)
                and _index(p) == ref.rank]
        if not mine:
            return None
        return max(mine, key=lambda p: (_attempt(p),
                                        (p.get("metadata") or {}).get("creationTimestamp") or "",
                                        (p.get("metadata") or {}).get("name") or ""))

    # --- admission ----------------------------------------------------------------------------
    def _admit_jobset(self, ctx: JobContext) -> Admission:
        job_id, group, options = ctx.job_id, ctx.group, ctx.options
        facts: dict[str, object] = {"k8s_workload": "jobset", "cluster_recovery": True,
                                    "k8s_namespace": self.config.namespace}
        created = float(options.get("k8s_created_at") or self._created.get(job_id) or 0)
        if not created:
            def make() -> str:
                objs = render.render_objects(
                    group, job_id, self.config, base_dir=ctx.base_dir,
                    env=options.get("env") or {}, submitted_at=ctx.submitted_at,
                    workload="jobset", grace=float(options.get("grace", 10.0)), suspend=True)
                self._create_jobset(job_id, objs)
                return f"created JobSet {jobset.jobset_name(group.name)} in namespace " \
                       f"{self.config.namespace}"

            return self._make_objects(job_id, make, facts)
        js = self._jobset(job_id, fresh=True)
        if js is None:
            return Admission("failed", f"JobSet {jobset.jobset_name(group.name)} is gone "
                             "(deleted from outside jobgroup?)")
        if _finished(js):  # it ran (and ended) while no controller asked: settle it
            return Admission("ready", f"the JobSet has {_finished(js).lower()}", facts)
        suspended = bool((js.get("spec") or {}).get("suspend"))
        if self.config.kueue_queue:
            if suspended:
                return Admission("waiting", f"queued in Kueue queue {self.config.kueue_queue}: "
                                 f"{self._kueue_reason(js)}", facts)
            return self._gang(ctx, js, facts, timeout=None)
        resumed = max(float(options.get("k8s_resumed_at") or 0),
                      self._resumed.get(job_id, 0.0)) or created
        if suspended:
            retry = self._retry_time(job_id, options)
            if time.time() < retry:
                why = options.get("k8s_gang_reason") or "not every pod was scheduled"
                return Admission("waiting", status.released_reason(why, "suspended", retry),
                                 facts)
            self._suspend(job_id, False)
            self._resumed[job_id] = now = time.time()
            return Admission("waiting", "resumed the JobSet: every pod is to be scheduled "
                             "again", {**facts, "k8s_resumed_at": now})
        return self._gang(ctx, js, facts, timeout=resumed + self.config.schedule_timeout)

    def _gang(self, ctx: JobContext, js: Obj, facts: dict[str, object],
              timeout: float | None) -> Admission:
        """`ready` once every pod that the JobSet makes at once (those of the tasks that
        depend on none) is scheduled; without Kueue, suspended at `timeout`."""
        group = ctx.group
        pods = [p for p in self._job_pods(ctx.job_id)
                if _attempt(p) == int((js.get("status") or {}).get("restarts") or 0)]
        first = {i for i in range(len(group.tasks)) if not jobset.depends_on(group, i)}
        expected = sum(group.tasks[i].num_nodes for i in first)
        present = [p for p in pods if int(((p.get("metadata") or {}).get("labels") or {})
                                          .get(f"{render.LABEL}/task-index", -1)) in first]
        if len(present) >= expected and status.all_scheduled(pods, len(pods)):
            return Admission("ready", f"all {len(pods)} pods scheduled", facts)
        reason = status.unscheduled_reason(pods) or "waiting for the scheduler"
        if len(present) < expected:
            reason = f"{len(present)} of {expected} pods made so far"
        if timeout is not None and time.time() > timeout:
            self._suspend(ctx.job_id, True)
            return self._release(ctx.job_id, reason, "suspended", facts)
        return Admission("waiting", reason, facts)

    def _suspend(self, job_id: int, suspend: bool) -> None:
        name = jobset.jobset_name(self._job(job_id).group.name)
        self._call(f"{'suspending' if suspend else 'resuming'} JobSet {name}",
                   self._custom.patch_namespaced_custom_object, *self._js_args(), name,
                   {"spec": {"suspend": suspend}}, _content_type="application/merge-patch+json")
        self._js_cache.pop(job_id, None)

    def _create_jobset(self, job_id: int, objs: list[Obj]) -> None:
        """PVCs, the JobSet (suspended), the objects it owns, then resume it (not with Kueue)."""
        js = next(o for o in objs if o["kind"] == "JobSet")
        claims = [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
        owned = [o for o in objs if o["kind"] not in ("JobSet", "PersistentVolumeClaim")]
        for obj in claims:
            self._create(obj)
        self._create(js)
        cur = self._jobset(job_id, fresh=True)
        if cur is None:
            raise self._busy(f"waiting for JobSet {js['metadata']['name']} to be readable")
        ref = {"apiVersion": jobset.API_VERSION, "kind": "JobSet",
               "name": cur["metadata"]["name"], "uid": cur["metadata"]["uid"],
               "blockOwnerDeletion": True}
        for obj in owned:
            obj["metadata"]["ownerReferences"] = [ref]
            self._create(obj)
        if not self.config.kueue_queue and (cur.get("spec") or {}).get("suspend"):
            self._suspend(job_id, False)

    def _kueue_reason(self, js: Obj) -> str:
        """Kueue's word on the JobSet's Workload (its QuotaReserved condition's message)."""
        uid = js["metadata"].get("uid")
        group, versions, plural = KUEUE
        for version in versions:
            try:
                items = self._call("reading Kueue's workloads",
                                   self._custom.list_namespaced_custom_object, group, version,
                                   self.config.namespace, plural,
                                   label_selector=f"kueue.x-k8s.io/job-uid={uid}")["items"]
            except Unreachable:
                raise
            except Exception as e:
                if self._status_code(e) == 404:
                    continue  # not this version (or no Kueue at all)
                return f"its Workload cannot be read ({api_message(e)})"
            for wl in items:
                for c in (wl.get("status") or {}).get("conditions") or []:
                    if c.get("type") == "QuotaReserved" and c.get("status") != "True":
                        return str(c.get("message") or c.get("reason") or "pending")
            return "waiting for Kueue to admit it" if items else \
                "waiting for Kueue to make its Workload"
        return "Kueue's Workload API is not served (is Kueue installed?)"

    # --- phases -------------------------------------------------------------------------------
    def _start_jobset(self, launch: PhaseLaunch) -> Handle:
        ref = launch.ref
        try:
            pod = self._node_pod(ref)
        except Unreachable:
            pod = None
        name = (pod or {}).get("metadata", {}).get("name", "")
        if pod is not None:
            self._follow_pod(name, launch.log_path)
        self._look(ref, "", 0)  # any pod change (or the next list) wakes it
        return {"pod": name}

    def _follow_pod(self, pod: str, log_path: Any) -> None:
        """A log follower for `pod` appending to the node's log, once per pod (recorded next to
        the log, so a restarted controller does not start a second)."""
        marker = log_path.with_name(log_path.name + ".pods")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            seen = marker.read_text().split()
        except FileNotFoundError:
            seen = []
        if pod in seen:
            return
        with open(marker, "a") as f:
            f.write(pod + "\n")
        log_path.touch()
        self._follow_logs(pod, log_path, append=True)

    def _outcome_jobset(self, ref: NodeRef, handle: Handle | None) -> Outcome | None:
        node = (ref.job_id, ref.task_idx, ref.rank)
        try:
            js = self._jobset(ref.job_id)
            pod = self._node_pod(ref)
        except Unreachable:
            if handle is not None:
                self._look(ref, "", 0)
            return None
        stopping = node in self._stopped_nodes
        finished = _finished(js)
        if pod is not None and handle is not None:
            self._follow_pod(pod["metadata"]["name"], self._log_of(ref))
        if pod is None:
            if js is None:
                if stopping:
                    return Outcome(signal=15, stopped=True)
                return Outcome(lost=True, note="the group's JobSet is gone (deleted from "
                               "outside jobgroup, or by its ttlSecondsAfterFinished)")
            if finished:
                return Outcome(signal=15, stopped=True, note=self._ended_note(js))
            self._wait(ref, handle)
            return None  # not made yet (dependsOn, suspended) or being made again
        out = status.phase_outcome(pod, ref.phase, stop_requested=stopping)
        if out is None:
            self._wait(ref, handle)
            return None
        if stopping or (out.exit_code == 0 and out.signal is None):
            return out
        if finished == "Completed" or (finished == "Failed" and not self._failed_here(js, ref)):
            return Outcome(signal=15, stopped=True, note=self._ended_note(js))
        if finished == "Failed" or js is None:
            return out
        # the cluster handles it: the Job replaces the pod, or the JobSet restarts or fails
        self._retry.add(ref)
        self._wait(ref, handle)
        return None

    def _wait(self, ref: NodeRef, handle: Handle | None) -> None:
        if handle is not None:
            self._look(ref, "", 0)

    def _failed_here(self, js: Obj, ref: NodeRef) -> bool:
        """Whether the node's own task's Job is a failed one (not merely stopped by the
        JobSet's fail-fast)."""
        name = render.dns_name(self._job(ref.job_id).group.tasks[ref.task_idx].name or "")
        for st in (js.get("status") or {}).get("replicatedJobsStatus") or []:
            if st.get("name") == name:
                return int(st.get("failed") or 0) > 0
        return False

    @staticmethod
    def _ended_note(js: Obj) -> str:
        done = _condition(js, "Completed")
        if done:
            return "stopped by the cluster: the JobSet completed (the primary tasks succeeded)"
        failed = _condition(js, "Failed")
        return "stopped by the cluster: the JobSet failed" + (
            f" ({failed.get('message')})" if failed and failed.get("message") else "")

    def _log_of(self, ref: NodeRef) -> Any:
        group = self._job(ref.job_id).group
        return layout.log_path(self.home, ref.job_id, group.tasks[ref.task_idx].name or "",
                               ref.rank, ref.attempt)

    def _recover_jobset(self, ref: NodeRef) -> Handle | Ended | None:
        try:
            pod = self._node_pod(ref)
        except Unreachable:
            pod = None
        if pod is not None:
            self._follow_pod(pod["metadata"]["name"], self._log_of(ref))
        try:
            done = self._outcome_jobset(ref, None)
        except Unreachable:
            done = None
        self._look(ref, "", 0)
        if done is not None:
            return ENDED
        return {"pod": (pod or {}).get("metadata", {}).get("name", "")}

    def _stop_jobset(self, ref: NodeRef, kill: bool) -> None:
        self._stopped_nodes.add((ref.job_id, ref.task_idx, ref.rank))
        js = self._jobset(ref.job_id, fresh=True)
        grace = 0 if kill else self._grace("", ref.job_id)
        api, ns = self._api(), self.config.namespace
        if js is not None and not _finished(js):
            pods = [p for p in self._job_pods(ref.job_id)
                    if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
            for p in pods:  # an auxiliary's driver then skips its termination_delay
                try:
                    self._call("annotating pods", api.patch_namespaced_pod,
                               p["metadata"]["name"], ns, {"metadata": {"annotations": {
                                   render.STOP_ANNOTATION: "now"}}})
                except Unreachable:
                    raise
                except Exception as e:
                    if self._status_code(e) != 404:
                        raise
            self._keep_logs(pods)
            self._delete_jobset(ref.job_id)
            victims = [p["metadata"]["name"] for p in pods]
        else:
            pod = self._node_pod(ref)
            victims = [pod["metadata"]["name"]] if pod is not None and \
                (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") else []
            if pod is not None:
                self._keep_logs([pod])
        for name in victims:
            try:
                self._call(f"deleting pod {name}", api.delete_namespaced_pod, name, ns,
                           grace_period_seconds=grace)
            except Unreachable:
                raise
            except Exception as e:
                if self._status_code(e) != 404:
                    raise

    def _delete_jobset(self, job_id: int) -> None:
        """Delete the job's JobSet (background propagation: what it owns goes too)."""
        try:
            group = self._job(job_id).group
        except KeyError:
            return
        if self._jobset(job_id, fresh=True) is None:
            return
        name = jobset.jobset_name(group.name)
        try:
            self._call(f"deleting JobSet {name}", self._custom.delete_namespaced_custom_object,
                       *self._js_args(), name, propagation_policy="Background")
        except Unreachable:
            raise
        except Exception as e:
            if self._status_code(e) != 404:
                raise
        self._js_cache.pop(job_id, None)

    def _delete_jobs(self, selector: str) -> None:
        """The Jobs labelled with the job (what a JobSet deletion leaves, e.g. orphans)."""
        from kubernetes import client

        batch = client.BatchV1Api(self._api().api_client)
        self._call("deleting the job's Jobs", batch.delete_collection_namespaced_job,
                   self.config.namespace, label_selector=selector,
                   propagation_policy="Background")

    def _node_ready_jobset(self, ref: NodeRef) -> bool | None:
        return status.container_ready(self._node_pod(ref))
