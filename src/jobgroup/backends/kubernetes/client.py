"""Connecting to the cluster with the official `kubernetes` client, the way kubectl does:
the kubeconfig of the launch's KUBECONFIG (`config.kubeconfig`; else this process's $KUBECONFIG,
else ~/.kube/config), the launch's context (`infra: kubernetes/CONTEXT`, else `context:` of
kubernetes.yaml, else the kubeconfig's current context), or the pod's service account when
running inside a cluster. Also what an API error means (no answer vs a refusal) and says, in
one line."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from jobgroup.backends.base import Unreachable
from jobgroup.backends.kubernetes.config import KubernetesConfig, kubeconfig_path  # noqa: F401

TIMEOUT = 15.0  # seconds any single API call may take


class Connection(NamedTuple):
    core: Any  # CoreV1Api
    custom: Any  # CustomObjectsApi
    host: str  # the API server's URL


def connect(config: KubernetesConfig) -> Connection:
    """Clients for the configured cluster; Unreachable (with the reason) when there is no client
    library or no usable kubeconfig. Contacts nothing yet."""
    try:
        from kubernetes import client, config as kc  # heavy: imported only here
    except ImportError:
        raise Unreachable("the kubernetes client is not installed here: "
                          "pip install 'jobgroup[kubernetes]'") from None
    cfg = client.Configuration()
    try:
        try:
            kc.load_kube_config(config_file=kubeconfig_path(config.kubeconfig),
                                context=config.context,
                                client_configuration=cfg)
        except kc.ConfigException as e:
            if config.context:
                raise
            try:
                kc.load_incluster_config(client_configuration=cfg)
            except kc.ConfigException:
                raise e from None
    except (kc.ConfigException, OSError, ValueError) as e:
        raise Unreachable(f"no usable kubeconfig: {e}") from None
    api = client.ApiClient(cfg)
    return Connection(client.CoreV1Api(api), client.CustomObjectsApi(api), cfg.host)


def unreachable(e: BaseException) -> bool:
    """Whether `e` means the API server did not answer (as opposed to refusing a request): no
    answer, a 5xx, or 429 Too Many Requests (API priority and fairness, an overloaded server:
    ask again later, as the client libraries do)."""
    code = getattr(e, "status", None)
    if isinstance(code, int):
        return code == 0 or code == 429 or code >= 500
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"OSError", "MaxRetryError", "ProtocolError", "TimeoutError",
                         "NewConnectionError", "HTTPError", "WebSocketException"})


def retry_after(e: BaseException) -> str | None:
    """The Retry-After header of the answer `e` came with (seconds, or an HTTP date), if any."""
    headers = getattr(e, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
    except AttributeError:
        return None
    if value is None:
        return None
    return str(value).strip() or None


def describe(e: BaseException) -> str:
    """A one-line reason for an API error (no traceback, no urllib3 object reprs)."""
    reason = getattr(e, "reason", None)
    text = str(reason if reason is not None and not isinstance(reason, str) else e)
    for pattern in (r"Connection refused", r"timed out", r"Name or service not known",
                    r"Connection reset by peer", r"Remote end closed connection"):
        if re.search(pattern, text):
            return pattern.lower()
    code = getattr(e, "status", None)
    if code:
        return f"HTTP {code} {getattr(e, 'reason', '')}".strip()
    if code == 0 and isinstance(reason, str) and reason:
        return reason.splitlines()[0][:200]
    return text.splitlines()[0][:200] if text else type(e).__name__


def api_message(e: BaseException) -> str:
    """The `message` of the Status object the API server answered with, else `describe`."""
    body = getattr(e, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)[:300]
    return describe(e)


def call(conn: Connection, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """One API call with a time-out; a server that does not answer -> Unreachable naming it
    and `what` was being done."""
    try:
        return fn(*args, _request_timeout=TIMEOUT, **kwargs)
    except Exception as e:
        if getattr(e, "status", None) == 429:
            after = retry_after(e)
            raise Unreachable(f"the API server at {conn.host} is too busy for {what} "
                              f"({describe(e)}"
                              + (f"; it asks to retry after {after}"
                                 + ("s" if after.isdigit() else "") if after else "")
                              + ")") from None
        if unreachable(e):
            raise Unreachable(f"the API server at {conn.host} did not answer {what} "
                              f"({describe(e)})") from None
        raise
