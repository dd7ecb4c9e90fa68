"""The fake scheduler and kubelet of a one-node fake cluster: pods really run, as local
processes.

Scheduler: a pod binds to the node (`PodScheduled=True`, `spec.nodeName`, a pod IP from
127.0.10.0/23) when its requests fit what is left of the node's capacity, its node selector /
required node affinity match the node's labels and its PersistentVolumeClaims exist; otherwise
`PodScheduled=False`, reason `Unschedulable`, with the scheduler's kind of message
(`0/1 nodes are available: 1 Insufficient nvidia.com/gpu.`), retried whenever anything changes.

Kubelet: the one container of a bound pod runs its real `command`/`args` (with `$(VAR)`
expansion) under bubblewrap, in its own PID namespace (the command is PID 1, as in a container),
its own UTS namespace (hostname = `spec.hostname`), on the host's network. Its root is the host's
with the pod's mounts laid over it, created inside the view only: ConfigMap, Secret, downwardAPI,
emptyDir and PVC volumes (a PVC is a folder shared by the pods that claim it), a private /tmp,
/dev/termination-log, and /etc/hosts in which every pod of a headless Service resolves as
`{hostname}.{subdomain}[.{ns}.svc.cluster.local]` — cluster DNS emulated by hosts files, updated
in place as pods come and go; no DNS server is reachable. Env: the image's usual PATH, HOSTNAME,
then `env` (value, secretKeyRef, configMapKeyRef, fieldRef). stdout/stderr go to the container log
(`pods/log`). Startup and readiness probes (exec, tcpSocket, httpGet) run at `periodSeconds`
(scaled by `probe_scale`). The container's end is reported like the kubelet does: `terminated`
with exitCode, reason (Completed / Error / OOMKilled), message (the termination-log file), phase
Succeeded/Failed (restartPolicy Never). Deleting a pod sends SIGTERM to PID 1, SIGKILL after the
grace period, then removes the object. Test hooks: `oom_kill`, `evict`, `asked_too_early`.

Not emulated: images (every container sees the host's filesystem), resource limits, restart
policies other than Never, init/sidecar containers (pods have exactly one container here).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from jobgroup.backends.local.isolation import NO_DNS, Bind, NodeView, bwrap_args
from .store import ApiError, Obj, Store, not_found, now

NODE = "fake-node-0"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def quantity(v: Any) -> float:
    """A Kubernetes quantity as a number (cpu in cores, memory in bytes)."""
    s = str(v).strip()
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "K": 1e3, "M": 1e6,
             "G": 1e9, "T": 1e12, "m": 1e-3}
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: `$$` -> `$`, `$(NAME)` -> its value when NAME is
    defined, anything else as written."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text):
            n = text[i + 1]
            if n == "$":
                out.append("$")
                i += 2
                continue
            if n == "(":
                end = text.find(")", i + 2)
                if end != -1 and text[i + 2:end] in env:
                    out.append(env[text[i + 2:end]])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


class PodRun:
    """One pod's container on the fake node."""

    def __init__(self, ns: str, name: str, uid: str, root: Path) -> None:
        self.ns, self.name, self.uid = ns, name, uid
        self.dir = root / "pods" / f"{ns}_{name}_{uid[:8]}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "container.log"
        self.log.touch()
        self.term = self.dir / "termination-log"
        self.term.touch()
        self.hosts = self.dir / "hosts"
        self.hosts.write_text("127.0.0.1\tlocalhost\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.copier: threading.Thread | None = None  # container output -> `log`
        self.pid1: int | None = None  # host pid of the container's PID 1
        self.env: dict[str, str] = {}
        self.kill_reason: str | None = None  # OOMKilled (test hook)
        self.state = "waiting"  # waiting -> running -> terminated
        self.started = False
        self.ready = False
        self.deleting = False
        self.gone = threading.Event()  # the container's processes have all ended


class Kubelet:
    def __init__(self, store: Store, root: Path, *, capacity: dict[str, Any] | None = None,
                 labels: dict[str, str] | None = None, probe_scale: float = 1.0,
                 api_host: str = "127.0.0.1", api_port: int = 0) -> None:
        self.store, self.root = store, root
        self.capacity = {k: quantity(v) for k, v in  # what is not given: a roomy node
                         {"cpu": 64, "memory": "256Gi", "pods": 110, **(capacity or {})}.items()}
        self.labels = {"kubernetes.io/hostname": NODE, **(labels or {})}
        self.probe_scale = probe_scale
        self.api_host, self.api_port = api_host, api_port
        self.runs: dict[tuple[str, str], PodRun] = {}
        # test hooks for pods/exec (through the API server; the kubelet's own exec probes are
        # not affected): an HTTP status the upgrade is refused with (403: RBAC forbids
        # pods/exec; else an error dialing the kubelet), or the exit code every command exits
        # with (its stderr names a read-only file system)
        self.fail_exec: int | None = None
        self.exec_exit: int | None = None
        # test hook for pods/log (`asked_too_early`): (ns, pod) -> how many more follow
        # requests are answered as if they came before the container started
        self.early: dict[tuple[str, str], int] = {}
        self._ips = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hosts_text: dict[tuple[str, str], str] = {}
        t = threading.Thread(target=self._schedule_loop, daemon=True, name="fake-scheduler")
        t.start()
        self._threads.append(t)

    # --- scheduler -------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        seen = -1
        while not self._stop.is_set():
            with self.store.changed:
                if self.store.rv == seen:
                    self.store.changed.wait(0.5)
                seen = self.store.rv
            try:
                for pod in self.store.list("pods", None):
                    if not pod["spec"].get("nodeName") and \
                            not pod["metadata"].get("deletionTimestamp"):
                        self._try_schedule(pod)
                self._write_hosts()
            except Exception as e:  # keep scheduling; a test sees the symptom
                print(f"k8sfake scheduler: {type(e).__name__}: {e}")

    @staticmethod
    def _requests(pod: Obj) -> dict[str, float]:
        out: dict[str, float] = {"pods": 1}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
            for k, v in req.items():
                out[k] = out.get(k, 0) + quantity(v)
        return out

    def _fits(self, pod: Obj) -> str | None:
        """Why the pod cannot bind to the node (the scheduler's message), or None."""
        ns = pod["metadata"]["namespace"]
        for v in pod["spec"].get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self.store.find("persistentvolumeclaims", ns, claim) is None:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
        if not self._affinity_ok(pod):
            return ("0/1 nodes are available: 1 node(s) didn't match Pod's node "
                    "affinity/selector.")
        used: dict[str, float] = {}
        for other in self.store.list("pods", None):
            if other["spec"].get("nodeName") == NODE and \
                    other["status"].get("phase") not in ("Succeeded", "Failed"):
                for k, v in self._requests(other).items():
                    used[k] = used.get(k, 0) + v
        short = [k for k, v in self._requests(pod).items()
                 if v > 0 and used.get(k, 0) + v > self.capacity.get(k, 0) + 1e-9]
        if short:
            return ("0/1 nodes are available: " +
                    ", ".join(f"1 Insufficient {k}" for k in sorted(short)) + ".")
        return None

    def _affinity_ok(self, pod: Obj) -> bool:
        spec = pod["spec"]
        if any(self.labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return False
        terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or {}) \
            .get("nodeSelectorTerms")
        if not terms:
            return True

        def expr_ok(e: Obj) -> bool:
            have = self.labels.get(e["key"])
            op = e["operator"]
            return {"In": have in (e.get("values") or []),
                    "NotIn": have not in (e.get("values") or []),
                    "Exists": have is not None, "DoesNotExist": have is None}.get(op, False)

        return any(all(expr_ok(e) for e in t.get("matchExpressions") or []) for t in terms)

    def _try_schedule(self, pod: Obj) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        with self._lock:
            why = self._fits(pod)
            if why is not None:
                conds = pod["status"].get("conditions") or []
                if any(c.get("message") == why for c in conds):
                    return

                def unsched(p: Obj) -> None:
                    p["status"]["conditions"] = [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": why, "lastProbeTime": None, "lastTransitionTime": now()}]
                self.store.update("pods", ns, name, unsched)
                return
            self._ips += 1
            ip = f"127.0.{10 + self._ips // 250}.{1 + self._ips % 250}"

            def bind(p: Obj) -> None:
                p["spec"]["nodeName"] = NODE
                p["status"].update({
                    "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
                    "startTime": now(),
                    "conditions": [{"type": "PodScheduled", "status": "True",
                                    "lastProbeTime": None, "lastTransitionTime": now()}],
                    "containerStatuses": [self._cstatus(c, {"waiting": {
                        "reason": "ContainerCreating"}}) for c in p["spec"]["containers"]],
                })
            bound = self.store.update("pods", ns, name, bind)
            if bound is None:
                return
            run = PodRun(ns, name, bound["metadata"]["uid"], self.root)
            self.runs[(ns, name)] = run
        t = threading.Thread(target=self._run_pod, args=(run,), daemon=True,
                             name=f"fake-kubelet-{name}")
        t.start()
        self._threads.append(t)

    @staticmethod
    def _cstatus(container: Obj, state: Obj, *, started: bool = False, ready: bool = False,
                 last: Obj | None = None) -> Obj:
        out = {"name": container["name"], "image": container.get("image", ""),
               "imageID": "fake://" + container.get("image", ""), "ready": ready,
               "restartCount": 0, "started": started, "state": state,
               "containerID": "fake://" + container["name"]}
        if last:
            out["lastState"] = last
        return out

    # --- DNS (hosts files) ---------------------------------------------------------------------
    def _write_hosts(self) -> None:
        """Every running pod's /etc/hosts: localhost, itself, and each pod published by a
        headless Service of its namespace (its `subdomain`), short and fully qualified."""
        pods = self.store.list("pods", None)
        records: dict[str, list[str]] = {}
        for p in pods:
            ns, spec, st = p["metadata"]["namespace"], p["spec"], p["status"]
            if not st.get("podIP") or st.get("phase") in ("Succeeded", "Failed"):
                continue
            sub, host = spec.get("subdomain"), spec.get("hostname")
            if not (sub and host and self.store.find("services", ns, sub)):
                continue
            records.setdefault(ns, []).append(
                f"{st['podIP']}\t{host}.{sub}.{ns}.svc.cluster.local {host}.{sub}")
        for (ns, name), run in list(self.runs.items()):
            pod = next((p for p in pods if p["metadata"]["namespace"] == ns
                        and p["metadata"]["name"] == name), None)
            if pod is None:
                continue
            self._refresh_downward(run, pod)
            own = pod["spec"].get("hostname") or name
            text = "\n".join(["# Kubernetes-managed hosts file (k8sfake: cluster DNS emulated)",
                              "127.0.0.1\tlocalhost",
                              f"{pod['status'].get('podIP', '127.0.0.1')}\t{own}",
                              *sorted(records.get(ns, []))]) + "\n"
            if self._hosts_text.get((ns, name)) != text:
                self._hosts_text[(ns, name)] = text
                with open(run.hosts, "r+") as f:  # in place: the file is bind-mounted
                    f.write(text)
                    f.truncate()

    # --- the container -----------------------------------------------------------------------
    def _env(self, pod: Obj, container: Obj) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env = {"PATH": IMAGE_PATH, "HOSTNAME": pod["spec"].get("hostname") or
               pod["metadata"]["name"], "HOME": "/root",
               "KUBERNETES_SERVICE_HOST": self.api_host,
               "KUBERNETES_SERVICE_PORT": str(self.api_port)}
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
                continue
            src = e.get("valueFrom") or {}
            if "secretKeyRef" in src or "configMapKeyRef" in src:
                ref = src.get("secretKeyRef") or src["configMapKeyRef"]
                plural = "secrets" if "secretKeyRef" in src else "configmaps"
                obj = self.store.find(plural, ns, ref["name"])
                data = (obj or {}).get("data") or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    what = "secret" if plural == "secrets" else "configmap"
                    raise _ConfigError(f'{what} "{ref["name"]}" not found' if obj is None else
                                       f"couldn't find key {ref['key']} in {what} "
                                       f"{ns}/{ref['name']}")
                value = data[ref["key"]]
                env[e["name"]] = base64.b64decode(value).decode() if plural == "secrets" \
                    else value
            elif "fieldRef" in src:
                env[e["name"]] = self._field(pod, src["fieldRef"]["fieldPath"])
        return env

    @staticmethod
    def _field(pod: Obj, path: str) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):  # the downward API's format
            items = sorted((pod["metadata"].get(path.split(".")[1]) or {}).items())
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
        return {"metadata.name": pod["metadata"]["name"],
                "metadata.namespace": pod["metadata"]["namespace"],
                "metadata.uid": pod["metadata"]["uid"], "spec.nodeName": NODE,
                "status.podIP": pod["status"].get("podIP", ""),
                "status.hostIP": "127.0.0.1"}.get(path, "")

    def _volume_dir(self, run: PodRun, pod: Obj, vol: Obj) -> Path:
        """The host folder holding volume `vol` of the pod (materialised now)."""
        ns = pod["metadata"]["namespace"]
        if "persistentVolumeClaim" in vol:
            d = self.root / "pvc" / ns / vol["persistentVolumeClaim"]["claimName"]
            d.mkdir(parents=True, exist_ok=True)
            return d
        d = run.dir / "volumes" / vol["name"]
        d.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in vol:
            return d
        files: dict[str, bytes] = {}
        sources = [vol] if "projected" not in vol else vol["projected"].get("sources") or []
        for source in sources:
            files.update(self._source_files(pod, source))
        for rel, content in files.items():
            path = d / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return d

    def _source_files(self, pod: Obj, vol: Obj) -> dict[str, bytes]:
        """The files of a configMap, secret or downwardAPI volume (or projected source)."""
        ns = pod["metadata"]["namespace"]
        files: dict[str, bytes] = {}
        for kind, plural in (("configMap", "configmaps"), ("secret", "secrets")):
            if kind not in vol:
                continue
            ref = vol[kind]
            obj = self.store.find(plural, ns, ref.get("name") or ref.get("secretName"))
            if obj is None:
                if ref.get("optional"):
                    return files
                raise _ConfigError(f'{kind} "{ref.get("name") or ref.get("secretName")}" '
                                   "not found", mount=True)
            data: dict[str, bytes] = {}
            for k, v in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(v) if plural == "secrets" else v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
            items = ref.get("items")
            files = {i["path"]: data[i["key"]] for i in items} if items else data
        if "downwardAPI" in vol:
            files = self._downward(pod, vol)
        return files

    def _downward(self, pod: Obj, vol: Obj) -> dict[str, bytes]:
        return {item["path"]: self._field(pod, item["fieldRef"]["fieldPath"]).encode()
                for item in vol["downwardAPI"].get("items") or []}

    def _refresh_downward(self, run: PodRun, pod: Obj) -> None:
        """The kubelet keeps downward API volumes current (labels, annotations): rewritten when
        they change (a real kubelet takes up to its sync period, about a minute)."""
        for vol in pod["spec"].get("volumes") or []:
            if "downwardAPI" not in vol:
                continue
            d = run.dir / "volumes" / vol["name"]
            if not d.is_dir():
                continue
            for rel, content in self._downward(pod, vol).items():
                path = d / rel
                try:
                    if path.read_bytes() != content:
                        tmp = path.with_name(path.name + ".tmp")
                        tmp.write_bytes(content)
                        os.replace(tmp, path)
                except OSError:
                    pass

    def _view(self, run: PodRun, pod: Obj, container: Obj) -> list[str]:
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        tmp = run.dir / "tmp"
        tmp.mkdir(exist_ok=True)
        # The container's own /root, as an image has one: its ~/.bashrc and whatever a shell
        # writes there (pyenv's rehash lock of this machine's /root/.bashrc) stay in the pod.
        home = run.dir / "root"
        home.mkdir(exist_ok=True)
        binds = [Bind(str(tmp), "/tmp"), Bind(str(home), "/root")]
        dev: list[str] = []  # mounts under /dev (/dev/shm): over the fresh /dev, below
        for m in container.get("volumeMounts") or []:
            src = self._volume_dir(run, pod, vols[m["name"]])
            if m.get("subPath"):
                src = src / m["subPath"]
            if m["mountPath"].startswith("/dev/"):
                dev += ["--ro-bind" if m.get("readOnly") else "--bind", str(src), m["mountPath"]]
                continue
            binds.append(Bind(str(src), m["mountPath"], bool(m.get("readOnly"))))
        resolv = run.dir / "resolv.conf"
        resolv.write_text(NO_DNS)
        view = NodeView(hostname=pod["spec"].get("hostname") or pod["metadata"]["name"],
                        hosts_file=str(run.hosts), binds=binds, resolv_file=str(resolv),
                        chdir=container.get("workingDir") or "/")
        # A fresh /dev (inside the view) so that /dev/termination-log is created there only.
        return [*bwrap_args(view), "--dev", "/dev", *dev, "--bind", str(run.term),
                container.get("terminationMessagePath") or "/dev/termination-log",
                "--unshare-pid", "--as-pid-1"]

    def _set(self, run: PodRun, change: Any) -> Obj | None:
        return self.store.update("pods", run.ns, run.name, change)

    def _run_pod(self, run: PodRun) -> None:
        pod = self.store.find("pods", run.ns, run.name)
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        while True:  # waiting for the container's config (a missing Secret/ConfigMap)
            if run.deleting or self._stop.is_set():
                self._finish(run, container, None)
                return
            try:
                env = self._env(pod, container)
                args = self._view(run, pod, container)
                break
            except _ConfigError as e:
                waiting = {"reason": "ContainerCreating" if e.mount else
                           "CreateContainerConfigError", "message": str(e)}
                self._set(run, lambda p: p["status"].update(containerStatuses=[self._cstatus(
                    container, {"waiting": waiting})]))
                time.sleep(0.5)
                pod = self.store.find("pods", run.ns, run.name) or pod
        run.env = env
        argv = [expand(a, env) for a in (container.get("command") or []) +
                (container.get("args") or [])]
        info_r, info_w = os.pipe()
        out_r, out_w = os.pipe()
        run.proc = subprocess.Popen(
            ["bwrap", *args, "--info-fd", str(info_w), "--", *argv], env=env,
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=subprocess.STDOUT,
            pass_fds=(info_w,), start_new_session=True)
        os.close(info_w)
        os.close(out_w)
        run.copier = threading.Thread(target=_copy_output, args=(out_r, run.log), daemon=True)
        run.copier.start()
        with os.fdopen(info_r, "rb") as f:
            info = f.read()
        try:
            run.pid1 = json.loads(info.decode())["child-pid"]
        except (ValueError, KeyError):
            run.pid1 = None
        # bubblewrap reports the child before it has built the view (mounts, pivot_root); the
        # container "runs" once the child has exec'ed the command (an exec before that would
        # land in bubblewrap's staging mounts).
        deadline = time.monotonic() + 10
        while run.pid1 is not None and time.monotonic() < deadline:
            try:
                if os.path.basename(os.readlink(f"/proc/{run.pid1}/exe")) != "bwrap":
                    break
            except OSError:
                break  # already gone
            time.sleep(0.005)
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        run.state, run.started = "running", startup is None
        run.ready = run.started and readiness is None
        started_at = now()

        def running(p: Obj) -> None:
            p["status"]["phase"] = "Running"
            p["status"]["containerStatuses"] = [self._cstatus(
                container, {"running": {"startedAt": started_at}}, started=run.started,
                ready=run.ready)]
            self._conditions(p, run.ready)
        self._set(run, running)
        self._write_hosts()
        next_probe = {"startup": time.monotonic(), "readiness": time.monotonic()}
        failures = 0
        while run.proc.poll() is None:
            t = time.monotonic()
            changed = False
            if not run.started and startup and t >= next_probe["startup"]:
                next_probe["startup"] = t + self._period(startup)
                if self._probe(run, pod, startup):
                    run.started, changed = True, True
                    run.ready = readiness is None
                else:
                    failures += 1
                    if failures >= int(startup.get("failureThreshold", 3)):
                        self._kill(run, signal.SIGTERM)  # the kubelet restarts/kills it
            if run.started and readiness and t >= next_probe["readiness"]:
                next_probe["readiness"] = t + self._period(readiness)
                ok = self._probe(run, pod, readiness)
                if ok != run.ready:
                    run.ready, changed = ok, True
            if changed:
                def probed(p: Obj) -> None:
                    p["status"]["containerStatuses"] = [self._cstatus(
                        container, {"running": {"startedAt": started_at}}, started=run.started,
                        ready=run.ready)]
                    self._conditions(p, run.ready)
                self._set(run, probed)
            try:
                run.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        self._finish(run, container, started_at)

    def _period(self, probe: Obj) -> float:
        return max(0.05, float(probe.get("periodSeconds", 10)) * self.probe_scale)

    @staticmethod
    def _conditions(p: Obj, ready: bool) -> None:
        state = "True" if ready else "False"
        p["status"]["conditions"] = [
            c for c in p["status"].get("conditions") or []
            if c["type"] in ("PodScheduled", "DisruptionTarget")] + [
            {"type": t, "status": s, "lastProbeTime": None, "lastTransitionTime": now()}
            for t, s in (("Initialized", "True"), ("Ready", state),
                         ("ContainersReady", state))]

    def _finish(self, run: PodRun, container: Obj, started_at: str | None) -> None:
        code = run.proc.wait() if run.proc else None
        if run.copier is not None:  # the last lines are in the log before "terminated"
            run.copier.join(timeout=10)
        if run.pid1 is not None:  # everything of the pod's PID namespace is gone with PID 1
            self._wait_gone(run.pid1)
        run.state, run.ready = "terminated", False
        try:
            message = run.term.read_bytes()[:4096].decode(errors="replace")
        except OSError:
            message = ""
        if code is None:
            term = None
        else:
            reason = run.kill_reason or ("Completed" if code == 0 else "Error")
            term = {"exitCode": code, "reason": reason, "startedAt": started_at,
                    "finishedAt": now(), "containerID": "fake://" + container["name"]}
            if message:
                term["message"] = message

        def ended(p: Obj) -> None:
            if term is not None:
                p["status"]["containerStatuses"] = [self._cstatus(
                    container, {"terminated": term}, started=False, ready=False)]
            if p["status"].get("reason") != "Evicted":
                p["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            self._conditions(p, False)
        self._set(run, ended)
        run.gone.set()
        self._write_hosts()

    def _wait_gone(self, pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.02)

    def _kill(self, run: PodRun, sig: int) -> None:
        """Signal the container's PID 1 (SIGKILL of PID 1 ends its whole PID namespace)."""
        for pid in (run.pid1,):
            if pid is None:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL and run.proc is not None and run.proc.poll() is None:
            try:
                os.kill(run.proc.pid, signal.SIGKILL)  # bwrap itself (by pid, never by name)
            except ProcessLookupError:
                pass

    # --- probes and exec ---------------------------------------------------------------------
    def _probe(self, run: PodRun, pod: Obj, probe: Obj) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        ip = self.store.find("pods", run.ns, run.name)
        ip = (ip or pod)["status"].get("podIP", "127.0.0.1")
        try:
            if "exec" in probe:
                code, _, _ = self.exec(run.ns, run.name, probe["exec"]["command"], timeout=timeout)
                return code == 0
            if "tcpSocket" in probe:
                with socket.create_connection((ip, int(probe["tcpSocket"]["port"])),
                                              timeout=timeout):
                    return True
            if "httpGet" in probe:
                g = probe["httpGet"]
                url = f"http://{ip}:{g['port']}{g.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return 200 <= r.status < 400
        except (OSError, ApiError):
            return False
        return False

    def check_exec(self, ns: str, name: str, container: str | None) -> None:
        pod = self.store.get("pods", ns, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container and container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        run = self.runs.get((ns, name))
        if run is None or run.state != "running" or run.pid1 is None:
            raise ApiError(400, "BadRequest",
                           f"container {names[0]} is not running (pod {name})")

    def exec(self, ns: str, name: str, command: list[str], *,
             timeout: float = 60) -> tuple[int, bytes, bytes]:
        """Run `command` in the container's namespaces (mount, UTS, PID) with its env."""
        run = self.runs.get((ns, name))
        if run is None or run.pid1 is None or run.state != "running":
            raise ApiError(400, "BadRequest", f"container of pod {name} is not running")
        argv = ["nsenter", "-t", str(run.pid1), "-m", "-u", "-p", "--wd=/", "--", *command]
        try:
            p = subprocess.run(argv, env=run.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, b"", b"timed out\n"
        return p.returncode, p.stdout, p.stderr

    # --- what the API server asks ---------------------------------------------------------------
    def log_file(self, ns: str, name: str, container: str | None, *,
                 follow: bool = False) -> Path:
        pod = self.store.get("pods", ns, name)
        c = pod["spec"]["containers"][0]
        if container and container != c["name"]:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        run = self.runs.get((ns, name))
        with self._lock:
            early = follow and self.early.get((ns, name), 0) > 0
            if early:
                self.early[(ns, name)] -= 1
                if not self.early[(ns, name)]:
                    del self.early[(ns, name)]
        if run is None or run.state == "waiting" or early:
            reason = ((pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
                      .get("waiting", {}).get("reason", "ContainerCreating"))
            raise ApiError(400, "BadRequest", f'container "{c["name"]}" in pod "{name}" is '
                           f"waiting to start: {reason}")
        return run.log

    def container_running(self, ns: str, name: str) -> bool:
        run = self.runs.get((ns, name))
        return run is not None and run.state == "running"

    def delete_pod(self, ns: str, name: str, grace: int | None) -> Obj:
        pod = self.store.find("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        run = self.runs.get((ns, name))
        if run is None or run.state != "running" or grace == 0:
            if run is not None:
                run.deleting = True
                self._kill(run, signal.SIGKILL)
            gone = self.store.remove("pods", ns, name) or pod
            self.runs.pop((ns, name), None)
            return gone

        def mark(p: Obj) -> None:
            p["metadata"]["deletionTimestamp"] = now()
            p["metadata"]["deletionGracePeriodSeconds"] = grace
        marked = self._set(run, mark) or pod
        if not run.deleting:
            run.deleting = True
            threading.Thread(target=self._terminate, args=(run, grace), daemon=True).start()
        return marked

    def _terminate(self, run: PodRun, grace: int) -> None:
        self._kill(run, signal.SIGTERM)
        if not run.gone.wait(grace):
            self._kill(run, signal.SIGKILL)
            run.gone.wait(30)
        self.store.remove("pods", run.ns, run.name)
        self.runs.pop((run.ns, run.name), None)

    # --- test hooks ---------------------------------------------------------------------------
    def oom_kill(self, ns: str, name: str) -> None:
        """The container exceeded its memory limit: the kernel killed it (reason OOMKilled)."""
        run = self.runs[(ns, name)]
        run.kill_reason = "OOMKilled"
        self._kill(run, signal.SIGKILL)

    def asked_too_early(self, ns: str, name: str, times: int = 1) -> None:
        """The next `times` follow requests for the pod's log are answered as if they had come a
        moment before its container started (400, `... is waiting to start: ContainerCreating`),
        which is what a log follower that asked too early gets; the container runs on. `early`
        is empty again once they have been answered."""
        with self._lock:
            self.early[(ns, name)] = self.early.get((ns, name), 0) + times

    def evict(self, ns: str, name: str,
              message: str = "The node was low on resource: memory.") -> None:
        """Node-pressure eviction: the pod fails with reason Evicted, its container killed."""
        run = self.runs[(ns, name)]

        def evicted(p: Obj) -> None:
            p["status"].update(phase="Failed", reason="Evicted", message=message)
            p["status"]["conditions"] = [c for c in p["status"].get("conditions") or []
                                         if c["type"] != "DisruptionTarget"] + [{
                "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                "message": message, "lastProbeTime": None, "lastTransitionTime": now()}]
        self._set(run, evicted)
        self._kill(run, signal.SIGKILL)

    def stop(self) -> None:
        """Kill every container (by the pids we started) and wait for them."""
        self._stop.set()
        for run in list(self.runs.values()):
            run.deleting = True
            self._kill(run, signal.SIGKILL)
        for run in list(self.runs.values()):
            if run.proc is not None:
                try:
                    run.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            run.gone.wait(10)
        for t in self._threads:
            t.join(timeout=5)


def _stamp() -> bytes:
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ").encode()


def _copy_output(fd: int, path: Path) -> None:
    """The container's output into its log, as the kubelet keeps it (CRI format): one record
    per line, `TIMESTAMP F text` for a whole line, `TIMESTAMP P text` for a partial one."""
    with os.fdopen(fd, "rb", buffering=0) as pipe, open(path, "ab", buffering=0) as log:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                return
            *lines, rest = chunk.split(b"\n")
            ts = _stamp()
            out = b"".join(ts + b" F " + line + b"\n" for line in lines)
            if rest:
                out += ts + b" P " + rest + b"\n"
            log.write(out)


def read_log(path: Path, offset: int) -> tuple[list[tuple[str, bytes]], int]:
    """The complete records of a container log from byte `offset`: [(timestamp, text)], and
    the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    out = []
    for rec in data[:end].split(b"\n")[:-1]:
        ts, tag, text = (rec.split(b" ", 2) + [b""])[:3]
        out.append((ts.decode(), text + (b"\n" if tag == b"F" else b"")))
    return out, offset + end


class _ConfigError(Exception):
    def __init__(self, message: str, mount: bool = False) -> None:
        super().__init__(message)
        self.mount = mount

