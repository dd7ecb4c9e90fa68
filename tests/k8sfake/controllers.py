"""The fake cluster's controllers, WRITTEN BY US for the tests, modelling only what jobgroup's
kubernetes backend relies on. One thread reacts to every change of the store (and ticks every
0.2 s for the TTL):

Garbage collector: an object whose ownerReferences all name objects that are gone is deleted
(background propagation; a pod through the kubelet, with its grace period).

Job controller (batch/v1, `completionMode: Indexed` with `restartPolicy: Never` only): for each
index 0..completions-1 that has not succeeded and has no pod that is still running or being
deleted (`podReplacementPolicy: Failed`: a new pod only once the old one has ended), it creates a
pod from the template: `generateName: {job}-{index}-`, `hostname: {job}-{index}`, labels and the
annotation `batch.kubernetes.io/job-completion-index`, labels `batch.kubernetes.io/job-name` and
`controller-uid`, `JOB_COMPLETION_INDEX` appended to the env when missing, owned by the Job. A
pod that failed (phase Failed, or gone while it ran) is matched against `podFailurePolicy`
(`onExitCodes` with In/NotIn and `containerName`, `onPodConditions`; actions FailJob, Ignore,
Count; no rule matching: Count); more counted failures than `backoffLimit` fail the Job
(condition Failed, reason BackoffLimitExceeded), FailJob at once (reason PodFailurePolicy, the
real controller's message); a failed Job deletes its running pods. Every index succeeded:
condition Complete. `suspend: true` deletes the running pods (condition Suspended). Status:
active, ready, succeeded, failed, completedIndexes, conditions.
Not modelled: parallelism below completions, NonIndexed jobs, backoff delays between retries,
activeDeadlineSeconds, successPolicy of Jobs, pod finalizers, FailIndex.

JobSet controller (jobset.x-k8s.io/v1alpha2, the fields jobgroup sets): a JobSet is refused at
creation (422) when it breaks `tests/schemas/jobset-v1alpha2.json` or the webhook's rules
(`tests/k8sschema.py`); the webhook's defaults are applied (successPolicy All, network DNS
hostnames and publishNotReadyAddresses). It makes the headless Service `{subdomain}` (selector
`jobset.sigs.k8s.io/jobset-name`, owned by the JobSet) and, per replicatedJob whose `dependsOn`
reached its status (Ready: ready + succeeded + failed Jobs = replicas; Complete: succeeded =
replicas), the Jobs `{jobset}-{replicatedJob}-{i}` with JobSet's labels and annotations
(jobset-name, replicatedjob-name, job-index, restart-attempt, jobset-uid) on the Job and its pod
template, `subdomain` set, `suspend` as the JobSet's. A failed Job: without `failurePolicy` the
JobSet fails (condition Failed, reason FailedJobs); with one, its rules (`action`,
`onJobFailureReasons`, `targetReplicatedJobs`; message patterns as regular expressions) or the
default RestartJobSet: `status.restarts` + 1 and every Job of the old attempt deleted and made
again, until `maxRestarts` (then Failed, reason ReachedMaxRestarts). `successPolicy` (All/Any
over `targetReplicatedJobs`) met: Completed, `terminalState`. A finished JobSet deletes its
Jobs that still run, and is deleted `ttlSecondsAfterFinished` after it finished. `suspend`
is passed on to its Jobs. Status: replicatedJobsStatus (ready, succeeded, failed, active,
suspended), restarts, restartsCountTowardsMax, conditions, terminalState.
Not modelled: startupPolicy InOrder, coordinator, exclusive placement, volumeClaimPolicies,
in-place restarts, RestartJob actions, managedBy.

Kueue (only with `kueue={"queue": {"cpu": 4, ...}}`, LocalQueue name -> its quota): a JobSet
labelled `kueue.x-k8s.io/queue-name` and suspended gets a Workload `jobset-{name}-{5 hex}`
(owned by it, label `kueue.x-k8s.io/job-uid`, one podSet per replicatedJob); it is admitted when
the requests of all its pods fit what the queue's admitted Workloads leave (conditions
QuotaReserved and Admitted True; the JobSet resumed), else QuotaReserved False, reason
WaitingForQuota, with Kueue's message (`couldn't assign flavors to pod set X: insufficient unused
quota for cpu in flavor default-flavor, 2 more needed`); an unknown queue: reason Misconfigured,
`LocalQueue X doesn't exist`. A finished JobSet's Workload gets Finished and frees its quota.
Not modelled: flavors, cohorts, preemption, priorities, partial admission.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .store import Obj, Store, now

if TYPE_CHECKING:
    from .kubelet import Kubelet

JS = "jobset.sigs.k8s.io"
INDEX = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")


def _cond(obj: Obj, ctype: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(obj: Obj) -> Obj:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _ts(text: str | None) -> float:
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _set_condition(obj: Obj, ctype: str, status: str, reason: str, message: str) -> None:
    conds = obj.setdefault("status", {}).setdefault("conditions", [])
    for c in conds:
        if c["type"] == ctype:
            if (c["status"], c.get("reason"), c.get("message")) != (status, reason, message):
                c.update(status=status, reason=reason, message=message,
                         lastTransitionTime=now())
            return
    conds.append({"type": ctype, "status": status, "reason": reason, "message": message,
                  "lastTransitionTime": now()})


def _quantity(v: Any) -> float:
    from .kubelet import quantity

    return quantity(v)


class Controllers:
    def __init__(self, store: Store, kubelet: "Kubelet", *,
                 kueue: dict[str, dict[str, Any]] | None = None) -> None:
        self.store, self.kubelet = store, kubelet
        self.kueue = {q: {k: _quantity(v) for k, v in quota.items()}
                      for q, quota in (kueue or {}).items()} if kueue is not None else None
        self._counted: dict[str, set[str]] = {}  # job uid -> pod uids whose end was counted
        self._seen: dict[str, dict[str, Obj]] = {}  # job uid -> its pods as last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-controllers")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        seen = -1
        while not self._stop.is_set():
            with self.store.changed:
                if self.store.rv == seen:
                    self.store.changed.wait(0.2)
                seen = self.store.rv
            try:
                self._pass()
            except Exception as e:  # keep going; a test sees the symptom
                print(f"k8sfake controllers: {type(e).__name__}: {e}")

    def _pass(self) -> None:
        self._collect_garbage()
        for js in self.store.list("jobsets", None):
            self._jobset(js)
        if self.kueue is not None:
            for js in self.store.list("jobsets", None):
                self._kueue(js)
        for job in self.store.list("jobs", None):
            self._job(job)

    # --- garbage collector -------------------------------------------------------------------
    def _collect_garbage(self) -> None:
        for plural, ns, name in self.store.orphans():
            if plural == "pods":
                pod = self.store.find("pods", ns, name)
                if pod is not None and not pod["metadata"].get("deletionTimestamp"):
                    try:
                        self.kubelet.delete_pod(ns, name, None)
                    except Exception:
                        pass
            else:
                self.store.remove(plural, ns, name)

    # --- Jobs -------------------------------------------------------------------------------
    def _job(self, job: Obj) -> None:
        meta, spec = job["metadata"], job["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        pods = [p for p in self.store.list("pods", ns) if _owned_by(p, uid)]
        counted = self._counted.setdefault(uid, set())
        seen = self._seen.setdefault(uid, {})
        finished = _cond(job, "Complete") or _cond(job, "Failed")
        completions = int(spec.get("completions") or 1)
        status = dict(job.get("status") or {})
        live = [p for p in pods if p["status"].get("phase") not in TERMINAL]
        if finished:
            for p in live:
                self._delete_pod(p)
            return
        if spec.get("suspend"):
            for p in live:
                self._delete_pod(p)
            counted.update(p["metadata"]["uid"] for p in pods)  # not failures
            self._seen[uid] = {}
            if not _cond(job, "Suspended"):
                self._update_job(job, lambda j: _set_condition(
                    j, "Suspended", "True", "JobSuspended", "Job suspended"))
            return
        failure: tuple[str, str] | None = None
        failed = int(status.get("failed") or 0)
        # pods gone while they ran count as failed (the real controller's finalizers see them)
        current = {p["metadata"]["uid"]: p for p in pods}
        ended = [p for p in pods if p["status"].get("phase") == "Failed"]
        ended += [p for u, p in seen.items() if u not in current
                  and p["status"].get("phase") not in TERMINAL and not spec.get("suspend")]
        for p in ended:
            pu = p["metadata"]["uid"]
            if pu in counted:
                continue
            counted.add(pu)
            action, message = self._pod_failure_policy(spec, p)
            if action == "Ignore":
                continue
            if action == "FailJob":
                failure = ("PodFailurePolicy", message)
                break
            failed += 1
        self._seen[uid] = current
        succeeded_idx = sorted({int(p["metadata"]["annotations"][INDEX]) for p in pods
                                if p["status"].get("phase") == "Succeeded"})
        if failure is None and failed > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        if failure is None and len(succeeded_idx) < completions:
            busy = {int(p["metadata"]["annotations"][INDEX]) for p in pods
                    if p["status"].get("phase") not in TERMINAL}
            for i in range(completions):
                if i not in succeeded_idx and i not in busy:
                    self._create_pod(job, i)
        ready = sum(1 for p in live if not p["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []))

        def change(j: Obj) -> None:
            st = j.setdefault("status", {})
            st.setdefault("startTime", now())
            st.update(active=len([p for p in live if not p["metadata"].get("deletionTimestamp")]),
                      ready=ready, succeeded=len(succeeded_idx), failed=failed,
                      completedIndexes=",".join(map(str, succeeded_idx)))
            for c in st.get("conditions") or []:
                if c["type"] == "Suspended" and c["status"] == "True":
                    c.update(status="False", reason="JobResumed", message="Job resumed",
                             lastTransitionTime=now())
            if failure is not None:
                _set_condition(j, "FailureTarget", "True", failure[0], failure[1])
                _set_condition(j, "Failed", "True", failure[0], failure[1])
            elif len(succeeded_idx) >= completions:
                _set_condition(j, "SuccessCriteriaMet", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods")
                _set_condition(j, "Complete", "True", "CompletionsReached",
                               "Reached expected number of succeeded pods")
                st["completionTime"] = now()
        before = copy.deepcopy(job.get("status") or {})
        probe = copy.deepcopy(job)
        change(probe)
        if probe.get("status") != before:
            self._update_job(job, change)
        if failure is not None:
            for p in live:
                self._delete_pod(p)

    @staticmethod
    def _pod_failure_policy(spec: Obj, pod: Obj) -> tuple[str, str]:
        """(action, message) for a failed pod: FailJob, Ignore or Count."""
        statuses = pod["status"].get("containerStatuses") or []
        conds = pod["status"].get("conditions") or []
        for i, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
            codes = rule.get("onExitCodes")
            if codes:
                for c in statuses:
                    if codes.get("containerName") and c.get("name") != codes["containerName"]:
                        continue
                    term = (c.get("state") or {}).get("terminated") or {}
                    code = term.get("exitCode")
                    if code is None or code == 0:
                        continue
                    inside = code in codes.get("values") or []
                    if inside == (codes.get("operator") == "In"):
                        name = pod["metadata"]["name"]
                        ns = pod["metadata"]["namespace"]
                        return rule["action"], (
                            f"Container {c.get('name')} for pod {ns}/{name} failed with exit "
                            f"code {code} matching {rule['action']} rule at index {i}")
            for want in rule.get("onPodConditions") or []:
                if any(c.get("type") == want.get("type") and
                       c.get("status") == want.get("status", "True") for c in conds):
                    name = pod["metadata"]["name"]
                    ns = pod["metadata"]["namespace"]
                    return rule["action"], (f"Pod {ns}/{name} has condition {want['type']} "
                                            f"matching {rule['action']} rule at index {i}")
        return "Count", ""

    def _create_pod(self, job: Obj, index: int) -> None:
        meta = job["metadata"]
        name = meta["name"]
        tpl = copy.deepcopy(job["spec"]["template"])
        labels = {**(tpl.get("metadata") or {}).get("labels", {}),
                  "batch.kubernetes.io/controller-uid": meta["uid"],
                  "batch.kubernetes.io/job-name": name, "controller-uid": meta["uid"],
                  "job-name": name, INDEX: str(index)}
        annotations = {**(tpl.get("metadata") or {}).get("annotations", {}), INDEX: str(index)}
        spec = tpl["spec"]
        spec["hostname"] = f"{name}-{index}"
        for c in spec.get("containers") or []:
            env = c.setdefault("env", [])
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": f"metadata.annotations['{INDEX}']"}}})
        self.store.create("pods", meta["namespace"], {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{index}-{uuid.uuid4().hex[:5]}",
                         "generateName": f"{name}-{index}-", "labels": labels,
                         "annotations": annotations, "ownerReferences": [_owner_ref(job)]},
            "spec": spec})

    def _delete_pod(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        try:
            self.kubelet.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], None)
        except Exception:
            pass  # gone already

    def _update_job(self, job: Obj, change: Any) -> None:
        self.store.update("jobs", job["metadata"]["namespace"], job["metadata"]["name"], change)

    # --- JobSets ----------------------------------------------------------------------------
    def _jobset(self, js: Obj) -> None:
        meta, spec = js["metadata"], js["spec"]
        ns, uid, name = meta["namespace"], meta["uid"], meta["name"]
        status = js.get("status") or {}
        restarts = int(status.get("restarts") or 0)
        jobs = [j for j in self.store.list("jobs", ns) if _owned_by(j, uid)]
        current = [j for j in jobs if j["metadata"]["labels"].get(f"{JS}/restart-attempt")
                   == str(restarts)]
        for j in jobs:  # an earlier attempt's Jobs go (their pods with them)
            if j not in current:
                self.store.remove("jobs", ns, j["metadata"]["name"])
        finished = _cond(js, "Completed") or _cond(js, "Failed")
        if finished:
            for j in current:
                if not (_cond(j, "Complete") or _cond(j, "Failed")):
                    self.store.remove("jobs", ns, j["metadata"]["name"])
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and time.time() >= _ts(finished.get("lastTransitionTime")) + ttl:
                self.store.remove("jobsets", ns, name)
            return
        network = spec.get("network") or {}
        subdomain = network.get("subdomain") or name
        if network.get("enableDNSHostnames", True) and \
                self.store.find("services", ns, subdomain) is None:
            self.store.create("services", ns, {
                "metadata": {"name": subdomain, "ownerReferences": [_owner_ref(js)]},
                "spec": {"clusterIP": "None", "selector": {f"{JS}/jobset-name": name},
                         "publishNotReadyAddresses": network.get("publishNotReadyAddresses",
                                                                 True)}})
        rjobs = spec["replicatedJobs"]
        by_rjob = {r["name"]: [j for j in current
                               if j["metadata"]["labels"].get(f"{JS}/replicatedjob-name")
                               == r["name"]] for r in rjobs}
        statuses = []
        for r in rjobs:
            js_jobs = by_rjob[r["name"]]
            par = int(r["template"]["spec"].get("parallelism") or 1)
            statuses.append({
                "name": r["name"],
                "ready": sum(1 for j in js_jobs if int((j.get("status") or {}).get("ready") or 0)
                             + int((j.get("status") or {}).get("succeeded") or 0) >= par
                             and not _cond(j, "Failed") and not _cond(j, "Complete")),
                "succeeded": sum(1 for j in js_jobs if _cond(j, "Complete")),
                "failed": sum(1 for j in js_jobs if _cond(j, "Failed")),
                "active": sum(1 for j in js_jobs if not _cond(j, "Complete")
                              and not _cond(j, "Failed") and not j["spec"].get("suspend")),
                "suspended": sum(1 for j in js_jobs if j["spec"].get("suspend")),
            })
        by_status = {s["name"]: s for s in statuses}
        failed = [j for j in current if _cond(j, "Failed")]
        verdict: tuple[str, str, str] | None = None  # (condition, reason, message)
        restart = False
        if failed:
            first = min(failed, key=lambda j: _cond(j, "Failed")["lastTransitionTime"])
            policy = spec.get("failurePolicy")
            if policy is None:
                verdict = ("Failed", "FailedJobs", "jobset failed due to one or more job "
                           f"failures (first failed job: {first['metadata']['name']})")
            else:
                action = "RestartJobSet"
                for rule in policy.get("rules") or []:
                    if self._rule_matches(rule, failed):
                        action = rule["action"]
                        break
                done = int(status.get("restartsCountTowardsMax") or 0)
                if action == "FailJobSet":
                    verdict = ("Failed", "FailJobSetAction", "applying FailJobSet failure "
                               f"policy action (first failed job: {first['metadata']['name']})")
                elif action == "RestartJobSetAndIgnoreMaxRestarts" or \
                        done < int(policy.get("maxRestarts") or 0):
                    restart = True
                else:
                    verdict = ("Failed", "ReachedMaxRestarts",
                               "jobset failed due to reaching max number of restarts")
        else:
            sp = spec.get("successPolicy") or {"operator": "All"}
            targets = sp.get("targetReplicatedJobs") or [r["name"] for r in rjobs]
            want = sum(int(r.get("replicas", 1)) for r in rjobs if r["name"] in targets)
            have = sum(by_status[t]["succeeded"] for t in targets if t in by_status)
            if (sp["operator"] == "All" and have >= want) or (sp["operator"] == "Any" and have):
                verdict = ("Completed", "AllJobsCompleted", "jobset completed successfully")
        if not verdict and not restart:
            self._make_jobs(js, rjobs, by_rjob, by_status, restarts)
        suspended = bool(spec.get("suspend"))

        def change(obj: Obj) -> None:
            st = obj.setdefault("status", {})
            st["replicatedJobsStatus"] = statuses
            st.setdefault("restarts", 0)
            if restart:
                st["restarts"] = restarts + 1
                counts = "restartsCountTowardsMax"
                st[counts] = int(st.get(counts) or 0) + 1
            if verdict:
                _set_condition(obj, verdict[0], "True", verdict[1], verdict[2])
                st["terminalState"] = verdict[0]
            _set_condition(obj, "Suspended", "True" if suspended else "False",
                           "SuspendedJobs" if suspended else "ResumeJobs",
                           "jobset is suspended" if suspended else "jobset is resumed")
        probe = copy.deepcopy(js)
        change(probe)
        if probe.get("status") != (js.get("status") or {}):
            self.store.update("jobsets", ns, name, change)

    @staticmethod
    def _rule_matches(rule: Obj, failed: list[Obj]) -> bool:
        for j in failed:
            c = _cond(j, "Failed") or {}
            targets = rule.get("targetReplicatedJobs")
            if targets and j["metadata"]["labels"].get(f"{JS}/replicatedjob-name") not in targets:
                continue
            reasons = rule.get("onJobFailureReasons")
            if reasons and c.get("reason") not in reasons:
                continue
            patterns = rule.get("onJobFailureMessagePatterns")
            if patterns and not any(re.search(p, c.get("message") or "") for p in patterns):
                continue
            return True
        return False

    def _make_jobs(self, js: Obj, rjobs: list[Obj], by_rjob: dict[str, list[Obj]],
                   by_status: dict[str, Obj], restarts: int) -> None:
        meta, spec = js["metadata"], js["spec"]
        ns, name = meta["namespace"], meta["name"]
        suspend = bool(spec.get("suspend"))
        subdomain = (spec.get("network") or {}).get("subdomain") or name
        for r in rjobs:
            reached = True
            for dep in r.get("dependsOn") or []:
                st = by_status.get(dep["name"]) or {}
                replicas = next(int(x.get("replicas", 1)) for x in rjobs
                                if x["name"] == dep["name"])
                if dep["status"] == "Complete":
                    reached = reached and st.get("succeeded", 0) == replicas
                else:
                    reached = reached and (st.get("ready", 0) + st.get("succeeded", 0)
                                           + st.get("failed", 0)) == replicas
            have = {j["metadata"]["name"]: j for j in by_rjob[r["name"]]}
            for i in range(int(r.get("replicas", 1))):
                jname = f"{name}-{r['name']}-{i}"
                if jname in have:
                    job = have[jname]
                    if bool(job["spec"].get("suspend")) != suspend and reached:
                        self.store.patch("jobs", ns, jname, {"spec": {"suspend": suspend}})
                    continue
                if not reached:
                    continue
                marks = {f"{JS}/jobset-name": name, f"{JS}/replicatedjob-name": r["name"],
                         f"{JS}/job-index": str(i), f"{JS}/restart-attempt": str(restarts),
                         f"{JS}/jobset-uid": meta["uid"],
                         f"{JS}/replicatedjob-replicas": str(r.get("replicas", 1))}
                tpl = copy.deepcopy(r["template"])
                jmeta = tpl.get("metadata") or {}
                jspec = tpl["spec"]
                ptpl = jspec["template"]
                pmeta = ptpl.setdefault("metadata", {})
                pmeta["labels"] = {**(pmeta.get("labels") or {}), **marks}
                pmeta["annotations"] = {**(pmeta.get("annotations") or {}), **marks}
                ptpl["spec"]["subdomain"] = subdomain
                jspec["suspend"] = suspend
                self.store.create("jobs", ns, {
                    "metadata": {"name": jname,
                                 "labels": {**(jmeta.get("labels") or {}), **marks},
                                 "annotations": {**(jmeta.get("annotations") or {}), **marks},
                                 "ownerReferences": [_owner_ref(js)]},
                    "spec": jspec})

    # --- Kueue ------------------------------------------------------------------------------
    def _kueue(self, js: Obj) -> None:
        meta, spec = js["metadata"], js["spec"]
        queue = (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name")
        if not queue:
            return
        ns, uid = meta["namespace"], meta["uid"]
        name = f"jobset-{meta['name']}-{hashlib.sha256(uid.encode()).hexdigest()[:5]}"
        wl = self.store.find("workloads", ns, name)
        finished = _cond(js, "Completed") or _cond(js, "Failed")
        if wl is None:
            if finished:
                return
            wl = self.store.create("workloads", ns, {
                "metadata": {"name": name, "labels": {"kueue.x-k8s.io/job-uid": uid},
                             "ownerReferences": [_owner_ref(js)]},
                "spec": {"queueName": queue, "podSets": [
                    {"name": r["name"], "count": int(r.get("replicas", 1)) *
                     int(r["template"]["spec"].get("parallelism") or 1)}
                    for r in spec["replicatedJobs"]]}})
        if finished:
            if not _cond(wl, "Finished"):
                self.store.update("workloads", ns, name, lambda w: _set_condition(
                    w, "Finished", "True", "JobFinished", "Job finished successfully"
                    if _cond(js, "Completed") else "Job failed"))
            return
        if _cond(wl, "Admitted"):
            return
        if not spec.get("suspend"):
            return  # resumed by someone else
        quota = self.kueue.get(queue)
        if quota is None:
            verdict = ("False", "Misconfigured", f"LocalQueue {queue} doesn't exist")
        else:
            need = self._requests(js)
            used: dict[str, float] = {}
            for other in self.store.list("workloads", None):
                if other["metadata"]["uid"] == wl["metadata"]["uid"] or \
                        other["spec"]["queueName"] != queue or not _cond(other, "Admitted") \
                        or _cond(other, "Finished"):
                    continue
                owner = next((j for j in self.store.list("jobsets", None)
                              if _owned_by(other, j["metadata"]["uid"])), None)
                for k, v in (self._requests(owner) if owner else {}).items():
                    used[k] = used.get(k, 0) + v
            short = [(k, v + used.get(k, 0) - quota.get(k, 0)) for k, (v) in sorted(need.items())
                     if v + used.get(k, 0) > quota.get(k, 0) + 1e-9]
            if short:
                res, more = short[0]
                first = spec["replicatedJobs"][0]["name"]
                verdict = ("False", "WaitingForQuota",
                           f"couldn't assign flavors to pod set {first}: insufficient unused "
                           f"quota for {res} in flavor default-flavor, {more:g} more needed")
            else:
                verdict = ("True", "QuotaReserved", f"Quota reserved in ClusterQueue {queue}")

        def mark(w: Obj) -> None:
            _set_condition(w, "QuotaReserved", verdict[0], verdict[1], verdict[2])
            if verdict[0] == "True":
                _set_condition(w, "Admitted", "True", "Admitted",
                               "The workload is admitted")
        current = next((c for c in (wl.get("status") or {}).get("conditions") or []
                        if c["type"] == "QuotaReserved"), None)
        if current is None or (current["status"], current["message"]) != verdict[::2]:
            self.store.update("workloads", ns, name, mark)
        if verdict[0] == "True":
            self.store.patch("jobsets", ns, meta["name"], {"spec": {"suspend": False}})

    @staticmethod
    def _requests(js: Obj) -> dict[str, float]:
        """What all the pods of a JobSet request (requests, else limits)."""
        out: dict[str, float] = {}
        for r in js["spec"]["replicatedJobs"]:
            n = int(r.get("replicas", 1)) * int(r["template"]["spec"].get("parallelism") or 1)
            for c in r["template"]["spec"]["template"]["spec"].get("containers") or []:
                res = c.get("resources") or {}
                for k, v in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                    out[k] = out.get(k, 0) + n * _quantity(v)
        return out
