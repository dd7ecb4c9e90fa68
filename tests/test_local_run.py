"""Job groups on the local backend, end to end through the CLI, with real processes."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import processes_of, wait_for


def test_env_of_every_node(jenv):
    job = jenv.launch_d("""
        name: envs
        execution: parallel
        ---
        name: head
        num_nodes: 2
        envs: {GREETING: hi, NUMBER: 3, FLAG: true, OVERRIDDEN: from-yaml}
        setup: env | grep -E '^SKYPILOT_SETUP_NODE_(RANK|IPS)=' | sort | tr '\\n' ' '; echo
        run: |
          env | grep -E '^(SKYPILOT_|GREETING|NUMBER|FLAG|OVERRIDDEN|JOBGROUP_TOPOLOGY)' | sort
          echo "IPS=$(echo "$SKYPILOT_NODE_IPS" | tr '\\n' ,)"
        ---
        name: rollout-server
        run: echo "head is $SKYPILOT_JOBGROUP_HOST_HEAD"
        """, "--env", "OVERRIDDEN=from-cli")
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    logs = [jenv.log(job, "head", r) for r in (0, 1)]
    env0 = dict(line.split("=", 1) for line in logs[0].splitlines() if "=" in line
                and line.startswith(("SKYPILOT_", "GREETING", "NUMBER", "FLAG", "OVERRIDDEN",
                                     "JOBGROUP_")))
    assert env0["SKYPILOT_JOBGROUP_NAME"] == "envs"
    assert env0["SKYPILOT_NODE_RANK"] == "0"
    assert env0["SKYPILOT_NUM_NODES"] == "2"
    assert env0["SKYPILOT_NUM_GPUS_PER_NODE"] == "0"
    assert env0["SKYPILOT_MANAGED_JOB_ID"] == str(job)
    assert env0["GREETING"] == "hi" and env0["NUMBER"] == "3"
    assert env0["OVERRIDDEN"] == "from-cli"
    head = env0["SKYPILOT_JOBGROUP_HOST_HEAD"]
    assert env0["SKYPILOT_JOBGROUP_HOST_ROLLOUT_SERVER"] not in ("", head)
    assert "SKYPILOT_NODE_RANK=1" in logs[1]
    assert "SKYPILOT_SETUP_NODE_RANK=1" in logs[1]
    ips = [line for line in logs[0].splitlines() if line.startswith("IPS=")][0][4:].rstrip(",")
    assert ips.split(",")[0] == head and len(set(ips.split(","))) == 2
    assert f"head is {head}" in jenv.log(job, "rollout-server")
    # Task ids are stable and distinct per task.
    assert env0["SKYPILOT_TASK_ID"] in logs[1]
    topo = json.loads(open(env0["JOBGROUP_TOPOLOGY"]).read())
    assert [t["name"] for t in topo["tasks"]] == ["head", "rollout-server"]
    assert topo["tasks"][0]["nodes"][1]["hostname"] == "head-1"
    assert topo["tasks"][0]["nodes"][1]["fqdn"] == "head-1.envs"
    assert topo["tasks"][0]["nodes"][0]["address"] == head


def test_primary_ends_group_and_auxiliary_stops_after_delay(jenv):
    job = jenv.launch_d("""
        name: prim
        execution: parallel
        primary_tasks: [trainer]
        termination_delay: {default: 0s, slow-aux: 2s}
        ---
        name: trainer
        run: sleep 0.5; echo trained
        ---
        name: slow-aux
        run: trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done
        ---
        name: fast-aux
        run: sleep 1000
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED"
    tasks = {t["name"]: t for t in final["tasks"]}
    assert tasks["trainer"]["status"] == "SUCCEEDED"
    assert tasks["slow-aux"]["status"] == "CANCELLED"
    assert tasks["fast-aux"]["status"] == "CANCELLED"
    # fast-aux is stopped at once, slow-aux about 2 s after the trainer ended.
    t_end = tasks["trainer"]["ended_at"]
    assert tasks["fast-aux"]["ended_at"] - t_end < 1.5
    assert 1.8 <= tasks["slow-aux"]["ended_at"] - t_end < 6
    assert "got TERM" in jenv.log(job, "slow-aux")


