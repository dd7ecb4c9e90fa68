"""`--infra kubernetes` with a JobSet per group, end to end through the real controller and CLI,
against the fake API server + kubelet + Job/JobSet/Kueue controllers of `tests/k8sfake`
(WRITTEN BY US, see tests/k8sfake/controllers.py for exactly what they model; pods run as local
processes under bubblewrap, cluster DNS is emulated by hosts files). The cluster owns the group:
it ends it by the group's rules with the controller gone; the controller watches, keeps logs
and re-attaches by labels."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import Env, _zombie, wait_for

pytest.importorskip("kubernetes", reason="pip install -e '.[kubernetes]' (the test extra has it)")
from test_kubernetes_live import FAIL_FAST  # noqa: E402  (its skips apply too)
from k8senv import K8s, running  # noqa: E402


PORT = 18474


@pytest.fixture
def k8s(jenv: Env, tmp_path: Path):
    # no `workload:` in kubernetes.yaml: the backend finds the cluster serves JobSet
    with running(jenv, tmp_path, jobset=True, kueue={"team-a": {"cpu": 1}}) as k:
        yield k


def _jobset(k8s: K8s, name: str) -> dict | None:
    return k8s.cluster.store.find("jobsets", "default", name)


def _terminal(k8s: K8s, name: str) -> str | None:
    return ((_jobset(k8s, name) or {}).get("status") or {}).get("terminalState")


def _status(k8s: K8s, job_id: int) -> str:
    return k8s.jenv.job(job_id)["status"]


WEB = f"""\
name: web
execution: parallel
primary_tasks: [client]
termination_delay: 1s
---
name: server
resources: {{cpus: 0.5, ports: {PORT}}}
setup: echo server setup on $(hostname)
run: |
  trap 'echo server got SIGTERM; exit 0' TERM
  python3 -m http.server {PORT} & wait
---
name: client
num_nodes: 2
resources: {{cpus: 0.5}}
run: |
  echo "client $SKYPILOT_NODE_RANK on $(hostname) of $SKYPILOT_NUM_NODES: $SKYPILOT_NODE_IPS" | tr '\\n' ' '; echo
  echo "task id $SKYPILOT_TASK_ID"
  getent hosts server-0.web | awk '{{print "server-0.web is", $1}}'
  python3 - <<'PY'
  import time, urllib.request
  for _ in range(100):
      try:
          print("server answered", urllib.request.urlopen("http://server-0.web:{PORT}/", timeout=2).status)
          break
      except OSError:
          time.sleep(0.1)
  PY
"""


def test_a_group_runs_as_a_jobset_and_succeeds(k8s: K8s) -> None:
    """One JobSet (discovered: no `workload:` set), the names as written resolve, ranks and
    IPs in the variables, the auxiliary server stopped by the cluster after its delay once the
    primary clients succeeded; logs kept; the JobSet and what it owns deleted at the end."""
    p = k8s.launch(WEB, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    job = k8s.jenv.job(1)
    assert job["status"] == "SUCCEEDED", job
    logs = k8s.jenv.jg("logs", "1", check=True).stdout
    for rank in (0, 1):
        assert f"client {rank} on web-client-0-{rank} of 2: 127.0." in logs, logs
    assert logs.count("server answered 200") == 2
    assert "server-0.web is 127.0." in logs
    assert "server setup on web-server-0-0" in logs
    assert "server got SIGTERM" in logs  # stopped, after its termination_delay
    # SKYPILOT_TASK_ID with the job's submission time (JobContext.submitted_at)
    assert "task id sky-managed-20" in logs and "1970-01-01" not in logs, logs
    events = k8s.jenv.jg("events", "1").stdout
    assert "server" in events
    wait_for(lambda: not k8s.kinds() and not k8s.cluster.names("jobsets")
             and not k8s.cluster.names("jobs"), timeout=30)


RL = """\
name: rl
execution: parallel
primary_tasks: [trainer]
termination_delay: 2s
---
name: buffer
volumes: {/flags: rl-flags}
run: |
  trap 'echo buffer stopped; exit 0' TERM
  echo buffer up; sleep 300 & wait
---
name: trainer
volumes: {/flags: rl-flags}
depends_on: {buffer: started}
run: |
  echo trainer waiting for the flag
  until [ -e /flags/go ]; do sleep 0.1; done
  echo trainer done
