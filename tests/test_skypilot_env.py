"""The SkyPilot variables a node sees, in SkyPilot's formats (its docs and
sky/backends/task_codegen.py), checked from inside real nodes."""

from __future__ import annotations

import json
import os
import pwd
import re
import time
from datetime import datetime

import pytest

from conftest import wait_for

SPEC = """\
name: envs
execution: parallel
---
name: first
setup: |
  echo "setup-cuda=${CUDA_VISIBLE_DEVICES-unset} setup-gpus=$SKYPILOT_SETUP_NUM_GPUS_PER_NODE"
run: |
  echo "run-cuda=[${CUDA_VISIBLE_DEVICES-unset}]"
  printf 'ids=%s\\n' "$(echo "$SKYPILOT_TASK_IDS" | tr '\\n' ',')"
  echo "id=$SKYPILOT_TASK_ID"
  echo "info=$SKYPILOT_CLUSTER_INFO"
  echo "user=$SKYPILOT_USER uid=$SKYPILOT_USER_ID"
---
name: second
run: echo "id=$SKYPILOT_TASK_ID"
"""


def test_skypilot_variables_in_setup_and_run(jenv):
    job = jenv.launch_d(SPEC)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    log = jenv.log(job, "first")
    second = jenv.log(job, "second")
    assert "setup-cuda=unset setup-gpus=0" in log  # absent in setup, as SkyPilot unsets it
    assert "run-cuda=[]" in log  # a node without GPUs sees none in run
    first_id = next(l[3:] for l in log.splitlines() if l.startswith("id="))
    second_id = next(l[3:] for l in second.splitlines() if l.startswith("id="))
    assert f"ids={first_id},{second_id}," in log and first_id != second_id
    info = json.loads(next(l[5:] for l in log.splitlines() if l.startswith("info=")))
    assert info == {"cluster_name": f"envs-{job}", "cloud": "local", "region": None,
                    "zone": None}
    me = os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name
    line = next(l for l in log.splitlines() if l.startswith("user="))
    user, uid = line.split()
    assert user == f"user={me}" and len(uid) == len("uid=") + 8


# ---- how scripts run (jobgroup.nodescript): as SkyPilot runs them --------------------------------

NOISE = ("job control", "terminal process group", "tcsetattr", "Inappropriate ioctl")


def _private_home_problem(jenv) -> str | None:
    """Why nodes here have no home of their own (None: each node has its own): without one, a
    test that edits ~/.bashrc would edit yours."""
    from jobgroup.backends.local import isolation, rootfs

    if isolation.detect_level() != isolation.NAMESPACES:
        return f"isolation level {isolation.detect_level()}: nodes share your home"
    return rootfs.private_root_problem(jenv.home)


def test_bashrc_written_by_setup_is_sourced_by_run_and_stays_the_nodes_own(jenv):
    why = _private_home_problem(jenv)
    if why:
        pytest.skip(why)
    host_bashrc = os.path.expanduser("~/.bashrc")
    before = open(host_bashrc).read() if os.path.exists(host_bashrc) else None
    job = jenv.launch_d("""
        name: rc
        execution: parallel
        ---
        name: head
        num_nodes: 2
        setup: |
          echo "export FROM_SETUP=rank$SKYPILOT_NODE_RANK" >> ~/.bashrc
          if [ "$SKYPILOT_NODE_RANK" = 0 ]; then
            echo "alias greet='echo hello from an alias'" >> ~/.bashrc
            echo 'echo printed by bashrc' >> ~/.bashrc
          fi
        run: |
          echo "from-setup=${FROM_SETUP-none}"
          type greet >/dev/null 2>&1 && greet
          case $- in *i*) echo "shell: interactive" ;; esac
          echo "0=$0 args=$#"
        ---
        name: other
        run: echo "from-setup=${FROM_SETUP-none}"
        """)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    head0, head1 = jenv.log(job, "head", 0), jenv.log(job, "head", 1)
    assert "from-setup=rank0" in head0 and "from-setup=rank1" in head1  # each node its own
    assert "hello from an alias" in head0 and "hello from an alias" not in head1
    assert head0.count("printed by bashrc") == 1  # sourced once, in run (setup wrote it)
    assert "shell: interactive" in head0 and "0=bash args=0" in head0
    assert "from-setup=none" in jenv.log(job, "other")
    after = open(host_bashrc).read() if os.path.exists(host_bashrc) else None
    assert after == before  # the host's ~/.bashrc is untouched
    for log in (head0, head1, jenv.log(job, "other")):
        assert not any(n in log for n in NOISE), log