def test_failure_fails_fast_with_reason_and_exit_code(jenv):
    spec = jenv.spec("""
        name: ff
        execution: parallel
        ---
        name: trainer
        run: sleep 0.3; echo dying; exit 3
        ---
        name: server
        run: sleep 1000
        """)
    t0 = time.monotonic()
    p = jenv.jg("launch", str(spec), timeout=60)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 20
    assert "dying" in p.stdout
    assert "FAILED" in p.stderr and "task 'trainer' run exited with code 3" in p.stderr
    job = int(p.stdout.split()[1])
    final = jenv.job(job)
    assert final["status"] == "FAILED"
    assert final["reason"] == "task 'trainer' run exited with code 3"
    assert {t["name"]: t["status"] for t in final["tasks"]} == {
        "trainer": "FAILED", "server": "CANCELLED"}
    assert not processes_of(jenv.home)


def test_multi_node_fail_fast_names_node_and_signal(jenv):
    job = jenv.launch_d("""
        name: mn
        execution: parallel
        ---
        name: workers
        num_nodes: 3
        run: |
          if [ "$SKYPILOT_NODE_RANK" = 1 ]; then sleep 0.3; kill -9 $$; fi
          sleep 1000
        """)
    final = jenv.wait(job)
    assert final["status"] == "FAILED"
    assert final["reason"] == "task 'workers' node 1 run was killed by signal 9 (SIGKILL)"
    assert not processes_of(jenv.home)


def test_setup_failure_is_failed_setup_and_run_never_starts(jenv):
    job = jenv.launch_d("""
        name: su
        execution: parallel
        ---
        name: a
        setup: echo preparing; exit 7
        run: echo should-not-run
        ---
        name: b
        setup: sleep 1000
        run: echo should-not-run
        """)
    final = jenv.wait(job)
    assert final["status"] == "FAILED_SETUP"
    assert "task 'a' setup exited with code 7" in final["reason"]
    assert "should-not-run" not in jenv.log(job, "a") + jenv.log(job, "b")
    assert "preparing" in jenv.log(job, "a")


def test_pipeline_runs_in_order(jenv):
    marker = jenv.tmp / "order.txt"
    job = jenv.launch_d(f"""
        name: pipe
        ---
        name: first
        workdir: .
        run: sleep 0.3; echo first >> {marker}
        ---
        name: second
        workdir: .
        run: echo second >> {marker}
        """)  # (the workdir is shared with the host; a node's own /tmp is not)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED"
    assert final["execution"] == "serial"
    assert marker.read_text().split() == ["first", "second"]


def test_pipeline_failure_cancels_later_steps(jenv):
    job = jenv.launch_d("""
        name: pipe-fail
        execution: serial
        ---
        name: first
        run: exit 2
        ---
        name: second
        run: echo never
        """)
    final = jenv.wait(job)
    assert final["status"] == "FAILED"
    assert [t["status"] for t in final["tasks"]] == ["FAILED", "CANCELLED"]
    assert jenv.log(job, "second") == ""