"""


def test_the_cluster_ends_the_group_with_the_controller_gone(k8s: K8s) -> None:
    """The controller is SIGKILLed while the group runs; the primary finishes meanwhile: the
    cluster completes the JobSet by itself (success policy on the primary, the auxiliary
    stopped after its termination_delay). A new controller re-attaches by labels and records
    SUCCEEDED."""
    k8s.config(ttl_after_finished=300)
    job = k8s.launch_d(RL)
    wait_for(lambda: "trainer waiting for the flag" in k8s.jenv.log(job, "trainer"),
             timeout=60)
    pid = k8s.jenv.controller_pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
    (k8s.cluster.volume_dir("rl-flags") / "go").touch()
    wait_for(lambda: _terminal(k8s, "rl") == "Completed", timeout=60)
    # the auxiliary's Job went with it (its pod stopped by the cluster)
    wait_for(lambda: not k8s.cluster.pods(selector="jobgroup.dev/task=buffer"), timeout=30)
    assert _status(k8s, job) == "RUNNING"  # nobody told the store yet
    done = k8s.jenv.wait(job, timeout=60)  # starts a new controller
    assert done["status"] == "SUCCEEDED", done
    assert k8s.jenv.controller_pid() not in (None, pid)
    assert "trainer done" in k8s.jenv.jg("logs", str(job), "trainer").stdout
    # its log follower outlived the controller: the auxiliary got SIGTERM, its trap ran
    assert "buffer stopped" in k8s.jenv.jg("logs", str(job), "buffer").stdout
    tasks = {t["name"]: t for t in done["tasks"]}
    assert tasks["buffer"]["status"] == "CANCELLED" and tasks["trainer"]["status"] == \
        "SUCCEEDED", tasks
    wait_for(lambda: not k8s.cluster.names("jobsets"), timeout=30)


def test_a_failed_node_fails_the_jobset_and_the_group(k8s: K8s) -> None:
    """Fail-fast by the cluster (a failed Job fails the JobSet, which deletes the others);
    the controller reports the node that failed with its exit code, and the others as
    stopped, not failed."""
    p = k8s.launch(FAIL_FAST, timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr
    job = k8s.jenv.job(1)
    assert job["status"] == "FAILED", job
    assert "'a' node 1 run exited with code 3" in job["reason"], job["reason"]
    assert _terminal(k8s, "ff") is None  # deleted at the end, by the controller
    tasks = {t["name"]: t for t in job["tasks"]}
    assert tasks["b"]["status"] == "CANCELLED", tasks
    assert "failing on purpose" in k8s.jenv.jg("logs", "1", "a", "--node", "1").stdout
    wait_for(lambda: not k8s.cluster.names("jobsets") and not k8s.kinds(), timeout=30)


RECOVER = """\
name: rc
execution: parallel
max_group_restarts: 1
---
name: a
volumes: {/state: rc-state}
resources: {job_recovery: {recover_on_exit_codes: [42]}}
run: |
  n=$(cat /state/a 2>/dev/null || echo 0); echo $((n + 1)) > /state/a
  echo "a attempt $((n + 1))"
  [ "$n" = 0 ] && { sleep 2; exit 42; }
  [ "$n" = 1 ] && { sleep 2; exit 7; }
  echo a done