def test_exit_codes_and_logs_are_the_scripts_own(jenv):
    scripts = {
        "three": "echo before; exit 3",
        "errexit": "set -e\necho before\nfalse\necho not-reached",
        "killed": "echo before; kill -TERM $$; echo not-reached",
        "child": "echo before; sh -c 'kill -KILL $$'; echo child=$?",
        "bang": 'echo "before!"; echo "a!b"',
        # one process group (a stop that signals the group reaches every command)
        "group": "cut -d' ' -f5 /proc/$$/stat\nsh -c 'cut -d\" \" -f5 /proc/$$/stat'",
    }
    jobs = {name: jenv.launch_d(f"name: {name}\nrun: |\n  " + s.replace("\n", "\n  "))
            for name, s in scripts.items()}
    reasons = {name: jenv.wait(job)["reason"] for name, job in jobs.items()}
    logs = {name: jenv.log(job, name) for name, job in jobs.items()}
    assert "exited with code 3" in reasons["three"]
    assert "exited with code 1" in reasons["errexit"] and "not-reached" not in logs["errexit"]
    assert "killed by signal 15" in reasons["killed"] and "not-reached" not in logs["killed"]
    assert "child=137" in logs["child"]  # a command killed by a signal: no shell noise
    assert logs["bang"].endswith("before!\na!b\n")  # no history expansion
    shell_group, command_group = logs["group"].split()[-2:]
    assert shell_group == command_group
    assert "Killed" not in logs["child"]  # an interactive shell's script: no job report
    for name, log in logs.items():
        assert not any(n in log for n in NOISE), (name, log)


def test_stop_ends_the_script_not_just_its_current_command(jenv):
    job = jenv.launch_d("""
        name: stopme
        run: |
          echo started
          sleep 1000
          echo after-the-sleep
        """)
    wait_for(lambda: "started" in jenv.log(job, "stopme"), timeout=30)
    t0 = time.monotonic()
    jenv.jg("cancel", str(job), check=True)
    final = jenv.wait(job)
    assert final["status"] == "CANCELLED", final
    assert time.monotonic() - t0 < 8  # well within the 10 s grace: the shell ends at SIGTERM
    assert "after-the-sleep" not in jenv.log(job, "stopme")


def test_pythonunbuffered_and_task_variables_win_over_bashrc(jenv):
    jenv.env.pop("PYTHONUNBUFFERED", None)
    job = jenv.launch_d("""
        name: unbuf
        execution: parallel
        ---
        name: plain
        run: echo "unbuffered=$PYTHONUNBUFFERED"
        ---
        name: mine
        envs: {PYTHONUNBUFFERED: "0"}
        run: echo "unbuffered=$PYTHONUNBUFFERED"
        """)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    assert "unbuffered=1" in jenv.log(job, "plain")
    assert "unbuffered=0" in jenv.log(job, "mine")


def test_task_id_has_skypilots_format_and_survives_a_restart(jenv):
    ids = jenv.tmp / "ids"
    ids.mkdir()
    job = jenv.launch_d("""
        name: tid
        execution: parallel
        ---
        name: flaky
        workdir: ids
        resources:
          job_recovery: {recover_on_exit_codes: [33]}
        run: |
          echo "$SKYPILOT_TASK_ID" > flaky-$JOBGROUP_ATTEMPT
          echo "$SKYPILOT_TASK_IDS" > all-$JOBGROUP_ATTEMPT
          [ "$JOBGROUP_ATTEMPT" = 1 ] && exit 33
          exit 0
        ---
        name: steady
        workdir: ids
        run: echo "$SKYPILOT_TASK_ID" > steady
        """)  # (a node's /tmp is its own: files come back through the shared workdir)
    final = jenv.wait(job)
    assert final["status"] == "SUCCEEDED", final
    assert final["tasks"][0]["restarts"] == 1
    stamp = datetime.fromtimestamp(final["submitted_at"]).strftime("%Y-%m-%d-%H-%M-%S-%f")
    flaky = f"sky-managed-{stamp}_tid_flaky_{job}-0"
    steady = f"sky-managed-{stamp}_tid_steady_{job}-1"
    assert re.fullmatch(r"sky-managed-\d{4}(-\d\d){5}-\d{6}_tid_flaky_\d+-0", flaky)
    assert (ids / "flaky-1").read_text() == (ids / "flaky-2").read_text() == flaky + "\n"
    assert (ids / "steady").read_text() == steady + "\n"
    assert (ids / "all-1").read_text() == (ids / "all-2").read_text() == f"{flaky}\n{steady}\n"


def test_launching_venv_and_path_stay_in_front_of_what_bashrc_repeats(jenv):
    """~/.bashrc runs as on a login, but what your shell already had (it ran your ~/.bashrc
    before you launched) keeps its place, and the venv you launched from stays first; what
    setup adds goes where ~/.bashrc puts it."""
    why = _private_home_problem(jenv)
    if why:
        pytest.skip(why)
    venv = jenv.tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    launch_path = [str(venv / "bin"), *jenv.env["PATH"].split(":")]
    jenv.env.update(VIRTUAL_ENV=str(venv), PATH=":".join(launch_path))
    job = jenv.launch_d("""
        name: paths
        setup: echo 'export PATH=/opt/from-setup/bin:/usr/bin:$PATH' >> ~/.bashrc
        run: echo "path=$PATH venv=$VIRTUAL_ENV"
        """)
    assert jenv.wait(job)["status"] == "SUCCEEDED"
    line = next(l for l in jenv.log(job, "paths").splitlines() if l.startswith("path="))
    path, venv_seen = line[len("path="):].split(" venv=")
    parts = path.split(":")
    assert venv_seen == str(venv)
    assert parts[:2] == [str(venv / "bin"), "/opt/from-setup/bin"]
    kept = [p for p in parts if p in launch_path]  # in the order you launched with
    assert kept == list(dict.fromkeys(launch_path))