def test_single_task_file(jenv):
    job = jenv.launch_d("""
        name: solo
        run: echo alone
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED" and len(final["tasks"]) == 1
    assert jenv.log(job, "solo") == "alone\n"


def test_cancel_during_setup_during_run_twice_and_after_end(jenv):
    during_setup = jenv.launch_d("""
        name: c1
        setup: sleep 1000
        run: echo never
        """)
    wait_for(lambda: jenv.job(during_setup)["status"] == "STARTING")
    during_run = jenv.launch_d("""
        name: c2
        execution: parallel
        ---
        name: a
        num_nodes: 2
        run: setsid sleep 1000 & sleep 1000
        ---
        name: b
        run: sleep 1000
        """)
    wait_for(lambda: jenv.job(during_run)["status"] == "RUNNING")
    p = jenv.jg("cancel", str(during_setup), str(during_run), check=True)
    assert f"Job {during_setup}: cancelling." in p.stdout
    again = jenv.jg("cancel", str(during_run), check=True)
    assert again.returncode == 0
    for job in (during_setup, during_run):
        final = jenv.wait(job)
        assert final["status"] == "CANCELLED", final
        assert all(t["status"] == "CANCELLED" for t in final["tasks"])
    assert not processes_of(jenv.home)  # setsid'ed grandchildren included
    ended = jenv.jg("cancel", str(during_run))
    assert ended.returncode == 0 and "already ended (CANCELLED)" in ended.stdout
    unknown = jenv.jg("cancel", "999")
    assert unknown.returncode == 2 and "no job 999" in unknown.stderr


def test_launch_exit_codes(jenv):
    ok = jenv.spec("name: ok\nrun: echo fine\n", "ok.yaml")
    bad = jenv.spec("name: bad\nrun: exit 4\n", "bad.yaml")
    assert jenv.jg("launch", str(ok)).returncode == 0
    assert jenv.jg("launch", str(bad)).returncode == 1
    d = jenv.jg("launch", str(bad), "-d")
    assert d.returncode == 0 and d.stdout.startswith("Job ")
    job = int(d.stdout.split()[1])
    assert jenv.jg("wait", str(job)).returncode == 1
    invalid = jenv.spec("name: x\nrun: 1\nbogus: 2\n", "invalid.yaml")
    p = jenv.jg("launch", str(invalid))
    assert p.returncode == 2 and "bogus" in p.stderr and "Traceback" not in p.stderr
    p = jenv.jg("launch", str(ok), "--env", "no-equals")
    assert p.returncode == 2 and "KEY=VALUE" in p.stderr
    k8s = jenv.spec("name: k\nresources: {infra: kubernetes}\nrun: echo on-k8s\n", "k8s.yaml")
    p = jenv.jg("launch", str(k8s))
    assert p.returncode == 2 and "--infra local" in p.stderr
    p = jenv.jg("launch", str(k8s), "--infra", "local", check=True)
    assert "on-k8s" in p.stdout


def test_logs_interleave_hint_task_by_name_and_index_node_and_no_hang(jenv):
    job = jenv.launch_d("""
        name: lg
        execution: parallel
        ---
        name: quick
        run: echo quick-line
        ---
        name: slow
        num_nodes: 2
        run: for i in 1 2 3; do echo "slow-$SKYPILOT_NODE_RANK-$i"; sleep 0.3; done; sleep 1000
        """)
    wait_for(lambda: "slow-0-3" in jenv.log(job, "slow", 0))
    # The ended task's logs return at once although its sibling still runs (SkyPilot hangs).
    t0 = time.monotonic()
    p = jenv.jg("logs", str(job), "quick", timeout=20, check=True)
    assert time.monotonic() - t0 < 10
    assert p.stdout == "(quick, rank=0) quick-line\n"
    by_index = jenv.jg("logs", str(job), "0", check=True)
    assert by_index.stdout == p.stdout
    node1 = jenv.jg("logs", str(job), "slow", "--node", "1", "--no-follow", check=True)
    assert node1.stdout.splitlines() == [f"(slow, rank=1) slow-1-{i}" for i in (1, 2, 3)]
    everything = jenv.jg("logs", str(job), "--no-follow", check=True)
    assert "Hint: This job has 2 tasks." in everything.stderr
    lines = everything.stdout.splitlines()
    assert "(quick, rank=0) quick-line" in lines
    assert "(slow, rank=0)  slow-0-1" in lines  # prefixes aligned to the widest
    bad = jenv.jg("logs", str(job), "nope")
    assert bad.returncode == 2 and "0 (quick), 1 (slow)" in bad.stderr
    bad_node = jenv.jg("logs", str(job), "slow", "--node", "5")
    assert bad_node.returncode == 2
    jenv.jg("cancel", str(job), check=True)
    # Following the whole job returns once it has ended; logs stay readable afterwards.
    jenv.jg("logs", str(job), timeout=30, check=True)
    assert "slow-1-3" in jenv.jg("logs", str(job), "slow", check=True).stdout


def test_queue_table_and_json(jenv):
    job = jenv.launch_d("""
        name: q
        execution: parallel
        primary_tasks: [main]
        ---
        name: main
        run: sleep 1000
        ---
        name: helper
        num_nodes: 2
        run: sleep 1000
        """)
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING")
    table = jenv.jg("queue", check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "TASK", "NAME", "SUBMITTED", "DURATION", "NODES",
                                "RESTARTS", "INFRA", "STATUS", "REASON"]
    assert table[1].split()[0] == str(job) and "RUNNING (tasks: 2/2)" in table[1]
    assert table[1][table[0].index("INFRA"):].startswith("local ")
    assert "main [P]" in table[2] and "helper" in table[3] and "[P]" not in table[3]
    # Columns align: every row's STATUS starts where the header's does.
    col = table[0].index("STATUS")
    assert all(row[col:col + 3] in ("RUN", "STA", "PEN") for row in table[1:])
    data = json.loads(jenv.jg("queue", "--json", check=True).stdout)
    assert data[0]["id"] == job and data[0]["tasks"][1]["num_nodes"] == 2
    assert set(data[0]) >= {"id", "name", "status", "reason", "submitted_at", "tasks"}
    jenv.jg("cancel", str(job), check=True)
    jenv.wait(job)
    # ended a moment ago: still listed (with why), until --skip-finished
    ended = jenv.jg("queue", check=True).stdout.splitlines()
    assert ended[1].split()[0] == str(job) and "CANCELLED" in ended[1] \
        and ended[1].endswith("cancelled by the user")
    assert jenv.jg("queue", "--skip-finished", check=True).stdout.startswith("No active jobs")
    assert str(job) in jenv.jg("queue", "--all", check=True).stdout


def test_wait_timeout_and_unknown_job(jenv):
    job = jenv.launch_d("name: w\nrun: sleep 1000\n")
    p = jenv.jg("wait", str(job), "--timeout", "0.5")
    assert p.returncode == 1 and "still" in p.stderr
    p = jenv.jg("wait", "12345")
    assert p.returncode == 2 and "no job 12345" in p.stderr


def test_stop_escalates_to_sigkill_after_grace(jenv):
    job = jenv.launch_d("""
        name: stubborn
        run: trap '' TERM; echo ready; while true; do sleep 0.1; done
        """, "--grace", "0.5")
    wait_for(lambda: "ready" in jenv.log(job, "stubborn"))
    t0 = time.monotonic()
    jenv.jg("cancel", str(job), check=True)
    assert jenv.wait(job)["status"] == "CANCELLED"
    assert time.monotonic() - t0 < 10
    assert not processes_of(jenv.home)


def test_controller_status_and_stop_leave_groups_running(jenv):
    job = jenv.launch_d("name: keep\nrun: sleep 2; echo survived\n")
    wait_for(lambda: jenv.job(job)["status"] == "RUNNING")
    st = json.loads(jenv.jg("controller", "status", "--json", check=True).stdout)
    assert st["running"] and st["active_groups"] == 1
    p = jenv.jg("controller", "stop", check=True)
    assert "keep running" in p.stdout
    assert processes_of(jenv.home), "the group must survive the controller"
    assert not json.loads(jenv.jg("controller", "status", "--json").stdout)["running"]
    final = jenv.wait(job)  # restarts the controller, which re-adopts the group
    assert final["status"] == "SUCCEEDED"
    assert "survived" in jenv.log(job, "keep")


def test_workdir_and_relative_paths(jenv):
    code = jenv.tmp / "my code"
    code.mkdir()
    (code / "hello.sh").write_text("echo from-workdir $(pwd)\n")
    job = jenv.launch_d("""
        name: wd
        workdir: ./my code
        run: bash hello.sh
        """)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    assert f"from-workdir {code}" in jenv.log(job, "wd")
    missing = jenv.spec("name: wd2\nworkdir: ./nowhere\nrun: echo\n", "missing.yaml")
    p = jenv.jg("launch", str(missing))
    assert p.returncode == 2 and "nowhere" in p.stderr and "does not exist" in p.stderr


def test_nasty_names_and_quotes_do_not_reach_a_shell(jenv):
    odd = jenv.tmp / "dir with 'quotes' and; rm -rf x"
    odd.mkdir()
    spec = odd / "spec file.yaml"
    spec.write_text("name: nasty\nenvs: {V: \"a'b\\\"c; echo pwned\"}\nrun: printf '%s\\n' \"$V\"\n")
    p = jenv.jg("launch", str(spec), check=True)
    assert "a'b\"c; echo pwned" in p.stdout
    assert "\npwned" not in p.stdout
    assert os.path.isdir(odd)


def test_python_api_launch_wait_logs_cancel(jenv):
    import jobgroup
    from jobgroup import JobGroup, Task

    group = JobGroup(name="api-group", tasks=[
        Task(name="main", run="echo main-says-hi; sleep 1.5"),  # side prints meanwhile
        Task(name="side", num_nodes=2, run="echo side $SKYPILOT_NODE_RANK; sleep 1000"),
    ], primary_tasks=["main"])
    job = jobgroup.launch(group, home=jenv.home)
    assert job.status.value == "PENDING" and [t.name for t in job.tasks] == ["main", "side"]
    final = jobgroup.wait(job.id, home=jenv.home, timeout=60)
    assert final.status.value == "SUCCEEDED"
    lines = list(jobgroup.logs(job.id, home=jenv.home))
    assert ("main", 0, "main-says-hi") in [(l.task, l.rank, l.text) for l in lines]
    assert [l.text for l in jobgroup.logs(job.id, "side", rank=1, home=jenv.home)] == ["side 1"]
    other = jobgroup.launch(JobGroup(name="x", tasks=[Task(name="x", run="sleep 1000")]),
                            home=jenv.home)
    assert jobgroup.cancel(other.id, home=jenv.home) == {other.id: "cancelling"}
    assert jobgroup.wait(other.id, home=jenv.home, timeout=60).status.value == "CANCELLED"
    import pytest

    with pytest.raises(jobgroup.SpecError):
        jobgroup.launch(JobGroup(name="bad name!", tasks=[Task(name="t", run="true")]),
                        home=jenv.home)


def test_ctrl_c_while_following_detaches_and_job_keeps_running(jenv):
    import signal
    import subprocess
    import sys

    spec = jenv.spec("name: longrun\nrun: echo started; sleep 1000\n")
    p = subprocess.Popen([sys.executable, "-m", "jobgroup", "launch", str(spec)], env=jenv.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("Job ")
        job = int(first.split()[1])
        wait_for(lambda: "started" in jenv.log(job, "longrun"))
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert f"jobgroup logs {job}" in err and f"jobgroup cancel {job}" in err
    assert "Traceback" not in err
    assert jenv.job(job)["status"] == "RUNNING"


def test_node_processes_are_tracked_in_a_cgroup_removed_at_the_end(jenv):
    """Where a cgroup2 hierarchy is writable, each node phase's processes (setsid'ed ones too)
    live in a cgroup of their own, which stopping reads instead of walking /proc; it is gone
    once the node has ended."""
    from jobgroup.resources import cgroups

    parent = cgroups.tracking_parent()
    if parent is None:
        pytest.skip("no writable cgroup2 hierarchy here")
    job = jenv.launch_d("""
        name: tracked
        run: |
          setsid sleep 1000 &
          echo "gc $!"
          sleep 1000
    """)
    log = wait_for(lambda: "gc " in jenv.log(job, "tracked") and jenv.log(job, "tracked"))
    gc = int(log.split("gc ")[1].split()[0])
    line = next(l for l in open(f"/proc/{gc}/cgroup").read().splitlines() if l.startswith("0::"))
    cg = os.path.join(os.path.dirname(parent), line[3:].lstrip("/"))
    assert os.path.dirname(cg) == parent and os.path.basename(cg).endswith("-0-0.run.1")
    assert str(gc) in open(os.path.join(cg, "cgroup.procs")).read().split()
    jenv.jg("cancel", str(job), check=True)
    assert jenv.wait(job)["status"] == "CANCELLED"
    wait_for(lambda: not os.path.exists(f"/proc/{gc}") or
             open(f"/proc/{gc}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", timeout=10)
    wait_for(lambda: not os.path.isdir(cg), timeout=10)
