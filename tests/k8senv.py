"""The Kubernetes tests' harness around the fake cluster of `tests/k8sfake`: jobgroup's CLI on
the test's state directory (`conftest.Env`) pointed at one or more fake clusters, and the check
that nothing started for them outlives the test (log followers, kubectl).

    with k8senv.running(jenv, tmp_path, jobset=True) as k8s:   # KUBECONFIG -> the cluster
        job = k8s.launch_d(TEXT)
    other = k8s.extra_cluster(tmp_path / "b")   # a second cluster, stopped with the first

What the fake models is said in `tests/k8sfake` (WRITTEN BY US: no real API server runs here).
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from conftest import _TERMINAL, Env, _zombie, wait_for
from k8sfake import FakeCluster


def kube_processes(kubeconfig: Path) -> list[int]:
    """Live pids of processes started with this KUBECONFIG (log followers, kubectl)."""
    marker = f"KUBECONFIG={kubeconfig}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            continue
    return [p for p in out if not _zombie(p)]


def end_followers(kubeconfigs: list[Path]) -> None:
    """Wait for the processes of these kubeconfigs to end (log followers end with their
    streams), kill what is left by pid, and fail naming it."""
    def left() -> list[int]:
        return [p for k in kubeconfigs for p in kube_processes(k)]

    try:
        wait_for(lambda: not left(), timeout=10)
    except AssertionError:
        pass
    stuck = left()
    for pid in stuck:
        os.kill(pid, signal.SIGKILL)
    assert not stuck, f"processes left behind: {stuck}"


class K8s:
    """jobgroup's CLI (`jenv`) with KUBECONFIG pointing at `cluster`."""

    def __init__(self, jenv: Env, cluster: FakeCluster, kubeconfig: Path) -> None:
        self.jenv, self.cluster, self.kubeconfig = jenv, cluster, kubeconfig
        self.extra: list[tuple[FakeCluster, Path]] = []  # more clusters, see `extra_cluster`

    def config(self, **settings: object) -> None:
        """Write $JOBGROUP_HOME/kubernetes.yaml: short timeouts, the fake's image, `settings`."""
        base = {"schedule_timeout": 20, "dns_wait_timeout": 20, "image": "fake:latest",
                **settings}
        self.jenv.home.mkdir(parents=True, exist_ok=True)
        (self.jenv.home / "kubernetes.yaml").write_text(json.dumps(base))

    def launch(self, text: str, *extra: str, timeout: float = 60,
               infra: str | None = "kubernetes"):
        """`jobgroup launch` of `text` with `--infra infra` (None: the file's own infra)."""
        path = self.jenv.spec(text)
        flags = ["--infra", infra] if infra is not None else []
        return self.jenv.jg("launch", str(path), *flags, *extra, timeout=timeout)

    def launch_d(self, text: str, *extra: str, infra: str | None = "kubernetes") -> int:
        p = self.launch(text, "-d", *extra, infra=infra)
        assert p.returncode == 0, p.stdout + p.stderr
        return int(p.stdout.split()[1])

    def kinds(self, ns: str = "default", cluster: FakeCluster | None = None
              ) -> dict[str, list[str]]:
        """Names of the objects of each kind left in namespace `ns` of `cluster` (this one)."""
        c = cluster or self.cluster
        return {p: c.names(p, ns) for p in
                ("pods", "services", "configmaps", "secrets", "persistentvolumeclaims")
                if c.names(p, ns)}

    def extra_cluster(self, root: Path, context: str = "other", **kwargs: Any
                      ) -> tuple[FakeCluster, Path]:
        """Another fake cluster (same options as `running` takes) and its own kubeconfig
        (context `context`), stopped and checked with this one at the end."""
        root.mkdir(parents=True, exist_ok=True)
        cluster = FakeCluster(root, **kwargs)
        kubeconfig = cluster.write_kubeconfig(root / "kubeconfig", context=context)
        self.extra.append((cluster, kubeconfig))
        return cluster, kubeconfig


DEFAULT_CAPACITY = {"cpu": 8, "memory": "16Gi", "pods": 50}


@contextmanager
def running(jenv: Env, tmp_path: Path, **cluster: Any) -> Iterator[K8s]:
    """A fake cluster (`FakeCluster(tmp_path, **cluster)`; capacity 8 CPUs, 16Gi, 50 pods and
    probes 10x faster unless given), KUBECONFIG pointing at it, kubernetes.yaml written
    (`K8s.config`). At the end: every active job cancelled, the controller stopped, the
    clusters stopped, and no process of theirs left (a failure naming them)."""
    cluster.setdefault("capacity", DEFAULT_CAPACITY)
    cluster.setdefault("probe_scale", 0.1)
    fake = FakeCluster(tmp_path, **cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    jenv.env["KUBECONFIG"] = str(kubeconfig)
    jenv.env["KUBECACHEDIR"] = str(tmp_path / "kube-cache")  # kubectl's discovery cache
    k = K8s(jenv, fake, kubeconfig)
    k.config()
    try:
        yield k
    finally:
        def active() -> bool:  # (`queue` lists recently ended jobs too)
            jobs = json.loads(jenv.jg("queue", "--json").stdout or "[]")
            return any(j.get("status") not in _TERMINAL for j in jobs)

        if (jenv.home / "state.db").exists() and active():
            jenv.jg("cancel", "--all", timeout=30)
            try:
                wait_for(lambda: not active(), timeout=30)
            except AssertionError:
                pass
        jenv.stop_controller()
        for c, _ in [(fake, kubeconfig), *k.extra]:
            c.stop()
        end_followers([kubeconfig, *(kc for _, kc in k.extra)])
