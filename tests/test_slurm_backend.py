"""The Slurm backend on a real Slurm cluster started by the tests (`jobgroup dev slurm up`):
slurmctld plus one slurmd per network namespace, all on this machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("slurmctld") is None,
    reason="needs root and Slurm (scripts/install-slurm installs it)",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from jobgroup.devcluster import slurm

    home = tmp_path_factory.mktemp("slurm-home")
    info = slurm.up(home, nodes=7)
    yield info
    slurm.down(home)


@pytest.fixture
def senv(jenv, cluster):
    jenv.env.update(cluster.env())  # SLURM_CONF: the controller inherits it
    return jenv


def squeue(cluster) -> str:
    return subprocess.run(["squeue", "-h"], env={**os.environ, **cluster.env()},
                          capture_output=True, text=True, timeout=15).stdout.strip()


def test_group_runs_as_one_heterogeneous_job_with_names(senv, cluster):
    job = senv.launch_d("""
        name: sgroup
        execution: parallel
        primary_tasks: [client]
        termination_delay: 1s
        ---
        name: server
        run: echo "server on $(hostname)"; exec python3 -m http.server 8080 --bind 0.0.0.0
        ---
        name: client
        num_nodes: 2
        setup: echo "setup $(hostname) $SKYPILOT_SETUP_NODE_RANK"
        run: |
          for i in $(seq 100); do
            python3 -c "import urllib.request; urllib.request.urlopen('http://server-0.sgroup:8080/', timeout=2)" 2>/dev/null && break
            sleep 0.1
          done && echo "$(hostname) reached server-0.sgroup"
        """, "--infra", "slurm")
    final = senv.wait(job, timeout=90)
    assert final["status"] == "SUCCEEDED", (final, senv.log(job, "client"))
    assert [t["status"] for t in final["tasks"]] == ["CANCELLED", "SUCCEEDED"]
    for r in (0, 1):
        assert f"client-{r} reached server-0.sgroup" in senv.log(job, "client", r)
    assert "server on server-0" in senv.log(job, "server")
    assert wait_for(lambda: squeue(cluster) == "", timeout=15) is not None  # scancel'ed
    evs = json.loads(senv.jg("events", str(job), "--json", check=True).stdout)
    assert any(e["kind"] == "admitted" and "Slurm job" in e["message"] for e in evs)


def test_fail_fast_and_cancel_on_slurm(senv, cluster):
    job = senv.launch_d("""
        name: sfail
        execution: parallel
        ---
        name: bad
        run: sleep 0.5; exit 3
        ---
        name: peer
        run: sleep 1000
        """, "--infra", "slurm")
    final = senv.wait(job, timeout=90)
    assert final["status"] == "FAILED"
    assert "task 'bad' run exited with code 3" in final["reason"]
    other = senv.launch_d("name: scancel\nrun: sleep 1000\n", "--infra", "slurm")
    wait_for(lambda: senv.job(other)["status"] == "RUNNING", timeout=60)
    senv.jg("cancel", str(other), check=True)
    assert senv.wait(other, timeout=60)["status"] == "CANCELLED"
    wait_for(lambda: squeue(cluster) == "", timeout=15)


def test_group_that_can_never_fit_is_rejected_with_slurms_reason(senv):
    job = senv.launch_d("name: huge\nnum_nodes: 50\nrun: echo no\n", "--infra", "slurm")
    final = senv.wait(job, timeout=60)
    assert final["status"] == "FAILED_NO_RESOURCE"
    assert "Slurm" in final["reason"]


def test_pending_shows_slurms_reason(senv, cluster):
    hog = senv.launch_d("name: hog\nnum_nodes: 7\nresources: {cpus: 2}\nrun: sleep 1000\n",
                        "--infra", "slurm")  # every CPU of the 7 two-CPU nodes
    wait_for(lambda: senv.job(hog)["status"] == "RUNNING", timeout=60)
    waiter = senv.launch_d("name: waiter\nresources: {cpus: 1}\nrun: echo finally\n",
                           "--infra", "slurm")
    # Slurm's own reason, once its scheduler has looked at the job.
    wait_for(lambda: any(r in senv.job(waiter)["reason"] for r in ("Resources", "Priority")),
             timeout=30)
    assert senv.job(waiter)["status"] == "PENDING"
    assert "pending" in senv.jg("queue", check=True).stdout.lower()
    senv.jg("cancel", str(hog), check=True)
    assert senv.wait(waiter, timeout=90)["status"] == "SUCCEEDED"
    assert "finally" in senv.log(waiter, "waiter")


def test_the_seed_rl_example_runs_on_slurm(senv, cluster):
    senv.env["PATH"] = f"{REPO / '.venv' / 'bin'}:{senv.env['PATH']}"  # numpy for the nodes
    p = senv.jg("launch", str(REPO / "examples/rl-post-training/rl-post-training.yaml"),
                "--infra", "slurm", timeout=240, cwd=REPO)  # its workdirs: from the repo's root
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "SUCCEEDED" in p.stderr
    assert "mean reward" in p.stdout
    wait_for(lambda: squeue(cluster) == "", timeout=15)
    # Its /checkpoints volume lived on the shared filesystem, never on the nodes' disks.
    assert not os.path.exists("/checkpoints")
    assert list((senv.home / "volumes" / "rl-post-training").glob("run-*/reward.png"))


def test_exec_port_forward_and_top_on_slurm(senv, cluster):
    """Issue 20 on Slurm: `exec` is a step of its own beside the node's (`srun --overlap`) that
    sees the node's name and peers, with the node's environment and the exit code back;
    `port-forward` relays to the node's address; `top` answers from sstat (the dev cluster
    gathers no accounting: it says so)."""
    import sys
    import urllib.request

    job = senv.launch_d("""
        name: sops
        execution: parallel
        ---
        name: web
        run: |
          echo "web page" > index.html
          exec python3 -m http.server 18932 --bind 0.0.0.0
        ---
        name: peer
        run: exec sleep 120
        """, "--infra", "slurm")
    wait_for(lambda: senv.job(job)["status"] == "RUNNING", timeout=60)
    p = senv.jg("exec", str(job), "web", "--", "sh", "-c",
                'hostname; getent hosts peer-0.sops | wc -l; echo "rank=$SKYPILOT_NODE_RANK"; '
                "exit 4", timeout=60)
    assert p.returncode == 4, p.stderr
    assert p.stdout.split("\n")[:3] == ["web-0", "1", "rank=0"], p.stdout
    proc = subprocess.Popen([sys.executable, "-m", "jobgroup", "port-forward", str(job), "web",
                             "0:18932"], env=senv.env, cwd=senv.tmp, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stderr.readline()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        body = wait_for(lambda: _get(urllib.request, port), timeout=30)
        assert body == b"web page\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    top = json.loads(senv.jg("top", str(job), "--json", check=True).stdout)
    assert {n["node"] for n in top["nodes"]} == {"web-0", "peer-0"}
    web = next(n for n in top["nodes"] if n["node"] == "web-0")
    assert web["usage"]["source"] == "sstat" and web["usage"]["note"], web
    senv.jg("cancel", str(job), check=True)
    assert senv.wait(job, timeout=60)["status"] == "CANCELLED"


def _get(request, port: int) -> bytes | None:
    try:
        return request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=3).read()
    except OSError:
        return None


def test_scripts_run_as_skypilot_runs_them_on_slurm(senv, cluster):
    """A node's shell on Slurm is the one the local backend gives (jobgroup.nodescript): an
    interactive bash for ~/.bashrc, without its job-control noise, PYTHONUNBUFFERED=1, the
    script's own exit code, SkyPilot's SKYPILOT_TASK_ID."""
    senv.env.pop("PYTHONUNBUFFERED", None)
    job = senv.launch_d("""
        name: sshell
        run: |
          case $- in *i*) echo "shell: interactive" ;; esac
          echo "unbuffered=$PYTHONUNBUFFERED id=$SKYPILOT_TASK_ID"
          exit 3
        """, "--infra", "slurm")
    final = senv.wait(job, timeout=90)
    assert "task 'sshell' run exited with code 3" in final["reason"], final
    log = senv.log(job, "sshell")
    assert "shell: interactive" in log and "unbuffered=1 " in log, log
    assert re.search(rf"id=sky-managed-\d{{4}}(-\d\d){{5}}-\d{{6}}_sshell_{job}-0\n", log), log
    assert not any(n in log for n in ("job control", "terminal process group", "tcsetattr")), log
