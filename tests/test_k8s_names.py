"""Task and group names with '_' or upper case on Kubernetes (issue 14 item 6): a documented,
deterministic DNS-safe form for every object and host (`backends/kubernetes/names.py`), the
SKYPILOT_* variables pointing at names that resolve, and `{task}-{rank}.{group}` as written
resolving in the pods (their /etc/hosts) — rendered objects checked against Kubernetes' schemas,
then a real group run through the CLI against the fake API server and kubelet of tests/k8sfake."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from jobgroup.backends.kubernetes import KubernetesConfig, RenderError, render_objects
from jobgroup.backends.kubernetes.names import dns_name
from jobgroup.spec import load

DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def h6(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:6]


def spec(text: str):
    return load(textwrap.dedent(text))


# --- the DNS-safe form ----------------------------------------------------------------------

@pytest.mark.parametrize("name, safe", [
    ("trainer", "trainer"),  # already a label: unchanged (every existing example)
    ("rollout-server-2", "rollout-server-2"),
    ("my_task", f"my-task-{h6('my_task')}"),
    ("RL_Group", f"rl-group-{h6('RL_Group')}"),
    ("Trainer", f"trainer-{h6('Trainer')}"),
    ("_x_", f"x-{h6('_x_')}"),
    ("___", f"n-{h6('___')}"),
    ("A" * 63, f"{'a' * 49}-{h6('A' * 63)}"),
])
def test_dns_name_is_documented_deterministic_and_a_label(name: str, safe: str) -> None:
    assert dns_name(name) == safe
    assert DNS_1123.fullmatch(safe) and len(safe) <= 56 or safe == name
    assert dns_name(safe) == safe  # idempotent: a label read back from the cluster stays


def test_names_that_would_meet_stay_apart() -> None:
    forms = {dns_name(n) for n in ("my_task", "my-task", "My-Task", "MY_TASK", "my__task")}
    assert len(forms) == 5


def _group():
    return spec("""\
        name: RL_Group
        execution: parallel
        ---
        name: my_server
        num_nodes: 2
        resources: {ports: 8080}
        secrets: {TOKEN: s3cret}
        setup: echo setup
        run: python3 -m http.server 8080
        ---
        name: Client
        run: echo "$SKYPILOT_JOBGROUP_HOST_MY_SERVER"
        """)


def test_objects_and_hosts_carry_the_safe_form_and_validate() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
    objs = render_objects(_group(), 4, KubernetesConfig(namespace="ml"), workload="pods")
    for obj in objs:
        kv.validate(obj, "1.33", strict=True)
    g, s, c = dns_name("RL_Group"), dns_name("my_server"), dns_name("Client")
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    assert [o["metadata"]["name"] for o in by_kind["Service"]] == [g]
    assert [o["metadata"]["name"] for o in by_kind["Secret"]] == [f"{g}-secrets"]
    pods = by_kind["Pod"]
    assert [p["metadata"]["name"] for p in pods] == [f"{g}-{s}-0", f"{g}-{s}-1", f"{g}-{c}-0"]
    assert [p["spec"]["hostname"] for p in pods] == [f"{s}-0", f"{s}-1", f"{c}-0"]
    assert {p["spec"]["subdomain"] for p in pods} == {g}
    assert pods[2]["metadata"]["labels"]["jobgroup.dev/group"] == g
    assert pods[2]["metadata"]["labels"]["jobgroup.dev/task"] == c
    env = {e["name"]: e.get("value") for e in pods[2]["spec"]["containers"][0]["env"]}
    fq = f"{g}.ml.svc.cluster.local"
    assert env["SKYPILOT_JOBGROUP_HOST_MY_SERVER"] == f"{s}-0.{fq}"
    assert env["SKYPILOT_JOBGROUP_HOST_CLIENT"] == f"{c}-0.{fq}"
    assert env["SKYPILOT_JOBGROUP_NAME"] == "RL_Group"  # as written
    assert env["JOBGROUP_HOSTNAME"] == f"{c}-0" and env["JOBGROUP_FQDN"] == f"{c}-0.{g}"
    server_env = {e["name"]: e for e in pods[1]["spec"]["containers"][0]["env"]}
    assert server_env["SKYPILOT_NODE_IPS"]["value"] == f"{s}-0.{fq}\n{s}-1.{fq}"
    assert server_env["TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{g}-secrets", "key": "my_server.TOKEN"}
    (cm,) = [o for o in by_kind["ConfigMap"] if o["metadata"]["name"] == f"{g}-job"]
    assert cm["data"]["hostaliases"].splitlines() == [
        f"{s}-0.{fq} my_server-0.RL_Group my_server-0",
        f"{s}-1.{fq} my_server-1.RL_Group my_server-1",
        f"{c}-0.{fq} Client-0.RL_Group Client-0"]
    run = cm["data"]["my_server.run.sh"]
    assert run.index("hostaliases.sh once") < run.index("python3 -m http.server 8080")
    assert "hostaliases" not in cm["data"]["my_server.setup.sh"]  # peers are waited for later


def test_safe_names_change_nothing_for_groups_that_had_them() -> None:
    objs = render_objects(spec("name: web\nrun: 'true'\n"), 1, workload="pods")
    (cm,) = [o for o in objs if o["metadata"]["name"] == "web-job"]
    assert "hostaliases" not in cm["data"] and "hostaliases" not in cm["data"]["web.run.sh"]


@pytest.mark.parametrize("text, message", [
    ("name: tâche\nrun: 'true'\n", "characters other than letters a-z/A-Z"),
    ("name: g\nexecution: parallel\n---\nname: a\nrun: 'true'\n".replace("name: g", "name: 1_run"),
     f"group name '1_run' (as '{dns_name('1_run')}') does not start with a letter"),
])
def test_what_has_no_safe_form_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(RenderError) as e:
        render_objects(spec(text), 1)
    assert message in str(e.value)


# --- a real run against the fake cluster ----------------------------------------------------

needs_fake = pytest.mark.skipif(
    not Path("/usr/bin/bwrap").exists() or os.geteuid() != 0 or shutil.which("kubectl") is None,
    reason="the fake kubelet runs pods under bubblewrap, as root; logs go through kubectl")

PORT = 18491

GROUP = f"""\
name: RL_Group
execution: parallel
primary_tasks: [Client]
---
name: my_server
resources: {{cpus: 0.5, ports: {PORT}}}
run: exec python3 -m http.server {PORT}
---
name: Client
resources: {{cpus: 0.5}}
run: |
  echo "hostname $(hostname)"
  echo "env $SKYPILOT_JOBGROUP_HOST_MY_SERVER"
  python3 - <<'PY'
  import os, socket, time, urllib.request
  for name in ("my_server-0." + os.environ["SKYPILOT_JOBGROUP_NAME"], "my_server-0",
               os.environ["SKYPILOT_JOBGROUP_HOST_MY_SERVER"]):
      for _ in range(150):
          try:
              print("resolved", name, socket.gethostbyname(name))
              code = urllib.request.urlopen(f"http://{{name}}:{PORT}/", timeout=2).status
              print("answered", name, code)
              break
          except OSError:
              time.sleep(0.1)
  PY
"""


@needs_fake
def test_names_as_written_resolve_in_the_pods(jenv, tmp_path: Path) -> None:
    pytest.importorskip("kubernetes", reason="pip install -e '.[kubernetes]'")
    from conftest import wait_for
    import test_kubernetes_live  # noqa: F401  (its skips apply)
    from k8senv import running

    with running(jenv, tmp_path, capacity={"cpu": 4, "memory": "8Gi", "pods": 20}) as k8s:
        p = k8s.launch(GROUP, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        logs = jenv.jg("logs", "1", "Client", check=True).stdout
        s, g = dns_name("my_server"), dns_name("RL_Group")
        assert f"hostname {dns_name('Client')}-0" in logs
        assert f"env {s}-0.{g}.default.svc.cluster.local" in logs
        for name in ("my_server-0.RL_Group", "my_server-0", f"{s}-0.{g}.default.svc.cluster.local"):
            assert f"answered {name} 200" in logs, logs
        wait_for(lambda: not k8s.kinds(), timeout=20)  # every object of it deleted