"""


def test_the_cluster_recovers_nodes_and_restarts_the_group(k8s: K8s) -> None:
    """recover_on_exit_codes: the Job replaces the pod (podFailurePolicy Ignore); any other
    failure with max_group_restarts left: the JobSet restarts the group. The controller only
    watches (no restart of its own), and the node's log has every attempt."""
    p = k8s.launch(RECOVER, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert k8s.jenv.job(1)["status"] == "SUCCEEDED"
    assert (_jobset(k8s, "rc") or {}).get("status", {}).get("restarts", 1) == 1
    logs = k8s.jenv.jg("logs", "1").stdout
    for n in (1, 2, 3):
        assert f"a attempt {n}" in logs, logs
    assert "a done" in logs


QUEUED = """\
name: qd
execution: parallel
---
name: a
num_nodes: 2
resources: {cpus: 1}
run: echo ran
"""


def test_kueue_keeps_the_group_pending_with_its_reason(k8s: K8s) -> None:
    """With `kueue_queue`, the JobSet is made suspended with the queue's label; Kueue admits it
    whole or not at all: PENDING with Kueue's own reason, no pod made meanwhile."""
    k8s.config(kueue_queue="team-a")
    job = k8s.launch_d(QUEUED)
    reason = wait_for(lambda: (lambda j: j["status"] == "PENDING" and "Kueue" in j["reason"]
                               and j["reason"])(k8s.jenv.job(job)), timeout=30)
    assert reason == ("queued in Kueue queue team-a: couldn't assign flavors to pod set a: "
                      "insufficient unused quota for cpu in flavor default-flavor, 1 more "
                      "needed"), reason
    js = _jobset(k8s, "qd")
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert js["spec"]["suspend"] is True and not k8s.cluster.pods()
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    assert k8s.jenv.wait(job, timeout=30)["status"] == "CANCELLED"
    wait_for(lambda: not k8s.cluster.names("jobsets") and not k8s.kinds(), timeout=30)
    fits = k8s.launch_d(QUEUED.replace("name: qd", "name: fits").replace("cpus: 1", "cpus: 0.5"))
    done = k8s.jenv.wait(fits, timeout=60)
    assert done["status"] == "SUCCEEDED", (done, k8s.jenv.jg("events", str(fits)).stdout)


GANG = """\
name: gang
execution: parallel
---
name: small
run: exec sleep 300
---
name: big
resources: {cpus: 100}
run: echo never
"""


def test_without_kueue_a_group_that_does_not_fit_is_suspended_and_retried(k8s: K8s) -> None:
    """All or nothing without Kueue: a group whose pods are not all scheduled within
    schedule_timeout is suspended (its pods deleted) and tried again later, PENDING with the
    scheduler's reason; never FAILED for it."""
    k8s.config(schedule_timeout=1)
    job = k8s.launch_d(GANG)
    reason = wait_for(lambda: (lambda j: "suspended (all or nothing)" in j["reason"]
                               and j["reason"])(k8s.jenv.job(job)), timeout=30)
    assert "not every pod was scheduled within 1s" in reason, reason
    assert "0/1 nodes are available: 1 Insufficient cpu." in reason, reason
    assert _status(k8s, job) == "PENDING"
    wait_for(lambda: not k8s.cluster.pods(), timeout=20)  # suspended: every pod deleted
    wait_for(lambda: "resumed the JobSet" in k8s.jenv.job(job)["reason"] or
             k8s.cluster.pods(), timeout=20)  # and tried again
    assert _status(k8s, job) == "PENDING"
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    assert k8s.jenv.wait(job, timeout=30)["status"] == "CANCELLED"


def test_cancel_deletes_the_jobset_and_what_it_owns(k8s: K8s) -> None:
    job = k8s.launch_d(FAIL_FAST.replace("name: ff", "name: cx")
                       .replace("exit 3", "exec sleep 300")
                       .replace("name: b\n", "name: b\nsecrets: {TOKEN: s3cret}\n"))
    wait_for(lambda: _status(k8s, job) == "RUNNING", timeout=60)
    owned = [o for p in ("configmaps", "secrets") for o in k8s.cluster.objects(p)]
    js = _jobset(k8s, "cx")
    assert owned and all(o["metadata"]["ownerReferences"][0]["uid"] == js["metadata"]["uid"]
                         for o in owned)
    assert "s3cret" not in json.dumps(js)
    assert k8s.jenv.jg("cancel", str(job)).returncode == 0
    done = k8s.jenv.wait(job, timeout=60)
    assert done["status"] == "CANCELLED", done
    wait_for(lambda: not k8s.cluster.names("jobsets") and not k8s.kinds()
             and not k8s.cluster.names("jobs"), timeout=30)


def test_a_workdir_above_a_configmap_is_shipped_whole(k8s: K8s) -> None:
    """No 1 MiB limit: a 2.5 MiB workdir travels as tar parts in ConfigMaps owned by the
    JobSet, unpacked by the driver before setup (modes kept, .skyignore respected)."""
    import hashlib
    import random

    code = k8s.jenv.tmp / "code"
    (code / "data").mkdir(parents=True)
    blob = random.Random(3).randbytes(5 * 512 * 1024)
    (code / "data" / "blob.bin").write_bytes(blob)
    (code / "run.sh").write_text("#!/bin/sh\necho hi from run.sh\n")
    (code / "run.sh").chmod(0o755)
    (code / "notes.log").write_text("not shipped\n")
    (code / ".skyignore").write_text("*.log\n")
    p = k8s.launch("name: big\nworkdir: code\nrun: |\n  sha256sum data/blob.bin\n"
                   "  ./run.sh\n  ls notes.log || echo no notes.log\n", timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    logs = k8s.jenv.jg("logs", "1").stdout
    assert hashlib.sha256(blob).hexdigest() in logs, logs
    assert "hi from run.sh" in logs and "no notes.log" in logs


SLEEPER = """\
name: {name}
execution: parallel
---
name: a
run: echo "{name} on $(hostname)"; exec sleep 300
"""


def test_each_launch_runs_on_the_cluster_and_context_its_shell_names(
        k8s: K8s, tmp_path: Path) -> None:
    """KUBECONFIG and the context are read per launch, as kubectl reads them in the launching
    shell: one controller (started from the first launch's shell) runs a launch from a shell
    whose KUBECONFIG names another cluster on that cluster, one with `--infra
    kubernetes/CONTEXT` or a task's `infra: k8s/CONTEXT` on that context of a merged
    (`A:B`) KUBECONFIG; a restarted controller finds each group on its own cluster again."""
    other, other_kc = k8s.extra_cluster(tmp_path / "b", context="other", jobset=True,
                                        capacity={"cpu": 8, "memory": "16Gi", "pods": 50},
                                        probe_scale=0.1)
    first = k8s.launch_d(SLEEPER.format(name="one"))
    k8s.jenv.env["KUBECONFIG"] = str(other_kc)
    second = k8s.launch_d(SLEEPER.format(name="two"))
    # a merged KUBECONFIG (current context: the first file's) and a context named by infra
    k8s.jenv.env["KUBECONFIG"] = f"{k8s.kubeconfig}{os.pathsep}{other_kc}"
    third = k8s.launch_d(SLEEPER.format(name="three"), infra="kubernetes/other")
    fourth = k8s.launch_d(SLEEPER.format(name="four").replace(
        "name: a\n", "name: a\nresources: {infra: k8s/other}\n"), infra=None)
    for job, name in ((first, "one"), (second, "two"), (third, "three"), (fourth, "four")):
        wait_for(lambda: f"{name} on " in k8s.jenv.jg("logs", str(job), "--no-follow").stdout,
                 timeout=60)
    assert sorted(k8s.cluster.names("jobsets")) == ["one"]
    assert sorted(other.names("jobsets")) == ["four", "three", "two"]
    rows = {j["id"]: j for j in json.loads(k8s.jenv.jg("queue", "--json").stdout)}
    assert rows[first]["infra"] == "k8s:default" and rows[second]["infra"] == "k8s:default"
    assert rows[third]["infra"] == "k8s/other:default", rows[third]
    assert k8s.jenv.jg("exec", str(second), "--", "sh", "-c", "echo in $(hostname)",
                       timeout=30).stdout.strip() == "in two-a-0-0"
    # a context the kubeconfig lacks: refused at launch, naming it
    p = k8s.launch(SLEEPER.format(name="five"), infra="k8s/nope")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "infra kubernetes/nope names context 'nope', which the kubeconfig does not have " \
        "(it has: fake, other;" in p.stderr, p.stderr
    # a restarted controller (started from a shell that names neither) serves all four
    k8s.jenv.stop_controller()
    k8s.jenv.env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    assert k8s.jenv.jg("cancel", str(second), str(third), timeout=60).returncode == 0
    for job in (second, third):
        assert k8s.jenv.wait(job, timeout=60)["status"] == "CANCELLED"
    wait_for(lambda: sorted(other.names("jobsets")) == ["four"], timeout=30)
    assert k8s.jenv.jg("cancel", str(first), str(fourth), timeout=60).returncode == 0
    for job in (first, fourth):
        assert k8s.jenv.wait(job, timeout=60)["status"] == "CANCELLED"
    wait_for(lambda: not k8s.cluster.names("jobsets") and not other.names("jobsets"),
             timeout=30)
    assert not k8s.kinds() and not k8s.kinds(cluster=other)
