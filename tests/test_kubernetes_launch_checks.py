"""Launch-time checks that depend on where a group runs: pods mount their own volumes, so a
machine without mount namespaces (no bubblewrap, `none` isolation) may still launch groups with
volumes on Kubernetes, but not locally."""

from __future__ import annotations

from pathlib import Path

import pytest

import jobgroup
from jobgroup.errors import UsageError

pytest.importorskip("kubernetes", reason="pip install -e '.[kubernetes]'")

SPEC = "name: vk\nvolumes: {/ckpt: vk-data}\nrun: echo hi\n"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_volumes_need_local_mounts_only_when_they_run_here(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "isolation").write_text("none\n")  # as the controller records it on such a machine
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("JOBGROUP_HOME", str(home))
    spec = tmp_path / "vk.yaml"
    spec.write_text(SPEC)
    with pytest.raises(UsageError, match="volumes"):
        jobgroup.launch(spec, home=home, notify=False)
    job = jobgroup.launch(spec, infra="kubernetes", home=home, notify=False)
    assert job.status.value == "PENDING"
