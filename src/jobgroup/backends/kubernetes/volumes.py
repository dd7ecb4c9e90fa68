"""Named volumes on Kubernetes: PersistentVolumeClaims (`jobgroup volume create|ls|rm --infra
kubernetes`). A claim created here carries `jobgroup.dev/volume=NAME` and no job labels: it
outlives the groups that mount it, like a local volume."""

from __future__ import annotations

from typing import Any

import msgspec

from jobgroup.backends.base import Unreachable
from jobgroup.backends.kubernetes import render
from jobgroup.backends.kubernetes.client import Connection, api_message, call, connect
from jobgroup.backends.kubernetes.config import KubernetesConfig
from jobgroup.errors import JobGroupError, NotFound, UsageError


class ClusterError(JobGroupError):
    """The cluster did not answer or refused (exit 1); the message says which and why."""

    exit_code = 1


class ClaimInfo(msgspec.Struct, kw_only=True):
    name: str
    namespace: str
    size: str
    status: str
    storage_class: str | None
    used_by: list[str]  # pods (not ended) that mount it


def _connect(config: KubernetesConfig) -> Connection:
    try:
        return connect(config)
    except Unreachable as e:
        raise ClusterError(f"cannot reach Kubernetes: {e}") from None


def _call(conn: Connection, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """One API call; no answer -> ClusterError. Other API errors propagate (callers that
    expect a status, e.g. 404 or 409, look at it); `_checked` turns them into ClusterError."""
    try:
        return call(conn, what, fn, *args, **kwargs)
    except Unreachable as e:
        raise ClusterError(f"cannot reach Kubernetes: {e}") from None


def _checked(conn: Connection, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """`_call`, with any refusal (401/403 on real clusters, 404 for a namespace that does not
    exist, ...) as a ClusterError that says what was refused and why: never a traceback."""
    try:
        return _call(conn, what, fn, *args, **kwargs)
    except JobGroupError:
        raise
    except Exception as e:
        raise ClusterError(f"Kubernetes refused {what}: {api_message(e)}") from None


def create(name: str, size: str | None, config: KubernetesConfig) -> dict[str, Any]:
    """Create the claim `name` (`size`, else the config's volume_size); UsageError for a name
    that cannot name a claim, ClusterError when it exists or the cluster refuses."""
    obj = render.pvc_object(name, size, config)
    conn = _connect(config)
    try:
        _call(conn, f"creating PersistentVolumeClaim {name}",
              conn.core.create_namespaced_persistent_volume_claim, config.namespace, obj)
    except ClusterError:
        raise
    except Exception as e:
        if getattr(e, "status", None) == 409:
            raise ClusterError(f"volume {name!r} already exists in namespace "
                               f"{config.namespace}") from None
        raise ClusterError(f"Kubernetes refused volume {name!r}: {api_message(e)}") from None
    return obj


def _users(conn: Connection, config: KubernetesConfig) -> dict[str, list[str]]:
    """Claim name -> pods that mount it and have not ended."""
    pods = _checked(conn, f"listing pods in namespace {config.namespace}",
                    conn.core.list_namespaced_pod, config.namespace).items
    out: dict[str, list[str]] = {}
    for pod in pods:
        if (pod.status and pod.status.phase) in ("Succeeded", "Failed"):
            continue
        for v in pod.spec.volumes or []:
            if v.persistent_volume_claim is not None:
                out.setdefault(v.persistent_volume_claim.claim_name, []).append(
                    pod.metadata.name)
    return out


def list_claims(config: KubernetesConfig) -> list[ClaimInfo]:
    """The claims jobgroup created in the namespace (`volume create` or first use)."""
    conn = _connect(config)
    claims = _checked(conn, f"listing PersistentVolumeClaims in namespace {config.namespace}",
                      conn.core.list_namespaced_persistent_volume_claim, config.namespace,
                      label_selector=f"{render.LABEL}/volume").items
    users = _users(conn, config)
    out = []
    for c in sorted(claims, key=lambda c: c.metadata.name):
        req = (c.spec.resources.requests or {}) if c.spec.resources else {}
        out.append(ClaimInfo(
            name=c.metadata.name, namespace=config.namespace, size=str(req.get("storage", "?")),
            status=(c.status.phase if c.status else None) or "?",
            storage_class=c.spec.storage_class_name,
            used_by=sorted(users.get(c.metadata.name, []))))
    return out


def remove(name: str, config: KubernetesConfig) -> None:
    """Delete claim `name` (its data goes with it, per the storage class's reclaim policy);
    refused (UsageError) for a claim jobgroup did not create (no `jobgroup.dev/volume` label:
    someone else's data) and while a pod that has not ended mounts it."""
    conn = _connect(config)
    try:
        claim = _call(conn, f"reading PersistentVolumeClaim {name}",
                      conn.core.read_namespaced_persistent_volume_claim, name, config.namespace)
    except ClusterError:
        raise
    except Exception as e:
        if getattr(e, "status", None) == 404:
            raise NotFound(f"no volume {name!r} in namespace {config.namespace}") from None
        raise ClusterError(f"Kubernetes refused reading volume {name!r}: "
                           f"{api_message(e)}") from None
    claim_labels = (claim.metadata.labels if claim.metadata else None) or {}
    if claim_labels.get(f"{render.LABEL}/volume") != name:
        raise UsageError(f"PersistentVolumeClaim {name!r} in namespace {config.namespace} was "
                         f"not created by jobgroup (no {render.LABEL}/volume={name} label), so "
                         "jobgroup does not delete it; use kubectl if you mean to")
    users = _users(conn, config).get(name, [])
    if users:
        raise UsageError(f"volume {name!r} is in use by pod(s) {', '.join(users)}; cancel "
                         "their groups or wait for them to end first")
    try:
        _call(conn, f"deleting PersistentVolumeClaim {name}",
              conn.core.delete_namespaced_persistent_volume_claim, name, config.namespace)
    except ClusterError:
        raise
    except Exception as e:
        if getattr(e, "status", None) == 404:
            raise NotFound(f"no volume {name!r} in namespace {config.namespace}") from None
        raise ClusterError(f"Kubernetes refused to delete volume {name!r}: "
                           f"{api_message(e)}") from None
