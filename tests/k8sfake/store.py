"""The fake API server's objects: namespaced objects kept as JSON dicts (core/v1, batch/v1 Jobs,
JobSets, Kueue Workloads), a resource version counter, label selectors, a change log that
watches replay (like etcd's), JSON merge patches, and the garbage collector's rule (an object
whose owners are all gone goes too)."""

from __future__ import annotations

import base64
import copy
import datetime
import re
import threading
import uuid
from typing import Any, Callable

Obj = dict[str, Any]

KINDS = {  # plural -> kind (the core/v1 resources the fake serves)
    "pods": "Pod",
    "services": "Service",
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "events": "Event",
}
# The resources of API groups (served under /apis/GROUP/VERSION): plural -> (group, version,
# kind). JobSets and Workloads only where the cluster is made with them (`FakeCluster`).
GROUPS = {
    "jobs": ("batch", "v1", "Job"),
    "jobsets": ("jobset.x-k8s.io", "v1alpha2", "JobSet"),
    "workloads": ("kueue.x-k8s.io", "v1beta2", "Workload"),
}
ALL_KINDS = {**KINDS, **{p: k for p, (_, _, k) in GROUPS.items()}}


def api_version(plural: str) -> str:
    if plural in GROUPS:
        group, version, _ = GROUPS[plural]
        return f"{group}/{version}"
    return "v1"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """Answered as a `Status` object with `code`, like the real server."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{plural} "{name}" not found',
                    {"name": name, "kind": plural})


_REQ = re.compile(r"^\s*(!)?\s*([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|"
                  r"\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def parse_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A label selector (`a=b,c!=d,e,!f,g in (x,y)`) as a predicate over labels."""
    if not text:
        return lambda labels: True
    parts, depth, cur = [], 0, ""
    for ch in text:  # split on commas outside parentheses
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    tests = []
    for part in parts:
        m = _REQ.match(part)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        neg, key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif op == "!=":
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif setop:
            vals = {v.strip() for v in values.split(",")}
            if setop == "in":
                tests.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif neg:
            tests.append(lambda lb, k=key: k not in lb)
        else:
            tests.append(lambda lb, k=key: k in lb)
    return lambda labels: all(t(labels) for t in tests)


class Store:
    """Every object, keyed by (plural, namespace, name). All methods are thread-safe; `changed`
    is notified after every write (watches and the fake kubelet wait on it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.log: list[tuple[int, str, str, str, Obj]] = []  # rv, plural, ns, type, object
        self.rv = 0
        self.on_create: list[Callable[[str, Obj], None]] = []

    def _bump(self, plural: str, ns: str, kind: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, plural, ns, kind, copy.deepcopy(obj)))
        if len(self.log) > 20000:
            del self.log[:10000]
        self.changed.notify_all()

    def create(self, plural: str, ns: str, body: Obj) -> Obj:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiError(422, "Invalid", f"{ALL_KINDS[plural]} \"\" is invalid: metadata.name: "
                           "Required value: name or generateName is required")
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", api_version(plural))
        obj.setdefault("kind", ALL_KINDS[plural])
        obj["metadata"] = {**meta, "name": name, "namespace": ns, "uid": str(uuid.uuid4()),
                           "creationTimestamp": now()}
        if plural == "secrets":  # stringData is write-only: merged into data (base64)
            data = dict(obj.get("data") or {})
            for k, v in (obj.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
        if plural == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        if plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound", "accessModes": obj["spec"].get("accessModes"),
                             "capacity": obj["spec"].get("resources", {}).get("requests", {})}
        with self.lock:
            key = (plural, ns, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists',
                               {"name": name, "kind": plural})
            self.objects[key] = obj
            self._bump(plural, ns, "ADDED", obj)
            out = copy.deepcopy(obj)
        for hook in self.on_create:
            hook(plural, out)
        return out

    def get(self, plural: str, ns: str, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                raise not_found(plural, name)
            return copy.deepcopy(obj)

    def find(self, plural: str, ns: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, plural: str, ns: str | None, selector: str | None = None) -> list[Obj]:
        match = parse_selector(selector)
        with self.lock:
            return [copy.deepcopy(o) for (p, n, _), o in sorted(self.objects.items())
                    if p == plural and (ns is None or n == ns)
                    and match(o["metadata"].get("labels") or {})]

    def update(self, plural: str, ns: str, name: str, change: Callable[[Obj], None]) -> Obj | None:
        """Apply `change` to the stored object (None when it is gone) and publish MODIFIED."""
        with self.lock:
            obj = self.objects.get((plural, ns, name))
            if obj is None:
                return None
            change(obj)
            self._bump(plural, ns, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def patch(self, plural: str, ns: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch of the object (metadata.name/namespace/uid stay); 404 if none."""
        def change(obj: Obj) -> None:
            keep = {k: obj["metadata"][k] for k in ("name", "namespace", "uid",
                                                     "creationTimestamp")}
            merged = merge_patch(obj, patch)
            merged["metadata"].update(keep)
            obj.clear()
            obj.update(merged)
        out = self.update(plural, ns, name, change)
        if out is None:
            raise not_found(plural, name)
        return out

    def uids(self) -> set[str]:
        with self.lock:
            return {o["metadata"]["uid"] for o in self.objects.values()}

    def orphans(self) -> list[tuple[str, str, str]]:
        """(plural, namespace, name) of the objects whose owners (ownerReferences) are all
        gone: what the garbage collector deletes (background propagation)."""
        with self.lock:
            uids = {o["metadata"]["uid"] for o in self.objects.values()}
            return [(p, n, name) for (p, n, name), o in self.objects.items()
                    if (refs := o["metadata"].get("ownerReferences"))
                    and not any(r.get("uid") in uids for r in refs)]

    def remove(self, plural: str, ns: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.pop((plural, ns, name), None)
            if obj is not None:
                self._bump(plural, ns, "DELETED", obj)
            return obj

    def events_since(self, rv: int, plural: str, ns: str | None) -> list[tuple[int, str, Obj]]:
        with self.lock:
            return [(r, t, o) for r, p, n, t, o in self.log
                    if r > rv and p == plural and (ns is None or n == ns)]
