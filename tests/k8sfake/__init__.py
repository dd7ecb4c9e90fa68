"""A fake Kubernetes cluster for tests, WRITTEN BY US (stdlib only, and jsonschema to admit
JobSets): no real API server, kubelet, scheduler or controller can run on the build machines, so
the kubernetes backend is exercised against this instead. What it speaks and emulates is listed
in `server.py` (the REST API), `kubelet.py` (scheduling, pods run as local processes under
bubblewrap, DNS by hosts files) and `controllers.py` (Jobs, JobSets, Kueue, the garbage
collector: only as far as jobgroup relies on them).

    with FakeCluster(tmp_path, capacity={"cpu": 8, "nvidia.com/gpu": 0}) as k8s:
        k8s.write_kubeconfig(tmp_path / "kubeconfig")   # then KUBECONFIG=... for the client
        ...
        k8s.pods("default")           # the pods, as the API server returns them
        k8s.kubelet.oom_kill("default", "g-a-0")
        k8s.go_down(); k8s.come_back()   # the API server stops answering / answers again
        k8s.fail_exec = 403              # pods/exec refused (403: RBAC; 500: kubelet unreachable)
        k8s.exec_exit = 1                # commands run through pods/exec exit 1; None: normal

    FakeCluster(tmp_path, jobset=True)  # serves jobset.x-k8s.io/v1alpha2 (else: not installed)
    FakeCluster(tmp_path, jobset=True, kueue={"team-a": {"cpu": 4}})  # + Kueue, queue quotas

Everything it starts (pod processes) is stopped by pid in `stop`, and its folder removed.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from .controllers import Controllers
from .kubelet import Kubelet
from .server import ApiServer
from .store import Store

__all__ = ["FakeCluster"]


class FakeCluster:
    def __init__(self, root: Path | None = None, *, capacity: dict[str, Any] | None = None,
                 labels: dict[str, str] | None = None, namespaces: tuple[str, ...] = ("default",),
                 probe_scale: float = 1.0, jobset: bool = False,
                 kueue: dict[str, dict[str, Any]] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="k8sfake-", dir=root))
        self.store = Store()
        self.namespaces = set(namespaces)
        self.served = ("jobs",) + (("jobsets",) if jobset else ()) + \
            (("workloads",) if kueue is not None else ())
        self.kubelet = Kubelet(self.store, self.root, capacity=capacity, labels=labels,
                               probe_scale=probe_scale)
        self.controllers = Controllers(self.store, self.kubelet, kueue=kueue)
        self.server: ApiServer | None = None
        self.port = 0
        self._serve()

    def _serve(self) -> None:
        server = ApiServer(self.store, self.kubelet, self.namespaces, port=self.port,
                           served=self.served)
        self.port = server.server_port
        self.kubelet.api_port = self.port
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True, name="k8sfake-apiserver").start()

    @property
    def fail_exec(self) -> int | None:
        return self.kubelet.fail_exec

    @fail_exec.setter
    def fail_exec(self, code: int | None) -> None:
        self.kubelet.fail_exec = code

    @property
    def exec_exit(self) -> int | None:
        return self.kubelet.exec_exit

    @exec_exit.setter
    def exec_exit(self, code: int | None) -> None:
        self.kubelet.exec_exit = code

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, context: str = "fake",
                         namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this cluster (plain HTTP, a bearer token)."""
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: {context}\n  cluster:\n    server: {self.url}\n"
            f"users:\n- name: {context}\n  user:\n    token: fake-token\n"
            f"contexts:\n- name: {context}\n  context:\n    cluster: {context}\n"
            f"    user: {context}\n    namespace: {namespace}\n"
            f"current-context: {context}\n")
        return path

    def go_down(self) -> None:
        """The API server stops: connections are refused until `come_back`."""
        if self.server is not None:
            self.server.stopping.set()
            self.server.shutdown()
            self.server.server_close()
            self.server.close_all()
            self.server = None

    def come_back(self) -> None:
        if self.server is None:
            self._serve()

    def objects(self, plural: str, ns: str = "default",
                selector: str | None = None) -> list[dict[str, Any]]:
        return self.store.list(plural, ns, selector)

    def pods(self, ns: str = "default", selector: str | None = None) -> list[dict[str, Any]]:
        return self.objects("pods", ns, selector)

    def names(self, plural: str, ns: str = "default") -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.objects(plural, ns))

    def volume_dir(self, claim: str, ns: str = "default") -> Path:
        """Where the fake keeps the data of PersistentVolumeClaim `claim` (shared by its pods)."""
        path = self.root / "pvc" / ns / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stop(self) -> None:
        self.go_down()
        self.controllers.stop()
        self.kubelet.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "FakeCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
