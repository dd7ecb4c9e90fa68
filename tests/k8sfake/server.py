"""The fake API server: core/v1 REST paths and JSON as the `kubernetes` client and kubectl send
them, over plain HTTP on 127.0.0.1 (stdlib `ThreadingHTTPServer`, one thread per request).

Served: discovery (/api, /apis, /api/v1, /apis/GROUP/VERSION, /version), namespaces (read), and
namespaced pods, services, configmaps, secrets, persistentvolumeclaims, events, batch/v1 jobs,
and where the cluster has them (`FakeCluster(jobset=True)`, `kueue=...`) jobset.x-k8s.io/v1alpha2
jobsets and kueue.x-k8s.io/v1beta2 workloads: create, get, list (labelSelector), watch
(`watch=true`, chunked JSON lines, `resourceVersion` replay, `timeoutSeconds`), patch (JSON merge
patch; strategic merge patch, applied as a merge patch, only for built-in kinds: 415 for custom
resources, as the real server), delete (`propagationPolicy`: Orphan keeps the dependents, anything
else lets the garbage collector delete them), deletecollection; pods/log (`follow`,
`sinceTime`/`sinceSeconds`, `tailLines`, `timestamps`, `limitBytes`), pods/exec (WebSocket,
channel protocol v4). A JobSet is admitted only when it passes `tests/schemas/jobset-v1alpha2.json`
and the webhook's rules (`tests/k8sschema.py`): 422 Invalid otherwise, with the JobSet webhook's
defaults applied. Errors are `Status` objects with the real codes (404 NotFound, 409
AlreadyExists, 400 BadRequest, 415 UnsupportedMediaType, 422 Invalid)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import websocket
from .store import ALL_KINDS, GROUPS, KINDS, ApiError, Store, not_found

if TYPE_CHECKING:
    from .kubelet import Kubelet

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_list() -> dict[str, Any]:
    res = [{"name": p, "singularName": k.lower(), "namespaced": True, "kind": k, "verbs": _VERBS}
           for p, k in KINDS.items()]
    res += [{"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
             "verbs": ["get"]},
            {"name": "pods/exec", "singularName": "", "namespaced": True,
             "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "namespaces", "singularName": "namespace", "namespaced": False,
             "kind": "Namespace", "verbs": ["get", "list"]}]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
            "resources": res}


def _group_resources(plurals: list[str], group_version: str) -> dict[str, Any]:
    res = [{"name": p, "singularName": ALL_KINDS[p].lower(), "namespaced": True,
            "kind": ALL_KINDS[p], "verbs": _VERBS} for p in plurals]
    res += [{"name": f"{p}/status", "singularName": "", "namespaced": True,
             "kind": ALL_KINDS[p], "verbs": ["get", "patch", "update"]} for p in plurals]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": res}


def _admit_jobset(body: dict[str, Any]) -> dict[str, Any]:
    """The JobSet webhook's defaults, then its validation and the CRD's schema (422)."""
    import copy

    import jsonschema

    import k8sschema

    obj = copy.deepcopy(body)
    spec = obj.setdefault("spec", {})
    spec.setdefault("successPolicy", {"operator": "All"})
    net = spec.setdefault("network", {})
    net.setdefault("enableDNSHostnames", True)
    net.setdefault("publishNotReadyAddresses", True)
    for r in spec.get("replicatedJobs") or []:
        r.setdefault("replicas", 1)
        r["template"].setdefault("spec", {}).setdefault("completionMode", "Indexed")
    try:
        jsonschema.validate(obj, k8sschema.schema("jobset-v1alpha2.json"))
    except jsonschema.ValidationError as e:
        raise ApiError(422, "Invalid", f'JobSet.jobset.x-k8s.io "{obj["metadata"].get("name")}" '
                       f"is invalid: {e.message}") from None
    errs = k8sschema.jobset_rules(obj)
    if errs:
        raise ApiError(422, "Invalid", 'admission webhook "vjobset.kb.io" denied the request: '
                       + "; ".join(errs))
    return obj


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ApiServer"

    def setup(self) -> None:
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        self.server.conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        self.server.requests.append(f"{self.command} {self.path}")

    # --- plumbing ---------------------------------------------------------------------------
    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _body(self) -> Any:
        n = 0 if self._read else int(self.headers.get("Content-Length") or 0)
        self._read = True
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not JSON") from None

    def _handle(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        self._read = False
        try:
            self._route(parts, q)
        except ApiError as e:
            if not self._read and self.command in ("POST", "PUT", "PATCH", "DELETE"):
                try:  # what the request sent must not be read as the next request
                    self._body()
                except ApiError:
                    pass
            self._send(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

    # --- routes ------------------------------------------------------------------------------
    def _route(self, parts: list[str], q: dict[str, str]) -> None:
        store, m = self.server.store, self.command
        if parts == ["version"]:
            return self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                                    "platform": "linux/amd64"})
        if parts == ["api"]:
            host = f"127.0.0.1:{self.server.server_port}"
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [
                                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        served = self.server.served
        groups: dict[str, list[str]] = {}
        for plural in served:
            group, version, _ = GROUPS[plural]
            groups.setdefault(f"{group}/{version}", []).append(plural)
        if parts == ["apis"]:
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv,
                                                          "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for gv in sorted(groups)]})
        if parts == ["api", "v1"]:
            return self._send(200, _resource_list())
        if parts[:1] == ["apis"] and len(parts) >= 3:
            gv = f"{parts[1]}/{parts[2]}"
            if gv not in groups:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                               "resource")
            if len(parts) == 3:
                return self._send(200, _group_resources(groups[gv], gv))
            rest = parts[3:]
            plurals = set(groups[gv])
        elif parts[:2] == ["api", "v1"]:
            rest = parts[2:]
            plurals = set(KINDS)
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rest == ["namespaces"]:
            return self._send(200, {"kind": "NamespaceList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(store.rv)},
                                    "items": [self._namespace(n) for n in
                                              self.server.namespaces]})
        if len(rest) == 2 and rest[0] == "namespaces":
            if rest[1] not in self.server.namespaces:
                raise not_found("namespaces", rest[1])
            return self._send(200, self._namespace(rest[1]))
        if len(rest) == 1 and rest[0] in plurals and m == "GET":  # across namespaces
            return self._collection(rest[0], None, q)
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in plurals:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, plural = rest[1], rest[2]
        if ns not in self.server.namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if len(rest) == 3:
            if m == "GET":
                return self._collection(plural, ns, q)
            if m == "POST":
                body = self._body() or {}
                if plural == "jobsets":
                    body = _admit_jobset(body)
                return self._send(201, store.create(plural, ns, body))
            if m == "DELETE":
                opts = self._body() or {}
                out = []
                for obj in store.list(plural, ns, q.get("labelSelector")):
                    try:
                        out.append(self._delete(plural, ns, obj["metadata"]["name"], q, opts))
                    except ApiError:
                        pass  # deleted in between
                return self._send(200, {"kind": ALL_KINDS[plural] + "List",
                                        "apiVersion": "v1", "metadata": {}, "items": out})
            raise ApiError(405, "MethodNotAllowed", f"{m} is not supported here")
        name = rest[3]
        if len(rest) == 4 or (len(rest) == 5 and rest[4] == "status" and plural in GROUPS):
            if m == "GET":
                return self._send(200, store.get(plural, ns, name))
            if m == "DELETE" and len(rest) == 4:
                return self._send(200, self._delete(plural, ns, name, q, self._body() or {}))
            if m == "PATCH":
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if kind == "application/strategic-merge-patch+json" and plural in (
                        "jobsets", "workloads"):
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was "
                                   "in an unknown format - accepted media types include: "
                                   "application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml")
                if kind not in ("application/merge-patch+json",
                                "application/strategic-merge-patch+json"):
                    raise ApiError(415, "UnsupportedMediaType", f"the fake applies merge "
                                   f"patches only, not {kind or 'no content type'}")
                return self._send(200, store.patch(plural, ns, name, self._body() or {}))
            raise ApiError(405, "MethodNotAllowed", f"{m} is not supported by the fake")
        if plural == "pods" and rest[4:] == ["log"] and m == "GET":
            return self._log(ns, name, q)
        if plural == "pods" and rest[4:] == ["exec"] and m in ("GET", "POST"):
            return self._exec(ns, name)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _namespace(name: str) -> dict[str, Any]:
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": name, "uid": name}, "status": {"phase": "Active"}}

    def _delete(self, plural: str, ns: str, name: str, q: dict[str, str],
                opts: dict[str, Any]) -> dict[str, Any]:
        grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        if plural == "pods":
            return self.server.kubelet.delete_pod(ns, name, None if grace is None
                                                  else int(grace))
        store = self.server.store
        obj = store.find(plural, ns, name)
        if obj is None:
            raise not_found(plural, name)
        if q.get("propagationPolicy", opts.get("propagationPolicy")) == "Orphan":
            uid = obj["metadata"]["uid"]
            for p in ALL_KINDS:
                for dep in store.list(p, ns):
                    refs = dep["metadata"].get("ownerReferences") or []
                    if any(r.get("uid") == uid for r in refs):
                        store.update(p, ns, dep["metadata"]["name"], lambda o: o["metadata"]
                                     .update(ownerReferences=[r for r in refs
                                                              if r.get("uid") != uid]))
        obj = store.remove(plural, ns, name)
        if obj is None:
            raise not_found(plural, name)
        return obj

    def _collection(self, plural: str, ns: str | None, q: dict[str, str]) -> None:
        store = self.server.store
        selector = q.get("labelSelector")
        if not _truthy(q.get("watch")):
            with store.lock:
                items, rv = store.list(plural, ns, selector), store.rv
            return self._send(200, {"kind": ALL_KINDS[plural] + "List", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(rv)}, "items": items})
        from .store import parse_selector

        match = parse_selector(selector)
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        self._start_stream("application/json")
        since = int(q.get("resourceVersion") or 0)
        if since == 0:  # no resource version: the current state first, as ADDED events
            with store.lock:
                items, since = store.list(plural, ns, selector), store.rv
            for obj in items:
                self._chunk(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            with store.changed:
                events = store.events_since(since, plural, ns)
                if not events:
                    store.changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    events = store.events_since(since, plural, ns)
            for rv, kind, obj in events:
                since = rv
                if match(obj["metadata"].get("labels") or {}):
                    self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        if self.server.stopping.is_set():
            self.close_connection = True
            return
        self._chunk(b"")

    def _log(self, ns: str, name: str, q: dict[str, str]) -> None:
        """pods/log: `follow`, `sinceTime`/`sinceSeconds`, `tailLines`, `timestamps`,
        `limitBytes` (the output ends once that many bytes were sent), from the kubelet's
        timestamped records."""
        from .kubelet import read_log

        kubelet = self.server.kubelet
        follow = _truthy(q.get("follow"))
        path = kubelet.log_file(ns, name, q.get("container"), follow=follow)
        since = _since(q)
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        stamps = _truthy(q.get("timestamps"))
        left = int(q["limitBytes"]) if q.get("limitBytes") else None
        self._start_stream("text/plain")
        offset, first = 0, True
        while True:
            running = kubelet.container_running(ns, name)
            records, offset = read_log(path, offset)
            records = [(ts, text) for ts, text in records if since is None or ts >= since]
            if first and tail is not None:
                records = records[-tail:] if tail else []
            first = False
            if records:
                data = b"".join((ts.encode() + b" " if stamps else b"") + text
                                for ts, text in records)
                if left is not None:
                    data = data[:left]
                    left -= len(data)
                if data:  # an empty chunk would end the response
                    self._chunk(data)
            # `running` was read before the log: once it is False, the log read after it held
            # the container's last output (the kubelet copies it all before "terminated")
            if not follow or not running or left == 0 or self.server.stopping.is_set():
                break
            time.sleep(0.05)
        self._chunk(b"")

    def _exec(self, ns: str, name: str) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        command = params.get("command") or []
        container = (params.get("container") or [None])[-1]
        key = self.headers.get("Sec-WebSocket-Key")
        if not key or (self.headers.get("Upgrade") or "").lower() != "websocket":
            raise ApiError(400, "BadRequest", "Upgrade request required")
        proto = websocket.choose_protocol(self.headers.get("Sec-WebSocket-Protocol"))
        if proto is None:
            raise ApiError(400, "BadRequest", "no supported channel protocol "
                           "(the fake speaks v4.channel.k8s.io)")
        kubelet = self.server.kubelet
        # test hooks, read once per request: what a real server answers when exec cannot be
        fail, exit_code = kubelet.fail_exec, kubelet.exec_exit
        if fail == 403:  # done (RBAC without pods/exec; the kubelet cannot be reached)
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: User "fake-user" '
                           'cannot get resource "pods/exec" in API group "" in the namespace '
                           f'"{ns}"', {"name": name, "kind": "pods"})
        if fail is not None:
            raise ApiError(fail, "InternalError", "error dialing backend: dial tcp "
                           "127.0.0.1:10250: connect: connection refused")
        kubelet.check_exec(ns, name, container)  # 404/400 before the upgrade, like the real one
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        if exit_code is not None:  # test hook: the command ran and failed
            code, out, err = exit_code, b"", b"sh: cannot create: Read-only file system\n"
        else:
            code, out, err = kubelet.exec(ns, name, command)
        if out:
            websocket.send_channel(sock, 1, out)
        if err:
            websocket.send_channel(sock, 2, err)
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {"metadata": {}, "status": "Failure",
                      "message": f"command terminated with non-zero exit code: {code}",
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        websocket.send_channel(sock, 3, json.dumps(status).encode())
        websocket.close(sock)
        self.close_connection = True


def _since(q: dict[str, str]) -> str | None:
    """`sinceTime` (RFC 3339) or `sinceSeconds` as a timestamp comparable with the records'."""
    import datetime

    if q.get("sinceTime"):
        text = q["sinceTime"].replace("Z", "+00:00")
        when = datetime.datetime.fromisoformat(text)
    elif q.get("sinceSeconds"):
        when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            seconds=int(q["sinceSeconds"]))
    else:
        return None
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, store: Store, kubelet: "Kubelet", namespaces: set[str],
                 port: int = 0, served: tuple[str, ...] = ("jobs",)) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.store, self.kubelet, self.namespaces = store, kubelet, namespaces
        self.served = served  # the API groups' resources this cluster has (store.GROUPS)
        self.stopping = threading.Event()
        self.conns: set[socket.socket] = set()  # open connections (closed by `close_all`)
        self.requests: list[str] = []

    def close_all(self) -> None:
        """Drop every open connection (kept-alive ones too): the server is gone."""
        for conn in list(self.conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
