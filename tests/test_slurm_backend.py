"""The Slurm backend on a real Slurm cluster started by the tests (`jobgroup dev slurm up`):
slurmctld plus one slurmd per network namespace, all on this machine, with Slurm's cgroup
containment where this machine allows it, emulated GPUs (gpu:A100:2 on node1 and node2) and the
job completion log as Slurm's record of every job. What a user observes: the logs, the records,
the processes left (none), the refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import yaml

from conftest import REPO, processes_named, processes_of, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("slurmctld") is None,
    reason="needs root and Slurm (scripts/install-slurm installs it)",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from jobgroup.devcluster import slurm

    home = tmp_path_factory.mktemp("slurm-home")
    info = slurm.up(home, nodes=7, gpus="A100:2", gpu_nodes=2)
    yield info
    slurm.down(home)


@pytest.fixture
def senv(jenv, cluster):
    jenv.env.update(cluster.env())  # SLURM_CONF: the controller inherits it
    jenv.own_home()  # Slurm's nodes share the host's home: not the real user's dotfiles
    return jenv


def squeue(cluster) -> str:
    return subprocess.run(["squeue", "-h"], env={**os.environ, **cluster.env()},
                          capture_output=True, text=True, timeout=15).stdout.strip()


# What Slurm prints when it cancels a step or kills srun's tasks: never in a node's log.
NOISE = ("slurmstepd", "srun: error", "CANCELLED AT", "Job step aborted")


def facts(senv, job: int) -> dict:
    from jobgroup.state.store import Store

    store = Store(senv.home)
    try:
        return dict(store.job(job).options)
    finally:
        store.close()


def records(senv, cluster, job: int, timeout: float = 15) -> list[tuple[str, str]]:
    """(JobState, ExitCode) of every component of the group's Slurm job, from the job
    completion log (Slurm's own record, as site reporting reads it)."""
    comps = facts(senv, job)["slurm_components"]
    want = [comps[k] for k in sorted(comps, key=int)]
    log = cluster.root / "log" / "jobcomp.txt"

    def read() -> list[tuple[str, str]] | None:
        seen = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            f = dict(re.findall(r"(\w+)=(\S*)", line))
            seen[f.get("JobId")] = (f.get("JobState", ""), f.get("ExitCode", ""))
        return [seen[j] for j in want] if all(j in seen for j in want) else None

    return wait_for(read, timeout=timeout)


def all_logs(senv, job: int) -> str:
    return "".join(p.read_text() for p in (senv.home / "jobs" / str(job) / "logs").glob("*.log"))


def test_group_runs_as_one_heterogeneous_job_with_names(senv, cluster):
    """Names resolve across Slurm nodes; the auxiliaries get SIGTERM when the primary is done
    (their handlers' output in their logs) and SIGKILL only after the grace; no Slurm noise in
    any log; Slurm records every component COMPLETED with exit 0; the Slurm job id and nodes
    are the job's facts (queue's INFRA)."""
    job = senv.launch_d("""
        name: sgroup
        execution: parallel
        primary_tasks: [client]
        termination_delay: 1s
        ---
        name: server
        run: |
          trap 'echo "server: SIGTERM, checkpoint flushed"; exit 0' TERM
          echo "server on $(hostname)"
          python3 -m http.server 8080 --bind 0.0.0.0 &
          wait
        ---
        name: stubborn
        run: |
          trap 'echo "stubborn: SIGTERM ignored"' TERM
          while :; do sleep 0.2; done
        ---
        name: client
        num_nodes: 2
        setup: echo "setup $(hostname) $SKYPILOT_SETUP_NODE_RANK"
        run: |
          for i in $(seq 100); do
            python3 -c "import urllib.request; urllib.request.urlopen('http://server-0.sgroup:8080/', timeout=2)" 2>/dev/null && break
            sleep 0.1
          done && echo "$(hostname) reached server-0.sgroup"
        """, "--infra", "slurm", "--grace", "2")
    final = senv.wait(job, timeout=90)
    assert final["status"] == "SUCCEEDED", (final, senv.log(job, "client"))
    assert [t["status"] for t in final["tasks"]] == ["CANCELLED", "CANCELLED", "SUCCEEDED"]
    for r in (0, 1):
        assert f"client-{r} reached server-0.sgroup" in senv.log(job, "client", r)
    server = senv.log(job, "server")
    assert "server on server-0" in server and "server: SIGTERM, checkpoint flushed" in server
    assert "stubborn: SIGTERM ignored" in senv.log(job, "stubborn")  # then killed after 2 s
    logs = all_logs(senv, job)
    assert not [n for n in NOISE if n in logs], logs
    assert records(senv, cluster, job) == [("COMPLETED", "0:0")] * 3
    assert wait_for(lambda: squeue(cluster) == "", timeout=15) is not None
    evs = json.loads(senv.jg("events", str(job), "--json", check=True).stdout)
    assert any(e["kind"] == "admitted" and "Slurm job" in e["message"] for e in evs)
    ended = json.loads(senv.jg("queue", "--all", "--json", check=True).stdout)
    me = next(j for j in ended if j["id"] == job)
    f = facts(senv, job)
    assert me["infra"] == f"slurm:{f['slurm_job_id']}"
    assert f"slurm:{f['slurm_job_id']}" in senv.jg("queue", "--all", check=True).stdout
    assert sorted(f["slurm_nodes"]) == ["0", "1", "2"] and len(f["slurm_nodes"]["2"]) == 2
    assert f["slurm_nodelist"]
    assert not processes_of(senv.home)


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
    assert records(senv, cluster, job) == [("FAILED", "3:0")] * 2  # Slurm's record agrees
    other = senv.launch_d("name: scancel\nrun: sleep 1000\n", "--infra", "slurm")
    wait_for(lambda: senv.job(other)["status"] == "RUNNING", timeout=60)
    senv.jg("cancel", str(other), check=True)
    assert senv.wait(other, timeout=60)["status"] == "CANCELLED"
    assert [state for state, _ in records(senv, cluster, other)] == ["CANCELLED"]
    wait_for(lambda: squeue(cluster) == "", timeout=15)
    assert not [n for n in NOISE if n in all_logs(senv, job) + all_logs(senv, other)]


def test_refusals_name_the_task_and_the_limit(senv, cluster):
    job = senv.launch_d("name: workers\nnum_nodes: 10\nrun: echo no\n", "--infra", "slurm")
    final = senv.wait(job, timeout=60)
    assert final["status"] == "FAILED_NO_RESOURCE"
    assert final["reason"] == ("Slurm can never run the group: task 'workers' asks for 10 "
                               "nodes; partition debug has 7")
    assert squeue(cluster) == ""  # refused before anything was submitted
    # Before launching: the dry run says the same, and what the cluster has.
    for spec, why in (
            ("name: h\nresources: {accelerators: H100:1}\nrun: x\n",
             "task 'h' asks for 1 GPU(s) H100 per node; partition debug has only gpu:A100:2"),
            ("name: c\nresources: {cpus: 8}\nrun: x\n",
             "task 'c' asks for 8 CPUs per node; the nodes of partition debug have at most 2"),
            ("name: g\nexecution: parallel\n---\nname: a\nnum_nodes: 4\nrun: x\n---\n"
             "name: b\nnum_nodes: 4\nrun: y\n",
             "the group needs 8 nodes of partition debug at once (a heterogeneous job gives "
             "every task nodes of its own: a 4, b 4); partition debug has 7")):
        p = senv.jg("launch", str(senv.spec(spec)), "--dryrun", "--infra", "slurm", check=True)
        assert why in p.stderr, p.stderr
        plan = yaml.safe_load(p.stdout)["backend"]
        assert plan["fits_the_cluster"] is False and plan["why_not"] == why
    # A setting Slurm cannot take is refused at launch, naming the task and the label.
    p = senv.jg("launch", str(senv.spec("name: w\nresources: {labels: {slurm-tme: '10'}}\n"
                                         "run: x\n")), "-d", "--infra", "slurm")
    assert p.returncode == 2 and "task 'w': label slurm-tme is not a Slurm setting; did you " \
        "mean 'slurm-time'?" in p.stderr, p.stderr


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
    `port-forward` relays to the node's address; `top` answers from sstat (the dev cluster's
    accounting gatherer measures the agent step that runs the node's processes)."""
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
    assert web["usage"]["source"] == "sstat", web
    if _gathers(cluster):  # the dev cluster's jobacct_gather: figures of the node's processes
        assert web["usage"]["memory_bytes"] > 10 * 2**20, web  # python's http.server
        assert web["usage"]["cpu_seconds"] is not None, web
    senv.jg("cancel", str(job), check=True)
    assert senv.wait(job, timeout=60)["status"] == "CANCELLED"


def _gathers(cluster) -> bool:
    conf = cluster.slurm_conf.read_text()
    return "JobAcctGatherType=jobacct_gather/none" not in conf


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


def test_no_process_outlives_its_node_nor_meets_a_restarted_one(senv, cluster):
    """A node's background child and a server started with its output redirected are gone when
    the node's attempt ends: the restarted attempt on the same Slurm node sees neither (its
    port is free), and after the group nothing is left. A background child holding the output
    does not keep the run from ending."""
    import random

    mark = f"jg-left-{os.getpid()}-{random.randrange(10**6)}"
    port = random.randrange(20000, 30000)
    flag = senv.tmp / "first-attempt-done"
    job = senv.launch_d(f"""
        name: sorphan
        resources:
          job_recovery: {{max_restarts_on_errors: 1}}
        run: |
          if [ ! -e {flag} ]; then
            touch {flag}
            (exec -a "{mark[:8]}""{mark[8:]}" sleep 300) &  # the name only at run time
            python3 -m http.server {port} --bind 0.0.0.0 > /dev/null 2>&1 &
            for i in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), 1)" 2>/dev/null && break; sleep 0.1; done
            echo "attempt 1 on $SLURMD_NODENAME: server up, exiting 1"
            exit 1
          fi
          python3 - <<'PY'
          import os, socket
          mark = "{mark[:8]}" + "{mark[8:]}"
          seen = 0
          for p in os.listdir("/proc"):
              try:
                  seen += p.isdigit() and mark.encode() in open(f"/proc/{{p}}/cmdline", "rb").read()
              except OSError:
                  pass
          s = socket.socket()
          try:
              s.bind(("0.0.0.0", {port}))
              free = "free"
          except OSError:
              free = "busy"
          print(f"attempt 2 on {{os.environ['SLURMD_NODENAME']}}: leftovers={{seen}} port={{free}}")
          PY
          sleep 300 &
          echo "holding the output"
        """, "--infra", "slurm")
    final = senv.wait(job, timeout=60)
    assert final["status"] == "SUCCEEDED", final
    first = senv.log(job, "sorphan")
    second = (senv.home / "jobs" / str(job) / "logs" / "sorphan-0.attempt2.log").read_text()
    assert "attempt 1 on node" in first, first
    node = first.split("attempt 1 on ")[1].split(":")[0]
    assert f"attempt 2 on {node}: leftovers=0 port=free" in second, second
    assert "holding the output" in second
    assert processes_named(mark) == [] and not processes_of(senv.home)
    assert not [n for n in NOISE if n in first + second]


def test_submission_settings_from_slurm_yaml_and_labels(senv, cluster):
    """slurm.yaml (time limit, extra #SBATCH lines) and a task's labels (its own time limit, a
    constraint, exclusive) reach Slurm; `--dryrun` prints the batch script and each step's
    command without submitting."""
    (senv.home).mkdir(parents=True, exist_ok=True)
    (senv.home / "slurm.yaml").write_text("time: 30m\nsbatch: ['--nice=5']\n")
    spec = """
        name: stune
        execution: parallel
        ---
        name: plain
        run: echo "plain on $SLURMD_NODENAME"
        ---
        name: picky
        resources:
          labels: {slurm-time: "10", slurm-constraint: gpu, slurm-exclusive: "true"}
        run: echo "picky on $SLURMD_NODENAME"
        """
    p = senv.jg("launch", str(senv.spec(spec)), "--dryrun", "--infra", "slurm", check=True)
    plan = yaml.safe_load(p.stdout)["backend"]
    script = plan["sbatch_script"]
    for line in ("--time=30", "--nice=5", "--time=10", "--constraint=gpu", "--exclusive"):
        assert f"#SBATCH {line}\n" in script, line
    assert [s["step"] for s in plan["steps"]] == ["jobgroup-agent-0", "jobgroup-agent-1"]
    assert "srun --het-group=1 --nodes=1" in plan["steps"][1]["command"]
    assert "jobgroup-shim" in plan["steps"][1]["each_node_runs"]["run"]
    assert plan["fits_the_cluster"] is True and squeue(cluster) == ""
    job = senv.launch_d(spec, "--infra", "slurm")
    wait_for(lambda: "slurm_components" in facts(senv, job), timeout=60)
    comps = facts(senv, job)["slurm_components"]
    env = {**os.environ, **cluster.env()}
    shown = [subprocess.run(["scontrol", "show", "job", "-o", comps[k]], env=env,
                            capture_output=True, text=True, timeout=15).stdout for k in "01"]
    assert "TimeLimit=00:30:00" in shown[0] and "Nice=5" in shown[0]
    assert "TimeLimit=00:10:00" in shown[1] and "Features=gpu" in shown[1]
    # Exclusive: the whole node (its 2 CPUs) for the task's one CPU.
    assert "NumCPUs=2" in shown[1] and "NumCPUs=1" in shown[0], shown
    assert senv.wait(job, timeout=60)["status"] == "SUCCEEDED"
    assert re.search(r"picky on node[12]\n", senv.log(job, "picky"))  # the GPU nodes


def test_gpus_as_the_cluster_spells_them_alternatives_and_cpu_only(senv, cluster):
    """`a100:1` is submitted as the cluster's `gpu:A100:1`; of `[H100:1, A100:1]` the first
    alternative the cluster has; the nodes see their GPUs. `--cpu-only` runs a GPU task
    without GPUs; `--gpus any` asks for GPUs of any type."""
    job = senv.launch_d("""
        name: sgpu
        execution: parallel
        ---
        name: lower
        resources: {accelerators: a100:1}
        run: echo "gpus=$CUDA_VISIBLE_DEVICES on $SLURMD_NODENAME"
        ---
        name: either
        resources: {accelerators: [H100:1, A100:1]}
        run: echo "gpus=$CUDA_VISIBLE_DEVICES on $SLURMD_NODENAME"
        """, "--infra", "slurm")
    assert senv.wait(job, timeout=60)["status"] == "SUCCEEDED"
    script = (senv.home / "jobs" / str(job) / "slurm-batch.sh").read_text()
    assert script.count("#SBATCH --gres=gpu:A100:1\n") == 2, script
    for task in ("lower", "either"):
        assert re.search(r"gpus=\d on node[12]\n", senv.log(job, task)), senv.log(job, task)
    big = ("name: big\nresources: {accelerators: H100:8}\n"
           "run: echo \"gpus=[$CUDA_VISIBLE_DEVICES]\"\n")
    job = senv.launch_d(big, "--infra", "slurm", "--cpu-only")
    assert senv.wait(job, timeout=60)["status"] == "SUCCEEDED"
    assert "gpus=[]" in senv.log(job, "big")
    assert "--gres" not in (senv.home / "jobs" / str(job) / "slurm-batch.sh").read_text()
    p = senv.jg("launch", str(senv.spec("name: any\nresources: {accelerators: H100:2}\nrun: x\n")),
                "--dryrun", "--infra", "slurm", "--gpus", "any", check=True)
    assert "#SBATCH --gres=gpu:2\n" in yaml.safe_load(p.stdout)["backend"]["sbatch_script"]


def test_a_job_slurm_ends_is_not_taken_for_a_stop(senv, cluster):
    """scancel from outside jobgroup (or a time limit): Slurm stops the node, the group fails
    with the node killed by SIGTERM and Slurm's word in its reason, not as a stop jobgroup
    asked for."""
    job = senv.launch_d("name: sgone\nrun: echo up; sleep 300\n", "--infra", "slurm")
    wait_for(lambda: "up" in senv.log(job, "sgone"), timeout=60)
    sid = facts(senv, job)["slurm_job_id"]
    subprocess.run(["scancel", sid], env={**os.environ, **cluster.env()}, check=True, timeout=15)
    final = senv.wait(job, timeout=60)
    assert final["status"] == "FAILED", final
    assert "killed by signal 15" in final["reason"], final
    evs = json.loads(senv.jg("events", str(job), "--json", check=True).stdout)
    notes = [e["message"] for e in evs if e["kind"] == "note"]
    assert notes and f"Slurm job {sid} is " in notes[0], notes  # COMPLETING, or CANCELLED
    assert "Slurm stopped the node, not jobgroup" in final["reason"]
    assert not processes_of(senv.home)
